"""The ``envoy_admin`` provider's options, as a policy's ``metrics.options`` or ``sluice serve``
give them (strings): ``urls`` (comma-separated admin endpoints, required), ``scrape_interval``
(default 1s), ``retention`` (default 1h), ``timeout`` (default 2s); durations in seconds or
with a unit (``500ms``)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from controller.policy.units import parse_duration

OPTIONS = ("urls", "scrape_interval", "retention", "timeout")


@dataclass(frozen=True)
class EnvoyAdminOptions:
    """The options, parsed (seconds)."""

    urls: tuple[str, ...]
    scrape_interval_s: float = 1.0
    retention_s: float = 3600.0
    timeout_s: float = 2.0


def parse_options(options: Mapping[str, str]) -> EnvoyAdminOptions:
    """The options parsed.

    Raises:
        ValueError: an unknown option, no URL, or a duration that is not positive.
    """
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise ValueError(
            f"unknown envoy_admin option(s) {', '.join(unknown)} (known: {', '.join(OPTIONS)})"
        )
    urls = tuple(u.strip() for u in options.get("urls", "").split(",") if u.strip())
    if not urls:
        raise ValueError("envoy_admin needs the option urls (comma-separated admin endpoints)")
    return EnvoyAdminOptions(
        urls,
        scrape_interval_s=seconds(options.get("scrape_interval", "1"), "scrape_interval"),
        retention_s=seconds(options.get("retention", "3600"), "retention"),
        timeout_s=seconds(options.get("timeout", "2"), "timeout"),
    )


def seconds(value: str, option: str) -> float:
    """``"1.5"`` (seconds) or a duration with a unit (``"500ms"``, ``"2s"``, ``"1h"``).

    Raises:
        ValueError: neither, or not positive (named after ``option``).
    """
    try:
        value_s = float(value)
    except ValueError:
        try:
            value_s = parse_duration(value).total_seconds()
        except ValueError as exc:
            raise ValueError(f"envoy_admin option {option}: {exc}") from None
    if not math.isfinite(value_s) or value_s <= 0:
        raise ValueError(f"envoy_admin option {option} must be positive, got {value!r}")
    return value_s
