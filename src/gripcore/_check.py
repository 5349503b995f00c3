"""`gripcore check`: the sans-IO half of the GRIP conformance checker.

`gripcore check proxy` exercises a running GRIP proxy black-box through an origin the checker
runs itself; `gripcore check origin` exercises an origin the way a proxy would. The network I/O
(sockets, the origin's HTTP server, the clock) lives in the `gripcore.adapters.checker` driver;
this module holds everything that decides:

* the catalogues (`PROXY_CHECKS`, `ORIGIN_CHECKS`): each check's name, what it exercises and what
  it expects, including where Pushpin and gripcore differ and which behaviour is expected;
* `CheckerOrigin`, the checker's own origin as a pure request -> `GripResponse` function built
  with `gripcore.origin` (one path per scenario, the channel in the path), recording what the
  proxy sent it in a bounded log;
* the validation of an origin's answers (`describe_origin_response`, `check_websocket_answer`);
* reporting: one line per check (`PASS name` / `FAIL name: reason`), the closing line exactly
  `N passed, M failed`, the exit status, and `--json` for CI;
* the command-line definition (`add_check_parser`), which `gripcore._cli` mounts as `check`.

Errors: `CheckResult` and `RecordedRequest` raise `LocalProtocolError` when built with values
that could not be reported; everything that judges a peer returns a failing `CheckResult` (a
peer's garbage is a finding, not an exception).
"""

from __future__ import annotations

import argparse
import json
import math
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final, Literal

from ._errors import LocalProtocolError, ProtocolError
from ._headers import get_header
from ._instruct import GRIP_INSTRUCT_CONTENT_TYPE, KeepAlive, parse_instruct
from ._wscontrol import parse_control_message
from ._wsevents import Close, Open, Text, decode_events
from .origin import (
    WEBSOCKET_EVENTS_CONTENT_TYPE,
    GripResponse,
    WebSocketContext,
    grip_response,
    hold_response,
    hold_stream,
)

__all__ = [
    "DEFAULT_ORIGIN_LISTEN",
    "DEFAULT_STEP_TIMEOUT",
    "LONG_POLL_TIMEOUT",
    "MAX_RECORDED_REQUESTS",
    "ORIGIN_CHECKS",
    "PROXY_CHECKS",
    "REJECTED_PUBLISH_BODIES",
    "CheckResult",
    "CheckSpec",
    "CheckerOrigin",
    "RecordedRequest",
    "add_check_parser",
    "check_websocket_answer",
    "describe_origin_response",
    "exit_status",
    "failed",
    "format_result",
    "is_grip_response",
    "parse_host_port",
    "passed",
    "report_json",
    "report_lines",
    "summary_line",
]

# Loopback, any free port: the address is printed so the user can route to it.
DEFAULT_ORIGIN_LISTEN: Final = ("127.0.0.1", 0)
# Seconds to wait for any one thing a check expects (a response, a published message): a proxy
# on loopback answers in milliseconds, and Pushpin's subscriptions settle well within a second.
DEFAULT_STEP_TIMEOUT: Final = 5.0
# The long-poll timeout the checker asks for: the minimum every proxy honours (Pushpin raises
# lower values to 5), so the timeout check costs five seconds, once.
LONG_POLL_TIMEOUT: Final = 5
# The origin log only has to hold the requests of one run (a few dozen); 256 bounds a proxy that
# floods the checker's origin.
MAX_RECORDED_REQUESTS: Final = 256

# Bodies and markers shared by the origin and the checks that look for them.
STREAM_START: Final = b"stream open\n"
LONG_POLL_BODY: Final = b"no news yet\n"
TIMEOUT_BODY: Final = b"timed out\n"
HINT_RETRY_BODY: Final = b"refetched after the hint\n"
KEEP_ALIVE_DATA: Final = b"keep-alive\n"
STATUS_CODE: Final = 404
STATUS_REASON: Final = "Checker Status"
ECHO_PREFIX: Final = "echo: "
REFRESH_TEXT: Final = "refreshed"
SIG_ISS_DEFAULT: Final = "pushpin"  # Pushpin's default `sig_iss`, also gripcore's

# Publish batches Pushpin and gripcore both reject whole with 400 (as gripcore.testing.checks).
REJECTED_PUBLISH_BODIES: Final[tuple[tuple[str, bytes], ...]] = (
    ("body not JSON", b"not json"),
    ("body not an object", b'["items"]'),
    ("no items member", b'{"item": []}'),
    ("items not a list", b'{"items": {}}'),
    ("item without formats", b'{"items": [{"channel": "c"}]}'),
    ("item without channel", b'{"items": [{"http-stream": {"content": "x"}}]}'),
    ("unknown action", b'{"items": [{"channel": "c", "http-stream": {"action": "bogus"}}]}'),
)


@dataclass(frozen=True, slots=True)
class CheckSpec:
    """One check of a catalogue: its `name`, what it exercises and what it expects."""

    name: str
    what: str
    expects: str


PROXY_CHECKS: Final[tuple[CheckSpec, ...]] = (
    CheckSpec(
        "stream-hold",
        "GET a stream hold; publish http-stream content",
        "200 with the origin's body at once (chunked), then the published content verbatim",
    ),
    CheckSpec(
        "stream-close",
        "publish http-stream action close to a held stream",
        "the response ends cleanly (terminating chunk)",
    ),
    CheckSpec(
        "stream-keep-alive",
        "hold a stream with Grip-Keep-Alive (timeout 1 s), publish nothing",
        "the keep-alive data arrives within the step timeout",
    ),
    CheckSpec(
        "long-poll",
        "GET a response hold; publish http-response (code 202, a header, a body)",
        "the client gets the published status, header and body",
    ),
    CheckSpec(
        "long-poll-timeout",
        f"GET a response hold with Grip-Timeout {LONG_POLL_TIMEOUT} (the minimum); publish nothing",
        "the origin's own response (status, header, body) after the timeout",
    ),
    CheckSpec(
        "long-poll-hint",
        "publish http-response action hint to a held long-poll",
        "the proxy retries the request against the origin and relays the origin's new answer",
    ),
    CheckSpec(
        "instruct-json",
        "GET an application/grip-instruct JSON response hold; publish http-response",
        "the published body, with the instruct's response headers kept",
    ),
    CheckSpec(
        "grip-status",
        f"origin answers Grip-Status: {STATUS_CODE} {STATUS_REASON}",
        "the client sees that status line; no Grip-* header reaches the client",
    ),
    CheckSpec(
        "dedup",
        "publish the same item id twice on a held stream",
        "delivered once (Pushpin's shipped id_cache_ttl=60 and gripcore's default window; "
        "Pushpin's code default is off, so a proxy configured without dedup fails here)",
    ),
    CheckSpec(
        "prev-id-ordering",
        "publish a, then c (prev-id b), then b (prev-id a) on a held stream",
        "delivered a, b, c: the out-of-order item waits for its predecessor",
    ),
    CheckSpec(
        "websocket-over-http",
        "WebSocket handshake to an over_http route; the origin accepts and sends c: subscribe",
        "101 Switching Protocols",
    ),
    CheckSpec(
        "websocket-echo",
        "client sends a text message; the origin answers m:-prefixed",
        "the origin's answer reaches the client without the m: prefix",
    ),
    CheckSpec(
        "websocket-publish",
        "publish ws-message content to the channel the origin subscribed",
        "the client receives the content as sent",
    ),
    CheckSpec(
        "websocket-refresh",
        "publish ws-message action refresh",
        "the proxy sends the origin a request for the connection (the origin's answer reaches "
        "the client); a proxy that rejects refresh with 400 passes with a note, since refresh "
        "arrived in Pushpin 1.37 (Pushpin 1.36 rejects it)",
    ),
    CheckSpec(
        "websocket-close",
        "publish ws-message action close with code 4001",
        "the client gets a close frame with code 4001 and the reason",
    ),
    CheckSpec(
        "websocket-client-close",
        "client closes with 1000; the origin echoes the CLOSE",
        "the client gets a close frame back",
    ),
    CheckSpec(
        "grip-sig",
        "look at a request the proxy made to the origin",
        "a Grip-Sig header (a JWT); with --sig-key, valid for that key and not expired",
    ),
    CheckSpec(
        "client-grip-headers-stripped",
        "client sends Grip-Last, Grip-Foo and a forged Grip-Sig",
        "none of the client's Grip-* headers reaches the origin",
    ),
    CheckSpec(
        "invalid-instruct",
        "origin answers Grip-Hold: forever",
        "502 to the client",
    ),
    CheckSpec(
        "publish-errors",
        "publish each batch Pushpin and gripcore both reject",
        "400 for every one (limits where servers differ, like gripcore's 32,767-byte content "
        "limit, are not checked)",
    ),
)

ORIGIN_CHECKS: Final[tuple[CheckSpec, ...]] = (
    CheckSpec(
        "origin-get",
        "a signed GET, as a proxy forwards a client request",
        "an answer that is either valid GRIP instructions or a plain response (reported which); "
        "instructions a proxy would reject fail with the proxy's error",
    ),
    CheckSpec(
        "websocket-open",
        "WebSocket-over-HTTP POST with OPEN",
        "200, Content-Type exactly application/websocket-events (Pushpin refuses parameters; "
        "gripcore accepts them), OPEN first, valid events and control messages",
    ),
    CheckSpec(
        "websocket-text",
        "WebSocket-over-HTTP POST with a TEXT message",
        "200, application/websocket-events, no OPEN, messages m:-prefixed in GRIP mode",
    ),
    CheckSpec(
        "websocket-close",
        "WebSocket-over-HTTP POST with CLOSE 1000",
        "a CLOSE back with a code a server may send (1000-1003, 1007-1013, 3000-4999) or none; "
        "code 0 is the known bug of old gripcontrol versions",
    ),
)


def _one_line(what: str, text: str) -> None:
    if not isinstance(text, str) or "\n" in text or "\r" in text:
        raise LocalProtocolError(f"a check {what} must be one line of text, not {text!r}")


@dataclass(frozen=True, slots=True)
class CheckResult:
    """The outcome of one check: `reason` says why it failed (required then), `note` adds what
    the check found when it passed (which behaviour, what the origin answered).

    Raises `LocalProtocolError` for an empty name, text that is not one line, or a failure
    without a reason."""

    name: str
    passed: bool
    reason: str = ""
    note: str = ""

    def __post_init__(self) -> None:
        _one_line("name", self.name)
        if not self.name or " " in self.name:
            raise LocalProtocolError(f"a check name must be one word, not {self.name!r}")
        _one_line("reason", self.reason)
        _one_line("note", self.note)
        if not self.passed and not self.reason:
            raise LocalProtocolError(f"check {self.name} failed without a reason")


def _single_line(text: str) -> str:
    return " ".join(text.split())


def passed(name: str, note: str = "") -> CheckResult:
    """A passing result; `note` is folded to one line."""
    return CheckResult(name, True, note=_single_line(note))


def failed(name: str, reason: str) -> CheckResult:
    """A failing result; `reason` is folded to one line."""
    return CheckResult(name, False, reason=_single_line(reason) or "failed")


# --- reporting -----------------------------------------------------------------------------------


def format_result(result: CheckResult) -> str:
    """`PASS name` (with ` (note)` when there is one) or `FAIL name: reason`."""
    if not result.passed:
        return f"FAIL {result.name}: {result.reason}"
    return f"PASS {result.name}" + (f" ({result.note})" if result.note else "")


def summary_line(results: Sequence[CheckResult]) -> str:
    """Exactly `N passed, M failed`."""
    count = sum(1 for result in results if result.passed)
    return f"{count} passed, {len(results) - count} failed"


def report_lines(results: Sequence[CheckResult]) -> list[str]:
    """One line per check, then the summary line."""
    return [*(format_result(result) for result in results), summary_line(results)]


def exit_status(results: Sequence[CheckResult]) -> int:
    """0 when no check failed (and at least one ran), else 1."""
    return 0 if results and all(result.passed for result in results) else 1


def report_json(target: str, results: Sequence[CheckResult]) -> str:
    """The machine-readable report: target, counts, and each check's name, result, reason and
    note, in the catalogue's order."""
    count = sum(1 for result in results if result.passed)
    return json.dumps(
        {
            "target": target,
            "passed": count,
            "failed": len(results) - count,
            "checks": [
                {
                    "name": result.name,
                    "passed": result.passed,
                    "reason": result.reason,
                    "note": result.note,
                }
                for result in results
            ],
        },
        indent=2,
    )


# --- the checker's own origin --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """A request the checker's origin received: method, target, headers (lower-case names, in
    order) and body. Raises `LocalProtocolError` for headers that are not str pairs."""

    method: str
    target: str
    headers: tuple[tuple[str, str], ...]
    body: bytes

    def __post_init__(self) -> None:
        if not all(
            isinstance(pair, tuple) and len(pair) == 2 and all(isinstance(p, str) for p in pair)
            for pair in self.headers
        ):
            raise LocalProtocolError("recorded headers must be (str, str) pairs")

    def header(self, name: str) -> str | None:
        """The first value of header `name` (case-insensitive), or None."""
        lowered = name.lower()
        return next((value for key, value in self.headers if key == lowered), None)


_PLAIN: Final = [("Content-Type", "text/plain")]


class CheckerOrigin:
    """The origin `gripcore check proxy` routes the proxy to, without I/O.

    `handle(method, target, headers, body)` answers one request by its path
    `/<scenario>/<channel>`: `stream`, `keep-alive`, `poll`, `poll-timeout`, `hint` (a held
    long-poll the first time, a plain answer when the proxy retries it), `json`, `status`,
    `invalid`, `headers` (a plain answer; the request is what the check looks at) and `ws`
    (WebSocket-over-HTTP: accept, subscribe to the channel, echo messages, answer a refresh).
    Every request is recorded in `requests` (the last `MAX_RECORDED_REQUESTS`). Never raises for
    what the proxy sends: garbage is answered 400.
    """

    def __init__(self, max_requests: int = MAX_RECORDED_REQUESTS) -> None:
        self.requests: deque[RecordedRequest] = deque(maxlen=max_requests)

    def find(self, path: str) -> list[RecordedRequest]:
        """The recorded requests for `path` (the target without its query), oldest first."""
        return [r for r in self.requests if r.target.split("?", 1)[0] == path]

    def handle(
        self, method: str, target: str, headers: Iterable[tuple[str, str]], body: bytes
    ) -> GripResponse:
        """Record the request and answer it (see the class docstring)."""
        path = target.split("?", 1)[0]
        seen = len(self.find(path))
        request = RecordedRequest(
            method, target, tuple((k.lower(), v) for k, v in headers), bytes(body)
        )
        self.requests.append(request)
        _, scenario, channel = [*path.split("/", 2), "", ""][:3]
        if not channel or "/" in channel:
            return GripResponse(404, _PLAIN, b"no such check path\n")
        if scenario == "stream":
            return hold_stream(channel, headers=_PLAIN, body=STREAM_START)
        if scenario == "keep-alive":
            keep_alive = KeepAlive(KEEP_ALIVE_DATA, timeout=1)
            return hold_stream(channel, headers=_PLAIN, body=STREAM_START, keep_alive=keep_alive)
        if scenario == "poll":
            return hold_response(channel, headers=_PLAIN, body=LONG_POLL_BODY)
        if scenario == "poll-timeout":
            timeout_headers = [*_PLAIN, ("X-Check", "timeout")]
            return hold_response(
                channel, timeout=LONG_POLL_TIMEOUT, headers=timeout_headers, body=TIMEOUT_BODY
            )
        if scenario == "hint":
            if seen:
                return GripResponse(200, _PLAIN, HINT_RETRY_BODY)
            return hold_response(channel, headers=_PLAIN, body=LONG_POLL_BODY)
        if scenario == "json":
            json_headers = [*_PLAIN, ("X-Check", "json")]
            return hold_response(channel, headers=json_headers, body=LONG_POLL_BODY, form="json")
        if scenario == "status":
            return grip_response(
                status=STATUS_CODE, reason=STATUS_REASON, headers=_PLAIN, body=b"status\n"
            )
        if scenario == "invalid":
            return GripResponse(200, [*_PLAIN, ("Grip-Hold", "forever")], b"never relayed\n")
        if scenario == "headers":
            return GripResponse(200, _PLAIN, b"headers recorded\n")
        if scenario == "ws":
            return self._websocket(request, channel)
        return GripResponse(404, _PLAIN, b"no such check path\n")

    @staticmethod
    def _websocket(request: RecordedRequest, channel: str) -> GripResponse:
        try:
            context = WebSocketContext(request.headers, request.body)
        except ProtocolError as exc:
            return GripResponse(400, _PLAIN, f"{exc}\n".encode())
        if context.is_opening:
            context.accept()
            context.subscribe(channel)
        elif not context.events:
            context.send(REFRESH_TEXT)  # only a refresh makes a proxy send an empty request here
        for message in context.messages:
            if isinstance(message, str):
                context.send(ECHO_PREFIX + message)
            else:
                context.send_binary(message)
        return context.response()


# --- judging an origin ---------------------------------------------------------------------------


def is_grip_response(headers: Sequence[tuple[bytes, bytes]]) -> bool:
    """Whether a proxy treats a response as GRIP: `Content-Type: application/grip-instruct` or
    any `Grip-*` header (Pushpin's rule)."""
    for name, value in headers:
        lowered = name.lower()
        if lowered.startswith(b"grip-"):
            return True
        if lowered == b"content-type":
            media = value.split(b";", 1)[0].strip().lower()
            if media == GRIP_INSTRUCT_CONTENT_TYPE.encode():
                return True
    return False


def describe_origin_response(
    name: str, status: int, reason: bytes, headers: Sequence[tuple[bytes, bytes]], body: bytes
) -> CheckResult:
    """Judge an origin's answer to a forwarded request: GRIP instructions are parsed as a proxy
    would (a parse error fails with the proxy's message: the client would get 502); a plain
    answer passes unless it is a 5xx. The note says which it was."""
    if not is_grip_response(headers):
        if status >= 500:
            return failed(name, f"plain response {status}: the origin failed")
        return passed(name, f"plain response {status}, no GRIP instructions")
    try:
        instruct = parse_instruct(status, reason, headers, body)
    except ProtocolError as exc:
        return failed(name, f"invalid GRIP instructions (a proxy answers 502): {exc}")
    channels = ", ".join(channel.name for channel in instruct.channels) or "no channels"
    if instruct.hold == "stream":
        return passed(name, f"GRIP stream hold on {channels}")
    if instruct.hold == "response":
        return passed(name, f"GRIP response hold on {channels}, timeout {instruct.timeout} s")
    return passed(name, f"GRIP response without a hold, status {instruct.status}")


_SERVER_CLOSE_CODES: Final = frozenset(
    (1000, 1001, 1002, 1003, *range(1007, 1014), *range(3000, 5000))
)


def _close_problem(code: int | None) -> str | None:
    if code is None or code in _SERVER_CLOSE_CODES:
        return None
    if code == 0:
        return (
            "CLOSE with code 0, which is not a WebSocket close code (the known gripcontrol "
            "bug: WebSocketContext.close() without a code sends 0); send 1000 or echo the "
            "client's code"
        )
    return f"CLOSE with code {code}, which a server may not send"


def check_websocket_answer(
    name: str,
    step: Literal["open", "text", "close"],
    status: int,
    headers: Sequence[tuple[bytes, bytes]],
    body: bytes,
    *,
    grip: bool = True,
) -> CheckResult:
    """Judge an origin's answer to a WebSocket-over-HTTP request carrying OPEN, TEXT or CLOSE.

    `grip`: whether the connection is in GRIP mode (the OPEN answer carried
    `Sec-WebSocket-Extensions: grip`), so messages need the `m:` prefix (Pushpin drops others).
    """
    if status != 200:
        return failed(name, f"answered {status}; a WebSocket-over-HTTP answer must be 200")
    content_type = get_header(headers, b"content-type")
    if content_type is None:
        return failed(name, "no Content-Type; expected application/websocket-events")
    if content_type.strip() != WEBSOCKET_EVENTS_CONTENT_TYPE.encode():
        return failed(
            name,
            f"Content-Type {content_type.decode('latin-1')!r}: Pushpin requires exactly "
            f"{WEBSOCKET_EVENTS_CONTENT_TYPE} (gripcore also accepts parameters)",
        )
    try:
        events = decode_events(body)
    except ProtocolError as exc:
        return failed(name, f"the events do not decode: {exc}")
    notes: list[str] = []
    if step == "open":
        if not events or not isinstance(events[0], Open):
            return failed(name, "OPEN must be the first event of the answer to OPEN")
        extensions = get_header(headers, b"sec-websocket-extensions") or b""
        notes.append("accepted" + (" in GRIP mode" if b"grip" in extensions else ""))
    elif any(isinstance(event, Open) for event in events):
        return failed(name, "OPEN after the connection is open (a proxy drops the client)")
    for event in events:
        if not isinstance(event, Text):
            continue
        if event.text.startswith("c:"):
            try:
                control = parse_control_message(event.text[2:])
            except ProtocolError as exc:
                return failed(name, f"invalid control message {event.text!r}: {exc}")
            notes.append(f"control {type(control).__name__.lower()}")
        elif grip and not event.text.startswith("m:"):
            return failed(
                name, f"message {event.text[:40]!r} lacks the m: prefix (a proxy drops it)"
            )
        else:
            notes.append("message")
    closes = [event for event in events if isinstance(event, Close)]
    for close in closes:
        problem = _close_problem(close.code)
        if problem:
            return failed(name, problem)
    if step == "close":
        if not closes:
            return failed(
                name,
                "no CLOSE in the answer to CLOSE: a proxy considers the connection "
                "uncleanly disconnected",
            )
        notes.append(f"close {closes[0].code if closes[0].code is not None else 'without code'}")
    return passed(name, ", ".join(notes))


# --- the command line ----------------------------------------------------------------------------


def parse_host_port(text: str) -> tuple[str, int]:
    """An argparse type: `HOST:PORT` (port 0: any free port; `[v6]:PORT` for IPv6)."""
    host, sep, port_text = text.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port_text.isdigit() or int(port_text) > 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT")
    return host, int(port_text)


def _timeout(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not 0 < seconds < math.inf:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number of seconds")
    return seconds


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print a JSON report (for CI)")
    parser.add_argument(
        "--timeout",
        type=_timeout,
        default=DEFAULT_STEP_TIMEOUT,
        metavar="S",
        help=f"seconds to wait for each expected answer (default: {DEFAULT_STEP_TIMEOUT:g})",
    )


def add_check_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `check proxy` and `check origin` to a subcommand set (gripcore's command line)."""
    check = commands.add_parser(
        "check",
        help="run GRIP conformance checks against a proxy or an origin",
        description="Run black-box GRIP conformance checks. Prints one line per check "
        "(PASS name / FAIL name: reason) and 'N passed, M failed'; exits 0 only if none failed.",
    )
    targets = check.add_subparsers(dest="check_target", metavar="TARGET")
    proxy = targets.add_parser(
        "proxy",
        help="check a running GRIP proxy (gripcore, Pushpin, ...)",
        description="Start an origin on loopback (its address is printed: route the proxy to "
        "it, with over_http for WebSockets), then exercise the proxy through it.",
    )
    proxy.add_argument("--proxy", required=True, metavar="URL", help="the proxy's client URL")
    proxy.add_argument(
        "--publish", required=True, metavar="URL", help="the proxy's publish API URL"
    )
    proxy.add_argument(
        "--origin-listen",
        type=parse_host_port,
        default=DEFAULT_ORIGIN_LISTEN,
        metavar="HOST:PORT",
        help="where the checker's origin listens (default: 127.0.0.1, a free port)",
    )
    proxy.add_argument(
        "--sig-key", metavar="KEY", help="validate the proxy's Grip-Sig with this key"
    )
    _common(proxy)
    origin = targets.add_parser(
        "origin",
        help="check a GRIP origin the way a proxy would",
        description="Send an origin signed requests as a proxy does: a GET, then "
        "WebSocket-over-HTTP OPEN, TEXT and CLOSE, and validate its answers.",
    )
    origin.add_argument("url", metavar="URL", help="the origin URL to GET")
    origin.add_argument(
        "--ws-url", metavar="URL", help="the WebSocket-over-HTTP URL (default: URL)"
    )
    origin.add_argument(
        "--sig-key",
        default="changeme",
        metavar="KEY",
        help="sign requests with this key (default: Pushpin's shipped key 'changeme')",
    )
    origin.add_argument("--sig-iss", default=SIG_ISS_DEFAULT, metavar="ISS", help="Grip-Sig issuer")
    _common(origin)
