"""A JSON Schema (pydantic's, draft 2020-12) as Markdown tables: one section per object of the
file, one row per field, by its dotted YAML path (``spec.analysis.slos[].maxDrift``).

Each row gives the type as a file writes it (a duration ``30s``, a percentage ``5%``, the
values of an enum), whether the field is required or its default, its unit and its
description. ``$ref`` is followed into ``$defs``; a field holding a union with a
discriminator (the SLO kinds) gets one section per variant. Fields keep the schema's order
(the models' declaration order), so the output depends on the code alone.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from controller.cli.reference_md import code, from_docstring, table

DURATION_UNIT = "time: `ms`, `s`, `m`, `h`"
PERCENT_UNIT = "percent (`%`)"
_DURATION = re.compile(r"\(ms\|s\|m\|h\)")
_DECIMALS = re.compile(r"\\d\{1,(\d+)\}0\*")

Schema = dict[str, Any]


@dataclass
class Section:
    """One object of the file: where it sits, what it is, its fields as table rows.

    Attributes:
        path: the dotted YAML path of the object (``""`` for the top level).
        variant: for one kind of a union, which discriminator values select it.
        description: the object's own description (its model's docstring).
        rows: ``(path, type, required or default, unit, description)`` per field.
        properties: the object's ``properties`` in the schema, by name.
        constraint: which fields go together (``Exactly one of `header`, `cookie`.``).
    """

    path: str
    variant: str = ""
    description: str = ""
    rows: list[tuple[str, str, str, str, str]] = field(default_factory=list)
    properties: Schema = field(default_factory=dict)
    constraint: str = ""


def sections(schema: Schema) -> list[Section]:
    """Every object reachable from the schema's root, depth first, parents before children."""
    return list(_Walker(schema.get("$defs", {})).object(schema, "", "", ()))


def fields(schema: Schema) -> list[str]:
    """The dotted path of every property reachable from the root (what the reference lists)."""
    return [row[0] for section in sections(schema) for row in section.rows]


def leaves(schema: Schema) -> list[tuple[str, Schema]]:
    """``(path, property schema)`` of every property whose value is not an object."""
    walker = _Walker(schema.get("$defs", {}))
    return [
        (_join(section.path, name), prop)
        for section in sections(schema)
        for name, prop in section.properties.items()
        if not walker.variants(prop)
    ]


def render(schema: Schema, level: int = 3) -> str:
    """The sections as Markdown, headings at ``level``."""
    parts: list[str] = []
    for section in sections(schema):
        title = code(section.path) if section.path else "Top level"
        if section.variant:
            title += f", {section.variant}"
        parts.append(f"{'#' * level} {title}")
        if section.description:
            parts.append(from_docstring(section.description))
        if section.constraint:
            parts.append(section.constraint)
        header = ("Field", "Type", "Required / default", "Unit", "Description")
        parts.append(table(header, section.rows))
    return "\n\n".join(parts) + "\n"


class _Walker:
    def __init__(self, defs: Schema) -> None:
        self.defs = defs

    def resolve(self, node: Schema) -> Schema:
        """``node`` with its ``$ref`` followed and a ``None`` alternative dropped."""
        while True:
            if "$ref" in node:
                node = self.defs[node["$ref"].rsplit("/", 1)[-1]]
            elif "anyOf" in node and "type" not in node:
                kept = [b for b in node["anyOf"] if b.get("type") != "null"]
                if len(kept) != 1:
                    return node
                node = kept[0]
            else:
                return node

    def variants(self, node: Schema) -> list[tuple[str, Schema]]:
        """The object kinds a union field (or a list's items) may hold, with the discriminator
        values selecting each; one unnamed entry for a plain object; none for a scalar."""
        node = self.resolve(node)
        if node.get("type") == "array":
            return self.variants(node.get("items", {}))
        if node.get("type") == "object":
            return [("", node)]
        if "oneOf" in node or "anyOf" in node:
            found = []
            discriminator = node.get("discriminator", {})
            key = discriminator.get("propertyName", "")
            branches: list[Schema] = node.get("oneOf") or node.get("anyOf") or []
            for branch in branches:
                target = self.resolve(branch)
                if target.get("type") != "object":
                    continue
                values = sorted(
                    value
                    for value, ref in discriminator.get("mapping", {}).items()
                    if ref == branch.get("$ref")
                )
                label = f"{code(key)}: " + " \\| ".join(code(v) for v in values) if values else ""
                found.append((label, target))
            return found
        return []

    def object(
        self, node: Schema, path: str, variant: str, within: tuple[int, ...]
    ) -> Iterator[Section]:
        """The section of the object at ``path``, then its children's; ``within``: the
        objects above it (a model containing itself is listed once, not forever)."""
        node = self.resolve(node)
        section = Section(path, variant, node.get("description", ""))
        section.properties = node.get("properties", {})
        section.constraint = _choice(node)
        children: list[tuple[str, Schema, str]] = []
        required = set(node.get("required", ()))
        for name, prop in node.get("properties", {}).items():
            where = _join(path, name)
            kinds = self.variants(prop)
            own = self.resolve(prop)
            list_of = own.get("type") == "array"
            child_path = f"{where}[]" if list_of else where
            described = prop.get("description") or (
                kinds[0][1].get("description", "") if len(kinds) == 1 else ""
            )
            section.rows.append(
                (
                    code(where),
                    self.type_of(prop, child_path),
                    "required" if name in required else _default(prop),
                    self.unit_of(prop),
                    from_docstring(described.split("\n\n", 1)[0] if kinds else described),
                )
            )
            children += [(child_path, target, label) for label, target in kinds]
        yield section
        above = (*within, id(node))
        for child_path, target, label in children:
            if id(target) not in above:
                yield from self.object(target, child_path, label, above)

    def type_of(self, prop: Schema, child_path: str) -> str:
        node = self.resolve(prop)
        kinds = self.variants(prop)
        if node.get("type") == "array":
            items = node.get("items", {})
            inner = self.kinds_text(kinds, child_path) if kinds else self.type_of(items, child_path)
            limit = f", at least {node['minItems']}" if node.get("minItems", 0) > 1 else ""
            limit = ", not empty" if node.get("minItems") == 1 else limit
            return f"list of {inner}{limit}"
        if kinds:
            return self.kinds_text(kinds, child_path)
        if "const" in node:
            return code(str(node["const"]))
        if "enum" in node:
            return "one of " + ", ".join(code(str(v)) for v in node["enum"])
        if "anyOf" in node and "type" not in node:
            return " or ".join(self.type_of(b, child_path) for b in node["anyOf"])
        return _scalar(node)

    def kinds_text(self, kinds: list[tuple[str, Schema]], child_path: str) -> str:
        if len(kinds) == 1:
            return f"object (see {code(child_path)})"
        return f"object, one of {len(kinds)} kinds (see {code(child_path)} below)"

    def unit_of(self, prop: Schema) -> str:
        node = self.resolve(prop)
        if node.get("type") == "array":
            node = self.resolve(node.get("items", {}))
        kind = _string_kind(node)
        return {"duration": DURATION_UNIT, "percent": PERCENT_UNIT}.get(kind, "—")


def _choice(node: Schema) -> str:
    """The object's ``oneOf``/``anyOf`` of required fields in words."""
    for key, words in (("oneOf", "Exactly one of"), ("anyOf", "At least one of")):
        branches = node.get(key, [])
        if branches and all(set(b) == {"required"} for b in branches):
            names = [", ".join(code(n) for n in b["required"]) for b in branches]
            return f"{words} {', '.join(names)}."
    return ""


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _string_kind(node: Schema) -> str:
    pattern = node.get("pattern", "")
    if node.get("type") != "string" or not pattern:
        return ""
    if _DURATION.search(pattern):
        return "duration"
    if pattern.endswith("%$"):
        return "percent"
    return ""


def _scalar(node: Schema) -> str:
    kind = str(node.get("type", "any"))
    if _string_kind(node) == "duration":
        return "duration, e.g. `30s`, `1.5s`, `250ms`, `1h30m`"
    if _string_kind(node) == "percent":
        bounds = ["more than 0%"] if "not" in node else []
        if node["pattern"].startswith("^0*(100"):
            bounds.append("at most 100%")
        decimals = _DECIMALS.search(node["pattern"])
        if decimals:
            bounds.append(f"at most {decimals.group(1)} decimals")
        return "percentage, e.g. `5%`" + (f" ({', '.join(bounds)})" if bounds else "")
    if kind in ("integer", "number"):
        return kind + _bounds(node)
    if kind == "boolean":
        return "`true` or `false`"
    if kind == "string":
        text = "string"
        if node.get("minLength", 0) >= 1:
            text += ", not empty"
        if "pattern" in node:
            text += f", matching {code(node['pattern'])}"
        return text
    return str(kind)


def _bounds(node: Schema) -> str:
    words = []
    for key, word in (
        ("minimum", ">="),
        ("exclusiveMinimum", ">"),
        ("maximum", "<="),
        ("exclusiveMaximum", "<"),
    ):
        if key in node:
            words.append(f"{word} {node[key]}")
    return f", {' and '.join(words)}" if words else ""


def _default(prop: Schema) -> str:
    if "default" not in prop:
        return "optional"
    value = prop["default"]
    if value is None:
        return "optional (none)"
    return "default " + code(_flow(value))


def _flow(value: Any) -> str:
    """A default as YAML flow style would write it: ``[GET, HEAD]``, ``{cluster: x}``."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_flow(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_flow(v) for v in value) + "]"
    if isinstance(value, str):
        plain = value and not re.search(r"[:{}\[\],#&*!|>'\"@`]|^[\s%-]|\s$", value)
        return value if plain else json.dumps(value)
    return json.dumps(value)
