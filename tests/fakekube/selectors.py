"""Label and field selectors as the API server parses them (the equality-based subset and
``key`` / ``!key`` existence; set-based ``in``/``notin`` too)."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

Predicate = Callable[[dict[str, Any]], bool]


class SelectorError(Exception):
    """The selector does not parse (400 BadRequest)."""


_SET = re.compile(r"^\s*([^\s!=]+)\s+(in|notin)\s+\(([^)]*)\)\s*$")


def _split_terms(selector: str) -> list[str]:
    # Commas inside "in (a,b)" do not separate terms.
    terms, depth, cur = [], 0, ""
    for ch in selector:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            terms.append(cur)
            cur = ""
        else:
            cur += ch
    terms.append(cur)
    return [t.strip() for t in terms if t.strip()]


def _label_term(term: str) -> Callable[[dict[str, str]], bool]:
    m = _SET.match(term)
    if m:
        key, op, values = m.group(1), m.group(2), {v.strip() for v in m.group(3).split(",")}
        if op == "in":
            return lambda labels: labels.get(key) in values
        return lambda labels: labels.get(key) not in values
    for op in ("!=", "==", "="):
        if op in term:
            key, value = (s.strip() for s in term.split(op, 1))
            if not key:
                raise SelectorError(term)
            if op == "!=":
                return lambda labels: labels.get(key) != value
            return lambda labels: labels.get(key) == value
    if term.startswith("!"):
        key = term[1:].strip()
        return lambda labels: key not in labels
    if not re.fullmatch(r"[A-Za-z0-9./_-]+", term):
        raise SelectorError(term)
    return lambda labels: term in labels


def label_selector(selector: str | None) -> Predicate:
    """A predicate on objects for ``labelSelector``; every term must hold (comma = and)."""
    if not selector:
        return lambda obj: True
    terms = [_label_term(t) for t in _split_terms(selector)]

    def match(obj: dict[str, Any]) -> bool:
        labels = (obj.get("metadata") or {}).get("labels") or {}
        return all(t(labels) for t in terms)

    return match


def _field(obj: dict[str, Any], path: str) -> str:
    node: Any = obj
    for part in path.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return "" if node is None else str(node)


def field_selector(selector: str | None) -> Predicate:
    """A predicate for ``fieldSelector`` (``metadata.name``, ``metadata.namespace``, any dotted
    field; ``=``, ``==``, ``!=``)."""
    if not selector:
        return lambda obj: True
    terms: list[tuple[str, bool, str]] = []
    for term in _split_terms(selector):
        for op in ("!=", "==", "="):
            if op in term:
                key, value = (s.strip() for s in term.split(op, 1))
                terms.append((key, op != "!=", value))
                break
        else:
            raise SelectorError(term)

    def match(obj: dict[str, Any]) -> bool:
        return all((_field(obj, k) == v) == eq for k, eq, v in terms)

    return match
