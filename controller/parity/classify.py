"""Classify one compared request: matched, noisy or mismatched, and at which field paths.

``d = differences(primary, candidate)``; when a secondary replied *with the primary's
status*, ``n = differences(primary, secondary)`` is observed (:meth:`NoiseModel.observe`);
the paths of ``d`` that are noise (in ``n`` or learnt) are noisy, the rest mismatched. The
outcome is ``matched`` without any difference, ``noisy`` when every difference is noise, else
``mismatched`` (Diffy's primary/secondary/candidate scheme, see :mod:`controller.parity.noise`).

A secondary whose status differs from the primary's is set aside: the request is classified
as if there were no secondary and nothing is learnt from it. A failing secondary (a 502 error
page) differs from the primary at ``:status``, ``:body`` and ``content-type``; taking that as
noise would excuse a candidate that fails the same way, and learning it would excuse every
later failure. Pure.
"""

from __future__ import annotations

from typing import NamedTuple

from controller.parity.diff import Reply, differences
from controller.parity.noise import NoiseModel
from controller.parity.rules import CompareRules
from controller.parity.tally import Outcome


class Classification(NamedTuple):
    """One compared request's outcome (``matched``, ``noisy`` or ``mismatched``) and the field
    paths where the candidate differed: ``mismatched`` (not noise) and ``noisy``. A tuple, so
    ``outcome, mismatched, noisy = classify(...)`` works too."""

    outcome: Outcome
    mismatched: frozenset[str]
    noisy: frozenset[str]


def classify(
    primary: Reply,
    candidate: Reply,
    secondary: Reply | None,
    rules: CompareRules,
    noise: NoiseModel,
) -> Classification:
    """Compare one request's replies (module docstring); updates ``noise`` when a secondary
    replied with the primary's status (otherwise the secondary is ignored). Returns
    ``(outcome, mismatched paths, noisy paths)``."""
    found = differences(primary, candidate, rules)
    baseline: frozenset[str] = frozenset()
    if secondary is not None and secondary.status == primary.status:
        baseline = differences(primary, secondary, rules)
        noise.observe(baseline)
    if not found:
        return Classification("matched", frozenset(), frozenset())
    noisy = frozenset(p for p in found if noise.is_noise(p, baseline))
    mismatched = found - noisy
    return Classification("mismatched" if mismatched else "noisy", mismatched, noisy)
