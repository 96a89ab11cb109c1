"""Pydantic models of gateway and policy files, and YAML loading with line-precise errors.

Pure: this package does no I/O beyond what its callers hand it and imports nothing of ours.
"""
