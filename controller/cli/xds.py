"""``sluice xds``: what the connected Envoys hold, and the low-level weight primitive."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from controller.cli import exitcodes
from controller.cli.admin import ADMIN_DEFAULT, AdminOption, request
from controller.policy.units import parse_duration

if TYPE_CHECKING:
    import httpx

app = typer.Typer(help="Inspect and drive the xDS server.", no_args_is_help=True)


class Output(StrEnum):
    """Output formats."""

    table = "table"
    json = "json"


OutputOption = Annotated[Output, typer.Option("--output", "-o", help="table or json.")]


def _clock_time(at: float | None) -> str:
    if at is None:
        return "-"
    return datetime.fromtimestamp(at, UTC).strftime("%H:%M:%S")


@app.command()
def status(admin: AdminOption = ADMIN_DEFAULT, output: OutputOption = Output.table) -> None:
    """Connected nodes, the version each ACKed per type, and the last NACK with its message."""
    data = request("GET", f"{admin.rstrip('/')}/v1/xds/status").json()
    if output is Output.json:
        typer.echo(json.dumps(data, indent=2))
        return
    console = Console()
    versions = data["versions"]
    console.print(
        "served: " + "  ".join(f"{t} [bold]{v}[/bold]" for t, v in versions.items()),
        highlight=False,
    )
    table = Table(show_lines=False)
    for column in ("node", "cluster", "proto", "conn", *versions.keys(), "last NACK"):
        table.add_column(column)
    for node in data["nodes"]:
        cells = []
        nack_lines = []
        for short, served in versions.items():
            ts = node["types"].get(short)
            if ts is None:
                cells.append("-")
                continue
            acked = ts["acked_version"]
            mark = "✓" if acked == served else "…"
            cells.append(f"{acked or '-'} {mark}")
            nack = ts["last_nack"]
            if nack is not None:
                nack_lines.append(
                    f"{short} {nack['version']} at {_clock_time(nack['at'])}: {nack['message']}"
                )
        table.add_row(
            node["node_id"],
            node["cluster"] or "-",
            node["protocol"],
            ("yes" if node["streams"] == 1 else f"yes ({node['streams']} streams)")
            if node["connected"]
            else "no",
            *cells,
            "\n".join(nack_lines) or "-",
        )
    console.print(table)
    if not data["nodes"]:
        console.print("no node has connected yet")


def _parse_weights(pairs: list[str]) -> dict[str, int]:
    weights: dict[str, int] = {}
    for pair in pairs:
        cluster, sep, value = pair.partition("=")
        if not sep or not cluster or not value.isdigit():
            typer.echo(f"error: {pair!r} is not CLUSTER=WEIGHT (a whole number)", err=True)
            raise typer.Exit(exitcodes.INVALID_INPUT)
        weights[cluster] = int(value)
    return weights


def _timeout_s(timeout: str) -> float:
    """``--timeout`` in seconds; exit 2 when it is not a duration such as ``10s``."""
    try:
        return parse_duration(timeout).total_seconds()
    except ValueError as exc:
        typer.echo(f"error: --timeout: {exc}", err=True)
        raise typer.Exit(exitcodes.INVALID_INPUT) from exc


def _change_result(response: httpx.Response) -> dict[str, Any]:
    """The body of a weight change's answer; exit 2 on bad input, 4 when refused (an active
    rollout moves the route), 1 when nothing was done."""
    data: dict[str, Any] = response.json()
    if response.status_code in (400, 404):
        typer.echo(f"error: {data['error']}", err=True)
        raise typer.Exit(exitcodes.INVALID_INPUT)
    if response.status_code == 409 and "outcome" not in data:  # a NACK carries an outcome
        typer.echo(f"error: {data['error']}", err=True)
        raise typer.Exit(exitcodes.REFUSED)
    if "outcome" not in data:
        typer.echo(f"error: {data.get('error', response.text)}", err=True)
        raise typer.Exit(exitcodes.FAILED)
    return data


@app.command("set-weights")
def set_weights(
    route: Annotated[str, typer.Argument(help="Route name from the gateway file.")],
    weights: Annotated[list[str], typer.Argument(help="CLUSTER=WEIGHT pairs, e.g. a=90 b=10.")],
    node: Annotated[
        list[str] | None,
        typer.Option("--node", help="Node id that must ACK (repeatable). Default: all connected."),
    ] = None,
    timeout: Annotated[str, typer.Option(help="How long to wait for the ACKs.")] = "10s",
    admin: AdminOption = ADMIN_DEFAULT,
    output: OutputOption = Output.table,
) -> None:
    """Set a route's weighted_clusters and wait until the nodes ACK the new version.

    Exit 0 when every node ACKed; 1 on NACK, timeout or no connected node; 2 on bad input;
    4 when an active rollout moves the route (pause or abort it instead).
    """
    parsed = _parse_weights(weights)
    timeout_s = _timeout_s(timeout)
    body = {"weights": parsed, "nodes": node or None, "timeout_s": timeout_s}
    response = request(
        "PUT",
        f"{admin.rstrip('/')}/v1/routes/{route}/weights",
        timeout_s=timeout_s + 5,
        json=body,
    )
    data = _change_result(response)
    if output is Output.json:
        typer.echo(json.dumps(data, indent=2))
    else:
        typer.echo(
            f"{data['route']}: {data['weights']} → RDS {data['version']}: {data['outcome']}"
            f" in {data['elapsed_ms']} ms (acked {len(data['acked'])}, nacked"
            f" {len(data['nacked'])}, pending {len(data['pending'])})"
        )
        for node_id, message in data["nacked"].items():
            typer.echo(f"  NACK from {node_id}: {message}")
        for node_id in data["pending"]:
            typer.echo(f"  no answer from {node_id}")
    if data.get("reverted"):
        typer.echo("  the previous weights are served again (the last good configuration)")
    if data["outcome"] != "acked":
        raise typer.Exit(exitcodes.FAILED)


@app.command("reset-weights")
def reset_weights(
    route: Annotated[str, typer.Argument(help="Route name from the gateway file.")],
    timeout: Annotated[str, typer.Option(help="How long to wait for the ACKs.")] = "10s",
    admin: AdminOption = ADMIN_DEFAULT,
) -> None:
    """Drop a route's weight override: serve the gateway file's weights again, wait for ACKs.

    Exit 0 when every node ACKed; 1 on NACK, timeout or no connected node; 2 on bad input;
    4 when an active rollout moves the route.
    """
    timeout_s = _timeout_s(timeout)
    response = request(
        "DELETE",
        f"{admin.rstrip('/')}/v1/routes/{route}/weights",
        timeout_s=timeout_s + 5,
        params={"timeout_s": timeout_s},
    )
    data = _change_result(response)
    typer.echo(
        f"{route}: gateway weights {data['weights']} → RDS {data['version']}: {data['outcome']}"
        f" in {data['elapsed_ms']} ms"
    )
    if data["outcome"] != "acked":
        raise typer.Exit(exitcodes.FAILED)


@app.command()
def bootstrap(
    node_id: Annotated[str, typer.Option(help="node.id of the Envoy.")] = "gateway-0",
    node_cluster: Annotated[str, typer.Option(help="node.cluster of the Envoy.")] = "gateway",
    xds: Annotated[str, typer.Option(help="host:port of `sluice serve`'s xDS server.")] = (
        "127.0.0.1:18000"
    ),
    admin_port: Annotated[int, typer.Option(help="Envoy admin port (0: any).")] = 9901,
    delta: Annotated[bool, typer.Option(help="Use Delta ADS instead of SotW.")] = False,
) -> None:
    """Print an Envoy bootstrap (YAML) that takes all its configuration from Sluice over ADS."""
    from controller.cli.yamlout import dump
    from controller.runtime.address import split_address
    from controller.xds.bootstrap import envoy_bootstrap

    try:
        host, port = split_address(xds)
    except ValueError as exc:
        typer.echo(f"error: --xds: {exc}", err=True)
        raise typer.Exit(exitcodes.INVALID_INPUT) from exc
    doc = envoy_bootstrap(
        node_id=node_id,
        node_cluster=node_cluster,
        xds_host=host,
        xds_port=port,
        admin_port=admin_port,
        api_type="DELTA_GRPC" if delta else "GRPC",
    )
    typer.echo(dump(doc))
