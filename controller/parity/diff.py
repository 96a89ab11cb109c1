"""Where two HTTP replies differ, as field paths (tap-compare's diff).

Field paths:

- ``:status``: the status codes differ;
- ``:header/<name>``: an allowlisted header differs (names compared case-insensitively; a
  header sent several times is compared as its values joined by ``", "`` in the order
  received, RFC 9110 section 5.3; absent differs from present, even if empty);
- ``:body``: the bodies differ as bytes, when they are not both JSON (non-JSON, or JSON on
  one side only). Two empty bodies are equal;
- a JSON Pointer (RFC 6901, ``~0``/``~1`` escaping) into both JSON bodies with every array
  index replaced by ``*`` (``/items/*/price``); the root is :data:`ROOT` (``/``).

A body is JSON when, after leading whitespace, it starts with ``{`` or ``[`` and the stdlib
``json`` parses it (whatever its content-type). Both JSON bodies are compared structurally:

- objects key by key; a key present on one side only is reported at that key's path;
- arrays index by index; when the lengths differ the array's own path is reported and its
  elements are not compared (an insertion would otherwise shift every later element into a
  difference);
- arrays matching an ``unordered`` pattern are compared as multisets of their elements'
  canonical JSON (sorted keys, ignored fields removed, integral floats written as integers)
  and any difference is reported at the array's path; numeric tolerance does not apply
  inside them, nor do ignore patterns naming a specific index;
- numbers (``int`` or ``float``, never ``bool``) are equal when ``|a - b| <= absolute +
  relative * max(|a|, |b|)`` (so ``1`` equals ``1.0``); two NaNs are equal;
- any other pair is equal when of the same JSON type and value;
- a path matching an ``ignore`` pattern is never compared, nor anything below it (ignoring
  the root ``""`` ignores the whole body, bytes included).

Bodies nested deeper than Python's recursion limit are compared as bytes. Pure, no I/O.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from controller.parity.rules import CompareRules, Matcher

ROOT = "/"
"""The field path of a JSON body's root (RFC 6901's empty pointer, shown as ``/``). A key named
``""`` at the root is reported as ``/`` too: the two cannot be told apart."""

STATUS = ":status"
BODY = ":body"
HEADER_PREFIX = ":header/"

_ENCODER = json.JSONEncoder(ensure_ascii=False, allow_nan=True)


@dataclass(frozen=True)
class Reply:
    """One HTTP reply as the comparator received it.

    Attributes:
        status: the HTTP status code.
        headers: ``(name, value)`` pairs, names lowercased, in the order received.
        body: the body's bytes (decoded from any content-encoding).
    """

    status: int
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""


def differences(a: Reply, b: Reply, rules: CompareRules) -> frozenset[str]:
    """The field paths (module docstring) where ``a`` and ``b`` differ under ``rules``;
    empty when they match. Symmetric: ``differences(a, b) == differences(b, a)``."""
    out: set[str] = set()
    if a.status != b.status:
        out.add(STATUS)
    if rules.headers:
        ha, hb = _headers(a.headers, rules.headers), _headers(b.headers, rules.headers)
        if ha != hb:
            out.update(HEADER_PREFIX + n for n in ha.keys() | hb.keys() if ha.get(n) != hb.get(n))
    if a.body != b.body:
        _body(a.body, b.body, rules, out)
    return frozenset(out)


def _headers(headers: tuple[tuple[str, str], ...], names: frozenset[str]) -> dict[str, str]:
    found: dict[str, str] = {}
    for name, value in headers:
        lowered = name.lower()
        if lowered in names:
            found[lowered] = found[lowered] + ", " + value if lowered in found else value
    return found


_NO_JSON = object()
_MISSING = object()


def _parse(body: bytes) -> Any:
    if body.lstrip()[:1] not in (b"{", b"["):
        return _NO_JSON
    try:
        return json.loads(body)
    except (ValueError, RecursionError):  # JSONDecodeError and UnicodeDecodeError included
        return _NO_JSON


def _body(a: bytes, b: bytes, rules: CompareRules, out: set[str]) -> None:
    state = rules.matcher
    if state is not None and state.ignore:
        return
    x, y = _parse(a), _parse(b)
    if x is _NO_JSON or y is _NO_JSON:
        out.add(BODY)
        return
    found: set[str] = set()
    try:
        _walk(x, y, "", state, rules.absolute_tolerance, rules.relative_tolerance, found)
    except RecursionError:
        out.add(BODY)
        return
    out.update(found)


def _numbers_equal(x: float, y: float, absolute: float, relative: float) -> bool:
    if x == y or (x != x and y != y):  # the second: both NaN
        return True
    if not (absolute or relative):
        return False
    try:
        return abs(x - y) <= absolute + relative * max(abs(x), abs(y))
    except OverflowError:  # an integer too large for a float: only exact equality counts
        return False


def _key_token(key: str) -> str:
    if "~" in key or "/" in key:
        return key.replace("~", "~0").replace("/", "~1")
    return key


def _walk(
    x: Any,
    y: Any,
    path: str,
    state: Matcher | None,
    absolute: float,
    relative: float,
    out: set[str],
) -> None:
    # `path` is the escaped pointer with `*` for indices ("" at the root); the caller has
    # already checked that `state` is not ignored.
    tx, ty = type(x), type(y)
    if tx is dict:
        if ty is not dict:
            out.add(path or ROOT)
            return
        shared = len(x)
        for key, vx in x.items():
            vy = y.get(key, _MISSING)
            tv = type(vx)
            # The common case first, before any pattern lookup: an equal leaf.
            if tv is type(vy) and tv is not dict and tv is not list and vx == vy:
                continue
            child = state.step(key) if state is not None else None
            if child is not None and child.ignore:
                if vy is _MISSING:
                    shared -= 1
                continue
            if vy is _MISSING:
                shared -= 1
                out.add(path + "/" + _key_token(key))
            else:
                _walk(vx, vy, path + "/" + _key_token(key), child, absolute, relative, out)
        if len(y) > shared:  # y has keys x lacks
            for key in y:
                if key not in x:
                    child = state.step(key) if state is not None else None
                    if child is None or not child.ignore:
                        out.add(path + "/" + _key_token(key))
    elif tx is list:
        if ty is not list:
            out.add(path or ROOT)
        elif state is not None and state.unordered:
            if len(x) != len(y) or sorted(_canonical(e, state.other) for e in x) != sorted(
                _canonical(e, state.other) for e in y
            ):
                out.add(path or ROOT)
        elif len(x) != len(y):
            out.add(path or ROOT)
        else:
            item = path + "/*"
            for i, (vx, vy) in enumerate(zip(x, y, strict=True)):
                tv = type(vx)
                if tv is type(vy) and tv is not dict and tv is not list and vx == vy:
                    continue
                child = state.step(str(i)) if state is not None else None
                if child is not None and child.ignore:
                    continue
                _walk(vx, vy, item, child, absolute, relative, out)
    elif (tx is int or tx is float) and (ty is int or ty is float):
        if not _numbers_equal(x, y, absolute, relative):
            out.add(path or ROOT)
    elif tx is not ty or x != y:
        out.add(path or ROOT)


def _canonical(value: Any, state: Matcher | None) -> str:
    """Canonical JSON of ``value`` for multiset comparison: keys sorted, ignored fields
    dropped, nested unordered arrays sorted, integral floats as integers."""
    if state is not None and state.ignore:
        return ""  # an ignored element still counts as one element of the multiset
    t = type(value)
    if t is dict:
        parts = []
        for key in sorted(value):
            child = state.step(key) if state is not None else None
            if child is not None and child.ignore:
                continue
            parts.append(_ENCODER.encode(key) + ":" + _canonical(value[key], child))
        return "{" + ",".join(parts) + "}"
    if t is list:
        child = state.other if state is not None else None
        items = [_canonical(e, child) for e in value]
        if state is not None and state.unordered:
            items.sort()
        return "[" + ",".join(items) + "]"
    if t is float and value.is_integer():
        return str(int(value))  # exact: equal to the int it equals under ``==``
    return _ENCODER.encode(value)
