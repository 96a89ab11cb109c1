"""Exit codes of the ``sluice`` command (documented in the README)."""

OK = 0
FAILED = 1
INVALID_INPUT = 2
UNREACHABLE = 3
