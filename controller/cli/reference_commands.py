"""The command tree of a typer app as Markdown: every command's full command line, its help as
written, and a table of its arguments and options.

Built from the command objects (``typer.main.get_command``), never from a rendered help
screen: rich wraps help to the terminal's width. Defaults are the *declared* ones
(``param.default``); a value an option would take from its environment variable is never
looked up. Hidden commands and options are left out; commands come in name order.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any

import typer
import typer.main

from controller.cli.reference_md import code, first_line, table


@dataclass(frozen=True)
class Command:
    """One command of the tree.

    Attributes:
        words: the command line's words, the program's name first (``sluice rollout start``).
        help: its help text as written (the docstring up to a form feed), ``""`` for none.
        group: True for a group of subcommands (it has no table).
        params: the command's visible arguments then options, in declaration order.
    """

    words: tuple[str, ...]
    help: str
    group: bool
    params: tuple[Any, ...]


def commands(app: typer.Typer, name: str) -> list[Command]:
    """Every visible command and group under ``app``, depth first, each group before its
    subcommands, siblings by name; ``name`` is the program's name."""
    return list(_walk(typer.main.get_command(app), (name,)))


def _walk(command: Any, words: tuple[str, ...]) -> Iterator[Command]:
    group = hasattr(command, "list_commands")
    params = tuple(p for p in command.params if not getattr(p, "hidden", False))
    text = (command.help or "").split("\f", 1)[0].strip()
    yield Command(words, text, group, tuple(_ordered(params)))
    if group:
        for sub in sorted(command.list_commands(None)):
            child = command.get_command(None, sub)
            if child is not None and not child.hidden:
                yield from _walk(child, (*words, sub))


def _ordered(params: tuple[Any, ...]) -> list[Any]:
    return [p for p in params if _is_argument(p)] + [p for p in params if not _is_argument(p)]


def _is_argument(param: Any) -> bool:
    return bool(param.param_type_name == "argument")


def usage(command: Command) -> str:
    """The command line: ``sluice rollout start NAME [OPTIONS]``."""
    parts = list(command.words)
    if command.group:
        parts.append("COMMAND")
    for param in command.params:
        if _is_argument(param):
            word = _metavar(param) + ("..." if param.nargs == -1 else "")
            parts.append(word if param.required else f"[{word}]")
    if any(not _is_argument(p) for p in command.params):
        parts.append("[OPTIONS]")
    return " ".join(parts)


def render(items: list[Command], level: int = 2) -> str:
    """Markdown: an index of the commands, then one section per command."""
    index = [(code(" ".join(c.words)), first_line(c.help)) for c in items if not c.group or c.help]
    parts = [table(("Command", "What it does"), index)]
    for command in items:
        depth = min(level + len(command.words) - 2, 6) if len(command.words) > 1 else level
        parts.append(f"{'#' * depth} {code(' '.join(command.words))}")
        parts.append(f"```text\n{usage(command)}\n```")
        if command.help:
            parts.append(f"```text\n{command.help}\n```")
        if command.group:
            subs = [c for c in items if c.words[:-1] == command.words]
            parts.append("Commands: " + ", ".join(code(" ".join(c.words)) for c in subs) + ".")
        if command.params:
            header = ("Argument or option", "Type", "Default", "Env var", "Help")
            parts.append(table(header, [_row(p) for p in command.params]))
    return "\n\n".join(parts) + "\n"


def _row(param: Any) -> tuple[str, str, str, str, str]:
    if _is_argument(param):
        names = code(_metavar(param))
    else:
        names = ", ".join(code(o) for o in [*param.opts, *param.secondary_opts])
    envvar = param.envvar
    envvars = [envvar] if isinstance(envvar, str) else list(envvar or ())
    return (
        names,
        _type(param),
        _default(param),
        ", ".join(code(e) for e in envvars) or "—",
        getattr(param, "help", None) or "",
    )


def _metavar(param: Any) -> str:
    return str(param.metavar or param.name.upper())


def _type(param: Any) -> str:
    label = str(param.display_type(None)).strip("<>")
    if getattr(param, "is_flag", False):
        label = "flag"
    elif label.startswith("list[") and label.endswith("]"):
        label = label[5:-1].lower()
    if "|" in label:
        label = "one of " + ", ".join(code(c) for c in label.split("|"))
    elif label in ("int range", "float range"):
        label = label.split()[0] + _range(param)
    text = {"str": "text", "path": "path", "int": "int", "float": "float"}.get(label, label)
    if getattr(param, "multiple", False):
        text += ", repeatable"
    if param.nargs == -1:
        text += ", one or more" if param.required else ", any number"
    return text


def _range(param: Any) -> str:
    low, high = getattr(param, "min", None), getattr(param, "max", None)
    if low is not None and high is not None:
        return f", {low} to {high}"
    if low is not None:
        return f", at least {low}"
    if high is not None:
        return f", at most {high}"
    return ""


def _default(param: Any) -> str:
    if param.required:
        return "required"
    shown = getattr(param, "show_default", None)
    if isinstance(shown, str):
        return shown
    value = param.default
    if callable(value):
        return "computed when run"
    if value is None or value == [] or value == ():
        return "—"
    if getattr(param, "is_flag", False) and isinstance(value, bool):
        names = param.secondary_opts if not value and param.secondary_opts else []
        return code(names[0]) if names else ("on" if value else "off")
    if isinstance(value, enum.Enum):
        value = value.value
    if isinstance(value, PurePath):
        value = str(value)
    if isinstance(value, str):
        return code(value) if value else '`""` (empty)'
    return code(str(value))
