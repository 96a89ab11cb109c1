"""Reading configuration files for commands: errors go to stderr with file and line, exit 2."""

from __future__ import annotations

from pathlib import Path

import typer

from controller.cli import exitcodes
from controller.policy.defaults import default_gateway_text
from controller.policy.gateway import Gateway
from controller.policy.loading import load_gateway
from controller.policy.source import DocumentError
from controller.runtime.gatewayfile import load_gateway_file


def read_gateway(path: Path | None) -> Gateway:
    """Load and check a gateway file (the embedded default when ``path`` is None).

    Raises:
        typer.Exit: with code 2 after printing every issue, when the file is unreadable or
            invalid.
    """
    try:
        if path is None:
            return load_gateway(default_gateway_text(), "<embedded default gateway>")
        return load_gateway_file(path)
    except DocumentError as exc:
        for issue in exc.issues:
            typer.echo(str(issue), err=True)
        raise typer.Exit(exitcodes.INVALID_INPUT) from exc
