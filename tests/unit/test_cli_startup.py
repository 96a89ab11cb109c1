"""What every ``sluice`` command pays before it runs: the CLI's imports."""

from __future__ import annotations

import subprocess
import sys


def test_the_cli_imports_no_http_client_until_a_command_talks_to_a_controller() -> None:
    """httpx (with its own command-line entry point, click, rich's syntax highlighting) cost
    every command ~0.14 s at start-up; only the admin commands use it, and import it then."""
    done = subprocess.run(
        [sys.executable, "-c", "import sys, controller.cli.app; print('httpx' in sys.modules)"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.strip() == "False", done.stdout + done.stderr
