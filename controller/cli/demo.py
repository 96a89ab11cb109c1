"""``sluice demo``: a real rollout on this machine, in one command."""

from __future__ import annotations

import json
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer
from rich.console import Console, RenderableType
from rich.live import Live

from controller.cli import exitcodes

if TYPE_CHECKING:
    from controller.demo.outcome import DemoOptions, DemoOutcome, DemoProgress
    from controller.demo.run import Demo
    from controller.store.rollouts import HistoryEvent


class Scenario(StrEnum):
    """The demo's scenarios (:mod:`controller.demo.scenarios`)."""

    healthy = "healthy"
    latency = "latency"
    errors = "errors"
    parity = "parity"


class Provider(StrEnum):
    """Where the demo's verdicts come from."""

    auto = "auto"
    prometheus = "prometheus"
    envoy_admin = "envoy_admin"


class DemoOutput(StrEnum):
    """Output formats of ``sluice demo``."""

    table = "table"
    json = "json"


def _sigterm(signum: int, frame: object) -> NoReturn:
    # Stop as on Ctrl-C: the demo's finally stops every child.
    raise KeyboardInterrupt


def demo(
    scenario: Annotated[
        Scenario,
        typer.Option(
            help="healthy (ends promoted), latency, errors or parity (each ends rolled back "
            "for its own reason)."
        ),
    ] = Scenario.healthy,
    provider: Annotated[
        Provider,
        typer.Option(
            help="Where verdicts come from: prometheus, envoy_admin (the controller scrapes "
            "Envoy itself) or auto (Prometheus when on PATH)."
        ),
    ] = Provider.auto,
    rate: Annotated[
        float, typer.Option(min=10.0, help="Requests per second sent through Envoy.")
    ] = 250.0,
    workdir: Annotated[
        Path | None,
        typer.Option(
            help="Where logs, configuration, state and the report go (default: a new "
            "temporary directory, kept)."
        ),
    ] = None,
    report: Annotated[
        Path | None,
        typer.Option(help="The report's path (default: comments-report.html in --workdir)."),
    ] = None,
    timeout: Annotated[
        float, typer.Option(min=10.0, help="Seconds the rollout may take before the demo gives up.")
    ] = 300.0,
    output: Annotated[
        DemoOutput,
        typer.Option(
            "--output",
            "-o",
            help="table (a live view) or json (one JSON document with the outcome at the end; "
            "decisions on stderr).",
        ),
    ] = DemoOutput.table,
) -> None:
    """Run a real rollout on loopback: the controller, a real Envoy, a sample baseline and
    candidate (a comments JSON API), the comparator, Prometheus when on PATH, and steady
    traffic; the route moves 0% (shadow) → 25% → 50% → 100%, judged every second on p99
    latency, error rate and parity. Writes the rollout's report at the end and stops
    everything it started, also on Ctrl-C.

    Exit 0 when the rollout ended as the scenario expects, 1 otherwise or when a part could
    not start, 2 when --provider prometheus finds no Prometheus, 130 on Ctrl-C or SIGTERM.
    """
    # Imported here: the demo's parts (aiohttp's client among them) would slow every command.
    from controller.demo.outcome import DemoOptions

    options = DemoOptions(
        scenario=scenario.value,
        provider=provider.value,
        rate=rate,
        workdir=workdir,
        report=report,
        timeout_s=timeout,
    )
    signal.signal(signal.SIGTERM, _sigterm)
    if output is DemoOutput.json:
        _run_json(options)
    else:
        _run_live(options)


def _run_json(options: DemoOptions) -> None:
    from controller.cli.demoview import error_json, event_line, outcome_json

    err = Console(stderr=True, highlight=False, soft_wrap=True)

    def on_event(event: HistoryEvent) -> None:
        err.print(event_line(event), markup=False)

    demo_run = _demo(options, err, on_event=on_event)

    def on_error(message: str) -> None:  # scripts still get one JSON document
        typer.echo(json.dumps(error_json(demo_run.progress, message), indent=2))

    outcome = _run(demo_run, err, on_error)
    typer.echo(json.dumps(outcome_json(outcome), indent=2))
    raise typer.Exit(exitcodes.OK if outcome.as_expected else exitcodes.FAILED)


def _run_live(options: DemoOptions) -> None:
    from controller.cli.demoview import event_line, live_view, outcome_view

    console = Console(highlight=False)
    screen: list[Live] = []  # set once the Live display runs

    def on_progress(progress: DemoProgress) -> None:
        for live in screen:
            live.update(live_view(progress))

    def on_event(event: HistoryEvent) -> None:
        console.print(event_line(event), markup=False)

    demo_run = _demo(options, console, on_progress=on_progress, on_event=on_event)
    with live_display(console, live_view(demo_run.progress)) as live:
        screen.append(live)
        outcome = _run(demo_run, console)
    console.print(outcome_view(outcome))
    raise typer.Exit(exitcodes.OK if outcome.as_expected else exitcodes.FAILED)


@contextmanager
def live_display(console: Console, renderable: RenderableType) -> Iterator[Live]:
    """A :class:`rich.live.Live` of ``renderable`` on ``console`` whose last frame ends its
    line also when the console is not a terminal (output piped or sent to a file): rich ends
    it only on a terminal (Textualize/rich#4192), so the next line printed was glued to it."""
    try:
        with Live(renderable, console=console, refresh_per_second=4) as live:
            yield live
    finally:  # also before an error's or an interruption's message
        if not console.is_terminal:
            console.line()


def _demo(
    options: DemoOptions,
    console: Console,
    on_progress: Callable[[DemoProgress], None] = lambda _: None,
    on_event: Callable[[HistoryEvent], None] = lambda _: None,
) -> Demo:
    from controller.demo.run import Demo, DemoError

    try:
        return Demo(options, on_progress=on_progress, on_event=on_event)
    except DemoError as exc:
        console.print(f"error: {exc}", markup=False, style="red")
        raise typer.Exit(exitcodes.INVALID_INPUT) from exc


def _run(
    demo_run: Demo, console: Console, on_error: Callable[[str], None] = lambda _: None
) -> DemoOutcome:
    from controller.demo.run import DemoError

    try:
        return demo_run.run()
    except DemoError as exc:
        console.print(f"error: {exc}", markup=False, style="red")
        on_error(str(exc))
        raise typer.Exit(exitcodes.FAILED) from exc
    except KeyboardInterrupt:
        console.print(f"interrupted: everything stopped; logs in {demo_run.workdir}")
        sys.exit(130)
