"""``sluice parity``: run a standalone comparator, and show where a candidate's replies differ.

Exit codes: 0 done · 1 the comparator answered something unexpected · 2 invalid input (a file
failed validation, a policy without ``parity``, a bad address) · 3 the comparator's admin API
cannot be reached · 5 no route (or rollout) of that name is under comparison.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from controller.cli import exitcodes
from controller.cli.admin import ADMIN_DEFAULT, AdminOption, request
from controller.cli.files import read_gateway
from controller.cli.parityview import Output, render
from controller.policy.gateway import Gateway
from controller.policy.loading import load_policy
from controller.policy.source import DocumentError, Issue, issue_at, load_yaml
from controller.runtime.address import split_address

if TYPE_CHECKING:
    from controller.parity.comparator import RouteParity

app = typer.Typer(
    help="Tap-compare: the comparator of mirrored requests, and what it found.",
    no_args_is_help=True,
)

OutputOption = Annotated[Output, typer.Option("--output", "-o", help="table or json.")]


@app.command()
def serve(
    gateway: Annotated[
        Path,
        typer.Option(help="Gateway file (YAML): the clusters' endpoints.", metavar="FILE"),
    ],
    policy: Annotated[
        list[Path],
        typer.Option(
            help="Rollout policy file with a parity section (repeat: one per route).",
            metavar="FILE",
        ),
    ],
    listen: Annotated[
        str, typer.Option(help="host:port receiving Envoy's mirrored requests (port 0: any).")
    ] = "127.0.0.1:18002",
    admin: Annotated[
        str, typer.Option(help="host:port of the admin API: /metrics, /v1/parity/routes.")
    ] = "127.0.0.1:18003",
    max_in_flight: Annotated[
        int, typer.Option(min=1, help="Comparisons under way at most; beyond, dropped.")
    ] = 256,
    max_body_bytes: Annotated[
        int,
        typer.Option(
            min=1,
            help="A reply body's limit in bytes, as received and decoded; over it: no reply.",
        ),
    ] = 4 * 1024 * 1024,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
) -> None:
    """Compare the routes of the given policies: Envoy mirrors to --listen, Prometheus scrapes
    --admin's /metrics.

    Prints one JSON line when ready (``{"event": "ready", "listen": "host:port", "admin":
    "host:port", "routes": [...]}``); stops on SIGINT/SIGTERM.
    """
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    addresses = []
    for address in (listen, admin):
        try:
            addresses.append(split_address(address))
        except ValueError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(exitcodes.INVALID_INPUT) from exc
    gw = read_gateway(gateway)
    routes: list[RouteParity] = []
    failed = False
    for path in policy:
        try:
            routes.append(_route(path, gw))
        except DocumentError as exc:
            failed = True
            for issue in exc.issues:
                typer.echo(str(issue), err=True)
    if failed:
        raise typer.Exit(exitcodes.INVALID_INPUT)
    (listen_host, listen_port), (admin_host, admin_port) = addresses
    try:
        asyncio.run(
            _serve(
                gw,
                routes,
                (listen_host, listen_port),
                (admin_host, admin_port),
                max_in_flight,
                max_body_bytes,
            )
        )
    except (OSError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(exitcodes.INVALID_INPUT) from exc


def _route(path: Path, gateway: Gateway) -> RouteParity:
    """A policy file's route under comparison.

    Raises:
        DocumentError: the file is unreadable, invalid, does not fit the gateway, or has no
            ``spec.parity``.
    """
    from controller.parity.comparator import RouteParity

    name = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DocumentError([Issue(name, None, "", f"cannot read: {exc}")]) from exc
    parsed = load_policy(text, name, gateway)
    parity = parsed.spec.parity
    if parity is None:
        _, lines = load_yaml(text, name)
        raise DocumentError(
            [issue_at(name, lines, ("spec",), "no parity section: nothing to compare")]
        )
    return RouteParity(
        route=parsed.spec.route,
        policy=parity,
        baseline=parsed.spec.baseline.cluster,
        candidate=parsed.spec.candidate.cluster,
    )


async def _serve(
    gateway: Gateway,
    routes: list[RouteParity],
    listen: tuple[str, int],
    admin: tuple[str, int],
    max_in_flight: int,
    max_body_bytes: int,
) -> None:
    from controller.parity.comparator import Comparator

    (listen_host, listen_port), (admin_host, admin_port) = listen, admin
    comparator = Comparator(gateway, max_in_flight=max_in_flight, max_body_bytes=max_body_bytes)
    comparator.configure(routes)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await comparator.start(listen_host, listen_port)
        await comparator.start_admin(admin_host, admin_port)
        print(
            json.dumps(
                {
                    "event": "ready",
                    "listen": f"{listen_host}:{comparator.port}",
                    "admin": f"{admin_host}:{comparator.admin_port}",
                    "routes": comparator.routes(),
                }
            ),
            flush=True,
        )
        await stop.wait()
    finally:
        await comparator.stop()
        print(json.dumps({"event": "stopped"}), file=sys.stderr, flush=True)


@app.command()
def diff(
    name: Annotated[
        str, typer.Argument(help="A route under comparison, or a rollout's name.", metavar="NAME")
    ],
    admin: AdminOption = ADMIN_DEFAULT,
    output: OutputOption = Output.table,
    state: Annotated[
        Path,
        typer.Option(
            envvar="SLUICE_STATE",
            help="The controller's state file: maps a rollout's name to its route.",
        ),
    ] = Path(".sluice/state.db"),
) -> None:
    """Where the candidate's replies differ from the baseline's on route NAME: per field path,
    mismatched and noisy requests and their share of the compared ones, and the newest example
    of each (the request, both replies, a diff of their JSON bodies)."""
    base = admin.rstrip("/")
    response = request("GET", f"{base}/v1/parity/routes/{name}")
    if response.status_code == 404:
        route = _rollout_route(name, state)
        if route is not None and route != name:
            response = request("GET", f"{base}/v1/parity/routes/{route}")
    if response.status_code == 404:
        typer.echo(f"error: {response.json().get('error', response.text)}", err=True)
        raise typer.Exit(exitcodes.NOT_FOUND)
    if response.status_code != 200:
        typer.echo(f"error: the comparator answered HTTP {response.status_code}", err=True)
        raise typer.Exit(exitcodes.FAILED)
    data = response.json()
    if output is Output.json:
        typer.echo(json.dumps(data, indent=2))
        return
    render(data)


def _rollout_route(name: str, state: Path) -> str | None:
    """The route of rollout ``name`` in the state file, or None (no file, no such rollout)."""
    if not state.exists():
        return None
    from controller.store.rollouts import StoreError
    from controller.store.sqlite_rollouts import SqliteRolloutStore

    try:
        store = SqliteRolloutStore(state)
    except (StoreError, OSError):
        return None
    try:
        return store.get(name).policy.spec.route
    except StoreError:
        return None
    finally:
        store.close()
