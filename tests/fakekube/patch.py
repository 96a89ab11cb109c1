"""Patch formats the API server accepts: JSON merge patch (RFC 7386; also used for
``application/strategic-merge-patch+json``, whose list-merge keys the fake does not know) and
JSON patch (RFC 6902)."""

from __future__ import annotations

import copy
from typing import Any

MERGE_TYPES = ("application/merge-patch+json", "application/strategic-merge-patch+json")
JSON_PATCH_TYPE = "application/json-patch+json"


class PatchError(Exception):
    """The patch cannot be applied (422 / 400 on the real server)."""


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 section 2: objects merge recursively, ``null`` removes, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _unescape(token: str) -> str:
    return token.replace("~1", "/").replace("~0", "~")


def _split(pointer: str) -> list[str]:
    if pointer == "":
        return []
    if not pointer.startswith("/"):
        raise PatchError(f"invalid JSON pointer {pointer!r}")
    return [_unescape(t) for t in pointer[1:].split("/")]


def _index(container: list[Any], token: str, *, adding: bool) -> int:
    if adding and token == "-":
        return len(container)
    if not token.isdigit():
        raise PatchError(f"invalid array index {token!r}")
    i = int(token)
    if i > len(container) or (not adding and i == len(container)):
        raise PatchError(f"array index {i} out of range")
    return i


def _parent(doc: Any, tokens: list[str]) -> Any:
    node = doc
    for token in tokens[:-1]:
        if isinstance(node, dict):
            if token not in node:
                raise PatchError(f"path element {token!r} not found")
            node = node[token]
        elif isinstance(node, list):
            node = node[_index(node, token, adding=False)]
        else:
            raise PatchError(f"cannot descend into {token!r}")
    return node


def _get(doc: Any, pointer: str) -> Any:
    tokens = _split(pointer)
    if not tokens:
        return doc
    parent = _parent(doc, tokens)
    last = tokens[-1]
    if isinstance(parent, dict):
        if last not in parent:
            raise PatchError(f"path {pointer!r} not found")
        return parent[last]
    if isinstance(parent, list):
        return parent[_index(parent, last, adding=False)]
    raise PatchError(f"path {pointer!r} not found")


def _remove(doc: Any, pointer: str) -> Any:
    tokens = _split(pointer)
    if not tokens:
        raise PatchError("cannot remove the root")
    parent = _parent(doc, tokens)
    if isinstance(parent, dict):
        if tokens[-1] not in parent:
            raise PatchError(f"path {pointer!r} not found")
        return parent.pop(tokens[-1])
    if isinstance(parent, list):
        return parent.pop(_index(parent, tokens[-1], adding=False))
    raise PatchError(f"path {pointer!r} not found")


def _add(doc: Any, pointer: str, value: Any) -> Any:
    tokens = _split(pointer)
    if not tokens:
        return value
    parent = _parent(doc, tokens)
    if isinstance(parent, dict):
        parent[tokens[-1]] = value
    elif isinstance(parent, list):
        parent.insert(_index(parent, tokens[-1], adding=True), value)
    else:
        raise PatchError(f"path {pointer!r} not found")
    return doc


def json_patch(target: Any, operations: Any) -> Any:
    """RFC 6902: apply ``operations`` (a list) to a copy of ``target``; PatchError if one fails
    (a failed ``test`` included, which the API server reports as a conflict-free 422)."""
    if not isinstance(operations, list):
        raise PatchError("a JSON patch is a list of operations")
    doc = copy.deepcopy(target)
    for op in operations:
        if not isinstance(op, dict) or "op" not in op or "path" not in op:
            raise PatchError(f"invalid operation {op!r}")
        kind, path = op["op"], op["path"]
        if kind == "add":
            doc = _add(doc, path, copy.deepcopy(op.get("value")))
        elif kind == "remove":
            _remove(doc, path)
        elif kind == "replace":
            _get(doc, path)
            if _split(path):
                _remove(doc, path)
            doc = _add(doc, path, copy.deepcopy(op.get("value")))
        elif kind in ("move", "copy"):
            value = _get(doc, op["from"])
            if kind == "move":
                _remove(doc, op["from"])
            doc = _add(doc, path, copy.deepcopy(value))
        elif kind == "test":
            if _get(doc, path) != op.get("value"):
                raise PatchError(f"test failed at {path!r}")
        else:
            raise PatchError(f"unknown operation {kind!r}")
    return doc


def apply_patch(target: Any, content_type: str, patch: Any) -> Any:
    """Apply ``patch`` of media type ``content_type`` to a copy of ``target``: ApiError 422
    if it does not apply, 415 for a type the fake does not serve (server-side apply)."""
    from .errors import ApiError

    try:
        if content_type == JSON_PATCH_TYPE:
            return json_patch(target, patch)
        if content_type in MERGE_TYPES:
            if not isinstance(patch, dict):
                raise PatchError("a merge patch is a JSON object")
            return merge_patch(target, patch)
    except PatchError as exc:
        raise ApiError(422, str(exc)) from exc
    accepted = ", ".join((JSON_PATCH_TYPE, *MERGE_TYPES))
    raise ApiError(
        415,
        "the body of the request was in an unknown format - accepted media types include: "
        f"{accepted} (got {content_type!r})",
    )
