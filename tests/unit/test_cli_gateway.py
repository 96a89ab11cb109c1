"""``sluice gateway validate``: output and exit codes, through typer's CliRunner."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from controller.cli import exitcodes
from controller.cli.gateway import app
from controller.policy.defaults import default_gateway_text

POLICIES = Path(__file__).resolve().parents[2] / "policies"


@pytest.fixture
def valid(tmp_path: Path) -> Path:
    path = tmp_path / "gateway.yaml"
    path.write_text(default_gateway_text(), encoding="utf-8")
    return path


@pytest.fixture
def invalid(tmp_path: Path) -> Path:
    text = default_gateway_text().replace("cluster: monolith", "cluster: monolyth")
    text = text.replace("timeout: 5s", "timeout: 5")
    path = tmp_path / "broken.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def _line(path: Path, needle: str) -> int:
    [number] = [
        n for n, line in enumerate(path.read_text().splitlines(), start=1) if needle in line
    ]
    return number


def test_valid_files_print_ok_and_exit_0(valid: Path) -> None:
    result = CliRunner().invoke(app, ["validate", str(valid), str(POLICIES / "gateway.yaml")])
    assert result.exit_code == exitcodes.OK == 0
    assert result.stdout.splitlines() == [f"OK {valid}", f"OK {POLICIES / 'gateway.yaml'}"]
    assert result.stderr == ""


def test_invalid_file_prints_each_issue_with_line_and_exits_2(invalid: Path) -> None:
    result = CliRunner().invoke(app, ["validate", str(invalid)])
    assert result.exit_code == exitcodes.INVALID_INPUT == 2
    assert result.stdout == ""
    # Validation stops at field errors: the unknown cluster shows once the file is well-formed.
    assert result.stderr.splitlines() == [
        f"{invalid}:{_line(invalid, 'timeout: 5')}:"
        " spec.listeners[0].virtualHosts[0].routes[0].timeout:"
        " duration 5 has no unit; write e.g. '5s' or '5ms'"
    ]


def test_unknown_cluster_is_reported_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "gw.yaml"
    path.write_text(default_gateway_text().replace("cluster: monolith", "cluster: monolyth"))
    result = CliRunner().invoke(app, ["validate", str(path)])
    assert result.exit_code == 2
    [line] = result.stderr.splitlines()
    prefix = (
        f"{path}:{_line(path, 'monolyth')}: spec.listeners[0].virtualHosts[0].routes[1].cluster:"
    )
    assert line.startswith(prefix)
    assert "503" in line


def test_mixed_files_report_both_and_exit_2(valid: Path, invalid: Path) -> None:
    result = CliRunner().invoke(app, ["validate", str(valid), str(invalid)])
    assert result.exit_code == 2
    assert result.stdout.splitlines() == [f"OK {valid}"]
    assert result.stderr.startswith(f"{invalid}:")


def test_missing_file_is_reported_and_others_still_checked(valid: Path, tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    result = CliRunner().invoke(app, ["validate", str(missing), str(valid), str(tmp_path)])
    assert result.exit_code == 2
    assert result.stdout.splitlines() == [f"OK {valid}"]
    assert result.stderr.splitlines() == [
        f"{missing}: cannot read: No such file or directory",
        f"{tmp_path}: cannot read: Is a directory",
    ]


def test_file_that_is_not_utf8_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes("metadata: {name: caf\xe9}\n".encode("latin-1"))
    result = CliRunner().invoke(app, ["validate", str(path)])
    assert result.exit_code == 2
    assert result.stderr.startswith(f"{path}: cannot read:")


def test_yaml_syntax_error(tmp_path: Path) -> None:
    path = tmp_path / "gw.yaml"
    path.write_text("apiVersion: sluice.dev/v1alpha1\nkind: Gateway\nspec: [\n")
    result = CliRunner().invoke(app, ["validate", str(path)])
    assert result.exit_code == 2
    assert result.stderr.startswith(f"{path}:4: invalid YAML:")


def test_standard_input(valid: Path) -> None:
    result = CliRunner().invoke(app, ["validate", "-"], input=valid.read_text())
    assert result.exit_code == 0
    assert result.stdout == "OK <stdin>\n"


def test_no_file_is_a_usage_error() -> None:
    result = CliRunner().invoke(app, ["validate"])
    assert result.exit_code == 2
    assert "Missing argument" in result.output


def test_registered_as_sluice_gateway(valid: Path) -> None:
    from controller.cli.app import app as sluice

    result = CliRunner().invoke(sluice, ["gateway", "validate", str(valid)])
    assert result.exit_code == 0
    assert result.stdout == f"OK {valid}\n"
