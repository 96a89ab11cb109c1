"""pydantic's JSON Schema (draft 2020-12) turned into a Kubernetes *structural* schema.

A CustomResourceDefinition (``apiextensions.k8s.io/v1``) takes an OpenAPI v3 subset
(``JSONSchemaProps``) that must be structural (Kubernetes docs, "Extend the Kubernetes API with
CustomResourceDefinitions", section "Specifying a structural schema"):

1. every node below ``properties``, ``additionalProperties`` and ``items`` has a ``type``,
   unless it sets ``x-kubernetes-int-or-string`` or ``x-kubernetes-preserve-unknown-fields``;
2. a field named inside ``allOf``/``anyOf``/``oneOf``/``not`` is also specified outside them;
3. inside those junctors: no ``type``, ``description``, ``default``, ``additionalProperties``,
   ``nullable`` (nor ``title`` and the ``x-kubernetes-*`` extensions);
4. ``metadata`` restricts ``name`` and ``generateName`` only (the CRD leaves it alone).

What the conversion does: ``$ref`` inlined (siblings such as a field's ``default`` kept),
``anyOf [X, null]`` turned into X with ``nullable: true``, ``const`` into a one-value ``enum``,
numeric ``exclusiveMaximum``/``exclusiveMinimum`` into OpenAPI 3.0 booleans beside
``maximum``/``minimum``, ``additionalProperties: false`` dropped (the API server prunes unknown
fields, and refuses them under strict field validation, kubectl's default), a free-form object
or value into ``x-kubernetes-preserve-unknown-fields``, ``title``/``$defs``/``discriminator``
dropped. A discriminated union of objects (pydantic's ``oneOf`` with ``discriminator``) becomes
one object with the union of the branches' fields outside, and per branch (inside ``oneOf``,
value validations only) the discriminator's values, the branch's own constraints and required
fields, and ``not: {anyOf: [{required: [f]}...]}`` refusing the fields other branches own.

Limits (the controller validates every spec with the pydantic model anyway): a union field
whose type differs between branches (a number in one, a string in another) accepts any JSON
value outside the branches (junctors cannot say ``type``); defaults of union fields are kept
only when every branch has the field with the same default.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

JUNCTORS = ("allOf", "anyOf", "oneOf")
"""Logical junctors; ``not`` is handled beside them."""

GENERIC = frozenset(
    {
        "type",
        "description",
        "default",
        "nullable",
        "title",
        "additionalProperties",
        "x-kubernetes-preserve-unknown-fields",
        "x-kubernetes-int-or-string",
        "x-kubernetes-embedded-resource",
        "x-kubernetes-list-type",
        "x-kubernetes-list-map-keys",
        "x-kubernetes-map-type",
    }
)
"""Keys a structural schema forbids inside junctors (rule 3, and the extensions)."""

_DROPPED = frozenset({"title", "$schema", "$id", "$defs", "$comment", "discriminator"})
_PRESERVE = "x-kubernetes-preserve-unknown-fields"


class StructuralError(ValueError):
    """The JSON Schema holds a construct this converter cannot express structurally (a cycle
    of ``$ref``, a union of objects whose nested objects differ, a type in a junctor...)."""


def to_structural(
    schema: Mapping[str, Any],
    defs: Mapping[str, Any] | None = None,
    *,
    rename: Callable[[str], str] | None = None,
    keep_defaults: bool = True,
) -> dict[str, Any]:
    """The structural OpenAPI v3 schema of ``schema`` (see the module doc for what changes).

    Args:
        schema: a JSON Schema node as pydantic generates it.
        defs: what ``#/$defs/<name>`` refers to; default: ``schema["$defs"]``.
        rename: applied to property names and ``required`` entries (e.g. snake_case to
            camelCase for a model without aliases); default: names kept.
        keep_defaults: False drops every ``default`` (e.g. for a status the controller always
            writes whole).

    Raises:
        StructuralError: see :class:`StructuralError`.
    """
    converter = _Converter(
        defs if defs is not None else schema.get("$defs", {}),
        rename or (lambda name: name),
        keep_defaults,
    )
    return converter.node(schema, ())


class _Converter:
    def __init__(
        self, defs: Mapping[str, Any], rename: Callable[[str], str], keep_defaults: bool
    ) -> None:
        self.defs = defs
        self.rename = rename
        self.keep_defaults = keep_defaults

    def node(self, schema: Mapping[str, Any], refs: tuple[str, ...]) -> dict[str, Any]:
        schema, refs = self._resolve(schema, refs)
        schema = self._unnull(schema, refs)
        union = _union_key(schema, lambda s: self._resolve(s, refs)[0])
        if union is not None:
            return self._union(schema, union, refs)
        out: dict[str, Any] = {}
        for key, value in schema.items():
            if key in _DROPPED:
                continue
            if key == "const":
                out["enum"] = [value]
            elif key == "properties":
                out[key] = {self.rename(k): self.node(v, refs) for k, v in value.items()}
            elif key == "required":
                out[key] = [self.rename(name) for name in value]
            elif key == "items":
                out[key] = self.node(value, refs)
            elif key == "additionalProperties":
                if value is True or value == {}:
                    out[_PRESERVE] = True
                elif value is not False:
                    out[key] = self.node(value, refs)
            elif key in ("exclusiveMaximum", "exclusiveMinimum") and not isinstance(value, bool):
                out["maximum" if key == "exclusiveMaximum" else "minimum"] = value
                out[key] = True
            elif key in JUNCTORS:
                out[key] = [self.value_only(branch, refs) for branch in value]
            elif key == "not":
                out[key] = self.value_only(value, refs)
            elif key == "default":
                if self.keep_defaults and value is not None:
                    out[key] = value
            else:
                out[key] = value
        if "type" not in out and not out.get(_PRESERVE):
            inferred = _infer_type(out)
            if inferred is None:
                out[_PRESERVE] = True  # any JSON value
            else:
                out["type"] = inferred
        _check_junctor_fields(out)
        return out

    def value_only(self, schema: Mapping[str, Any], refs: tuple[str, ...]) -> dict[str, Any]:
        """A junctor's branch: value validations only (rule 3)."""
        schema, refs = self._resolve(schema, refs)
        out: dict[str, Any] = {}
        for key, value in schema.items():
            if key in _DROPPED:
                continue
            if key in GENERIC:
                raise StructuralError(f"{key!r} inside allOf/anyOf/oneOf/not: {dict(schema)}")
            if key == "const":
                out["enum"] = [value]
            elif key == "properties":
                out[key] = {self.rename(k): self.value_only(v, refs) for k, v in value.items()}
            elif key == "required":
                out[key] = [self.rename(name) for name in value]
            elif key in ("items", "not"):
                out[key] = self.value_only(value, refs)
            elif key in JUNCTORS:
                out[key] = [self.value_only(branch, refs) for branch in value]
            else:
                out[key] = value
        return out

    def _resolve(
        self, schema: Mapping[str, Any], refs: tuple[str, ...]
    ) -> tuple[Mapping[str, Any], tuple[str, ...]]:
        ref = schema.get("$ref")
        if ref is None:
            return schema, refs
        name = ref.removeprefix("#/$defs/")
        if name in refs:
            raise StructuralError(f"recursive schema: {' -> '.join((*refs, name))}")
        if name not in self.defs:
            raise StructuralError(f"unresolvable $ref {ref!r}")
        target, refs = self._resolve(self.defs[name], (*refs, name))
        # The referring node's siblings (a field's default or description) win.
        return {**target, **{k: v for k, v in schema.items() if k != "$ref"}}, refs

    def _unnull(self, schema: Mapping[str, Any], refs: tuple[str, ...]) -> Mapping[str, Any]:
        for key in ("anyOf", "oneOf"):
            branches = schema.get(key)
            if not branches or {"type": "null"} not in branches:
                continue
            rest = [branch for branch in branches if branch != {"type": "null"}]
            siblings = {k: v for k, v in schema.items() if k != key}
            if len(rest) == 1:
                target, _ = self._resolve(rest[0], refs)
                merged = {**target, **siblings}
            else:
                merged = {**siblings, key: rest}
            return {**merged, "nullable": True}
        return schema

    def _union(self, schema: Mapping[str, Any], key: str, refs: tuple[str, ...]) -> dict[str, Any]:
        branches = [self.node(branch, refs) for branch in schema[key]]
        names: list[str] = []
        for branch in branches:
            names += [name for name in branch.get("properties", {}) if name not in names]
        outer_props: dict[str, Any] = {}
        inner_props: list[dict[str, Any]] = [{} for _ in branches]
        for name in names:
            having = [i for i, b in enumerate(branches) if name in b.get("properties", {})]
            fields = [branches[i]["properties"][name] for i in having]
            outer, inner = _merge_field(fields, every_branch=len(having) == len(branches))
            outer_props[name] = outer
            for i, rest in zip(having, inner, strict=True):
                if rest:
                    inner_props[i][name] = rest
        required = [name for name in names if all(name in b.get("required", ()) for b in branches)]
        out: dict[str, Any] = {"type": "object"}
        if schema.get("description"):
            out["description"] = schema["description"]
        else:
            out["description"] = _union_description(schema, branches)
        out["properties"] = outer_props
        if required:
            out["required"] = required
        out[key] = [
            _branch_validation(branch, props, names)
            for branch, props in zip(branches, inner_props, strict=True)
        ]
        _check_junctor_fields(out)
        return out


def _union_key(schema: Mapping[str, Any], resolve: Callable[[Any], Any]) -> str | None:
    """``oneOf``/``anyOf`` when its branches are objects with their own fields (a union of
    models), not value-only constraints such as ``{"required": [...]}``."""
    for key in ("oneOf", "anyOf"):
        branches = schema.get(key)
        if branches and any("properties" in resolve(branch) for branch in branches):
            return key
    return None


def _merge_field(
    fields: list[dict[str, Any]], *, every_branch: bool
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """One field of a union's branches: what goes outside (generic keys and constraints all
    branches share) and, per branch having the field, the constraints left to the branch."""
    first = fields[0]
    if all(field == first for field in fields) and every_branch:
        return first, [{} for _ in fields]
    types = {field.get("type") for field in fields}
    nested = ("properties", "items", "additionalProperties")
    if any(k in f for f in fields for k in nested) and any(f != first for f in fields):
        raise StructuralError(f"a union's branches define a nested object differently: {fields}")
    outer: dict[str, Any] = {}
    if len(types) == 1 and None not in types:
        outer["type"] = first["type"]
    else:
        outer[_PRESERVE] = True  # the branches disagree on the type: see the module doc
    descriptions = list(dict.fromkeys(f["description"] for f in fields if "description" in f))
    if descriptions:
        outer["description"] = "; or ".join(descriptions)
    if any(f.get("nullable") for f in fields):
        outer["nullable"] = True
    defaults = [f.get("default") for f in fields]
    if every_branch and "default" in first and all(d == defaults[0] for d in defaults):
        outer["default"] = defaults[0]
    keys = {k for f in fields for k in f if k not in GENERIC}
    inner: list[dict[str, Any]] = [{} for _ in fields]
    for k in sorted(keys):
        values = [f.get(k) for f in fields]
        if all(k in f for f in fields) and all(v == values[0] for v in values):
            outer[k] = values[0]
            continue
        if k == "enum" and all(k in f for f in fields):
            outer[k] = list(dict.fromkeys(v for f in fields for v in f[k]))
        for i, f in enumerate(fields):
            if k in f:
                inner[i][k] = f[k]
    return outer, inner


def _branch_validation(
    branch: dict[str, Any], props: dict[str, Any], names: list[str]
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if props:
        out["properties"] = props
    if branch.get("required"):
        out["required"] = branch["required"]
    others = [name for name in names if name not in branch.get("properties", {})]
    refusals = [{"not": {"anyOf": [{"required": [name]} for name in others]}}] if others else []
    own = [{k: branch[k]} for k in (*JUNCTORS, "not") if k in branch]
    checks = refusals + own
    if len(checks) == 1:
        out.update(checks[0])
    elif checks:
        out["allOf"] = checks
    return out


def _union_description(schema: Mapping[str, Any], branches: list[dict[str, Any]]) -> str:
    tag = schema.get("discriminator", {}).get("propertyName")
    lines = [f"One of (by {tag}):" if tag else "One of:"]
    for branch in branches:
        values = branch.get("properties", {}).get(tag, {}).get("enum", []) if tag else []
        summary = branch.get("description", "").split("\n\n")[0].replace("\n", " ")
        label = " | ".join(str(v) for v in values)
        lines.append(f"- {label}: {summary}" if label else f"- {summary}")
    return "\n".join(lines)


def _infer_type(node: Mapping[str, Any]) -> str | None:
    if "properties" in node:
        return "object"
    if "items" in node:
        return "array"
    values = node.get("enum")
    if values:
        kinds = {type(v) for v in values}
        names = {str: "string", bool: "boolean", int: "integer", float: "number"}
        if len(kinds) == 1 and next(iter(kinds)) in names:
            return names[next(iter(kinds))]
    return None


def _check_junctor_fields(node: Mapping[str, Any]) -> None:
    """Rule 2: a field a junctor names is specified outside it too."""
    outside = node.get("properties", {})
    stack: list[Any] = [node.get(key) for key in (*JUNCTORS, "not") if key in node]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(item)
            continue
        for name in item.get("properties", {}):
            if name not in outside:
                raise StructuralError(f"{name!r} is named in a junctor but not outside it")
        stack.extend(item.get(key) for key in (*JUNCTORS, "not") if key in item)
