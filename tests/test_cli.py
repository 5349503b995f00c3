"""Tests of the `gripcore` command line: `--help`/`--version`, `serve` (config sources, adapter
loading, exit codes) and `publish` (the exact JSON of each flag combination, and real requests to
a loopback `http.server` capturing what arrives)."""

from __future__ import annotations

import base64
import io
import json
import logging
import runpy
import socket
import ssl
import sys
import threading
import types
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import jwt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import gripcore
from gripcore import _cli, _speedups
from gripcore._cli import (
    DEFAULT_GRIP_URL,
    PublishResponse,
    main,
    post_publish,
    publish_endpoint,
    sse_event,
)
from gripcore._config import OPTIONS, Config, ConfigError
from gripcore._errors import LocalProtocolError
from gripcore._items import parse_publish_body

from .hypothesis_support import examples


def _run(
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    environ: dict[str, str] | None = None,
    stdin: bytes = b"",
) -> tuple[int, str, str]:
    code = main(argv, environ={} if environ is None else environ, stdin=io.BytesIO(stdin))
    out, err = capsys.readouterr()
    return code, out, err


# --- top level -----------------------------------------------------------------------------------


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(capsys, ["--version"]) == (0, f"gripcore {gripcore.__version__}\n", "")


def test_no_command_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run(capsys, [])
    assert (code, out) == (2, "")
    assert "serve" in err and "publish" in err


def test_unknown_option_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _run(capsys, ["serve", "--listen-port", "1"])
    assert code == 2
    assert "unrecognized arguments: --listen-port" in err


def test_main_defaults_to_the_process_environment(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GRIPCORE_HISTORY", "7")
    assert main(["serve", "--print-config"]) == 0
    assert "history = 7\n" in capsys.readouterr().out


def test_module_entry_point(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import gripcore.__main__ as entry

    assert entry.main is main
    monkeypatch.delitem(sys.modules, "gripcore.__main__")
    monkeypatch.setattr(sys, "argv", ["gripcore", "--version"])
    with pytest.raises(SystemExit) as info:
        runpy.run_module("gripcore.__main__", run_name="__main__")
    assert info.value.code == 0
    assert capsys.readouterr().out == f"gripcore {gripcore.__version__}\n"


# --- serve --help --------------------------------------------------------------------------------


def test_serve_help_documents_every_option(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    code, out, _ = _run(capsys, ["serve", "--help"])
    assert code == 0
    for option in OPTIONS:
        assert f"--{option.flag}" in out
        assert f"env: {option.env})" in out
    assert "--no-debug" in out
    assert "--config FILE" in out and "GRIPCORE_CONFIG" in out
    for default in ("default: 0.0.0.0:7999;", "default: 127.0.0.1:5561;", "default: 50000;"):
        assert default in out
    assert "default: changeme; env: GRIPCORE_SIG_KEY" in out
    assert "default: off; env: GRIPCORE_DEBUG" in out
    assert "Flags override the environment" in out


def test_publish_help(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    code, out, _ = _run(capsys, ["publish", "--help"])
    assert code == 0
    for flag in ("--sse", "--ws", "--http-response", "--http-stream", "--id", "--prev-id"):
        assert flag in out
    for flag in ("--close", "--hint", "--patch", "--meta", "--no-seq", "--no-eol", "--header"):
        assert flag in out
    assert f"$GRIP_URL or {DEFAULT_GRIP_URL}" in out


# --- serve ---------------------------------------------------------------------------------------


@dataclass
class FakeAdapter:
    configs: list[Config] = field(default_factory=list)
    result: object = 0
    error: BaseException | None = None

    def run(self, config: Config) -> object:
        self.configs.append(config)
        if self.error is not None:
            raise self.error
        return self.result


@pytest.fixture
def adapter(monkeypatch: pytest.MonkeyPatch) -> FakeAdapter:
    """A stand-in `gripcore.adapters.gevent` (serve with `--adapter gevent` runs it)."""
    fake = FakeAdapter()
    module = types.ModuleType("gripcore.adapters.gevent")
    module.run = fake.run  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "gripcore.adapters.gevent", module)
    return fake


@pytest.fixture
def gripcore_logger() -> Iterator[logging.Logger]:
    logger = logging.getLogger("gripcore")
    level = logger.level
    yield logger
    logger.setLevel(level)


def test_serve_runs_the_adapter_with_the_layered_config(
    capsys: pytest.CaptureFixture[str],
    adapter: FakeAdapter,
    tmp_path: Path,
    gripcore_logger: logging.Logger,
) -> None:
    config_file = tmp_path / "gripcore.toml"
    config_file.write_text('history = 1\nsig-iss = "file"\nroutes = "routes"\n', encoding="utf-8")
    adapter.result = 3
    environ = {"GRIPCORE_SIG_ISS": "env", "GRIPCORE_ADAPTER": "gevent", "GRIPCORE_LOG_LEVEL": "2"}
    argv = ["serve", "--config", str(config_file), "--listen", "7000", "--listen", "[::1]:7001"]
    argv += ["--route", "* 127.0.0.1:8080", "--debug", "--log-level", "debug"]
    code, out, err = _run(capsys, argv, environ)
    assert (code, out, err) == (3, "", "")
    [config] = adapter.configs
    assert config.history == 1
    assert config.sig_iss == "env"
    assert config.routes_file == str(tmp_path / "routes")
    assert config.listen == (("0.0.0.0", 7000), ("::1", 7001))
    assert config.routes == ("* 127.0.0.1:8080",)
    assert (config.debug, config.adapter, config.log_level) == (True, "gevent", "debug")
    assert gripcore_logger.level == logging.DEBUG


def test_serve_reads_the_config_file_named_in_the_environment(
    capsys: pytest.CaptureFixture[str], adapter: FakeAdapter, tmp_path: Path
) -> None:
    config_file = tmp_path / "g.toml"
    config_file.write_text("max-connections = 12\n", encoding="utf-8")
    environ = {"GRIPCORE_CONFIG": str(config_file)}
    assert _run(capsys, ["serve", "--adapter", "gevent"], environ)[0] == 0
    assert adapter.configs[0].max_connections == 12


def test_serve_reads_pushpins_config_and_reports_each_setting(
    capsys: pytest.CaptureFixture[str],
    adapter: FakeAdapter,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    conf = tmp_path / "pushpin.conf"
    conf.write_text(
        "[global]\ninclude=extra.conf\n[runner]\nhttp_port=7100\n"
        "[proxy]\nroutesfile=routes\nsig_key=s3cret\n[handler]\nmessage_rate=1\n",
        encoding="utf-8",
    )
    (tmp_path / "extra.conf").write_text("[proxy]\nsig_iss=from-include\n", encoding="utf-8")
    caplog.set_level(logging.INFO, "gripcore.serve")
    argv = ["serve", "--adapter", "gevent", "--pushpin-config", str(conf), "--sig-iss", "flag"]
    assert _run(capsys, argv)[0] == 0
    [config] = adapter.configs
    assert config.listen == (("0.0.0.0", 7100),) and config.sig_key == "s3cret"
    assert config.routes_file == str(tmp_path / "routes") and config.sig_iss == "flag"
    logged = [r.getMessage() for r in caplog.records if r.name == "gripcore.serve"]
    assert logged[0] == f"read Pushpin's config {conf}:"
    assert (
        "  handler/message_rate ignored: no delivery rate limit: slow clients are handled "
        "by --slow-consumer-policy" in logged
    )
    assert (
        f"  global/include ignored: {tmp_path / 'extra.conf'} read for what this file does not set"
        in logged
    )
    # the environment names it too; an include that cannot be read is reported, not fatal
    (tmp_path / "extra.conf").unlink()
    environ = {"GRIPCORE_PUSHPIN_CONFIG": str(conf)}
    assert _run(capsys, ["serve", "--adapter", "gevent"], environ)[0] == 0
    assert adapter.configs[1].sig_iss == "pushpin"
    assert any("cannot read" in r.getMessage() for r in caplog.records)


def test_serve_pushpin_config_errors(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = _run(capsys, ["serve", "--pushpin-config", str(tmp_path / "none.conf")])
    assert code == 2 and "cannot read config file" in err
    bad = tmp_path / "bad.conf"
    bad.write_text("[runner]\nclient_maxconn=lots\n", encoding="utf-8")
    code, _, err = _run(capsys, ["serve", "--pushpin-config", str(bad)])
    assert code == 2 and f"{bad}:2: [runner] client_maxconn: must be an integer" in err


def test_serve_adds_a_log_handler_when_there_is_none(
    capsys: pytest.CaptureFixture[str],
    adapter: FakeAdapter,
    monkeypatch: pytest.MonkeyPatch,
    gripcore_logger: logging.Logger,
) -> None:
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [])
    assert _run(capsys, ["serve", "--adapter", "gevent", "--log-level", "warning"])[0] == 0
    [handler] = root.handlers
    assert isinstance(handler, logging.StreamHandler)
    assert gripcore_logger.level == logging.WARNING


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_serve_log_format_and_worker_tag(
    capsys: pytest.CaptureFixture[str],
    adapter: FakeAdapter,
    monkeypatch: pytest.MonkeyPatch,
    gripcore_logger: logging.Logger,
    log_format: str,
) -> None:
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [])
    argv = ["serve", "--adapter", "gevent", "--log-format", log_format, "--sig-key", "none"]
    assert _run(capsys, argv)[0] == 0
    [handler] = root.handlers
    record = logging.LogRecord("gripcore.x", logging.ERROR, __file__, 1, "hello %s", ("you",), None)
    for worker, tag in ((None, ""), (3, " [worker 3]")):
        monkeypatch.setattr(_cli.WORKER_TAG, "worker", worker)
        assert handler.filter(record)
        line = handler.format(record)
        if log_format == "text":
            assert line.endswith(f"ERROR gripcore.x{tag}: hello you")
        else:
            doc = json.loads(line)
            assert doc["level"] == "error" and doc["logger"] == "gripcore.x"
            assert doc["message"] == "hello you" and doc["time"].endswith("Z")
            assert doc.get("worker") == worker
    _cli.set_log_worker(None)


def test_json_log_lines_carry_the_traceback() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord(
            "gripcore", logging.ERROR, __file__, 1, "failed", (), sys.exc_info()
        )
    doc = json.loads(_cli.JsonLogFormatter().format(record))
    assert "ValueError: boom" in doc["exception"] and "worker" not in doc


def test_serve_print_config_hides_keys(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["serve", "--print-config", "--sig-key", "topsecret", "--publish-listen", "[::1]:9"]
    code, out, _ = _run(capsys, argv)
    assert code == 0
    assert "topsecret" not in out
    assert "# sig-key is set (hidden)\n" in out
    assert 'publish-listen = "[::1]:9"\n' in out


@pytest.mark.parametrize(
    ("result", "error", "expected"),
    [(None, None, 0), (5, None, 5), ("done", None, 0), (0, KeyboardInterrupt(), 130)],
)
def test_serve_exit_code(
    capsys: pytest.CaptureFixture[str],
    adapter: FakeAdapter,
    gripcore_logger: logging.Logger,
    result: object,
    error: BaseException | None,
    expected: int,
) -> None:
    adapter.result, adapter.error = result, error
    assert _run(capsys, ["serve", "--adapter", "gevent"])[0] == expected


def test_serve_warns_about_kubernetes_service_variables_and_runs(
    capsys: pytest.CaptureFixture[str], adapter: FakeAdapter, gripcore_logger: logging.Logger
) -> None:
    # the variables Kubernetes injects into every pod when a Service is named `gripcore`
    environ = {
        "GRIPCORE_PORT": "tcp://10.0.0.11:7999",
        "GRIPCORE_PORT_7999_TCP": "tcp://10.0.0.11:7999",
        "GRIPCORE_PORT_7999_TCP_ADDR": "10.0.0.11",
        "GRIPCORE_PORT_7999_TCP_PORT": "7999",
        "GRIPCORE_PORT_7999_TCP_PROTO": "tcp",
        "GRIPCORE_SERVICE_HOST": "10.0.0.11",
        "GRIPCORE_SERVICE_PORT": "7999",
    }
    code, out, err = _run(capsys, ["serve", "--adapter", "gevent"], environ)
    assert (code, out) == (0, "")
    assert err.startswith(
        "gripcore serve: warning: ignoring unknown environment variables GRIPCORE_PORT, "
    )
    assert err.count("\n") == 1
    assert len(adapter.configs) == 1


@pytest.mark.parametrize(
    ("compiled", "environ", "level", "words"),
    [
        (True, {}, logging.INFO, "hot path: compiled"),
        (False, {"GRIPCORE_NO_EXTENSIONS": "1"}, logging.INFO, "GRIPCORE_NO_EXTENSIONS is set"),
        (False, {}, logging.WARNING, "not installed (gripcore was installed without a C compiler"),
    ],
)
def test_serve_logs_which_hot_path_is_live(
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    adapter: FakeAdapter,
    monkeypatch: pytest.MonkeyPatch,
    compiled: bool,
    environ: dict[str, str],
    level: int,
    words: str,
) -> None:
    live = types.ModuleType("gripcore._fast") if compiled else _speedups._fast_py
    monkeypatch.setattr(_speedups, "impl", live)
    caplog.set_level(logging.INFO, logger="gripcore")
    assert _run(capsys, ["serve", "--adapter", "gevent"], environ)[0] == 0
    [record] = [r for r in caplog.records if r.getMessage().startswith("hot path: ")]
    assert record.levelno == level
    assert words in record.getMessage()


SERVE_ERRORS: list[tuple[list[str], dict[str, str], str]] = [
    (["--max-connections", "0"], {}, "option --max-connections: must be an integer >= 1, got 0"),
    ([], {"GRIPCORE_DEBUG": "sometimes"}, "environment variable GRIPCORE_DEBUG: must be true"),
    (["--listen", "::1"], {}, "option --listen: '::1': write an IPv6 address in brackets"),
    (["--config", "/nonexistent/g.toml"], {}, "cannot read config file /nonexistent/g.toml: "),
]


@pytest.mark.parametrize(("argv", "environ", "message"), SERVE_ERRORS)
def test_serve_errors(
    capsys: pytest.CaptureFixture[str], argv: list[str], environ: dict[str, str], message: str
) -> None:
    code, out, err = _run(capsys, ["serve", *argv], environ)
    assert (code, out) == (2, "")
    assert err.startswith(f"gripcore serve: {message}")
    assert err.count("\n") == 1


def test_serve_config_file_errors(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "g.toml"
    path.write_text("# gripcore\nmax-connections = 'many'\n", encoding="utf-8")
    code, _, err = _run(capsys, ["serve", "--config", str(path)])
    assert code == 2
    assert err == f"gripcore serve: {path}:2: max-connections: must be an integer, got 'many'\n"
    path.write_bytes(b"sig-iss = '\xff'\n")
    assert _run(capsys, ["serve", "--config", str(path)])[2].endswith("is not UTF-8 text\n")
    monkeypatch.setattr(_cli, "MAX_CONFIG_FILE_SIZE", 4)
    path.write_text("history = 1\n", encoding="utf-8")
    code, _, err = _run(capsys, ["serve", "--config", str(path)])
    assert (code, err) == (2, f"gripcore serve: config file {path} is larger than 4 bytes\n")


def test_serve_without_the_adapter_module(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "gripcore.adapters.gevent", None)
    code, _, err = _run(capsys, ["serve", "--adapter", "gevent"])
    assert code == 2
    assert err.startswith("gripcore serve: the gevent adapter is not available (")


def test_serve_adapter_missing_a_dependency(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def import_module(name: str) -> types.ModuleType:
        raise ModuleNotFoundError("No module named 'gevent'", name="gevent")

    monkeypatch.setattr(_cli.importlib, "import_module", import_module)
    code, _, err = _run(capsys, ["serve", "--adapter", "gevent"])
    assert (code, err) == (
        2,
        "gripcore serve: the gevent adapter needs 'gevent', which is not installed\n",
    )


def test_serve_adapter_without_run(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "gripcore.adapters.gevent", types.ModuleType("x"))
    code, _, err = _run(capsys, ["serve", "--adapter", "gevent"])
    assert code == 2
    assert err == (
        "gripcore serve: the gevent adapter (gripcore.adapters.gevent) has no run(config)"
        " function\n"
    )


# --- publish: the JSON of each flag combination --------------------------------------------------

_ALL = {"http-response": {"body": "hi\n"}, "http-stream": {"content": "hi\n"}}
_ALL_WS = {**_ALL, "ws-message": {"content": "hi"}}

# (arguments after `publish`, standard input, the expected item)
PUBLISH_VECTORS: list[tuple[list[str], bytes, dict[str, Any]]] = [
    (["ch", "hi"], b"", {"channel": "ch", "formats": _ALL_WS}),
    (
        ["ch", "hi", "--no-eol"],
        b"",
        {
            "channel": "ch",
            "formats": {
                "http-response": {"body": "hi"},
                "http-stream": {"content": "hi"},
                "ws-message": {"content": "hi"},
            },
        },
    ),
    (["ch", "hi", "--ws"], b"", {"channel": "ch", "formats": {"ws-message": {"content": "hi"}}}),
    (
        ["ch", "hi", "--http-response"],
        b"",
        {"channel": "ch", "formats": {"http-response": {"body": "hi\n"}}},
    ),
    (
        ["ch", "hi", "--http-stream", "--ws"],
        b"",
        {
            "channel": "ch",
            "formats": {"http-stream": {"content": "hi\n"}, "ws-message": {"content": "hi"}},
        },
    ),
    (
        ["ch", "hi", "--sse"],
        b"",
        {"channel": "ch", "formats": {"http-stream": {"content": "data: hi\n\n"}}},
    ),
    (
        ["ch", "a\nb\r\nc\rd", "--sse", "--event", "update", "--id", "7"],
        b"",
        {
            "channel": "ch",
            "id": "7",
            "formats": {
                "http-stream": {
                    "content": "event: update\nid: 7\ndata: a\ndata: b\ndata: c\ndata: d\n\n"
                }
            },
        },
    ),
    (
        ["ch", "", "--sse"],
        b"",
        {"channel": "ch", "formats": {"http-stream": {"content": "data: \n\n"}}},
    ),
    (
        ["ch", "-", "--sse", "--ws"],
        b"line 1\nline 2\n",
        {
            "channel": "ch",
            "formats": {
                "http-stream": {"content": "data: line 1\ndata: line 2\n\n"},
                "ws-message": {"content": "line 1\nline 2\n"},
            },
        },
    ),
    (
        ["ch", "-"],
        b"from stdin\n",
        {
            "channel": "ch",
            "formats": {
                "http-response": {"body": "from stdin\n"},
                "http-stream": {"content": "from stdin\n"},
                "ws-message": {"content": "from stdin\n"},
            },
        },
    ),
    (
        ["ch", "-"],
        b"\xff\x00",
        {
            "channel": "ch",
            "formats": {
                "http-response": {"body-bin": "/wA="},
                "http-stream": {"content-bin": "/wA="},
                "ws-message": {"content-bin": "/wA="},
            },
        },
    ),
    (
        ["ch", "hi", "--id", "2", "--prev-id", "1", "--no-seq"],
        b"",
        {"channel": "ch", "id": "2", "prev-id": "1", "formats": _ALL_WS, "no-seq": True},
    ),
    (["ch", "hi", "--id", "", "--prev-id", ""], b"", {"channel": "ch", "formats": _ALL_WS}),
    (
        ["ch", "hi", "--sender", "me", "-M", "a=1", "--meta", "b = two words ", "-M", "c="],
        b"",
        {
            "channel": "ch",
            "formats": _ALL_WS,
            "meta": {"sender": "me", "a": "1", "b": "two words", "c": ""},
        },
    ),
    (
        ["ch", "hi", "--sender", "me", "--meta", "sender=you"],
        b"",
        {"channel": "ch", "formats": _ALL_WS, "meta": {"sender": "you"}},
    ),
    (
        [
            "ch",
            "hi",
            "--http-response",
            "--code",
            "404",
            "--reason",
            "Gone Fishing",
            "-H",
            "X-A: 1",
            "--header",
            "Cache-Control:  no-cache ",
        ],
        b"",
        {
            "channel": "ch",
            "formats": {
                "http-response": {
                    "code": 404,
                    "reason": "Gone Fishing",
                    "headers": [["X-A", "1"], ["Cache-Control", "no-cache"]],
                    "body": "hi\n",
                }
            },
        },
    ),
    (
        ["ch", "--close"],
        b"",
        {
            "channel": "ch",
            "formats": {"http-stream": {"action": "close"}, "ws-message": {"action": "close"}},
        },
    ),
    (
        ["ch", "--close", "--ws", "--code", "4000", "--reason", "bye"],
        b"",
        {
            "channel": "ch",
            "formats": {"ws-message": {"action": "close", "code": 4000, "reason": "bye"}},
        },
    ),
    (
        ["ch", "--close", "--sse"],
        b"",
        {"channel": "ch", "formats": {"http-stream": {"action": "close"}}},
    ),
    (
        ["ch", "--hint"],
        b"",
        {
            "channel": "ch",
            "formats": {
                "http-response": {"action": "hint"},
                "http-stream": {"action": "hint"},
                "ws-message": {"action": "hint"},
            },
        },
    ),
    (
        ["ch", "--hint", "--http-response"],
        b"",
        {"channel": "ch", "formats": {"http-response": {"action": "hint"}}},
    ),
    (
        ["ch", '[{"op": "replace", "path": "/n", "value": 2}]', "--patch"],
        b"",
        {
            "channel": "ch",
            "formats": {
                "http-response": {"body-patch": [{"op": "replace", "path": "/n", "value": 2}]}
            },
        },
    ),
    (
        ["ch", "[]", "--patch", "--code", "202", "-H", "X: y"],
        b"",
        {
            "channel": "ch",
            "formats": {"http-response": {"code": 202, "headers": [["X", "y"]], "body-patch": []}},
        },
    ),
    (
        ["chan nel/ü", "ünïcode ☃"],
        b"",
        {
            "channel": "chan nel/ü",
            "formats": {
                "http-response": {"body": "ünïcode ☃\n"},
                "http-stream": {"content": "ünïcode ☃\n"},
                "ws-message": {"content": "ünïcode ☃"},
            },
        },
    ),
]


@pytest.mark.parametrize(("args", "stdin", "expected"), PUBLISH_VECTORS)
def test_publish_builds_the_item(
    capsys: pytest.CaptureFixture[str], args: list[str], stdin: bytes, expected: dict[str, Any]
) -> None:
    code, out, err = _run(capsys, ["publish", *args, "--dry-run"], stdin=stdin)
    assert (code, err) == (0, "")
    assert json.loads(out) == {"items": [expected]}
    assert len(parse_publish_body(out.strip().encode())) == 1


def test_publish_message_from_a_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "message.txt"
    path.write_bytes(b"as is\n")
    code, out, _ = _run(capsys, ["publish", "ch", f"@{path}", "--dry-run", "--no-eol"])
    assert code == 0
    item = json.loads(out)["items"][0]
    assert item["formats"]["http-stream"] == {"content": "as is\n"}  # Pushpin adds no EOL to files
    assert item["formats"]["ws-message"] == {"content": "as is\n"}
    path.write_bytes(b"\x80binary")
    code, out, _ = _run(capsys, ["publish", "ch", f"@{path}", "--ws", "--dry-run"])
    encoded = base64.b64encode(b"\x80binary").decode()
    assert json.loads(out)["items"][0]["formats"] == {"ws-message": {"content-bin": encoded}}


def test_publish_argument_that_is_not_utf8(capsys: pytest.CaptureFixture[str]) -> None:
    raw = b"caf\xe9".decode("utf-8", "surrogateescape")  # what Python makes of such argv bytes
    code, out, _ = _run(capsys, ["publish", "ch", raw, "--http-stream", "--dry-run", "--no-eol"])
    assert code == 0
    assert json.loads(out)["items"][0]["formats"] == {
        "http-stream": {"content-bin": base64.b64encode(b"caf\xe9").decode()}
    }


PUBLISH_USAGE_ERRORS: list[tuple[list[str], str]] = [
    (["ch"], "a message is required (or --hint or --close)"),
    (["ch", "hi", "--close"], "--close takes no message"),
    (["ch", "hi", "--hint"], "--hint takes no message"),
    (["ch", "--close", "--http-response"], "--close applies to http-stream and ws-message"),
    (["ch", "[]", "--patch", "--ws"], "--patch applies to http-response only"),
    (["ch", "[]", "--patch", "--sse"], "--patch applies to http-response only"),
    (["ch", "{}", "--patch"], "the --patch message must be a JSON array"),
    (["ch", "{", "--patch"], "the --patch message is not JSON"),
    (["ch", "[1]", "--patch"], "'body-patch' element 0 with wrong type"),
    (["ch", "hi", "--event", "e"], "--event needs --sse"),
    (["ch", "hi", "--sse", "--event", "a\nb"], "the SSE event must be one line"),
    (["ch", "hi", "--sse", "--id", "1\r"], "the SSE id must be one line"),
    (["ch", "hi", "--ws", "--code", "201"], "--code applies to http-response, or to ws-message"),
    (["ch", "--hint", "--code", "201"], "--code applies to http-response"),
    (["ch", "--close", "--sse", "--reason", "x"], "--reason applies to http-response"),
    (["ch", "--close", "--code", "1005"], "'ws-message' contains 'code' with invalid value"),
    (["ch", "hi", "--code", "99"], "'http-response' contains 'code' with invalid value"),
    (["ch", "hi", "-H", "no colon"], "'no colon' is not in the form \"NAME: VALUE\""),
    (["ch", "hi", "-H", ": v"], "is not in the form"),
    (["ch", "hi", "-H", "Bad Name: v"], "headers contains 'Bad Name', which is not a valid name"),
    (["ch", "hi", "--ws", "-H", "X: y"], "--header applies to a sent http-response"),
    (["ch", "--close", "-H", "X: y"], "--header applies to a sent http-response"),
    (["ch", "hi", "--meta", "novalue"], "'novalue' is not in the form K=V"),
    (["", "hi"], "publish item object contains 'channel' with invalid value"),
    (["ch", "@/nonexistent/file"], "cannot read /nonexistent/file: "),
    (["ch", "hi", "--url", "ftp://x"], "GRIP URL: 'ftp://x' is not an http:// or https:// URL"),
]


@pytest.mark.parametrize(("args", "message"), PUBLISH_USAGE_ERRORS)
def test_publish_usage_error(
    capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    code, out, err = _run(capsys, ["publish", *args])
    assert (code, out) == (2, "")
    assert err.startswith("gripcore publish: ")
    assert message in err


ARGPARSE_ERRORS: list[list[str]] = [
    ["ch", "--hint", "--close"],
    ["ch", "hi", "--sse", "--http-stream"],
    ["ch", "hi", "--code", "abc"],
    ["ch", "hi", "--timeout", "soon"],
    ["ch", "hi", "--timeout", "0"],
    ["ch", "hi", "--timeout", "nan"],
    [],
]


@pytest.mark.parametrize("args", ARGPARSE_ERRORS)
def test_publish_argparse_errors(capsys: pytest.CaptureFixture[str], args: list[str]) -> None:
    code, out, err = _run(capsys, ["publish", *args])
    assert (code, out) == (2, "")
    assert "usage: gripcore publish" in err


def test_publish_message_too_large(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_cli, "MAX_MESSAGE_SIZE", 8)
    code, _, err = _run(capsys, ["publish", "ch", "-", "--dry-run"], stdin=b"123456789")
    assert (code, err) == (2, "gripcore publish: the message is larger than 8 bytes\n")
    assert _run(capsys, ["publish", "ch", "-", "--dry-run"], stdin=b"12345678")[0] == 0


_arguments = st.lists(
    st.one_of(
        st.sampled_from(
            [
                "--sse",
                "--ws",
                "--http-response",
                "--http-stream",
                "--close",
                "--hint",
                "--patch",
                "--id",
                "--prev-id",
                "--event",
                "--code",
                "--reason",
                "-H",
                "-M",
                "--sender",
                "--no-eol",
                "--no-seq",
                "-",
                "ch",
                "[]",
                "1",
                "a=b",
                "X: y",
                "4000",
            ]
        ),
        st.text(max_size=8).filter(lambda s: not s.startswith("@")),
    ),
    max_size=8,
)


@settings(max_examples=examples(60))
@given(_arguments, st.binary(max_size=16))
def test_publish_never_raises(args: list[str], stdin: bytes) -> None:
    out, err = io.StringIO(), io.StringIO()
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = out, err
    try:
        code = main(["publish", *args, "--dry-run"], environ={}, stdin=io.BytesIO(stdin))
    finally:
        sys.stdout, sys.stderr = saved
    assert code in (0, 2)
    if code == 0 and "--help" not in args and "-h" not in args:
        assert len(parse_publish_body(out.getvalue().strip().encode("utf-8"))) == 1


def test_large_message(capsys: pytest.CaptureFixture[str]) -> None:
    message = b"0123456789abcdef\n" * 65_536  # 1.1 MB, 65,536 lines
    code, out, _ = _run(capsys, ["publish", "ch", "-", "--sse", "--dry-run"], stdin=message)
    assert code == 0
    content = json.loads(out)["items"][0]["formats"]["http-stream"]["content"]
    assert content.count("data: 0123456789abcdef\n") == 65_536


# --- SSE framing ----------------------------------------------------------------------------------

SSE_VECTORS: list[tuple[bytes, str | None, str | None, bytes]] = [
    (b"hi", None, None, b"data: hi\n\n"),
    (b"", None, None, b"data: \n\n"),
    (b"a\nb", "e", None, b"event: e\ndata: a\ndata: b\n\n"),
    (b"a\r\nb\rc\n", None, "5", b"id: 5\ndata: a\ndata: b\ndata: c\ndata: \n\n"),
    (b"x", "", "", b"event: \nid: \ndata: x\n\n"),
]


@pytest.mark.parametrize(("data", "event", "event_id", "expected"), SSE_VECTORS)
def test_sse_event(data: bytes, event: str | None, event_id: str | None, expected: bytes) -> None:
    assert sse_event(data, event=event, id=event_id) == expected


def _parse_sse(stream: bytes) -> tuple[dict[str, str], bytes]:
    """A minimal SSE reader (WHATWG HTML section 9.2.6) for one event."""
    assert stream.endswith(b"\n\n")
    fields: dict[str, str] = {}
    data: list[bytes] = []
    for line in stream[:-2].split(b"\n"):
        name, _, value = line.partition(b": ")
        if name == b"data":
            data.append(value)
        else:
            fields[name.decode()] = value.decode()
    return fields, b"\n".join(data)


@given(st.binary(max_size=50), st.none() | st.text(max_size=5), st.none() | st.text(max_size=5))
def test_sse_event_round_trips(data: bytes, event: str | None, event_id: str | None) -> None:
    try:
        framed = sse_event(data, event=event, id=event_id)
    except LocalProtocolError:
        assert any(v is not None and ("\n" in v or "\r" in v) for v in (event, event_id))
        return
    fields, decoded = _parse_sse(framed)
    assert decoded == data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    assert fields == {k: v for k, v in (("event", event), ("id", event_id)) if v is not None}


# --- publish: the endpoint and its authentication ---------------------------------------------------

ENDPOINTS: list[tuple[str, str, str | None]] = [
    ("http://127.0.0.1:5561", "http://127.0.0.1:5561/publish/", None),
    ("http://localhost:5561/", "http://localhost:5561/publish/", None),
    ("https://api.fastly.com/service/abc", "https://api.fastly.com/service/abc/publish/", None),
    (
        "https://api.fastly.com/service/abc?key=tok",
        "https://api.fastly.com/service/abc/publish/",
        "Bearer tok",
    ),
    ("http://[::1]:5561?verify-key=x", "http://[::1]:5561/publish/", None),
]


@pytest.mark.parametrize(("url", "endpoint", "authorization"), ENDPOINTS)
def test_publish_endpoint(url: str, endpoint: str, authorization: str | None) -> None:
    assert publish_endpoint(url) == (endpoint, authorization)


@pytest.mark.parametrize(
    "url", ["", "localhost:5561", "ftp://h/", "http://", "http://h:99999", "http://h:x/"]
)
def test_publish_endpoint_rejects(url: str) -> None:
    with pytest.raises(ConfigError) as info:
        publish_endpoint(url)
    assert info.value.source == "GRIP URL"


_SECRET = "a-shared-secret-of-thirty-two-by"


@pytest.mark.parametrize(
    ("key", "secret"),
    [
        (_SECRET, _SECRET.encode()),
        ("base64:" + base64.b64encode(b"\x00" * 32).decode(), b"\x00" * 32),
    ],
)
def test_publish_endpoint_makes_a_jwt(key: str, secret: bytes) -> None:
    from urllib.parse import quote

    _, authorization = publish_endpoint(f"http://h:1/?iss=me&key={quote(key)}")
    assert authorization is not None and authorization.startswith("Bearer ")
    claims = jwt.decode(authorization.removeprefix("Bearer "), secret, algorithms=["HS256"])
    assert claims["iss"] == "me"
    assert isinstance(claims["exp"], int)


def test_publish_endpoint_short_jwt_key_is_accepted() -> None:
    _, authorization = publish_endpoint("http://h:1/?iss=me&key=short")
    assert authorization is not None
    with pytest.warns(jwt.InsecureKeyLengthWarning):  # warned when verifying, not when signing
        assert jwt.decode(authorization[7:], "short", algorithms=["HS256"])["iss"] == "me"
    with pytest.raises(ConfigError, match="its key is not valid base64"):
        publish_endpoint("http://h:1/?iss=me&key=base64:%21%21")
    with pytest.raises(ConfigError, match="its key is empty"):
        publish_endpoint("http://h:1/?iss=me&key=base64:")


def test_publish_response() -> None:
    assert PublishResponse(200, "OK", b"Published\n").text == "Published"
    assert PublishResponse(204, "No Content", b"").text == "204 No Content"
    assert PublishResponse(400, "Bad Request", b"a\n b \xff").text == "a b \ufffd"
    assert [PublishResponse(s, "", b"").ok for s in (199, 200, 299, 300)] == [
        False,
        True,
        True,
        False,
    ]


# --- publish: real requests to a loopback server ---------------------------------------------------


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class _Handler(BaseHTTPRequestHandler):
    server: CaptureServer

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.requests.append(
            Request("POST", self.path, {k.lower(): v for k, v in self.headers.items()}, body)
        )
        status, answer = self.server.answer
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class CaptureServer(HTTPServer):
    requests: list[Request]
    answer: tuple[int, bytes]

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        host = host.decode() if isinstance(host, bytes) else host
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _serve(server: CaptureServer) -> Iterator[CaptureServer]:
    server.requests, server.answer = [], (200, b"Published\n")
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        thread.join()
        server.server_close()


@pytest.fixture
def server() -> Iterator[CaptureServer]:
    yield from _serve(CaptureServer(("127.0.0.1", 0), _Handler))


def test_publish_end_to_end(capsys: pytest.CaptureFixture[str], server: CaptureServer) -> None:
    argv = ["publish", "test", "hello", "--url", server.url, "--timeout", "2.5"]
    code, out, err = _run(capsys, argv)
    assert (code, out, err) == (0, "Published\n", "")
    [request] = server.requests
    assert (request.method, request.path) == ("POST", "/publish/")
    assert request.headers["content-type"] == "application/json"
    assert request.headers["content-length"] == str(len(request.body))
    assert request.headers["user-agent"] == f"gripcore/{gripcore.__version__}"
    assert "authorization" not in request.headers
    assert json.loads(request.body) == {
        "items": [
            {
                "channel": "test",
                "formats": {
                    "http-response": {"body": "hello\n"},
                    "http-stream": {"content": "hello\n"},
                    "ws-message": {"content": "hello"},
                },
            }
        ]
    }


AUTH: list[tuple[list[str], str, str | None]] = [
    # (extra arguments, GRIP URL suffix, expected Authorization)
    (["--key", "tok"], "", "Bearer tok"),
    (["--bearer", "tok"], "?key=other", "Bearer tok"),
    (["--user", "u:p"], "", "Basic " + base64.b64encode(b"u:p").decode()),
    ([], "?key=fanout-token", "Bearer fanout-token"),
    ([], "/service/svc?key=k", "Bearer k"),
]


@pytest.mark.parametrize(("args", "suffix", "authorization"), AUTH)
def test_publish_authentication(
    capsys: pytest.CaptureFixture[str],
    server: CaptureServer,
    args: list[str],
    suffix: str,
    authorization: str | None,
) -> None:
    code, _, _ = _run(capsys, ["publish", "ch", "--hint", *args], {"GRIP_URL": server.url + suffix})
    assert code == 0
    [request] = server.requests
    assert request.headers.get("authorization") == authorization
    assert request.path == ("/service/svc/publish/" if "service" in suffix else "/publish/")


def test_publish_jwt_from_grip_url(
    capsys: pytest.CaptureFixture[str], server: CaptureServer
) -> None:
    grip_url = f"{server.url}?iss=pub&key={_SECRET}"
    assert _run(capsys, ["publish", "ch", "x", "--url", grip_url])[0] == 0
    token = server.requests[0].headers["authorization"].removeprefix("Bearer ")
    assert jwt.decode(token, _SECRET, algorithms=["HS256"])["iss"] == "pub"


def test_publish_server_error(capsys: pytest.CaptureFixture[str], server: CaptureServer) -> None:
    server.answer = (400, b"Invalid format: 'http-response' contains 'code' with invalid value\n")
    code, out, err = _run(capsys, ["publish", "ch", "hi", "--url", server.url])
    assert (code, out) == (1, "")
    assert err == (
        "gripcore publish: 400 Bad Request: Invalid format: 'http-response' contains 'code'"
        " with invalid value\n"
    )


def test_publish_empty_answer(capsys: pytest.CaptureFixture[str], server: CaptureServer) -> None:
    server.answer = (202, b"")
    assert _run(capsys, ["publish", "ch", "hi", "--url", server.url]) == (0, "202 Accepted\n", "")


def test_publish_over_ipv6(capsys: pytest.CaptureFixture[str]) -> None:
    class Server6(CaptureServer):
        address_family = socket.AF_INET6

    try:
        server6 = Server6(("::1", 0), _Handler)
    except OSError:
        pytest.skip("no IPv6 loopback on this machine")
    for server in _serve(server6):
        assert server.url.startswith("http://[::1]:")
        assert _run(capsys, ["publish", "ch", "hi", "--url", server.url])[0] == 0
        assert server.requests[0].headers["host"] == server.url.removeprefix("http://")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_publish_connection_refused(capsys: pytest.CaptureFixture[str]) -> None:
    url = f"http://127.0.0.1:{_free_port()}"
    code, out, err = _run(capsys, ["publish", "ch", "hi"], {"GRIP_URL": url})
    assert (code, out) == (1, "")
    assert err == (
        f"gripcore publish: cannot connect to {url}/publish/: connection refused"
        " (is the server up?)\n"
    )


def test_publish_header_value_refused(capsys: pytest.CaptureFixture[str]) -> None:
    url = f"http://127.0.0.1:{_free_port()}"
    code, _, err = _run(capsys, ["publish", "ch", "hi", "--url", url, "--key", "a\nb"])
    assert code == 1
    assert err.startswith(f"gripcore publish: publishing to {url}/publish/ failed: ")
    assert err.endswith("(ValueError)\n")


@pytest.fixture
def garbage_server() -> Iterator[str]:
    """A server that answers anything with a line that is not HTTP."""
    listener = socket.create_server(("127.0.0.1", 0))

    def answer() -> None:
        connection, _ = listener.accept()
        with connection:
            connection.recv(65536)
            connection.sendall(b"NOT HTTP\r\n\r\n")

    thread = threading.Thread(target=answer)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        thread.join()
        listener.close()


def test_publish_answer_that_is_not_http(
    capsys: pytest.CaptureFixture[str], garbage_server: str
) -> None:
    code, _, err = _run(capsys, ["publish", "ch", "hi", "--url", garbage_server])
    assert code == 1
    assert err.startswith(f"gripcore publish: publishing to {garbage_server}/publish/ failed: ")
    assert "(BadStatusLine)" in err


def test_post_publish_https_to_a_plain_server(server: CaptureServer) -> None:
    https = server.url.replace("http://", "https://") + "/publish/"
    with pytest.raises(ssl.SSLError):
        post_publish(https, b"{}", timeout=5.0)


def test_post_publish_keeps_the_query(server: CaptureServer) -> None:
    response = post_publish(server.url + "/publish/?x=1", b"{}", headers={"X-Extra": "1"})
    assert response == PublishResponse(200, "OK", b"Published\n")
    [request] = server.requests
    assert (request.path, request.headers["x-extra"], request.body) == ("/publish/?x=1", "1", b"{}")


def test_post_publish_reads_a_bounded_answer(
    server: CaptureServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_cli, "MAX_RESPONSE_BODY", 4)
    server.answer = (200, b"0123456789")
    assert post_publish(server.url + "/publish/", b"{}").body == b"0123"


# --- publish --spec tcp://: ZeroMQ PUSH to a PULL socket (push_in_spec) ----------------------


def test_publish_to_a_zeromq_pull_socket(capsys: pytest.CaptureFixture[str]) -> None:
    zmq = pytest.importorskip("zmq")
    from gripcore._zmqin import decode_pull_message

    context = zmq.Context()
    pull = context.socket(zmq.PULL)
    try:
        pull.linger = 0
        pull.rcvtimeo = 5000
        pull.bind("tcp://127.0.0.1:*")
        spec = pull.last_endpoint.decode()
        code, out, err = _run(capsys, ["publish", "news", "hello", "--id", "7", "--spec", spec])
        assert (code, out, err) == (0, "Published\n", "")
        item = decode_pull_message([pull.recv()])
        assert (item.channel, item.id) == ("news", "7")
        assert item.http_stream is not None and item.http_stream.content == b"hello\n"
    finally:
        pull.close()
        context.term()


def test_publish_to_a_zeromq_spec_nobody_reads(capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("zmq")
    argv = [
        "publish",
        "news",
        "hi",
        "--spec",
        "ipc:///nonexistent/gripcore-test",
        "--timeout",
        "0.05",
    ]
    code, out, err = _run(capsys, argv)
    assert (code, out) == (1, "")
    assert err == (
        "gripcore publish: publishing to ipc:///nonexistent/gripcore-test failed: "
        "no ZeroMQ peer took the message within 0.05 s\n"
    )
    code, _, err = _run(capsys, ["publish", "news", "hi", "--spec", "tcp://nohost"])
    assert code == 1 and "publishing to tcp://nohost failed: ZeroMQ: " in err
