"""PromQL templates over Envoy's per-cluster stats: exact strings, escaping, custom templates."""

from __future__ import annotations

import pytest

from controller.analysis import queries
from controller.analysis.queries import QueryTemplateError

# --- the judge's counts ----------------------------------------------------------------------


def test_requests_query() -> None:
    assert queries.requests_query("comments-go", 37) == (
        'sum(increase(envoy_cluster_upstream_rq_total{envoy_cluster_name="comments-go"}[37s]))'
    )


def test_errors_query() -> None:
    assert queries.errors_query("comments-go", 120) == (
        "sum(increase(envoy_cluster_upstream_rq_xx"
        '{envoy_cluster_name="comments-go",envoy_response_code_class="5"}[120s]))'
    )


def test_latency_buckets_query() -> None:
    assert queries.latency_buckets_query("comments-go", 30) == (
        "sum by (le) (increase(envoy_cluster_upstream_rq_time_bucket"
        '{envoy_cluster_name="comments-go"}[30s]))'
    )


# --- display only ----------------------------------------------------------------------------


def test_display_queries() -> None:
    shown = queries.display_queries("b", 30)
    requests = 'sum(increase(envoy_cluster_upstream_rq_total{envoy_cluster_name="b"}[30s]))'
    errors = (
        "sum(increase(envoy_cluster_upstream_rq_xx"
        '{envoy_cluster_name="b",envoy_response_code_class="5"}[30s]))'
    )
    buckets = (
        'sum by (le) (increase(envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name="b"}[30s]))'
    )
    assert shown == {
        "requests": requests,
        "errors": errors,
        "error_rate": f"({errors} or vector(0)) / {requests}",
        "latency_p50": f"histogram_quantile(0.5, {buckets})",
        "latency_p95": f"histogram_quantile(0.95, {buckets})",
        "latency_p99": f"histogram_quantile(0.99, {buckets})",
    }


@pytest.mark.parametrize("q", [0, 1, -0.5, 1.5])
def test_quantile_out_of_range(q: float) -> None:
    with pytest.raises(ValueError, match="quantile"):
        queries.latency_quantile_query("b", 30, q)


# --- literals and windows --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "escaped"),
    [
        ("comments-go", "comments-go"),
        ('a"b', 'a\\"b'),
        ("a\\b", "a\\\\b"),
        ('x"}) or vector(1) #', 'x\\"}) or vector(1) #'),
        ("tab\there\nnl", "tab\\there\\nnl"),
        ("bell\x07", "bell\\x07"),
        ("café.svc", "café.svc"),
    ],
)
def test_escape_string(name: str, escaped: str) -> None:
    assert queries.escape_string(name) == escaped


def test_an_escaped_name_cannot_leave_its_literal() -> None:
    query = queries.requests_query('x"}[1s])) or vector(1) #', 10)
    assert query == (
        "sum(increase(envoy_cluster_upstream_rq_total"
        '{envoy_cluster_name="x\\"}[1s])) or vector(1) #"}[10s]))'
    )


@pytest.mark.parametrize(
    ("start", "end", "seconds"),
    [(100.0, 137.0, 37), (100.0, 136.6, 37), (100.0, 136.4, 36), (100.0, 100.2, 1)],
)
def test_window_seconds(start: float, end: float, seconds: int) -> None:
    assert queries.window_seconds(start, end) == seconds


@pytest.mark.parametrize(
    ("start", "end"), [(10.0, 10.0), (10.0, 5.0), (float("nan"), 5.0), (0.0, float("inf"))]
)
def test_window_must_end_after_it_starts(start: float, end: float) -> None:
    with pytest.raises(ValueError, match="window"):
        queries.window_seconds(start, end)


# --- custom templates ------------------------------------------------------------------------


def test_render_custom_substitutes_and_escapes() -> None:
    template = (
        'sum(rate(http_requests_total{service="{cluster}",code=~"5.."}[{window}]))'
        ' / sum(rate(http_requests_total{service="{cluster}"}[{window}]))'
    )
    assert queries.render_custom(template, 'go"v2', 45) == (
        'sum(rate(http_requests_total{service="go\\"v2",code=~"5.."}[45s]))'
        ' / sum(rate(http_requests_total{service="go\\"v2"}[45s]))'
    )


def test_render_custom_leaves_label_matchers_and_regex_braces() -> None:
    template = 'max(x{envoy_cluster_name="{cluster}", path=~"/a{2}"}) # {not} a placeholder'
    assert queries.render_custom(template, "c", 5) == (
        'max(x{envoy_cluster_name="c", path=~"/a{2}"}) # {not} a placeholder'
    )


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ('x{envoy_cluster_name="{cluster}"}[{windw}]', r"unknown placeholder\(s\) \{windw\}"),
        ('x{a="{cluster}",b="{service}",c="{zone}"}', r"\{service\}, \{zone\}"),
        ("sum(rate(x[{window}]))", "does not use {cluster}"),
        ('rate(x{a="{cluster}"}[{window}]', r"unclosed '\('"),
        ('rate(x{a="{cluster}"}[{window}])))', r"unbalanced '\)'"),
        ('x{a="{cluster}]', "unterminated string"),
        ('x{a="{cluster}"}[{window}]', "range selector"),
        ('rate(x{a="{cluster}"}[5m])[10m:1m]  ', "range selector"),
    ],
)
def test_validate_template_refuses(template: str, message: str) -> None:
    with pytest.raises(QueryTemplateError, match=message):
        queries.validate_template(template)
    with pytest.raises(QueryTemplateError):
        queries.render_custom(template, "c", 30)


@pytest.mark.parametrize(
    "template",
    [
        'sum(rate(x{a="{cluster}"}[{window}]))',
        'histogram_quantile(0.99, sum by (le) (rate(x_bucket{a="{cluster}"}[{window}])))',
        'scalar(sum(up{job="{cluster}"}))',
        "sum(up{job='{cluster}'}) # a ')' in a comment",
        'sum(x{a="{cluster}", b="]"})',
    ],
)
def test_validate_template_accepts(template: str) -> None:
    queries.validate_template(template)
