"""Applying one input to a stored rollout: read, decide with the machine, compare-and-set.

The one way rollouts change, for the reconciler and for operators' commands alike. A
revision conflict (someone wrote meanwhile) re-reads and decides again from the stored state,
so concurrent writers never overwrite each other: an operator's abort written while the
reconciler decided a promotion makes the promotion's write fail, and the re-decided input then
meets an aborting rollout.
"""

from __future__ import annotations

from controller.rollout.actions import Decision
from controller.rollout.inputs import Input
from controller.rollout.machine import advance
from controller.store.rollouts import RevisionConflictError, RolloutStore, StoredRollout

MAX_ATTEMPTS = 50
"""Conflicts in a row before giving up (each means another writer made progress)."""


def apply_input(store: RolloutStore, name: str, event: Input) -> tuple[StoredRollout, Decision]:
    """Feed ``event`` to rollout ``name`` and store the outcome with its events atomically.

    Returns:
        The rollout as stored afterwards (unchanged when the decision changed nothing or was
        refused) and the machine's decision.

    Raises:
        RolloutNotFoundError: no rollout has this name.
        RevisionConflictError: more than :data:`MAX_ATTEMPTS` conflicts in a row.
        StoreError: the store failed.
    """
    for attempt in range(MAX_ATTEMPTS):
        rollout = store.get(name)
        decision = advance(rollout.state, rollout.policy, event)
        if not decision.changed:
            return rollout, decision
        try:
            stored = store.update(name, rollout.revision, decision.state, decision.events)
        except RevisionConflictError:
            if attempt == MAX_ATTEMPTS - 1:
                raise
            continue
        return stored, decision
    raise AssertionError("unreachable")
