"""``sluice policy``: check rollout policy files (and the gateway files next to them), print
their JSON Schema."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer

from controller.cli import exitcodes
from controller.policy.gateway import Gateway
from controller.policy.loading import load_gateway, load_policy
from controller.policy.schema import policy_json_schema
from controller.policy.source import DocumentError, Issue, issue_at, load_yaml
from controller.runtime.gatewayfile import load_gateway_file

app = typer.Typer(
    help="Rollout policy files: which route moves, through which stages, judged how.",
    no_args_is_help=True,
)

KINDS = ("RolloutPolicy", "Gateway")
"""The kinds ``sluice policy validate`` checks; any other kind is an error."""

SUFFIXES = (".yaml", ".yml")


@app.command()
def validate(
    paths: Annotated[
        list[Path],
        typer.Argument(
            help="Files or folders (every *.yaml and *.yml inside, recursively); '-' reads"
            " standard input.",
            metavar="PATH",
        ),
    ],
    gateway: Annotated[
        Path | None,
        typer.Option(
            "--gateway",
            help="Also check every policy against this gateway file: its route and clusters"
            " must exist there.",
            metavar="FILE",
        ),
    ] = None,
) -> None:
    """Check rollout policy files, and the gateway files among them, as CI would.

    Each file is checked by its kind: RolloutPolicy (fields, units, stages, SLOs) or Gateway
    (listeners, routes, clusters); any other kind is an error. Prints "OK FILE" per valid file,
    and every problem on stderr as "file:line: field: message".

    Exit code: 0 when every file is valid, 2 otherwise.
    """
    printed: set[str] = set()

    def report(issues: tuple[Issue, ...]) -> None:
        for issue in issues:
            if str(issue) not in printed:
                printed.add(str(issue))
                typer.echo(str(issue), err=True)

    gw: Gateway | None = None
    failed = False
    if gateway is not None:
        try:
            gw = load_gateway_file(gateway)
        except DocumentError as exc:
            failed = True
            report(exc.issues)
    for path, name in _files(paths):
        issues = _check(path, name, gw)
        if issues:
            failed = True
            report(issues)
        else:
            typer.echo(f"OK {name}")
    raise typer.Exit(exitcodes.INVALID_INPUT if failed else exitcodes.OK)


@app.command()
def schema() -> None:
    """Print the JSON Schema (draft 2020-12) of policy files, for editors and CI.

    E.g. for the YAML language server, first line of a policy file:
    "# yaml-language-server: $schema=rolloutpolicy.schema.json".
    Checks the schema cannot express (stages increasing, the route existing in the gateway…)
    are only made by "sluice policy validate".
    """
    typer.echo(json.dumps(policy_json_schema(), indent=2))


def _files(paths: list[Path]) -> Iterator[tuple[Path | None, str]]:
    """``(path, name)`` for each file to check, folders expanded (sorted); ``(None, name)`` for
    a folder without YAML files (reported as such)."""
    for path in paths:
        if str(path) == "-":
            yield path, "<stdin>"
        elif path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.suffix in SUFFIXES and p.is_file())
            if not found:
                yield None, str(path)
            for file in found:
                yield file, str(file)
        else:
            yield path, str(path)


def _check(path: Path | None, name: str, gateway: Gateway | None) -> tuple[Issue, ...]:
    """The problems of one file (reading it included); empty when it is sound."""
    if path is None:
        return (Issue(name, None, "", "a folder without .yaml or .yml files"),)
    try:
        text = _read(path, name)
        data, lines = load_yaml(text, name)
        kind = data.get("kind") if isinstance(data, dict) else None
        if kind == "RolloutPolicy":
            load_policy(text, name, gateway)
        elif kind == "Gateway":
            load_gateway(text, name)
        else:
            expected = f"expected kind {' or '.join(KINDS)}"
            if not isinstance(data, dict):
                return (Issue(name, lines.nearest(()), "", f"not a mapping; {expected}"),)
            what = "missing" if kind is None else f"{kind!r} is not a kind sluice checks"
            return (issue_at(name, lines, ("kind",), f"{what}; {expected}"),)
    except DocumentError as exc:
        return exc.issues
    return ()


def _read(path: Path, name: str) -> str:
    """The text of a file, or standard input for ``-``.

    Raises:
        DocumentError: the file cannot be read or is not UTF-8 (one issue saying why).
    """
    try:
        return sys.stdin.read() if str(path) == "-" else path.read_text(encoding="utf-8")
    except OSError as exc:
        raise DocumentError([Issue(name, None, "", f"cannot read: {exc.strerror or exc}")]) from exc
    except UnicodeDecodeError as exc:
        reason = f"cannot read: not UTF-8 text: {exc.reason} at byte {exc.start}"
        raise DocumentError([Issue(name, None, "", reason)]) from exc
