"""``sluice k8s``: Kubernetes artefacts generated from Sluice's models."""

from __future__ import annotations

import typer

app = typer.Typer(
    help="Kubernetes: the Rollout custom resource definition (rollouts.sluice.dev).",
    no_args_is_help=True,
)


@app.callback()
def _group() -> None:
    """Kubernetes: the Rollout custom resource definition (rollouts.sluice.dev)."""


@app.command()
def crd() -> None:
    """Print the CustomResourceDefinition of Rollout (YAML), its spec schema generated from the
    policy model: `sluice k8s crd > deploy/crd.yaml` after a change of the policy model."""
    from controller.k8s.crd import crd_yaml

    typer.echo(crd_yaml(), nl=False)
