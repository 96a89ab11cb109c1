"""``sluice gateway``: work with gateway files (listeners, routes, clusters)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from controller.cli import exitcodes
from controller.cli.admin import ADMIN_DEFAULT, AdminOption, request
from controller.policy.source import DocumentError, Issue
from controller.runtime.gatewayfile import load_gateway_file

app = typer.Typer(
    help="Gateway files: listeners, virtual hosts, routes and clusters served to Envoy.",
    no_args_is_help=True,
)


@app.command()
def reload(admin: AdminOption = ADMIN_DEFAULT) -> None:
    """Make the running controller re-read its gateway file (like SIGHUP).

    A file that fails validation, or that no longer fits the served weights, changes nothing.
    Exit code: 0 reloaded, 1 refused (the reason is printed), 3 controller unreachable.
    """
    response = request("POST", f"{admin.rstrip('/')}/v1/gateway/reload")
    data = response.json()
    if not data.get("reloaded"):
        typer.echo(f"reload refused, still serving the previous gateway: {data['error']}", err=True)
        raise typer.Exit(exitcodes.FAILED)
    typer.echo(f"reloaded gateway {data['name']} from {data['source']}")


@app.command()
def validate(
    files: Annotated[
        list[Path],
        typer.Argument(help="Gateway files to check ('-' reads standard input).", metavar="FILE"),
    ],
) -> None:
    """Check gateway files: YAML syntax, fields, and cross-references (names, clusters).

    Prints "OK FILE" per valid file, and every problem on stderr as "file:line: field: message".

    Exit code: 0 when every file is valid, 2 otherwise.
    """
    failed = False
    for path in files:
        name = "<stdin>" if str(path) == "-" else str(path)
        issues = _check(path, name)
        if issues:
            failed = True
            for issue in issues:
                typer.echo(str(issue), err=True)
        else:
            typer.echo(f"OK {name}")
    raise typer.Exit(exitcodes.INVALID_INPUT if failed else exitcodes.OK)


def _check(path: Path, name: str) -> tuple[Issue, ...]:
    """The problems of one file (reading it included); empty when it is a sound gateway."""
    try:
        load_gateway_file(path, name)
    except DocumentError as exc:
        return exc.issues
    return ()
