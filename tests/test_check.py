"""`gripcore check`: the sans-IO half (`gripcore._check`) as data-driven unit tests, and the
command run for real: `check proxy` against gripcore and the reference Pushpin, `check origin`
against origins written with gripcontrol (PyPI) and with `gripcore.origin`."""

from __future__ import annotations

import io
import json
import shutil
import socket
import struct
import subprocess
from collections.abc import Iterator
from contextlib import redirect_stdout
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gripcore._check import (
    KEEP_ALIVE_DATA,
    LONG_POLL_TIMEOUT,
    ORIGIN_CHECKS,
    PROXY_CHECKS,
    STATUS_CODE,
    STATUS_REASON,
    CheckerOrigin,
    CheckResult,
    RecordedRequest,
    check_websocket_answer,
    describe_origin_response,
    exit_status,
    failed,
    format_result,
    is_grip_response,
    parse_host_port,
    passed,
    report_json,
    report_lines,
    summary_line,
)
from gripcore._cli import main
from gripcore._errors import LocalProtocolError
from gripcore._instruct import parse_instruct
from gripcore._wsevents import Binary, Close, Open, Ping, Text, decode_events, encode_events
from gripcore.origin import WebSocketContext, hold_stream

from .e2e_support import (
    Origin,
    OriginRequest,
    running_proxy,
    stop_pushpin,
    wait_pushpin_accepting,
)
from .hypothesis_support import examples

ROOT = Path(__file__).resolve().parent.parent
RUN_PUSHPIN = ROOT.parent / "shared" / "tools" / "run-pushpin"
PUSHPIN_HTTP, PUSHPIN_PUBLISH = 27999, 25561  # ZeroMQ takes 25560, 25562, 25563 too
WS_EVENTS = (b"Content-Type", b"application/websocket-events")


# --- results and reports -------------------------------------------------------------------------

INVALID_RESULTS = [
    pytest.param(("", True, "", ""), id="empty-name"),
    pytest.param(("two words", True, "", ""), id="name-with-space"),
    pytest.param(("x", False, "", ""), id="failure-without-reason"),
    pytest.param(("x", False, "a\nb", ""), id="reason-two-lines"),
    pytest.param(("x", True, "", "a\rb"), id="note-two-lines"),
    pytest.param(("x\n", True, "", ""), id="name-two-lines"),
]


@pytest.mark.parametrize("fields", INVALID_RESULTS)
def test_result_rejects_unreportable_values(fields: tuple[str, bool, str, str]) -> None:
    with pytest.raises(LocalProtocolError):
        CheckResult(*fields)


FORMAT_VECTORS = [
    (passed("stream-hold"), "PASS stream-hold"),
    (passed("grip-sig", "valid,\n iss x"), "PASS grip-sig (valid, iss x)"),
    (failed("dedup", "delivered\n2 times"), "FAIL dedup: delivered 2 times"),
    (failed("dedup", "  "), "FAIL dedup: failed"),
]


@pytest.mark.parametrize(("result", "line"), FORMAT_VECTORS)
def test_format_result(result: CheckResult, line: str) -> None:
    assert format_result(result) == line


def test_summary_exit_status_and_json() -> None:
    ok, bad = passed("a", "fine"), failed("b", "broken")
    assert summary_line([ok, ok, bad]) == "2 passed, 1 failed"
    assert report_lines([ok, bad]) == ["PASS a (fine)", "FAIL b: broken", "1 passed, 1 failed"]
    assert (exit_status([ok]), exit_status([ok, bad]), exit_status([])) == (0, 1, 1)
    assert json.loads(report_json("proxy", [ok, bad])) == {
        "target": "proxy",
        "passed": 1,
        "failed": 1,
        "checks": [
            {"name": "a", "passed": True, "reason": "", "note": "fine"},
            {"name": "b", "passed": False, "reason": "broken", "note": ""},
        ],
    }


def test_catalogues_name_each_check_once() -> None:
    for catalogue in (PROXY_CHECKS, ORIGIN_CHECKS):
        names = [spec.name for spec in catalogue]
        assert len(names) == len(set(names))
        assert all(
            passed(name).name == name and spec.expects
            for name, spec in zip(names, catalogue, strict=True)
        )
    assert "websocket-refresh" in {spec.name for spec in PROXY_CHECKS}


HOST_PORTS = [
    ("127.0.0.1:0", ("127.0.0.1", 0)),
    ("localhost:8080", ("localhost", 8080)),
    ("[::1]:9000", ("::1", 9000)),
]
BAD_HOST_PORTS = ["127.0.0.1", ":80", "h:x", "h:70000", "h:-1", ""]


@pytest.mark.parametrize(("text", "expected"), HOST_PORTS)
def test_parse_host_port(text: str, expected: tuple[str, int]) -> None:
    assert parse_host_port(text) == expected


@pytest.mark.parametrize("text", BAD_HOST_PORTS)
def test_parse_host_port_rejects(text: str) -> None:
    import argparse

    with pytest.raises(argparse.ArgumentTypeError, match="HOST:PORT"):
        parse_host_port(text)


# --- the checker's origin ------------------------------------------------------------------------


def answer(origin: CheckerOrigin, target: str, body: bytes = b"", headers=()):  # type: ignore[no-untyped-def]
    response = origin.handle("GET" if not body else "POST", target, list(headers), body)
    return response, parse_instruct(response.status, b"OK", response.header_bytes(), response.body)


def test_origin_scenarios() -> None:
    origin = CheckerOrigin()
    _, instruct = answer(origin, "/stream/ch")
    assert (instruct.hold, instruct.channels[0].name) == ("stream", "ch")
    _, instruct = answer(origin, "/keep-alive/ch")
    assert instruct.keep_alive is not None and instruct.keep_alive.data == KEEP_ALIVE_DATA
    _, instruct = answer(origin, "/poll/ch")
    assert instruct.hold == "response"
    _, instruct = answer(origin, "/poll-timeout/ch?x=1")
    assert instruct.timeout == LONG_POLL_TIMEOUT
    _, instruct = answer(origin, "/hint/ch")
    assert instruct.hold == "response"
    retried, instruct = answer(origin, "/hint/ch")
    assert instruct.hold is None and b"hint" in retried.body
    json_answer, instruct = answer(origin, "/json/ch")
    assert json_answer.body.startswith(b"{") and instruct.hold == "response"
    _, instruct = answer(origin, "/status/ch")
    assert (instruct.status, instruct.reason) == (STATUS_CODE, STATUS_REASON.encode())
    invalid = origin.handle("GET", "/invalid/ch", [], b"")
    assert ("Grip-Hold", "forever") in invalid.headers
    recorded = origin.handle("GET", "/headers/ch", [("Grip-Sig", "t")], b"")
    assert recorded.status == 200 and origin.find("/headers/ch")[0].header("grip-sig") == "t"
    assert origin.find("/headers/ch")[0].header("absent") is None
    for target in ("/", "/stream", "/nope/ch", "/stream/a/b"):
        assert origin.handle("GET", target, [], b"").status == 404
    assert len(origin.find("/hint/ch")) == 2


def test_origin_log_is_bounded() -> None:
    origin = CheckerOrigin(max_requests=3)
    for _ in range(10):
        origin.handle("GET", "/stream/c", [], b"")
    assert len(origin.requests) == 3


def test_recorded_request_rejects_bad_headers() -> None:
    with pytest.raises(LocalProtocolError):
        RecordedRequest("GET", "/", (("a", 1),), b"")  # type: ignore[arg-type]


def test_origin_websocket_over_http() -> None:
    origin = CheckerOrigin()
    headers = [("Content-Type", "application/websocket-events"), ("Connection-Id", "1")]
    opened = origin.handle("POST", "/ws/ch", headers, encode_events([Open()]))
    events = decode_events(opened.body)
    assert events[0] == Open() and events[1] == Text(b'c:{"type":"subscribe","channel":"ch"}')
    echo = origin.handle("POST", "/ws/ch", headers, encode_events([Text(b"hi")]))
    assert decode_events(echo.body) == [Text(b"m:echo: hi")]
    binary = origin.handle("POST", "/ws/ch", headers, encode_events([Binary(b"\x00")]))
    assert decode_events(binary.body) == [Binary(b"m:\x00")]
    refresh = origin.handle("POST", "/ws/ch", headers, b"")
    assert decode_events(refresh.body) == [Text(b"m:refreshed")]
    closed = origin.handle("POST", "/ws/ch", headers, encode_events([Close(1000)]))
    assert decode_events(closed.body) == [Close(1000)]
    assert origin.handle("POST", "/ws/ch", headers, b"TEXT zz\r\n").status == 400


@settings(max_examples=examples(200))
@given(st.text(), st.binary(), st.lists(st.tuples(st.text(), st.text()), max_size=3))
def test_origin_never_raises(target: str, body: bytes, headers: list[tuple[str, str]]) -> None:
    for path in (target, "/ws/c" + target.replace("/", "")):
        response = CheckerOrigin().handle("POST", path, headers, body)
        assert response.status in (200, 400, 403, 404)


# --- judging an origin ---------------------------------------------------------------------------

TEXT = [(b"Content-Type", b"text/plain")]
ORIGIN_ANSWERS = [
    pytest.param(200, TEXT, b"hi", True, "plain response 200", id="plain"),
    pytest.param(503, TEXT, b"", False, "plain response 503", id="plain-5xx"),
    pytest.param(
        200,
        [(b"Grip-Hold", b"stream"), (b"Grip-Channel", b"a, b")],
        b"",
        True,
        "GRIP stream hold on a, b",
        id="stream",
    ),
    pytest.param(
        200,
        [(b"Grip-Hold", b"response"), (b"Grip-Channel", b"a"), (b"Grip-Timeout", b"9")],
        b"",
        True,
        "GRIP response hold on a, timeout 9 s",
        id="response",
    ),
    pytest.param(
        200,
        [(b"Grip-Status", b"404")],
        b"",
        True,
        "GRIP response without a hold, status 404",
        id="no-hold",
    ),
    pytest.param(
        200,
        [(b"Content-Type", b"Application/Grip-Instruct; x=1")],
        b'{"hold": {"mode": "stream", "channels": []}}',
        True,
        "GRIP stream hold on no channels",
        id="json",
    ),
    pytest.param(
        200,
        [(b"Grip-Hold", b"forever")],
        b"",
        False,
        "invalid GRIP instructions (a proxy answers 502): Grip-Hold must be set to either",
        id="invalid",
    ),
]


@pytest.mark.parametrize(("status", "headers", "body", "ok", "text"), ORIGIN_ANSWERS)
def test_describe_origin_response(
    status: int, headers: list[tuple[bytes, bytes]], body: bytes, ok: bool, text: str
) -> None:
    result = describe_origin_response("origin-get", status, b"OK", headers, body)
    assert result.passed is ok
    assert text in (result.note if ok else result.reason)


def test_is_grip_response() -> None:
    assert not is_grip_response([*TEXT, (b"X-Grip", b"1")])
    assert is_grip_response([(b"GRIP-FOO", b"1")])


OPEN_GRIP = encode_events([Open(), Text(b'c:{"type":"subscribe","channel":"x"}')])
WS_ANSWERS = [
    pytest.param(
        "open",
        200,
        [WS_EVENTS, (b"Sec-WebSocket-Extensions", b"grip")],
        OPEN_GRIP,
        True,
        "accepted in GRIP mode, control subscribe",
        id="open-grip",
    ),
    pytest.param("open", 200, [WS_EVENTS], encode_events([Open()]), True, "accepted", id="open"),
    pytest.param("open", 403, [WS_EVENTS], b"", False, "answered 403", id="rejected"),
    pytest.param("open", 200, [], b"", False, "no Content-Type", id="no-type"),
    pytest.param(
        "open",
        200,
        [(b"Content-Type", b"application/websocket-events; charset=utf-8")],
        encode_events([Open()]),
        False,
        "Pushpin requires exactly",
        id="charset",
    ),
    pytest.param("open", 200, [WS_EVENTS], b"TEXT zz\r\n", False, "do not decode", id="garbage"),
    pytest.param(
        "open",
        200,
        [WS_EVENTS],
        encode_events([Text(b"m:x")]),
        False,
        "OPEN must be the first",
        id="open-missing",
    ),
    pytest.param(
        "text",
        200,
        [WS_EVENTS],
        encode_events([Text(b"m:a"), Ping(b"")]),
        True,
        "message",
        id="text",
    ),
    pytest.param(
        "text",
        200,
        [WS_EVENTS],
        encode_events([Open()]),
        False,
        "OPEN after the connection is open",
        id="open-again",
    ),
    pytest.param(
        "text",
        200,
        [WS_EVENTS],
        encode_events([Text(b"c:{}")]),
        False,
        "invalid control message",
        id="bad-control",
    ),
    pytest.param(
        "text",
        200,
        [WS_EVENTS],
        encode_events([Text(b"plain")]),
        False,
        "lacks the m: prefix",
        id="unprefixed",
    ),
    pytest.param(
        "close", 200, [WS_EVENTS], encode_events([Close(1000)]), True, "close 1000", id="close"
    ),
    pytest.param(
        "close",
        200,
        [WS_EVENTS],
        encode_events([Close()]),
        True,
        "close without code",
        id="close-no-code",
    ),
    pytest.param(
        "close",
        200,
        [WS_EVENTS],
        encode_events([Close(0)]),
        False,
        "code 0, which is not a WebSocket close code (the known gripcontrol bug",
        id="close-0",
    ),
    pytest.param(
        "close",
        200,
        [WS_EVENTS],
        encode_events([Close(1006)]),
        False,
        "1006, which a server may not send",
        id="close-1006",
    ),
    pytest.param(
        "close", 200, [WS_EVENTS], b"", False, "no CLOSE in the answer", id="close-missing"
    ),
]


@pytest.mark.parametrize(("step", "status", "headers", "body", "ok", "text"), WS_ANSWERS)
def test_check_websocket_answer(  # type: ignore[no-untyped-def]
    step, status, headers, body, ok, text
) -> None:
    result = check_websocket_answer("ws", step, status, headers, body)
    assert result.passed is ok, result
    assert text in (result.note if ok else result.reason)


def test_unprefixed_message_passes_outside_grip_mode() -> None:
    body = encode_events([Text(b"plain")])
    assert check_websocket_answer("ws", "text", 200, [WS_EVENTS], body, grip=False).passed


@settings(max_examples=examples(200))
@given(st.sampled_from(["open", "text", "close"]), st.binary(), st.booleans())
def test_check_websocket_answer_never_raises(step, body, grip) -> None:  # type: ignore[no-untyped-def]
    assert isinstance(
        check_websocket_answer("ws", step, 200, [WS_EVENTS], body, grip=grip), CheckResult
    )


@settings(max_examples=examples(100))
@given(st.lists(st.tuples(st.binary(max_size=20), st.binary(max_size=20)), max_size=4), st.binary())
def test_describe_origin_response_never_raises(headers, body) -> None:  # type: ignore[no-untyped-def]
    assert isinstance(describe_origin_response("g", 200, b"OK", headers, body), CheckResult)


def test_large_answer_is_judged_in_linear_time() -> None:
    body = encode_events([Open()] + [Text(b"m:" + b"x" * 100)] * 10_000)  # about 1.1 MB
    result = check_websocket_answer("ws", "open", 200, [WS_EVENTS], body)
    assert result.passed and result.note.count("message") == 10_000


# --- the command line ----------------------------------------------------------------------------


def test_cli_check_without_target_prints_usage(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check"]) == 2
    assert "usage:" in capsys.readouterr().err
    assert main(["check", "proxy", "--proxy", "http://x"]) == 2  # --publish is required
    assert main(["check", "proxy", "--proxy", "u", "--publish", "u", "--timeout", "0"]) == 2
    assert main(["check", "origin", "http://x", "--timeout", "soon"]) == 2


# --- end to end ----------------------------------------------------------------------------------


def run_cli(argv: list[str]) -> tuple[int, str]:
    out = io.StringIO()
    with redirect_stdout(out):
        status = main(argv)
    return status, out.getvalue()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.e2e
@pytest.mark.usefixtures("proxy_adapter")
def test_check_proxy_passes_against_gripcore() -> None:
    from gripcore.adapters.checker import CheckerOriginServer, run_proxy_checks

    with (
        CheckerOriginServer(("127.0.0.1", 0)) as origin,
        running_proxy(routes=(f"* 127.0.0.1:{origin.port},over_http",), sig_key="k1") as proxy,
    ):
        results = run_proxy_checks(
            f"http://127.0.0.1:{proxy.port}",
            f"http://127.0.0.1:{proxy.publish_port}/",
            origin,
            sig_key="k1",
        )
    assert [r.name for r in results] == [spec.name for spec in PROXY_CHECKS]
    assert [format_result(r) for r in results if not r.passed] == []
    assert summary_line(results) == f"{len(PROXY_CHECKS)} passed, 0 failed"


@pytest.mark.e2e
@pytest.mark.usefixtures("proxy_adapter")
def test_check_proxy_reports_failures_with_reasons() -> None:
    """A proxy with dedup off and no signing key fails exactly those checks, saying why."""
    port = free_port()
    with running_proxy(
        routes=(f"* 127.0.0.1:{port},over_http",), id_cache_ttl=0, sig_key=None
    ) as proxy:
        status, out = run_cli(
            [
                "check",
                "proxy",
                "--proxy",
                f"http://127.0.0.1:{proxy.port}",
                "--publish",
                f"http://127.0.0.1:{proxy.publish_port}",
                "--origin-listen",
                f"127.0.0.1:{port}",
                "--timeout",
                "3",
            ]
        )
    lines = out.splitlines()
    assert status == 1
    assert lines[0].startswith(f"checker origin listening on 127.0.0.1:{port}")
    assert [line for line in lines if line.startswith("FAIL")] == [
        "FAIL dedup: delivered 2 times",
        "FAIL grip-sig: no Grip-Sig on the proxy's request to the origin",
    ]
    assert lines[-1] == f"{len(PROXY_CHECKS) - 2} passed, 2 failed"


@pytest.fixture
def pushpin_port(tmp_path: Path) -> Iterator[int]:
    if not RUN_PUSHPIN.exists():
        pytest.skip(f"reference Pushpin launcher not found at {RUN_PUSHPIN}")
    if shutil.which("pushpin") is None and shutil.which("apt-get") is None:
        pytest.skip("Pushpin is not installed and cannot be installed (no apt-get)")
    origin_port = free_port()
    command = ["bash", str(RUN_PUSHPIN)]
    started = subprocess.run(
        [
            *command,
            "start",
            f"127.0.0.1:{origin_port},over_http",
            str(PUSHPIN_HTTP),
            str(PUSHPIN_PUBLISH),
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    try:
        if started.returncode != 0:
            pytest.skip(f"reference Pushpin could not be started: {started.stderr.strip()[-300:]}")
        wait_pushpin_accepting(PUSHPIN_HTTP, origin_port)
        yield origin_port
    finally:
        stop_pushpin(str(RUN_PUSHPIN), str(tmp_path))


@pytest.mark.e2e
def test_check_proxy_passes_against_pushpin(pushpin_port: int) -> None:
    status, out = run_cli(
        [
            "check",
            "proxy",
            "--proxy",
            f"http://127.0.0.1:{PUSHPIN_HTTP}",
            "--publish",
            f"http://127.0.0.1:{PUSHPIN_PUBLISH}/publish/",
            "--origin-listen",
            f"127.0.0.1:{pushpin_port}",
            "--sig-key",
            "changeme",
            "--json",
        ]
    )
    report = json.loads(out)
    assert [c for c in report["checks"] if not c["passed"]] == []
    assert (status, report["passed"], report["failed"]) == (0, len(PROXY_CHECKS), 0)
    notes = {c["name"]: c["note"] for c in report["checks"]}
    assert "Pushpin before 1.37" in notes["websocket-refresh"]  # Pushpin 1.36 has no refresh


# --- origins -------------------------------------------------------------------------------------

KEY = "origin-check-key-0123456789-0123456789"  # 32+ bytes: PyJWT warns below
Answer = tuple[int, list[tuple[str, str]], bytes]


def gripcontrol_origin(fixed: bool):  # type: ignore[no-untyped-def]
    """An origin as gripcontrol's users write it (django-grip's shape); `fixed` passes the
    client's close code to close() instead of relying on its default (0)."""
    from gripcontrol import (
        WebSocketContext as GcContext,
    )
    from gripcontrol import (
        WebSocketEvent,
        create_hold_stream,
        decode_websocket_events,
        encode_websocket_events,
        validate_sig,
    )

    def handle(request: OriginRequest) -> Answer:
        assert validate_sig(request.headers["grip-sig"], KEY)
        if request.method == "GET":
            return (
                200,
                [("Content-Type", "application/grip-instruct")],
                create_hold_stream("gc", "start\n").encode(),
            )
        ctx = GcContext(request.headers["connection-id"], {}, decode_websocket_events(request.body))
        if ctx.is_opening():
            ctx.accept()
            ctx.subscribe("gc")
        while ctx.can_recv():
            message = ctx.recv()
            if message is None:
                ctx.close(ctx.close_code if fixed else None)
                break
            ctx.send("echo: " + message)
        events = [WebSocketEvent("OPEN")] if ctx.accepted else []
        events.extend(ctx.out_events)
        if ctx.closed:
            events.append(WebSocketEvent("CLOSE", struct.pack(">H", ctx.out_close_code)))
        headers = [("Content-Type", "application/websocket-events")]
        if ctx.accepted:
            headers.append(("Sec-WebSocket-Extensions", "grip"))
        return 200, headers, encode_websocket_events(events)

    return handle


def gripcore_origin(request: OriginRequest) -> Answer:
    if request.method == "GET":
        return tuple(hold_stream("gc", body="start\n"))  # type: ignore[return-value]
    ctx = WebSocketContext(request.header_list, request.body)
    if ctx.is_opening:
        ctx.accept()
        ctx.subscribe("gc")
    for message in ctx.messages:
        ctx.send(f"echo: {message!s}")
    return tuple(ctx.response())  # type: ignore[return-value]


def plain_origin(request: OriginRequest) -> Answer:
    return 200, [("Content-Type", "text/plain")], b"hello\n"


@pytest.fixture(scope="module")
def origins() -> Iterator[int]:
    pytest.importorskip("gripcontrol")
    server = Origin(
        routes={
            "/gripcontrol": gripcontrol_origin(fixed=False),
            "/gripcontrol-fixed": gripcontrol_origin(fixed=True),
            "/gripcore": gripcore_origin,
            "/plain": plain_origin,
        }
    ).start()
    yield server.port
    server.stop()


@pytest.mark.e2e
@pytest.mark.parametrize("path", ["/gripcontrol-fixed", "/gripcore"])
def test_check_origin_passes(origins: int, path: str) -> None:
    status, out = run_cli(
        ["check", "origin", f"http://127.0.0.1:{origins}{path}", "--sig-key", KEY]
    )
    lines = out.splitlines()
    assert lines == [
        "PASS origin-get (GRIP stream hold on gc)",
        "PASS websocket-open (accepted in GRIP mode, control subscribe)",
        "PASS websocket-text (message)",
        "PASS websocket-close (close 1000)",
        "4 passed, 0 failed",
    ]
    assert status == 0


@pytest.mark.e2e
def test_check_origin_reports_gripcontrol_close_code_0(origins: int) -> None:
    url = f"http://127.0.0.1:{origins}/gripcontrol"
    status, out = run_cli(["check", "origin", url, "--sig-key", KEY, "--json"])
    report = json.loads(out)
    assert status == 1 and (report["passed"], report["failed"]) == (3, 1)
    close = report["checks"][-1]
    assert close["name"] == "websocket-close" and not close["passed"]
    assert close["reason"].startswith(
        "CLOSE with code 0, which is not a WebSocket close code (the known gripcontrol bug: "
        "WebSocketContext.close() without a code sends 0)"
    )


@pytest.mark.e2e
def test_check_origin_plain_and_unreachable(origins: int) -> None:
    plain = f"http://127.0.0.1:{origins}/plain"
    status, out = run_cli(["check", "origin", plain, "--ws-url", plain, "--sig-key", ""])
    assert out.splitlines()[0] == "PASS origin-get (plain response 200, no GRIP instructions)"
    assert "FAIL websocket-open: Content-Type 'text/plain'" in out and status == 1
    status, out = run_cli(["check", "origin", f"http://127.0.0.1:{free_port()}/"])
    assert status == 1 and out.count("FAIL") == 4 and "ConnectionRefusedError" in out
