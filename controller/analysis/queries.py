"""PromQL templates over Envoy's per-cluster stats, for one cluster over one window (pure).

Envoy's ``/stats/prometheus`` exports, per upstream cluster (label ``envoy_cluster_name``):

- ``envoy_cluster_upstream_rq_total``: a counter of requests sent to the cluster;
- ``envoy_cluster_upstream_rq_xx{envoy_response_code_class="5"}``: a counter of 5xx responses
  (Envoy creates it on the first 5xx, so "no series" means no 5xx, not "no data");
- ``envoy_cluster_upstream_rq_time_bucket{le}``: a histogram of upstream request time in
  milliseconds. Buckets are cumulative (Prometheus ``le`` semantics: the bucket ``le="25"``
  counts every request that took at most 25 ms, ``le="+Inf"`` counts them all).

Every query is an instant query evaluated at the window's ``end`` over ``[W]``, W the window in
whole seconds (``[37s]``), and sums over every scraped Envoy (every ``instance``).

PromQL semantics the caller must know (https://prometheus.io/docs/prometheus/latest/querying/functions/#increase):

- ``increase(c[W])`` is the counter's growth between the first and last samples inside the
  window (counter resets handled), extrapolated to the window's edges: by up to half a scrape
  interval beyond the samples, and never below zero at the start. The result is a float, not an
  integer count, and it is only defined with at least two samples inside the window (else no
  series): W must cover at least two scrape intervals.
- A series born inside the window (the first 5xx of an Envoy) has no earlier sample: its first
  value is only partly counted, through the extrapolation towards zero.
- ``sum by (le) (increase(..._bucket[W]))`` keeps the histogram's cumulative shape per ``le``,
  which is what the judge's exceedance counts read.
- ``histogram_quantile(q, ...)`` interpolates linearly inside the bucket that holds the
  quantile: with Envoy's default buckets (..., 100, 250, 500 ms, ...) a real +5% can read as
  +1% or +18%. The quantile and ratio queries here are for display (status, reports) only; the
  judge decides on counts.

The parity comparator (tap-compare) exports ``sluice_parity_requests_total{route, outcome}``
(a counter per route and outcome: ``matched``, ``noisy``, ``mismatched``, ``error``,
``skipped``, ``dropped``; prometheus-client creates a labelled series on its first increment,
so a missing outcome means none yet, like Envoy's 5xx counter): :func:`parity_query`.

Custom SLO queries come from the policy: a template in which ``{cluster}`` (escaped as a PromQL
string literal's contents) and ``{window}`` (``37s``) are replaced; :func:`validate_template`
refuses what can be refused without a PromQL parser.
"""

from __future__ import annotations

import math
import re

REQUESTS_METRIC = "envoy_cluster_upstream_rq_total"
RESPONSE_CLASS_METRIC = "envoy_cluster_upstream_rq_xx"
LATENCY_BUCKET_METRIC = "envoy_cluster_upstream_rq_time_bucket"
CLUSTER_LABEL = "envoy_cluster_name"

PLACEHOLDERS = frozenset({"cluster", "window"})
"""The names a custom query template may use, as ``{cluster}`` and ``{window}``."""

DISPLAY_QUANTILES = (0.5, 0.95, 0.99)

_PLACEHOLDER = re.compile(r"\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}")
_CLOSERS = {")": "(", "]": "[", "}": "{"}


class QueryTemplateError(ValueError):
    """A custom query template that cannot be a single instant-vector or scalar query."""


# --- literals --------------------------------------------------------------------------------


def escape_string(value: str) -> str:
    """``value`` as the contents of a double-quoted PromQL string literal.

    PromQL strings follow Go's escape rules
    (https://prometheus.io/docs/prometheus/latest/querying/basics/#string-literals): a
    backslash and a double quote are escaped, control characters become ``\\n``, ``\\t``, ...
    or ``\\xHH``. So a cluster name can never end the literal and inject PromQL.
    """
    out: list[str] = []
    for char in value:
        if char == "\\":
            out.append("\\\\")
        elif char == '"':
            out.append('\\"')
        elif char == "\n":
            out.append("\\n")
        elif char == "\r":
            out.append("\\r")
        elif char == "\t":
            out.append("\\t")
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\x{ord(char):02x}")
        else:
            out.append(char)
    return "".join(out)


def window_seconds(start: float, end: float) -> int:
    """The window ``[start, end]`` as whole seconds (rounded, at least 1).

    Raises:
        ValueError: ``end`` is not after ``start``, or either is not finite.
    """
    if not (math.isfinite(start) and math.isfinite(end)) or end <= start:
        raise ValueError(f"the window must end after it starts (start={start}, end={end})")
    return max(1, round(end - start))


def range_selector(seconds: int) -> str:
    """``37`` → ``37s`` (the duration inside ``[...]``)."""
    if seconds < 1:
        raise ValueError("a window lasts at least 1 s")
    return f"{seconds}s"


def _matcher(cluster: str, *extra: str) -> str:
    return "{" + ",".join((f'{CLUSTER_LABEL}="{escape_string(cluster)}"', *extra)) + "}"


# --- the judge's counts ----------------------------------------------------------------------


def requests_query(cluster: str, seconds: int) -> str:
    """Requests sent to ``cluster`` over the last ``seconds`` (a float: see the module doc)."""
    return f"sum(increase({REQUESTS_METRIC}{_matcher(cluster)}[{range_selector(seconds)}]))"


def errors_query(cluster: str, seconds: int) -> str:
    """5xx responses of ``cluster`` over the last ``seconds``. No series: no 5xx seen (Envoy
    creates the counter on the first one), which the caller reads as 0 when requests exist."""
    matcher = _matcher(cluster, 'envoy_response_code_class="5"')
    return f"sum(increase({RESPONSE_CLASS_METRIC}{matcher}[{range_selector(seconds)}]))"


def latency_buckets_query(cluster: str, seconds: int) -> str:
    """Requests per cumulative latency bucket (``le`` in ms) of ``cluster`` over the last
    ``seconds``: one series per ``le``, summed over every Envoy."""
    window = range_selector(seconds)
    return f"sum by (le) (increase({LATENCY_BUCKET_METRIC}{_matcher(cluster)}[{window}]))"


# --- the parity comparator's counts ----------------------------------------------------------

PARITY_METRIC = "sluice_parity_requests_total"
PARITY_OUTCOMES = ("matched", "noisy", "mismatched", "error")
"""The outcomes the parity SLI reads (compared = matched + noisy + mismatched; error: not
compared). ``skipped`` and ``dropped`` requests were never compared and do not count."""


def parity_query(route: str, outcome: str, seconds: int) -> str:
    """Mirrored requests of ``route`` with ``outcome`` (one of :data:`PARITY_OUTCOMES`) over
    the last ``seconds``, summed over every comparator scraped. No series: none with that
    outcome yet (or the comparator is not scraped: when every outcome has none).

    Raises:
        ValueError: ``outcome`` is not one of :data:`PARITY_OUTCOMES`.
    """
    if outcome not in PARITY_OUTCOMES:
        raise ValueError(f"unknown parity outcome {outcome!r}")
    matcher = f'{{route="{escape_string(route)}",outcome="{outcome}"}}'
    return f"sum(increase({PARITY_METRIC}{matcher}[{range_selector(seconds)}]))"


# --- display only ----------------------------------------------------------------------------


def error_rate_query(cluster: str, seconds: int) -> str:
    """5xx / requests (0-1) of ``cluster``; display only. ``or vector(0)`` makes a cluster
    without any 5xx read 0 rather than no data; no requests: NaN (0/0) or no series."""
    return f"({errors_query(cluster, seconds)} or vector(0)) / {requests_query(cluster, seconds)}"


def latency_quantile_query(cluster: str, seconds: int, quantile: float) -> str:
    """``histogram_quantile`` of ``cluster``'s request time (ms); display only: it interpolates
    linearly inside a bucket (see the module doc), the judge decides on bucket counts."""
    if not 0 < quantile < 1:
        raise ValueError("quantile must be in (0, 1)")
    return f"histogram_quantile({quantile:g}, {latency_buckets_query(cluster, seconds)})"


def display_queries(cluster: str, seconds: int) -> dict[str, str]:
    """Queries for people (status, reports): requests, errors, error rate, p50, p95, p99."""
    out = {
        "requests": requests_query(cluster, seconds),
        "errors": errors_query(cluster, seconds),
        "error_rate": error_rate_query(cluster, seconds),
    }
    for q in DISPLAY_QUANTILES:
        out[f"latency_p{round(q * 100)}"] = latency_quantile_query(cluster, seconds, q)
    return out


# --- custom SLO queries ----------------------------------------------------------------------


def _scan(template: str) -> tuple[str, str]:
    """The template without its ``#`` comments, and that with string literals' contents
    ('...', "...", `...`) blanked out too, once string literals end and brackets balance.

    Raises:
        QueryTemplateError: an unterminated string or unbalanced brackets.
    """
    code: list[str] = []
    uncommented: list[str] = []
    stack: list[tuple[str, int]] = []
    i = 0
    while i < len(template):
        char = template[i]
        if char in "\"'`":
            end = i + 1
            while end < len(template) and template[end] != char:
                if char != "`" and template[end] == "\n":
                    break
                end += 2 if char != "`" and template[end] == "\\" else 1
            if end >= len(template) or template[end] != char:
                raise QueryTemplateError(f"unterminated string literal at offset {i}")
            code.append(char + " " * (end - i - 1) + char)
            uncommented.append(template[i : end + 1])
            i = end + 1
            continue
        if char == "#":
            end = template.find("\n", i)
            end = len(template) if end < 0 else end
            code.append(" " * (end - i))
            uncommented.append(" " * (end - i))
            i = end
            continue
        if char in "([{":
            stack.append((char, i))
        elif char in _CLOSERS:
            if not stack or stack[-1][0] != _CLOSERS[char]:
                raise QueryTemplateError(f"unbalanced {char!r} at offset {i}")
            stack.pop()
        code.append(char)
        uncommented.append(char)
        i += 1
    if stack:
        opener, offset = stack[-1]
        raise QueryTemplateError(f"unclosed {opener!r} at offset {offset}")
    return "".join(code), "".join(uncommented)


def validate_template(template: str) -> None:
    """Refuse a custom query template that cannot be one instant-vector or scalar query.

    Checks (PromQL is not parsed; Prometheus reports any other error as a bad query, HTTP 400):

    - it is not empty;
    - every ``{name}`` placeholder (outside ``#`` comments) is ``{cluster}`` or ``{window}``
      (``{name}`` alone is never valid PromQL: a label matcher needs an operator);
    - ``{cluster}`` appears: otherwise the baseline and the candidate get the same value and
      any drift test passes without looking;
    - string literals end and brackets balance;
    - it does not end with a range (``[5m]``) or subquery (``[5m:1m]``) selector: the result
      would be a range vector, which has no single value.

    Placeholders inside string literals (``envoy_cluster_name="{cluster}"``) are found as well:
    that is where ``{cluster}`` usually goes.

    Raises:
        QueryTemplateError: with a message naming the problem.
    """
    if not template.strip():
        raise QueryTemplateError("the custom query is empty")
    code, uncommented = _scan(template)
    names = [m.group(1) for m in _PLACEHOLDER.finditer(uncommented)]
    unknown = sorted(set(names) - PLACEHOLDERS)
    if unknown:
        listed = ", ".join("{" + n + "}" for n in unknown)
        raise QueryTemplateError(
            f"unknown placeholder(s) {listed} in custom query {template!r}:"
            " only {cluster} and {window} are replaced"
        )
    if "cluster" not in names:
        raise QueryTemplateError(
            f"custom query {template!r} does not use {{cluster}}: the baseline and the candidate"
            " would get the same value"
        )
    if re.search(r"\]\s*$", code):
        raise QueryTemplateError(
            f"custom query {template!r} ends with a range selector: it must return an instant"
            " vector or a scalar (wrap it in a function such as rate() or increase())"
        )


def render_custom(template: str, cluster: str, seconds: int) -> str:
    """The custom ``template`` for ``cluster`` over the last ``seconds``: ``{cluster}`` becomes
    ``cluster`` escaped for a PromQL string literal, ``{window}`` becomes ``37s``.

    ``{cluster}`` is meant for string literals with an equality matcher
    (``envoy_cluster_name="{cluster}"``); in a regex matcher (``=~``) the name's dots match any
    character.

    Raises:
        QueryTemplateError: see :func:`validate_template`.
    """
    validate_template(template)
    values = {"cluster": escape_string(cluster), "window": range_selector(seconds)}
    return _PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), template)
