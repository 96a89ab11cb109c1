"""The ``sluice`` command line (typer); thin, formats output for people and scripts."""
