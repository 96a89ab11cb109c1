"""YAML output that Envoy reads back the way we meant it.

Envoy parses YAML 1.1-style (yaml-cpp), where plain ``y``, ``n``, ``on``, ``off``... are
booleans; PyYAML leaves some of them unquoted (``node: {id: n}`` reached Envoy as ``false``).
Strings that another YAML reader could take for a boolean, a number or null are quoted.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

_AMBIGUOUS = re.compile(
    r"^(y|yes|n|no|true|false|on|off|null|~|[-+]?(\.\d+|\d[\d_]*(\.\d*)?)([eE][-+]?\d+)?"
    r"|[-+]?\.(inf|nan)|0x[0-9a-f]+|0o[0-7]+)$",
    re.IGNORECASE,
)


class _Dumper(yaml.SafeDumper):
    pass


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = '"' if _AMBIGUOUS.match(value) else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def dump(doc: Any) -> str:
    """``yaml.safe_dump`` with ambiguous strings quoted, keys in insertion order."""
    return yaml.dump(doc, Dumper=_Dumper, sort_keys=False)
