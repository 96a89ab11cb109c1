"""The JSON Schema of policy files, for editors (YAML language servers) and CI.

Generated from the pydantic models in validation mode, keys spelled as in files (camelCase),
durations and percentages as strings with a ``pattern``, defaults written the way a file would
write them (``30s``, ``5%``; the default stages and SLOs included).

What the schema cannot say, and only ``sluice policy validate`` checks: stage weights that
increase and end at 100%; a 0% (shadow) stage only first, with ``parity`` and a parity SLO;
a parity SLO only with ``parity``; methods other than GET and HEAD mirrored only with a
sister; baseline and candidate being different clusters (and the parity clusters neither);
SLO names used once; a deadline at least the bake time; an analysis interval above 0s; the
override's candidate and baseline values differing; the route and clusters (parity's
included) existing in the gateway.
"""

from __future__ import annotations

from typing import Any

from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue, NoDefault
from pydantic_core import (
    PydanticSerializationError,
    SchemaError,
    SchemaSerializer,
    core_schema,
    to_jsonable_python,
)

from controller.policy.gateway import Gateway
from controller.policy.rollout_policy import RolloutPolicy

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
POLICY_SCHEMA_ID = "https://sluice.dev/schemas/rolloutpolicy-v1alpha1.json"


def policy_json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a ``kind: RolloutPolicy`` file."""
    body = RolloutPolicy.model_json_schema(
        by_alias=True, mode="validation", schema_generator=_FileSchema
    )
    return {
        "$schema": SCHEMA_DIALECT,
        "$id": POLICY_SCHEMA_ID,
        **body,
        "title": "Sluice RolloutPolicy (sluice.dev/v1alpha1)",
        "$comment": _LIMITS,
    }


def gateway_json_schema() -> dict[str, Any]:
    """The JSON Schema of a ``kind: Gateway`` file, written like the policy's (defaults as
    files write them: ``1s``, not ``PT1S``)."""
    return Gateway.model_json_schema(by_alias=True, mode="validation", schema_generator=_FileSchema)


_LIMITS = (
    "Checked by `sluice policy validate` only: stage weights increase and end at 100%;"
    " a 0% (shadow) stage comes first only, with parity and a parity SLO; a parity SLO needs"
    " parity; methods other than GET and HEAD need parity.sister; baseline and candidate"
    " differ, and the parity clusters are neither; SLO names are unique; a deadline is at"
    " least its bake time; the analysis interval is above 0s; the override's two values"
    " differ; with --gateway, the route and clusters exist in the gateway."
)


class _FileSchema(GenerateJsonSchema):
    """Defaults as files write them, default factories included; no per-field titles (the
    generated ones, "Minrequests", help no one)."""

    def get_default_value(self, schema: core_schema.WithDefaultSchema) -> Any:
        factory = schema.get("default_factory")
        if factory is not None and not schema.get("default_factory_takes_data"):
            return factory()  # type: ignore[call-arg]
        return super().get_default_value(schema)

    def default_schema(self, schema: core_schema.WithDefaultSchema) -> JsonSchemaValue:
        json_schema = super().default_schema(schema)
        default = self.get_default_value(schema)
        if "default" not in json_schema or default is NoDefault or default is None:
            return json_schema
        try:
            encoded = SchemaSerializer(schema["schema"]).to_python(
                default, mode="json", by_alias=True, exclude_none=True
            )
        except (PydanticSerializationError, SchemaError, TypeError, ValueError):
            # Models (the default stages and SLOs) serialize themselves.
            encoded = to_jsonable_python(default, by_alias=True, exclude_none=True)
        json_schema["default"] = encoded
        return json_schema

    def field_title_should_be_set(self, schema: Any) -> bool:
        return False
