"""Webhook notifications: real receivers (aiohttp on 127.0.0.1:0), real rollouts.

Rollouts are driven by the reconciler over real gRPC client streams (standing in for Envoys)
with a real SQLite store, as in test_reconciler.py; the receivers record what reached them.
The last test runs ``sluice serve --notify`` as a process.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from aiohttp import web
from envoy_data_plane.envoy.config.core.v3 import Node
from envoy_data_plane.envoy.service.discovery.v3 import DiscoveryRequest, DiscoveryResponse
from typer.testing import CliRunner

from controller.cli import exitcodes
from controller.cli.app import app
from controller.policy.loading import load_policy
from controller.policy.rollout_policy import RolloutPolicy
from controller.rollout.inputs import Verdict
from controller.rollout.machine import start
from controller.rollout.notifications import Notification, NotifyFormat
from controller.rollout.state import Phase
from controller.runtime.analyzer import StageAnalyzer
from controller.runtime.notify import Notifier
from controller.runtime.reconciler import Reconciler
from controller.store.rollouts import PolicySource, StoredRollout
from controller.store.sqlite_rollouts import SqliteRolloutStore
from controller.xds import typeurls
from controller.xds.server import SOTW_METHOD
from controller.xds.weights import WeightController

PY, GO = "comments-python", "comments-go"
THREE_STAGES = (
    "[{weight: 10%, bake: 100ms}, {weight: 50%, bake: 100ms}, {weight: 100%, bake: 100ms}]"
)


def policy(stages: str = THREE_STAGES, route: str = "comments") -> RolloutPolicy:
    return load_policy(
        f"""apiVersion: sluice.dev/v1alpha1
kind: RolloutPolicy
metadata: {{name: {route}}}
spec:
  route: {route}
  baseline: {{cluster: {PY}}}
  candidate: {{cluster: {GO}}}
  stages: {stages}
  analysis: {{interval: 100ms, slos: []}}
  ackTimeout: 2s
""",
        "policy.yaml",
    )


def create(store: SqliteRolloutStore, pol: RolloutPolicy) -> None:
    state, event = start(pol, time.time(), "test")
    source = PolicySource(path=None, git_commit=None, git_dirty=False, text="")
    store.create("comments", pol, source, state, event)


async def until(check: Callable[[], bool], what: str, timeout_s: float = 10.0) -> None:
    """Wait for ``check()``; fail naming ``what`` when it does not come (a bound against a hung
    test, not a timing assertion)."""
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout_s}s: {what}")
        await asyncio.sleep(0.02)


class Receiver:
    """A webhook receiver: answers ``statuses`` in turn, then 200; with ``hang``, it reads each
    request and answers only once ``release`` is set."""

    def __init__(self, statuses: tuple[int, ...] = (), hang: bool = False) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.answers: list[int] = []
        self.paths: list[str] = []
        self.release = asyncio.Event()
        self._statuses = list(statuses)
        self._hang = hang
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        self.bodies.append(await request.json())
        self.paths.append(request.path)
        if self._hang:
            await self.release.wait()
        status = self._statuses.pop(0) if self._statuses else 200
        self.answers.append(status)
        return web.Response(status=status)

    def events(self) -> list[tuple[str, int]]:
        return [(b["event"], b["stage"]) for b in self.bodies]


@pytest.fixture
async def receivers() -> AsyncIterator[Callable[..., Awaitable[Receiver]]]:
    """Starts receivers on 127.0.0.1:0 (``POST /hook/...``); all stopped at teardown."""
    runners: list[tuple[web.AppRunner, Receiver]] = []

    async def make(statuses: tuple[int, ...] = (), hang: bool = False) -> Receiver:
        receiver = Receiver(statuses, hang)
        application = web.Application()
        application.router.add_post("/hook/{tail:.*}", receiver.handle)
        runner = web.AppRunner(application, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        receiver.url = f"http://127.0.0.1:{port}/hook/T0KEN/secret"
        runners.append((runner, receiver))
        return receiver

    yield make
    for runner, receiver in runners:
        receiver.release.set()
        await runner.cleanup()


@contextlib.asynccontextmanager
async def notifying(
    urls: list[str], fmt: NotifyFormat = "json", **options: Any
) -> AsyncIterator[Notifier]:
    notifier = Notifier(urls, fmt, backoff_s=0.01, backoff_max_s=0.05, **options)
    await notifier.start()
    try:
        yield notifier
    finally:
        await notifier.stop(grace_s=0.5)


@contextlib.asynccontextmanager
async def reconciling(
    store: SqliteRolloutStore,
    weights: WeightController,
    notifier: Notifier,
    analyzer: StageAnalyzer | None = None,
) -> AsyncIterator[None]:
    stop = asyncio.Event()
    reconciler = Reconciler(
        store, weights, analyzer=analyzer, poll_s=0.05, on_events=notifier.on_events
    )
    task = asyncio.create_task(reconciler.run(stop))
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)


async def wait_phase(store: SqliteRolloutStore, phase: Phase) -> StoredRollout:
    rollout = await asyncio.to_thread(store.get, "comments")
    deadline = time.monotonic() + 10
    while rollout.state.phase != phase:
        assert time.monotonic() < deadline, f"not {phase}: {rollout.state}"
        await asyncio.sleep(0.02)
        rollout = await asyncio.to_thread(store.get, "comments")
    return rollout


async def ack_all(client: Any, ads: Any, until_weight: int) -> None:
    """ACK every push until the candidate's weight ``until_weight`` (of 10,000) was ACKed."""
    while True:
        resp = await client.recv(3)
        await client.ack(resp)
        if ads.route_weights(ads.decode(resp)["public"], "comments")[GO] == until_weight:
            return


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteRolloutStore]:
    rollouts = SqliteRolloutStore(tmp_path / "state.db")
    yield rollouts
    rollouts.close()


WALK = [
    ("stage_started", 1),
    ("stage_passed", 1),
    ("stage_started", 2),
    ("stage_passed", 2),
    ("stage_started", 3),
    ("stage_passed", 3),
    ("promotion", 3),
]


async def test_a_promotion_delivers_each_stage_then_the_promotion_in_order(
    ads: Any, store: SqliteRolloutStore, weights: WeightController, receivers: Any
) -> None:
    receiver = await receivers()
    client = await ads.synced_sotw("edge-1")
    create(store, policy())
    async with notifying([receiver.url]) as notifier, reconciling(store, weights, notifier):
        await ack_all(client, ads, 10_000)
        await wait_phase(store, Phase.SUCCEEDED)
        await until(lambda: len(receiver.bodies) >= len(WALK), "every notification")
    assert receiver.events() == WALK
    assert [b["weight"] for b in receiver.bodies] == [10, 10, 50, 50, 100, 100, 100]
    assert receiver.answers == [200] * len(WALK)
    assert notifier.delivered == len(WALK)
    assert notifier.failed == 0
    first, last = receiver.bodies[0], receiver.bodies[-1]
    assert set(first) == {
        "event",
        "rollout",
        "route",
        "baseline",
        "candidate",
        "stage",
        "stages",
        "weight",
        "phase",
        "reason",
        "at",
        "details",
    }
    assert (first["rollout"], first["route"], first["baseline"], first["candidate"]) == (
        "comments",
        "comments",
        PY,
        GO,
    )
    assert first["stages"] == 3
    assert first["phase"] == "progressing"
    assert "ACKed by every Envoy" in first["reason"]
    assert last["phase"] == "succeeded"
    stamps = [b["at"] for b in receiver.bodies]
    assert all(s.endswith("Z") and "T" in s for s in stamps)
    assert stamps == sorted(stamps)


class Failing:
    """A judge that fails every stage (as MetricsAnalyzer does on a latency regression)."""

    async def judge(self, rollout: StoredRollout, now: float) -> Verdict:
        return Verdict(
            now,
            rollout.state.stage,
            "fail",
            "latency_p99: candidate 412ms is 61% above baseline 256ms (max drift 5%)",
            {"latency_p99": {"candidate_ms": 412, "baseline_ms": 256}},
        )


async def test_a_fail_verdict_delivers_the_rollback_with_its_reason(
    ads: Any, store: SqliteRolloutStore, weights: WeightController, receivers: Any
) -> None:
    receiver = await receivers()
    client = await ads.synced_sotw("edge-1")
    create(store, policy())
    async with (
        notifying([receiver.url]) as notifier,
        reconciling(store, weights, notifier, analyzer=Failing()),
    ):
        await ack_all(client, ads, 1000)  # stage 1
        await ack_all(client, ads, 0)  # the rollback
        await wait_phase(store, Phase.ROLLED_BACK)
        await until(lambda: len(receiver.bodies) >= 3, "the rollback's notifications")
    assert [(b["event"], b["phase"]) for b in receiver.bodies] == [
        ("stage_started", "progressing"),
        ("rollback", "rolling_back"),
        ("rollback", "rolled_back"),
    ]
    rolling, ended = receiver.bodies[1], receiver.bodies[2]
    assert "candidate 412ms is 61% above baseline" in rolling["reason"]
    assert rolling["details"]["cause"] == "verdict"
    assert rolling["details"]["latency_p99"] == {"candidate_ms": 412, "baseline_ms": 256}
    assert rolling["weight"] == 0
    assert rolling["stage"] == 1
    assert "candidate 412ms" in ended["details"]["verdict"]


async def test_a_nack_delivers_the_rollback_naming_it(
    ads: Any, store: SqliteRolloutStore, weights: WeightController, receivers: Any
) -> None:
    receiver = await receivers()
    client = await ads.synced_sotw("edge-1")
    create(store, policy("[{weight: 10%, bake: 1s}, {weight: 100%, bake: 1s}]"))
    async with notifying([receiver.url]) as notifier, reconciling(store, weights, notifier):
        await client.nack(await client.recv(3), "weights rejected for the test")
        await ack_all(client, ads, 0)
        await wait_phase(store, Phase.FAILED)
        await until(lambda: len(receiver.bodies) >= 2, "the rollback's notifications")
    assert [(b["event"], b["phase"]) for b in receiver.bodies] == [
        ("rollback", "rolling_back"),
        ("rollback", "failed"),
    ]
    assert "weights rejected for the test" in receiver.bodies[0]["reason"]
    assert receiver.bodies[0]["details"]["cause"] == "error"


def sample(event: Any = "stage_started", stage: int = 1) -> Notification:
    return Notification(
        event=event,
        rollout="comments",
        route="comments",
        baseline=PY,
        candidate=GO,
        stage=stage,
        stages=3,
        weight=10.0,
        phase="progressing",
        reason="stage 1/3 (10%) ACKed by every Envoy; baking for 100ms",
        at=1_763_771_140.0,
    )


async def test_500_twice_then_200_is_delivered_once_after_retries(receivers: Any) -> None:
    receiver = await receivers(statuses=(500, 503))
    async with notifying([receiver.url]) as notifier:
        notifier.enqueue(sample())
        await until(lambda: notifier.delivered + notifier.failed >= 1, "the delivery")
    assert receiver.answers == [500, 503, 200]
    assert receiver.bodies == [sample().to_json()] * 3
    assert (notifier.delivered, notifier.failed) == (1, 0)


async def test_a_final_answer_is_not_retried_and_attempts_are_bounded(receivers: Any) -> None:
    refusing = await receivers(statuses=(400,))
    failing = await receivers(statuses=(502,) * 10)
    async with notifying([refusing.url, failing.url], attempts=3) as notifier:
        notifier.enqueue(sample())
        await until(lambda: notifier.failed >= 2, "both given up")
    assert refusing.answers == [400]
    assert failing.answers == [502, 502, 502]
    assert notifier.delivered == 0


async def test_a_full_queue_drops_the_oldest(receivers: Any) -> None:
    receiver = await receivers(hang=True)
    async with notifying([receiver.url], queue_size=2) as notifier:
        notifier.enqueue(sample(stage=1))
        await until(lambda: len(receiver.bodies) == 1, "the first POST")  # the worker holds it
        for stage in (2, 3, 4, 5):
            notifier.enqueue(sample(stage=stage))
        assert notifier.dropped == 2
        receiver.release.set()
        await until(lambda: notifier.delivered == 3, "the rest delivered")
    assert [b["stage"] for b in receiver.bodies] == [1, 4, 5]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize("receiver_kind", ["hangs", "down"])
async def test_a_receiver_that_never_answers_does_not_delay_the_rollout(
    ads: Any,
    store: SqliteRolloutStore,
    weights: WeightController,
    receivers: Any,
    receiver_kind: str,
) -> None:
    """The receiver takes the first POST and never answers (or nothing listens): the rollout
    still walks every stage to its end; the notifications wait (or fail) behind it."""
    hanging = await receivers(hang=True)
    url = hanging.url if receiver_kind == "hangs" else f"http://127.0.0.1:{closed_port()}/h"
    client = await ads.synced_sotw("edge-1")
    create(store, policy())
    # Long timeouts: a POST outlives the whole rollout.
    async with (
        notifying([url], timeout_s=60, deadline_s=120, attempts=100) as notifier,
        reconciling(store, weights, notifier),
    ):
        await ack_all(client, ads, 10_000)
        done = await wait_phase(store, Phase.SUCCEEDED)
        assert notifier.delivered == 0
        if receiver_kind == "hangs":
            assert len(hanging.bodies) == 1
            assert hanging.answers == []
    assert done.state.acked_weight == 100
    assert [e.transition for e in store.history("comments")][-1] == "progressing → succeeded"


async def test_slack_payloads_are_a_summary_line_and_the_reason(
    ads: Any, store: SqliteRolloutStore, weights: WeightController, receivers: Any
) -> None:
    receiver = await receivers()
    client = await ads.synced_sotw("edge-1")
    create(store, policy())
    async with (
        notifying([receiver.url], "slack") as notifier,
        reconciling(store, weights, notifier),
    ):
        await ack_all(client, ads, 10_000)
        await wait_phase(store, Phase.SUCCEEDED)
        await until(lambda: len(receiver.bodies) >= len(WALK), "every notification")
    assert all(list(b) == ["text"] for b in receiver.bodies)
    lines = [b["text"].split("\n") for b in receiver.bodies]
    assert all(len(line) == 2 and line[1].startswith(">") for line in lines)
    summaries = [line[0] for line in lines]
    assert summaries[0].startswith(":hourglass_flowing_sand: *comments*: stage 1/3 (10%) started")
    assert summaries[1].startswith(":white_check_mark: *comments*: stage 1/3 (10%) passed")
    assert summaries[-1] == (
        ":tada: *comments*: promoted: `comments-go` serves 100% of route `comments`"
    )


# --- sluice serve --notify -------------------------------------------------------------------


def test_bad_notify_options_are_refused_before_anything_starts(tmp_path: Path) -> None:
    state = tmp_path / "state.db"
    for args, message in (
        (["--notify", "ftp://example.com/hook"], "not an http(s) URL"),
        (["--notify", "http://127.0.0.1:9/h", "--notify-format", "xml"], "json, slack"),
    ):
        result = CliRunner().invoke(app, ["serve", "--state", str(state), *args])
        assert result.exit_code == exitcodes.INVALID_INPUT, result.output
        assert message in result.stderr
    assert not state.exists()


POLICY_FILE = """apiVersion: sluice.dev/v1alpha1
kind: RolloutPolicy
metadata: {name: comments}
spec:
  route: comments
  baseline: {cluster: comments-python}
  candidate: {cluster: comments-go}
  stages: [{weight: 10%, bake: 100ms}, {weight: 100%, bake: 100ms}]
  analysis: {interval: 100ms, slos: []}
"""


def promoted(receiver: Receiver) -> Callable[[], bool]:
    return lambda: any(":tada:" in b["text"] for b in receiver.bodies)


async def test_sluice_serve_notifies_every_url_of_its_environment(
    tmp_path: Path, receivers: Any
) -> None:
    """``SLUICE_NOTIFY`` (two URLs, whitespace separated) and ``--notify-format slack``: a
    rollout started with ``sluice rollout start`` is told to both receivers."""
    one, two = await receivers(), await receivers()
    state = tmp_path / "state.db"
    (tmp_path / "comments.yaml").write_text(POLICY_FILE)
    env = {**os.environ, "SLUICE_NOTIFY": f"{one.url}\n {two.url}"}
    sluice = [sys.executable, "-m", "controller"]
    with (tmp_path / "serve.err").open("w") as err:
        proc = await asyncio.create_subprocess_exec(
            *sluice,
            "serve",
            "--xds-address",
            "127.0.0.1:0",
            "--admin-address",
            "127.0.0.1:0",
            "--state",
            str(state),
            "--notify-format",
            "slack",
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=err,
        )
    channel: grpc.aio.Channel | None = None
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 60)
        assert line, (tmp_path / "serve.err").read_text()
        ready = json.loads(line)
        channel = grpc.aio.insecure_channel(ready["xds"])
        requests: asyncio.Queue[DiscoveryRequest] = asyncio.Queue()
        await requests.put(
            DiscoveryRequest(
                node=Node(id="edge-1"), type_url=typeurls.ROUTE, resource_names=["http"]
            )
        )

        async def feed() -> AsyncIterator[DiscoveryRequest]:
            while True:
                yield await requests.get()

        call = channel.stream_stream(
            SOTW_METHOD, request_serializer=bytes, response_deserializer=DiscoveryResponse.parse
        )(feed())

        async def ack_everything() -> None:
            async for resp in call:
                await requests.put(
                    DiscoveryRequest(
                        version_info=resp.version_info,
                        type_url=resp.type_url,
                        resource_names=["http"],
                        response_nonce=resp.nonce,
                    )
                )

        acking = asyncio.create_task(ack_everything())
        started = await asyncio.create_subprocess_exec(
            *sluice,
            "rollout",
            "start",
            "comments",
            "--policy",
            str(tmp_path / "comments.yaml"),
            "--state",
            str(state),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        assert await asyncio.wait_for(started.wait(), 60) == 0
        for receiver in (one, two):
            await until(promoted(receiver), "the promotion", timeout_s=30)
        acking.cancel()
        with contextlib.suppress(asyncio.CancelledError, grpc.aio.AioRpcError):
            await acking
    finally:
        if channel is not None:
            await channel.close()
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 15)
            except TimeoutError:
                proc.kill()
                await proc.wait()
    for receiver in (one, two):
        summaries = [b["text"].split("\n")[0] for b in receiver.bodies]
        assert [s.split(" ")[0] for s in summaries] == [
            ":hourglass_flowing_sand:",
            ":white_check_mark:",
            ":hourglass_flowing_sand:",
            ":white_check_mark:",
            ":tada:",
        ]
        assert receiver.paths == ["/hook/T0KEN/secret"] * 5
    assert "T0KEN" not in (tmp_path / "serve.err").read_text()  # the secret path is not logged


def test_the_readme_command_table_documents_the_options() -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    row = next(
        line for line in readme.splitlines() if line.startswith("| `sluice serve [--gateway")
    )
    assert "[--notify URL... [--notify-format json\\|slack]]" in row
    assert "SLUICE_NOTIFY" in readme
