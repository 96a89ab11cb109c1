"""What a store appends to a rollout's analysis log on a write, and its compact JSON form. Pure.

Every backend calls :func:`log_entries` with the stored state and the one being written, and
appends the result (numbered on from its last entry) in the same transaction as the state:
an :class:`~controller.store.rollouts.AnalysisPoint` when ``last_verdict`` changed (a verdict
is not a history event: one per interval would drown the history), a
:class:`~controller.store.rollouts.WeightStep` when the weights, stage or phase changed.

:func:`encode_entry` / :func:`decode_entry` give the compact JSON object one entry is kept as
where space counts (a Kubernetes object's status): one-letter keys, nulls left out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any, cast, get_args

from pydantic import ValidationError

from controller.rollout.actions import VERDICT_DETAIL, RecordEvent
from controller.rollout.state import RolloutState, VerdictOutcome, VerdictRecord
from controller.store.rollouts import AnalysisPoint, WeightStep

LogEntry = AnalysisPoint | WeightStep
"""One entry of a rollout's analysis log."""

_OUTCOMES: frozenset[str] = frozenset(get_args(VerdictOutcome))


def log_entries(
    old: RolloutState | None, new: RolloutState, events: Sequence[RecordEvent] = ()
) -> list[LogEntry]:
    """The entries to append when ``new`` replaces ``old`` (None: the rollout is created)
    with ``events``, with ``seq`` 0 (the backend numbers them): the verdicts the events carry
    (:data:`VERDICT_DETAIL`, judged at ``old``'s stage and weight), the new verdict, then
    the new weights. A verdict already stored is not appended again."""
    entries: list[LogEntry] = []
    seen = [old.last_verdict] if old is not None and old.last_verdict is not None else []
    where = old if old is not None else new
    for event in events:
        carried = _carried(event)
        if carried is not None and carried not in seen:
            seen.append(carried)
            entries.append(_point(carried, where.stage, where.desired_weight))
    verdict = new.last_verdict
    if verdict is not None and verdict not in seen:
        entries.append(_point(verdict, new.stage, new.desired_weight))
    if old is None or _weights(old) != _weights(new):
        entries.append(
            WeightStep(
                seq=0,
                at=new.updated_at,
                stage=new.stage,
                desired=new.desired_weight,
                acked=new.acked_weight,
                phase=str(new.phase),
            )
        )
    return entries


def _point(verdict: VerdictRecord, stage: int, weight: float) -> AnalysisPoint:
    return AnalysisPoint(
        seq=0,
        at=verdict.at,
        stage=stage,
        weight=weight,
        outcome=verdict.outcome,
        reason=verdict.reason,
        details=dict(verdict.details),
    )


def _carried(event: RecordEvent) -> VerdictRecord | None:
    raw = event.details.get(VERDICT_DETAIL)
    if not isinstance(raw, dict):
        return None
    try:
        return VerdictRecord.model_validate(raw)
    except ValidationError:
        return None  # another shape under that key: not a verdict of the machine's


def numbered(entries: list[LogEntry], last_seq: int) -> list[LogEntry]:
    """``entries`` numbered ``last_seq + 1``, ``last_seq + 2``, ..."""
    return [replace(e, seq=last_seq + i) for i, e in enumerate(entries, start=1)]


def encode_entry(entry: LogEntry) -> dict[str, Any]:
    """The compact JSON object of ``entry``: ``s`` seq, ``t`` at (epoch s), ``g`` stage,
    ``w`` desired weight (%), then for a verdict ``o`` outcome, ``r`` reason, ``d`` details
    (empty ones left out), for a weight step ``a`` ACKed weight (% or absent) and ``p`` phase."""
    out: dict[str, Any] = {"s": entry.seq, "t": entry.at, "g": entry.stage}
    if isinstance(entry, AnalysisPoint):
        out.update(w=entry.weight, o=entry.outcome)
        if entry.reason:
            out["r"] = entry.reason
        if entry.details:
            out["d"] = entry.details
        return out
    out.update(w=entry.desired, p=entry.phase)
    if entry.acked is not None:
        out["a"] = entry.acked
    return out


def decode_entry(raw: Mapping[str, Any]) -> LogEntry:
    """The entry :func:`encode_entry` made.

    Raises:
        KeyError, TypeError, ValueError: ``raw`` is not such an object (the caller reports
            it as a damaged record).
    """
    seq, at, stage, weight = _int(raw["s"]), float(raw["t"]), _int(raw["g"]), float(raw["w"])
    if "o" in raw:
        outcome = str(raw["o"])
        if outcome not in _OUTCOMES:
            raise ValueError(f"unknown verdict outcome {outcome!r}")
        details = raw.get("d") or {}
        if not isinstance(details, dict):
            raise TypeError(f"details is a JSON {type(details).__name__}, not an object")
        reason = str(raw.get("r", ""))
        return AnalysisPoint(seq, at, stage, weight, cast(VerdictOutcome, outcome), reason, details)
    acked = None if raw.get("a") is None else float(raw["a"])
    return WeightStep(seq, at, stage, weight, acked, str(raw["p"]))


def _weights(state: RolloutState) -> tuple[int, str, float, float | None]:
    return state.stage, str(state.phase), state.desired_weight, state.acked_weight


def _int(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value):
        raise TypeError(f"expected an integer, got {value!r}")
    return int(value)
