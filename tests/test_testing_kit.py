"""gripcore.testing: every valid strategy yields what the core accepts (and means what it says),
every invalid one what the core rejects with the stated error; the property helpers fail on
deliberately broken parsers (they are not vacuous); the pytest plugin's options and fixtures,
and the publish checks against a live in-process publish API, run through `pytester`."""

from __future__ import annotations

import itertools
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib.metadata import entry_points
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import gripcore._check
import gripcore.testing
import gripcore.testing.checks
from gripcore import (
    ControlMessageError,
    InstructError,
    LocalProtocolError,
    ProtocolError,
    PublishError,
    WebSocketEventsError,
)
from gripcore._instruct import Channel, Instruct, KeepAlive, parse_instruct
from gripcore._items import Item, encode_publish_body, parse_item, parse_publish_body
from gripcore._publishapi import handle_publish_request
from gripcore._sig import validate_sig
from gripcore._wscontrol import (
    ControlMessage,
    classify_origin_message,
    encode_control_message,
    parse_control_message,
)
from gripcore._wsevents import (
    Binary,
    WebSocketEvent,
    WebSocketEventsDecoder,
    decode_events,
    encode_event,
    encode_events,
)
from gripcore.testing import properties, strategies
from gripcore.testing.properties import (
    Feed,
    assert_only_raises,
    assert_rejects,
    assert_round_trip,
    assert_split_invariant,
    receive_data_feed,
)
from gripcore.testing.strategies import (
    ExpectedInstruct,
    InstructCase,
    Invalid,
    OriginResponse,
    SigToken,
)

from .hypothesis_support import examples

pytest_plugins = ["pytester"]

# Invalid strategies pick one of up to 15 templates per example; a fixed seed and this many
# examples reach every template on every run.
INVALID = settings(max_examples=examples(150), deadline=None)
SIGS = settings(max_examples=examples(30), deadline=None)
# Valid artefacts are built from several nested strategies; 40 examples of each keep the whole
# module within its time budget while every branch of every strategy is still reached.
VALID = settings(max_examples=examples(40), deadline=None)

events_feed = receive_data_feed(WebSocketEventsDecoder)


def parse_response(response: OriginResponse) -> Instruct:
    return parse_instruct(response.status, response.reason, list(response.headers), response.body)


def check_sig(case: SigToken) -> dict[str, Any]:
    return validate_sig(case.token, case.key, now=case.now, iss=case.iss)


# --- the package surface -----------------------------------------------------------------------


def test_package_exports_the_strategies_and_helpers() -> None:
    assert set(gripcore.testing.__all__) == set(strategies.__all__) | set(properties.__all__) - {
        "DERIVED_SPLITS",
        "Feed",
    }
    for name in gripcore.testing.__all__:
        assert getattr(gripcore.testing, name) is not None


def test_import_gripcore_does_not_import_the_kit() -> None:
    import subprocess
    import sys

    code = "import sys, gripcore; print('hypothesis' in sys.modules, 'gripcore.testing' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_testing_package_imports_no_io_modules() -> None:
    from tests.test_sansio import FORBIDDEN, _imported_roots

    package = strategies.__file__.rsplit("/", 1)[0]
    from pathlib import Path

    offenders = {
        path.name: _imported_roots(path) & FORBIDDEN for path in sorted(Path(package).glob("*.py"))
    }
    assert all(not roots for roots in offenders.values()), offenders


# --- valid strategies: accepted, and meaning what they say -------------------------------------


@settings(VALID, max_examples=examples(120))  # two shapes, each with nested optional parts
@given(strategies.instructs())
def test_instructs_parse_to_what_they_describe(case: InstructCase) -> None:
    instruct = parse_response(case.response)
    assert case.expected.mismatches(instruct) == []
    assert case.source in ("headers", "json")


def test_expected_instruct_reports_every_mismatch() -> None:
    expected = ExpectedInstruct(
        hold="stream",
        channels=(Channel("a"),),
        timeout=55,
        keep_alive=KeepAlive(b"x"),
        meta={"k": "v"},
        status=200,
    )
    assert (
        expected.mismatches(
            Instruct(
                hold="stream", channels=(Channel("a"),), keep_alive=KeepAlive(b"x"), meta={"k": "v"}
            )
        )
        == []
    )
    problems = expected.mismatches(Instruct(status=404))
    assert [p.split(":")[0] for p in problems] == [
        "hold",
        "channels",
        "keep_alive",
        "status",
        "meta",
    ]
    assert "expected 'stream', got None" in problems[0]


@VALID
@given(strategies.grip_channel_headers())
def test_grip_channel_headers_name_their_channels_in_order(
    case: tuple[tuple[tuple[bytes, bytes], ...], tuple[Channel, ...]],
) -> None:
    headers, expected = case
    assert all(name == b"Grip-Channel" for name, _ in headers)
    assert parse_instruct(200, b"OK", list(headers), b"").channels == expected


@VALID
@given(strategies.grip_keep_alive_headers())
def test_grip_keep_alive_headers_mean_their_keep_alive(
    case: tuple[tuple[bytes, bytes], KeepAlive],
) -> None:
    header, expected = case
    instruct = parse_instruct(200, b"OK", [(b"Grip-Hold", b"stream"), header], b"")
    assert instruct.keep_alive == expected


@VALID
@given(strategies.items())
def test_items_round_trip_through_a_publish_body(item: Item) -> None:
    assert_round_trip(
        lambda i: encode_publish_body([i]), lambda body: parse_publish_body(body)[0], item
    )


@VALID
@given(strategies.item_objects())
def test_item_objects_in_both_shapes_parse_to_their_item(
    case: tuple[dict[str, object], Item],
) -> None:
    obj, item = case
    assert parse_item(obj) == item
    assert ("formats" in obj) != any(
        k in obj for k in ("http-response", "http-stream", "ws-message")
    )


@VALID
@given(strategies.publish_bodies())
def test_publish_bodies_carry_their_items(case: tuple[bytes, list[Item]]) -> None:
    body, expected = case
    assert parse_publish_body(body) == expected


@VALID
@given(strategies.websocket_events())
def test_websocket_events_round_trip(event: WebSocketEvent) -> None:
    assert_round_trip(encode_event, lambda body: decode_events(body)[0], event)


@VALID
@given(strategies.websocket_event_streams(canonical=True))
def test_canonical_event_streams_are_what_encode_events_writes(
    case: tuple[bytes, list[WebSocketEvent]],
) -> None:
    body, events = case
    assert body == encode_events(events)


@VALID
@given(strategies.websocket_event_streams(), st.data())
def test_event_streams_decode_the_same_in_any_split(
    case: tuple[bytes, list[WebSocketEvent]], data: st.DataObject
) -> None:
    body, events = case
    cuts = data.draw(strategies.split_points(len(body)))
    assert assert_split_invariant(events_feed, body, splits=[cuts]) == events
    assert decode_events(body) == events


@VALID
@given(strategies.control_messages())
def test_control_messages_round_trip(message: ControlMessage) -> None:
    encoded = assert_round_trip(
        encode_control_message, lambda data: parse_control_message(data[2:]), message
    )
    assert classify_origin_message(encoded, is_text=True) == message


@SIGS
@given(strategies.grip_sigs())
def test_grip_sigs_validate_with_their_key(case: SigToken) -> None:
    claims = check_sig(case)
    assert claims["iss"] == case.iss
    assert claims["exp"] > case.now
    assert "key=" not in repr(case)  # the secret never shows in a test report


# --- invalid strategies: rejected with the stated error ----------------------------------------


@INVALID
@given(strategies.invalid_instructs())
def test_invalid_instructs_are_rejected(case: Invalid[OriginResponse]) -> None:
    assert case.error is InstructError
    assert_rejects(parse_response, case)


@INVALID
@given(strategies.invalid_publish_bodies())
def test_invalid_publish_bodies_are_rejected(case: Invalid[bytes]) -> None:
    assert issubclass(case.error, PublishError)
    assert_rejects(parse_publish_body, case)


@INVALID
@given(strategies.invalid_websocket_event_streams())
def test_invalid_event_streams_are_rejected_in_any_split(case: Invalid[bytes]) -> None:
    assert case.error is WebSocketEventsError
    assert_rejects(decode_events, case)
    # The same error however the bytes come. Messages are not compared: the decoder words an
    # overlong type line differently when it arrives byte by byte (reported to the lead).
    assert_split_invariant(events_feed, case.value, compare_messages=False)
    feed = events_feed()
    with pytest.raises(WebSocketEventsError, match=case.message):
        list(feed(case.value))
        list(feed(b""))


@INVALID
@given(strategies.invalid_control_messages())
def test_invalid_control_messages_are_rejected(case: Invalid[bytes]) -> None:
    assert case.error is ControlMessageError
    assert_rejects(parse_control_message, case)
    assert_rejects(lambda p: classify_origin_message(b"c:" + p, is_text=True), case)


@SIGS
@given(strategies.invalid_grip_sigs())
def test_invalid_grip_sigs_are_rejected(case: Invalid[SigToken]) -> None:
    assert_rejects(check_sig, case)


@pytest.mark.parametrize(
    ("error", "message"), [(ValueError, "x"), (ProtocolError, ""), ("ProtocolError", "x")]
)
def test_invalid_case_itself_is_validated(error: object, message: str) -> None:
    with pytest.raises(LocalProtocolError, match=r"^Invalid\."):
        Invalid(b"", error, message)  # type: ignore[arg-type]


# --- fuzz and large inputs ---------------------------------------------------------------------


@given(st.binary(max_size=200))
def test_arbitrary_bytes_split_the_same_and_raise_only_protocol_errors(data: bytes) -> None:
    assert_only_raises(
        lambda d: assert_split_invariant(events_feed, d, compare_messages=False), data
    )


@given(strategies.json_values())
def test_arbitrary_json_control_messages_raise_only_control_message_errors(value: object) -> None:
    payload = json.dumps(value).encode()
    error = assert_only_raises(parse_control_message, payload, allowed=(ControlMessageError,))
    assert error is None or isinstance(error, ControlMessageError)


def test_megabyte_inputs_go_through_the_helpers() -> None:
    big: WebSocketEvent = Binary(bytes(range(256)) * 3900)  # ~1 MB, under the event limit
    encoded = assert_round_trip(encode_event, lambda body: decode_events(body)[0], big)
    assert len(encoded) > 998_000
    many = encode_events([Binary(b"x" * 100)] * 500)  # 53 kB of small events, fed byte by byte
    assert len(assert_split_invariant(events_feed, many)) == 500


@pytest.mark.parametrize("size", [0, 1, 2, 3, 50])
def test_split_points_cut_inside_the_data(size: int) -> None:
    @given(strategies.split_points(size))
    def check(cuts: list[int]) -> None:
        assert cuts == sorted(set(cuts))
        assert all(0 < cut < size for cut in cuts)

    check()


# --- the helpers fail on broken parsers --------------------------------------------------------


def test_round_trip_catches_a_lossy_decoder() -> None:
    with pytest.raises(AssertionError, match="round trip changed the value"):
        assert_round_trip(lambda s: s.encode(), lambda b: b[:-1].decode(), "abc")


def test_round_trip_catches_a_non_canonical_encoder() -> None:
    counter = itertools.count()

    def encode(value: str) -> str:
        return f"{value};{next(counter)}"

    with pytest.raises(AssertionError, match="not canonical"):
        assert_round_trip(encode, lambda text: text.rsplit(";", 1)[0], "abc")


def test_round_trip_returns_the_encoding_and_shortens_long_reprs() -> None:
    assert assert_round_trip(str.encode, bytes.decode, "abc") == b"abc"
    with pytest.raises(AssertionError) as info:
        assert_round_trip(lambda s: s.encode(), lambda b: "", "x" * 1000)
    assert "..." in str(info.value)
    assert len(str(info.value)) < 500


def chunk_local_lines() -> Feed:
    """Broken: splits each chunk on newlines, forgetting partial lines between chunks."""

    def feed(chunk: bytes) -> list[object]:
        return [line for line in chunk.split(b"\n") if line]

    return feed


def buffered_lines() -> Feed:
    """Correct line parser; an unterminated line at the end of input is an error."""
    buffer = bytearray()

    def feed(chunk: bytes) -> list[object]:
        if not chunk:
            if buffer:
                raise WebSocketEventsError(f"incomplete line {bytes(buffer)!r}")
            return []
        buffer.extend(chunk)
        *lines, rest = bytes(buffer).split(b"\n")
        buffer[:] = rest
        return list(lines)

    return feed


def chunk_offsets() -> Feed:
    """Broken: reports errors at offsets relative to the chunk, not the stream."""

    def feed(chunk: bytes) -> list[object]:
        if b"!" in chunk:
            raise WebSocketEventsError(f"bad byte at {chunk.index(b'!')}")
        return []

    return feed


def error_only_when_whole() -> Feed:
    """Broken: rejects a pattern only when it arrives in one chunk."""

    def feed(chunk: bytes) -> list[object]:
        if b"ab" in chunk:
            raise WebSocketEventsError("saw ab")
        return [chunk] if chunk else []

    return feed


def test_split_invariant_catches_a_parser_that_forgets_partial_data() -> None:
    with pytest.raises(AssertionError, match="fed one byte at a time gave"):
        assert_split_invariant(chunk_local_lines, b"hello\nworld\n")


def test_split_invariant_catches_errors_that_depend_on_the_split() -> None:
    with pytest.raises(AssertionError, match="ended with"):
        assert_split_invariant(chunk_offsets, b"abc!def")
    with pytest.raises(AssertionError, match="ended with no error"):
        assert_split_invariant(error_only_when_whole, b"xxab")


def test_split_invariant_uses_the_given_splits_only() -> None:
    # One byte at a time is always tried; the given cut keeps "ab" together and finds nothing.
    with pytest.raises(AssertionError, match="one byte at a time"):
        assert_split_invariant(error_only_when_whole, b"xab", splits=[[1]])
    assert_split_invariant(buffered_lines, b"a\nb\n", splits=[[0, 2, 9]])


def test_split_invariant_accepts_a_correct_parser_and_equal_errors() -> None:
    assert assert_split_invariant(buffered_lines, b"hello\nworld\n") == [b"hello", b"world"]
    assert assert_split_invariant(buffered_lines, b"") == []
    assert assert_split_invariant(buffered_lines, b"a\nunterminated") == [b"a"]


def test_split_invariant_lets_other_exceptions_through() -> None:
    def crashing() -> Feed:
        def feed(chunk: bytes) -> list[object]:
            raise KeyError(chunk)

        return feed

    with pytest.raises(KeyError):
        assert_split_invariant(crashing, b"abc")


def test_derived_splits_are_reproducible_and_inside_the_data() -> None:
    data = bytes(range(100))
    seen: list[list[list[int]]] = []

    def recording() -> Feed:
        chunks: list[int] = []
        seen[-1].append(chunks)

        def feed(chunk: bytes) -> list[object]:
            if chunk:
                chunks.append(len(chunk))
            return []

        return feed

    for _ in range(2):
        seen.append([])
        assert_split_invariant(recording, data)
    assert seen[0] == seen[1]
    assert len(seen[0]) == 2 + properties.DERIVED_SPLITS
    derived = seen[0][2:]
    assert all(sum(sizes) == 100 and len(sizes) > 1 for sizes in derived)
    assert len({tuple(sizes) for sizes in derived}) > 1


def test_receive_data_feed_drains_events_per_chunk() -> None:
    feed = events_feed()
    assert list(feed(b"OPEN\r\nTEXT 2\r\nh")) == [decode_events(b"OPEN\r\n")[0]]
    assert len(list(feed(b"i\r\n"))) == 1
    assert list(feed(b"")) == []


def test_only_raises_catches_a_leaking_error() -> None:
    with pytest.raises(
        AssertionError, match=r"raised KeyError: 'k' \(only ProtocolError allowed\)"
    ) as info:
        empty: dict[str, str] = {}
        assert_only_raises(lambda d: empty[d], "k")
    assert isinstance(info.value.__cause__, KeyError)
    with pytest.raises(AssertionError, match="only ControlMessageError allowed"):
        assert_only_raises(parse_publish_body, b"{", allowed=(ControlMessageError,))


def test_only_raises_returns_the_allowed_error_or_none() -> None:
    error = assert_only_raises(parse_publish_body, b"{")
    assert isinstance(error, PublishError)
    assert assert_only_raises(len, b"abc") is None


def test_rejects_catches_an_accepting_parser() -> None:
    case = Invalid(b"{", PublishError, "Body is not valid JSON.")
    with pytest.raises(AssertionError, match="was accepted"):
        assert_rejects(len, case)


def test_rejects_catches_the_wrong_message_and_the_wrong_error() -> None:
    case = Invalid(b"{", PublishError, "some other message")
    with pytest.raises(AssertionError, match="expected the message to contain"):
        assert_rejects(parse_publish_body, case)
    with pytest.raises(AssertionError, match="raised ControlMessageError") as info:
        assert_rejects(parse_control_message, Invalid(b"{", PublishError, "x"))
    assert isinstance(info.value.__cause__, ControlMessageError)


def test_rejects_returns_the_error() -> None:
    error = assert_rejects(parse_publish_body, Invalid(b"{", PublishError, "not valid JSON"))
    assert error.error_status_hint == 400


# --- the pytest plugin and the publish checks --------------------------------------------------


def _plugin_args() -> list[str]:
    """Load the plugin explicitly unless the installed entry point already does."""
    installed = any(ep.value == "pytest_gripcore" for ep in entry_points(group="pytest11"))
    return [] if installed else ["-p", "pytest_gripcore"]


PLUGIN = _plugin_args()

FIXTURE_TESTS = """
def test_proxy(grip_proxy_url):
    print("PROXY", grip_proxy_url)

def test_publish(grip_publish_url):
    print("PUBLISH", grip_publish_url)
"""


def test_plugin_adds_its_options_to_help(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest(*PLUGIN, "--help")
    result.stdout.fnmatch_lines(
        ["*GRIP conformance checks*", "*--grip-proxy=URL*", "*--grip-publish=URL*"]
    )


def test_fixtures_skip_without_urls(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(FIXTURE_TESTS)
    result = pytester.runpytest(*PLUGIN, "-rs")
    result.assert_outcomes(skipped=2)
    result.stdout.fnmatch_lines(["*pass --grip-proxy=URL to run this check*"])


def test_fixtures_return_the_urls(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(FIXTURE_TESTS)
    result = pytester.runpytest(
        *PLUGIN, "-s", "--grip-proxy=http://127.0.0.1:7999/", "--grip-publish", "https://h:5561"
    )
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*PROXY http://127.0.0.1:7999*", "*PUBLISH https://h:5561*"])


@pytest.mark.parametrize(
    ("arg", "message"),
    [
        ("--grip-proxy=ftp://h/", "*--grip-proxy: 'ftp://h/' must be an absolute http*"),
        ("--grip-publish=localhost:5561", "*--grip-publish*must be an absolute http*"),
        ("--grip-proxy=http://h:99999", "*--grip-proxy: 'http://h:99999' is not a valid URL*"),
    ],
)
def test_bad_urls_are_usage_errors(pytester: pytest.Pytester, arg: str, message: str) -> None:
    pytester.makepyfile(FIXTURE_TESTS)
    result = pytester.runpytest(*PLUGIN, arg)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])


class _PublishHandler(BaseHTTPRequestHandler):
    """gripcore's publish API, or a broken one answering every POST with `server.fixed`."""

    server: _PublishServer

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        headers = [(k.encode(), v.encode()) for k, v in self.headers.items()]
        answer = handle_publish_request(b"POST", self.path.encode(), headers, body)
        status = self.server.fixed or answer.status
        self.server.paths.append(self.path)
        self.send_response(status)
        self.send_header("Content-Length", str(len(answer.body)))
        self.end_headers()
        self.wfile.write(answer.body)

    def log_message(self, format: str, *args: object) -> None:
        pass


class _PublishServer(ThreadingHTTPServer):
    fixed: int | None = None
    paths: list[str]


@pytest.fixture
def publish_server() -> Iterator[_PublishServer]:
    server = _PublishServer(("127.0.0.1", 0), _PublishHandler)
    server.paths = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join()


def _url(server: _PublishServer) -> str:
    host, port = server.server_address[:2]
    return f"http://{host!s}:{port}"


def run_checks(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest(
        *PLUGIN, "-p", "no:cacheprovider", "--pyargs", "gripcore.testing.checks", *args
    )


def test_checks_pass_against_the_gripcore_publish_api(
    pytester: pytest.Pytester, publish_server: _PublishServer
) -> None:
    result = run_checks(pytester, f"--grip-publish={_url(publish_server)}")
    # the proxy checks skip: no --grip-proxy was given
    result.assert_outcomes(
        passed=1 + len(gripcore.testing.checks.REJECTED_PUBLISH_BODIES),
        skipped=len(gripcore._check.PROXY_CHECKS),
    )
    assert set(publish_server.paths) == {"/publish/"}


def test_checks_use_the_path_given(
    pytester: pytest.Pytester, publish_server: _PublishServer
) -> None:
    result = run_checks(pytester, f"--grip-publish={_url(publish_server)}/publish", "-k", "rejects")
    result.assert_outcomes(passed=len(gripcore.testing.checks.REJECTED_PUBLISH_BODIES))
    assert set(publish_server.paths) == {"/publish"}


@pytest.mark.parametrize(("fixed", "failing"), [(200, "rejects"), (400, "accepts")])
def test_checks_fail_against_a_broken_publish_api(
    pytester: pytest.Pytester, publish_server: _PublishServer, fixed: int, failing: str
) -> None:
    publish_server.fixed = fixed
    result = run_checks(pytester, f"--grip-publish={_url(publish_server)}", "-k", failing)
    outcomes = result.parseoutcomes()
    assert outcomes.get("failed", 0) >= 1
    assert outcomes.get("passed", 0) == 0
    result.stdout.fnmatch_lines([f"*batch answered {fixed}*"])


def test_checks_skip_without_a_publish_url(pytester: pytest.Pytester) -> None:
    result = run_checks(pytester)
    result.assert_outcomes(
        skipped=1
        + len(gripcore.testing.checks.REJECTED_PUBLISH_BODIES)
        + len(gripcore._check.PROXY_CHECKS)
    )


def test_plugin_alias_module_is_the_entry_point_plugin() -> None:
    import pytest_gripcore
    from gripcore.testing import plugin

    for name in plugin.__all__:
        assert getattr(plugin, name) is getattr(pytest_gripcore, name)


@pytest.mark.usefixtures("proxy_adapter")
def test_plugin_runs_the_proxy_checks_against_gripcore(pytester: pytest.Pytester) -> None:
    """`pytest --pyargs gripcore.testing.checks --grip-proxy ... --grip-publish ...` runs every
    check of `gripcore check proxy`, one test each, against a real gripcore on loopback."""
    import socket

    from gripcore._check import PROXY_CHECKS

    from .e2e_support import running_proxy

    with socket.socket() as probe:  # a free port for the checks' own origin
        probe.bind(("127.0.0.1", 0))
        origin_port = probe.getsockname()[1]
    key = "plugin-check-key-0123456789-abcdefgh"
    with running_proxy(routes=(f"* 127.0.0.1:{origin_port},over_http",), sig_key=key) as proxy:
        result = pytester.runpytest_inprocess(
            *PLUGIN,
            "--pyargs",
            "gripcore.testing.checks",
            "-k",
            "test_proxy_check",
            f"--grip-proxy=http://127.0.0.1:{proxy.port}",
            f"--grip-publish=http://127.0.0.1:{proxy.publish_port}",
            f"--grip-origin-listen=127.0.0.1:{origin_port}",
            f"--grip-sig-key={key}",
            "-p",
            "no:cacheprovider",
        )
    result.assert_outcomes(passed=len(PROXY_CHECKS))


def test_origin_listen_must_be_host_port(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(FIXTURE_TESTS)
    result = pytester.runpytest(*PLUGIN, "--grip-origin-listen=nowhere")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--grip-origin-listen: 'nowhere' is not HOST:PORT*"])
