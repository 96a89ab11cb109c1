"""The ``sluice`` command: one typer app, one module per command group.

Exit codes (stable, for scripts):
    0  success
    1  the operation ran and reported a failure (e.g. a weight change NACKed or timed out)
    2  invalid input (a file failed validation, a bad argument)
    3  the controller could not be reached
    4  refused: not allowed in the rollout's phase, the route is busy, the name is taken
    5  no rollout has that name
    6  the state file cannot be opened
"""

from __future__ import annotations

import typer

from controller.cli import demo, gateway, k8s, parity, policy, rollout, serve, xds

app = typer.Typer(
    name="sluice",
    help="Progressive traffic shifting for Envoy: xDS control plane and rollout controller.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(gateway.app, name="gateway")
app.add_typer(k8s.app, name="k8s")
app.add_typer(parity.app, name="parity")
app.add_typer(policy.app, name="policy")
app.add_typer(rollout.app, name="rollout")
app.add_typer(xds.app, name="xds")
app.command("serve")(serve.serve)
app.command("demo")(demo.demo)


def main() -> None:
    """Console entry point (``sluice``)."""
    app()
