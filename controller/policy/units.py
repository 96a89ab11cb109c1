"""Explicit units in configuration files: durations (``250ms``, ``5s``, ``2m``, ``1h30m``) and
percentages (``5%``, ``0.5%``, ``99.9%``).

A bare number is refused: ``timeout: 5`` could mean seconds or milliseconds, ``weight: 5`` a
percentage or a relative weight, and a reader of the file should never have to guess. Durations
become :class:`datetime.timedelta`; percentages become a float in percent (``"5%"`` → ``5.0``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated, Any

from pydantic import (
    BeforeValidator,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    PlainSerializer,
    WithJsonSchema,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import core_schema

_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_PERCENT = re.compile(r"^(\d+(?:\.\d+)?)\s*%$")
_DURATION_PATTERN = r"^(\d+(\.\d+)?(ms|s|m|h))+$"
_PERCENT_PATTERN = r"^\d+(\.\d+)?%$"
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


def parse_percent(value: Any) -> float:
    """Parse ``"5%"``, ``"0.5%"``, ``"99.9%"`` into a float in percent (``5.0``, ``0.5``, ``99.9``).

    Range checks (0 to 100 for a weight, for instance) belong to the field using the value:
    see :class:`PercentRange`.

    Raises:
        ValueError: the value is not a string of a non-negative decimal number followed by ``%``
            (a bare number is refused: ``5`` could be a percentage or a ratio, in code as in
            files; dump models with ``mode="json"`` to get strings back).
    """
    if isinstance(value, bool):
        raise ValueError(f"percentage must be a string such as '5%', got {str(value).lower()}")
    if isinstance(value, int | float):
        raise ValueError(f"percentage {value!r} has no unit; write e.g. '{value}%'")
    if not isinstance(value, str):
        raise ValueError(f"percentage must be a string such as '5%', got {type(value).__name__}")
    match = _PERCENT.match(value.strip())
    if match is None:
        raise ValueError(f"invalid percentage {value!r}; expected e.g. '5%', '0.5%', '99.9%'")
    return float(match.group(1))


def format_percent(value: float) -> str:
    """Format a percentage the way files write it (``5.0`` → ``"5%"``, ``0.25`` → ``"0.25%"``)."""
    text = f"{value:.6f}".rstrip("0").rstrip(".")
    return f"{text}%"


Duration = Annotated[
    timedelta,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str, when_used="json"),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": _DURATION_PATTERN,
            "description": "a duration with its unit: 250ms, 5s, 2m, 1h30m",
        }
    ),
]
"""A pydantic field type for durations written with an explicit unit."""

Percent = Annotated[
    float,
    BeforeValidator(parse_percent),
    PlainSerializer(format_percent, return_type=str, when_used="json"),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": _PERCENT_PATTERN,
            "description": "a percentage with its unit: 5%, 0.5%, 99.9%",
        }
    ),
]
"""A pydantic field type for percentages written with ``%``; the value is in percent (5.0)."""


@dataclass(frozen=True)
class PercentRange:
    """Bounds of a :data:`Percent` field: ``Annotated[Percent, PercentRange(gt=0, le=100)]``.

    Checked after parsing, with messages in the file's unit (``must be at most 100% (got
    150%)``), and written into the JSON Schema as a tighter ``pattern`` where a regular
    expression can say it: a lower bound of 0 (``gt=0`` adds a ``not`` pattern refusing zero),
    an upper bound of 100, and a number of decimals. Other bounds are checked but not in the
    schema (a regular expression cannot compare numbers in general).

    Attributes:
        gt: the value must be greater than this.
        ge: the value must be at least this.
        le: the value must be at most this.
        decimals: at most this many decimal places (``2`` refuses ``0.125%``).
    """

    gt: float | None = None
    ge: float | None = None
    le: float | None = None
    decimals: int | None = None

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.no_info_after_validator_function(self.check, handler(source))

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        json_schema = dict(handler(schema))
        json_schema["pattern"] = self.pattern()
        json_schema["description"] = f"a percentage with its unit ({self.describe()})"
        if self.gt == 0:
            json_schema["not"] = {"pattern": _ZERO_PERCENT_PATTERN}
        return json_schema

    def check(self, value: float) -> float:
        """Return ``value`` when within bounds.

        Raises:
            ValueError: out of bounds or too many decimals, the message in percent.
        """
        got = f"(got {format_percent(value)})"
        if self.gt is not None and not value > self.gt:
            raise ValueError(f"must be more than {format_percent(self.gt)} {got}")
        if self.ge is not None and not value >= self.ge:
            raise ValueError(f"must be at least {format_percent(self.ge)} {got}")
        if self.le is not None and not value <= self.le:
            raise ValueError(f"must be at most {format_percent(self.le)} {got}")
        if self.decimals is not None:
            scaled = value * 10**self.decimals
            if abs(scaled - round(scaled)) > 1e-6:
                step = format_percent(10.0**-self.decimals)
                raise ValueError(f"must be a multiple of {step} {got}")
        return value

    def describe(self) -> str:
        """The bounds in words: ``more than 0%, at most 100%, in steps of 0.01%``."""
        parts = []
        if self.gt is not None:
            parts.append(f"more than {format_percent(self.gt)}")
        if self.ge is not None:
            parts.append(f"at least {format_percent(self.ge)}")
        if self.le is not None:
            parts.append(f"at most {format_percent(self.le)}")
        if self.decimals is not None:
            parts.append(f"in steps of {format_percent(10.0**-self.decimals)}")
        return ", ".join(parts) or "any"

    def pattern(self) -> str:
        """The JSON Schema ``pattern`` of a percentage within these bounds (see above)."""
        fraction = r"(\.\d+)?" if self.decimals is None else rf"(\.\d{{1,{self.decimals}}}0*)?"
        if self.le == 100:
            return rf"^0*(100(\.0+)?|\d{{1,2}}{fraction})%$"
        return rf"^\d+{fraction}%$"


_ZERO_PERCENT_PATTERN = r"^0+(\.0+)?%$"
