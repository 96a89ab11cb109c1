"""``sluice serve``: run the controller (xDS server, admin API, persisted weights)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Annotated

import typer

from controller.cli import exitcodes
from controller.cli.files import read_gateway

DEFAULT_XDS = "127.0.0.1:18000"
DEFAULT_ADMIN = "127.0.0.1:18001"


def serve(
    gateway: Annotated[
        Path | None,
        typer.Option(help="Gateway file (YAML). Default: the embedded demo gateway."),
    ] = None,
    xds_address: Annotated[
        str, typer.Option(help="host:port of the ADS gRPC server (port 0: any).")
    ] = DEFAULT_XDS,
    admin_address: Annotated[
        str, typer.Option(help="host:port of the admin HTTP API (port 0: any).")
    ] = DEFAULT_ADMIN,
    state: Annotated[
        Path,
        typer.Option(
            envvar="SLUICE_STATE",
            help="SQLite file keeping the served weights and the rollouts across restarts.",
        ),
    ] = Path(".sluice/state.db"),
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
    prometheus_url: Annotated[
        str | None,
        typer.Option(
            envvar="SLUICE_PROMETHEUS_URL",
            help="Judge stages from this Prometheus (scraping the Envoys' /stats/prometheus).",
        ),
    ] = None,
    envoy_admin: Annotated[
        list[str] | None,
        typer.Option(
            help="Judge stages from these Envoys' admin /stats/prometheus (repeat per Envoy; "
            "not with --prometheus-url).",
        ),
    ] = None,
    scrape_interval: Annotated[
        str, typer.Option(help="How often --envoy-admin Envoys are scraped (e.g. 1s).")
    ] = "1s",
    parity_address: Annotated[
        str | None,
        typer.Option(
            help="host:port of an in-process comparator receiving Envoy's mirrored requests "
            "(the policies' parity.comparator cluster points there); its tallies judge parity "
            "SLOs. Default: none (run `sluice parity serve` and judge through Prometheus).",
        ),
    ] = None,
) -> None:
    """Serve Envoy its configuration over ADS (SotW and Delta) and keep weights durable.

    Prints one JSON line with the bound addresses when ready; SIGHUP re-reads the gateway file
    (a file that fails validation changes nothing); stops on SIGINT/SIGTERM.
    """
    # Imported here: the xDS stack takes ~1 s to import, which other commands should not pay.
    from controller.runtime.address import split_address
    from controller.runtime.controller import ServeConfig, StartupError, run

    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    for address in (xds_address, admin_address, *([parity_address] if parity_address else [])):
        try:
            split_address(address)
        except ValueError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(exitcodes.INVALID_INPUT) from exc
    if prometheus_url and envoy_admin:
        typer.echo(
            "error: --prometheus-url (or SLUICE_PROMETHEUS_URL) and --envoy-admin name two "
            "metrics providers; give one",
            err=True,
        )
        raise typer.Exit(exitcodes.INVALID_INPUT)
    gw = read_gateway(gateway)
    metrics: tuple[str, dict[str, str]] | None = None
    if prometheus_url:
        metrics = ("prometheus", {"url": prometheus_url})
    elif envoy_admin:
        metrics = (
            "envoy_admin",
            {"urls": ",".join(envoy_admin), "scrape_interval": scrape_interval},
        )
    config = ServeConfig(
        gw,
        gateway,
        xds_address,
        admin_address,
        state,
        metrics=metrics,
        parity_address=parity_address,
    )
    try:
        asyncio.run(run(config))
    except StartupError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(exitcodes.INVALID_INPUT) from exc
