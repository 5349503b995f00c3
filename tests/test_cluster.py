"""End-to-end: several gripcore nodes on one real Redis are one broker.

Nodes are ProxyThreads with `engine="redis://..."`; clients and the origin are real sockets. Each
test uses its own key and channel prefix (and the keys are deleted afterwards), so runs never
see each other's messages. The shared Redis at 127.0.0.1:6379 must answer: when it does not,
these tests fail rather than skip (.ci/run starts one). The restart test runs its own
redis-server on a free port, which it kills and starts again.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import signal
import socket
import subprocess
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from .e2e_support import (
    NativeWsOrigin,
    Origin,
    OriginRequest,
    ProxyThread,
    RawClient,
    WsClient,
    publish,
    running_proxy,
    wait_for,
)

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("proxy_adapter")]

REDIS_HOST, REDIS_PORT, REDIS_DB = "127.0.0.1", 6379, 11
WOH = "application/websocket-events"


def _sse(request: OriginRequest) -> tuple[int, list[tuple[str, str]], bytes]:
    return (
        200,
        [("Content-Type", "text/event-stream"), ("Grip-Hold", "stream"), ("Grip-Channel", "news")],
        b"",
    )


def _poll(request: OriginRequest) -> tuple[int, list[tuple[str, str]], bytes]:
    return (
        200,
        [("Content-Type", "text/plain"), ("Grip-Hold", "response"), ("Grip-Channel", "news")],
        b"nothing yet\n",
    )


def _ws(request: OriginRequest) -> tuple[int, list[tuple[str, str]], bytes]:
    out = b""
    if request.body.startswith(b"OPEN"):
        sub = b'c:{"type": "subscribe", "channel": "news"}'
        out = b"OPEN\r\nTEXT %x\r\n%s\r\n" % (len(sub), sub)
    return 200, [("Content-Type", WOH), ("Sec-WebSocket-Extensions", "grip")], out


@pytest.fixture(scope="module")
def origin() -> Iterator[Origin]:
    server = Origin(routes={"/sse": _sse, "/poll": _poll, "/ws": _ws}).start()
    yield server
    server.stop()


@pytest.fixture
def shared_redis() -> Iterator[tuple[redis.Redis, str]]:
    """The shared Redis (it must answer) and a key prefix of this test's own."""
    client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=REDIS_DB)
    client.ping()  # no Redis: the test fails here, it is not skipped
    prefix = f"gripcore-test:{uuid.uuid4().hex}:"
    try:
        yield client, prefix
    finally:
        keys = list(client.scan_iter(match=f"{prefix}*"))
        if keys:
            client.delete(*keys)
        client.close()


def engine_url(prefix: str, port: int = REDIS_PORT) -> str:
    return f"redis://{REDIS_HOST}:{port}/{REDIS_DB}?prefix={prefix}"


@contextlib.contextmanager
def cluster(origin: Origin, url: str, count: int, **options: Any) -> Iterator[list[ProxyThread]]:
    with contextlib.ExitStack() as stack:
        nodes = [
            stack.enter_context(
                running_proxy(
                    engine=url, routes=(f"* 127.0.0.1:{origin.port},over_http",), **options
                )
            )
            for _ in range(count)
        ]
        yield nodes


def numsub(client: redis.Redis, prefix: str, channel: str) -> int:
    return int(client.pubsub_numsub(f"{prefix}c:{channel}")[0][1])


def stream_item(id: str | None, text: str, prev_id: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"channel": "news", "formats": {"http-stream": {"content": text}}}
    if id is not None:
        out["id"] = id
    if prev_id is not None:
        out["prev-id"] = prev_id
    return out


def sse_client(node: ProxyThread, headers: str = "") -> RawClient:
    client = RawClient(node.port)
    client.get("/sse", headers=headers)
    head = client.read_until(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    return client


def chunk(text: str) -> bytes:
    data = text.encode()
    return b"%x\r\n%s\r\n" % (len(data), data)


def metric(node: ProxyThread, name: str) -> float:
    client = RawClient(node.publish_port)
    client.send(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    _, body = client.read_response()
    client.close()
    for line in body.decode().splitlines():
        if line.startswith((f"gripcore_{name} ", f"{name} ")):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in metrics:\n{body.decode()}")


# --- delivery across nodes --------------------------------------------------------------------


def test_publish_to_one_node_reaches_every_transport_on_another(
    origin: Origin, shared_redis: tuple[redis.Redis, str]
) -> None:
    client, prefix = shared_redis
    with cluster(origin, engine_url(prefix), 2) as (a, b):
        sse = sse_client(b)
        poll = RawClient(b.port)
        poll.get("/poll")
        ws = WsClient(b.port, "/ws")
        ws.accept()
        wait_for(lambda: b.call(lambda: b.server.broker.hub.subscriber_count("news")) == 3)
        wait_for(lambda: numsub(client, prefix, "news") == 1)
        # interest-based: only the node with subscribers is subscribed in Redis
        assert a.call(lambda: a.server.broker.subscribed_channels) == frozenset()
        assert b.call(lambda: b.server.broker.subscribed_channels) == {"news"}
        status, body = publish(
            a.publish_port,
            [
                {
                    "channel": "news",
                    "id": "n1",
                    "formats": {
                        "http-stream": {"content": "data: hello\n\n"},
                        "http-response": {"body": "hello poll\n"},
                        "ws-message": {"content": "hello ws"},
                    },
                }
            ],
        )
        assert (status, body) == (200, b"Published\n")
        assert sse.read_until(b"data: hello\n\n\r\n") == chunk("data: hello\n\n")
        head, polled = poll.read_response()
        assert head.startswith(b"HTTP/1.1 200 OK\r\n")
        assert polled == b"hello poll\n"
        assert ws.receive_message() == "hello ws"


def test_zeromq_items_go_through_the_redis_engine(
    origin: Origin, shared_redis: tuple[redis.Redis, str]
) -> None:
    zmq = pytest.importorskip("zmq")
    client, prefix = shared_redis
    url = engine_url(prefix)
    with (
        cluster(origin, url, 1) as (b,),
        running_proxy(
            engine=url,
            routes=(f"* 127.0.0.1:{origin.port},over_http",),
            push_in_spec="tcp://127.0.0.1:*",
        ) as a,
    ):
        sse = sse_client(b)
        wait_for(lambda: numsub(client, prefix, "news") == 1)
        context = zmq.Context()
        push = context.socket(zmq.PUSH)
        try:
            push.linger = 0
            push.connect(a.server.zmq.endpoints["pull"])
            item = b'J{"channel": "news", "id": "z1", "http-stream": {"content": "one\\n"}}'
            push.send(item)
            push.send(item)  # the same id again: dropped cluster-wide
            push.send(b'J{"channel": "news", "http-stream": {"content": "two\\n"}}')
            assert sse.read_until(b"two\n\r\n") == chunk("one\n") + chunk("two\n")
        finally:
            push.close()
            context.term()


def test_an_asyncio_node_and_a_gevent_node_are_one_broker(
    origin: Origin, shared_redis: tuple[redis.Redis, str]
) -> None:
    client, prefix = shared_redis
    url = engine_url(prefix)
    routes = (f"* 127.0.0.1:{origin.port},over_http",)
    with (
        running_proxy(engine=url, routes=routes, adapter="asyncio") as a,
        running_proxy(engine=url, routes=routes, adapter="gevent") as g,
    ):
        on_a, on_g = sse_client(a), sse_client(g)
        wait_for(lambda: numsub(client, prefix, "news") == 2)
        assert publish(a.publish_port, [stream_item("1", "from asyncio\n")])[0] == 200
        assert publish(g.publish_port, [stream_item("2", "from gevent\n")])[0] == 200
        assert publish(g.publish_port, [stream_item("1", "duplicate\n")])[0] == 200
        expected = chunk("from asyncio\n") + chunk("from gevent\n")
        for sse in (on_a, on_g):
            assert sse.read_until(b"from gevent\n\r\n") == expected
            assert sse.nothing_for(0.2)


def test_native_websocket_and_http10_stream_across_nodes(
    origin: Origin, shared_redis: tuple[redis.Redis, str]
) -> None:
    client, prefix = shared_redis
    native = NativeWsOrigin().start()  # subscribes each connection to channel "native"
    url = engine_url(prefix)
    try:
        with (
            running_proxy(engine=url, routes=(f"* 127.0.0.1:{native.port}",)) as b,
            cluster(origin, url, 1) as (a,),
            cluster(origin, url, 1) as (c,),
        ):
            ws = WsClient(b.port, "/room")
            ws.accept()
            old = RawClient(c.port)
            old.send(b"GET /sse HTTP/1.0\r\nHost: example.com\r\n\r\n")
            assert old.read_until(b"\r\n\r\n").startswith(b"HTTP/1.1 200 OK\r\n")
            wait_for(lambda: numsub(client, prefix, "native") == 1)
            wait_for(lambda: numsub(client, prefix, "news") == 1)
            publish(
                a.publish_port,
                [
                    {"channel": "native", "formats": {"ws-message": {"content": "to native"}}},
                    stream_item(None, "raw bytes\n"),
                ],
            )
            assert ws.receive_message() == "to native"
            assert old.read_until(b"raw bytes\n") == b"raw bytes\n"  # HTTP/1.0: no chunking
    finally:
        native.stop()


def test_duplicate_published_to_two_nodes_is_delivered_once(
    origin: Origin, shared_redis: tuple[redis.Redis, str]
) -> None:
    client, prefix = shared_redis
    with cluster(origin, engine_url(prefix), 2) as (a, b):
        on_a, on_b = sse_client(a), sse_client(b)
        wait_for(lambda: numsub(client, prefix, "news") == 2)
        assert publish(a.publish_port, [stream_item("dup", "first\n")])[0] == 200
        assert publish(b.publish_port, [stream_item("dup", "again\n")])[0] == 200
        assert publish(b.publish_port, [stream_item("end", "end\n")])[0] == 200
        for sse in (on_a, on_b):
            assert sse.read_until(b"end\n\r\n") == chunk("first\n") + chunk("end\n")
        dropped = a.call(lambda: a.server.broker.engine_stats.duplicates)
        dropped += b.call(lambda: b.server.broker.engine_stats.duplicates)
        assert dropped == 1


def test_prev_id_order_is_one_order_on_every_node(
    origin: Origin, shared_redis: tuple[redis.Redis, str]
) -> None:
    client, prefix = shared_redis
    with cluster(origin, engine_url(prefix), 3) as (a, b, c):
        on_a, on_c = sse_client(a), sse_client(c)
        wait_for(lambda: numsub(client, prefix, "news") == 2)
        assert publish(a.publish_port, [stream_item("1", "one\n")])[0] == 200
        for sse in (on_a, on_c):
            assert sse.read_until(b"one\n\r\n") == chunk("one\n")
        # 3 (after 2) reaches Redis through b before 2 does through c: every node waits for 2
        assert publish(b.publish_port, [stream_item("3", "three\n", prev_id="2")])[0] == 200
        assert publish(c.publish_port, [stream_item("2", "two\n", prev_id="1")])[0] == 200
        for sse in (on_a, on_c):
            assert sse.read_until(b"three\n\r\n") == chunk("two\n") + chunk("three\n")


def test_a_channel_is_unsubscribed_after_the_linger(
    origin: Origin, shared_redis: tuple[redis.Redis, str]
) -> None:
    client, prefix = shared_redis
    with cluster(origin, engine_url(prefix), 1, engine_linger=0.2) as (a,):
        sse = sse_client(a)
        wait_for(lambda: numsub(client, prefix, "news") == 1)
        sse.close()
        wait_for(lambda: numsub(client, prefix, "news") == 0)
        assert a.call(lambda: a.server.broker.subscribed_channels) == frozenset()


# --- history and resume -----------------------------------------------------------------------


def test_sse_resume_on_another_node_gets_missed_then_live(
    origin: Origin, shared_redis: tuple[redis.Redis, str]
) -> None:
    client, prefix = shared_redis
    with cluster(origin, engine_url(prefix), 2, history=10) as (a, b):
        first = sse_client(b)
        wait_for(lambda: numsub(client, prefix, "news") == 1)
        assert publish(a.publish_port, [stream_item("1", "id: 1\ndata: one\n\n")])[0] == 200
        first.read_until(b"one\n\n\r\n")
        first.close()  # the client drops; two items go out meanwhile
        publish(a.publish_port, [stream_item("2", "id: 2\ndata: two\n\n")])
        publish(a.publish_port, [stream_item("3", "id: 3\ndata: three\n\n")])
        assert client.xlen(f"{prefix}h:news") == 3
        assert 0 < client.pttl(f"{prefix}h:news") <= 86_400_000  # history expires when idle
        again = sse_client(a, "Last-Event-ID: 1\r\n")  # reconnects through the other node
        assert again.read_until(b"three\n\n\r\n") == chunk("id: 2\ndata: two\n\n") + chunk(
            "id: 3\ndata: three\n\n"
        )
        wait_for(lambda: a.call(lambda: a.server.broker.pending_resumes) == 0)
        publish(b.publish_port, [stream_item("4", "id: 4\ndata: four\n\n")])
        assert again.read_until(b"four\n\n\r\n") == chunk("id: 4\ndata: four\n\n")
        # an id the history does not hold: nothing replayed (the origin's recovery applies)
        stale = sse_client(b, "Last-Event-ID: 0\r\n")
        wait_for(lambda: b.call(lambda: b.server.broker.pending_resumes) == 0)
        publish(a.publish_port, [stream_item("5", "id: 5\ndata: five\n\n")])
        assert stale.read_until(b"five\n\n\r\n") == chunk("id: 5\ndata: five\n\n")
        assert again.read_until(b"five\n\n\r\n") == chunk("id: 5\ndata: five\n\n")
        assert metric(a, 'resumes_total{result="found"}') == 1
        assert metric(b, 'resumes_total{result="missed"}') == 1


def test_websocket_resume_with_the_query_parameter(
    origin: Origin, shared_redis: tuple[redis.Redis, str]
) -> None:
    _, prefix = shared_redis
    with cluster(origin, engine_url(prefix), 2, history=5) as (a, b):
        items = [
            {"channel": "news", "id": str(n), "formats": {"ws-message": {"content": f"m{n}"}}}
            for n in range(1, 4)
        ]
        for it in items:
            assert publish(a.publish_port, [it])[0] == 200
        ws = WsClient(b.port, "/ws?last-event-id=1")
        ws.accept()
        assert [ws.receive_message(), ws.receive_message()] == ["m2", "m3"]
        wait_for(lambda: b.call(lambda: b.server.broker.pending_resumes) == 0)
        publish(a.publish_port, [{"channel": "news", "formats": {"ws-message": {"content": "m4"}}}])
        assert ws.receive_message() == "m4"


def test_resume_with_the_memory_engine(origin: Origin) -> None:
    routes = (f"* 127.0.0.1:{origin.port},over_http",)
    with running_proxy(routes=routes, history=2) as node:
        for n in range(1, 5):
            publish(node.publish_port, [stream_item(str(n), f"<{n}>")])
        sse = sse_client(node, "Last-Event-ID: 3\r\n")
        publish(node.publish_port, [stream_item("5", "<5>")])
        assert sse.read_until(b"<5>\r\n") == chunk("<4>") + chunk("<5>")
        old = sse_client(node, "Last-Event-ID: 1\r\n")  # fell out of the 2-item history
        publish(node.publish_port, [stream_item("6", "<6>")])
        assert old.read_until(b"<6>\r\n") == chunk("<6>")


# --- faults -----------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def own_redis(port: int) -> Iterator[subprocess.Popen[bytes]]:
    server = shutil.which("redis-server")
    assert server is not None, "redis-server is needed for the restart test"
    proc = subprocess.Popen(
        [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        probe = redis.Redis(host="127.0.0.1", port=port)

        def answers() -> bool:
            try:
                return bool(probe.ping())
            except redis.RedisError:
                return False

        wait_for(answers)
        probe.close()
        yield proc
    finally:
        proc.kill()
        proc.wait()


def test_redis_restart_mid_stream(origin: Origin, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="gripcore")
    port = _free_port()
    prefix = "restart:"
    probe = redis.Redis(host="127.0.0.1", port=port)
    with (
        own_redis(port) as first,
        cluster(origin, engine_url(prefix, port), 2) as (a, b),
    ):
        sse = sse_client(b)
        wait_for(lambda: numsub(probe, prefix, "news") == 1)
        publish(a.publish_port, [stream_item("1", "before\n")])
        assert sse.read_until(b"before\n\r\n") == chunk("before\n")
        first.kill()
        first.wait()
        wait_for(lambda: metric(a, "engine_up") == 0 and metric(b, "engine_up") == 0)
        status, body = publish(a.publish_port, [stream_item("2", "lost\n")])
        assert status == 503
        assert body.startswith(b"Service Unavailable: the engine cannot take items now (Redis at ")
        assert body.endswith(b"they may not have been published, retry later\n")
        assert sse.nothing_for(0.2)  # held open, nothing delivered
        with own_redis(port):
            wait_for(lambda: metric(a, "engine_up") == 1 and metric(b, "engine_up") == 1, 15)
            wait_for(lambda: numsub(probe, prefix, "news") == 1)  # b resubscribed
            assert publish(a.publish_port, [stream_item("3", "after\n")])[0] == 200
            assert sse.read_until(b"after\n\r\n") == chunk("after\n")
            for node in (a, b):
                assert metric(node, "engine_outages_total") == 1
                assert metric(node, "engine_outage_seconds_total") > 0
            assert metric(a, "engine_rejected_items_total") == 1
    probe.close()
    messages = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("lost the Redis engine at redis://127.0.0.1:") for m in messages)
    assert any("reconnected after" in m for m in messages)


def test_a_hung_redis_is_noticed_and_left_behind(origin: Origin) -> None:
    """A Redis that stops answering without closing its sockets (SIGSTOP) is taken as gone
    after three missed health PINGs; the node reconnects once it answers again."""
    port = _free_port()
    prefix = "hung:"
    probe = redis.Redis(host="127.0.0.1", port=port)
    with own_redis(port) as server, cluster(origin, engine_url(prefix, port), 1) as (a,):
        a.call(lambda: setattr(a.server.engine_driver, "health_interval", 0.1))
        sse = sse_client(a)
        wait_for(lambda: numsub(probe, prefix, "news") == 1)
        server.send_signal(signal.SIGSTOP)
        try:
            wait_for(lambda: metric(a, "engine_up") == 0)
        finally:
            server.send_signal(signal.SIGCONT)
        wait_for(lambda: metric(a, "engine_up") == 1)
        wait_for(lambda: numsub(probe, prefix, "news") == 1)
        assert publish(a.publish_port, [stream_item("1", "back\n")])[0] == 200
        assert sse.read_until(b"back\n\r\n") == chunk("back\n")
        assert metric(a, "engine_outages_total") == 1
    probe.close()


def test_a_node_dying_does_not_disturb_the_others(
    origin: Origin, shared_redis: tuple[redis.Redis, str]
) -> None:
    client, prefix = shared_redis
    with cluster(origin, engine_url(prefix), 3) as (a, b, c):
        doomed, on_b, on_c = sse_client(a), sse_client(b), sse_client(c)
        wait_for(lambda: numsub(client, prefix, "news") == 3)
        a.stop()
        assert doomed.read_to_close().endswith(b"0\r\n\r\n")  # a's clients see their end
        wait_for(lambda: numsub(client, prefix, "news") == 2)
        assert publish(b.publish_port, [stream_item("x", "still here\n")])[0] == 200
        for sse in (on_b, on_c):
            assert sse.read_until(b"still here\n\r\n") == chunk("still here\n")
