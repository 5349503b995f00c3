"""Interop: a real django-eventstream application behind the reference Pushpin and gripcore.

A user switching from Pushpin brings an application nobody here wrote. The most used Python
GRIP stack is django-eventstream on django-grip; tests/eventstream_app/ is such a project
(storage on SQLite, the proxy's Grip-Sig verified with key `changeme`). It runs under Django's
own server, a separate process on loopback, once behind each proxy: the reference Pushpin 1.36
(skipped, with the reason, when it cannot be started here) and gripcore on each adapter. Every
scenario makes the same assertions on all of them, through a browser's eyes: the SSE events a
client receives (type, `id:` line, data), what a reconnect with `Last-Event-ID` resumes from.

What the application relies on (pushpin-behaviour.md sections 2.6 and 3.4):
* its live events carry `id: %I`, rendered by `build-id` from `id_format`
  `chan:%(events-chan)s`: the ID of the event being delivered;
* the bodies it answers (catch-up pages, recovery) escape `%` for `build-id`, which the proxy
  applies to them too;
* catch-up is a chain of next links (`lastEventId` in the link, no hold until the last page);
* a gap (an item whose prev-id is not the last one delivered) is recovered through the next
  link with `Grip-Last`;
* `skip-users` on the events channels, `require-sub` on the user's channel for kicks.
"""

from __future__ import annotations

import contextlib
import http.client
import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from .e2e_support import running_proxy, stop_pushpin

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parent.parent
APP_DIR = Path(__file__).resolve().parent / "eventstream_app"
RUN_PUSHPIN = ROOT.parent / "shared" / "tools" / "run-pushpin"
# the reference Pushpin's ports and folder for this suite (its ZeroMQ sockets take 23560,
# 23562 and 23563), apart from the other Pushpin tests'
PUSHPIN_HTTP, PUSHPIN_PUBLISH = 23999, 23561
PUSHPIN_DIR = "/tmp/ref-pushpin-eventstream"
SIG_KEY = "changeme"
TIMEOUT = 15.0  # seconds any one read may wait: a real server process, a loaded machine

# the application runs in its own process: only check that it can (importing
# django_eventstream here would need Django settings in the test process)
for _module in ("django", "django_eventstream", "django_grip"):
    if importlib.util.find_spec(_module) is None:
        pytest.skip(f"{_module} is not installed (the test extra)", allow_module_level=True)


def _free_port() -> int:
    """An ephemeral port for Django's server, which needs a number up front."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- the application -----------------------------------------------------------------------


class DjangoApp:
    """tests/eventstream_app under `manage.py runserver --noreload`, its own SQLite file."""

    def __init__(self, db: Path, publish_url: str, port: int | None = None) -> None:
        self.port = port if port is not None else _free_port()
        env = {
            **os.environ,
            "ESAPP_DB": str(db),
            "ESAPP_PUBLISH": publish_url,
            "DJANGO_SETTINGS_MODULE": "esproject.settings",
            "PYTHONDONTWRITEBYTECODE": "1",
        }
        self.log = db.with_suffix(".log").open("wb")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "manage.py",
                "runserver",
                f"127.0.0.1:{self.port}",
                "--noreload",
                "--skip-checks",
            ],
            cwd=APP_DIR,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                self.control("grip-check")
                return
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise AssertionError(f"Django did not start: see {self.log.name}") from None
                time.sleep(0.1)

    def control(self, name: str, **params: str | int) -> Any:
        """Call one of the app's controls directly (not through the proxy)."""
        query = urllib.parse.urlencode(params)
        url = f"http://127.0.0.1:{self.port}/{name}/?{query}"
        with urllib.request.urlopen(url, timeout=60) as response:
            return json.loads(response.read())

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
        self.log.close()


def migrated_db(tmp: Path) -> Path:
    db = tmp / "template.sqlite3"
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "-v0"],
        cwd=APP_DIR,
        env={**os.environ, "ESAPP_DB": str(db), "DJANGO_SETTINGS_MODULE": "esproject.settings"},
        check=True,
        timeout=120,
    )
    return db


# --- a browser's EventSource, reduced to what the assertions need ----------------------------


@dataclass
class Event:
    event: str = "message"
    id: str | None = None
    data: str = ""
    comment: str | None = None


OPEN_STREAMS: list[EventStream] = []


@pytest.fixture(autouse=True)
def _close_streams() -> Iterator[None]:
    yield
    while OPEN_STREAMS:
        OPEN_STREAMS.pop().close()


class EventStream:
    """One SSE response read as a browser's EventSource parses it (comments kept apart), on a
    raw socket: the chunked body is decoded here, so a read may time out and go on."""

    def __init__(self, port: int, path: str, headers: dict[str, str]) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        OPEN_STREAMS.append(self)
        lines = [f"GET {path} HTTP/1.1", f"Host: 127.0.0.1:{port}"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        self.raw = b""
        self.buffer = b""
        self.ended = False
        self.comments: list[str] = []
        while b"\r\n\r\n" not in self.raw:
            self._recv()
        head, self.raw = self.raw.split(b"\r\n\r\n", 1)
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        self.status = int(status_line.split()[1])
        self.headers = {
            k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in header_lines)
        }
        self.chunked = self.headers.get("transfer-encoding", "").lower() == "chunked"
        self._decode()

    def _recv(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            self.ended = True
            raise EOFError
        self.raw += data

    def _decode(self) -> None:
        if not self.chunked:
            self.buffer, self.raw = self.buffer + self.raw, b""
            return
        while True:
            line_end = self.raw.find(b"\r\n")
            if line_end < 0:
                return
            size = int(self.raw[:line_end].split(b";")[0], 16)
            if size == 0:
                self.ended = True
                return
            end = line_end + 2 + size + 2
            if len(self.raw) < end:
                return
            self.buffer += self.raw[line_end + 2 : end - 2]
            self.raw = self.raw[end:]

    def _fill(self) -> None:
        try:
            self._recv()
        except EOFError:
            return
        self._decode()

    def _next(self) -> Event | None:
        """The next event or comment block; None at the end of the stream."""
        while True:
            end = self.buffer.find(b"\n\n")
            if end >= 0:
                block, self.buffer = self.buffer[:end], self.buffer[end + 2 :]
                return _parse(block.decode())
            if self.ended:
                return None
            self._fill()

    def next_event(self) -> Event | None:
        """The next event (keep-alives and comments skipped), None when the stream ended."""
        while True:
            event = self._next()
            if event is None or (event.comment is None and event.event != "keep-alive"):
                return event
            if event.comment is not None:
                self.comments.append(event.comment)

    def events(self, count: int) -> list[tuple[str | None, str]]:
        """(id, data) of the next `count` events, which must all be `message` events."""
        out = []
        for _ in range(count):
            event = self.next_event()
            assert event is not None, f"stream ended after {out}"
            assert event.event == "message", event
            out.append((event.id, event.data))
        return out

    def wait_for_comment(self, text: str, timeout: float) -> bool:
        """Read until comment `text` arrives (True) or `timeout` passes (False); events read
        meanwhile fail the test: nothing else is published while a probe waits."""
        self.sock.settimeout(timeout)
        try:
            while True:
                if text in self.comments:
                    return True
                event = self._next()
                assert event is not None and event.comment is not None, event
                self.comments.append(event.comment)
        except TimeoutError:
            return False
        finally:
            self.sock.settimeout(TIMEOUT)

    def close(self) -> None:
        self.sock.close()


def _parse(block: str) -> Event:
    event = Event()
    data: list[str] = []
    comment = True
    for line in block.split("\n"):
        if line.startswith(":"):
            event.comment = line[1:].strip()
            continue
        comment = False
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            event.event = value
        elif name == "id":
            event.id = value
        elif name == "data":
            data.append(value)
    if not comment:
        event.comment = None
    event.data = "\n".join(data)
    return event


# --- the proxies -----------------------------------------------------------------------------


@dataclass
class Leg:
    """One proxy in front of its own instance of the application."""

    name: str
    http_port: int
    publish_port: int
    app: DjangoApp
    probes: int = 0

    def open(self, channel: str, last_event_id: str | None = None) -> EventStream:
        """Open /events/?channel=... through the proxy as EventSource does, read up to the
        `stream-open` event, and (for a caught-up stream) wait until it is subscribed."""
        headers = {"Accept": "text/event-stream", "Cache-Control": "no-cache"}
        if last_event_id is not None:
            headers["Last-Event-ID"] = last_event_id
        stream = EventStream(self.http_port, f"/events/?channel={channel}", headers)
        assert stream.status == 200, (stream.status, stream.buffer)
        assert stream.headers["content-type"] == "text/event-stream"
        event = stream.next_event()
        assert event is not None and event.event == "stream-open", event
        return stream

    def wait_subscribed(self, stream: EventStream) -> None:
        """Publish an SSE comment on the user's channel until the stream shows it: a stream
        hold reaches Pushpin's handler asynchronously. Comments are invisible to a browser."""
        self.probes += 1
        probe = f"probe-{self.probes}"
        item = {
            "channel": "user-anonymous",
            "formats": {"http-stream": {"content": f":{probe}\n\n"}},
        }
        deadline = time.monotonic() + TIMEOUT
        while not stream.wait_for_comment(probe, 0.3):
            assert time.monotonic() < deadline, "the stream was never subscribed"
            self.publish([item])

    def publish(self, items: list[dict[str, Any]]) -> None:
        body = json.dumps({"items": items}).encode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.publish_port}/publish/",
            data=body,
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200

    def get(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        connection = http.client.HTTPConnection("127.0.0.1", self.http_port, timeout=TIMEOUT)
        try:
            connection.request("GET", path, headers=headers or {})
            response = connection.getresponse()
            return response.status, response.read()
        finally:
            connection.close()


def _pushpin_accepting(port: int) -> None:
    """Pushpin's port answers before its handler takes GRIP holds ("Accept service
    unavailable", 500): wait until a stream is held."""
    deadline = time.monotonic() + 60
    while True:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT)
        try:
            connection.request("GET", "/events/?channel=probe")
            if connection.getresponse().status == 200:
                return
        except OSError:
            pass
        finally:
            connection.close()
        assert time.monotonic() < deadline, "Pushpin never held a stream"
        time.sleep(0.3)


@contextlib.contextmanager
def pushpin_leg(template: Path, tmp: Path) -> Iterator[Leg]:
    if not RUN_PUSHPIN.exists():
        pytest.skip(f"reference Pushpin launcher not found at {RUN_PUSHPIN}")
    if shutil.which("pushpin") is None and shutil.which("apt-get") is None:
        pytest.skip("Pushpin is not installed and cannot be installed (no apt-get)")
    db = tmp / "pushpin.sqlite3"
    shutil.copy(template, db)
    app = DjangoApp(db, f"http://127.0.0.1:{PUSHPIN_PUBLISH}")
    try:
        started = subprocess.run(
            [
                "bash",
                str(RUN_PUSHPIN),
                "start",
                f"127.0.0.1:{app.port},over_http",
                str(PUSHPIN_HTTP),
                str(PUSHPIN_PUBLISH),
                PUSHPIN_DIR,
            ],
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        if started.returncode != 0:
            pytest.skip(f"reference Pushpin could not be started: {started.stderr.strip()[-300:]}")
        try:
            _pushpin_accepting(PUSHPIN_HTTP)
            yield Leg("pushpin", PUSHPIN_HTTP, PUSHPIN_PUBLISH, app)
        finally:
            stop_pushpin(str(RUN_PUSHPIN), PUSHPIN_DIR)
    finally:
        app.stop()


@contextlib.contextmanager
def gripcore_leg(adapter: str, template: Path, tmp: Path) -> Iterator[Leg]:
    db = tmp / f"gripcore-{adapter}.sqlite3"
    shutil.copy(template, db)
    port = _free_port()
    # `gripcore serve --route '* 127.0.0.1:PORT,over_http' --sig-key changeme --sig-iss pushpin`
    with running_proxy(
        routes=(f"* 127.0.0.1:{port},over_http",),
        sig_key=SIG_KEY,
        sig_iss="pushpin",
        adapter=adapter,
    ) as proxy:
        app = DjangoApp(db, f"http://127.0.0.1:{proxy.publish_port}", port)
        try:
            yield Leg(adapter, proxy.port, proxy.publish_port, app)
        finally:
            app.stop()


@pytest.fixture(scope="module")
def template_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return migrated_db(tmp_path_factory.mktemp("eventstream-db"))


@pytest.fixture(scope="module", params=["pushpin", "asyncio", "gevent"])
def leg(
    request: pytest.FixtureRequest, template_db: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Leg]:
    tmp = tmp_path_factory.mktemp(f"eventstream-{request.param}")
    if request.param == "pushpin":
        with pushpin_leg(template_db, tmp) as leg:
            yield leg
    else:
        with gripcore_leg(request.param, template_db, tmp) as leg:
            yield leg


# --- the scenarios ---------------------------------------------------------------------------


def test_live_events_carry_their_own_ids(leg: Leg) -> None:
    stream = leg.open("live")
    leg.wait_subscribed(stream)
    for n in (1, 2, 3):
        assert leg.app.control("send", channel="live", data=f"event {n}") == {"id": n}
    assert stream.events(3) == [("live:1", "event 1"), ("live:2", "event 2"), ("live:3", "event 3")]
    stream.close()


def test_reconnect_with_last_event_id_has_no_duplicate_and_no_gap(leg: Leg) -> None:
    stream = leg.open("rc")
    leg.wait_subscribed(stream)
    leg.app.control("send", channel="rc", data="one")
    leg.app.control("send", channel="rc", data="two")
    received = stream.events(2)
    assert received == [("rc:1", "one"), ("rc:2", "two")]
    stream.close()
    leg.app.control("send", channel="rc", data="three")  # while the browser is away
    leg.app.control("send", channel="rc", data="four")
    last_id = received[-1][0]
    assert last_id is not None
    stream = leg.open("rc", last_event_id=last_id)  # what EventSource sends on reconnect
    assert stream.events(2) == [("rc:3", "three"), ("rc:4", "four")]
    leg.wait_subscribed(stream)
    leg.app.control("send", channel="rc", data="five")
    assert stream.events(1) == [("rc:5", "five")]
    stream.close()


def test_catch_up_of_hundreds_of_events_across_next_link_pages(leg: Leg) -> None:
    """django-eventstream answers at most 100 events per request: 249 missed events come in
    three bodies chained by next links, then the stream holds and goes live."""
    assert leg.app.control("send-many", channel="cu", data="100% n", count=250) == {"id": 250}
    stream = leg.open("cu", last_event_id="cu:1")
    received = stream.events(249)
    assert received == [(f"cu:{n}", f"100% n {n}") for n in range(2, 251)]
    leg.wait_subscribed(stream)
    leg.app.control("send", channel="cu", data="live")
    assert stream.events(1) == [("cu:251", "live")]
    stream.close()


PERCENT_DATA = '100% %(user)s %%I %I %s {"a": "%(b)I"} 50%'


def test_percent_signs_survive_build_id_escaping_live_and_in_catch_up(leg: Leg) -> None:
    """django-eventstream doubles `%` for build-id in live events and in the bodies it
    answers: the browser must see the data as it was sent."""
    stream = leg.open("pct")
    leg.wait_subscribed(stream)
    leg.app.control("send", channel="pct", data=PERCENT_DATA)
    leg.app.control("send", channel="pct", data=PERCENT_DATA + " again")
    assert stream.events(2) == [("pct:1", PERCENT_DATA), ("pct:2", PERCENT_DATA + " again")]
    stream.close()
    stream = leg.open("pct", last_event_id="pct:1")
    assert stream.events(1) == [("pct:2", PERCENT_DATA + " again")]
    stream.close()


def test_a_gap_is_recovered_through_grip_last(leg: Leg) -> None:
    """An event stored but never published (a lost publish): the next one's prev-id shows the
    gap, the proxy asks the next link with Grip-Last and the application fills it in."""
    stream = leg.open("gap")
    leg.wait_subscribed(stream)
    assert leg.app.control("store", channel="gap", data="lost") == {"id": 1}
    leg.app.control("send", channel="gap", data="two")
    assert stream.events(2) == [("gap:1", "lost"), ("gap:2", "two")]
    leg.wait_subscribed(stream)
    leg.app.control("send", channel="gap", data="three")
    assert stream.events(1) == [("gap:3", "three")]
    stream.close()


def test_skip_users_skips_and_the_sequence_goes_on(leg: Leg) -> None:
    stream = leg.open("skip")
    leg.wait_subscribed(stream)
    leg.app.control("send", channel="skip", data="not for anonymous", skip="anonymous")
    leg.app.control("send", channel="skip", data="for everyone")
    leg.app.control("send", channel="skip", data="again", skip="someone-else")
    assert stream.events(2) == [("skip:2", "for everyone"), ("skip:3", "again")]
    stream.close()


def test_a_kick_ends_only_the_stream_of_the_forbidden_channel(leg: Leg) -> None:
    kicked = leg.open("ka")
    other = leg.open("kb")
    leg.wait_subscribed(kicked)
    leg.wait_subscribed(other)
    leg.app.control("kick", channel="ka")
    error = kicked.next_event()
    assert error is not None and error.event == "stream-error" and error.id == "error"
    # (django-eventstream 5.3 writes this event's data as a Python repr, not JSON)
    assert "Permission denied to channels: ka" in error.data
    assert kicked.next_event() is None  # the stream ended
    leg.app.control("send", channel="kb", data="still here")
    assert other.events(1) == [("kb:1", "still here")]
    other.close()


def test_origin_requests_are_signed_and_django_grip_verifies_them(leg: Leg) -> None:
    status, body = leg.get("/grip-check/")
    assert status == 200
    seen = json.loads(body)
    assert seen["proxied"] is True and seen["signed"] is True
    assert "HTTP_GRIP_SIG" in seen["headers"]
    direct = leg.app.control("grip-check")  # not through the proxy: not signed
    assert direct["proxied"] is False and direct["signed"] is False
    # and the events view refuses what the proxy did not sign
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"http://127.0.0.1:{leg.app.port}/events/?channel=x", timeout=10)
    assert refused.value.code == 403
    refused.value.close()
