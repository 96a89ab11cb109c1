"""The contract every rollout store keeps (:class:`controller.store.rollouts.RolloutStore`).

Subclass :class:`RolloutStoreContract` as ``Test...`` in a test module that provides a
``store`` fixture yielding a fresh, empty store: pytest runs every test below against it
(``tests/unit/test_store_rollouts.py`` for SQLite, ``tests/k8s/test_store_kubernetes.py`` for
Kubernetes through the fake API server). Shared helpers (``policy``, ``SOURCE``, ``event``,
``pending``) come from here too.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest

from controller.policy.rollout_policy import RolloutPolicy
from controller.rollout.actions import RecordEvent
from controller.rollout.state import Phase, RolloutState, VerdictRecord
from controller.store.rollouts import (
    AnalysisPoint,
    PolicySource,
    RevisionConflictError,
    RolloutExistsError,
    RolloutNotFoundError,
    RolloutStore,
    RouteBusyError,
    StoreError,
    WeightStep,
)


def policy(route: str = "comments", candidate: str = "comments-go") -> RolloutPolicy:
    return RolloutPolicy.model_validate(
        {
            "apiVersion": "sluice.dev/v1alpha1",
            "kind": "RolloutPolicy",
            "metadata": {"name": route},
            "spec": {
                "route": route,
                "baseline": {"cluster": "comments-python"},
                "candidate": {"cluster": candidate},
                "stages": [{"weight": "1%", "bake": "2m"}, {"weight": "100%", "bake": "90s"}],
                "analysis": {"slos": [{"metric": "parity", "minValue": "99.9%"}]},
                "override": {"header": "x-sluice-target"},
                "sticky": {"cookie": "session"},
            },
        }
    )


SOURCE = PolicySource(
    path="policies/comments.yaml", git_commit="3f2a9c1" * 5 + "abcde", git_dirty=True, text="x: 1"
)


def event(
    at: float, transition: str = "pending", actor: str = "alice", **details: Any
) -> RecordEvent:
    return RecordEvent(at=at, actor=actor, transition=transition, reason="why", details=details)


def pending(at: float = 100.0) -> RolloutState:
    return RolloutState(updated_at=at, reason="created")


class RolloutStoreContract:
    """What every store must do; needs a ``store`` fixture (a fresh, empty store)."""

    updates_per_thread = 20
    """Compare-and-set updates each of 4 threads makes in the concurrency test."""

    def test_create_get_list(self, store: RolloutStore) -> None:
        created = store.create("comments-v2", policy(), SOURCE, pending(), event(100.0))
        store.create(
            "orders-v2",
            policy("orders"),
            PolicySource(None, None, False, "y"),
            pending(),
            event(101.0),
        )
        assert created.revision == 1
        assert created.route == "comments"
        got = store.get("comments-v2")
        assert got == created
        assert got.policy == policy()
        assert got.source == SOURCE
        assert got.state == pending()
        assert got.created_at == 100.0
        assert got.active
        assert [r.name for r in store.list()] == ["comments-v2", "orders-v2"]
        assert store.list()[1].source == PolicySource(None, None, False, "y")

    def test_update_is_compare_and_set(self, store: RolloutStore) -> None:
        store.create("c", policy(), SOURCE, pending(), event(100.0))
        progressing = pending().model_copy(
            update={"phase": Phase.PROGRESSING, "stage": 0, "desired_weight": 1.0}
        )
        updated = store.update(
            "c", 1, progressing, [event(110.0, "pending → progressing", "controller", seq=1)]
        )
        assert updated.revision == 2
        assert updated.state == progressing
        assert store.get("c").state == progressing

        paused = progressing.model_copy(update={"phase": Phase.PAUSED})
        with pytest.raises(RevisionConflictError) as info:
            store.update("c", 1, paused, [event(120.0, "progressing → paused")])
        assert info.value.current == 2
        assert isinstance(info.value, StoreError)
        # the losing write left nothing behind
        assert store.get("c").state == progressing
        assert store.get("c").revision == 2
        assert [e.transition for e in store.history("c")] == ["pending", "pending → progressing"]

        assert store.update("c", 2, paused, []).revision == 3
        assert len(store.history("c")) == 2

    def test_history_oldest_first_and_limit(self, store: RolloutStore) -> None:
        store.create("c", policy(), SOURCE, pending(), event(100.0))
        state = pending()
        for rev in range(1, 5):
            state = state.model_copy(update={"push_seq": rev})
            store.update(
                "c",
                rev,
                state,
                [event(100.0 + rev, f"t{rev}a"), event(100.5 + rev, f"t{rev}b", n=rev)],
            )
        history = store.history("c")
        assert [e.seq for e in history] == list(range(1, 10))
        assert history[0].transition == "pending"
        assert history[-1].transition == "t4b"
        assert history[-1].details == {"n": 4}
        assert history[-1].rollout == "c"
        assert history[-1].actor == "alice"
        assert history[-1].at == 104.5
        assert [e.transition for e in store.history("c", limit=3)] == ["t3b", "t4a", "t4b"]
        assert store.history("c", limit=0) == []
        assert len(store.history("c", limit=100)) == 9

    def test_analysis_log_records_each_new_verdict_and_weight_change(
        self, store: RolloutStore
    ) -> None:
        store.create("c", policy(), SOURCE, pending(), event(100.0))
        pushed = pending(110.0).model_copy(
            update={"phase": Phase.PROGRESSING, "stage": 0, "desired_weight": 1.0}
        )
        store.update("c", 1, pushed, [event(110.0, "pending → progressing")])
        acked = pushed.model_copy(update={"acked_weight": 1.0, "updated_at": 111.0})
        store.update("c", 2, acked, [event(111.0, "progressing")])
        figures = {"latency_p99": {"baseline": 12.5, "candidate": 14.0, "unit": "ms"}}
        first = VerdictRecord(at=120.0, outcome="inconclusive", reason="<b>few</b>")
        second = VerdictRecord(at=130.0, outcome="pass", reason="ok", details=figures)
        judged = acked.model_copy(update={"last_verdict": first, "updated_at": 120.0})
        store.update("c", 3, judged, [])  # a verdict writes no history event
        # a write that keeps the verdict (another field changed) appends nothing
        store.update("c", 4, judged.model_copy(update={"passes": 1}), [])
        # a conflicting write appends nothing either
        with pytest.raises(RevisionConflictError):
            store.update("c", 4, judged.model_copy(update={"last_verdict": second}), [])
        store.update("c", 5, judged.model_copy(update={"last_verdict": second}), [])
        points = store.analyses("c")
        assert points == [
            AnalysisPoint(seq=points[0].seq, at=120.0, stage=0, weight=1.0,
                          outcome="inconclusive", reason="<b>few</b>", details={}),
            AnalysisPoint(seq=points[1].seq, at=130.0, stage=0, weight=1.0, outcome="pass",
                          reason="ok", details=figures),
        ]  # fmt: skip
        assert points[0].seq < points[1].seq
        assert store.analyses("c", limit=1) == points[1:]
        assert store.analyses("c", limit=0) == []
        steps = store.weight_steps("c")
        assert [(s.at, s.stage, s.desired, s.acked, s.phase) for s in steps] == [
            (100.0, -1, 0.0, None, "pending"),
            (110.0, 0, 1.0, None, "progressing"),
            (111.0, 0, 1.0, 1.0, "progressing"),
        ]
        assert all(isinstance(s, WeightStep) for s in steps)
        assert steps[-1].seq < points[0].seq  # one numbering, in write order
        assert store.weight_steps("c", limit=2) == steps[1:]
        # a name reused by a new rollout continues its log
        ended = judged.model_copy(update={"phase": Phase.ABORTED, "last_verdict": second})
        store.update("c", 6, ended, [])
        store.create("c", policy(), SOURCE, pending(300.0), event(300.0))
        assert store.analyses("c") == points
        assert [(s.at, s.phase) for s in store.weight_steps("c")[-2:]] == [
            (120.0, "aborted"),
            (300.0, "pending"),
        ]
        # a verdict the written state no longer holds (a pass ending a stage), carried by
        # its event, is logged at the stage it judged
        store.update("c", 8, pushed, [])
        final = VerdictRecord(at=350.0, outcome="pass", reason="baked", details=figures)
        moved = pushed.model_copy(update={"stage": 1, "desired_weight": 100.0, "updated_at": 350})
        carried = event(350.0, "progressing", verdict=final.model_dump(mode="json"))
        store.update("c", 9, moved, [carried])
        last = store.analyses("c")[-1]
        assert (last.at, last.stage, last.weight, last.outcome, last.details) == (
            350.0, 0, 1.0, "pass", figures
        )  # fmt: skip
        assert len(store.analyses("c")) == 3
        with pytest.raises(RolloutNotFoundError):
            store.analyses("nope")
        with pytest.raises(RolloutNotFoundError):
            store.weight_steps("nope")

    def test_unknown_rollout(self, store: RolloutStore) -> None:
        with pytest.raises(RolloutNotFoundError, match="no rollout named 'nope'"):
            store.get("nope")
        with pytest.raises(RolloutNotFoundError):
            store.update("nope", 1, pending(), [])
        with pytest.raises(RolloutNotFoundError):
            store.history("nope")

    def test_an_active_name_cannot_be_created_again(self, store: RolloutStore) -> None:
        store.create("c", policy(), SOURCE, pending(), event(100.0))
        with pytest.raises(RolloutExistsError, match="'c' already exists and is pending"):
            store.create("c", policy(), SOURCE, pending(), event(200.0))
        assert store.get("c").revision == 1
        assert len(store.history("c")) == 1

    def test_route_busy(self, store: RolloutStore) -> None:
        store.create("comments-v2", policy(), SOURCE, pending(), event(100.0))
        store.update(
            "comments-v2", 1, pending().model_copy(update={"phase": Phase.PROGRESSING}), []
        )
        with pytest.raises(RouteBusyError) as info:
            store.create("comments-v3", policy(), SOURCE, pending(), event(200.0))
        assert str(info.value) == (
            "route 'comments' is already being moved by rollout 'comments-v2' (progressing); "
            "abort it or wait until it ends"
        )
        assert info.value.holder == "comments-v2"
        with pytest.raises(RolloutNotFoundError):
            store.get("comments-v3")
        # another route is free
        store.create("orders-v2", policy("orders"), SOURCE, pending(), event(200.0))

    def test_a_terminal_rollout_frees_its_route(self, store: RolloutStore) -> None:
        store.create("comments-v2", policy(), SOURCE, pending(), event(100.0))
        store.update(
            "comments-v2", 1, pending().model_copy(update={"phase": Phase.ABORTED}), [event(150.0)]
        )
        assert store.list(active_only=True) == []
        store.create("comments-v3", policy(), SOURCE, pending(), event(200.0))
        assert [r.name for r in store.list(active_only=True)] == ["comments-v3"]
        assert [r.name for r in store.list()] == ["comments-v2", "comments-v3"]
        # a retry making the old one active again collides with the new one, in the store
        with pytest.raises(RouteBusyError, match="rollout 'comments-v3' \\(pending\\)"):
            store.update("comments-v2", 2, pending(), [event(300.0)])
        assert store.get("comments-v2").state.phase is Phase.ABORTED
        assert store.get("comments-v2").revision == 2

    def test_replacing_a_terminal_rollout_keeps_its_history(self, store: RolloutStore) -> None:
        store.create("c", policy(), SOURCE, pending(), event(100.0, "pending"))
        done = pending().model_copy(update={"phase": Phase.SUCCEEDED})
        store.update("c", 1, done, [event(150.0, "progressing → succeeded")])
        other = PolicySource("policies/c2.yaml", None, False, "z")
        replaced = store.create(
            "c", policy(candidate="comments-rust"), other, pending(300.0), event(300.0, "again")
        )
        assert replaced.revision == 3
        got = store.get("c")
        assert got == replaced
        assert got.policy.spec.candidate.cluster == "comments-rust"
        assert got.source == other
        assert got.created_at == 300.0
        assert got.state.phase is Phase.PENDING
        assert [(e.seq, e.transition) for e in store.history("c")] == [
            (1, "pending"),
            (2, "progressing → succeeded"),
            (3, "again"),
        ]
        assert store.update("c", 3, done, []).revision == 4

    def test_threads_sharing_one_store_lose_no_update(self, store: RolloutStore) -> None:
        store.create("c", policy(), SOURCE, pending(), event(100.0))
        per_thread = self.updates_per_thread

        def work(worker: int) -> None:
            done = 0
            while done < per_thread:
                current = store.get("c")
                state = current.state.model_copy(update={"push_seq": current.state.push_seq + 1})
                try:
                    store.update(
                        "c", current.revision, state, [event(1.0, "t", worker=worker, n=done)]
                    )
                except RevisionConflictError:
                    continue
                done += 1

        threads = [threading.Thread(target=work, args=(w,)) for w in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
        final = store.get("c")
        assert final.revision == 1 + 4 * per_thread
        assert final.state.push_seq == 4 * per_thread
        seen = [(e.details["worker"], e.details["n"]) for e in store.history("c")[1:]]
        assert sorted(seen) == [(w, n) for w in range(4) for n in range(per_thread)]
