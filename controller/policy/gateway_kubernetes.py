"""The ``kubernetes`` source of a gateway cluster: a Service whose EndpointSlices give the
endpoints Sluice serves over EDS (see :mod:`controller.k8s.endpointslices`).

Shape (YAML, under ``spec.clusters[*]``)::

    kubernetes: {service: comments-go, namespace: shop, port: http}
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic.alias_generators import to_camel

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
"""A Kubernetes namespace name (RFC 1123 label)."""
_SERVICE_NAME = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")
"""A Kubernetes Service name (RFC 1035 label)."""
_PORT_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,13}[a-z0-9])?$")
"""A Service port name (IANA_SVC_NAME: at most 15 characters, at least one letter, no '--')."""


class KubernetesService(BaseModel):
    """Endpoints from the EndpointSlices (``discovery.k8s.io/v1``) of a Kubernetes Service.

    Only ready endpoints are served (``conditions.ready``, unset meaning ready). ``namespace``
    defaults to the controller's own namespace. ``port`` picks the slice port: by name (the
    Service port's ``name``) or by number (the port the endpoints listen on, i.e. the Service's
    ``targetPort``, which is what EndpointSlices carry).
    """

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )

    service: str = Field(description="The Service's name (RFC 1035 label).")
    namespace: str | None = Field(
        default=None,
        description="The Service's namespace. Omitted: the controller's own namespace.",
    )
    port: int | str = Field(
        description="The endpoints' port: a Service port's name, or the number the endpoints"
        " listen on (the Service's `targetPort`, not its `port`)."
    )

    @field_validator("service")
    @classmethod
    def _service(cls, value: str) -> str:
        if not _SERVICE_NAME.match(value):
            raise ValueError(
                "a Service name is lower-case letters, digits and '-', starting with a letter and"
                f" ending with a letter or digit, at most 63 characters (RFC 1035), got {value!r}"
            )
        return value

    @field_validator("namespace")
    @classmethod
    def _namespace(cls, value: str | None) -> str | None:
        if value is not None and not _DNS_LABEL.match(value):
            raise ValueError(
                "a namespace is lower-case letters, digits and '-', starting and ending with a"
                f" letter or digit, at most 63 characters (RFC 1123), got {value!r}"
            )
        return value

    @field_validator("port", mode="before")
    @classmethod
    def _port(cls, value: object) -> int | str:
        if isinstance(value, str) and value.isascii() and value.isdigit():
            value = int(value)
        if isinstance(value, int) and not isinstance(value, bool):
            if not 1 <= value <= 65535:
                raise ValueError(f"a port number is 1 to 65535, got {value}")
            return value
        if (
            isinstance(value, str)
            and _PORT_NAME.match(value)
            and "--" not in value
            and any(c.isalpha() for c in value)
        ):
            return value
        raise ValueError(
            "port is a port number (1-65535) or a Service port name (lower-case letters, digits"
            f" and '-', at most 15 characters, with a letter), got {value!r}"
        )

    def namespace_or(self, default: str) -> str:
        """The Service's namespace: ``namespace`` when set, else ``default`` (the
        controller's)."""
        return self.namespace or default
