"""What the API server does with a custom object once its CustomResourceDefinition is
installed: prune unknown fields (or refuse them with ``fieldValidation=Strict``), drop nulls
where the schema is not ``nullable``, apply ``default`` values, then validate against the
``openAPIV3Schema`` (422 ``Invalid`` with one cause per field).

Source: Kubernetes docs, "Extend the Kubernetes API with CustomResourceDefinitions": field
pruning, defaulting and nullable, validation; API concepts, "Field validation".
"""

from __future__ import annotations

import copy
from typing import Any

import jsonschema  # type: ignore[import-untyped]

from .errors import ApiError
from .resources import ResourceType

Obj = dict[str, Any]


def _json_schema(node: Obj) -> Obj:
    """An OpenAPI v3 schema node as JSON Schema draft 4 (nullable as a null type; Kubernetes
    extensions and ``format`` ignored: the server checks only known formats)."""
    out: Obj = {}
    for key, value in node.items():
        if key.startswith("x-kubernetes-") or key in ("nullable", "format", "default"):
            continue
        if key == "properties":
            out[key] = {k: _json_schema(v) for k, v in value.items()}
        elif key in ("items", "not") or (key == "additionalProperties" and isinstance(value, dict)):
            out[key] = _json_schema(value)
        elif key in ("allOf", "anyOf", "oneOf"):
            out[key] = [_json_schema(v) for v in value]
        else:
            out[key] = value
    if node.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    if node.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
    return out


def _prune(value: Any, schema: Obj, path: str, unknown: list[str]) -> Any:
    """Drop fields the structural schema does not name (recording them in ``unknown``) and
    nulls where it is not nullable; fill in ``default`` values."""
    if isinstance(value, dict) and (schema.get("type") == "object" or "properties" in schema):
        props: Obj = schema.get("properties") or {}
        extra = schema.get("additionalProperties")
        keep_unknown = schema.get("x-kubernetes-preserve-unknown-fields") or extra is True
        out: Obj = {}
        for key, child in value.items():
            sub = f"{path}.{key}" if path else key
            if not path and key == "metadata":
                out[key] = child  # ObjectMeta: the server's own, never pruned
            elif key in props:
                if child is None and not props[key].get("nullable"):
                    continue
                out[key] = _prune(child, props[key], sub, unknown)
            elif isinstance(extra, dict):
                out[key] = _prune(child, extra, sub, unknown)
            elif keep_unknown or (not path and key in ("apiVersion", "kind", "metadata")):
                out[key] = child
            else:
                unknown.append(sub)
        for key, child in props.items():
            if key not in out and "default" in child:
                out[key] = _prune(copy.deepcopy(child["default"]), child, path, unknown)
        return out
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [_prune(v, schema["items"], f"{path}[{i}]", unknown) for i, v in enumerate(value)]
    return value


class CustomResource:
    """The schema of one installed CRD version, applied to every write of its objects."""

    def __init__(self, res: ResourceType, schema: Obj) -> None:
        self.res = res
        self.schema = schema
        converted = _json_schema(schema)
        jsonschema.Draft4Validator.check_schema(converted)
        self.validator = jsonschema.Draft4Validator(converted)

    def admit(self, obj: Obj, strict: bool) -> Obj:
        """The object as stored: pruned and defaulted; ApiError 400 (strict, unknown fields)
        or 422 (schema violations)."""
        name = (obj.get("metadata") or {}).get("name", "")
        unknown: list[str] = []
        admitted: Obj = _prune(obj, self.schema, "", unknown)
        if strict and unknown:
            fields = ", ".join(f'unknown field "{u}"' for u in unknown)
            raise ApiError(400, f"strict decoding error: {fields}")
        causes = []
        for err in sorted(self.validator.iter_errors(admitted), key=lambda e: list(e.path)):
            field = ".".join(str(p) for p in err.absolute_path)
            if err.validator == "required":
                # As the server words it: the missing field's path, "Required value".
                missing = err.message.split("'")[1]
                field = f"{field}.{missing}" if field else missing
                causes.append(
                    {"reason": "FieldValueRequired", "message": "Required value", "field": field}
                )
                continue
            reason = "FieldValueNotSupported" if err.validator == "enum" else "FieldValueInvalid"
            causes.append({"reason": reason, "message": err.message, "field": field})
        if causes:
            summary = ", ".join(f"{c['field'] or '<root>'}: {c['message']}" for c in causes)
            raise ApiError(
                422,
                f'{self.res.kind}.{self.res.group} "{name}" is invalid: [{summary}]',
                "Invalid",
                {"name": name, "group": self.res.group, "kind": self.res.kind, "causes": causes},
            )
        return admitted


def crd_version_schema(crd: Obj, version: str) -> Obj:
    """The ``openAPIV3Schema`` of ``version`` in a CRD; KeyError if it has none."""
    for v in crd["spec"]["versions"]:
        if v["name"] == version:
            schema: Obj = v["schema"]["openAPIV3Schema"]
            return schema
    raise KeyError(version)
