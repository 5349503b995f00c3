"""The documented gevent embedding example (examples/gevent_wsgi.py), run for real: a WSGI app
on gevent's WSGIServer and gripcore's gevent adapter in one process (here: one thread with its
own hub), a real browser-like client on loopback, and a publish from inside a request handler."""

from __future__ import annotations

import importlib.util
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .e2e_support import RawClient, wait_for

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "gevent_wsgi.py"


def _load_example() -> Any:
    spec = importlib.util.spec_from_file_location("gevent_wsgi_example", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def app_and_proxy() -> Iterator[dict[str, Any]]:
    example = _load_example()
    box: dict[str, Any] = {}
    ready = threading.Event()

    def run() -> None:
        import gevent
        import gevent.event

        proxy, wsgi = example.start(proxy_port=0, app_port=0, publish_port=0)
        box.update(proxy=proxy, wsgi=wsgi, hub=gevent.get_hub(), stop=gevent.event.Event())
        ready.set()
        box["stop"].wait()
        wsgi.stop()
        proxy.close()
        box["hub"].destroy(destroy_loop=True)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert ready.wait(10)
    try:
        yield box
    finally:
        box["hub"].loop.run_callback_threadsafe(box["stop"].set)
        thread.join(10)
        assert not thread.is_alive()


def _post_say(port: int, form: bytes) -> bytes:
    client = RawClient(port)
    client.send(
        b"POST /say HTTP/1.1\r\nHost: example.com\r\n"
        b"Content-Type: application/x-www-form-urlencoded\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(form), form)
    )
    head, _ = client.read_response()
    client.close()
    return head


def test_page_stream_and_publish_from_a_handler(app_and_proxy: dict[str, Any]) -> None:
    proxy = app_and_proxy["proxy"]
    port = proxy.listen_addresses[0][1]

    page = RawClient(port)
    page.get("/")
    head, body = page.read_response()
    assert head.startswith(b"HTTP/1.1 200 ")
    assert b'new EventSource("/events")' in body

    events = RawClient(port)
    events.get("/events")
    head = events.read_until(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    assert b"Content-Type: text/event-stream" in head
    wait_for(lambda: proxy.broker.hub.subscriber_count("chat") == 1)

    assert _post_say(port, b"text=hi+%3Cb%3E").startswith(b"HTTP/1.1 204 ")
    # one chunk carrying the event, the text escaped by the handler
    assert events.read_until(b"\n\n\r\n").endswith(b"data: hi &lt;b&gt;\n\n\r\n")

    assert _post_say(port, b"text=").startswith(b"HTTP/1.1 400 ")
    assert events.nothing_for(0.2)
