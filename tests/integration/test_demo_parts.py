"""The demo's sample service and load generator, over real HTTP on 127.0.0.1.

Two services (as the demo runs them, in-process here) answer the same comment the same way but
for the volatile ``meta``; each behaviour knob changes what a real client receives; the load
generator sends reads and writes at its rate and counts replies per upstream and status.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, NoReturn

import aiohttp
import pytest
from aiohttp import web

from controller.demo.children import Children
from controller.demo.load import WRITE_SHARE, Load
from controller.demo.run import child_env
from controller.demo.service import Service


@asynccontextmanager
async def serving(service: Service) -> AsyncIterator[str]:
    runner = web.AppRunner(service.app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


def service(name: str, **behaviour: float) -> Service:
    knobs: dict[str, float] = {
        "median_ms": 0.0,
        "sigma": 0.5,
        "error_rate": 0.0,
        "write_error_rate": 0.0,
        "mismatch_share": 0.0,
    }
    knobs.update(behaviour)
    return Service(name, **knobs)


async def get(session: aiohttp.ClientSession, url: str) -> tuple[int, dict[str, Any], str]:
    async with session.get(url) as reply:
        return reply.status, await reply.json(), reply.headers["x-upstream"]


async def test_two_services_agree_but_for_the_volatile_fields() -> None:
    async with (
        serving(service("old")) as old,
        serving(service("new")) as new,
        aiohttp.ClientSession() as session,
    ):
        for comment in (0, 42, 4999):
            s1, a, up1 = await get(session, f"{old}/api/comments/{comment}")
            s2, b, up2 = await get(session, f"{new}/api/comments/{comment}")
            assert (s1, s2, up1, up2) == (200, 200, "old", "new")
            assert a["meta"] != b["meta"]
            a.pop("meta")
            b.pop("meta")
            assert a == b
            assert a["id"] == comment
        _, listing, _ = await get(session, f"{old}/api/comments?post=3")
        assert [c["post_id"] for c in listing["comments"]] == [3] * 5


async def test_each_knob_changes_what_clients_receive() -> None:
    async with (
        serving(service("bug", mismatch_share=1.0)) as bug,
        serving(service("down", error_rate=1.0)) as down,
        serving(service("writes", write_error_rate=1.0)) as writes,
        aiohttp.ClientSession() as session,
    ):
        _, item, _ = await get(session, f"{bug}/api/comments/7")
        assert item["author"]["display_name"] == item["author"]["handle"]
        status, _, _ = await get(session, f"{down}/api/comments/7")
        assert status == 503
        status, _, _ = await get(session, f"{writes}/api/comments/7")
        assert status == 200  # reads are fine...
        async with session.post(f"{writes}/api/comments", json={"body": "hi"}) as reply:
            assert reply.status == 503  # ...writes fail
        async with session.post(f"{bug}/api/comments", json={"body": "hi"}) as reply:
            assert reply.status == 201
            assert (await reply.json())["body"] == "hi"


async def test_the_load_sends_at_its_rate_and_counts_what_came_back() -> None:
    async with serving(service("old", write_error_rate=1.0)) as url:
        load = Load(url, rate=200.0)
        load.start()
        await asyncio.sleep(1.5)
        await load.stop()
    figures = load.figures
    # Open loop: the schedule decides the count (200/s for 1.5 s), not the replies.
    assert 200 <= figures.sent <= 320, figures
    assert figures.replies == figures.sent
    assert figures.by_upstream == {"old": figures.sent}
    writes = figures.by_status[503]
    reads = figures.by_status[200]
    assert writes + reads == figures.sent
    expected_writes = WRITE_SHARE * figures.sent
    assert expected_writes / 3 < writes < expected_writes * 3, figures
    rate, upstreams = load.recent()
    assert rate > 0
    assert set(upstreams) == {"old"}


def test_children_get_the_users_environment_without_sluices_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A shell set up for cluster mode must not turn the demo's controller into a replica of a
    real cluster (SLUICE_NAMESPACE implies --kubernetes) nor notify real webhooks."""
    monkeypatch.setenv("SLUICE_NAMESPACE", "production")
    monkeypatch.setenv("SLUICE_NOTIFY", "https://hooks.example/real")
    monkeypatch.setenv("SLUICE_PROMETHEUS", "/opt/prometheus")
    monkeypatch.setenv("DEMO_TEST_KEPT", "yes")
    children = Children(tmp_path, child_env(os.environ))
    child = children.start(
        "printenv",
        [sys.executable, "-c", "import json, os; print(json.dumps(dict(os.environ)))"],
    )
    assert child.popen.wait(10) == 0
    seen = json.loads(child.stdout_path.read_text())
    assert "SLUICE_NAMESPACE" not in seen
    assert "SLUICE_NOTIFY" not in seen
    assert seen["SLUICE_PROMETHEUS"] == "/opt/prometheus"  # the binary the demo runs
    assert seen["DEMO_TEST_KEPT"] == "yes"
    assert children.stop_all() == {child.pid: 0}


def _raise_interrupt(signum: int, frame: object) -> NoReturn:
    raise KeyboardInterrupt  # as ``sluice demo`` does on SIGTERM


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_a_signal_while_a_child_starts_leaves_it_recorded_and_stopped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sig: signal.Signals
) -> None:
    """A Ctrl-C that lands inside ``subprocess.Popen`` (after the fork, before it returns) is
    raised only once the child is in ``started``: stop_all then stops it, where it used to be
    left running, held by nothing, until the demo's death ended it (CI caught one)."""
    real_popen = subprocess.Popen
    forked: list[subprocess.Popen[bytes]] = []

    def popen_then_signal(*args: Any, **kwargs: Any) -> subprocess.Popen[bytes]:
        popen = real_popen(*args, **kwargs)
        forked.append(popen)
        os.kill(os.getpid(), sig)
        time.sleep(0.2)  # the handler runs here unless it is deferred
        return popen

    monkeypatch.setattr(subprocess, "Popen", popen_then_signal)  # as the module calls it
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    children = Children(tmp_path, child_env(os.environ))
    try:
        with pytest.raises(KeyboardInterrupt):
            children.start("sleeper", [sys.executable, "-c", "import time; time.sleep(60)"])
        assert [c.pid for c in children.started] == [p.pid for p in forked]
        codes = children.stop_all()
        assert codes == {forked[0].pid: -signal.SIGTERM}
        assert forked[0].poll() is not None
    finally:
        signal.signal(signal.SIGTERM, previous)
        for popen in forked:
            if popen.poll() is None:
                popen.kill()
                popen.wait()
    # The handlers are the test's own again: a later signal is not swallowed.
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
