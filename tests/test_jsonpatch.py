"""JSON Patch (RFC 6902): the appendix A examples, errors, and Pushpin's body-patch quirks."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gripcore import ProtocolError, RemoteProtocolError
from gripcore._jsonpatch import JsonPatchError, apply_body_patch, apply_patch

from .hypothesis_support import examples

# (name, document, patch, expected result) - RFC 6902 appendix A plus pointer/array cases.
APPLY_VECTORS: list[tuple[str, Any, list[dict[str, Any]], Any]] = [
    (
        "A.1 add object member",
        {"foo": "bar"},
        [{"op": "add", "path": "/baz", "value": "qux"}],
        {"baz": "qux", "foo": "bar"},
    ),
    (
        "A.2 add array element",
        {"foo": ["bar", "baz"]},
        [{"op": "add", "path": "/foo/1", "value": "qux"}],
        {"foo": ["bar", "qux", "baz"]},
    ),
    (
        "A.3 remove object member",
        {"baz": "qux", "foo": "bar"},
        [{"op": "remove", "path": "/baz"}],
        {"foo": "bar"},
    ),
    (
        "A.4 remove array element",
        {"foo": ["bar", "qux", "baz"]},
        [{"op": "remove", "path": "/foo/1"}],
        {"foo": ["bar", "baz"]},
    ),
    (
        "A.5 replace a value",
        {"baz": "qux", "foo": "bar"},
        [{"op": "replace", "path": "/baz", "value": "boo"}],
        {"baz": "boo", "foo": "bar"},
    ),
    (
        "A.6 move a value",
        {"foo": {"bar": "baz", "waldo": "fred"}, "qux": {"corge": "grault"}},
        [{"op": "move", "from": "/foo/waldo", "path": "/qux/thud"}],
        {"foo": {"bar": "baz"}, "qux": {"corge": "grault", "thud": "fred"}},
    ),
    (
        "A.7 move an array element",
        {"foo": ["all", "grass", "cows", "eat"]},
        [{"op": "move", "from": "/foo/1", "path": "/foo/3"}],
        {"foo": ["all", "cows", "eat", "grass"]},
    ),
    (
        "A.8 test success",
        {"baz": "qux", "foo": ["a", 2, "c"]},
        [
            {"op": "test", "path": "/baz", "value": "qux"},
            {"op": "test", "path": "/foo/1", "value": 2},
        ],
        {"baz": "qux", "foo": ["a", 2, "c"]},
    ),
    (
        "A.10 add nested member object",
        {"foo": "bar"},
        [{"op": "add", "path": "/child", "value": {"grandchild": {}}}],
        {"foo": "bar", "child": {"grandchild": {}}},
    ),
    (
        "A.11 unrecognised elements ignored",
        {"foo": "bar"},
        [{"op": "add", "path": "/baz", "value": "qux", "xyz": 123}],
        {"foo": "bar", "baz": "qux"},
    ),
    (
        "A.14 ~ escape ordering",
        {"/": 9, "~1": 10},
        [{"op": "test", "path": "/~01", "value": 10}],
        {"/": 9, "~1": 10},
    ),
    (
        "A.16 add array value",
        {"foo": ["bar"]},
        [{"op": "add", "path": "/foo/-", "value": ["abc", "def"]}],
        {"foo": ["bar", ["abc", "def"]]},
    ),
    (
        "escaped slash in pointer",
        {"a/b": 1},
        [{"op": "replace", "path": "/a~1b", "value": 2}],
        {"a/b": 2},
    ),
    (
        "escaped tilde in pointer",
        {"m~n": 1},
        [{"op": "remove", "path": "/m~0n"}],
        {},
    ),
    ("add at end index", [1, 2], [{"op": "add", "path": "/2", "value": 3}], [1, 2, 3]),
    ("add at start", [1, 2], [{"op": "add", "path": "/0", "value": 0}], [0, 1, 2]),
    ("add replaces whole doc", {"a": 1}, [{"op": "add", "path": "", "value": [1]}], [1]),
    ("replace whole doc", {"a": 1}, [{"op": "replace", "path": "", "value": {"b": 2}}], {"b": 2}),
    ("replace array element", [1, 2, 3], [{"op": "replace", "path": "/1", "value": 9}], [1, 9, 3]),
    ("add replaces member", {"a": 1}, [{"op": "add", "path": "/a", "value": 2}], {"a": 2}),
    (
        "copy a value",
        {"a": {"b": [1]}},
        [{"op": "copy", "from": "/a", "path": "/c"}],
        {"a": {"b": [1]}, "c": {"b": [1]}},
    ),
    (
        "copy into array with -",
        {"a": [1], "b": 2},
        [{"op": "copy", "from": "/b", "path": "/a/-"}],
        {"a": [1, 2], "b": 2},
    ),
    ("move onto itself", {"a": 1}, [{"op": "move", "from": "/a", "path": "/a"}], {"a": 1}),
    ("test whole document", [1], [{"op": "test", "path": "", "value": [1]}], [1]),
    ("test int equals float", {"n": 1}, [{"op": "test", "path": "/n", "value": 1.0}], {"n": 1}),
    ("test null", {"n": None}, [{"op": "test", "path": "/n", "value": None}], {"n": None}),
    (
        "test nested objects ignore key order",
        {"o": {"a": 1, "b": [True]}},
        [{"op": "test", "path": "/o", "value": {"b": [True], "a": 1}}],
        {"o": {"a": 1, "b": [True]}},
    ),
    ("empty patch", {"a": 1}, [], {"a": 1}),
    ("empty member name", {"": 1}, [{"op": "replace", "path": "/", "value": 2}], {"": 2}),
]

# (name, document, patch, error message)
ERROR_VECTORS: list[tuple[str, Any, list[Any], str]] = [
    ("A.9 test failure", {"baz": "qux"}, [{"op": "test", "path": "/baz", "value": "bar"}], "test failed at '/baz'"),
    ("A.12 add to nonexistent target", {"foo": "bar"}, [{"op": "add", "path": "/baz/bat", "value": "qux"}], "member 'baz' not found"),
    ("A.15 string is not number", {"/": 9, "~1": 10}, [{"op": "test", "path": "/~01", "value": "10"}], "test failed at '/~01'"),
    ("true is not 1", {"a": True}, [{"op": "test", "path": "/a", "value": 1}], "test failed at '/a'"),
    ("1 is not true", {"a": 1}, [{"op": "test", "path": "/a", "value": True}], "test failed at '/a'"),
    ("list is not dict", {"a": []}, [{"op": "test", "path": "/a", "value": {}}], "test failed at '/a'"),
    ("dict keys differ", {"a": {"x": 1}}, [{"op": "test", "path": "/a", "value": {"y": 1}}], "test failed at '/a'"),
    ("list lengths differ", {"a": [1]}, [{"op": "test", "path": "/a", "value": [1, 2]}], "test failed at '/a'"),
    ("number is not string", {"a": 1}, [{"op": "test", "path": "/a", "value": "1"}], "test failed at '/a'"),
    ("no path", {}, [{"op": "add", "value": 1}], "operation 'add' has no 'path'"),
    ("no value", {}, [{"op": "replace", "path": "/a"}], "operation 'replace' has no 'value'"),
    ("test without value", {}, [{"op": "test", "path": ""}], "operation 'test' has no 'value'"),
    ("no from", {"a": 1}, [{"op": "move", "path": "/b"}], "operation 'move' has no 'from'"),
    ("unknown op", {}, [{"op": "frobnicate", "path": ""}], "unknown operation 'frobnicate'"),
    ("missing op", {}, [{"path": ""}], "unknown operation None"),
    ("pointer not a string", {}, [{"op": "remove", "path": 5}], "JSON pointer must be a string"),
    ("pointer without slash", {"a": 1}, [{"op": "remove", "path": "a"}], "JSON pointer 'a' must start with '/'"),
    ("remove whole document", {"a": 1}, [{"op": "remove", "path": ""}], "cannot remove the whole document"),
    ("remove missing member", {"a": 1}, [{"op": "remove", "path": "/b"}], "member 'b' not found"),
    ("remove past end", [1], [{"op": "remove", "path": "/1"}], "array index 1 out of range"),
    ("add past end", [1], [{"op": "add", "path": "/2", "value": 0}], "array index 2 out of range"),
    ("leading zero index", [1, 2], [{"op": "remove", "path": "/01"}], "invalid array index '01'"),
    ("negative index", [1], [{"op": "remove", "path": "/-1"}], "invalid array index '-1'"),
    ("dash outside add", [1], [{"op": "remove", "path": "/-"}], "invalid array index '-'"),
    ("non-ascii digit", [1, 2], [{"op": "remove", "path": "/\u0661"}], "invalid array index '\u0661'"),
    ("huge index", [1], [{"op": "remove", "path": "/" + "9" * 5000}], f"array index {2} out of range"),
    ("descend into scalar", {"a": 1}, [{"op": "remove", "path": "/a/b"}], "cannot remove from a scalar at 'b'"),
    ("get through scalar", {"a": 1}, [{"op": "test", "path": "/a/b", "value": 1}], "cannot descend into a scalar at 'b'"),
    ("add to scalar", {"a": 1}, [{"op": "add", "path": "/a/b", "value": 1}], "cannot add to a scalar at 'b'"),
    ("replace missing", {"a": 1}, [{"op": "replace", "path": "/b", "value": 1}], "member 'b' not found"),
    ("move into own child", {"a": {"b": 1}}, [{"op": "move", "from": "/a", "path": "/a/c"}], "cannot move a value into one of its children"),
    ("copy from missing", {"a": 1}, [{"op": "copy", "from": "/x", "path": "/b"}], "member 'x' not found"),
    ("operation not an object", {}, ["add"], "patch operations must be objects"),
    ("array index into array in path", [[1]], [{"op": "test", "path": "/x/0", "value": 1}], "invalid array index 'x'"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("document", "patch", "expected"),
    [v[1:] for v in APPLY_VECTORS],
    ids=[v[0] for v in APPLY_VECTORS],
)
def test_apply_patch_vectors(document: Any, patch: list[dict[str, Any]], expected: Any) -> None:
    before = json.dumps(document)
    assert apply_patch(document, patch) == expected
    assert json.dumps(document) == before  # the input is never modified


@pytest.mark.parametrize(
    ("document", "patch", "message"),
    [v[1:] for v in ERROR_VECTORS],
    ids=[v[0] for v in ERROR_VECTORS],
)
def test_apply_patch_errors(document: Any, patch: list[Any], message: str) -> None:
    before = json.dumps(document)
    with pytest.raises(JsonPatchError) as info:
        apply_patch(document, patch)
    assert str(info.value) == message
    assert isinstance(info.value, RemoteProtocolError)
    assert json.dumps(document) == before  # nothing half applied


def test_failed_patch_leaves_nothing_half_applied() -> None:
    doc = {"a": [1]}
    patch = [{"op": "add", "path": "/a/-", "value": 2}, {"op": "test", "path": "/a/0", "value": 9}]
    with pytest.raises(JsonPatchError):
        apply_patch(doc, patch)
    assert doc == {"a": [1]}


def test_added_values_are_copies() -> None:
    value = {"x": [1]}
    result = apply_patch({}, [{"op": "add", "path": "/v", "value": value}])
    result["v"]["x"].append(2)
    assert value == {"x": [1]}


def test_too_deep_document_is_a_patch_error() -> None:
    doc: Any = []
    for _ in range(5000):
        doc = [doc]
    with pytest.raises(JsonPatchError) as info:
        apply_patch(doc, [])
    assert str(info.value) == "document nested too deeply"


# --- apply_body_patch: Pushpin's body-patch delivery -------------------------------------------

# (name, hold body, patch, delivered body)
BODY_VECTORS: list[tuple[str, bytes, list[dict[str, Any]], bytes]] = [
    ("compact output", b'{ "a" : 1 }', [{"op": "add", "path": "/b", "value": 2}], b'{"a":1,"b":2}'),
    ("trailing LF kept", b'{"a":1}\n', [{"op": "remove", "path": "/a"}], b"{}\n"),
    ("trailing CRLF kept", b"[1]\r\n", [{"op": "add", "path": "/-", "value": 2}], b"[1,2]\r\n"),
    ("replace keeps member order", b'{"baz":"qux","foo":"bar"}\n', [{"op": "replace", "path": "/baz", "value": "boo"}], b'{"baz":"boo","foo":"bar"}\n'),
    ("non-ascii kept as UTF-8", '{"a":"é"}'.encode(), [{"op": "add", "path": "/b", "value": "ü"}], '{"a":"é","b":"ü"}'.encode()),
    ("lone surrogate stays escaped", b'{"a":"\\ud800"}\n', [{"op": "add", "path": "/b", "value": 1}], b'{"a":"\\ud800","b":1}\n'),
    ("failed patch -> empty body", b'{"a":1}\n', [{"op": "test", "path": "/a", "value": 2}], b""),
    ("scalar body -> empty", b"5\n", [], b""),
    ("string body -> empty", b'"x"', [], b""),
    ("invalid JSON -> empty", b"{nope", [], b""),
    ("invalid UTF-8 -> empty", b'{"a":"\xff"}', [], b""),
    ("empty body -> empty", b"", [], b""),
    ("too deep to parse -> empty", b"[" * 100_000 + b"]" * 100_000, [], b""),
    ("too deep to copy -> empty", b"[" * 900 + b"]" * 900, [], b""),
]  # fmt: skip


@pytest.mark.parametrize(
    ("body", "patch", "expected"),
    [v[1:] for v in BODY_VECTORS],
    ids=[v[0] for v in BODY_VECTORS],
)
def test_apply_body_patch_vectors(
    body: bytes, patch: list[dict[str, Any]], expected: bytes
) -> None:
    assert apply_body_patch(body, patch) == expected


def test_large_body_patch_is_linear() -> None:
    body = json.dumps({"items": list(range(150_000))}).encode() + b"\n"
    assert len(body) > 1_000_000
    out = apply_body_patch(body, [{"op": "add", "path": "/items/-", "value": "end"}])
    assert out.endswith(b',149999,"end"]}\n')
    assert len(out) == len(body) - 150_000 + 6  # compact: one space fewer per element, +',"end"'


# --- properties -------------------------------------------------------------------------------

json_scalars = st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=8)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=20,
)
json_documents = st.lists(json_values, max_size=4) | st.dictionaries(
    st.text(max_size=6), json_values, max_size=4
)


def _escape(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


def _pointers(value: Any, prefix: str = "") -> list[tuple[str, Any]]:
    out = [(prefix, value)]
    if isinstance(value, dict):
        for key, child in value.items():
            out += _pointers(child, f"{prefix}/{_escape(key)}")
    elif isinstance(value, list):
        for index, child in enumerate(value):
            out += _pointers(child, f"{prefix}/{index}")
    return out


@settings(max_examples=examples(50))
@given(json_documents)
def test_test_ops_built_from_the_document_always_pass(document: Any) -> None:
    patch = [{"op": "test", "path": p, "value": v} for p, v in _pointers(document)]
    assert apply_patch(document, patch) == document
    body = json.dumps(document).encode() + b"\n"
    expected = json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"
    assert apply_body_patch(body, patch) == expected


@settings(max_examples=examples(50))
@given(json_documents, st.data())
def test_add_then_remove_round_trips(document: Any, data: st.DataObject) -> None:
    containers = [(p, v) for p, v in _pointers(document) if isinstance(v, dict | list)]
    path, target = data.draw(st.sampled_from(containers))
    value = data.draw(json_values)
    if isinstance(target, dict):
        key = data.draw(st.text(max_size=6).filter(lambda k: k not in target))
        where = f"{path}/{_escape(key)}"
    else:
        where = f"{path}/{data.draw(st.integers(0, len(target)))}"
    added = apply_patch(document, [{"op": "add", "path": where, "value": value}])
    assert apply_patch(added, [{"op": "test", "path": where, "value": value}]) == added
    assert apply_patch(added, [{"op": "remove", "path": where}]) == document


patch_ops = st.lists(
    st.dictionaries(
        st.sampled_from(["op", "path", "from", "value", "other"]),
        st.sampled_from(["add", "remove", "replace", "move", "copy", "test", "/", "/0", "/a", "", "/-", "/a/0", "~"])
        | json_values,
    ),
    max_size=5,
)  # fmt: skip


@settings(max_examples=examples(60))
@given(json_documents, patch_ops)
def test_arbitrary_patches_raise_only_patch_errors(document: Any, patch: list[Any]) -> None:
    try:
        apply_patch(document, patch)
    except ProtocolError as exc:
        assert isinstance(exc, JsonPatchError)
    body = json.dumps(document).encode()
    assert isinstance(apply_body_patch(body, patch), bytes)


@given(st.binary(max_size=64))
def test_arbitrary_bodies_never_raise(body: bytes) -> None:
    out = apply_body_patch(body, [{"op": "add", "path": "/x", "value": 1}])
    assert out == b"" or json.loads(out)["x"] == 1
