"""YAML loading with line-precise errors (controller.policy.source), independent of any schema."""

from __future__ import annotations

from textwrap import dedent
from typing import Literal

import pytest
from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from controller.policy.source import (
    DocumentError,
    Issue,
    LineMap,
    format_path,
    load_yaml,
)
from controller.policy.validation import validate_document


def _issues(text: str) -> list[tuple[int | None, str, str]]:
    with pytest.raises(DocumentError) as info:
        load_yaml(dedent(text), "f.yaml")
    return [(i.line, i.field, i.message) for i in info.value.issues]


class _Item(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, extra="forbid", populate_by_name=True)

    item_name: str
    kind: Literal["red", "green"] = "red"


class _Doc(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, extra="forbid", populate_by_name=True)

    title: str
    max_items: int = Field(ge=1)
    items: tuple[_Item, ...] = Field(min_length=1)


def _validation_issues(text: str) -> list[tuple[int | None, str, str]]:
    with pytest.raises(DocumentError) as info:
        validate_document(_Doc, dedent(text), "doc.yaml")
    return [(i.line, i.field, i.message) for i in info.value.issues]


def test_data_and_lines_of_keys_and_items() -> None:
    data, lines = load_yaml(
        dedent(
            """\
            # a comment
            a: 1
            b:
              - x
              - y: 2

                z: [3, 4]
            """
        ),
        "f.yaml",
    )
    assert data == {"a": 1, "b": ["x", {"y": 2, "z": [3, 4]}]}
    assert lines.lines[("a",)] == 2
    assert lines.lines[("b",)] == 3
    assert lines.lines[("b", 0)] == 4
    assert lines.lines[("b", 1)] == 5
    assert lines.lines[("b", 1, "y")] == 5
    assert lines.lines[("b", 1, "z")] == 7
    assert lines.lines[("b", 1, "z", 1)] == 7


def test_nearest_line_falls_back_to_the_closest_ancestor() -> None:
    lines = LineMap({(): 1, ("spec",): 3, ("spec", "items", 0): 5})
    assert lines.nearest(("spec", "items", 0, "name")) == 5
    assert lines.nearest(("spec", "missing", 2)) == 3
    assert lines.nearest(("other",)) == 1
    assert LineMap({}).nearest(("x",)) is None


def test_format_path_spells_keys_and_indexes_as_in_the_file() -> None:
    assert format_path(("spec", "listeners", 0, "virtualHosts", 1, "name")) == (
        "spec.listeners[0].virtualHosts[1].name"
    )
    assert format_path(("headers", "x.y", 0)) == 'headers["x.y"][0]'
    assert format_path(()) == ""


def test_issue_str_is_file_line_field_message() -> None:
    assert str(Issue("g.yaml", 7, "spec.clusters[0].name", "bad")) == (
        "g.yaml:7: spec.clusters[0].name: bad"
    )
    assert str(Issue("g.yaml", 1, "", "empty")) == "g.yaml:1: empty"
    assert str(Issue("g.yaml", None, "", "cannot read")) == "g.yaml: cannot read"


def test_duplicate_keys_are_errors_at_the_second_occurrence() -> None:
    issues = _issues(
        """\
        a: 1
        b:
          - name: x
            port: 1
            port: 2
        a: 3
        """
    )
    assert issues == [
        (5, "b[0].port", "duplicate key 'port' (first at line 4)"),
        (6, "a", "duplicate key 'a' (first at line 1)"),
    ]


def test_syntax_error_reports_the_line_from_the_yaml_mark() -> None:
    [(line, field, message)] = _issues(
        """\
        a: 1
        b: [1, 2
        c: 3
        """
    )
    assert (line, field) == (3, "")
    assert message.startswith("invalid YAML:")


def test_tab_indentation_is_a_syntax_error_on_its_line() -> None:
    [(line, _, message)] = _issues("a:\n  b: 1\n\tc: 2\n")
    assert line == 3
    assert "\\t" in message or "tab" in message


@pytest.mark.parametrize("text", ["", "# only a comment\n", "---\n"])
def test_no_document_is_an_error(text: str) -> None:
    assert _issues(text) == [(1, "", "no YAML document; the file is empty")]


def test_several_documents_are_an_error_at_the_second() -> None:
    [(line, _, message)] = _issues("a: 1\n---\nb: 2\n")
    assert line == 3
    assert "2 YAML documents" in message


@pytest.mark.parametrize("text", ["---\na: 1\n", "a: 1\n---\n", "a: 1\n...\n"])
def test_document_markers_around_one_document_are_fine(text: str) -> None:
    data, _ = load_yaml(text, "f.yaml")
    assert data == {"a": 1}


def test_non_string_keys_are_rejected() -> None:
    issues = _issues(
        """\
        ok: 1
        on: true
        200: x
        """
    )
    assert issues == [
        (2, "", "key 'on' is not a string; quote it"),
        (3, "", "key '200' is not a string; quote it"),
    ]


def test_unknown_tag_is_rejected_with_its_line() -> None:
    [(line, field, message)] = _issues("a: 1\nb: !include other.yaml\n")
    assert (line, field) == (2, "b")
    assert "!include" in message


def test_bad_explicitly_typed_scalar_is_rejected() -> None:
    assert _issues("a: 1\nb: !!int twelve\n") == [(2, "b", "'twelve' is not a valid int")]


def test_anchors_aliases_and_merge_keys() -> None:
    data, lines = load_yaml(
        dedent(
            """\
            base: &base
              timeout: 5s
              retries: 2
            route:
              <<: *base
              retries: 3
            """
        ),
        "f.yaml",
    )
    assert data == {
        "base": {"timeout": "5s", "retries": 2},
        "route": {"retries": 3, "timeout": "5s"},
    }
    assert lines.lines[("route", "retries")] == 6
    assert lines.lines[("route", "timeout")] == 2  # where the merged value is written


def test_recursive_alias_is_an_error() -> None:
    [(line, field, message)] = _issues("a: &x [1, *x]\n")
    assert (line, field) == (1, "a[1]")
    assert "recursive" in message


def test_alias_bombs_are_refused() -> None:
    text = "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
    for name, prev in zip("bcdef", "abcde", strict=True):
        text += f"{name}: &{name} [{', '.join(['*' + prev] * 10)}]\n"
    [(_, _, message)] = _issues(text)
    assert "more than 100000 nodes" in message


def test_valid_document_becomes_the_model() -> None:
    doc = validate_document(
        _Doc, "title: t\nmaxItems: 2\nitems:\n  - {itemName: a, kind: green}\n", "doc.yaml"
    )
    assert doc == _Doc(title="t", max_items=2, items=(_Item(item_name="a", kind="green"),))


def test_validation_errors_carry_line_field_and_clear_message() -> None:
    issues = _validation_issues(
        """\
        title: t
        maxItems: 0
        items:
          - itemName: a
            kind: blue
          - kind: red
          - itemName: c
            colour: red
        """
    )
    assert issues == [
        (2, "maxItems", "Input should be greater than or equal to 1 (got 0)"),
        (5, "items[0].kind", "should be 'red' or 'green', got 'blue'"),
        (6, "items[1].itemName", "required field is missing"),
        (8, "items[2].colour", "unknown field; allowed: itemName, kind"),
    ]


def test_unknown_field_suggests_the_right_spelling() -> None:
    issues = _validation_issues("title: t\nmax_items: 1\nitems: [{itemName: a}]\n")
    assert issues == [
        (1, "maxItems", "required field is missing"),
        (
            2,
            "max_items",
            "unknown field (did you mean 'maxItems'?); allowed: title, maxItems, items",
        ),
    ]


def test_missing_field_points_at_its_parent_mapping() -> None:
    issues = _validation_issues("# header\ntitle: t\nitems: [{itemName: a}]\n")
    assert issues == [(2, "maxItems", "required field is missing")]


def test_wrong_container_types_are_named() -> None:
    issues = _validation_issues("title: [t]\nmaxItems: 1\nitems: {itemName: a}\n")
    assert issues == [
        (1, "title", "Input should be a valid string (got a list)"),
        (3, "items", "expected a list, got a mapping"),
    ]


def test_empty_list_reports_its_minimum_but_invalid_items_do_not_add_noise() -> None:
    assert _validation_issues("title: t\nmaxItems: 1\nitems: []\n") == [
        (3, "items", "needs at least 1 item(s), got 0")
    ]
    assert _validation_issues("title: t\nmaxItems: 1\nitems: [{}]\n") == [
        (3, "items[0].itemName", "required field is missing")
    ]


def test_yaml_scalars_that_are_not_text_get_a_hint() -> None:
    assert _validation_issues("title: yes\nmaxItems: 1\nitems: [{itemName: 1.0}]\n") == [
        (1, "title", "expected a string, got a boolean (true); quote it to make it text"),
        (3, "items[0].itemName", "expected a string, got a number (1.0); quote it to make it text"),
    ]


def test_document_that_is_not_a_mapping() -> None:
    assert _validation_issues("- a\n- b\n") == [
        (1, "", "expected a mapping (key: value), got a list")
    ]
