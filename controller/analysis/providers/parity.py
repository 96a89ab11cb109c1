"""The parity SLI from a :class:`~controller.analysis.providers.base.ParitySource`, put into a
sample: shared by the ``envoy_admin`` provider and the runtime's analyzer.

A source's answer becomes :attr:`~controller.analysis.sli.Sample.parity`; its string (why no
data exists) a ``gaps[PARITY_GAP]`` of kind ``empty`` (the policy's ``noData`` decides); a
source that raises, one of kind ``error`` (held, never a breach nor a pass).
"""

from __future__ import annotations

from dataclasses import replace

from controller.analysis.providers.base import ParitySource
from controller.analysis.sli import PARITY_GAP, NoSample, ParitySli, SampleResult


async def read_parity(
    source: ParitySource, route: str, start: float, end: float
) -> ParitySli | NoSample:
    """``source``'s counts of ``route`` over ``[start, end]`` (epoch seconds), or the gap:
    ``empty`` with the source's reason, ``error`` when it raised. Never raises (but lets
    cancellation through)."""
    try:
        answer = await source.window(route, start, end)
    except Exception as exc:
        return NoSample("error", f"parity of route {route!r}: {type(exc).__name__}: {exc}")
    if isinstance(answer, str):
        return NoSample("empty", f"parity of route {route!r}: {answer}")
    return answer


def with_parity(sample: SampleResult, parity: ParitySli | NoSample) -> SampleResult:
    """``sample`` with ``parity`` as its parity SLI, or as its parity gap (any earlier one
    replaced); a :class:`NoSample` stays as it is."""
    if isinstance(sample, NoSample):
        return sample
    gaps = {k: v for k, v in sample.gaps.items() if k != PARITY_GAP}
    if isinstance(parity, NoSample):
        return replace(sample, parity=None, gaps={**gaps, PARITY_GAP: parity})
    return replace(sample, parity=parity, gaps=gaps)


def unseen(provider: str) -> NoSample:
    """The gap of a provider that cannot see the comparator's counts (a query error: holds,
    and at the stage's deadline ``onFailure`` applies; never ``noData``, which could fail a
    candidate for the controller's configuration)."""
    return NoSample(
        "error",
        f"the {provider} metrics provider cannot see the parity comparator's counts: use the"
        " prometheus provider with Prometheus scraping the comparator, or the comparator in"
        " the controller's process",
    )
