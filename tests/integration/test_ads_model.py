"""A randomized model of Envoys speaking ADS to the controller (no gRPC).

Simulated Envoys (SotW or Delta, some sharing a node id) drive ``SotwStream`` / ``DeltaStream``
objects directly: requests go in with ``handle(bytes)``, responses come out of
``pending_responses()`` and are decoded with envoy-data-plane. A real ``SnapshotCache`` and
``WeightController`` serve them; hypothesis draws the operations (weight changes, resets,
late answers, disconnects and reconnects).

Each simulated Envoy keeps what it APPLIED: a response it ACKs is applied, one it NACKs is
ignored. NACKs are content based and deterministic: every Envoy rejects a route table whose
``comments`` route gives ``comments-go`` the weight 37; "picky" Envoys also reject a ``health``
route giving ``static`` the weight 3.

Invariants:

1. ``acked``: every connected target Envoy (of the targeted node ids, subscribed to RDS) has
   applied the change (its route table shows the asked weights) and did not NACK it last.
2. A NACKed route table is not sent again, unchanged, as the next one to the same stream.
3. ``nacked`` with ``reverted``: the route serves the weights of its last ``acked`` change (or
   the gateway's own).
4. Once everything settles, every connected Envoy has applied ``weights.current()`` (unless it
   rejects that very content) and the node status shows the served RDS version as ACKed.
"""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass, field
from typing import Any

from envoy_data_plane.envoy.config.core.v3 import Node
from envoy_data_plane.envoy.config.route.v3 import RouteConfiguration
from envoy_data_plane.envoy.service.discovery.v3 import (
    DeltaDiscoveryRequest,
    DeltaDiscoveryResponse,
    DiscoveryRequest,
    DiscoveryResponse,
)
from envoy_data_plane.google.rpc import Status
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controller.policy.gateway import Gateway
from controller.xds import typeurls
from controller.xds.cache import SnapshotCache
from controller.xds.delta import DeltaStream
from controller.xds.resources import build_snapshot
from controller.xds.sotw import SotwStream
from controller.xds.weights import WeightChange, WeightController

CDS, EDS, LDS, RDS = typeurls.CLUSTER, typeurls.ENDPOINT, typeurls.LISTENER, typeurls.ROUTE
CLUSTERS = ("comments-go", "comments-python", "static")
TABLE_OF = {"comments": "public", "health": "admin"}  # route → the route table holding it
DEFAULTS = {
    "comments": {"comments-python": 100, "comments-go": 0},
    "health": {"static": 1},  # a single-cluster route, as decoded
}
TIMEOUT_S = 0.1
"""set_weights timeout (real seconds): operations between start and end are much quicker."""
MAX_IN_FLIGHT = 2

COMMENTS = [
    None,
    {"comments-python": 50, "comments-go": 50},
    {"comments-python": 63, "comments-go": 37},  # rejected by every Envoy
    {"comments-python": 90, "comments-go": 10},
    {"comments-python": 0, "comments-go": 100},
]
HEALTH = [
    None,
    {"static": 2},
    {"static": 3},  # rejected by picky Envoys
    {"static": 1, "comments-python": 1},
]


def expected(route: str, asked: dict[str, int] | None) -> dict[str, int]:
    """The route's weights as decoded from a route table serving ``asked``."""
    return dict(DEFAULTS[route] if asked is None else asked)


def expected_current(route: str, asked: dict[str, int] | None) -> dict[str, int] | None:
    """What ``weights.current()[route]`` shows when ``asked`` is served."""
    if asked is None:
        return dict(DEFAULTS["comments"]) if route == "comments" else None
    return dict(asked)


def table_weights(config: RouteConfiguration) -> dict[str, dict[str, int]]:
    """route name → cluster → weight in a decoded route table ({cluster: 1} if single)."""
    out: dict[str, dict[str, int]] = {}
    for vh in config.virtual_hosts:
        for r in vh.routes:
            assert r.route is not None
            if r.route.weighted_clusters is not None:
                out[r.name] = {c.name: c.weight for c in r.route.weighted_clusters.clusters}
            else:
                out[r.name] = {r.route.cluster: 1}
    return out


def freeze(routes: dict[str, dict[str, int]]) -> str:
    """A hashable form of a decoded route table."""
    return repr(sorted((r, sorted(w.items())) for r, w in routes.items()))


KNOWN_DELTA_BUG = False
"""Fixed (kept as a switch for diagnosis): Delta used to remember every route table of a NACKed
response as rejected, so a table only beside the rejected one was never sent again; now each
is sent again alone. ``test_delta_nack_loses_the_other_route_table`` guards it."""

KNOWN_SOTW_BUG = False
"""Fixed (kept as a switch for diagnosis): SotW used to resend a NACKed RDS response unchanged
but for ``version_info`` when a table the stream does not subscribe to changed.
``test_sotw_resends_the_rejected_table`` guards it."""


_seq = itertools.count(1)  # orders answers and outcomes across the whole example


@dataclass
class Envoy:
    """One simulated Envoy: its stream, unanswered responses, and what it applied."""

    node_id: str
    delta: bool
    rds_names: tuple[str, ...]
    picky: bool
    eds: bool
    cache: SnapshotCache
    tolerate: bool = True  # tolerate the known bugs (KNOWN_*_BUG)
    stream: SotwStream | DeltaStream | None = None
    node_sent: bool = False
    inbox: list[tuple[str, Any]] = field(default_factory=list)  # (nonce, response), in order
    versions: dict[str, str] = field(default_factory=dict)  # SotW: type → applied version_info
    held: dict[str, dict[str, str]] = field(default_factory=dict)  # Delta: type → name → version
    routes: dict[str, dict[str, dict[str, int]]] = field(default_factory=dict)  # applied tables
    # invariant 2, per stream: SotW the last RDS response (nonce, content, nacked); Delta per
    # route table name the last version sent (nonce, version, nacked)
    last_rds: list[Any] | None = None
    last_sent: dict[str, list[Any]] = field(default_factory=dict)
    # answers on the current stream: (seq, acked, {table: route weights}) for RDS responses
    answers: list[tuple[int, bool, dict[str, dict[str, dict[str, int]]]]] = field(
        default_factory=list
    )
    log: list[str] = field(default_factory=list)
    # Delta, current stream: route tables (name, weights) that were only in a NACKed response
    # beside a rejected one (the known bug, see KNOWN_BUG)
    innocent: set[tuple[str, str]] = field(default_factory=set)

    @property
    def connected(self) -> bool:
        return self.stream is not None

    def rejects(self, tables: dict[str, dict[str, dict[str, int]]]) -> bool:
        for routes in tables.values():
            if routes.get("comments", {}).get("comments-go") == 37:
                return True
            if self.picky and routes.get("health", {}).get("static") == 3:
                return True
        return False

    # --- requests ----------------------------------------------------------------------------

    def _node(self) -> Node | None:
        if self.node_sent:
            return None
        self.node_sent = True
        return Node(id=self.node_id, cluster="gateways", user_agent_name="envoy")

    def send_sotw(
        self, type_url: str, version: str = "", nonce: str = "", error: Status | None = None
    ) -> None:
        assert isinstance(self.stream, SotwStream)
        names = {CDS: [], EDS: list(CLUSTERS), LDS: [], RDS: list(self.rds_names)}[type_url]
        request = DiscoveryRequest(
            version_info=version,
            resource_names=names,
            type_url=type_url,
            response_nonce=nonce,
            error_detail=error,
        )
        node = self._node()
        if node is not None:
            request.node = node
        self.stream.handle(bytes(request))

    def send_delta(
        self,
        type_url: str,
        subscribe: list[str] | None = None,
        initial: dict[str, str] | None = None,
        nonce: str = "",
        error: Status | None = None,
    ) -> None:
        assert isinstance(self.stream, DeltaStream)
        request = DeltaDiscoveryRequest(
            type_url=type_url,
            resource_names_subscribe=list(subscribe or []),
            initial_resource_versions=dict(initial or {}),
            response_nonce=nonce,
            error_detail=error,
        )
        node = self._node()
        if node is not None:
            request.node = node
        self.stream.handle(bytes(request))

    def connect(self) -> None:
        """A new stream; a reconnecting Envoy says what it holds."""
        self.close()
        self.stream = DeltaStream(self.cache) if self.delta else SotwStream(self.cache)
        self.node_sent = False
        self.last_rds = None
        self.last_sent = {}
        self.answers = []
        self.innocent = set()
        self.log.append(f"connect stream {self.stream.stream_id}")
        for type_url in typeurls.PUSH_ORDER:
            if type_url == EDS and not self.eds:
                continue
            if self.delta:
                names = {CDS: [], EDS: list(CLUSTERS), LDS: [], RDS: list(self.rds_names)}
                self.send_delta(type_url, names[type_url], self.held.get(type_url, {}))
            else:
                self.send_sotw(type_url, version=self.versions.get(type_url, ""))

    def close(self) -> None:
        if self.stream is not None:
            self.log.append(f"close stream {self.stream.stream_id}")
            self.stream.close()
        self.stream = None
        self.inbox = []

    # --- responses ---------------------------------------------------------------------------

    def pump(self) -> int:
        """Take what the server writes now (checks invariant 2 on route tables)."""
        if self.stream is None:
            return 0
        raws = self.stream.pending_responses()
        for raw in raws:
            if self.delta:
                resp: Any = DeltaDiscoveryResponse.parse(raw)
                if resp.type_url == RDS:
                    for item in resp.resources:
                        prev = self.last_sent.get(item.name)
                        # After a NACK of a response with several tables, each comes again
                        # once, alone (the NACK does not say which one Envoy refused); a table
                        # this Envoy refuses must not come again after that.
                        assert item.resource is not None
                        table = table_weights(RouteConfiguration.parse(item.resource.value))
                        refused = self.rejects({item.name: table})
                        bisecting = prev is not None and prev[3] > 1 and len(resp.resources) == 1
                        assert (
                            prev is None
                            or bisecting
                            or not (refused and prev[2] and prev[1] == item.version)
                        ), (
                            f"invariant 2: stream {self.stream.stream_id} was sent route table "
                            f"{item.name} v{item.version} again right after NACKing it"
                        )
                        self.last_sent[item.name] = [
                            resp.nonce,
                            item.version,
                            False,
                            len(resp.resources),
                        ]
            else:
                resp = DiscoveryResponse.parse(raw)
                if resp.type_url == RDS:
                    content = tuple(sorted(bytes(r.value) for r in resp.resources))
                    prev = self.last_rds
                    if KNOWN_SOTW_BUG and self.tolerate and prev and prev[3] != resp.version_info:
                        prev = None
                    assert prev is None or not (prev[2] and prev[1] == content), (
                        f"invariant 2: stream {self.stream.stream_id} was sent the RDS response "
                        f"it NACKed again (v{resp.version_info})"
                    )
                    self.last_rds = [resp.nonce, content, False, resp.version_info]
            self.inbox.append((resp.nonce, resp))
        return len(raws)

    def _tables(self, resp: Any) -> dict[str, dict[str, dict[str, int]]]:
        if resp.type_url != RDS:
            return {}
        out = {}
        for item in resp.resources:
            value = item.resource.value if self.delta else item.value
            config = RouteConfiguration.parse(value)
            out[config.name] = table_weights(config)
        return out

    def answer(self) -> None:
        """Answer the oldest unanswered response: apply and ACK it, or NACK it."""
        assert self.stream is not None
        nonce, resp = self.inbox.pop(0)
        tables = self._tables(resp)
        ok = not self.rejects(tables)
        if resp.type_url == RDS:
            self.answers.append((next(_seq), ok, tables))
        version = resp.system_version_info if self.delta else resp.version_info
        self.log.append(
            f"{'ACK' if ok else 'NACK'} {typeurls.short_name(resp.type_url)} v{version} {tables}"
        )
        error = None if ok else Status(code=3, message="rejected by the model")
        if ok:
            self.routes.update(tables)
            if self.delta:
                held = self.held.setdefault(resp.type_url, {})
                for item in resp.resources:
                    held[item.name] = item.version
                for name in resp.removed_resources:
                    held.pop(name, None)
                    if resp.type_url == RDS:
                        self.routes.pop(name, None)
            else:
                self.versions[resp.type_url] = resp.version_info
        elif resp.type_url == RDS:
            if self.delta:
                for name, routes in tables.items():
                    if not self.rejects({name: routes}):
                        self.innocent.add((name, freeze(routes)))
                for entry in self.last_sent.values():
                    if entry[0] == nonce:
                        entry[2] = True
            elif self.last_rds is not None and self.last_rds[0] == nonce:
                self.last_rds[2] = True
        if self.delta:
            self.send_delta(resp.type_url, nonce=nonce, error=error)
        else:
            last_good = version if ok else self.versions.get(resp.type_url, "")
            self.send_sotw(resp.type_url, version=last_good, nonce=nonce, error=error)

    def view(self) -> dict[str, Any]:
        """What invariant 1 looks at, copied when an outcome is known."""
        return {
            "node_id": self.node_id,
            "connected": self.connected,
            "rds_names": self.rds_names,
            "routes": {k: dict(v) for k, v in self.routes.items()},
            "answers": list(self.answers),
        }


@dataclass
class Model:
    cache: SnapshotCache
    weights: WeightController
    envoys: list[Envoy]
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)
    last_acked: dict[str, dict[str, int] | None] = field(
        default_factory=lambda: {"comments": None, "health": None}
    )
    trace: list[str] = field(default_factory=list)

    async def run_set(
        self, route: str, asked: dict[str, int] | None, nodes: list[str] | None
    ) -> tuple[Any, ...]:
        targets = self.cache.connected_nodes(RDS) if nodes is None else set(nodes)
        start = next(_seq)
        change = await self.weights.set_weights(route, asked, nodes=nodes, timeout_s=TIMEOUT_S)
        # Right when the outcome is known (no Envoy moved since): what each one applied.
        return (
            next(_seq),
            route,
            asked,
            change,
            targets,
            start,
            [e.view() for e in self.envoys],
            self.weights.current(),
        )

    async def tick(self) -> None:
        """Let finished set_weights calls return, then check their outcomes."""
        for _ in range(6):
            await asyncio.sleep(0)
        done = [t for t in self.tasks if t.done()]
        self.tasks = [t for t in self.tasks if not t.done()]
        for result in sorted((t.result() for t in done), key=lambda r: r[0]):
            self.check_outcome(*result[1:])

    def check_outcome(
        self,
        route: str,
        asked: dict[str, int] | None,
        change: WeightChange,
        targets: set[str],
        start: int,
        views: list[dict[str, Any]],
        current: dict[str, dict[str, int]],
    ) -> None:
        ack = change.ack
        self.trace.append(
            f"-> {route}={asked}: {ack.outcome} reverted={change.reverted} "
            f"acked={ack.acked} nacked={sorted(ack.nacked)} pending={ack.pending}"
        )
        want = expected(route, asked)
        table = TABLE_OF[route]
        if ack.outcome == "acked":
            for view in views:
                if not (view["connected"] and view["node_id"] in targets):
                    continue
                if table not in view["rds_names"]:
                    continue
                got = view["routes"].get(table, {}).get(route)
                assert got == want, (
                    f"invariant 1: {route}={asked} reported acked, but an Envoy of node "
                    f"{view['node_id']} applied {route}={got}"
                )
                verdicts = [
                    ok
                    for seq, ok, tables in view["answers"]
                    if seq > start and tables.get(table, {}).get(route) == want
                ]
                assert not verdicts or verdicts[-1], (
                    f"invariant 1: node {view['node_id']} counted as acked but NACKed {route}"
                )
            self.last_acked[route] = asked
        if ack.outcome == "nacked" and change.reverted:
            good = expected_current(route, self.last_acked[route])
            assert current.get(route) == good, (
                f"invariant 3: after the NACK of {route}={asked} the controller serves "
                f"{current.get(route)}, not the last ACKed {good}"
            )

    async def step(self, op: tuple[Any, ...]) -> None:
        kind = op[0]
        self.trace.append(repr(op))
        if kind == "set":
            _, route, asked, one_node = op
            if len(self.tasks) >= MAX_IN_FLIGHT:
                return
            nodes = [self.envoys[0].node_id] if one_node else None
            self.tasks.append(asyncio.ensure_future(self.run_set(route, asked, nodes)))
        elif kind == "wait":
            if self.tasks:
                await asyncio.wait(self.tasks)
        else:
            envoy = self.envoys[op[1] % len(self.envoys)]
            if kind == "pump":
                envoy.pump()
            elif kind == "answer":
                for _ in range(op[2]):
                    if not envoy.inbox:
                        break
                    envoy.answer()
                    await self.tick()
            elif kind == "disconnect":
                envoy.close()
            elif kind == "reconnect":
                envoy.connect()
        await self.tick()

    async def settle(self) -> None:
        """Every Envoy answers everything until nothing moves; then the outcomes come in."""
        for _ in range(3):
            for _ in range(100):
                moved = 0
                for envoy in self.envoys:
                    moved += envoy.pump()
                    while envoy.inbox:
                        envoy.answer()
                        moved += 1
                        await self.tick()
                await self.tick()
                if not moved:
                    break
            else:
                raise AssertionError("the streams never settled (a resend loop?)")
            if self.tasks:
                await asyncio.wait(self.tasks)
                await self.tick()

    def check_settled(self) -> None:
        current = self.weights.current()
        served = {r: current.get(r) or DEFAULTS[r] for r in TABLE_OF}
        all_accept = True
        for envoy in self.envoys:
            if not envoy.connected:
                continue
            held = {t: {r: served[r]} for r, t in TABLE_OF.items() if t in envoy.rds_names}
            if not envoy.delta and envoy.rejects(held):
                # SotW: the response holding every table is rejected as a whole
                all_accept = False
                continue
            for route, table in TABLE_OF.items():
                if table not in envoy.rds_names:
                    continue
                want_table = {route: served[route]}
                if envoy.rejects({table: want_table}):
                    all_accept = False
                    continue
                got = envoy.routes.get(table, {}).get(route)
                if (
                    KNOWN_DELTA_BUG
                    and envoy.tolerate
                    and got != served[route]
                    and (table, freeze(want_table)) in envoy.innocent
                ):
                    all_accept = False
                    continue
                assert got == served[route], (
                    f"invariant 4: settled Envoy {envoy.node_id} (stream "
                    f"{envoy.stream.stream_id if envoy.stream else None}) applied "
                    f"{route}={got}, the controller serves {served[route]}"
                )
        if not all_accept:
            return
        version = self.cache.snapshot.version(RDS)
        connected = {e.node_id for e in self.envoys if e.connected}
        for status in self.cache.nodes():
            if status.node_id not in connected:
                continue
            rds = status.types.get(RDS)
            assert rds is not None, f"node {status.node_id} has no RDS status"
            assert rds.acked_version == version, (
                f"invariant 4: node {status.node_id} status shows RDS acked "
                f"{rds.acked_version}, served {version}"
            )


envoy_specs = st.lists(
    st.tuples(
        st.sampled_from(["n1", "n2"]),  # node id (shared sometimes)
        st.booleans(),  # Delta
        st.sampled_from([("public", "admin"), ("public",), ("admin",)]),
        st.booleans(),  # picky
        st.booleans(),  # subscribes to EDS
    ),
    min_size=1,
    max_size=3,
)
envoy_index = st.integers(0, 2)
operations = st.lists(
    st.one_of(
        st.tuples(st.just("set"), st.just("comments"), st.sampled_from(COMMENTS), st.booleans()),
        st.tuples(st.just("set"), st.just("health"), st.sampled_from(HEALTH), st.booleans()),
        st.tuples(st.just("pump"), envoy_index),
        st.tuples(st.just("pump"), envoy_index),
        st.tuples(st.just("answer"), envoy_index, st.integers(1, 4)),
        st.tuples(st.just("answer"), envoy_index, st.integers(1, 4)),
        st.tuples(st.just("disconnect"), envoy_index),
        st.tuples(st.just("reconnect"), envoy_index),
        st.tuples(st.just("wait")),
    ),
    max_size=30,
)


async def run_model(
    gateway: Gateway,
    specs: list[tuple[Any, ...]],
    ops: list[tuple[Any, ...]],
    tolerate: bool = True,
) -> None:
    cache = SnapshotCache(build_snapshot(gateway, {}, label="model"))
    weights = WeightController(gateway, cache)
    envoys = [
        Envoy(node_id=n, delta=d, rds_names=r, picky=p, eds=e, cache=cache, tolerate=tolerate)
        for n, d, r, p, e in specs
    ]
    model = Model(cache, weights, envoys)
    try:
        for envoy in envoys:
            envoy.connect()
        for op in ops:
            await model.step(op)
        await model.settle()
        model.check_settled()
    except AssertionError as exc:
        lines = "\n".join(model.trace)
        logs = "\n".join(
            f"  #{i} {e.node_id}: {entry}" for i, e in enumerate(envoys) for entry in e.log[-12:]
        )
        raise AssertionError(f"{exc}\nops and outcomes:\n{lines}\nenvoy logs:\n{logs}") from exc
    finally:
        for task in model.tasks:
            task.cancel()
        for envoy in envoys:
            envoy.close()


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(specs=envoy_specs, ops=operations)
def test_ads_model(gateway: Gateway, specs: list[tuple[Any, ...]], ops: list[Any]) -> None:
    asyncio.run(run_model(gateway, specs, ops))


THIRTY_SEVEN = {"comments-python": 63, "comments-go": 37}


def test_delta_nack_loses_the_other_route_table(gateway: Gateway) -> None:
    # A Delta Envoy subscribed to both tables gets its first RDS response with admin (fine)
    # and public (comments-go 37, rejected); it NACKs; comments is reverted; admin never comes.
    specs = [("n1", True, ("public", "admin"), False, False)]
    ops = [("set", "comments", THIRTY_SEVEN, False)]
    asyncio.run(run_model(gateway, specs, ops, tolerate=False))


def test_sotw_resends_the_rejected_table(gateway: Gateway) -> None:
    # A SotW Envoy subscribed to public only: comments-go 37 then health 2 are served before
    # it reads; it NACKs (public 37, health 2); health is reverted; public 37 comes again.
    specs = [("n1", False, ("public",), False, False)]
    ops = [("set", "comments", THIRTY_SEVEN, False), ("set", "health", {"static": 2}, False)]
    asyncio.run(run_model(gateway, specs, ops, tolerate=False))
