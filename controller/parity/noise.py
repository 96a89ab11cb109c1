"""Noise: differences the baseline has with itself, which are therefore not the candidate's fault.

Diffy's rule (Twitter, 2015: compare primary, secondary and candidate; a field where primary
and secondary differ is non-deterministic), in two parts:

- **per request**: a path where this request's primary and secondary replies differ is noise
  for this request's candidate reply;
- **learnt, by rate**: a JSON field path where primary and secondary differed in at least
  :data:`NOISE_MIN_REQUESTS` requests *and* in at least :data:`NOISE_MIN_SHARE` of the
  requests observed so far (requests of the route with a secondary reply) is noise for later
  requests too, secondary reply or not. The share matters: a field that differs between two
  replicas once in a thousand requests (a cache refreshed at the wrong moment) says nothing
  about a candidate that differs there in every request; a count alone would excuse it for
  good after two unlucky requests. The share is of the requests observed *so far*, so a path
  stops being noise when the replicas stop differing there often enough.

What is never learnt (only the per-request rule applies to them):

- ``:status``, ``:body``, ``:header/<name>`` and the JSON root ``/``: a difference there is
  the whole reply being different (an error page, another content-type), not a volatile
  field; learning them would let a candidate that fails every request pass as noisy;
- anything from a request whose primary and secondary statuses differ (its differences
  contain ``:status``): a failing secondary shows it failed, not that a field is volatile.
  Such a request is not observed at all: it counts neither for a path nor in the share's
  denominator (and :func:`controller.parity.classify.classify` treats it as having no
  secondary).

Diffy goes further and weighs a field's primary-vs-secondary difference rate against its
primary-vs-candidate rate; Sluice keeps the simpler threshold above.

Memory is bounded: at most ``max_paths`` paths seen fewer than ``min_requests`` times (the
oldest forgotten first) and at most ``max_paths`` paths counted beyond that; when the latter
are full, paths below the share are dropped to make room, and if none is, the new path is not
counted (so it is never noise: a mismatch stays visible). Pure.

Source: Diffy, "Diffy: Testing services without writing tests" (Twitter engineering blog,
2015) and github.com/opendiffy/diffy (``DifferenceAnalyzer``, noise from primary vs secondary).
"""

from __future__ import annotations

from fractions import Fraction

from controller.parity.diff import BODY, HEADER_PREFIX, ROOT, STATUS

NOISE_MIN_REQUESTS = 2
"""Requests in which primary and secondary must differ at a path before it is learnt noise."""

NOISE_MIN_SHARE = 0.05
"""Share (a ratio, not percent) of the observed requests in which primary and secondary must
have differed at a path for it to be learnt noise: 1 in 20. A timestamp or a request id differs
in every request (share 1); a field differing once in a thousand is far below it."""

MAX_LEARNT_PATHS = 1000
"""Default bound on counted paths (and, separately, on paths seen too few times yet)."""


def learnable(path: str) -> bool:
    """Whether ``path`` may ever become learnt noise: not ``:status``, ``:body``, a
    ``:header/...`` path nor the JSON root ``/`` (module docstring)."""
    return path not in (STATUS, BODY, ROOT) and not path.startswith(HEADER_PREFIX)


class NoiseModel:
    """The noise learnt for one route (module docstring).

    Args:
        min_requests: requests with a primary-vs-secondary difference at a path before the
            path can be noise for every request (>= 1).
        max_paths: bound on counted paths, and on paths seen fewer than ``min_requests``
            times (>= 1).
        min_share: share (ratio in [0, 1]) of the observed requests in which the path must
            have differed too.

    Raises:
        ValueError: ``min_requests`` or ``max_paths`` below 1, or ``min_share`` outside [0, 1].
    """

    def __init__(
        self,
        min_requests: int = NOISE_MIN_REQUESTS,
        max_paths: int = MAX_LEARNT_PATHS,
        min_share: float = NOISE_MIN_SHARE,
    ) -> None:
        if min_requests < 1 or max_paths < 1:
            raise ValueError("min_requests and max_paths must be at least 1")
        if not 0.0 <= min_share <= 1.0:
            raise ValueError(f"min_share must be a ratio in [0, 1], not {min_share}")
        self._min = min_requests
        self._max = max_paths
        # Exact: `count >= share * observed` must not flip on a float rounding.
        self._share = Fraction(min_share).limit_denominator(1_000_000)
        self._observed = 0
        self._counted: dict[str, int] = {}  # paths seen >= min_requests times
        self._pending: dict[str, int] = {}  # insertion-ordered: the oldest is evicted first

    @property
    def observed(self) -> int:
        """Requests observed: with a secondary reply whose status was the primary's."""
        return self._observed

    def observe(self, paths: frozenset[str]) -> None:
        """Count one request's primary-vs-secondary differences (field paths). A request
        whose differences include ``:status`` is ignored (module docstring)."""
        if STATUS in paths:
            return
        self._observed += 1
        for path in paths:
            if not learnable(path):
                continue
            if path in self._counted:
                self._counted[path] += 1
                continue
            seen = self._pending.pop(path, 0) + 1
            if seen >= self._min:
                if len(self._counted) >= self._max:
                    self._make_room()
                if len(self._counted) < self._max:
                    self._counted[path] = seen
                continue
            if len(self._pending) >= self._max:
                del self._pending[next(iter(self._pending))]
            self._pending[path] = seen

    def _make_room(self) -> None:
        # Runs only when a path reaches min_requests with the counted paths full.
        for path in [p for p, n in self._counted.items() if not self._above_share(n)]:
            del self._counted[path]

    def _above_share(self, count: int) -> bool:
        return count >= self._share * self._observed

    def _learnt(self, path: str) -> bool:
        count = self._counted.get(path)
        return count is not None and self._above_share(count)

    def is_noise(self, path: str, this_request: frozenset[str]) -> bool:
        """Whether a candidate difference at ``path`` is noise: primary and secondary differ
        there in this request (``this_request``, their differences; pass an empty set when
        there is no usable secondary reply) or the path is learnt (module docstring)."""
        return path in this_request or self._learnt(path)

    def learnt(self) -> frozenset[str]:
        """The paths that are learnt noise now (both thresholds met)."""
        return frozenset(p for p, n in self._counted.items() if self._above_share(n))
