"""Explicit units in configuration files: durations (``250ms``, ``5s``, ``2m``, ``1h30m``).

A bare number is refused: ``timeout: 5`` could mean seconds or milliseconds, and a reader of the
file should never have to guess. Durations become :class:`datetime.timedelta`.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any

from pydantic import BeforeValidator, PlainSerializer

_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(value: Any) -> timedelta:
    """Parse ``"250ms"``, ``"5s"``, ``"2m"``, ``"1h30m"`` into a timedelta.

    Raises:
        ValueError: the value is not a string of number+unit parts (units ms, s, m, h), is
            negative, or is too long for a timedelta. Already-parsed ``timedelta`` values pass
            through.
    """
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool):
        raise ValueError(f"duration must be a string such as '5s', got {str(value).lower()}")
    if isinstance(value, int | float):
        raise ValueError(f"duration {value!r} has no unit; write e.g. '{value}s' or '{value}ms'")
    if not isinstance(value, str):
        raise ValueError(f"duration must be a string such as '5s', got {type(value).__name__}")
    text = value.strip()
    pos = 0
    total = 0.0
    for match in _PART.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        pos = match.end()
    if pos != len(text) or not text:
        raise ValueError(f"invalid duration {value!r}; expected e.g. '250ms', '5s', '2m', '1h30m'")
    try:
        return timedelta(seconds=total)
    except OverflowError:
        raise ValueError(f"duration {value!r} is too long") from None


def format_duration(value: timedelta) -> str:
    """Format a timedelta the way files write it (``"1.5s"``, ``"250ms"``, ``"86400s"``).

    Exact to the microsecond and never in exponent notation, so ``parse_duration`` reads the
    result back to the same value.
    """
    micros = value // timedelta(microseconds=1)
    sign, micros = ("-" if micros < 0 else ""), abs(micros)
    if micros % 1_000_000 == 0:
        return f"{sign}{micros // 1_000_000}s"
    if micros < 1_000_000:
        return f"{sign}{_decimal(micros, 1_000)}ms"
    return f"{sign}{_decimal(micros, 1_000_000)}s"


def _decimal(micros: int, per_unit: int) -> str:
    whole, frac = divmod(micros, per_unit)
    digits = len(str(per_unit)) - 1
    return f"{whole}.{frac:0{digits}d}".rstrip("0").rstrip(".")


Duration = Annotated[
    timedelta,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str, when_used="json"),
]
"""A pydantic field type for durations written with an explicit unit."""
