"""Reading configuration files for commands: errors go to stderr with file and line, exit 2."""

from __future__ import annotations

from pathlib import Path

import typer

from controller.cli import exitcodes
from controller.policy.defaults import default_gateway_text
from controller.policy.gateway import Gateway
from controller.policy.loading import load_gateway
from controller.policy.source import DocumentError


def read_gateway(path: Path | None) -> Gateway:
    """Load and check a gateway file (the embedded default when ``path`` is None).

    Raises:
        typer.Exit: with code 2 after printing every issue, when the file is unreadable or
            invalid.
    """
    if path is None:
        text, name = default_gateway_text(), "<embedded default gateway>"
    else:
        try:
            text, name = path.read_text(encoding="utf-8"), str(path)
        except OSError as exc:
            typer.echo(f"{path}: cannot read: {exc.strerror or exc}", err=True)
            raise typer.Exit(exitcodes.INVALID_INPUT) from exc
        except UnicodeDecodeError as exc:
            typer.echo(f"{path}: not UTF-8 text: {exc.reason} at byte {exc.start}", err=True)
            raise typer.Exit(exitcodes.INVALID_INPUT) from exc
    try:
        return load_gateway(text, name)
    except DocumentError as exc:
        for issue in exc.issues:
            typer.echo(str(issue), err=True)
        raise typer.Exit(exitcodes.INVALID_INPUT) from exc
