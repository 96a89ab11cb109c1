"""Checks of CustomResourceDefinition schemas that need no API server (shared by test_crd.py and
test_deploy_manifests.py).

- :func:`structural_violations`: the four rules of a structural schema (Kubernetes docs, "Extend
  the Kubernetes API with CustomResourceDefinitions", "Specifying a structural schema"),
  written independently of ``controller.k8s.structural`` so the two can disagree.
- :func:`object_validator`: a jsonschema validator that judges a custom object as the API
  server would with strict field validation (kubectl's default): OpenAPI ``nullable`` as a
  ``null`` type, and an object with ``properties`` refusing other fields unless it preserves
  unknown fields (pruning).
"""

from __future__ import annotations

from typing import Any

import jsonschema
import kubernetes_validate

K8S_VERSIONS = sorted(
    {"1.33", ".".join(kubernetes_validate.latest_version().split(".")[:2])},
    key=lambda v: tuple(int(n) for n in v.split(".")),
)
"""Kubernetes releases manifests are validated against (kubernetes-validate's schemas): one in
support, and the newest the installed kubernetes-validate ships."""

_JUNCTORS = ("allOf", "anyOf", "oneOf", "not")
_NOT_IN_JUNCTORS = (
    "type",
    "description",
    "default",
    "additionalProperties",
    "nullable",
    "title",
    "x-kubernetes-preserve-unknown-fields",
    "x-kubernetes-int-or-string",
    "x-kubernetes-embedded-resource",
)
_NOT_JSON_SCHEMA_PROPS = ("$ref", "$defs", "$schema", "$id", "const", "discriminator", "$comment")


def structural_violations(schema: dict[str, Any], path: str = "") -> list[str]:
    """Every breach of the structural rules in an ``openAPIV3Schema`` (empty: structural)."""
    found: list[str] = []
    _outside(schema, path or "<root>", found, root=True)
    return found


def _outside(node: dict[str, Any], path: str, found: list[str], root: bool = False) -> None:
    for key in _NOT_JSON_SCHEMA_PROPS:
        if key in node:
            found.append(f"{path}: {key} is not allowed in a CRD schema")
    if not (
        "type" in node
        or node.get("x-kubernetes-preserve-unknown-fields")
        or node.get("x-kubernetes-int-or-string")
    ):
        found.append(f"{path}: no type (rule 1)")
    if node.get("additionalProperties") is False:
        found.append(f"{path}: additionalProperties: false")
    if "additionalProperties" in node and "properties" in node:
        found.append(f"{path}: properties and additionalProperties together")
    if root and "metadata" in node.get("properties", {}):
        metadata = node["properties"]["metadata"]
        if set(metadata) - {"type", "description"} and set(metadata.get("properties", {})) - {
            "name",
            "generateName",
        }:
            found.append(f"{path}.metadata: restricts more than name and generateName (rule 4)")
    for name, child in node.get("properties", {}).items():
        _outside(child, f"{path}.{name}", found)
    if isinstance(node.get("additionalProperties"), dict):
        _outside(node["additionalProperties"], f"{path}.<value>", found)
    if "items" in node:
        _outside(node["items"], f"{path}[]", found)
    for key in _JUNCTORS:
        for branch in _branches(node, key):
            _inside(branch, node, f"{path}/{key}", found)


def _inside(node: dict[str, Any], outer: dict[str, Any], path: str, found: list[str]) -> None:
    for key in (*_NOT_IN_JUNCTORS, *_NOT_JSON_SCHEMA_PROPS):
        if key in node:
            found.append(f"{path}: {key} inside a junctor (rule 3)")
    for name, child in node.get("properties", {}).items():
        if name not in outer.get("properties", {}):
            found.append(f"{path}: {name!r} only inside a junctor (rule 2)")
            continue
        _inside(child, outer["properties"][name], f"{path}.{name}", found)
    if "items" in node:
        if "items" not in outer:
            found.append(f"{path}: items only inside a junctor (rule 2)")
        else:
            _inside(node["items"], outer["items"], f"{path}[]", found)
    for key in _JUNCTORS:
        for branch in _branches(node, key):
            _inside(branch, outer, f"{path}/{key}", found)


def _branches(node: dict[str, Any], key: str) -> list[dict[str, Any]]:
    value = node.get(key)
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def to_json_schema(node: dict[str, Any], in_junctor: bool = False) -> dict[str, Any]:
    """An OpenAPI v3 (CRD) schema node as a JSON Schema draft 4 node (see the module doc)."""
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key.startswith("x-kubernetes-") or key in ("nullable", "format"):
            continue
        if key == "properties":
            out[key] = {name: to_json_schema(child, in_junctor) for name, child in value.items()}
        elif key in ("items", "not"):
            out[key] = to_json_schema(value, in_junctor or key == "not")
        elif key in ("allOf", "anyOf", "oneOf"):
            out[key] = [to_json_schema(branch, True) for branch in value]
        elif key == "additionalProperties" and isinstance(value, dict):
            out[key] = to_json_schema(value, in_junctor)
        else:
            out[key] = value
    if node.get("nullable"):
        if "type" in out:
            out["type"] = [out["type"], "null"]
        if "enum" in out:
            out["enum"] = [*out["enum"], None]
    if (
        not in_junctor
        and "properties" in node
        and not node.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


def object_validator(schema: dict[str, Any]) -> jsonschema.Draft4Validator:
    """Validates a custom object (or a part of one) against its CRD schema node."""
    converted = to_json_schema(schema)
    jsonschema.Draft4Validator.check_schema(converted)
    return jsonschema.Draft4Validator(converted)


def crd_schema(crd: dict[str, Any], version: str = "v1alpha1") -> dict[str, Any]:
    """The ``openAPIV3Schema`` of one version of a CRD."""
    (served,) = [v for v in crd["spec"]["versions"] if v["name"] == version]
    schema: dict[str, Any] = served["schema"]["openAPIV3Schema"]
    return schema
