"""``sluice serve`` option checks that need no server: refused before anything starts."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from controller.cli import exitcodes
from controller.cli.app import app


def test_two_metrics_providers_are_refused(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app,
        [
            "serve",
            "--state",
            str(tmp_path / "state.db"),
            "--prometheus-url",
            "http://127.0.0.1:9",
            "--envoy-admin",
            "http://127.0.0.1:9901",
        ],
    )
    assert result.exit_code == exitcodes.INVALID_INPUT, result.output
    assert "give one" in result.stderr
    assert not (tmp_path / "state.db").exists()
