"""The tap-compare comparator (issue 5)."""
