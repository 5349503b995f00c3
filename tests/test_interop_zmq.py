"""Interop: pubcontrol's ZeroMQ client (pubcontrol.ZmqPubControlClient, what django-grip's
`control_zmq_uri` uses) publishing to gripcore's ZeroMQ sockets, and to Pushpin's, with the
same items: subscribers of both must receive the same bytes.

pubcontrol 3.5 sends tnetstrings (it needs a `tnetstring` module: tnetstring3 provides it) on a
PUSH socket (`push_uri`, items carry their channel), or, with `require_subscribers=True`, on an
XPUB socket (`pub_uri`) as `[channel, item]`, publishing only to channels its XPUB socket saw a
subscription for and calling `sub_callback("sub" | "unsub", channel)` as they come and go.

It can also find the PUSH socket by asking the command socket (`get-zmq-uris`), which is what
django-grip's `control_zmq_uri` does.

Pushpin (../shared/tools/run-pushpin, ports 24999/24561, so ZeroMQ PULL 24560, SUB 24562 and
command 24563)
is used when it can be started; otherwise its half skips with the reason, and the gripcore
tests still run.
"""

from __future__ import annotations

import queue
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from .e2e_support import (
    Origin,
    RawClient,
    running_proxy,
    stop_pushpin,
)

pubcontrol = pytest.importorskip("pubcontrol")
pytest.importorskip("zmq")
pytest.importorskip("tnetstring")
gripcontrol = pytest.importorskip("gripcontrol")

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parent.parent
RUN_PUSHPIN = ROOT.parent / "shared" / "tools" / "run-pushpin"
PUSHPIN_HTTP, PUSHPIN_PUBLISH = 24999, 24561
PUSHPIN_PULL, PUSHPIN_SUB = PUSHPIN_PUBLISH - 1, PUSHPIN_PUBLISH + 1
PUSHPIN_COMMAND = PUSHPIN_PUBLISH + 2
WAIT = 10.0  # seconds a notification or an item may take on a loaded machine


def _stream(channel: str) -> Callable[[Any], Any]:
    return lambda request: (
        200,
        [("Content-Type", "text/plain"), ("Grip-Hold", "stream"), ("Grip-Channel", channel)],
        b"open\n",
    )


@pytest.fixture(scope="module")
def origin() -> Iterator[Origin]:
    routes = {"/push": _stream("zpush"), "/xpub": _stream("zxpub"), "/probe": _stream("zprobe")}
    server = Origin(routes=routes).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def pushpin(origin: Origin, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    if not RUN_PUSHPIN.exists():
        pytest.skip(f"reference Pushpin launcher not found at {RUN_PUSHPIN}")
    if shutil.which("pushpin") is None and shutil.which("apt-get") is None:
        pytest.skip("Pushpin is not installed and cannot be installed (no apt-get)")
    workdir = tmp_path_factory.mktemp("ref-pushpin-zmq")
    target = f"127.0.0.1:{origin.port},over_http"
    command = ["bash", str(RUN_PUSHPIN), "start", target, str(PUSHPIN_HTTP), str(PUSHPIN_PUBLISH)]
    started = subprocess.run(
        [*command, str(workdir)], capture_output=True, text=True, timeout=600, check=False
    )
    if started.returncode != 0:
        pytest.skip(f"reference Pushpin could not be started: {started.stderr.strip()[-300:]}")
    try:
        _wait_accepting(PUSHPIN_HTTP)
        yield PUSHPIN_HTTP
    finally:
        stop_pushpin(str(RUN_PUSHPIN), str(workdir))


def _wait_accepting(http_port: int) -> None:
    """Pushpin opens its ports before its handler takes GRIP answers: hold a probe stream
    until it answers 200."""
    deadline = time.monotonic() + 30
    while True:
        head = b""
        try:
            probe = RawClient(http_port)
            probe.get("/probe")
            head = probe.read_until(b"\r\n\r\n")
            probe.close()
        except (ConnectionError, TimeoutError):
            pass  # not listening yet
        if head.startswith(b"HTTP/1.1 200 "):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"Pushpin never accepted GRIP answers: {head!r}")
        time.sleep(0.2)


def _item(text: str, item_id: str) -> Any:
    return pubcontrol.Item(gripcontrol.HttpStreamFormat(text), id=item_id)


def _subscribe(port: int, path: str) -> RawClient:
    client = RawClient(port)
    client.get(path)
    client.read_until(b"open\n\r\n")
    return client


def _push_until_received(client: Any, channel: str, item: Any, reader: RawClient) -> bytes:
    """Publish (same id: deduplicated) until the subscriber has it: a subscription takes a
    moment to reach Pushpin's handler, a separate process."""
    marker = item.formats[0].content.encode() + b"\r\n"
    deadline = time.monotonic() + WAIT
    while True:
        client.publish(channel, item, blocking=True)
        try:
            return reader.read_until(marker, timeout=0.5)
        except TimeoutError:
            if time.monotonic() > deadline:
                raise


def _push_scenario(
    push_uri: str | None, http_port: int, command_uri: str | None = None
) -> list[bytes]:
    """Two items over PUSH; with `command_uri`, the client finds the PUSH socket by asking the
    command socket (`get-zmq-uris`), as django-grip's `control_zmq_uri` does."""
    client = pubcontrol.ZmqPubControlClient(command_uri, push_uri=push_uri)
    reader = _subscribe(http_port, "/push")
    try:
        stamp = time.monotonic_ns()
        first = _push_until_received(client, "zpush", _item("one \u00e9\n", f"a{stamp}"), reader)
        second = _push_until_received(client, "zpush", _item("two\n", f"b{stamp}"), reader)
        return [first, second]
    finally:
        client.close()
        reader.close()


def _xpub_scenario(pub_uri: str, http_port: int) -> list[Any]:
    events: queue.Queue[tuple[str, str]] = queue.Queue()
    client = pubcontrol.ZmqPubControlClient(
        None,
        pub_uri=pub_uri,
        require_subscribers=True,
        sub_callback=lambda kind, channel: events.put((kind, channel)),
    )
    try:
        reader = _subscribe(http_port, "/xpub")
        gained = events.get(timeout=WAIT)
        client.publish("zxpub", _item("via xpub\n", f"x{time.monotonic_ns()}"), blocking=True)
        received = reader.read_until(b"via xpub\n\r\n", timeout=WAIT)
        reader.close()
        lost = events.get(timeout=WAIT)
        return [gained, received, lost]
    finally:
        client.close()


EXPECTED_PUSH = [b"7\r\none \xc3\xa9\n\r\n", b"4\r\ntwo\n\r\n"]
EXPECTED_XPUB = [("sub", "zxpub"), b"9\r\nvia xpub\n\r\n", ("unsub", "zxpub")]


@pytest.mark.usefixtures("proxy_adapter")
def test_pubcontrol_zmq_client_publishes_to_gripcore(origin: Origin) -> None:
    with running_proxy(
        routes=(f"* 127.0.0.1:{origin.port},over_http",),
        push_in_spec="tcp://127.0.0.1:*",
        push_in_sub_spec="tcp://127.0.0.1:*",
        command_spec="tcp://127.0.0.1:*",
    ) as proxy:
        endpoints = proxy.server.zmq.endpoints
        assert _push_scenario(endpoints["pull"], proxy.port) == EXPECTED_PUSH
        assert _xpub_scenario(endpoints["sub"], proxy.port) == EXPECTED_XPUB
        assert _push_scenario(None, proxy.port, endpoints["command"]) == EXPECTED_PUSH


def test_pubcontrol_zmq_client_same_bytes_from_pushpin_and_gripcore(
    origin: Origin, pushpin: int
) -> None:
    with running_proxy(
        routes=(f"* 127.0.0.1:{origin.port},over_http",),
        push_in_spec="tcp://127.0.0.1:*",
        push_in_sub_spec="tcp://127.0.0.1:*",
        command_spec="tcp://127.0.0.1:*",
    ) as proxy:
        endpoints = proxy.server.zmq.endpoints
        ours = _push_scenario(endpoints["pull"], proxy.port)
        ours_xpub = _xpub_scenario(endpoints["sub"], proxy.port)
        ours_found = _push_scenario(None, proxy.port, endpoints["command"])
    reference = _push_scenario(f"tcp://127.0.0.1:{PUSHPIN_PULL}", pushpin)
    reference_xpub = _xpub_scenario(f"tcp://127.0.0.1:{PUSHPIN_SUB}", pushpin)
    reference_found = _push_scenario(None, pushpin, f"tcp://127.0.0.1:{PUSHPIN_COMMAND}")
    assert ours == reference == EXPECTED_PUSH
    assert ours_xpub == reference_xpub == EXPECTED_XPUB
    assert ours_found == reference_found == EXPECTED_PUSH
