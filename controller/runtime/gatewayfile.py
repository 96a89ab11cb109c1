"""Reading a gateway file from disk (or standard input) into a checked :class:`Gateway`."""

from __future__ import annotations

import sys
from pathlib import Path

from controller.policy.gateway import Gateway
from controller.policy.loading import load_gateway
from controller.policy.source import DocumentError, Issue


def load_gateway_file(path: Path, name: str | None = None) -> Gateway:
    """Read and check one gateway file; ``-`` reads standard input.

    Args:
        path: the file.
        name: the file's name in issues (default: the path; ``<stdin>`` for ``-``).

    Raises:
        DocumentError: the file cannot be read (one issue saying why) or is not a sound gateway
            (every issue, with line and field).
    """
    stdin = str(path) == "-"
    name = name or ("<stdin>" if stdin else str(path))
    try:
        text = sys.stdin.read() if stdin else path.read_text(encoding="utf-8")
    except OSError as exc:
        raise DocumentError([Issue(name, None, "", f"cannot read: {exc.strerror or exc}")]) from exc
    except UnicodeDecodeError as exc:
        reason = f"cannot read: not UTF-8 text: {exc.reason} at byte {exc.start}"
        raise DocumentError([Issue(name, None, "", reason)]) from exc
    return load_gateway(text, name)
