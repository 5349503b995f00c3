"""The HTTP publish API: every status, content negotiation, authentication, items on 200 only."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gripcore._items import HttpStreamFormat, Item
from gripcore._publishapi import DEFAULT_MAX_PUBLISH_BODY, PublishResponse, handle_publish_request

H = list[tuple[bytes, bytes]]

TEXT = (b"Content-Type", b"text/plain")
JSON = (b"Content-Type", b"application/json")
BODY = b'{"items": [{"channel": "news", "formats": {"http-stream": {"content": "hi\\n"}}}]}'
ITEM = Item(channel="news", http_stream=HttpStreamFormat(content=b"hi\n"))
NOT_ACCEPTABLE = b"Not Acceptable. Supported formats are text/plain and application/json.\n"
AUTH = (b"WWW-Authenticate", b'Bearer realm="gripcore"')

# (id, method, target, headers, body, keyword arguments, expected response)
VECTORS: list[tuple[str, bytes, bytes, H, bytes, dict[str, Any], PublishResponse]] = [
    ("published as text", b"POST", b"/publish", [], BODY, {},
     PublishResponse(200, [TEXT], b"Published\n", [ITEM])),
    ("trailing slash", b"POST", b"/publish/", [], BODY, {},
     PublishResponse(200, [TEXT], b"Published\n", [ITEM])),
    ("query ignored", b"POST", b"/publish?x=1", [], BODY, {},
     PublishResponse(200, [TEXT], b"Published\n", [ITEM])),
    ("published as JSON", b"POST", b"/publish", [(b"Accept", b"application/json")], BODY, {},
     PublishResponse(200, [JSON], b'{"message": "Published"}\n', [ITEM])),
    ("application/* is JSON", b"POST", b"/publish", [(b"accept", b"application/*;q=0.5")], BODY, {},
     PublishResponse(200, [JSON], b'{"message": "Published"}\n', [ITEM])),
    ("last recognised wins: text", b"POST", b"/publish", [(b"Accept", b"application/json, text/html, */*")], BODY, {},
     PublishResponse(200, [TEXT], b"Published\n", [ITEM])),
    ("last recognised wins: json", b"POST", b"/publish", [(b"Accept", b"text/plain"), (b"Accept", b"image/png, Application/JSON")], BODY, {},
     PublishResponse(200, [JSON], b'{"message": "Published"}\n', [ITEM])),
    ("text/* and *", b"POST", b"/publish", [(b"Accept", b"application/json, text/*")], BODY, {},
     PublishResponse(200, [TEXT], b"Published\n", [ITEM])),
    ("nothing acceptable", b"POST", b"/publish", [(b"Accept", b"image/png, text/html")], BODY, {},
     PublishResponse(406, [TEXT], NOT_ACCEPTABLE)),
    ("empty Accept", b"POST", b"/publish", [(b"Accept", b"")], BODY, {},
     PublishResponse(406, [TEXT], NOT_ACCEPTABLE)),
    ("root answers any method", b"DELETE", b"/", [], b"", {},
     PublishResponse(200, [TEXT], b"gripcore API\n")),
    ("root answers JSON", b"GET", b"/?probe", [(b"Accept", b"*/*, application/json")], b"", {"publish_key": "secret"},
     PublishResponse(200, [JSON], b'{"message": "gripcore API"}\n')),
    ("unknown path", b"POST", b"/publishx", [], BODY, {},
     PublishResponse(404, [TEXT], b"Not Found\n")),
    ("two trailing slashes", b"POST", b"/publish//", [], BODY, {},
     PublishResponse(404, [TEXT], b"Not Found\n")),
    ("recover is not ours", b"POST", b"/recover", [], b"", {},
     PublishResponse(404, [TEXT], b"Not Found\n")),
    ("404 as JSON", b"GET", b"/nope", [(b"Accept", b"application/json")], b"", {},
     PublishResponse(404, [JSON], b'{"message": "Not Found"}\n')),
    ("GET publish", b"GET", b"/publish", [], b"", {},
     PublishResponse(405, [TEXT, (b"Allow", b"POST")], b"Method Not Allowed\n")),
    ("PUT on Fastly path", b"PUT", b"/service/SVC1/publish/", [], BODY, {},
     PublishResponse(405, [TEXT, (b"Allow", b"POST")], b"Method Not Allowed\n")),
    ("too large", b"POST", b"/publish", [], b" " * 11, {"max_body": 10},
     PublishResponse(413, [TEXT], b"Request body too large (limit 10 bytes).\n")),
    ("invalid JSON", b"POST", b"/publish", [], b"{", {},
     PublishResponse(400, [TEXT], b"Body is not valid JSON.\n")),
    ("not an object", b"POST", b"/publish", [], b"[]", {},
     PublishResponse(400, [TEXT], b"Invalid format.\n")),
    ("no items", b"POST", b"/publish", [], b"{}", {},
     PublishResponse(400, [TEXT], b"Invalid format: object does not contain 'items'\n")),
    ("item error", b"POST", b"/publish", [(b"Accept", b"application/json")], b'{"items": [{"channel": "c"}]}', {},
     PublishResponse(400, [JSON], b'{"message": "Invalid format: item 0: no formats specified"}\n')),
    ("content over item limit", b"POST", b"/publish", [],
     b'{"items": [{"channel": "c", "formats": {"http-stream": {"content": "' + b"x" * 11 + b'"}}}]}', {"max_content_size": 10},
     PublishResponse(413, [TEXT], b"Invalid format: item 0: 'http-stream' contains 'content' of 11 bytes, over the limit of 10\n")),
    ("key required", b"POST", b"/publish", [], BODY, {"publish_key": "secret"},
     PublishResponse(401, [TEXT, AUTH], b"Unauthorized\n")),
    ("wrong key", b"POST", b"/publish", [(b"Authorization", b"Bearer nope")], BODY, {"publish_key": "secret"},
     PublishResponse(401, [TEXT, AUTH], b"Unauthorized\n")),
    ("Basic is not Bearer", b"POST", b"/publish", [(b"Authorization", b"Basic secret")], BODY, {"publish_key": "secret"},
     PublishResponse(401, [TEXT, AUTH], b"Unauthorized\n")),
    ("Bearer key", b"POST", b"/publish", [(b"Authorization", b"Bearer secret")], BODY, {"publish_key": "secret"},
     PublishResponse(200, [TEXT], b"Published\n", [ITEM])),
    ("bearer any case", b"POST", b"/publish", [(b"authorization", b"bEARER  secret ")], BODY, {"publish_key": "secret"},
     PublishResponse(200, [TEXT], b"Published\n", [ITEM])),
    ("Fastly-Key off the Fastly path", b"POST", b"/publish", [(b"Fastly-Key", b"secret")], BODY, {"publish_key": "secret"},
     PublishResponse(401, [TEXT, AUTH], b"Unauthorized\n")),
    ("Fastly-Key on the Fastly path", b"POST", b"/service/SVC_1-a/publish/", [(b"Fastly-Key", b"secret")], BODY, {"publish_key": "secret"},
     PublishResponse(200, [TEXT], b"Published\n", [ITEM])),
    ("Fastly path without slash", b"POST", b"/service/s/publish", [(b"Authorization", b"Bearer secret")], BODY, {"publish_key": "secret"},
     PublishResponse(200, [TEXT], b"Published\n", [ITEM])),
    ("wrong Fastly-Key", b"POST", b"/service/s/publish/", [(b"Fastly-Key", b"nope")], BODY, {"publish_key": "secret"},
     PublishResponse(401, [TEXT, AUTH], b"Unauthorized\n")),
    ("bad service id", b"POST", b"/service/a.b/publish/", [], BODY, {},
     PublishResponse(404, [TEXT], b"Not Found\n")),
    ("Fastly path, no key configured", b"POST", b"/service/s/publish/", [], BODY, {},
     PublishResponse(200, [TEXT], b"Published\n", [ITEM])),
    ("401 before parsing", b"POST", b"/publish", [], b"{", {"publish_key": "secret"},
     PublishResponse(401, [TEXT, AUTH], b"Unauthorized\n")),
]  # fmt: skip


@pytest.mark.parametrize(
    ("method", "target", "headers", "body", "kwargs", "expected"),
    [v[1:] for v in VECTORS],
    ids=[v[0] for v in VECTORS],
)
def test_publish_api(
    method: bytes,
    target: bytes,
    headers: H,
    body: bytes,
    kwargs: dict[str, Any],
    expected: PublishResponse,
) -> None:
    assert handle_publish_request(method, target, headers, body, **kwargs) == expected


def test_default_body_limit() -> None:
    assert DEFAULT_MAX_PUBLISH_BODY == 1_000_000
    big = b" " * (DEFAULT_MAX_PUBLISH_BODY + 1)
    response = handle_publish_request(b"POST", b"/publish", [], big)
    assert response.status == 413
    assert response.body == b"Request body too large (limit 1000000 bytes).\n"
    assert response.items == []


def test_large_batch_publishes_every_item() -> None:
    one = {"channel": "c", "formats": {"ws-message": {"content": "x" * 100}}}
    body = json.dumps({"items": [one] * 12_000}).encode()
    assert len(body) > 1_000_000
    response = handle_publish_request(b"POST", b"/publish", [], body, max_body=2_000_000)
    assert response.status == 200
    assert len(response.items) == 12_000
    assert response.items[-1].ws_message is not None
    assert response.items[-1].ws_message.content == b"x" * 100


@given(
    st.sampled_from([b"GET", b"POST", b"PUT"]),
    st.sampled_from([b"/", b"/publish", b"/publish/", b"/service/x/publish/", b"/x"])
    | st.binary(max_size=20),
    st.lists(st.tuples(st.sampled_from([b"Accept", b"Authorization", b"Fastly-Key"]),
                       st.binary(max_size=20)), max_size=3),
    st.binary(max_size=64) | st.sampled_from([BODY, b'{"items": []}', b'{"items": 5}']),
    st.sampled_from([None, "k"]),
)  # fmt: skip
def test_never_raises_and_items_only_on_200(
    method: bytes, target: bytes, headers: H, body: bytes, key: str | None
) -> None:
    response = handle_publish_request(method, target, headers, body, publish_key=key)
    assert response.status in (200, 400, 401, 404, 405, 406, 413)
    assert response.body.endswith(b"\n")
    assert response.headers[0][0] == b"Content-Type"
    if response.status != 200:
        assert response.items == []


JWT_KEY = "publish-secret-0123456789-abcdefghij"
ITEM_BODY = b'{"items":[{"channel":"c","formats":{"http-stream":{"content":"x"}}}]}'


def _jwt(key: str, iss: str, exp: int) -> bytes:
    import jwt

    return jwt.encode({"iss": iss, "exp": exp}, key, algorithm="HS256").encode()


@pytest.mark.parametrize(
    ("token", "iss", "status"),
    [
        (_jwt(JWT_KEY, "pub", 2000), "pub", 200),  # valid JWT signed with the publish key
        (_jwt(JWT_KEY, "pub", 2000), None, 200),  # no issuer configured: any issuer
        (_jwt(JWT_KEY, "other", 2000), "pub", 401),  # wrong issuer
        (_jwt(JWT_KEY, "pub", 999), "pub", 401),  # expired (now = 1000)
        (_jwt("not-the-publish-key-0123456789abcdef", "pub", 2000), "pub", 401),  # wrong key
        (b"a.b.c", "pub", 401),  # not a JWT at all
    ],
)
def test_publish_jwt_bearer_tokens(token: bytes, iss: str | None, status: int) -> None:
    response = handle_publish_request(
        b"POST",
        b"/publish/",
        [(b"Authorization", b"Bearer " + token)],
        ITEM_BODY,
        publish_key=JWT_KEY,
        publish_iss=iss,
        now=1000.0,
    )
    assert response.status == status
    assert bool(response.items) == (status == 200)


def test_jwt_tokens_need_a_clock() -> None:
    token = _jwt(JWT_KEY, "pub", 2000)
    response = handle_publish_request(
        b"POST",
        b"/publish/",
        [(b"Authorization", b"Bearer " + token)],
        ITEM_BODY,
        publish_key=JWT_KEY,
    )
    assert response.status == 401  # without `now` only the static key is accepted
