"""Noise: differences the baseline has with itself, which are therefore not the candidate's fault.

Diffy's rule (Twitter, 2015: compare primary, secondary and candidate; a field where primary
and secondary differ is non-deterministic), simplified to two parts:

- **per request**: a path where this request's primary and secondary replies differ is noise
  for this request's candidate reply;
- **learnt**: a path where primary and secondary differed in at least
  :data:`NOISE_MIN_REQUESTS` requests of the route so far is noise for every later request
  too, secondary reply or not (a timestamp seen differing twice is not going to stop).

Diffy weighs the rate at which a field differs between the baselines against the rate between
primary and candidate; Sluice does not: once learnt, a path is noise for good, so a candidate
bug at a path the baseline itself never keeps stable goes unseen (its paths are shown as
noisy, not hidden).

Memory is bounded: at most ``max_paths`` learnt paths (beyond them nothing more is learnt) and
at most ``max_paths`` paths still below the threshold (the oldest forgotten first). Pure.
"""

from __future__ import annotations

NOISE_MIN_REQUESTS = 2
"""Requests in which primary and secondary must differ at a path before it is learnt noise."""

MAX_LEARNT_PATHS = 1000
"""Default bound on learnt paths (and, separately, on paths still being counted)."""


class NoiseModel:
    """The noise learnt for one route (module docstring).

    Args:
        min_requests: requests with a primary-vs-secondary difference at a path before the
            path is noise for every request (>= 1).
        max_paths: bound on learnt paths and on paths still counted (>= 1).

    Raises:
        ValueError: ``min_requests`` or ``max_paths`` below 1.
    """

    def __init__(
        self, min_requests: int = NOISE_MIN_REQUESTS, max_paths: int = MAX_LEARNT_PATHS
    ) -> None:
        if min_requests < 1 or max_paths < 1:
            raise ValueError("min_requests and max_paths must be at least 1")
        self._min = min_requests
        self._max = max_paths
        self._learnt: set[str] = set()
        self._pending: dict[str, int] = {}  # insertion-ordered: the oldest is evicted first

    def observe(self, paths: frozenset[str]) -> None:
        """Count one request's primary-vs-secondary differences (field paths)."""
        for path in paths:
            if path in self._learnt:
                continue
            seen = self._pending.pop(path, 0) + 1
            if seen >= self._min:
                if len(self._learnt) < self._max:
                    self._learnt.add(path)
                continue
            if len(self._pending) >= self._max:
                del self._pending[next(iter(self._pending))]
            self._pending[path] = seen

    def is_noise(self, path: str, this_request: frozenset[str]) -> bool:
        """Whether a candidate difference at ``path`` is noise: primary and secondary differ
        there in this request (``this_request``, their differences) or it is learnt."""
        return path in this_request or path in self._learnt

    def learnt(self) -> frozenset[str]:
        """The learnt noise paths."""
        return frozenset(self._learnt)
