"""Exit codes of the ``sluice`` command (documented in the README)."""

OK = 0
FAILED = 1
INVALID_INPUT = 2
UNREACHABLE = 3
REFUSED = 4
"""The command is not allowed now (the rollout's phase, a busy route, a taken name)."""
NOT_FOUND = 5
"""No rollout has that name."""
STATE_UNAVAILABLE = 6
"""The state file cannot be opened or read."""
