"""What the policy file's models share: the pydantic configuration and a side's cluster."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from controller.policy.gateway import NAME_PATTERN


class PolicyModel(BaseModel):
    """Base of the policy file's models: camelCase in YAML, unknown fields refused, frozen."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )


class Side(PolicyModel):
    """One side of the rollout (or a target of the comparator): a cluster of the gateway file."""

    cluster: str = Field(
        pattern=NAME_PATTERN, description="The name of a cluster of the gateway file."
    )
