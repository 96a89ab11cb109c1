"""The comparator over real HTTP: aiohttp upstreams on 127.0.0.1 (baseline, secondary,
candidates, sisters), mirrored requests sent as Envoy sends them (with the route header), and
what the comparator counted, sampled, exported on /metrics and serves on its admin API.

The upstreams record every request they receive, so the tests can assert what was forwarded
(and that a write without a sister never was).
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from controller.parity.comparator import Comparator, RouteParity
from controller.parity.forward import ROUTE_HEADER
from controller.parity.targets import UnknownCluster
from controller.policy.gateway import Gateway
from controller.policy.loading import load_gateway
from controller.policy.parity import ParityPolicy

WAIT_S = 10.0


@dataclass
class Seen:
    """One request an upstream received."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Upstream:
    """A real HTTP upstream: JSON replies naming an item, with optional differences."""

    name: str
    bump_every: int = 0  # price + 1 when id % bump_every == 0 (a candidate's nested bug)
    noisy_meta: bool = False  # a fresh timestamp and request id in every reply
    delay_s: float = 0.0
    gate: asyncio.Event | None = None  # replies wait for it (a saturated comparator)
    padding: int = 0  # bytes of filler in every reply (a reply over the body limit)
    keys: bool = False  # keys k00..k(id-1) and one 300-character key in every reply
    seen: list[Seen] = field(default_factory=list)
    runner: web.AppRunner | None = None
    port: int = 0

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        headers = {k.lower(): v for k, v in request.headers.items()}
        self.seen.append(Seen(request.method, request.path_qs, headers, body))
        if self.gate is not None:
            await self.gate.wait()
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        item_id = int(request.match_info.get("id", "0"))
        price = 10.5 + item_id
        if self.bump_every and item_id % self.bump_every == 0:
            price += 1
        meta: dict[str, Any] = {"version": 1}
        if self.noisy_meta:
            meta |= {"generated_at": time.time_ns(), "request_id": random.getrandbits(64)}
        doc: dict[str, Any] = {
            "item": {"id": item_id, "details": {"price": price, "tags": ["a", "b"]}}
        }
        if self.padding:
            doc["padding"] = "p" * self.padding
        if self.keys:
            doc |= {f"k{j:02d}": 1 for j in range(item_id)} | {"x" * 300: 1}
        response = web.json_response(doc | {"meta": meta})
        response.set_cookie("session", f"secret-{self.name}")
        return response

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/items/{id}", self.handle)
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = self.runner.addresses[0][1]

    async def stop(self) -> None:
        if self.gate is not None:
            self.gate.set()
        if self.runner is not None:
            await self.runner.cleanup()


def gateway_for(upstreams: dict[str, Upstream]) -> Gateway:
    clusters = "\n".join(
        f"    - name: {u.name}\n      endpoints: [{{address: 127.0.0.1, port: {u.port}}}]"
        for u in upstreams.values()
    )
    first = next(iter(upstreams))
    text = f"""
apiVersion: sluice.dev/v1alpha1
kind: Gateway
metadata: {{name: parity-test}}
spec:
  listeners:
    - name: http
      port: 0
      virtualHosts:
        - name: shop
          routes:
            - {{name: items, match: {{prefix: /items}}, cluster: {first}}}
  clusters:
{clusters}
"""
    return load_gateway(text, "<test gateway>")


def parity(**fields: Any) -> ParityPolicy:
    return ParityPolicy.model_validate(fields)


@pytest.fixture
async def upstreams() -> AsyncIterator[dict[str, Upstream]]:
    ups = {
        u.name: u
        for u in (
            Upstream("base"),
            Upstream("base-replica"),
            Upstream("nested", bump_every=4),
            Upstream("noisy-base", noisy_meta=True),
            Upstream("noisy-base-2", noisy_meta=True),
            Upstream("noisy-cand", noisy_meta=True),
            Upstream("slow", delay_s=3.0),
            Upstream("sister"),
            Upstream("gated", gate=asyncio.Event()),
            Upstream("big", padding=8 * 1024),
            Upstream("keys", keys=True),
        )
    }
    try:
        for u in ups.values():
            await u.start()
        yield ups
    finally:
        for u in ups.values():
            await u.stop()


ROUTES = [
    RouteParity("items", parity(), "base", "nested"),
    RouteParity("replica", parity(primary={"cluster": "base-replica"}), "base", "nested"),
    RouteParity("noise", parity(secondary={"cluster": "noisy-base-2"}), "noisy-base", "noisy-cand"),
    RouteParity(
        "ignored",
        parity(compare={"ignore": ["/meta/generated_at", "/meta/request_id"]}),
        "noisy-base",
        "noisy-cand",
    ),
    RouteParity("slow", parity(timeout="300ms"), "base", "slow"),
    RouteParity("slow-base", parity(timeout="300ms"), "slow", "base"),
    RouteParity(
        "writes",
        parity(methods=["GET", "POST"], sister={"candidate": {"cluster": "sister"}}),
        "base",
        "nested",
    ),
]


@pytest.fixture
async def comparator(upstreams: dict[str, Upstream]) -> AsyncIterator[Comparator]:
    comp = Comparator(gateway_for(upstreams))
    comp.configure(ROUTES)
    await comp.start()
    await comp.start_admin()
    try:
        yield comp
    finally:
        await comp.stop()


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def mirror(
    client: aiohttp.ClientSession,
    comp: Comparator,
    route: str | None,
    path: str,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
) -> int:
    """One request as Envoy mirrors it: the shadow Host, Envoy's headers, the route header."""
    sent = {
        "host": "shop-shadow",
        "user-agent": "a-browser/1.0",
        "x-request-id": "r-1",
        "x-envoy-expected-rq-timeout-ms": "15000",
    }
    if route is not None:
        sent[ROUTE_HEADER] = route
    sent |= headers or {}
    url = f"http://127.0.0.1:{comp.port}{path}"
    async with client.request(method, url, headers=sent, data=body) as response:
        await response.read()
        return response.status


async def until(probe: Callable[[], Awaitable[bool] | bool], what: str) -> None:
    deadline = asyncio.get_running_loop().time() + WAIT_S
    while True:
        result = probe()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def recorded(comp: Comparator, route: str) -> int:
    tally = comp.tally(route)
    assert tally is not None
    c = tally.counts()
    return c.compared + c.errors + c.skipped + c.dropped


async def admin_json(client: aiohttp.ClientSession, comp: Comparator, path: str) -> Any:
    async with client.get(f"http://127.0.0.1:{comp.admin_port}{path}") as response:
        return response.status, await response.json()


async def metrics(client: aiohttp.ClientSession, comp: Comparator) -> dict[tuple[str, ...], float]:
    async with client.get(f"http://127.0.0.1:{comp.admin_port}/metrics") as response:
        text = await response.text()
    out: dict[tuple[str, ...], float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, *(f"{k}={v}" for k, v in sorted(s.labels.items())))] = s.value
    return out


async def test_a_primary_replica_answers_instead_of_the_baseline(
    comparator: Comparator, client: aiohttp.ClientSession, upstreams: dict[str, Upstream]
) -> None:
    """``parity.primary``: the production baseline never sees a mirrored request; the replica
    answers each one and the candidate is compared with it."""
    for item in range(8):
        assert await mirror(client, comparator, "replica", f"/items/{item}") == 202
    await until(lambda: recorded(comparator, "replica") == 8, "8 requests recorded")
    assert upstreams["base"].seen == []
    assert sorted(s.path for s in upstreams["base-replica"].seen) == [
        f"/items/{i}" for i in range(8)
    ]
    assert len(upstreams["nested"].seen) == 8
    tally = comparator.tally("replica")
    assert tally is not None
    counts = tally.counts()
    assert (counts.compared, counts.mismatched, counts.errors) == (8, 2, 0)  # ids 0 and 4
    status, body = await admin_json(client, comparator, "/v1/parity/routes/replica")
    assert status == 200
    assert (body["baseline"], body["primary"]) == ("base", "base-replica")


async def test_a_primary_replica_is_checked_and_writes_go_to_the_sisters_alone(
    upstreams: dict[str, Upstream], client: aiohttp.ClientSession
) -> None:
    """An unknown primary cluster is refused like any other; a mirrored write goes to the
    sister targets, never to the primary replica."""
    comp = Comparator(gateway_for(upstreams))
    with pytest.raises(UnknownCluster):
        comp.configure([RouteParity("r", parity(primary={"cluster": "nowhere"}), "base", "nested")])
    writes = parity(
        methods=["GET", "POST"],
        sister={"candidate": {"cluster": "sister"}},
        primary={"cluster": "base-replica"},
    )
    comp.configure([RouteParity("w", writes, "base", "nested")])
    await comp.start()
    try:
        assert await mirror(client, comp, "w", "/items/3", method="POST", body=b"{}") == 202
        await until(lambda: recorded(comp, "w") + comp_exercised(comp, "w") == 1, "the write")
        assert [s.method for s in upstreams["sister"].seen] == ["POST"]
        assert upstreams["base-replica"].seen == []
        assert upstreams["base"].seen == []
    finally:
        await comp.stop()


def comp_exercised(comp: Comparator, route: str) -> int:
    data = comp.route_json(route)
    assert data is not None
    return int(data["counts"]["exercised"])


async def test_nested_field_mismatch_is_counted_sampled_redacted_and_exported(
    comparator: Comparator, client: aiohttp.ClientSession, upstreams: dict[str, Upstream]
) -> None:
    secrets = {
        "authorization": "Bearer s3cret",
        "cookie": "sid=s3cret",
        "connection": "keep-alive, x-hop",  # x-hop is hop-by-hop too (RFC 9110 7.6.1)
        "x-hop": "1",
        "proxy-authorization": "Basic cHJveHk=",
    }
    for item in range(1, 21):
        assert await mirror(client, comparator, "items", f"/items/{item}", headers=secrets) == 202
    await until(lambda: recorded(comparator, "items") == 20, "20 items recorded")

    tally = comparator.tally("items")
    assert tally is not None
    counts = tally.counts()
    # ids 4, 8, 12, 16, 20 get a price one higher from the candidate.
    assert (counts.matched, counts.mismatched, counts.noisy, counts.errors) == (15, 5, 0, 0)
    assert {p: (c.mismatched, c.noisy) for p, c in tally.paths().items()} == {
        "/item/details/price": (5, 0)
    }
    samples = tally.samples()
    assert [s.url for s in samples] == [
        "/items/4",
        "/items/8",
        "/items/12",
        "/items/16",
        "/items/20",
    ]
    sample = samples[-1].to_json()
    assert sample["paths"] == ["/item/details/price"]
    request_headers = dict(sample["request"]["headers"])  # type: ignore[index]
    assert request_headers["authorization"] == "[redacted]"
    assert request_headers["cookie"] == "[redacted]"
    assert request_headers["host"] == "shop-shadow"
    assert ROUTE_HEADER not in request_headers
    primary = sample["primary"]
    assert json.loads(primary["body"])["item"]["details"]["price"] == 30.5  # type: ignore[index]
    assert json.loads(sample["candidate"]["body"])["item"]["details"]["price"] == 31.5  # type: ignore[index]
    assert dict(primary["headers"])["set-cookie"] == "[redacted]"  # type: ignore[index]

    # What the upstreams got: the user's request, not Envoy's plumbing nor the hop's headers.
    for name in ("base", "nested"):
        assert len(upstreams[name].seen) == 20
        got = upstreams[name].seen[0]
        assert got.headers["host"] == "shop-shadow"
        assert got.headers["x-request-id"] == "r-1"
        assert got.headers["authorization"] == "Bearer s3cret"  # redacted only in samples
        assert ROUTE_HEADER not in got.headers
        assert not any(k.startswith("x-envoy-") for k in got.headers)
        assert "x-hop" not in got.headers
        assert "proxy-authorization" not in got.headers
        assert got.headers.get("connection") != "keep-alive, x-hop"
        assert got.headers["user-agent"] == "a-browser/1.0"  # the user's, not aiohttp's

    status, data = await admin_json(client, comparator, "/v1/parity/routes/items")
    assert status == 200
    assert data["route"] == "items"
    assert data["counts"] == {
        "compared": 20, "matched": 15, "noisy": 0, "mismatched": 5, "errors": 0,
        "skipped": 0, "dropped": 0, "exercised": 0,
    }  # fmt: skip
    assert data["paths"] == {"/item/details/price": {"mismatched": 5, "noisy": 0}}
    assert len(data["samples"]) == 5
    assert dict(data["samples"][0]["request"]["headers"])["authorization"] == "[redacted]"

    m = await metrics(client, comparator)
    assert m[("sluice_parity_requests_total", "outcome=mismatched", "route=items")] == 5
    assert m[("sluice_parity_requests_total", "outcome=matched", "route=items")] == 15
    assert m[("sluice_parity_requests_total", "outcome=error", "route=items")] == 0
    key = ("sluice_parity_field_differences_total", "kind=mismatch", "path=/item/details/price")
    assert m[(*key, "route=items")] == 5


async def test_noise_from_secondary_and_ignore_paths_are_not_mismatches(
    comparator: Comparator, client: aiohttp.ClientSession
) -> None:
    for item in range(10):
        await mirror(client, comparator, "noise", f"/items/{item}")
        await mirror(client, comparator, "ignored", f"/items/{item}")
    await until(
        lambda: recorded(comparator, "noise") == 10 and recorded(comparator, "ignored") == 10,
        "both routes recorded",
    )
    noise, ignored = comparator.tally("noise"), comparator.tally("ignored")
    assert noise is not None
    assert ignored is not None
    assert (noise.counts().noisy, noise.counts().mismatched, noise.counts().matched) == (10, 0, 0)
    assert {p: (c.mismatched, c.noisy) for p, c in noise.paths().items()} == {
        "/meta/generated_at": (0, 10),
        "/meta/request_id": (0, 10),
    }
    assert noise.samples() == ()
    assert (ignored.counts().matched, ignored.counts().mismatched) == (10, 0)
    assert ignored.paths() == {}

    m = await metrics(client, comparator)
    assert m[("sluice_parity_requests_total", "outcome=noisy", "route=noise")] == 10
    key = ("sluice_parity_field_differences_total", "kind=noise", "path=/meta/request_id")
    assert m[(*key, "route=noise")] == 10


async def test_a_candidate_without_reply_mismatches_a_baseline_without_reply_is_an_error(
    comparator: Comparator, client: aiohttp.ClientSession
) -> None:
    for item in range(3):
        await mirror(client, comparator, "slow", f"/items/{item}")
        await mirror(client, comparator, "slow-base", f"/items/{item}")
    await until(
        lambda: recorded(comparator, "slow") == 3 and recorded(comparator, "slow-base") == 3,
        "both slow routes recorded",
    )
    # The candidate timed out where the baseline replied: compared, and a mismatch.
    tally = comparator.tally("slow")
    assert tally is not None
    counts = tally.counts()
    assert (counts.compared, counts.mismatched, counts.errors) == (3, 3, 0)
    assert {p: (c.mismatched, c.noisy) for p, c in tally.paths().items()} == {":unanswered": (3, 0)}
    sample = tally.samples()[-1].to_json()
    assert sample["paths"] == [":unanswered"]
    candidate = sample["candidate"]
    assert isinstance(candidate, dict)
    assert (candidate["status"], candidate["headers"]) == (0, [])
    assert candidate["body"] == "timeout after 0.3 s"
    assert sample["primary"]["status"] == 200  # type: ignore[index]
    _, data = await admin_json(client, comparator, "/v1/parity/routes/slow")
    assert data["last_error"]["reason"] == "timeout after 0.3 s"
    assert data["last_error"]["target"].startswith("127.0.0.1:")
    m = await metrics(client, comparator)
    assert m[("sluice_parity_requests_total", "outcome=mismatched", "route=slow")] == 3
    key = ("sluice_parity_field_differences_total", "kind=mismatch", "path=:unanswered")
    assert m[(*key, "route=slow")] == 3
    # The baseline timed out: nothing to compare with, an error.
    base = comparator.tally("slow-base")
    assert base is not None
    assert (base.counts().errors, base.counts().compared) == (3, 0)
    assert base.samples() == ()


async def test_a_reply_over_the_body_limit_is_no_reply(
    upstreams: dict[str, Upstream], client: aiohttp.ClientSession
) -> None:
    comp = Comparator(gateway_for(upstreams), max_body_bytes=4096)
    comp.configure(
        [
            RouteParity("big-candidate", parity(), "base", "big"),
            RouteParity("big-baseline", parity(), "big", "base"),
            RouteParity("big-secondary", parity(secondary={"cluster": "big"}), "base", "base"),
        ]
    )
    await comp.start()
    try:
        for route in ("big-candidate", "big-baseline", "big-secondary"):
            for item in (1, 2):
                await mirror(client, comp, route, f"/items/{item}")
        await until(
            lambda: all(recorded(comp, r) == 2 for r in comp.routes()), "all routes recorded"
        )
        candidate, baseline, secondary = (
            comp.tally(r) for r in ("big-candidate", "big-baseline", "big-secondary")
        )
        assert candidate is not None
        assert baseline is not None
        assert secondary is not None
        assert (candidate.counts().mismatched, candidate.counts().errors) == (2, 0)
        assert set(candidate.paths()) == {":unanswered"}
        reason = candidate.samples()[-1].candidate.body.decode()
        assert reason.startswith("ProtocolError: body over 4096 bytes (content-length 8"), reason
        assert (baseline.counts().errors, baseline.counts().compared) == (2, 0)
        # A secondary over the limit: compared without it.
        assert (secondary.counts().matched, secondary.counts().errors) == (2, 0)
    finally:
        await comp.stop()


async def test_metrics_export_the_top_paths_with_bounded_labels_the_api_all(
    upstreams: dict[str, Upstream], client: aiohttp.ClientSession
) -> None:
    comp = Comparator(gateway_for(upstreams))
    comp.configure([RouteParity("keys", parity(), "base", "keys")])
    await comp.start()
    await comp.start_admin()
    try:
        for item in range(1, 31):
            await mirror(client, comp, "keys", f"/items/{item}")
        await until(lambda: recorded(comp, "keys") == 30, "30 recorded")
        # Request n has keys k00..k(n-1): k(j) differs in 30 - j requests; the long key in 30.
        long_path = "/" + "x" * 300
        _, data = await admin_json(client, comp, "/v1/parity/routes/keys")
        assert len(data["paths"]) == 31  # the whole table
        assert data["paths"][long_path] == {"mismatched": 30, "noisy": 0}
        m = await metrics(client, comp)
        exported = {
            k[2].removeprefix("path="): v
            for k, v in m.items()
            if k[0] == "sluice_parity_field_differences_total" and k[1] == "kind=mismatch"
        }
        digest = hashlib.sha256(long_path.encode()).hexdigest()[:8]
        label = long_path[:100] + "…" + digest
        assert len(label) <= 120
        expected = {label: 30.0} | {f"/k{j:02d}": 30.0 - j for j in range(19)}
        expected["(other)"] = float(sum(30 - j for j in range(19, 30)))
        assert exported == expected
    finally:
        await comp.stop()


async def test_writes_go_to_the_sister_only_or_nowhere(
    comparator: Comparator, client: aiohttp.ClientSession, upstreams: dict[str, Upstream]
) -> None:
    # No sister on route items: a POST is skipped, never forwarded.
    assert await mirror(client, comparator, "items", "/items/1", "POST", body=b'{"a": 1}') == 202
    assert await mirror(client, comparator, "items", "/items/1", "DELETE") == 202
    # A sister for the candidate only: exercised there, compared with nothing.
    assert await mirror(client, comparator, "writes", "/items/2", "POST", body=b'{"b": 2}') == 202
    assert await mirror(client, comparator, "writes", "/items/3") == 202  # GET: compared
    await until(
        lambda: (
            recorded(comparator, "items") == 2
            and comparator.route_json("writes")["counts"]["exercised"] == 1  # type: ignore[index]
            and recorded(comparator, "writes") == 1
        ),
        "writes recorded",
    )
    items = comparator.tally("items")
    assert items is not None
    assert items.counts().skipped == 2
    writes = comparator.tally("writes")
    assert writes is not None
    assert writes.counts().compared == 1
    assert [s.method for s in upstreams["sister"].seen] == ["POST"]
    assert upstreams["sister"].seen[0].body == b'{"b": 2}'
    for name in ("base", "nested"):
        assert [s.method for s in upstreams[name].seen] == ["GET"]
    m = await metrics(client, comparator)
    assert m[("sluice_parity_requests_total", "outcome=skipped", "route=items")] == 2
    assert m[("sluice_parity_requests_total", "outcome=exercised", "route=writes")] == 1


async def test_unrouted_requests_are_refused_and_counted_apart(
    comparator: Comparator, client: aiohttp.ClientSession, upstreams: dict[str, Upstream]
) -> None:
    assert await mirror(client, comparator, None, "/items/1") == 404
    assert await mirror(client, comparator, "nope", "/items/1") == 404
    m = await metrics(client, comparator)
    assert m[("sluice_parity_unrouted_total",)] == 2
    assert all(not u.seen for u in upstreams.values())
    status, data = await admin_json(client, comparator, "/v1/parity/routes/nope")
    assert status == 404
    assert "items" in data["error"]
    status, data = await admin_json(client, comparator, "/v1/parity/routes")
    assert [r["route"] for r in data["routes"]] == [
        "ignored", "items", "noise", "replica", "slow", "slow-base", "writes",
    ]  # fmt: skip


async def test_saturation_drops_beyond_max_in_flight(
    upstreams: dict[str, Upstream], client: aiohttp.ClientSession
) -> None:
    comp = Comparator(gateway_for(upstreams), max_in_flight=1)
    comp.configure([RouteParity("gated", parity(), "base", "gated")])
    await comp.start()
    try:
        gate = upstreams["gated"].gate
        assert gate is not None
        await mirror(client, comp, "gated", "/items/1")
        await until(lambda: len(upstreams["gated"].seen) == 1, "the first request held")
        for item in range(2, 6):
            await mirror(client, comp, "gated", f"/items/{item}")
        gate.set()
        await until(lambda: recorded(comp, "gated") == 5, "all recorded")
        tally = comp.tally("gated")
        assert tally is not None
        assert (tally.counts().dropped, tally.counts().compared) == (4, 1)
        assert len(upstreams["gated"].seen) == 1
    finally:
        await comp.stop()


async def test_configure_keeps_tallies_of_routes_that_stay(
    comparator: Comparator, client: aiohttp.ClientSession
) -> None:
    await mirror(client, comparator, "items", "/items/4")
    await mirror(client, comparator, "slow", "/items/5")
    await until(lambda: recorded(comparator, "items") == 1, "recorded")
    await until(lambda: recorded(comparator, "slow") == 1, "recorded")
    before, slow = comparator.tally("items"), comparator.tally("slow")
    comparator.configure([RouteParity("items", parity(timeout="1s"), "base", "nested")])
    assert comparator.tally("items") is before
    assert comparator.routes() == ["items"]
    # A route that left is compared no more, but what it saw stays readable (parity diff
    # after a rollback) and exported, until a new rollout of it starts a new tally.
    assert comparator.tally("slow") is slow
    assert comparator.route_json("slow") is not None
    status = await mirror(client, comparator, "slow", "/items/6")
    assert status == 404
    with pytest.raises(UnknownCluster):
        comparator.configure([RouteParity("x", parity(), "base", "no-such-cluster")])
    assert comparator.routes() == ["items"]  # a refused configuration changes nothing
    m = await metrics(client, comparator)
    assert ("sluice_parity_requests_total", "outcome=matched", "route=slow") in m
    comparator.configure([*ROUTES])
    fresh = comparator.tally("slow")
    assert fresh is not None
    assert fresh is not slow
    assert fresh.counts().compared == 0


async def test_a_reloaded_gateway_moves_the_targets(
    comparator: Comparator, upstreams: dict[str, Upstream], client: aiohttp.ClientSession
) -> None:
    # The candidate redeployed at a new address (the gateway file edited, then reloaded): the
    # comparator must compare what Envoy now reaches, not the old endpoint.
    moved = dict(upstreams)
    moved["nested"] = dataclasses.replace(upstreams["sister"], name="nested")
    before = len(upstreams["sister"].seen)
    comparator.set_gateway(gateway_for(moved))
    await mirror(client, comparator, "items", "/items/8")
    await until(lambda: len(upstreams["sister"].seen) == before + 1, "the new endpoint reached")
    # A gateway without a cluster under comparison is refused whole.
    gone = {name: u for name, u in upstreams.items() if name != "nested"}
    with pytest.raises(UnknownCluster):
        comparator.set_gateway(gateway_for(gone))
    nested_before = len(upstreams["nested"].seen)
    await mirror(client, comparator, "items", "/items/9")
    await until(lambda: len(upstreams["sister"].seen) == before + 2, "still the moved endpoint")
    assert len(upstreams["nested"].seen) == nested_before
