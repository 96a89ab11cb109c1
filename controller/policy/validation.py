"""Validation of loaded YAML data against pydantic models, with line-precise issues.

:func:`validate_data` and :func:`validate_document` run a model over data loaded by
:func:`controller.policy.source.load_yaml` and turn every pydantic error into an
:class:`~controller.policy.source.Issue` (``file:line: field: message``), the field spelled as
in the file (by alias), with messages a person can act on.
"""

from __future__ import annotations

import difflib
import types
from typing import Annotated, Any, Literal, TypeGuard, TypeVar, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from controller.policy.gateway import NAME_PATTERN
from controller.policy.source import (
    DocumentError,
    FieldPath,
    Issue,
    LineMap,
    issue_at,
    load_yaml,
)

M = TypeVar("M", bound=BaseModel)


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
    if err["type"] in ("union_tag_invalid", "union_tag_not_found"):
        return _tag_issue(model, err, path, data, lines, filename)
    return issue_at(filename, lines, path, _message(model, err, path, data))


def _tag_issue(
    model: type[BaseModel],
    err: ErrorDetails,
    path: FieldPath,
    data: object,
    lines: LineMap,
    filename: str,
) -> Issue:
    """A discriminated union's tag (e.g. an SLO's ``metric``) that is missing or unknown: at the
    tag's line, with the allowed values."""
    ctx = err.get("ctx") or {}
    tag_field = str(ctx.get("discriminator", "")).strip("'\"")
    if not isinstance(err["input"], dict):
        msg = f"expected a mapping (key: value), got {_kind(err['input'])}"
        return issue_at(filename, lines, path, msg)
    allowed = _tags(_annotation_at(model, path, data), tag_field)
    listed = f"; allowed: {', '.join(allowed)}" if allowed else ""
    if err["type"] == "union_tag_not_found":
        return issue_at(filename, lines, (*path, tag_field), f"required field is missing{listed}")
    tag = err["input"].get(tag_field)
    guess = difflib.get_close_matches(str(tag), allowed, n=1)
    hint = f" (did you mean {guess[0]!r}?)" if guess else ""
    msg = f"unknown {tag_field} {_show(tag)}{hint}{listed}"
    return issue_at(filename, lines, (*path, tag_field), msg)


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


def _message(model: type[BaseModel], err: ErrorDetails, path: FieldPath, data: object) -> str:
    kind, ctx, value = err["type"], err.get("ctx") or {}, err["input"]
    if kind == "missing":
        return "required field is missing"
    if kind == "extra_forbidden":
        return _unknown_field(model, path, data)
    if kind == "string_pattern_mismatch" and ctx.get("pattern") == NAME_PATTERN:
        return (
            "a name is lower-case letters, digits, '.', '_' and '-', starting and ending with a"
            f" letter or digit (got {_show(value)})"
        )
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


def _unknown_field(model: type[BaseModel], path: FieldPath, data: object) -> str:
    target = _model_at(model, path[:-1], data)
    if target is None:
        return "unknown field"
    allowed = [info.alias or name for name, info in target.model_fields.items()]
    key = str(path[-1])
    same = [a for a in allowed if a.lower() == key.replace("_", "").replace("-", "").lower()]
    guess = same or difflib.get_close_matches(key, allowed, n=1)
    hint = f" (did you mean {guess[0]!r}?)" if guess else ""
    return f"unknown field{hint}; allowed: {', '.join(allowed)}"


def _model_at(model: type[BaseModel], path: FieldPath, data: object) -> type[BaseModel] | None:
    """The model class validating the mapping at ``path`` (following field annotations; in a
    union of models, the one member that fits the document's values there, e.g. the SLO kind
    that an SLO's ``metric`` names)."""
    current = _select(_unwrap(_annotation_at(model, path, data)), _at(data, path))
    return current if _is_model(current) else None


def _annotation_at(model: type[BaseModel], path: FieldPath, data: object) -> Any:
    """The type annotation of the value at ``path`` (None when the path leaves the models)."""
    current: Any = model
    node = data
    for part in path:
        current = _select(_unwrap(current), node)
        node = _child(node, part)[1]
        if isinstance(part, int):
            args = get_args(current)
            if get_origin(current) not in (list, tuple) or not args:
                return None
            current = args[0]
        elif _is_model(current):
            fields = current.model_fields.items()
            current = next((f.annotation for n, f in fields if (f.alias or n) == part), None)
        else:
            return None
    return current


def _select(annotation: Any, node: object) -> Any:
    """In a union of models, the one member whose literal fields accept the values of
    ``node``; otherwise ``annotation`` unchanged."""
    if get_origin(annotation) not in (Union, types.UnionType) or not isinstance(node, dict):
        return annotation
    fits = [m for m in get_args(annotation) if _is_model(m) and _literals_fit(m, node)]
    return fits[0] if len(fits) == 1 else annotation


def _literals_fit(model: type[BaseModel], node: dict[Any, Any]) -> bool:
    for name, info in model.model_fields.items():
        key = info.alias or name
        literal = get_origin(info.annotation) is Literal
        if literal and key in node and node[key] not in get_args(info.annotation):
            return False
    return True


def _tags(annotation: Any, field: str) -> list[str]:
    """The values the members of a (discriminated) union allow for ``field``, in order."""
    tags: list[str] = []
    for member in get_args(_unwrap(annotation)):
        info = member.model_fields.get(field) if _is_model(member) else None
        if info is not None and get_origin(info.annotation) is Literal:
            tags += [str(t) for t in get_args(info.annotation) if str(t) not in tags]
    return tags


def _at(data: object, path: FieldPath) -> object:
    for part in path:
        found, data = _child(data, part)
        if not found:
            return None
    return data


def _is_model(annotation: Any) -> TypeGuard[type[BaseModel]]:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


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
