"""YAML documents with line-precise errors, for gateway and policy files.

:func:`load_yaml` parses exactly one YAML document into plain data (dicts with string keys,
lists, scalars) plus a :class:`LineMap` from field paths to line numbers; errors are
:class:`Issue` values (``file:line: field: message``). Validation against pydantic models is in
:mod:`controller.policy.validation`.

Stricter than plain YAML on purpose: duplicate keys, non-string keys and several documents in
one file are errors, not silently resolved. Pure: text in, data or :class:`DocumentError` out.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import TypeVar

import yaml
from pydantic import BaseModel

FieldPath = tuple[str | int, ...]
"""Where a value sits in a document: mapping keys (str) and sequence indexes (int)."""

M = TypeVar("M", bound=BaseModel)

_MAP_TAG = "tag:yaml.org,2002:map"
_SEQ_TAG = "tag:yaml.org,2002:seq"
_MERGE_TAG = "tag:yaml.org,2002:merge"
_NULL_TAG = "tag:yaml.org,2002:null"
_MAX_NODES = 100_000
_PLAIN_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")


@dataclass(frozen=True)
class Issue:
    """One problem in a file: where (file, 1-based line, field path) and what.

    ``line`` is ``None`` when no line is known (e.g. an unreadable file); ``field`` is the
    dotted/indexed path in the file's spelling (``spec.listeners[0].port``), empty for problems
    with the document as a whole. ``str()`` gives ``file:line: field: message``, leaving out the
    parts that are unknown.
    """

    file: str
    line: int | None
    field: str
    message: str

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        return f"{where}: {self.field + ': ' if self.field else ''}{self.message}"


class DocumentError(Exception):
    """A document failed to load or validate; ``issues`` lists every problem found, in order."""

    def __init__(self, issues: Iterable[Issue]) -> None:
        self.issues: tuple[Issue, ...] = tuple(issues)
        super().__init__("\n".join(str(issue) for issue in self.issues))


@dataclass(frozen=True)
class LineMap:
    """1-based line numbers of a document's keys and sequence items, by :data:`FieldPath`.

    ``()`` is the document's root. A key's line is where the key is written (not its value).
    """

    lines: Mapping[FieldPath, int]

    def __post_init__(self) -> None:
        object.__setattr__(self, "lines", MappingProxyType(dict(self.lines)))

    def nearest(self, path: Sequence[str | int]) -> int | None:
        """The line of ``path``, or of its nearest ancestor present in the document.

        A missing field thus points at the mapping that should hold it. ``None`` only when the
        map is empty.
        """
        current = tuple(path)
        while current not in self.lines:
            if not current:
                return None
            current = current[:-1]
        return self.lines[current]


def format_path(path: Sequence[str | int]) -> str:
    """Spell a path as in messages: ``spec.listeners[0].virtualHosts[1].domains``.

    Keys that are not identifier-like are quoted: ``headers["x.y"]``.
    """
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _PLAIN_KEY.match(part):
            out += f".{part}" if out else part
        else:
            out += f"[{json.dumps(part)}]"
    return out


def issue_at(filename: str, lines: LineMap, path: Sequence[str | int], message: str) -> Issue:
    """An :class:`Issue` about ``path``, located at its line (or its nearest ancestor's)."""
    return Issue(filename, lines.nearest(path), format_path(path), message)


def load_yaml(text: str, filename: str) -> tuple[object, LineMap]:
    """Parse exactly one YAML document (YAML 1.1, safe tags only) into plain data.

    Returns ``(data, lines)``: dicts with ``str`` keys, lists and scalars, and the line of every
    key and sequence item. Anchors, aliases and ``<<`` merge keys are honoured (explicit keys
    win over merged ones).

    Raises:
        DocumentError: a YAML syntax error (at the line YAML reports), no document or several
            documents, a duplicate or non-string mapping key, an unknown or unsupported tag,
            a recursive alias, or a document that expands to more than 100,000 nodes.
    """
    try:
        roots = [n for n in yaml.compose_all(text, Loader=yaml.SafeLoader) if not _is_empty(n)]
    except yaml.MarkedYAMLError as exc:
        raise DocumentError([_yaml_issue(filename, exc)]) from None
    except yaml.YAMLError as exc:
        raise DocumentError([Issue(filename, None, "", f"invalid YAML: {exc}")]) from None
    except RecursionError:
        raise DocumentError([Issue(filename, None, "", "YAML nested too deeply")]) from None
    if not roots:
        raise DocumentError([Issue(filename, 1, "", "no YAML document; the file is empty")])
    if len(roots) > 1:
        line = roots[1].start_mark.line + 1
        msg = f"{len(roots)} YAML documents in one file; put each document in its own file"
        raise DocumentError([Issue(filename, line, "", msg)])
    builder = _Builder(filename)
    try:
        data = builder.build(roots[0], ())
    except RecursionError:
        builder.issues.append(Issue(filename, None, "", "YAML nested too deeply"))
    if builder.issues:
        raise DocumentError(builder.issues)
    return data, LineMap(builder.lines)


class _Builder:
    """Builds plain data from composed YAML nodes, recording lines and problems."""

    def __init__(self, filename: str) -> None:
        self.filename = filename
        self.lines: dict[FieldPath, int] = {}
        self.issues: list[Issue] = []
        self._scalars = yaml.SafeLoader("")
        self._active: set[int] = set()
        self._count = 0

    def build(self, node: yaml.Node, path: FieldPath) -> object:
        self.lines.setdefault(path, node.start_mark.line + 1)
        self._count += 1
        if self._count > _MAX_NODES:
            msg = f"document expands to more than {_MAX_NODES} nodes (aliases?)"
            raise DocumentError([Issue(self.filename, None, "", msg)])
        if id(node) in self._active:
            self._issue(node, path, "recursive alias: a node contains itself")
            return None
        self._active.add(id(node))
        try:
            if isinstance(node, yaml.MappingNode):
                return self._mapping(node, path)
            if isinstance(node, yaml.SequenceNode):
                self._check_tag(node, path, _SEQ_TAG)
                return [self._child(item, (*path, i)) for i, item in enumerate(node.value)]
            return self._scalar(node, path)
        finally:
            self._active.discard(id(node))

    def _child(self, node: yaml.Node, path: FieldPath) -> object:
        self.lines[path] = node.start_mark.line + 1
        return self.build(node, path)

    def _mapping(self, node: yaml.MappingNode, path: FieldPath) -> dict[str, object]:
        self._check_tag(node, path, _MAP_TAG)
        out: dict[str, object] = {}
        first_line: dict[str, int] = {}
        for key_node, value_node, explicit in self._pairs(node, path):
            key = self._scalar(key_node, path) if isinstance(key_node, yaml.ScalarNode) else None
            line = key_node.start_mark.line + 1
            if not isinstance(key, str):
                msg = "a list or mapping cannot be a key"
                if isinstance(key_node, yaml.ScalarNode):
                    msg = f"key {key_node.value!r} is not a string; quote it"
                self._issue(key_node, path, msg)
                continue
            if key in out:
                if explicit:
                    msg = f"duplicate key {key!r} (first at line {first_line[key]})"
                    self._issue(key_node, (*path, key), msg)
                continue
            first_line[key] = line
            self.lines[(*path, key)] = line
            out[key] = self.build(value_node, (*path, key))
        return out

    def _pairs(
        self, node: yaml.MappingNode, path: FieldPath
    ) -> list[tuple[yaml.Node, yaml.Node, bool]]:
        """Key/value nodes, explicit ones first, then those of ``<<`` merges in order."""
        explicit: list[tuple[yaml.Node, yaml.Node, bool]] = []
        merged: list[tuple[yaml.Node, yaml.Node, bool]] = []
        for key_node, value_node in node.value:
            if key_node.tag != _MERGE_TAG:
                explicit.append((key_node, value_node, True))
                continue
            is_list = isinstance(value_node, yaml.SequenceNode)
            for source in value_node.value if is_list else [value_node]:
                if not isinstance(source, yaml.MappingNode) or id(source) in self._active:
                    self._issue(key_node, path, "'<<' merges a mapping or a list of mappings")
                    continue
                self._active.add(id(source))
                merged.extend((k, v, False) for k, v, _ in self._pairs(source, path))
                self._active.discard(id(source))
        return explicit + merged

    def _scalar(self, node: yaml.Node, path: FieldPath) -> object:
        try:
            return self._scalars.construct_object(node, deep=True)
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark or node.start_mark
            self.issues.append(Issue(self.filename, mark.line + 1, format_path(path), _text(exc)))
        except (ValueError, TypeError, ArithmeticError):
            self._issue(node, path, f"{node.value!r} is not a valid {node.tag.rsplit(':', 1)[-1]}")
        return None

    def _check_tag(self, node: yaml.Node, path: FieldPath, expected: str) -> None:
        if node.tag != expected:
            self._issue(node, path, f"unsupported YAML tag {node.tag!r}")

    def _issue(self, node: yaml.Node, path: FieldPath, message: str) -> None:
        line = node.start_mark.line + 1
        self.issues.append(Issue(self.filename, line, format_path(path), message))


def _is_empty(node: yaml.Node) -> bool:
    return isinstance(node, yaml.ScalarNode) and node.tag == _NULL_TAG and node.value == ""


def _yaml_issue(filename: str, exc: yaml.MarkedYAMLError) -> Issue:
    mark = exc.problem_mark or exc.context_mark
    line = None if mark is None else mark.line + 1
    return Issue(filename, line, "", f"invalid YAML: {_text(exc)}")


def _text(exc: yaml.MarkedYAMLError) -> str:
    parts = [p for p in (exc.context, exc.problem) if p]
    return "; ".join(parts) or str(exc)
