"""How ``sluice parity diff`` shows a route's comparisons: counts, per-path rates, examples.

Works on the admin API's route object (:mod:`controller.parity.api`), so that the same view
serves a standalone comparator and one inside ``sluice serve``.

What it prints is mostly the upstreams' and users' bytes (bodies, headers, URLs, JSON keys as
field paths): every such text goes through :func:`clean` first, so that a reply cannot drive
the operator's terminal (move the cursor, rewrite the title, hide lines: ECMA-48 sequences).
"""

from __future__ import annotations

import difflib
import json
import re
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


# ECMA-48: CSI (ESC [ params intermediates final), OSC/DCS/SOS/PM/APC strings (to BEL or
# ST), and any other two-character escape; then the C0 controls but TAB and LF, DEL and C1.
_ESCAPES = re.compile(
    r"\x1b(?:\[[0-?]*[ -/]*[@-~]?|[\]PX^_][^\x07\x1b]*(?:\x07|\x1b\\)?|[ -/]*[0-~]?)"
)
_CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_TRUNCATED = re.compile(r"…\[\d+ bytes cut\]\Z")


def clean(text: object) -> str:
    """``text`` (as ``str``) without terminal control: escape sequences removed whole, other
    C0 controls but TAB and LF removed, and so are DEL and the C1 controls (U+0080-U+009F)."""
    return _CONTROLS.sub("", _ESCAPES.sub("", str(text)))


def truncated(body: str) -> bool:
    """Whether a sample's body text was cut (it ends with the samples' ``…[N bytes cut]``
    marker, :func:`controller.parity.samples.body_text`)."""
    return _TRUNCATED.search(body) is not None


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
    primary = f" (primary replica {data['primary']})" if data.get("primary") else ""
    console.print(
        f"route [bold]{_safe(data['route'])}[/bold]: baseline {_safe(data['baseline'])}"
        f"{_safe(primary)} vs candidate {_safe(data['candidate'])}{_safe(secondary)}"
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
            f"last error at {_time(error['at'])}: {_safe(error['target'])}:"
            f" {_safe(error['reason'])}"
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
            _safe(path),
            str(c["mismatched"]),
            share(c["mismatched"], compared),
            str(c["noisy"]),
            share(c["noisy"], compared),
        )
    console.print(table)
    for sample, for_paths in examples(data["samples"], [p for p, c in paths if c["mismatched"]]):
        typer.echo("")
        typer.echo(clean(f"example for {', '.join(for_paths)}:"))
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
    both are JSON (``body truncated: no JSON diff`` when either was cut). Every text from the
    sample is :func:`clean`."""
    lines = [f"  {clean(sample['method'])} {clean(sample['url'])}  (at {_time(sample['at'])})"]
    lines += [f"    {clean(name)}: {clean(value)}" for name, value in sample["request"]["headers"]]
    if sample["request"]["body"]:
        lines.append(_indent(clean(sample["request"]["body"]), "    "))
    for side in ("primary", "candidate", "secondary"):
        reply = sample.get(side)
        if reply is None:
            continue
        lines.append(f"  {side}: {clean(reply['status'])}")
        lines += [f"    {clean(name)}: {clean(value)}" for name, value in reply["headers"]]
        body = clean(reply["body"])
        lines.append(_indent(body, "    ") if body else "    (empty body)")
    primary, candidate = sample["primary"]["body"], sample["candidate"]["body"]
    if truncated(primary) or truncated(candidate):
        lines.append("  body truncated: no JSON diff")
        return "\n".join(lines)
    diff = json_diff(primary, candidate)
    if diff:
        lines.append("  diff (primary -> candidate, JSON pretty-printed):")
        lines.append(_indent(clean(diff), "    "))
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


def _safe(text: object) -> str:
    """Untrusted text for a rich markup string: cleaned, then its markup escaped."""
    return escape(clean(text))


def _indent(text: str, prefix: str) -> str:
    return "\n".join(prefix + line for line in text.splitlines())


def _time(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
