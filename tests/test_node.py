"""The shared state of a proxy node (gripcore._node) and its publish API connection, driven
directly with values: routes, keys, fan-out slices, metrics, and PublishConnection over h11."""

from __future__ import annotations

import json
import logging
import warnings

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from gripcore._engine import RedisEngine
from gripcore._items import Item, parse_publish_body
from gripcore._node import FLUSH_SLICE, LocalPublishing, NodeServer, PublishConnection, _url

from .sansio_support import Harness, get, reply

ROUTE = "* 127.0.0.1:9"
STREAM = [(b"Grip-Hold", b"stream"), (b"Grip-Channel", b"ch")]


def items(*channels: str) -> list[Item]:
    body = {
        "items": [{"channel": c, "formats": {"http-stream": {"content": "x"}}} for c in channels]
    }
    return parse_publish_body(json.dumps(body).encode())


def claims(token: bytes) -> dict[str, object]:
    decoded: dict[str, object] = jwt.decode(token, options={"verify_signature": False})
    return decoded


# --- routes and keys ---


def test_routes_file_is_read_and_reloaded(caplog: pytest.LogCaptureFixture) -> None:
    h = Harness(files={"routes": b"example.org 127.0.0.1:9\n"}, routes_file="routes")
    node = h.node
    assert node.route_for("example.org", "/", "http") is not None
    assert node.route_for("other", "/", "http") is None
    h.files["routes"] = b"* 127.0.0.1:10\n"
    with caplog.at_level(logging.INFO, "gripcore"):
        node.reload_routes()
    assert "routes reloaded" in caplog.text
    table = node.routes
    route = node.route_for("other", "/", "http")
    assert route is not None and route.targets[0].port == 10
    for broken in (b"*\n", b"\xff\xfe"):  # a RoutesError, then bad UTF-8
        h.files["routes"] = broken
        node.reload_routes()
        assert node.routes is table
    del h.files["routes"]  # OSError
    node.reload_routes()
    assert node.routes is table
    assert caplog.text.count("routes not reloaded, keeping the current ones") == 3


def test_inline_routes_win_and_none_is_the_starter_kit() -> None:
    h = Harness(files={"routes": b"* 127.0.0.1:10\n"}, routes_file="routes", routes=(ROUTE,))
    route = h.node.route_for("x", "/", "http")
    assert route is not None and route.targets[0].port == 9
    assert Harness().node.route_for("x", "/", "http") is None


def test_sign_with_the_node_key_a_route_key_or_none() -> None:
    h = Harness(
        sig_key=None,
        routes=(
            ROUTE,
            "*,path_beg=/r,sig_key=route-key-of-at-least-32-bytes-ok,sig_iss=r 127.0.0.1:9",
        ),
    )
    route = h.node.route_for("x", "/", "http")
    assert h.node.sign(route) is None and h.node.sign(None) is None
    special = h.node.route_for("x", "/r", "http")
    token = h.node.sign(special)
    assert token is not None
    secret = b"route-key-of-at-least-32-bytes-ok"
    decoded = jwt.decode(token, secret, algorithms=["HS256"], options={"verify_exp": False})
    assert decoded["iss"] == "r"

    # by default, Pushpin's: key "changeme", issuer "pushpin"
    token = Harness(routes=(ROUTE,)).node.sign(None)
    assert token is not None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", jwt.InsecureKeyLengthWarning)
        decoded = jwt.decode(
            token, b"changeme", algorithms=["HS256"], options={"verify_exp": False}
        )
    assert decoded["iss"] == "pushpin"

    h = Harness(routes=(ROUTE,), sig_key="node-key-of-at-least-32-bytes-okay", sig_iss="me")
    token = h.node.sign(h.node.route_for("x", "/", "http"))
    assert token is not None
    decoded = jwt.decode(
        token,
        b"node-key-of-at-least-32-bytes-okay",
        algorithms=["HS256"],
        options={"verify_exp": False},
    )
    assert decoded["iss"] == "me" and decoded["exp"] == 1_700_000_000 + 3600


def test_sig_key_given_as_a_pem_file_path() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    h = Harness(files={"key.pem": pem}, sig_key="key.pem")
    token = h.node.sign(None)
    assert token is not None
    assert jwt.get_unverified_header(token)["alg"] == "ES256"
    jwt.decode(token, key.public_key(), algorithms=["ES256"], options={"verify_exp": False})
    # a secret that merely ends like a file name, with no such file, is a secret
    secret = "a-secret-of-32-bytes-not-a-file.pem"
    token = Harness(sig_key=secret).node.sign(None)
    assert token is not None
    jwt.decode(token, secret.encode(), algorithms=["HS256"], options={"verify_exp": False})


# --- fan-out and flush slices ---


def test_publish_wakes_dirty_connections_in_slices() -> None:
    h = Harness(routes=(ROUTE,))
    conns = []
    for _ in range(FLUSH_SLICE + 3):
        conn, io = h.connect()
        h.origin.queue(reply(200, b"", STREAM))
        h.request(conn, io, get(b"/s"))
        io.take()
        conns.append((conn, io))
    h.publish({"channel": "ch", "formats": {"http-stream": {"content": "hi"}}})
    assert h.flushes == 1  # one pass asked for, however many connections
    h.node.flush_pass()
    written = [io for _, io in conns if io.out]
    assert len(written) == FLUSH_SLICE
    assert h.flushes == 2  # more are left: another pass
    h.clock.advance(0.5)
    h.node.flush_pass()
    assert all(io.take() == b"2\r\nhi\r\n" for _, io in conns)
    assert h.flushes == 2
    metrics = h.node.metrics.render()
    assert b"gripcore_publish_to_write_seconds_count 1" in metrics
    assert b'gripcore_connections{transport="stream"} %d' % (FLUSH_SLICE + 3) in metrics
    # a connection woken again while it is already dirty is flushed once
    h.publish({"channel": "ch", "formats": {"http-stream": {"content": "a"}}})
    h.publish({"channel": "ch", "formats": {"http-stream": {"content": "b"}}})
    assert h.flushes == 3
    h.node.flush_pass()
    assert conns[0][1].take() == b"1\r\na\r\n1\r\nb\r\n"


def test_deliver_and_broker_timer() -> None:
    h = Harness(routes=(ROUTE,))
    conn, io = h.connect()
    h.origin.queue(reply(200, b"", STREAM))
    h.request(conn, io, get(b"/s"))
    h.publish({"channel": "ch", "id": "1", "formats": {"http-stream": {"content": "a"}}})
    h.publish(
        {"channel": "ch", "id": "3", "prev-id": "2", "formats": {"http-stream": {"content": "c"}}}
    )
    assert h.broker_timers[-1] == h.clock.now + h.config.message_wait  # waits for id 2
    h.node.flush_pass()
    assert io.take() == b"1\r\na\r\n"
    h.clock.advance(h.config.message_wait)
    h.node.handle_broker_timer()
    h.node.flush_pass()
    assert io.take() == b"1\r\nc\r\n"  # released after the wait
    assert h.broker_timers[-1] is None
    result = h.node.broker.publish(items("ch"), h.clock.now)
    h.node.deliver(result)
    h.node.flush_pass()
    assert io.take() == b"1\r\nx\r\n"


def test_local_publishing_takes_one_item_or_many() -> None:
    h = Harness(routes=(ROUTE,))
    conn, io = h.connect()
    h.origin.queue(reply(200, b"", STREAM))
    h.request(conn, io, get(b"/s"))

    class Local(LocalPublishing):
        node = h.node

    local = Local()
    assert local.publish(items("ch")[0]) == 1
    assert local.publish(iter(items("ch", "other"))) == 2
    assert local.publish_stream("ch", "y") == 1
    h.flush_all()
    assert io.take() == b"1\r\nx\r\n1\r\nx\r\n1\r\ny\r\n"


def test_metrics_count_connections_by_transport() -> None:
    h = Harness(routes=(ROUTE,), history=5)
    h.connect()  # idle: "other"
    conn, io = h.connect()
    h.origin.queue(reply(200, b"", STREAM))
    h.request(conn, io, get(b"/s"))
    text = h.node.metrics.render().decode()
    assert 'gripcore_connections{transport="other"} 1' in text
    assert 'gripcore_connections{transport="stream"} 1' in text
    assert "gripcore_subscriptions 1" in text and "gripcore_channels 1" in text
    assert "gripcore_engine_up 1" in text


# --- a remote engine ---


def test_remote_engine_publishes_through_the_driver() -> None:
    h = Harness(routes=(ROUTE,), engine="redis://127.0.0.1:1/0")
    assert h.node.remote_engine
    sent: list[list[Item]] = []
    h.node.publish_remote = lambda batch: sent.append(list(batch))
    batch = items("ch")
    h.node.publish(batch)
    assert sent == [batch] and h.flushes == 0
    assert "gripcore_engine_up 0" in h.node.metrics.render().decode()
    assert not Harness().node.remote_engine


# --- announcing ---


def test_announce_logs_addresses_and_gives_the_starter_banner(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO, "gripcore"):
        banner = Harness().node.announce([("0.0.0.0", 7999), ("::1", 7998)], ("127.0.0.1", 5561))
    assert banner is not None and "http://127.0.0.1:7999" in banner
    assert "listening on http://0.0.0.0:7999 (publish API http://127.0.0.1:5561/publish/)" in (
        caplog.text
    )
    assert "listening on http://[::1]:7998" in caplog.text
    assert Harness(routes=(ROUTE,)).node.announce([("127.0.0.1", 1)], ("::", 2)) is None
    assert _url(("::", 1)) == "http://127.0.0.1:1"
    assert _url(("", 1), "/x") == "http://127.0.0.1:1/x"
    assert _url(("fe80::1", 2)) == "http://[fe80::1]:2"
    assert _url(("example.test", 3)) == "http://example.test:3"


# --- the publish API connection ---


PUBLISH = json.dumps(
    {"items": [{"channel": "ch", "formats": {"http-stream": {"content": "pub"}}}]}
).encode()


def publish_request(body: bytes = PUBLISH, *extra: bytes) -> bytes:
    head = [b"POST /publish/ HTTP/1.1", b"Host: x", b"Content-Length: %d" % len(body), *extra]
    return b"\r\n".join(head) + b"\r\n\r\n" + body


def answer(status: int, reason: bytes, body: bytes, *extra: bytes) -> bytes:
    head = [
        b"HTTP/1.1 %d %s" % (status, reason),
        b"Content-Type: text/plain",
        b"Content-Length: %d" % len(body),
        *extra,
    ]
    return b"\r\n".join(head) + b"\r\n\r\n" + body


def streaming(h: Harness) -> object:
    conn, io = h.connect()
    h.origin.queue(reply(200, b"", STREAM))
    h.request(conn, io, get(b"/s"))
    return io


def test_publish_api_publishes_and_keeps_the_connection() -> None:
    h = Harness(routes=(ROUTE,))
    io = streaming(h)
    pc = PublishConnection(h.node)
    out, close = pc.receive_data(publish_request() + publish_request())
    assert out == answer(200, b"OK", b"Published\n") * 2 and not close
    h.flush_all()
    assert io.take() == b"3\r\npub\r\n" * 2  # type: ignore[attr-defined]
    out, close = pc.receive_data(b"")
    assert out == b"" and close


def test_publish_api_in_pieces_and_connection_close() -> None:
    h = Harness(routes=(ROUTE,))
    pc = PublishConnection(h.node)
    data = publish_request(PUBLISH, b"Connection: close")
    assert pc.receive_data(data[:20]) == (b"", False)
    out, close = pc.receive_data(data[20:])
    assert out.startswith(b"HTTP/1.1 200 OK\r\n") and b"Connection: close" in out and close
    assert pc.receive_data(publish_request()) == (b"", True)  # nothing after the close


def test_publish_api_http_1_0_closes() -> None:
    h = Harness(routes=(ROUTE,))
    pc = PublishConnection(h.node)
    data = b"GET /metrics HTTP/1.0\r\n\r\n"
    out, close = pc.receive_data(data)
    assert out.startswith(b"HTTP/1.1 200 OK\r\n") and b"gripcore_connections" in out and close


def test_publish_api_refuses_a_post_without_length() -> None:
    h = Harness(routes=(ROUTE,))
    pc = PublishConnection(h.node)
    out, close = pc.receive_data(b"POST /publish/ HTTP/1.1\r\nHost: x\r\n\r\n")
    assert out == answer(
        411, b"Length Required", b"Request requires Content-Length.\n", b"Connection: close"
    )
    # lingering: the driver ends its sending side, reads on, and closes at EOF
    assert not close and pc.take_half_close() and not pc.take_half_close()
    assert pc.receive_data(b"the rest of the body") == (b"", False)
    assert pc.receive_data(b"") == (b"", True)


@pytest.mark.parametrize("chunked", [False, True])
def test_publish_api_body_over_the_limit_is_413(chunked: bool) -> None:
    h = Harness(routes=(ROUTE,), max_publish_body=10)
    pc = PublishConnection(h.node)
    if chunked:
        data = b"POST /publish/ HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        data += b"b\r\n" + b"x" * 11 + b"\r\n0\r\n\r\n"
    else:
        data = publish_request(b"x" * 11)
    out, close = pc.receive_data(data)
    assert out == answer(
        413,
        b"Request Entity Too Large",
        b"Request body too large (limit 10 bytes).\n",
        b"Connection: close",
    )
    assert not close and pc.take_half_close()


def test_publish_api_chunked_body_within_the_limit() -> None:
    h = Harness(routes=(ROUTE,))
    pc = PublishConnection(h.node)
    data = b"POST /publish/ HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    data += b"%x\r\n%s\r\n0\r\n\r\n" % (len(PUBLISH), PUBLISH)
    out, close = pc.receive_data(data)
    assert out == answer(200, b"OK", b"Published\n") and not close


def test_publish_api_garbage_is_400() -> None:
    h = Harness(routes=(ROUTE,))
    pc = PublishConnection(h.node)
    out, close = pc.receive_data(b"\x00garbage\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 400 Bad Request\r\n") and not close
    assert pc.take_half_close()


def test_publish_api_eof_mid_request() -> None:
    h = Harness(routes=(ROUTE,))
    pc = PublishConnection(h.node)
    assert pc.receive_data(publish_request()[:-5]) == (b"", False)
    assert pc.receive_data(b"") == (b"", True)


def test_publish_api_waits_for_a_remote_engine() -> None:
    h = Harness(routes=(ROUTE,), engine="redis://127.0.0.1:1/0")
    pc = PublishConnection(h.node)
    out, close = pc.receive_data(publish_request() + b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (out, close) == (b"", False)
    assert pc.awaiting is not None and len(pc.awaiting) == 1
    out, close = pc.engine_answered(None)
    # the answer, then the pipelined request that waited behind it
    assert out.startswith(answer(200, b"OK", b"Published\n") + b"HTTP/1.1 200 OK\r\n")
    assert b"gripcore_items_received_total" in out and not close
    assert pc.awaiting is None


def test_publish_api_remote_engine_failure_is_503() -> None:
    h = Harness(routes=(ROUTE,), engine="redis://127.0.0.1:1/0")
    pc = PublishConnection(h.node)
    pc.receive_data(publish_request())
    out, close = pc.engine_answered("connection refused")
    assert out.startswith(b"HTTP/1.1 503 Service Unavailable\r\n")
    assert b"Retry-After: 1" in out and b"(connection refused)" in out and not close


def test_publish_api_eof_while_the_engine_works() -> None:
    h = Harness(routes=(ROUTE,), engine="redis://127.0.0.1:1/0")
    pc = PublishConnection(h.node)
    pc.receive_data(publish_request())
    assert pc.receive_data(b"") == (b"", False)  # the answer is still owed
    out, close = pc.engine_answered(None)
    assert out == answer(200, b"OK", b"Published\n") and close


def test_publish_api_remote_engine_then_connection_close() -> None:
    h = Harness(routes=(ROUTE,), engine="redis://127.0.0.1:1/0")
    pc = PublishConnection(h.node)
    pc.receive_data(publish_request(PUBLISH, b"Connection: close"))
    out, close = pc.engine_answered(None)
    assert out.startswith(b"HTTP/1.1 200 OK\r\n") and close


def test_publish_api_connect_request_gets_a_head_then_a_close() -> None:
    h = Harness(routes=(ROUTE,))
    pc = PublishConnection(h.node)
    out, close = pc.receive_data(b"CONNECT / HTTP/1.1\r\nHost: x\r\n\r\n")
    # h11 takes a 2xx answer to CONNECT as a protocol switch: no body can follow it
    assert (out, close) == (b"", True)
    assert pc.receive_data(b"") == (b"", True)


def test_publish_api_eof_after_a_closing_answer() -> None:
    h = Harness(routes=(ROUTE,))
    pc = PublishConnection(h.node)
    out, close = pc.receive_data(b"GET /metrics HTTP/1.0\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 200 OK\r\n") and close
    assert pc.receive_data(b"") == (b"", True)


def test_flush_pass_with_nothing_dirty_writes_nothing() -> None:
    h = Harness(routes=(ROUTE,))
    assert h.node.take_flush_batch() == ([], False)
    h.node.flush_pass()
    assert h.flushes == 0
    # no observation: the histogram has no samples yet
    assert b"gripcore_publish_to_write_seconds_count" not in h.node.metrics.render()


# --- what the drivers build on ---


class _Driver:
    def __init__(self, engine: object, **hooks: object) -> None:
        self.engine = engine
        self.hooks = hooks


def test_engine_driver_is_made_only_for_a_remote_engine() -> None:
    published: list[object] = []
    assert Harness(routes=(ROUTE,)).node.make_engine_driver(_Driver, published.append) is None
    h = Harness(routes=(ROUTE,), engine="redis://127.0.0.1:6379/0")
    driver = h.node.make_engine_driver(_Driver, published.append)
    assert driver is not None and driver.engine is h.node.broker
    assert set(driver.hooks) == {"wake", "arm_timer"}
    arm = driver.hooks["arm_timer"]
    assert callable(arm)
    arm()
    assert h.broker_timers == [h.node.broker.next_deadline()]
    h.node.publish(items("ch"))  # a remote engine publishes through the driver
    assert len(published) == 1


def test_node_server_shows_the_node() -> None:
    h = Harness(routes=(ROUTE,))

    class Server(NodeServer):
        def __init__(self) -> None:
            self.node = h.node

    server = Server()
    conn, _ = h.connect()
    assert server.broker is h.node.broker
    assert server.routes is h.node.routes
    assert server.connections == {conn}
    assert server.metrics is h.node.metrics
    assert server.slow_consumers is h.node.slow_consumers
    server.reload_routes()
    assert server.routes is not None and server.routes.match("x", "/") is not None
    assert server.publish(items("ch", "ch")) == 2


# --- health: /healthz and /readyz ---


def _probe(h: Harness, path: str, method: bytes = b"GET") -> bytes:
    pc = PublishConnection(h.node)
    out, _ = pc.receive_data(method + b" " + path.encode() + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    return out


def test_readiness_follows_listening_the_engine_and_shutdown() -> None:
    h = Harness(routes=(ROUTE,))
    assert h.node.readiness() == "listeners not bound yet"
    assert _probe(h, "/readyz") == answer(
        503, b"Service Unavailable", b"not ready: listeners not bound yet\n"
    )
    assert _probe(h, "/healthz") == answer(200, b"OK", b"ok\n")  # alive all the same
    h.node.listening = True
    assert h.node.readiness() is None
    assert _probe(h, "/readyz") == answer(200, b"OK", b"ready\n")
    h.node.close_all()  # SIGTERM: the grace period begins
    assert h.node.readiness() == "shutting down"
    assert _probe(h, "/readyz").startswith(b"HTTP/1.1 503 Service Unavailable\r\n")
    assert _probe(h, "/healthz").startswith(b"HTTP/1.1 200 OK\r\n")


def test_readiness_fails_while_redis_is_unreachable() -> None:
    h = Harness(routes=(ROUTE,), engine="redis://127.0.0.1:1/0")
    h.node.listening = True
    broker = h.node.broker
    assert isinstance(broker, RedisEngine)
    assert h.node.readiness() == "engine unavailable (Redis unreachable)"  # not connected yet
    broker.link_up(now=1.0)
    assert h.node.readiness() is None
    assert _probe(h, "/readyz") == answer(200, b"OK", b"ready\n")
    broker.link_down(now=2.0)  # the outage
    assert _probe(h, "/readyz") == answer(
        503, b"Service Unavailable", b"not ready: engine unavailable (Redis unreachable)\n"
    )


def test_health_endpoints_answer_get_and_head_only() -> None:
    h = Harness(routes=(ROUTE,))
    for path in ("/healthz", "/readyz"):
        out = _probe(h, path, b"DELETE")
        assert out.startswith(b"HTTP/1.1 405 Method Not Allowed\r\n") and b"Allow: GET" in out
        head = _probe(h, path, b"HEAD")  # what a GET gets, without the body
        assert head.startswith(b"HTTP/1.1 ") and head.endswith(b"\r\n\r\n")
        assert b"Content-Length: " in head
