"""The generated references in docs/reference (``controller.cli.reference``): committed and
current, the same on any machine, terminal and environment, and complete (every schema field
and every command listed, every leaf field described).

The completeness checks walk the schema and the command tree on their own, not with the
generator's walkers, so a field or command the generator skips is caught.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer.main

from controller.cli.app import app
from controller.cli.reference import (
    FILES,
    REGENERATE,
    cli_reference,
    main,
    policy_reference,
    stale,
)
from controller.cli.reference_md import code
from controller.policy.schema import gateway_json_schema, policy_json_schema

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs" / "reference"
SCHEMAS = {"RolloutPolicy": policy_json_schema, "Gateway": gateway_json_schema}


def _generate(name: str, **env: str) -> str:
    """One reference, generated in a fresh interpreter with ``env`` on top of a clean
    environment (no SLUICE_* variables, no COLUMNS)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("SLUICE_") and k != "COLUMNS"}
    done = subprocess.run(
        [sys.executable, "-m", "controller.cli.reference", "--print", name],
        cwd=ROOT,
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def plain_cli() -> str:
    """The CLI reference generated without SLUICE_* variables or COLUMNS."""
    return _generate("cli.md")


def test_the_committed_references_are_current() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "controller.cli.reference", "--check", str(DOCS)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, f"docs/reference is out of date: run `{REGENERATE}`\n{done.stderr}"


def test_check_names_a_stale_or_missing_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--write", str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(FILES)
    assert stale(tmp_path) == []
    assert main(["--check", str(tmp_path)]) == 0
    with (tmp_path / "cli.md").open("a", encoding="utf-8") as f:
        f.write("hand edit\n")
    (tmp_path / "policy.md").unlink()
    assert stale(tmp_path) == ["policy.md", "cli.md"]
    assert main(["--check", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "cli.md is out of date" in err
    assert "policy.md is out of date" in err
    assert REGENERATE in err


def test_each_file_says_it_is_generated_and_how_to_regenerate() -> None:
    for text in (policy_reference(), cli_reference()):
        first = text.splitlines()[0]
        assert first.startswith("<!--")
        assert "Generated" in first
        assert REGENERATE in first


@pytest.mark.parametrize(
    "env",
    [
        {"COLUMNS": "40"},
        {"COLUMNS": "250", "LINES": "10"},
        {
            "SLUICE_STATE": "/elsewhere/state.db",
            "SLUICE_PROMETHEUS_URL": "http://prometheus.example:9090",
            "SLUICE_NAMESPACE": "other-namespace",
            "SLUICE_ADMIN": "http://10.9.8.7:1234",
            "SLUICE_NOTIFY": "http://hooks.example/x",
            "POD_NAME": "pod-from-env",
        },
    ],
    ids=["narrow", "wide", "env-vars"],
)
def test_the_cli_reference_ignores_terminal_width_and_environment(
    env: dict[str, str], plain_cli: str
) -> None:
    assert _generate("cli.md", **env) == plain_cli
    for name, value in env.items():
        if name not in ("COLUMNS", "LINES"):
            assert value not in plain_cli
    assert "`.sluice/state.db`" in plain_cli  # the declared default of --state
    assert "`http://127.0.0.1:18001`" in plain_cli  # --admin's, whatever SLUICE_ADMIN says


def test_the_policy_reference_does_not_depend_on_hash_seeds() -> None:
    assert _generate("policy.md", PYTHONHASHSEED="1") == _generate("policy.md", PYTHONHASHSEED="2")


def _properties(schema: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(dotted path, property schema)`` of every property reachable from the root."""
    defs = schema.get("$defs", {})

    def objects(node: dict[str, Any], path: str, seen: tuple[str, ...]) -> Iterator[Any]:
        if "$ref" in node:
            name = node["$ref"].rsplit("/", 1)[-1]
            if name not in seen:
                yield from objects(defs[name], path, (*seen, name))
        for key in ("anyOf", "oneOf", "allOf"):
            for branch in node.get(key, []):
                yield from objects(branch, path, seen)
        if "items" in node:
            yield from objects(node["items"], f"{path}[]", seen)
        for name, prop in node.get("properties", {}).items():
            where = f"{path}.{name}" if path else name
            yield where, prop, seen
            yield from objects(prop, where, seen)

    for where, prop, _ in objects(schema, "", ()):
        yield where, prop


def _resolved_is_object(prop: dict[str, Any], defs: dict[str, Any]) -> bool:
    nodes = [prop]
    while nodes:
        node = nodes.pop()
        if "$ref" in node:
            node = defs[node["$ref"].rsplit("/", 1)[-1]]
        if node.get("type") == "object" or "properties" in node:
            return True
        nodes += node.get("anyOf", []) + node.get("oneOf", [])
        if "items" in node:
            nodes.append(node["items"])
    return False


@pytest.mark.parametrize("kind", sorted(SCHEMAS))
def test_every_schema_field_is_in_the_policy_reference(kind: str) -> None:
    text = policy_reference()
    paths = {path for path, _ in _properties(SCHEMAS[kind]())}
    assert len(paths) > 20
    missing = sorted(p for p in paths if f"| {code(p)} |" not in text)
    assert not missing, f"fields missing from docs/reference/policy.md: {missing}"


def test_the_union_variants_each_have_a_table() -> None:
    text = policy_reference()
    for metric in ("`latency_p99`", "`error_rate`", "`parity`", "`custom`"):
        assert any(
            line.startswith("### `spec.analysis.slos[]`") and metric in line
            for line in text.splitlines()
        ), metric
    assert "| `spec.analysis.slos[].query` |" in text
    assert "| `spec.parity.compare.relativeTolerance` |" in text
    assert "| `spec.clusters[].kubernetes.port` |" in text


@pytest.mark.parametrize("kind", sorted(SCHEMAS))
def test_every_leaf_field_has_a_description(kind: str) -> None:
    schema = SCHEMAS[kind]()
    defs = schema.get("$defs", {})
    leaves = [(p, s) for p, s in _properties(schema) if not _resolved_is_object(s, defs)]
    assert len(leaves) > 20
    bare = sorted(p for p, s in leaves if not str(s.get("description", "")).strip())
    assert not bare, (
        f"{kind} fields without a description (add Field(description=...) in"
        f" controller/policy, saying the unit): {bare}"
    )


def test_durations_and_percentages_name_their_unit() -> None:
    text = policy_reference()
    row = next(line for line in text.splitlines() if line.startswith("| `spec.ackTimeout` |"))
    assert "duration" in row
    assert "`ms`" in row
    assert "default `10s`" in row
    row = next(line for line in text.splitlines() if line.startswith("| `spec.stages[].weight` |"))
    assert "percent" in row
    assert "required" in row


def _commands(command: Any, words: tuple[str, ...]) -> Iterator[tuple[tuple[str, ...], Any]]:
    yield words, command
    for name, sub in getattr(command, "commands", {}).items():
        if not sub.hidden:
            yield from _commands(sub, (*words, name))


def test_every_command_and_option_is_in_the_cli_reference() -> None:
    text = cli_reference()
    found = list(_commands(typer.main.get_command(app), ("sluice",)))
    assert len(found) > 20
    for words, command in found:
        heading = f"# {code(' '.join(words))}\n"
        assert heading in text, f"{' '.join(words)} is missing from docs/reference/cli.md"
        section = text.split(heading, 1)[1].split("\n#", 1)[0]
        for param in command.params:
            if getattr(param, "hidden", False):
                continue
            names = param.opts if param.param_type_name == "option" else []
            for name in names:
                assert code(name) in section, f"{' '.join(words)}: {name}"
        if command.help:
            assert command.help.split("\f")[0].strip() in section


def test_the_usage_line_puts_arguments_before_options() -> None:
    assert "```text\nsluice rollout start NAME [OPTIONS]\n```" in cli_reference()
    assert "```text\nsluice gateway validate FILE...\n```" in cli_reference()


def test_code_spans_hold_backticks() -> None:
    assert code("a") == "`a`"
    assert code("a`b") == "``a`b``"
    assert code("`x") == "`` `x ``"
