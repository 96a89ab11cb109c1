"""YAML documents with line-precise errors, for gateway and policy files.

:func:`load_yaml` parses exactly one YAML document into plain data (dicts with string keys,
lists, scalars) plus a :class:`LineMap` from field paths to line numbers. :func:`validate_data`
and :func:`validate_document` run a pydantic model over that data and turn every validation
error into an :class:`Issue` (``file:line: field: message``), the field spelled as in the file.

Stricter than plain YAML on purpose: duplicate keys, non-string keys and several documents in
one file are errors, not silently resolved. Pure: text in, data or :class:`DocumentError` out.
"""

from __future__ import annotations

import difflib
import json
import re
import types
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Annotated, Any, TypeVar, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

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


def validate_data(model: type[M], data: object, lines: LineMap, filename: str) -> M:
    """Validate loaded data against ``model``, keys spelled by alias (the file's spelling).

    Raises:
        DocumentError: one :class:`Issue` per validation error, sorted by line: unknown fields
            (with the allowed ones), missing fields (at the line of the mapping that lacks
            them), wrong types or values (with what was found).
    """
    try:
        return model.model_validate(data, by_alias=True, by_name=False)
    except ValidationError as exc:
        errors = exc.errors()
        issues = [
            _error_issue(model, err, data, lines, filename)
            for err in errors
            if not _is_follow_on(err, errors)
        ]
        raise DocumentError(sorted(issues, key=lambda i: i.line or 0)) from None


def validate_document(model: type[M], text: str, filename: str) -> M:
    """:func:`load_yaml` then :func:`validate_data`: YAML text in, a validated model out.

    Raises:
        DocumentError: the YAML could not be loaded or does not fit ``model``.
    """
    data, lines = load_yaml(text, filename)
    return validate_data(model, data, lines, filename)


def check_kind(data: object, lines: LineMap, filename: str, kind: str) -> None:
    """Refuse early a document of another ``kind`` (e.g. a policy given as a gateway).

    Raises:
        DocumentError: ``data`` is a mapping whose ``kind`` is a string other than ``kind``.
    """
    if isinstance(data, dict) and isinstance(data.get("kind"), str) and data["kind"] != kind:
        msg = f"this is a {data['kind']} document, expected kind {kind}"
        raise DocumentError([issue_at(filename, lines, ("kind",), msg)])


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


def _is_follow_on(err: ErrorDetails, errors: list[ErrorDetails]) -> bool:
    """A length error caused by invalid items (pydantic counts only the valid ones)."""
    if err["type"] not in ("too_short", "too_long"):
        return False
    loc = err["loc"]
    return any(len(o["loc"]) > len(loc) and o["loc"][: len(loc)] == loc for o in errors)


def _error_issue(
    model: type[BaseModel], err: ErrorDetails, data: object, lines: LineMap, filename: str
) -> Issue:
    path = _document_path(err, data)
    return issue_at(filename, lines, path, _message(model, err, path))


def _document_path(err: ErrorDetails, data: object) -> FieldPath:
    """The error's location as a path in the document, leaving out pydantic's union tags."""
    path: list[str | int] = []
    current = data
    loc = err["loc"]
    for i, part in enumerate(loc):
        found, child = _child(current, part)
        if found:
            current = child
        elif not (i == len(loc) - 1 and err["type"] == "missing"):
            continue
        path.append(part)
    return tuple(path)


def _child(container: object, part: str | int) -> tuple[bool, object]:
    if isinstance(container, list) and isinstance(part, int) and 0 <= part < len(container):
        return True, container[part]
    if isinstance(container, dict) and part in container:
        return True, container[part]
    return False, None


def _message(model: type[BaseModel], err: ErrorDetails, path: FieldPath) -> str:
    kind, ctx, value = err["type"], err.get("ctx") or {}, err["input"]
    if kind == "missing":
        return "required field is missing"
    if kind == "extra_forbidden":
        return _unknown_field(model, path)
    if kind in ("value_error", "assertion_error") and "error" in ctx:
        return str(ctx["error"])
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return f"expected a mapping (key: value), got {_kind(value)}"
    if kind in ("tuple_type", "list_type"):
        return f"expected a list, got {_kind(value)}"
    if kind == "too_short":
        return f"needs at least {ctx['min_length']} item(s), got {ctx['actual_length']}"
    if kind == "too_long":
        return f"allows at most {ctx['max_length']} item(s), got {ctx['actual_length']}"
    if kind == "literal_error":
        return f"should be {ctx['expected']}, got {_show(value)}"
    if kind == "string_type" and isinstance(value, bool | int | float):
        return f"expected a string, got {_kind(value)} ({_show(value)}); quote it to make it text"
    return f"{err['msg']} (got {_show(value)})"


def _unknown_field(model: type[BaseModel], path: FieldPath) -> str:
    target = _model_at(model, path[:-1])
    if target is None:
        return "unknown field"
    allowed = [info.alias or name for name, info in target.model_fields.items()]
    key = str(path[-1])
    same = [a for a in allowed if a.lower() == key.replace("_", "").replace("-", "").lower()]
    guess = same or difflib.get_close_matches(key, allowed, n=1)
    hint = f" (did you mean {guess[0]!r}?)" if guess else ""
    return f"unknown field{hint}; allowed: {', '.join(allowed)}"


def _model_at(model: type[BaseModel], path: FieldPath) -> type[BaseModel] | None:
    """The model class validating the mapping at ``path`` (following field annotations)."""
    current: Any = model
    for part in path:
        current = _unwrap(current)
        if isinstance(part, int):
            args = get_args(current)
            if get_origin(current) not in (list, tuple) or not args:
                return None
            current = args[0]
        elif isinstance(current, type) and issubclass(current, BaseModel):
            fields = current.model_fields.items()
            current = next((f.annotation for n, f in fields if (f.alias or n) == part), None)
        else:
            return None
    current = _unwrap(current)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _unwrap(annotation: Any) -> Any:
    """``X | None`` and ``Annotated[X, ...]`` -> ``X``."""
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            annotation = get_args(annotation)[0]
        elif origin in (Union, types.UnionType):
            members = [a for a in get_args(annotation) if a is not type(None)]
            if len(members) != 1:
                return annotation
            annotation = members[0]
        else:
            return annotation


def _kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return "a mapping" if isinstance(value, dict) else type(value).__name__


def _show(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):
        return repr(value if len(value) <= 60 else value[:57] + "...")
    if isinstance(value, int | float):
        return str(value)
    return _kind(value)
