"""How ``sluice parity diff`` shows a route's comparisons: counts, per-path rates, examples.

Works on the admin API's route object (:mod:`controller.parity.api`), so that the same view
serves a standalone comparator and one inside ``sluice serve``.
"""

from __future__ import annotations

import difflib
import json
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table


class Output(StrEnum):
    """Output formats."""

    table = "table"
    json = "json"


def share(count: int, compared: int) -> str:
    """``count`` over ``compared`` as a percentage for people (``-`` when nothing compared)."""
    if compared <= 0:
        return "-"
    return f"{100 * count / compared:.3g}%"


def render(data: dict[str, Any]) -> None:
    """Print the route object ``data``: a counts line, a table of field paths (mismatched,
    noisy, each with its share of the compared requests) and the newest example of each
    mismatched path."""
    console = Console(highlight=False, soft_wrap=True)
    counts = data["counts"]
    compared = counts["compared"]
    secondary = f", secondary {data['secondary']}" if data.get("secondary") else ""
    console.print(
        f"route [bold]{escape(data['route'])}[/bold]: baseline {escape(data['baseline'])} vs"
        f" candidate {escape(data['candidate'])}{escape(secondary)}"
    )
    console.print(
        f"compared {compared}: matched {counts['matched']} ({share(counts['matched'], compared)}),"
        f" noisy {counts['noisy']} ({share(counts['noisy'], compared)}),"
        f" mismatched {counts['mismatched']} ({share(counts['mismatched'], compared)});"
        f" errors {counts['errors']}, skipped {counts['skipped']}, dropped {counts['dropped']},"
        f" exercised {counts.get('exercised', 0)}"
    )
    if data.get("last_error"):
        error = data["last_error"]
        console.print(
            f"last error at {_time(error['at'])}: {escape(error['target'])}:"
            f" {escape(error['reason'])}"
        )
    paths = sorted(
        data["paths"].items(), key=lambda item: (-item[1]["mismatched"], -item[1]["noisy"], item[0])
    )
    if not paths:
        console.print("no differences")
        return
    table = Table()
    for column in ("field path", "mismatched", "rate", "noisy", "rate"):
        table.add_column(column, justify="left" if column == "field path" else "right")
    for path, c in paths:
        table.add_row(
            escape(path),
            str(c["mismatched"]),
            share(c["mismatched"], compared),
            str(c["noisy"]),
            share(c["noisy"], compared),
        )
    console.print(table)
    for sample, for_paths in examples(data["samples"], [p for p, c in paths if c["mismatched"]]):
        typer.echo("")
        typer.echo(f"example for {', '.join(for_paths)}:")
        typer.echo(sample_text(sample))


def examples(
    samples: list[dict[str, Any]], paths: list[str]
) -> list[tuple[dict[str, Any], list[str]]]:
    """The newest sample touching each of ``paths`` (in order), each sample once with the paths
    it is the example of; paths without a sample (evicted) are left out."""
    chosen: dict[int, list[str]] = {}
    for path in paths:
        for index in range(len(samples) - 1, -1, -1):  # samples are oldest first
            if path in samples[index]["paths"]:
                chosen.setdefault(index, []).append(path)
                break
    return [(samples[i], chosen[i]) for i in chosen]


def sample_text(sample: dict[str, Any]) -> str:
    """A sample as text: the request line and headers, then each reply (status, headers,
    body), then a unified diff of the primary's and candidate's bodies pretty-printed when
    both are JSON."""
    lines = [f"  {sample['method']} {sample['url']}  (at {_time(sample['at'])})"]
    lines += [f"    {name}: {value}" for name, value in sample["request"]["headers"]]
    if sample["request"]["body"]:
        lines.append(_indent(sample["request"]["body"], "    "))
    for side in ("primary", "candidate", "secondary"):
        reply = sample.get(side)
        if reply is None:
            continue
        lines.append(f"  {side}: {reply['status']}")
        lines += [f"    {name}: {value}" for name, value in reply["headers"]]
        lines.append(_indent(reply["body"], "    ") if reply["body"] else "    (empty body)")
    diff = json_diff(sample["primary"]["body"], sample["candidate"]["body"])
    if diff:
        lines.append("  diff (primary -> candidate, JSON pretty-printed):")
        lines.append(_indent(diff, "    "))
    return "\n".join(lines)


def json_diff(primary: str, candidate: str) -> str:
    """A unified diff of two JSON texts pretty-printed (sorted keys, 2-space indent), or ''
    when either is not JSON."""
    try:
        a, b = json.loads(primary), json.loads(candidate)
    except ValueError:
        return ""
    pretty_a = json.dumps(a, indent=2, sort_keys=True, ensure_ascii=False).splitlines()
    pretty_b = json.dumps(b, indent=2, sort_keys=True, ensure_ascii=False).splitlines()
    return "\n".join(
        difflib.unified_diff(pretty_a, pretty_b, "primary", "candidate", lineterm="", n=2)
    )


def _indent(text: str, prefix: str) -> str:
    return "\n".join(prefix + line for line in text.splitlines())


def _time(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
