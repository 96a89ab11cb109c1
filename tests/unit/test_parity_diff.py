"""The comparator's diff (controller.parity.diff) and its compiled rules (controller.parity.rules):
explicit cases from issue 5 and properties over random JSON documents."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from controller.parity.diff import ROOT, Reply, differences
from controller.parity.rules import CompareRules, Pattern
from controller.policy.parity import ParityCompare

JSON_TYPE = (("content-type", "application/json"),)


def reply(body: Any, status: int = 200, headers: tuple[tuple[str, str], ...] = JSON_TYPE) -> Reply:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return Reply(status=status, headers=headers, body=raw)


def rules(**compare: Any) -> CompareRules:
    return CompareRules.from_policy(ParityCompare(**compare))


def diff(a: Any, b: Any, **compare: Any) -> frozenset[str]:
    return differences(reply(a), reply(b), rules(**compare))


# -- patterns --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pointer", "tokens"),
    [
        ("", ()),
        ("/", ("",)),
        ("/a/b", ("a", "b")),
        ("/a~1b/c~0d", ("a/b", "c~d")),
        ("/~01", ("~1",)),  # RFC 6901: ~1 is replaced before ~0, so ~01 is "~1"
        ("/items/*/price", ("items", "*", "price")),
    ],
)
def test_pattern_parses_rfc_6901(pointer: str, tokens: tuple[str, ...]) -> None:
    assert Pattern.parse(pointer).tokens == tokens


@pytest.mark.parametrize("pointer", ["a", "/a~", "/a~2b", "#/a"])
def test_pattern_refuses_bad_pointers(pointer: str) -> None:
    with pytest.raises(ValueError, match="JSON Pointer"):
        Pattern.parse(pointer)


def test_pattern_matches_concrete_paths() -> None:
    pattern = Pattern.parse("/items/*/price")
    assert pattern.matches(("items", "3", "price"))
    assert pattern.matches(("items", "anykey", "price"))
    assert not pattern.matches(("items", "3"))
    assert not pattern.matches(("items", "3", "price", "x"))
    assert not pattern.matches(("item", "3", "price"))


def test_rules_lowercase_headers() -> None:
    assert CompareRules(headers=frozenset({"X-Trace"})).headers == {"x-trace"}


# -- explicit cases --------------------------------------------------------------------------


def test_nested_field_in_array_reported_with_star() -> None:
    a = {"items": [{"id": i, "price": 10 * i} for i in range(5)]}
    b = json.loads(json.dumps(a))
    b["items"][3]["price"] = 31
    assert diff(a, b) == {"/items/*/price"}


def test_equal_documents_with_different_bytes_match() -> None:
    a = {"b": [1, 2, {"c": None}], "a": "x"}
    assert diff(a, json.dumps(a, indent=2, sort_keys=True).encode()) == frozenset()


def test_key_missing_on_either_side_reported_at_the_key() -> None:
    assert diff({"a": 1, "b": {"c": 1}}, {"a": 1, "b": {}}) == {"/b/c"}
    assert diff({"a": 1, "b": {}}, {"a": 1, "b": {"c": 1}}) == {"/b/c"}
    assert diff({"a": 1}, {"b": 1}) == {"/a", "/b"}


def test_keys_are_escaped_in_paths() -> None:
    assert diff({"a/b": {"c~d": 1}}, {"a/b": {"c~d": 2}}) == {"/a~1b/c~0d"}
    assert diff({"a/b": 1}, {"a/b": 2}, ignore=["/a~1b"]) == frozenset()


def test_array_length_reported_at_the_array_only() -> None:
    assert diff({"xs": [1, 2, 3]}, {"xs": [9, 2]}) == {"/xs"}
    assert diff([1, 2], [1, 2, 3]) == {ROOT}


def test_type_changes() -> None:
    assert diff({"a": {"b": 1}}, {"a": [1]}) == {"/a"}
    assert diff({"a": "1"}, {"a": 1}) == {"/a"}
    assert diff({"a": None}, {"a": 0}) == {"/a"}
    assert diff({"a": 1}, [1]) == {ROOT}


def test_bool_is_not_a_number() -> None:
    assert diff({"a": True}, {"a": 1}) == {"/a"}
    assert diff({"a": [False]}, {"a": [0.0]}) == {"/a/*"}
    assert diff({"a": True}, {"a": 1}, absolute_tolerance=5) == {"/a"}


def test_numbers_and_tolerance() -> None:
    assert diff({"v": 1}, {"v": 1.0}) == frozenset()
    assert diff({"v": 0.1 + 0.2}, {"v": 0.3}) == {"/v"}
    assert diff({"v": 0.1 + 0.2}, {"v": 0.3}, absolute_tolerance=1e-9) == frozenset()
    assert diff({"v": 1000}, {"v": 1000.5}, relative_tolerance=1e-3) == frozenset()
    assert diff({"v": 1000}, {"v": 1002}, relative_tolerance=1e-3) == {"/v"}
    assert diff({"v": 10**400}, {"v": 10**400 + 1}, relative_tolerance=1e-3) == {"/v"}
    assert diff(b'{"v": NaN}', b'{"v":NaN}') == frozenset()
    assert diff(b'{"v": Infinity}', b'{"v": -Infinity}', absolute_tolerance=1) == {"/v"}


def test_ignore_prunes_the_subtree() -> None:
    a = {"meta": {"generated_at": "t1", "deep": {"x": 1}}, "items": [{"id": 1, "rid": "r1"}]}
    b = {"meta": {"generated_at": "t2", "deep": {"x": 2}}, "items": [{"id": 1, "rid": "r2"}]}
    assert diff(a, b) == {"/meta/generated_at", "/meta/deep/x", "/items/*/rid"}
    assert diff(a, b, ignore=["/meta", "/items/*/rid"]) == frozenset()
    assert diff(a, b, ignore=["/meta/deep"]) == {"/meta/generated_at", "/items/*/rid"}
    assert diff({"a": 1}, {"b": 1}, ignore=["/a"]) == {"/b"}  # a key missing on one side


def test_ignore_by_index_applies_to_that_index_only() -> None:
    a = {"xs": [{"t": 1}, {"t": 1}]}
    b = {"xs": [{"t": 2}, {"t": 1}]}
    assert diff(a, b, ignore=["/xs/0/t"]) == frozenset()
    assert diff(a, b, ignore=["/xs/1/t"]) == {"/xs/*/t"}


def test_ignore_the_root_ignores_the_body() -> None:
    assert diff({"a": 1}, {"a": 2}, ignore=[""]) == frozenset()
    assert diff(b"<p>1</p>", b"<p>2</p>", ignore=[""]) == frozenset()


def test_unordered_arrays_are_multisets() -> None:
    a = {"tags": ["a", "b", {"k": 1, "j": 2}, 1.0]}
    b = {"tags": [{"j": 2, "k": 1}, 1, "b", "a"]}
    assert diff(a, b) == {"/tags/*"}
    assert diff(a, b, unordered=["/tags"]) == frozenset()
    assert diff({"tags": ["a", "a", "b"]}, {"tags": ["a", "b", "b"]}, unordered=["/tags"]) == {
        "/tags"
    }
    assert diff({"tags": [True]}, {"tags": [1]}, unordered=["/tags"]) == {"/tags"}


def test_unordered_arrays_drop_ignored_fields_and_nest() -> None:
    a = {"items": [{"id": 1, "rid": "x", "tags": [1, 2]}, {"id": 2, "rid": "y", "tags": []}]}
    b = {"items": [{"id": 2, "rid": "z", "tags": []}, {"id": 1, "rid": "w", "tags": [2, 1]}]}
    compare = {"unordered": ["/items", "/items/*/tags"], "ignore": ["/items/*/rid"]}
    assert diff(a, b, **compare) == frozenset()
    b["items"][1]["tags"] = [2, 3]
    assert diff(a, b, **compare) == {"/items"}


def test_unordered_below_an_ordered_array() -> None:
    a = {"rows": [{"tags": [1, 2]}, {"tags": [3]}]}
    b = {"rows": [{"tags": [2, 1]}, {"tags": [4]}]}
    assert diff(a, b, unordered=["/rows/*/tags"]) == {"/rows/*/tags"}


def test_json_versus_html() -> None:
    html = b"<html><body>oops</body></html>"
    assert diff({"a": 1}, html) == {":body"}
    assert diff(html, html + b" ") == {":body"}
    assert diff(html, html) == frozenset()


def test_bodies_as_bytes_when_not_json() -> None:
    assert diff(b"", b"") == frozenset()
    assert diff(b"", b"{}") == {":body"}
    assert diff(b"{not json", b"{not json!") == {":body"}
    assert diff(b"  \n[1, 2]", b"[1,2]") == frozenset()  # leading whitespace is still JSON
    assert diff(b'"a"', b'"b"') == {":body"}  # only objects and arrays are parsed
    assert diff(b"[" * 100_000 + b"]" * 100_000, b"[" * 100_000 + b"]" * 99_999) == {":body"}


def test_status_and_headers() -> None:
    r = rules(headers=["Content-Type", "X-Version"])
    a = Reply(200, (("content-type", "application/json"), ("x-version", "1")), b"{}")
    assert differences(a, Reply(500, a.headers, b"{}"), r) == {":status"}
    mixed_case = Reply(200, (("Content-Type", "application/json"), ("X-VERSION", "1")), b"{}")
    assert differences(a, mixed_case, r) == frozenset()
    other = Reply(200, (("content-type", "text/html"), ("x-trace", "abc")), b"{}")
    assert differences(a, other, r) == {":header/content-type", ":header/x-version"}


def test_repeated_headers_joined_in_order() -> None:
    r = rules(headers=["vary"])
    a = Reply(200, (("vary", "accept"), ("vary", "origin")), b"")
    assert differences(a, Reply(200, (("vary", "accept, origin"),), b""), r) == frozenset()
    assert differences(a, Reply(200, (("vary", "origin"), ("vary", "accept")), b""), r) == {
        ":header/vary"
    }
    assert differences(Reply(200, (("vary", ""),)), Reply(200), r) == {":header/vary"}


# -- properties ------------------------------------------------------------------------------

keys = st.text(alphabet="ab~/*", max_size=3)
leaves = (
    st.none()
    | st.booleans()
    | st.integers(-(10**20), 10**20)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=4)
)
values = st.recursive(
    leaves,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4),
    max_leaves=25,
)
documents = st.lists(values, max_size=4) | st.dictionaries(keys, values, max_size=5)
tokens = st.sampled_from(["a", "b", "*", "a~1b", "0", "1"])
pointers = st.lists(tokens, max_size=3).map(lambda ts: "".join("/" + t for t in ts))
compares: st.SearchStrategy[dict[str, Any]] = st.builds(
    dict,
    headers=st.lists(st.sampled_from(["content-type", "x-a"]), max_size=2),
    ignore=st.lists(pointers, max_size=2),
    unordered=st.lists(pointers, max_size=2),
    absolute_tolerance=st.sampled_from([0.0, 0.5]),
    relative_tolerance=st.sampled_from([0.0, 1e-3]),
)
bodies = documents.map(lambda d: json.dumps(d).encode()) | st.sampled_from(
    [b"", b"<html/>", b"{broken"]
)
replies = st.builds(
    Reply,
    status=st.sampled_from([200, 500]),
    headers=st.lists(
        st.tuples(st.sampled_from(["content-type", "X-A", "x-b"]), st.sampled_from(["1", "2"])),
        max_size=3,
    ).map(tuple),
    body=bodies,
)


def _reserialized(doc: Any) -> bytes:
    return json.dumps(doc, indent=1, sort_keys=True, separators=(",", " : ")).encode()


@settings(max_examples=150)
@given(doc=documents, compare=compares)
def test_a_document_never_differs_from_itself(doc: Any, compare: dict[str, Any]) -> None:
    r = rules(**compare)
    assert differences(reply(doc), reply(doc), r) == frozenset()
    assert differences(reply(doc), reply(_reserialized(doc)), r) == frozenset()


@settings(max_examples=200)
@given(a=replies, b=replies, compare=compares)
def test_differences_are_symmetric(a: Reply, b: Reply, compare: dict[str, Any]) -> None:
    r = rules(**compare)
    assert differences(a, b, r) == differences(b, a, r)


@settings(max_examples=150)
@given(a=documents, b=documents, data=st.data())
def test_an_ignored_path_never_appears(a: Any, b: Any, data: st.DataObject) -> None:
    found = diff(a, b)
    body_paths = sorted(p for p in found if not p.startswith(":"))
    assume(body_paths)
    path = data.draw(st.sampled_from(body_paths))
    ignored = diff(a, b, ignore=["" if path == ROOT else path])
    if path == ROOT:
        assert ignored == frozenset()
    else:
        assert not {p for p in ignored if p == path or p.startswith(path + "/")}
        assert ignored <= found


@settings(max_examples=150)
@given(xs=st.lists(values, max_size=6), data=st.data())
def test_unordered_arrays_ignore_any_permutation(xs: list[Any], data: st.DataObject) -> None:
    permuted = data.draw(st.permutations(xs))
    assert diff({"xs": xs}, {"xs": permuted}, unordered=["/xs"]) == frozenset()
    assert diff(xs, permuted, unordered=[""]) == frozenset()


@given(
    x=st.floats(-1e6, 1e6),
    delta=st.floats(-10, 10),
    absolute=st.floats(0, 5),
    relative=st.floats(0, 0.5),
)
def test_numbers_within_tolerance_are_equal(
    x: float, delta: float, absolute: float, relative: float
) -> None:
    y = x + delta
    within = abs(x - y) <= absolute + relative * max(abs(x), abs(y))
    found = diff({"v": x}, {"v": y}, absolute_tolerance=absolute, relative_tolerance=relative)
    assert found == (frozenset() if within or x == y else {"/v"})


@given(
    f=st.integers(-(2**60), 2**60).map(float)
    | st.floats(allow_nan=False, allow_infinity=False).filter(float.is_integer)
)
def test_integral_floats_equal_integers(f: float) -> None:
    n = int(f)
    assert diff({"v": n}, {"v": float(n)}) == frozenset()
    assert diff({"v": [n]}, {"v": [float(n)]}, unordered=["/v"]) == frozenset()
