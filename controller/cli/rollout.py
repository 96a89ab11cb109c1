"""``sluice rollout``: start, watch and steer rollouts.

The CLI writes the rollout store directly (SQLite: the controller's ``--state`` file), as
``kubectl`` writes the API server: ``start`` records a pending rollout and the running
controller picks it up within its poll interval; commands go through the same state machine
and compare-and-set as the controller, so concurrent commands never corrupt a rollout and an
abort written during a stage transition wins.

Cluster mode (``--namespace``/``-n``, ``--kubeconfig`` or ``--context``): the same commands on
the ``Rollout`` objects of a cluster (``controller.k8s.store``): ``start`` creates one (RBAC:
``create rollouts``), the others write its status (``update rollouts/status``), so Kubernetes
RBAC decides who may start or steer a rollout.

Exit codes: 0 done · 1 the rollout failed (``status --watch`` ending rolled back, aborted or
failed) · 2 invalid input (a policy that fails validation, a bad option) · 4 refused (the
command is not allowed in the rollout's phase, the route is busy, the name is taken) · 5 no
such rollout · 6 the state file (or the cluster) cannot be reached.
"""

from __future__ import annotations

import getpass
import json
import os
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from controller.cli import exitcodes
from controller.cli.rolloutview import history_json, rollout_json, status_view
from controller.cli.yamlout import dump
from controller.policy.loading import load_policy
from controller.policy.source import DocumentError
from controller.rollout.inputs import Command, CommandKind
from controller.rollout.machine import start as start_state
from controller.runtime.gitsource import policy_source
from controller.store.rollouts import (
    RolloutExistsError,
    RolloutNotFoundError,
    RolloutStore,
    RouteBusyError,
    StoreError,
)
from controller.store.sqlite_rollouts import SqliteRolloutStore
from controller.store.transitions import apply_input

app = typer.Typer(
    help="Start, watch and steer rollouts (one route from its baseline to its candidate).",
    no_args_is_help=True,
)

STATE_DEFAULT = Path(".sluice/state.db")


class Output(StrEnum):
    """Output formats."""

    table = "table"
    json = "json"
    yaml = "yaml"


OutputOption = Annotated[Output, typer.Option("--output", "-o", help="table, json or yaml.")]
StateOption = Annotated[
    Path,
    typer.Option(
        "--state",
        envvar="SLUICE_STATE",
        help="The controller's state file (`sluice serve --state`).",
    ),
]
NamespaceOption = Annotated[
    str | None,
    typer.Option(
        "--namespace",
        "-n",
        envvar="SLUICE_NAMESPACE",
        help="Cluster mode: the namespace of the Rollout objects (default: the kubeconfig "
        "context's).",
    ),
]
KubeconfigOption = Annotated[
    Path | None,
    typer.Option(help="Cluster mode: the kubeconfig file (default: $KUBECONFIG, ~/.kube/config)."),
]
ContextOption = Annotated[str | None, typer.Option(help="Cluster mode: the kubeconfig context.")]
NameArg = Annotated[str, typer.Argument(help="The rollout's name.", metavar="NAME")]
ReasonOption = Annotated[str, typer.Option(help="Why, for the history.")]
ActorOption = Annotated[
    str | None, typer.Option(help="Who, for the history (default: $SLUICE_ACTOR or user@host).")
]


def _actor(actor: str | None) -> str:
    if actor:
        return actor
    if env := os.environ.get("SLUICE_ACTOR"):
        return env
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


@dataclass(frozen=True)
class Target:
    """Where the rollouts are: the controller's state file, or (cluster mode: any of
    ``namespace``, ``kubeconfig``, ``context`` given) the Rollout objects of a cluster, where
    Kubernetes RBAC decides who may create (start) and patch (steer) them."""

    state: Path
    namespace: str | None = None
    kubeconfig: Path | None = None
    context: str | None = None

    @property
    def cluster(self) -> bool:
        """Cluster mode."""
        return bool(self.namespace or self.kubeconfig or self.context)


@contextmanager
def _store(target: Target, create: bool = False) -> Iterator[RolloutStore]:
    """Open the rollout store; exit 6 when it cannot be opened (and, unless ``create``, when
    the state file does not exist: a typo must not create an empty state file)."""
    close_client: Callable[[], None] = lambda: None  # noqa: E731
    store: RolloutStore
    if target.cluster:
        # Imported only in cluster mode: the kubernetes client takes ~1 s to import.
        from controller.k8s.client import ClusterError, api_client, namespace_default
        from controller.k8s.store import KubernetesRolloutStore

        try:
            namespace = target.namespace or namespace_default(target.kubeconfig, target.context)
            client = api_client(target.kubeconfig, target.context)
        except ClusterError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(exitcodes.STATE_UNAVAILABLE) from exc
        close_client = client.close
        store = KubernetesRolloutStore(client, namespace, identity=_actor(None))
    else:
        path = target.state
        if not create and not path.exists():
            typer.echo(
                f"error: no state file at {path}: pass the controller's --state (or "
                "SLUICE_STATE), or --namespace/--context for the rollouts of a cluster",
                err=True,
            )
            raise typer.Exit(exitcodes.STATE_UNAVAILABLE)
        try:
            store = SqliteRolloutStore(path)
        except (StoreError, OSError) as exc:
            typer.echo(f"error: cannot open the state file {path}: {exc}", err=True)
            raise typer.Exit(exitcodes.STATE_UNAVAILABLE) from exc
    try:
        yield store
    except RolloutNotFoundError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(exitcodes.NOT_FOUND) from exc
    except StoreError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(exitcodes.STATE_UNAVAILABLE) from exc
    finally:
        store.close()
        close_client()


def _emit(data: Any, output: Output) -> None:
    if output is Output.json:
        typer.echo(json.dumps(data, indent=2))
    else:
        typer.echo(dump(data), nl=False)


@app.command()
def start(
    name: NameArg,
    policy: Annotated[
        Path, typer.Option("--policy", "-p", help="The policy file (YAML; '-' reads stdin).")
    ],
    state: StateOption = STATE_DEFAULT,
    namespace: NamespaceOption = None,
    kubeconfig: KubeconfigOption = None,
    context: ContextOption = None,
    actor: ActorOption = None,
    output: OutputOption = Output.table,
) -> None:
    """Record a new rollout of the policy's route; the controller starts moving it.

    The policy file is validated first (errors as file:line: field: message, exit 2), and its
    git commit recorded. Refused (exit 4) when an active rollout has this name or moves the same
    route.
    """
    label = "<stdin>" if str(policy) == "-" else str(policy)
    try:
        text = typer.get_text_stream("stdin").read() if str(policy) == "-" else policy.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        typer.echo(f"{label}: cannot read: {exc}", err=True)
        raise typer.Exit(exitcodes.INVALID_INPUT) from exc
    try:
        parsed = load_policy(text, label)
    except DocumentError as exc:
        for issue in exc.issues:
            typer.echo(str(issue), err=True)
        raise typer.Exit(exitcodes.INVALID_INPUT) from exc
    source = policy_source(policy, text)
    now = time.time()
    initial, event = start_state(parsed, now, _actor(actor))
    target = Target(state, namespace, kubeconfig, context)
    if not target.cluster and not state.exists():
        typer.echo(
            f"note: creating a new state file {state}: the rollout starts once `sluice serve "
            f"--state {state}` runs",
            err=True,
        )
    with _store(target, create=True) as store:
        try:
            created = store.create(name, parsed, source, initial, event)
        except (RolloutExistsError, RouteBusyError) as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(exitcodes.REFUSED) from exc
    if output is not Output.table:
        _emit(rollout_json(created, now), output)
        return
    if source.git_commit:
        origin = f"at {source.git_commit[:12]}"
        origin += " (the file differs from it)" if source.git_dirty else ""
    else:
        origin = "(not in git)"
    typer.echo(
        f"rollout {name} created (pending): route {parsed.spec.route}, "
        f"{parsed.spec.baseline.cluster} → {parsed.spec.candidate.cluster}, stages "
        + " → ".join(f"{s.weight:g}%" for s in parsed.spec.stages)
        + f"; policy {label} {origin}"
    )


@app.command("list")
def list_rollouts(
    state: StateOption = STATE_DEFAULT,
    namespace: NamespaceOption = None,
    kubeconfig: KubeconfigOption = None,
    context: ContextOption = None,
    output: OutputOption = Output.table,
    active: Annotated[bool, typer.Option(help="Only active rollouts.")] = False,
) -> None:
    """Every rollout: phase, stage, weights, age."""
    now = time.time()
    with _store(Target(state, namespace, kubeconfig, context)) as store:
        rollouts = store.list(active_only=active)
    rows = [rollout_json(r, now) for r in rollouts]
    if output is not Output.table:
        _emit({"rollouts": rows}, output)
        return
    table = Table()
    for column in ("name", "route", "phase", "stage", "candidate", "age", "reason"):
        table.add_column(column)
    for row in rows:
        table.add_row(
            row["name"],
            row["route"],
            row["phase"],
            f"{row['stage']}/{row['stages']}",
            f"{row['weights']['candidate']:g}%" + ("" if row["in_effect"] else " …"),
            _age(row["age_s"]),
            row["reason"],
        )
    Console().print(table)
    if not rows:
        typer.echo("no rollouts")


@app.command()
def status(
    name: NameArg,
    state: StateOption = STATE_DEFAULT,
    namespace: NamespaceOption = None,
    kubeconfig: KubeconfigOption = None,
    context: ContextOption = None,
    output: OutputOption = Output.table,
    watch: Annotated[
        bool,
        typer.Option(
            "--watch",
            "-w",
            help="Live view until the rollout ends; exit 0 when it succeeded, 1 otherwise.",
        ),
    ] = False,
    interval: Annotated[
        float, typer.Option(help="Seconds between refreshes (--watch).", min=0.05)
    ] = 0.5,
) -> None:
    """A rollout's stage, weights, bake time left, last verdict and recent history."""
    with _store(Target(state, namespace, kubeconfig, context)) as store:
        if not watch:
            rollout = store.get(name)
            events = store.history(name, limit=8)
            now = time.time()
            if output is not Output.table:
                data = rollout_json(rollout, now)
                data["history"] = [history_json(e) for e in events]
                _emit(data, output)
                return
            Console().print(status_view(rollout, events, now))
            return
        _watch(store, name, output, interval)


def _watch(store: RolloutStore, name: str, output: Output, interval: float) -> None:
    console = Console()
    rollout = store.get(name)
    if output is not Output.table:
        # One document per change, for scripts following a rollout: JSON lines, or a YAML
        # stream (each document after a ``---``).
        last = -1
        while True:
            rollout = store.get(name)
            if rollout.revision != last:
                last = rollout.revision
                data = rollout_json(rollout, time.time())
                if output is Output.json:
                    typer.echo(json.dumps(data))
                else:
                    typer.echo("---\n" + dump(data), nl=False)
            if rollout.state.terminal:
                break
            time.sleep(interval)
    else:
        with Live(console=console, refresh_per_second=4, transient=False) as live:
            while True:
                rollout = store.get(name)
                events = store.history(name, limit=8)
                live.update(
                    Group(
                        status_view(rollout, events, time.time()),
                        Text("watching; Ctrl-C to stop", style="dim"),
                    )
                )
                if rollout.state.terminal:
                    break
                time.sleep(interval)
    raise typer.Exit(exitcodes.OK if rollout.state.phase == "succeeded" else exitcodes.FAILED)


@app.command()
def history(
    name: NameArg,
    state: StateOption = STATE_DEFAULT,
    namespace: NamespaceOption = None,
    kubeconfig: KubeconfigOption = None,
    context: ContextOption = None,
    output: OutputOption = Output.table,
    limit: Annotated[int | None, typer.Option(help="Only the last N events.", min=1)] = None,
) -> None:
    """A rollout's history: every transition, who made it and why."""
    with _store(Target(state, namespace, kubeconfig, context)) as store:
        store.get(name)
        events = store.history(name, limit=limit)
    rows = [history_json(e) for e in events]
    if output is not Output.table:
        _emit({"name": name, "history": rows}, output)
        return
    table = Table()
    for column in ("#", "time (UTC)", "actor", "transition", "reason"):
        table.add_column(column)
    for row in rows:
        table.add_row(str(row["seq"]), row["time"], row["actor"], row["transition"], row["reason"])
    Console().print(table)


@app.command()
def report(
    name: NameArg,
    state: StateOption = STATE_DEFAULT,
    namespace: NamespaceOption = None,
    kubeconfig: KubeconfigOption = None,
    context: ContextOption = None,
    out: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="The HTML file to write (default: NAME-report.html)."),
    ] = None,
    parity_admin: Annotated[
        str | None,
        typer.Option(
            help="The comparator's admin API (http://host:port): include its parity mismatch "
            "samples for the rollout's route."
        ),
    ] = None,
) -> None:
    """Write a rollout's report: one self-contained HTML file (no network needed to view it)
    with its summary, the candidate's weight and every SLO over time with each verdict,
    every decision with its reason, and the parity mismatch samples. Prints the file's path."""
    # Imported here: plotly takes a while to import, and only this command needs it.
    from controller.report.collect import collect, write_report

    with _store(Target(state, namespace, kubeconfig, context)) as store:
        data = collect(store, name, parity_admin)
    path = out if out is not None else Path(f"{name}-report.html")
    try:
        write_report(data, path)
    except OSError as exc:
        typer.echo(f"error: cannot write the report to {path}: {exc}", err=True)
        raise typer.Exit(exitcodes.FAILED) from exc
    typer.echo(str(path))


def _command(
    kind: CommandKind, name: str, target: Target, reason: str, actor: str | None, output: Output
) -> None:
    with _store(target) as store:
        try:
            stored, decision = apply_input(
                store, name, Command(now=time.time(), kind=kind, actor=_actor(actor), reason=reason)
            )
        except RouteBusyError as exc:  # a retry while another rollout moves the route
            typer.echo(f"refused: {name}: {exc}", err=True)
            raise typer.Exit(exitcodes.REFUSED) from exc
    if decision.refused:
        typer.echo(f"refused: {name}: {decision.refused}", err=True)
        raise typer.Exit(exitcodes.REFUSED)
    if output is not Output.table:
        _emit(rollout_json(stored, time.time()), output)
        return
    typer.echo(f"{name}: {stored.state.phase}: {stored.state.reason}")


@app.command()
def pause(
    name: NameArg,
    state: StateOption = STATE_DEFAULT,
    namespace: NamespaceOption = None,
    kubeconfig: KubeconfigOption = None,
    context: ContextOption = None,
    reason: ReasonOption = "",
    actor: ActorOption = None,
    output: OutputOption = Output.table,
) -> None:
    """Hold the rollout where it is: the weights stay, nothing moves until resume."""
    _command("pause", name, Target(state, namespace, kubeconfig, context), reason, actor, output)


@app.command()
def resume(
    name: NameArg,
    state: StateOption = STATE_DEFAULT,
    namespace: NamespaceOption = None,
    kubeconfig: KubeconfigOption = None,
    context: ContextOption = None,
    reason: ReasonOption = "",
    actor: ActorOption = None,
    output: OutputOption = Output.table,
) -> None:
    """Continue a paused rollout; the current stage bakes again from now."""
    _command("resume", name, Target(state, namespace, kubeconfig, context), reason, actor, output)


@app.command()
def promote(
    name: NameArg,
    full: Annotated[
        bool, typer.Option("--full", help="Go straight to the last stage (100%).")
    ] = False,
    state: StateOption = STATE_DEFAULT,
    namespace: NamespaceOption = None,
    kubeconfig: KubeconfigOption = None,
    context: ContextOption = None,
    reason: ReasonOption = "",
    actor: ActorOption = None,
    output: OutputOption = Output.table,
) -> None:
    """Leave the current stage now, without waiting for its bake time or a verdict."""
    _command(
        "promote_full" if full else "promote",
        name,
        Target(state, namespace, kubeconfig, context),
        reason,
        actor,
        output,
    )


@app.command()
def abort(
    name: NameArg,
    state: StateOption = STATE_DEFAULT,
    namespace: NamespaceOption = None,
    kubeconfig: KubeconfigOption = None,
    context: ContextOption = None,
    reason: ReasonOption = "",
    actor: ActorOption = None,
    output: OutputOption = Output.table,
) -> None:
    """Send 0% to the candidate and stop (phase aborted once every Envoy ACKed)."""
    _command("abort", name, Target(state, namespace, kubeconfig, context), reason, actor, output)


@app.command()
def retry(
    name: NameArg,
    state: StateOption = STATE_DEFAULT,
    namespace: NamespaceOption = None,
    kubeconfig: KubeconfigOption = None,
    context: ContextOption = None,
    reason: ReasonOption = "",
    actor: ActorOption = None,
    output: OutputOption = Output.table,
) -> None:
    """Start a rolled back, aborted or failed rollout again from its first stage."""
    _command("retry", name, Target(state, namespace, kubeconfig, context), reason, actor, output)


def _age(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    return f"{seconds // 3600}h"
