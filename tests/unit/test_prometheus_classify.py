"""The pure parts of the ``prometheus`` provider: which failures are retried, error texts,
options and the registry. (Against a real Prometheus: tests/integration and tests/e2e.)"""

from __future__ import annotations

import pytest
import requests
from prometheus_api_client.exceptions import PrometheusApiClientException

from controller.analysis.providers import PROVIDERS
from controller.analysis.providers.base import make_provider
from controller.analysis.providers.prometheus import (
    PrometheusProvider,
    http_status,
    is_transient,
)
from controller.analysis.providers.prometheus_query import _api_error


def api_error(status: int, body: bytes = b"") -> PrometheusApiClientException:
    """What prometheus-api-client raises for a non-200 answer."""
    return PrometheusApiClientException(f"HTTP Status Code {status} ({body!r})")


@pytest.mark.parametrize(
    ("exc", "transient"),
    [
        (requests.ConnectionError("refused"), True),
        (requests.ConnectTimeout("connect timeout"), True),
        (requests.ReadTimeout("read timeout"), True),
        (api_error(503), True),
        (api_error(502), True),
        (api_error(500), True),
        (api_error(429), True),
        (api_error(400), False),
        (api_error(422), False),
        (api_error(404), False),
        (PrometheusApiClientException("no status in here"), False),
        (ValueError("bad json"), False),
        (KeyError("data"), False),
    ],
)
def test_is_transient(exc: BaseException, transient: bool) -> None:
    assert is_transient(exc) is transient


def test_http_status() -> None:
    assert http_status(api_error(503, b"x")) == 503
    assert http_status(RuntimeError("HTTP Status Code 503")) is None


def test_api_error_reads_prometheus_json() -> None:
    body = (
        b'{"status":"error","errorType":"bad_data","error":"invalid parameter \\"query\\":'
        b' 1:5: parse error: unexpected <op:*>"}'
    )
    assert _api_error(str(api_error(400, body))) == (
        'bad_data: invalid parameter "query": 1:5: parse error: unexpected <op:*>'
    )
    assert _api_error(str(api_error(502, b"<html>bad gateway</html>"))) == (
        "HTTP Status Code 502 (b'<html>bad gateway</html>')"
    )


def test_registry_builds_a_prometheus_provider() -> None:
    provider = make_provider(
        "prometheus", {"url": "http://prometheus:9090/", "timeout": "2.5"}, PROVIDERS
    )
    assert isinstance(provider, PrometheusProvider)
    assert provider.url == "http://prometheus:9090"
    assert provider.timeout_s == 2.5
    assert provider.retry_budget_s == 10.0


def test_options_need_a_url() -> None:
    with pytest.raises(ValueError, match="'url'"):
        PrometheusProvider.from_options({"timeout": "3"})


@pytest.mark.parametrize(("timeout", "budget"), [(0.0, 1.0), (-1.0, 1.0), (1.0, -0.1)])
def test_bad_timeouts(timeout: float, budget: float) -> None:
    with pytest.raises(ValueError, match="timeout_s"):
        PrometheusProvider("http://p:9090", timeout_s=timeout, retry_budget_s=budget)
