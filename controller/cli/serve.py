"""``sluice serve``: run the controller (xDS server, admin API, persisted weights)."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from controller.cli import exitcodes
from controller.cli.files import read_gateway

if TYPE_CHECKING:
    from controller.rollout.notifications import NotifyFormat
    from controller.runtime.controller import KubernetesMode

KUBERNETES_POLL_S = 1.0
"""How often, in seconds, a ``--kubernetes`` replica reads the store and checks its fence."""

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
    kubernetes: Annotated[
        bool,
        typer.Option(
            "--kubernetes",
            envvar="SLUICE_KUBERNETES",
            help="Keep the rollouts in Rollout objects (rollouts.sluice.dev) and compete for "
            "the Lease with the other replicas: the holder drives the rollouts, every replica "
            "serves xDS. Implied by --namespace, --kubeconfig or --context.",
        ),
    ] = False,
    namespace: Annotated[
        str | None,
        typer.Option(
            "--namespace",
            "-n",
            envvar="SLUICE_NAMESPACE",
            help="Namespace of the Rollouts and the Lease (default: the pod's, else the "
            "kubeconfig context's, else default).",
        ),
    ] = None,
    kubeconfig: Annotated[
        Path | None,
        typer.Option(
            help="kubeconfig file (default: in-cluster, else $KUBECONFIG or ~/.kube/config)."
        ),
    ] = None,
    context: Annotated[str | None, typer.Option(help="kubeconfig context.")] = None,
    identity: Annotated[
        str | None,
        typer.Option(
            envvar="POD_NAME",
            help="This replica's name in the Lease (default: hostname and process id).",
        ),
    ] = None,
    lease_duration: Annotated[
        str, typer.Option(help="How long a leader's Lease lasts without renewal.")
    ] = "15s",
    renew_deadline: Annotated[
        str, typer.Option(help="How long a leader retries renewing before it stops leading.")
    ] = "10s",
    retry_period: Annotated[
        str, typer.Option(help="Time between two attempts to acquire or renew the Lease.")
    ] = "2s",
    notify: Annotated[
        list[str] | None,
        typer.Option(
            envvar="SLUICE_NOTIFY",
            help="POST rollout events (stage started, stage passed, rollback, promotion) to "
            "this webhook URL (repeat per URL; SLUICE_NOTIFY: URLs separated by spaces). A "
            "Slack webhook URL is a secret: pass it in the environment, not in a policy.",
        ),
    ] = None,
    notify_format: Annotated[
        str,
        typer.Option(help='Webhook payload: json (one object per event) or slack ({"text": ...}).'),
    ] = "json",
) -> None:
    """Serve Envoy its configuration over ADS (SotW and Delta) and keep weights durable.

    Prints one JSON line with the bound addresses when ready; SIGHUP re-reads the gateway file
    (a file that fails validation changes nothing); stops on SIGINT/SIGTERM.

    With --kubernetes, several replicas share the rollouts: one leads (drives them), the others
    serve the same weights, and one takes over when the leader goes.
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
    fmt = _check_notify(notify or [], notify_format)
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
    mode = None
    if kubernetes or namespace or kubeconfig or context:
        mode = _kubernetes_mode(
            namespace, kubeconfig, context, identity, lease_duration, renew_deadline, retry_period
        )
    config = ServeConfig(
        gw,
        gateway,
        xds_address,
        admin_address,
        state,
        # Each poll is an API request per rollout: once a second, not four times.
        poll_s=0.25 if mode is None else KUBERNETES_POLL_S,
        metrics=metrics,
        parity_address=parity_address,
        kubernetes=mode,
        notify=tuple(notify or ()),
        notify_format=fmt,
    )
    try:
        asyncio.run(run(config))
    except StartupError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(exitcodes.INVALID_INPUT) from exc


def _check_notify(urls: list[str], fmt: str) -> NotifyFormat:
    """The --notify-format checked; exit 2 on an unknown one or a --notify URL that is not
    http(s)."""
    from controller.rollout.notifications import FORMATS
    from controller.runtime.notify import check_url

    known = next((f for f in FORMATS if f == fmt), None)
    if known is None:
        typer.echo(f"error: --notify-format must be one of {', '.join(FORMATS)}", err=True)
        raise typer.Exit(exitcodes.INVALID_INPUT)
    for url in urls:
        try:
            check_url(url)
        except ValueError as exc:
            typer.echo(f"error: --notify: {exc}", err=True)
            raise typer.Exit(exitcodes.INVALID_INPUT) from exc
    return known


def _kubernetes_mode(
    namespace: str | None,
    kubeconfig: Path | None,
    context: str | None,
    identity: str | None,
    lease_duration: str,
    renew_deadline: str,
    retry_period: str,
) -> KubernetesMode:
    """The options of ``--kubernetes`` checked; exit 2 naming the bad one."""
    from controller.k8s.client import ClusterError, namespace_default
    from controller.k8s.lease import LeaseConfig
    from controller.policy.units import parse_duration
    from controller.runtime.controller import KubernetesMode
    from controller.runtime.fencing import fence_max_age_s

    try:
        ns = namespace or namespace_default(kubeconfig, context)
    except ClusterError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(exitcodes.INVALID_INPUT) from exc
    seconds: dict[str, float] = {}
    for option, text in (
        ("--lease-duration", lease_duration),
        ("--renew-deadline", renew_deadline),
        ("--retry-period", retry_period),
    ):
        try:
            seconds[option] = parse_duration(text).total_seconds()
        except ValueError as exc:
            typer.echo(f"error: {option}: {exc}", err=True)
            raise typer.Exit(exitcodes.INVALID_INPUT) from exc
    try:
        lease = LeaseConfig(
            identity=identity or f"{socket.gethostname()}-{os.getpid()}",
            namespace=ns,
            lease_duration_s=seconds["--lease-duration"],
            renew_deadline_s=seconds["--renew-deadline"],
            retry_period_s=seconds["--retry-period"],
        )
        # A replica cut off from the API must be able to fence itself before the leader stops
        # counting it (checked every second in this mode).
        fence_max_age_s(lease.renew_deadline_s, lease.lease_duration_s, KUBERNETES_POLL_S)
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(exitcodes.INVALID_INPUT) from exc
    return KubernetesMode(namespace=ns, kubeconfig=kubeconfig, context=context, lease=lease)
