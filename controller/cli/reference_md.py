"""Markdown pieces shared by the generated references (``controller.cli.reference``): code
spans that survive any content, table cells, docstring markup turned into Markdown.

GitHub Flavored Markdown spec (https://github.github.com/gfm/): code spans (6.1), tables (4.10).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

_RUN = re.compile(r"`+")
_ROLE = re.compile(r":[a-z]+:`(~?)([^`]+)`")
_LITERAL = re.compile(r"``(.+?)``", re.DOTALL)


def code(text: str) -> str:
    """``text`` as a code span, whatever backticks it holds (GFM 6.1: the fence is a run of
    backticks longer than any run inside, padded with a space when the text starts or ends
    with a backtick)."""
    longest = max((len(m.group()) for m in _RUN.finditer(text)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if text.startswith("`") or text.endswith("`") or not text.strip() else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def cell(text: str) -> str:
    """One table cell: on one line, ``|`` escaped (GFM 4.10: also inside code spans)."""
    return " ".join(text.split()).replace("|", "\\|")


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A GFM table, every cell passed through :func:`cell`."""
    lines = [
        "| " + " | ".join(cell(h) for h in header) + " |",
        "|" + "|".join("---" for _ in header) + "|",
    ]
    lines += ["| " + " | ".join(cell(c) or " " for c in row) + " |" for row in rows]
    return "\n".join(lines)


def from_docstring(text: str) -> str:
    """Docstring markup as Markdown: ````x```` becomes ```x```, and Sphinx roles
    (``:func:`~a.b``` or ``:class:`a.b```) their target (the last part after ``~``)."""

    def role(match: re.Match[str]) -> str:
        short, target = match.groups()
        return code(target.rsplit(".", 1)[-1] if short else target)

    text = _ROLE.sub(role, text)
    return _LITERAL.sub(lambda m: code(m.group(1)), text).strip()


def first_line(text: str) -> str:
    """The first paragraph of a help text or docstring, on one line."""
    return " ".join(text.strip().split("\n\n", 1)[0].split())
