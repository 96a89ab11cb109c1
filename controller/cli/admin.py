"""Talking to a running controller's admin API from the CLI."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from controller.cli import exitcodes

if TYPE_CHECKING:
    import httpx

ADMIN_DEFAULT = "http://127.0.0.1:18001"
AdminOption = Annotated[
    str,
    typer.Option("--admin", envvar="SLUICE_ADMIN", help="Admin API URL of `sluice serve`."),
]


def request(method: str, url: str, timeout_s: float = 10.0, **kwargs: Any) -> httpx.Response:
    """One HTTP request to the controller.

    Raises:
        typer.Exit: with code 3 when the controller cannot be reached, 1 when it answers with
            something other than JSON (an internal error).
    """
    # Imported here: httpx (with its command-line entry point) costs every CLI command
    # ~0.14 s at start-up, and only the commands that talk to a controller need it.
    import httpx

    try:
        response = httpx.request(method, url, timeout=timeout_s, **kwargs)
    except httpx.HTTPError as exc:
        typer.echo(f"error: cannot reach the controller at {url}: {exc}", err=True)
        raise typer.Exit(exitcodes.UNREACHABLE) from exc
    if not response.headers.get("content-type", "").startswith("application/json"):
        typer.echo(
            f"error: the controller answered HTTP {response.status_code}: {response.text}", err=True
        )
        raise typer.Exit(exitcodes.FAILED)
    return response
