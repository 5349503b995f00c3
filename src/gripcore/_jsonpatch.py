"""JSON Patch (RFC 6902) for published `body-patch` responses.

A long-poll's published `http-response` may carry `body-patch` instead of a body: a list of
operations applied to the hold's own (timeout) body, which must be a JSON object or array.
The result is serialised compactly and keeps the original body's trailing `\\n` or `\\r\\n`, as
Pushpin does. On any failure Pushpin sends an empty body (pushpin-behaviour.md Appendix A.5);
`apply_body_patch` reproduces that, while `apply_patch` raises for callers that want the reason.

Operations work on a deep copy, so a failed patch leaves nothing half applied. Every operation
walks its JSON Pointer once: linear in the size of the patch plus the paths it touches.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping, Sequence
from typing import Any

from ._errors import RemoteProtocolError

__all__ = ["JsonPatchError", "apply_body_patch", "apply_patch"]


class JsonPatchError(RemoteProtocolError):
    """A patch operation is malformed or does not apply to the document."""


def _parse_pointer(pointer: object) -> list[str]:
    if not isinstance(pointer, str):
        raise JsonPatchError("JSON pointer must be a string")
    if pointer == "":
        return []
    if not pointer.startswith("/"):
        raise JsonPatchError(f"JSON pointer {pointer!r} must start with '/'")
    return [t.replace("~1", "/").replace("~0", "~") for t in pointer[1:].split("/")]


def _index(container: list[Any], token: str, *, for_add: bool) -> int:
    if token == "-" and for_add:
        return len(container)
    if not (token.isascii() and token.isdigit()) or (len(token) > 1 and token[0] == "0"):
        raise JsonPatchError(f"invalid array index {token!r}")
    # more digits than the length has cannot be in range (and int() refuses huge strings)
    index = int(token) if len(token) <= len(str(len(container))) else len(container) + 1
    if index > len(container) or (index == len(container) and not for_add):
        raise JsonPatchError(f"array index {index} out of range")
    return index


def _parent(doc: Any, tokens: list[str]) -> Any:
    node = doc
    for token in tokens[:-1]:
        node = _child(node, token)
    return node


def _child(node: Any, token: str) -> Any:
    if isinstance(node, dict):
        if token not in node:
            raise JsonPatchError(f"member {token!r} not found")
        return node[token]
    if isinstance(node, list):
        return node[_index(node, token, for_add=False)]
    raise JsonPatchError(f"cannot descend into a scalar at {token!r}")


def _get(doc: Any, tokens: list[str]) -> Any:
    node = doc
    for token in tokens:
        node = _child(node, token)
    return node


def _add(doc: Any, tokens: list[str], value: Any) -> Any:
    if not tokens:
        return value
    parent = _parent(doc, tokens)
    token = tokens[-1]
    if isinstance(parent, dict):
        parent[token] = value
    elif isinstance(parent, list):
        parent.insert(_index(parent, token, for_add=True), value)
    else:
        raise JsonPatchError(f"cannot add to a scalar at {token!r}")
    return doc


def _remove(doc: Any, tokens: list[str]) -> tuple[Any, Any]:
    if not tokens:
        raise JsonPatchError("cannot remove the whole document")
    parent = _parent(doc, tokens)
    token = tokens[-1]
    if isinstance(parent, dict):
        if token not in parent:
            raise JsonPatchError(f"member {token!r} not found")
        return doc, parent.pop(token)
    if isinstance(parent, list):
        return doc, parent.pop(_index(parent, token, for_add=False))
    raise JsonPatchError(f"cannot remove from a scalar at {token!r}")


def _apply_op(doc: Any, op: Mapping[str, Any]) -> Any:
    name = op.get("op")
    if "path" not in op:
        raise JsonPatchError(f"operation {name!r} has no 'path'")
    path = _parse_pointer(op["path"])
    if name in ("add", "replace", "test") and "value" not in op:
        raise JsonPatchError(f"operation {name!r} has no 'value'")
    if name == "add":
        return _add(doc, path, copy.deepcopy(op["value"]))
    if name == "remove":
        return _remove(doc, path)[0]
    if name == "replace":
        _get(doc, path)  # must exist
        if not path:
            return copy.deepcopy(op["value"])
        parent = _parent(doc, path)
        key = path[-1] if isinstance(parent, dict) else _index(parent, path[-1], for_add=False)
        parent[key] = copy.deepcopy(op["value"])  # in place: a member keeps its position
        return doc
    if name in ("move", "copy"):
        if "from" not in op:
            raise JsonPatchError(f"operation {name!r} has no 'from'")
        source = _parse_pointer(op["from"])
        if name == "move":
            if path[: len(source)] == source and path != source:
                raise JsonPatchError("cannot move a value into one of its children")
            doc, value = _remove(doc, source)
        else:
            value = copy.deepcopy(_get(doc, source))
        return _add(doc, path, value)
    if name == "test":
        if not _json_equal(_get(doc, path), op["value"]):
            raise JsonPatchError(f"test failed at {op['path']!r}")
        return doc
    raise JsonPatchError(f"unknown operation {name!r}")


def _json_equal(a: Any, b: Any) -> bool:
    """RFC 6902 `test` equality: same JSON type and value (`true` is not `1`, `1` is `1.0`)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, dict):
        return (
            isinstance(b, dict)
            and a.keys() == b.keys()
            and all(_json_equal(value, b[key]) for key, value in a.items())
        )
    if isinstance(a, list):
        return (
            isinstance(b, list)
            and len(a) == len(b)
            and all(_json_equal(x, y) for x, y in zip(a, b, strict=True))
        )
    if isinstance(a, int | float):
        return isinstance(b, int | float) and a == b
    return type(a) is type(b) and bool(a == b)


def apply_patch(document: Any, patch: Sequence[Mapping[str, Any]]) -> Any:
    """Apply `patch` to a copy of `document` and return it. Raises `JsonPatchError`, also for
    a document or value nested too deeply to copy."""
    try:
        doc = copy.deepcopy(document)
        for op in patch:
            if not isinstance(op, Mapping):
                raise JsonPatchError("patch operations must be objects")
            doc = _apply_op(doc, op)
    except RecursionError:
        raise JsonPatchError("document nested too deeply") from None
    return doc


def apply_body_patch(body: bytes, patch: Sequence[Mapping[str, Any]]) -> bytes:
    """Patch a JSON response body as Pushpin does: compact output, trailing newline kept, and
    an empty body when the body is not a JSON object/array or the patch does not apply."""
    suffix = b"\r\n" if body.endswith(b"\r\n") else b"\n" if body.endswith(b"\n") else b""
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError too
        return b""
    if not isinstance(document, dict | list):
        return b""
    try:
        result = apply_patch(document, patch)
        text = json.dumps(result, separators=(",", ":"), ensure_ascii=False)
    except (JsonPatchError, RecursionError):
        return b""
    try:
        return text.encode("utf-8") + suffix
    except UnicodeEncodeError:  # a lone surrogate (JSON "\ud800"): keep it escaped
        return json.dumps(result, separators=(",", ":")).encode("ascii") + suffix
