"""``sluice rollout``: start, list, status (--watch), history and the operator commands, through
typer's CliRunner on the whole ``sluice`` app, and in separate processes where that matters: a
live ``status --watch`` (``python -m controller``) and concurrent commands (processes forked
from one interpreter that imported the CLI, released together).

The rollouts' states are driven where a test needs them with
:func:`controller.store.transitions.apply_input` and the reconciler's inputs (ticks, ACK results,
verdicts), on the same SQLite file the CLI writes."""

from __future__ import annotations

import getpass
import json
import os
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner, Result

from controller.cli import exitcodes
from controller.cli.app import app
from controller.rollout.inputs import AckResult, Command, CommandKind, Input, Tick, Verdict
from controller.rollout.state import Phase
from controller.store.rollouts import HistoryEvent, StoredRollout
from controller.store.sqlite_rollouts import SqliteRolloutStore
from controller.store.transitions import apply_input

ROOT = Path(__file__).resolve().parents[2]

POLICY = """\
apiVersion: sluice.dev/v1alpha1
kind: RolloutPolicy
metadata:
  name: comments
spec:
  route: comments
  baseline:
    cluster: comments-python
  candidate:
    cluster: comments-go
  stages:
    - weight: 1%
      bake: 2m
    - weight: 25%
      bake: 5m
    - weight: 100%
      bake: 5m
  analysis:
    slos:
      - metric: latency_p99
        maxDrift: 5%
"""


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No actor from the caller's environment; git never finds a repository above tmp_path
    (a test's files are outside git unless the test makes a repository)."""
    monkeypatch.delenv("SLUICE_ACTOR", raising=False)
    monkeypatch.delenv("SLUICE_STATE", raising=False)
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))


@pytest.fixture
def state(tmp_path: Path) -> Path:
    return tmp_path / "state" / "state.db"


@pytest.fixture
def policy(tmp_path: Path) -> Path:
    return _write(tmp_path / "policy.yaml", POLICY)


# -- helpers -----------------------------------------------------------------------------------


def _run(
    *args: str, stdin: str | None = None, env: Mapping[str, str | None] | None = None
) -> Result:
    return CliRunner().invoke(app, ["rollout", *args], input=stdin, env=env)


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def _edit(old: str, new: str, text: str = POLICY) -> str:
    assert text.count(old) == 1, old
    return text.replace(old, new)


def _line(text: str, needle: str) -> int:
    [number] = [n for n, line in enumerate(text.splitlines(), start=1) if needle in line]
    return number


def _start(state: Path, policy: Path, name: str = "r1", *more: str) -> Result:
    result = _run("start", name, "--policy", str(policy), "--state", str(state), *more)
    assert result.exit_code == 0, result.output
    return result


@contextmanager
def _store(state: Path) -> Iterator[SqliteRolloutStore]:
    store = SqliteRolloutStore(state)
    try:
        yield store
    finally:
        store.close()


def _get(state: Path, name: str = "r1") -> StoredRollout:
    with _store(state) as store:
        return store.get(name)


def _history(state: Path, name: str = "r1") -> list[HistoryEvent]:
    with _store(state) as store:
        return store.history(name)


def _drive(state: Path, name: str, *inputs: Input) -> StoredRollout:
    """Apply inputs as the reconciler (or an operator) would; each must change the rollout."""
    with _store(state) as store:
        stored = store.get(name)
        for event in inputs:
            stored, decision = apply_input(store, name, event)
            assert decision.changed, (event, decision)
            assert not decision.refused, (event, decision)
        return stored


def _cmd(kind: CommandKind) -> Command:
    return Command(now=time.time(), kind=kind, actor="setup")


def _acked(seq: int, weight: float) -> AckResult:
    return AckResult(now=time.time(), seq=seq, weight=weight, outcome="acked")


# Setups: from a pending rollout (revision 1) to the phase a test needs.


def _pending(state: Path, name: str) -> None:
    pass


def _baking(state: Path, name: str) -> None:
    """Stage 1 (1%) ACKed by every Envoy: progressing, its bake clock running."""
    stored = _drive(state, name, Tick(time.time()), _acked(1, 1.0))
    assert (stored.state.phase, stored.state.stage, stored.state.awaiting_ack) == (
        Phase.PROGRESSING,
        0,
        False,
    )


def _paused(state: Path, name: str) -> None:
    _baking(state, name)
    _drive(state, name, _cmd("pause"))


def _last_stage_awaiting(state: Path, name: str) -> None:
    _baking(state, name)
    _drive(state, name, _cmd("promote_full"))


def _last_stage_baking(state: Path, name: str) -> None:
    _last_stage_awaiting(state, name)
    _drive(state, name, _acked(2, 100.0))


def _rolling_back_abort(state: Path, name: str) -> None:
    _baking(state, name)
    _drive(state, name, _cmd("abort"))


def _rolling_back_verdict(state: Path, name: str) -> None:
    """A fail verdict (failureLimit 1, onFailure rollback): rolling back, 0% awaiting its ACK."""
    _baking(state, name)
    stored = _drive(state, name, Verdict(now=time.time(), stage=0, outcome="fail", reason="p99"))
    assert (stored.state.phase, stored.state.cause) == (Phase.ROLLING_BACK, "verdict")


def _aborted(state: Path, name: str) -> None:
    _rolling_back_abort(state, name)
    _drive(state, name, _acked(2, 0.0))


def _rolled_back(state: Path, name: str) -> None:
    _rolling_back_verdict(state, name)
    _drive(state, name, _acked(2, 0.0))


def _succeeded(state: Path, name: str) -> None:
    _last_stage_baking(state, name)
    _drive(state, name, _cmd("promote"))


SETUPS: dict[str, Callable[[Path, str], None]] = {
    "pending": _pending,
    "baking": _baking,
    "paused": _paused,
    "last_stage_awaiting": _last_stage_awaiting,
    "last_stage_baking": _last_stage_baking,
    "rolling_back_abort": _rolling_back_abort,
    "rolling_back_verdict": _rolling_back_verdict,
    "aborted": _aborted,
    "rolled_back": _rolled_back,
    "succeeded": _succeeded,
}


def _make(state: Path, policy: Path, setup: str, name: str = "r1") -> StoredRollout:
    _start(state, policy, name)
    SETUPS[setup](state, name)
    return _get(state, name)


# -- start -------------------------------------------------------------------------------------


def test_start_records_a_pending_rollout(state: Path, policy: Path) -> None:
    result = _start(state, policy, "r1", "--actor", "carol")
    # A new state file is worth a note: no controller reads it yet.
    assert result.stderr == (
        f"note: creating a new state file {state}: the rollout starts once "
        f"`sluice serve --state {state}` runs\n"
    )
    assert result.stdout == (
        "rollout r1 created (pending): route comments, comments-python → comments-go, "
        f"stages 1% → 25% → 100%; policy {policy} (not in git)\n"
    )
    status = _run("status", "r1", "--state", str(state), "-o", "json")
    assert status.exit_code == 0, status.output
    data = json.loads(status.stdout)
    assert data["name"] == "r1"
    assert data["route"] == "comments"
    assert data["phase"] == "pending"
    assert data["stage"] == 0
    assert data["stages"] == 3
    assert data["stage_weights"] == [1, 25, 100]
    assert data["weights"] == {"candidate": 0, "baseline": 100}
    assert data["revision"] == 1
    assert data["policy"] == {
        "name": "comments",
        "path": str(policy),
        "git_commit": None,
        "git_dirty": False,
    }
    [created] = data["history"]
    assert (created["seq"], created["actor"], created["transition"]) == (1, "carol", "pending")
    assert "1% → 25% → 100%" in created["reason"]


@pytest.mark.parametrize("fmt", ["json", "yaml"])
def test_start_output_parses(state: Path, policy: Path, fmt: str) -> None:
    result = _start(state, policy, "r1", "-o", fmt)
    data = json.loads(result.stdout) if fmt == "json" else yaml.safe_load(result.stdout)
    assert (data["name"], data["phase"], data["stage"], data["revision"]) == ("r1", "pending", 0, 1)
    assert data["policy"]["path"] == str(policy)
    stored = _run("status", "r1", "--state", str(state), "-o", fmt).stdout
    again = json.loads(stored) if fmt == "json" else yaml.safe_load(stored)
    again.pop("history")
    assert {k: v for k, v in again.items() if k != "age_s"} == {
        k: v for k, v in data.items() if k != "age_s"
    }


def test_start_reads_the_policy_from_stdin(state: Path) -> None:
    result = _run("start", "r1", "--policy", "-", "--state", str(state), "-o", "json", stdin=POLICY)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["policy"]["path"] is None
    assert _get(state).source.text == POLICY


@pytest.mark.parametrize(
    ("old", "new", "needle", "field"),
    [
        ("    - weight: 25%\n", "    - weight: 25%\n     bake: [5m\n", "bake: [5m", "invalid YAML"),
        ("      bake: 5m\n    - weight: 100%",
         "      bake: 5m\n      bakeTime: 5m\n    - weight: 100%", "bakeTime",
         "spec.stages[1].bakeTime"),
        ("weight: 25%", "weight: 150%", "150%", "spec.stages[1].weight"),
        ("weight: 1%", "weight: 30%", "weight: 25%", "spec.stages[1].weight"),
        ("bake: 2m", "bake: 7", "bake: 7", "spec.stages[0].bake"),
    ],
    ids=["bad-yaml", "unknown-field", "weight-150%", "stages-not-increasing", "bake-no-unit"],
)  # fmt: skip
def test_start_with_a_malformed_policy_exits_2_and_stores_nothing(
    tmp_path: Path, state: Path, old: str, new: str, needle: str, field: str
) -> None:
    other = _write(tmp_path / "search.yaml", _edit("route: comments", "route: search"))
    _start(state, other, "existing")
    text = _edit(old, new)
    path = _write(tmp_path / "broken.yaml", text)
    result = _run("start", "r1", "--policy", str(path), "--state", str(state))
    assert result.exit_code == exitcodes.INVALID_INPUT == 2
    assert result.stdout == ""
    [issue] = result.stderr.splitlines()
    assert issue.startswith(f"{path}:{_line(text, needle)}: {field}: "), result.stderr
    with _store(state) as store:
        assert [r.name for r in store.list()] == ["existing"]
    assert _run("status", "r1", "--state", str(state)).exit_code == exitcodes.NOT_FOUND


def test_start_with_a_malformed_policy_creates_no_state_file(tmp_path: Path, state: Path) -> None:
    path = _write(tmp_path / "broken.yaml", _edit("weight: 25%", "weight: 150%"))
    result = _run("start", "r1", "--policy", str(path), "--state", str(state))
    assert result.exit_code == 2
    assert not state.parent.exists()


def test_start_with_a_missing_policy_file_exits_2(tmp_path: Path, state: Path) -> None:
    missing = tmp_path / "nope.yaml"
    result = _run("start", "r1", "--policy", str(missing), "--state", str(state))
    assert result.exit_code == 2
    assert result.stderr.startswith(f"{missing}: cannot read: ")
    assert not state.parent.exists()


def test_a_second_rollout_of_the_same_route_is_refused(
    tmp_path: Path, state: Path, policy: Path
) -> None:
    _start(state, policy, "first")
    renamed = _write(tmp_path / "other.yaml", _edit("name: comments", "name: comments-2"))
    result = _run("start", "second", "--policy", str(renamed), "--state", str(state))
    assert result.exit_code == exitcodes.REFUSED == 4
    assert result.stdout == ""
    assert result.stderr == (
        "error: route 'comments' is already being moved by rollout 'first' (pending); "
        "abort it or wait until it ends\n"
    )
    assert _run("status", "second", "--state", str(state)).exit_code == exitcodes.NOT_FOUND
    assert [e.seq for e in _history(state, "first")] == [1]


def test_the_same_name_while_active_is_refused(tmp_path: Path, state: Path, policy: Path) -> None:
    _make(state, policy, "baking")
    before = _get(state)
    other = _write(tmp_path / "search.yaml", _edit("route: comments", "route: search"))
    result = _run("start", "r1", "--policy", str(other), "--state", str(state))
    assert result.exit_code == exitcodes.REFUSED
    assert result.stderr == (
        "error: rollout 'r1' already exists and is progressing; abort it or wait until it ends\n"
    )
    assert _get(state) == before
    assert len(_history(state)) == 3


def test_a_terminal_rollouts_name_and_route_can_be_started_again(state: Path, policy: Path) -> None:
    _make(state, policy, "aborted")
    before = _get(state)
    result = _start(state, policy, "r1", "-o", "json")
    data = json.loads(result.stdout)
    assert (data["phase"], data["revision"]) == ("pending", before.revision + 1)
    events = _history(state)
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert events[-1].transition == "pending"


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


def test_a_policy_from_a_git_checkout_records_its_commit(tmp_path: Path, state: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    path = _write(repo / "policies" / "comments.yaml", POLICY)
    _git(repo, "add", ".")
    _git(repo, "commit", "-q", "-m", "policy")
    head = _git(repo, "rev-parse", "HEAD")

    result = _start(state, path, "r1")
    assert result.stdout.endswith(f"; policy {path} at {head[:12]}\n")
    data = json.loads(_run("status", "r1", "--state", str(state), "-o", "json").stdout)
    assert data["policy"]["git_commit"] == head
    assert data["policy"]["git_dirty"] is False

    _write(path, _edit("route: comments", "route: search"))  # edited, not committed
    result = _start(state, path, "r2")
    assert result.stdout.endswith(f"; policy {path} at {head[:12]} (the file differs from it)\n")
    source = _get(state, "r2").source
    assert (source.git_commit, source.git_dirty) == (head, True)


# -- operator commands -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("setup", "args", "phase", "stage", "weight"),
    [
        ("pending", ["pause"], "paused", -1, 0.0),
        ("pending", ["promote"], "progressing", 0, 1.0),
        ("pending", ["abort"], "rolling_back", -1, 0.0),
        ("baking", ["pause"], "paused", 0, 1.0),
        ("paused", ["resume"], "progressing", 0, 1.0),
        ("baking", ["promote"], "progressing", 1, 25.0),
        ("baking", ["promote", "--full"], "progressing", 2, 100.0),
        ("last_stage_baking", ["promote"], "succeeded", 2, 100.0),
        ("baking", ["abort"], "rolling_back", 0, 0.0),
        ("paused", ["abort"], "rolling_back", 0, 0.0),
        ("rolling_back_verdict", ["abort"], "rolling_back", 0, 0.0),
        ("aborted", ["retry"], "pending", -1, 0.0),
        ("rolled_back", ["retry"], "pending", -1, 0.0),
    ],
)
def test_a_command_moves_the_rollout_as_the_machine_says(
    state: Path,
    policy: Path,
    setup: str,
    args: list[str],
    phase: str,
    stage: int,
    weight: float,
) -> None:
    before = _make(state, policy, setup)
    events_before = _history(state)
    result = _run(*args, "r1", "--state", str(state), "-o", "json", "--actor", "alice")
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    data = json.loads(result.stdout)
    after = _get(state)
    assert (str(after.state.phase), after.state.stage, after.state.desired_weight) == (
        phase,
        stage,
        weight,
    )
    assert after.revision == before.revision + 1
    assert (data["phase"], data["stage"], data["revision"]) == (phase, stage + 1, after.revision)
    events = _history(state)
    assert events[:-1] == events_before
    kind = "promote full" if "--full" in args else args[0]
    assert events[-1].actor == "alice"
    assert f"{kind} by alice" in events[-1].reason
    old = str(before.state.phase)
    assert events[-1].transition == (phase if old == phase else f"{old} → {phase}")


def test_abort_during_a_rollback_ends_aborted(state: Path, policy: Path) -> None:
    _make(state, policy, "rolling_back_verdict")
    assert _run("abort", "r1", "--state", str(state)).exit_code == 0
    assert _get(state).state.cause == "abort"
    stored = _drive(state, "r1", _acked(2, 0.0))
    assert stored.state.phase == Phase.ABORTED


def test_resume_restarts_the_bake(state: Path, policy: Path) -> None:
    paused = _make(state, policy, "paused")
    started = paused.state.stage_started_at
    assert started is not None
    time.sleep(0.01)
    assert _run("resume", "r1", "--state", str(state)).exit_code == 0
    resumed = _get(state).state
    assert resumed.stage_started_at is not None
    assert resumed.stage_started_at > started


def test_command_table_output(state: Path, policy: Path) -> None:
    _make(state, policy, "baking")
    result = _run("pause", "r1", "--state", str(state), "--actor", "alice")
    assert result.exit_code == 0
    assert result.stdout == "r1: paused: pause by alice; weights stay at 1%\n"


@pytest.mark.parametrize(
    ("setup", "args", "why"),
    [
        ("pending", ["resume"], "only a paused rollout can be resumed; this one is pending"),
        ("baking", ["resume"], "only a paused rollout can be resumed; this one is progressing"),
        ("paused", ["pause"], "the rollout is already paused"),
        ("baking", ["retry"], "only a rolled back, aborted or failed rollout can be retried; "
         "this one is progressing"),
        ("last_stage_awaiting", ["promote"], "the last stage's weights are not ACKed yet; "
         "promote once every Envoy confirmed them (see status)"),
        ("rolling_back_abort", ["pause"], "the rollout is rolling back; only abort is possible"),
        ("rolling_back_abort", ["resume"], "the rollout is rolling back; only abort is possible"),
        ("rolling_back_abort", ["promote"], "the rollout is rolling back; only abort is possible"),
        ("rolling_back_abort", ["promote", "--full"],
         "the rollout is rolling back; only abort is possible"),
        ("rolling_back_abort", ["abort"], "the rollout is already being aborted"),
        ("rolling_back_abort", ["retry"], "only a rolled back, aborted or failed rollout can be "
         "retried; this one is rolling_back"),
        ("aborted", ["pause"], "the rollout has ended (aborted)"),
        ("aborted", ["resume"], "the rollout has ended (aborted)"),
        ("aborted", ["promote"], "the rollout has ended (aborted)"),
        ("aborted", ["abort"], "the rollout has ended (aborted)"),
        ("succeeded", ["abort"], "the rollout has ended (succeeded)"),
        ("succeeded", ["retry"], "only a rolled back, aborted or failed rollout can be retried; "
         "this one is succeeded"),
    ],
)  # fmt: skip
def test_a_refused_command_exits_4_and_changes_nothing(
    state: Path, policy: Path, setup: str, args: list[str], why: str
) -> None:
    before = _make(state, policy, setup)
    events = _history(state)
    result = _run(*args, "r1", "--state", str(state), "-o", "json")
    assert result.exit_code == exitcodes.REFUSED == 4
    assert result.stdout == ""
    assert result.stderr == f"refused: r1: {why}\n"
    assert _get(state) == before
    assert _history(state) == events


def test_retry_when_another_rollout_took_the_route_is_refused(
    tmp_path: Path, state: Path, policy: Path
) -> None:
    before = _make(state, policy, "aborted")
    events = _history(state)
    _start(state, _write(tmp_path / "p2.yaml", POLICY), "r2")
    result = _run("retry", "r1", "--state", str(state))
    assert result.exit_code == exitcodes.REFUSED, result.output
    assert result.stderr == (
        "refused: r1: route 'comments' is already being moved by rollout 'r2' (pending); "
        "abort it or wait until it ends\n"
    )
    assert _get(state) == before
    assert _history(state) == events


COMMANDS = [["pause"], ["resume"], ["promote"], ["promote", "--full"], ["abort"], ["retry"]]


@pytest.mark.parametrize("args", [*COMMANDS, ["status"], ["status", "--watch"], ["history"]])
def test_an_unknown_rollout_exits_5(state: Path, policy: Path, args: list[str]) -> None:
    _start(state, policy, "r1")
    result = _run(*args, "nope", "--state", str(state))
    assert result.exit_code == exitcodes.NOT_FOUND == 5
    assert result.stdout == ""
    assert result.stderr == "error: no rollout named 'nope'\n"


@pytest.mark.parametrize(
    "args", [*[[*a, "r1"] for a in COMMANDS], ["status", "r1"], ["history", "r1"], ["list"]]
)
def test_a_missing_state_file_exits_6_and_creates_nothing(tmp_path: Path, args: list[str]) -> None:
    missing = tmp_path / "typo" / "state.db"
    result = _run(*args, "--state", str(missing))
    assert result.exit_code == exitcodes.STATE_UNAVAILABLE == 6
    assert result.stdout == ""
    assert result.stderr.startswith(f"error: no state file at {missing}: ")
    assert not missing.parent.exists()


def test_a_state_file_that_is_not_a_database_exits_6(tmp_path: Path) -> None:
    junk = _write(tmp_path / "state.db", "not a database" * 100)
    result = _run("list", "--state", str(junk))
    assert result.exit_code == exitcodes.STATE_UNAVAILABLE
    assert result.stderr.startswith(f"error: cannot open the state file {junk}: ")


@pytest.mark.parametrize(
    ("flag", "env", "actor"),
    [
        ("alice", None, "alice"),
        (None, "bob", "bob"),
        ("alice", "bob", "alice"),
        (None, None, f"{getpass.getuser()}@{socket.gethostname()}"),
    ],
)
def test_the_actor_lands_in_the_history(
    state: Path, policy: Path, flag: str | None, env: str | None, actor: str
) -> None:
    _make(state, policy, "baking")
    args = ["pause", "r1", "--state", str(state), "--reason", "checkout p99 up"]
    result = _run(*args, *(["--actor", flag] if flag else []), env={"SLUICE_ACTOR": env})
    assert result.exit_code == 0, result.output
    last = _history(state)[-1]
    assert last.actor == actor
    assert last.reason == f"pause by {actor}: checkout p99 up; weights stay at 1%"
    assert _get(state).state.reason == last.reason


def test_start_takes_the_actor_from_the_environment(state: Path, policy: Path) -> None:
    result = _run(
        "start", "r1", "--policy", str(policy), "--state", str(state), env={"SLUICE_ACTOR": "ci"}
    )
    assert result.exit_code == 0
    assert _history(state)[0].actor == "ci"


# -- list, history, status ---------------------------------------------------------------------


def _three_rollouts(tmp_path: Path, state: Path, policy: Path) -> None:
    """b-comments baking, a-search aborted, c-cart pending."""
    _make(state, policy, "baking", "b-comments")
    search = _write(tmp_path / "search.yaml", _edit("route: comments", "route: search"))
    _make(state, search, "aborted", "a-search")
    cart = _write(tmp_path / "cart.yaml", _edit("route: comments", "route: cart"))
    _make(state, cart, "pending", "c-cart")


def test_list_json(tmp_path: Path, state: Path, policy: Path) -> None:
    _three_rollouts(tmp_path, state, policy)
    result = _run("list", "--state", str(state), "-o", "json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)["rollouts"]
    assert [(r["name"], r["route"], r["phase"], r["stage"]) for r in rows] == [
        ("a-search", "search", "aborted", 1),
        ("b-comments", "comments", "progressing", 1),
        ("c-cart", "cart", "pending", 0),
    ]
    assert [r["weights"]["candidate"] for r in rows] == [0, 1, 0]
    active = _run("list", "--state", str(state), "-o", "json", "--active")
    assert [r["name"] for r in json.loads(active.stdout)["rollouts"]] == ["b-comments", "c-cart"]
    as_yaml = _run("list", "--state", str(state), "-o", "yaml")
    assert yaml.safe_load(as_yaml.stdout)["rollouts"][0]["name"] == "a-search"


def _table(output: str) -> list[list[str]]:
    """The body rows of a rich table, cell by cell."""
    return [
        [cell.strip() for cell in line.split("│")[1:-1]]
        for line in output.splitlines()
        if line.startswith("│")
    ]


WIDE = {"COLUMNS": "200"}  # rich wraps nothing: one line per row


def test_list_table(tmp_path: Path, state: Path, policy: Path) -> None:
    _three_rollouts(tmp_path, state, policy)
    result = _run("list", "--state", str(state), env=WIDE)
    assert result.exit_code == 0, result.output
    header = [cell.strip() for cell in result.stdout.splitlines()[1].split("┃")[1:-1]]
    assert header == ["name", "route", "phase", "stage", "candidate", "age", "reason"]
    rows = _table(result.stdout)
    assert [row[:5] for row in rows] == [
        ["a-search", "search", "aborted", "1/3", "0%"],
        ["b-comments", "comments", "progressing", "1/3", "1%"],
        ["c-cart", "cart", "pending", "0/3", "0% …"],
    ]
    active = _table(_run("list", "--state", str(state), "--active", env=WIDE).stdout)
    assert [row[0] for row in active] == ["b-comments", "c-cart"]


def test_list_of_an_empty_store(state: Path) -> None:
    SqliteRolloutStore(state).close()
    assert json.loads(_run("list", "--state", str(state), "-o", "json").stdout) == {"rollouts": []}
    assert _run("list", "--state", str(state)).stdout.endswith("no rollouts\n")


def test_history_json_and_limit(state: Path, policy: Path) -> None:
    _make(state, policy, "aborted")
    result = _run("history", "r1", "--state", str(state), "-o", "json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["name"] == "r1"
    assert [(e["seq"], e["transition"]) for e in data["history"]] == [
        (1, "pending"),
        (2, "pending → progressing"),
        (3, "progressing"),
        (4, "progressing → rolling_back"),
        (5, "rolling_back → aborted"),
    ]
    assert data["history"][3]["actor"] == "setup"
    assert {e["actor"] for e in data["history"][1:3]} == {"controller"}
    limited = json.loads(
        _run("history", "r1", "--state", str(state), "-o", "json", "--limit", "2").stdout
    )
    assert [e["seq"] for e in limited["history"]] == [4, 5]
    as_yaml = yaml.safe_load(_run("history", "r1", "--state", str(state), "-o", "yaml").stdout)
    assert as_yaml == data
    assert _run("history", "r1", "--state", str(state), "--limit", "0").exit_code == 2


def test_history_table(state: Path, policy: Path) -> None:
    _make(state, policy, "paused")
    result = _run("history", "r1", "--state", str(state), env=WIDE)
    assert result.exit_code == 0, result.output
    rows = _table(result.stdout)
    assert [(row[0], row[2], row[3]) for row in rows] == [
        ("1", f"{getpass.getuser()}@{socket.gethostname()}", "pending"),
        ("2", "controller", "pending → progressing"),
        ("3", "controller", "progressing"),
        ("4", "setup", "progressing → paused"),
    ]
    assert rows[3][4] == "pause by setup; weights stay at 1%"


def test_status_json_of_a_baking_rollout(state: Path, policy: Path) -> None:
    _make(state, policy, "baking")
    data = json.loads(_run("status", "r1", "--state", str(state), "-o", "json").stdout)
    assert (data["phase"], data["stage"], data["in_effect"], data["awaiting_ack"]) == (
        "progressing",
        1,
        True,
        False,
    )
    assert data["weights"] == {"candidate": 1, "baseline": 99}
    assert data["bake"]["bake_s"] == 120
    assert 115 < data["bake"]["left_s"] <= 120
    assert [e["seq"] for e in data["history"]] == [1, 2, 3]


def test_status_table(state: Path, policy: Path) -> None:
    _make(state, policy, "baking")
    result = _run("status", "r1", "--state", str(state))
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("r1  progressing   route comments: comments-python → ")
    assert "comments-go 1%  comments-python 99%  (ACKed by every Envoy)" in result.stdout
    assert "left; deadline" in result.stdout


@pytest.mark.parametrize(
    ("setup", "phase", "code"),
    [("succeeded", "succeeded", 0), ("aborted", "aborted", 1), ("rolled_back", "rolled_back", 1)],
)
def test_watch_of_a_terminal_rollout_prints_one_line(
    state: Path, policy: Path, setup: str, phase: str, code: int
) -> None:
    stored = _make(state, policy, setup)
    result = _run("status", "r1", "--watch", "-o", "json", "--state", str(state))
    assert result.exit_code == code
    [line] = result.stdout.splitlines()
    data = json.loads(line)
    assert (data["phase"], data["revision"]) == (phase, stored.revision)


def test_watch_yaml_prints_one_yaml_document_per_change(state: Path, policy: Path) -> None:
    _make(state, policy, "baking")

    def operator() -> None:  # while the watch runs, in this process
        for step in (_cmd("abort"), _acked(2, 0.0)):
            time.sleep(0.3)
            _drive(state, "r1", step)

    thread = threading.Thread(target=operator)
    thread.start()
    try:
        result = _run(
            "status", "r1", "--watch", "-o", "yaml", "--interval", "0.05", "--state", str(state)
        )
    finally:
        thread.join()
    assert result.exit_code == exitcodes.FAILED, result.output
    docs = [(d["phase"], d["revision"]) for d in yaml.safe_load_all(result.stdout)]
    # every change is seen unless the machine is too busy to poll within 0.3 s
    assert len(docs) >= 2
    assert docs[0] == ("progressing", 3)
    assert docs[-1] == ("aborted", 5)
    assert set(docs) <= {("progressing", 3), ("rolling_back", 4), ("aborted", 5)}


def test_watch_interval_must_be_positive(state: Path, policy: Path) -> None:
    _make(state, policy, "baking")
    result = _run("status", "r1", "--watch", "--interval", "-1", "--state", str(state))
    assert result.exit_code == exitcodes.INVALID_INPUT
    assert "--interval" in result.stderr


@pytest.mark.parametrize(("setup", "code"), [("succeeded", 0), ("aborted", 1)])
def test_watch_table_of_a_terminal_rollout(
    state: Path, policy: Path, setup: str, code: int
) -> None:
    _make(state, policy, setup)
    result = _run("status", "r1", "--watch", "--state", str(state))
    assert result.exit_code == code
    assert result.stdout.startswith(f"r1  {setup}")


# -- real processes ----------------------------------------------------------------------------


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("SLUICE_ACTOR", "SLUICE_STATE")}
    return {**env, **extra}


def test_watch_follows_a_rollout_until_it_ends(state: Path, policy: Path) -> None:
    """``status --watch -o json`` in its own process: one line per change, exit 1 once the
    rollout ends aborted."""
    _make(state, policy, "baking")
    watch = subprocess.Popen(
        [sys.executable, "-m", "controller", "rollout", "status", "r1", "--watch", "-o", "json",
         "--interval", "0.05", "--state", str(state)],
        cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    watchdog = threading.Timer(20, watch.kill)  # a watch that misses a change must not hang
    watchdog.start()
    try:
        assert watch.stdout is not None
        seen = [json.loads(watch.stdout.readline())]
        for step in (_cmd("pause"), _cmd("abort"), _acked(2, 0.0)):
            _drive(state, "r1", step)
            seen.append(json.loads(watch.stdout.readline()))  # waits for the watch to see it
        out, err = watch.communicate(timeout=10)
    finally:
        watchdog.cancel()
        watch.kill()
        watch.wait()
    assert watch.returncode == exitcodes.FAILED, err
    assert out == ""  # nothing after the end
    assert [(d["phase"], d["revision"]) for d in seen] == [
        ("progressing", 3),
        ("paused", 4),
        ("rolling_back", 5),
        ("aborted", 6),
    ]


# Separate processes that run the ``sluice`` command at the same instant. One interpreter
# imports the CLI (what ``python -m controller`` does first) and forks one child per command;
# each child waits at a gate (a pipe the parent closes once every child exists), then runs
# ``sluice`` with its arguments, its stdout and stderr in files. Starting seven interpreters
# instead takes ~9 s here and spreads the commands over seconds: they would rarely meet.
_FORK_AT_ONCE = """\
import json, os, sys, traceback
from controller.cli.app import main

out_dir, commands = sys.argv[1], json.loads(sys.argv[2])
gate_r, gate_w = os.pipe()
children = []
for i, argv in enumerate(commands):
    pid = os.fork()
    if pid == 0:
        os.close(gate_w)
        for fd, kind in ((1, "out"), (2, "err")):
            path = os.path.join(out_dir, f"{i}.{kind}")
            os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), fd)
        os.read(gate_r, 1)  # returns when the parent closes the gate: every child at once
        sys.argv = ["sluice", *argv]
        code = 0
        try:
            main()
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
        except BaseException:
            traceback.print_exc()
            code = 99
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    children.append(pid)
os.close(gate_r)
os.close(gate_w)
print(json.dumps([os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in children]))
"""


def test_concurrent_commands_from_processes_never_corrupt_and_abort_wins(
    tmp_path: Path, state: Path, policy: Path
) -> None:
    before = _make(state, policy, "baking")
    events_before = _history(state)
    kinds = ["pause", "resume", "pause", "abort", "resume", "pause", "resume"]
    actors = [f"op-{i}-{kind}" for i, kind in enumerate(kinds)]
    commands = [
        ["rollout", kind, "r1", "-o", "json", "--actor", actor]
        for kind, actor in zip(kinds, actors, strict=True)
    ]
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    zygote = subprocess.run(
        [sys.executable, "-c", _FORK_AT_ONCE, str(out_dir), json.dumps(commands)],
        cwd=ROOT,
        env=_env(SLUICE_STATE=str(state)),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert zygote.returncode == 0, zygote.stderr
    codes = json.loads(zygote.stdout)
    results = [
        (
            actor,
            code,
            (out_dir / f"{i}.out").read_text(encoding="utf-8"),
            (out_dir / f"{i}.err").read_text(encoding="utf-8"),
        )
        for i, (actor, code) in enumerate(zip(actors, codes, strict=True))
    ]

    for actor, code, out, err in results:
        assert code in (0, 4), (actor, code, err)
        if code == 4:
            assert err.startswith("refused: r1: "), (actor, err)
            assert out == "", (actor, out)
    done = {actor: json.loads(out) for actor, code, out, _ in results if code == 0}
    assert "op-3-abort" in done

    after = _get(state)
    events = _history(state)
    assert events[: len(events_before)] == events_before
    new = events[len(events_before) :]
    # exactly one event per successful command, none for a refused one
    assert sorted(e.actor for e in new) == sorted(done)
    # the revisions are consecutive, each written by one command
    with sqlite3.connect(state) as db:
        revisions = [
            r
            for (r,) in db.execute(
                "SELECT revision FROM rollout_events WHERE rollout = 'r1' AND seq > ? ORDER BY seq",
                (len(events_before),),
            )
        ]
    assert revisions == list(range(before.revision + 1, before.revision + 1 + len(new)))
    assert after.revision == before.revision + len(new)
    assert {d["revision"] for d in done.values()} == set(revisions)
    for event, revision in zip(new, revisions, strict=True):
        assert done[event.actor]["revision"] == revision
    # each transition starts where the previous one ended: no write was lost
    phase = str(before.state.phase)
    for event in new:
        old, _, to = event.transition.partition(" → ")
        assert old == phase, [e.transition for e in new]
        phase = to or old
    # abort wins: it is the last event, nothing resumed after it
    assert new[-1].actor == "op-3-abort"
    assert (after.state.phase, after.state.cause, after.state.desired_weight) == (
        Phase.ROLLING_BACK,
        "abort",
        0.0,
    )
    assert phase == "rolling_back"


def test_the_slo_table_shows_both_limits_and_the_figures() -> None:
    from rich.console import Console

    from controller.cli.rolloutview import slo_table

    console = Console(width=200, record=True)
    console.print(
        slo_table(
            {
                "latency_p99": {
                    "outcome": "inconclusive",
                    "baseline": 210.0,
                    "candidate": 250.0,
                    "drift": 0.19,
                    "threshold": 230.0,
                    "pass_threshold": 220.0,
                    "confidence": 0.86,
                    "baseline_requests": 1_188_000,
                    "candidate_requests": 12_000,
                },
                "error_rate": {
                    "outcome": "fail",
                    "baseline": 0.01,
                    "candidate": 0.02,
                    "drift": 1.0,
                    "threshold": 0.0114,
                    "pass_threshold": 0.0193,
                    "confidence": 0.9999,
                    "baseline_requests": 1_188_000,
                    "candidate_requests": 12_000,
                    "reference": True,
                },
            }
        )
    )
    text = console.export_text()
    assert "fail above" in text
    assert "pass below" in text
    latency = next(line for line in text.splitlines() if "latency_p99" in line)
    for cell in ("230 ms", "220 ms", "+19.0%", "1188000/12000"):
        assert cell in latency
    errors = next(line for line in text.splitlines() if "error_rate" in line)
    for cell in ("1.140%", "1.930%", "(ref)"):
        assert cell in errors
