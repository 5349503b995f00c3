"""Tests of `gripcore._config`: defaults, listen addresses, the three sources and their order,
every option's validation with its source, TOML and environment parsing, and the TOML writer."""

from __future__ import annotations

import dataclasses
import os.path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gripcore._config import (
    DEFAULT_LISTEN,
    DEFAULT_PUBLISH_LISTEN,
    OPTIONS,
    Config,
    ConfigError,
    dump_config,
    format_listen,
    load_config,
    parse_listen,
)
from gripcore._errors import LocalProtocolError

from .hypothesis_support import examples

# --- defaults ------------------------------------------------------------------------------------

DEFAULTS: list[tuple[str, object]] = [
    ("listen", (("0.0.0.0", 7999),)),
    ("tls_listen", ()),
    ("tls_cert", None),
    ("tls_key", None),
    ("publish_listen", ("127.0.0.1", 5561)),
    ("routes_file", None),
    ("routes", ()),
    ("sig_key", "changeme"),
    ("sig_iss", "pushpin"),
    ("upstream_key", None),
    ("publish_key", None),
    ("publish_iss", None),
    ("allow_link_host", ()),
    ("log_level", "info"),
    ("log_format", "text"),
    ("debug", False),
    ("allow_compression", False),
    ("engine", "memory"),
    ("history", 0),
    ("engine_linger", 5.0),
    ("push_in_spec", None),
    ("push_in_sub_spec", None),
    ("command_spec", None),
    ("adapter", "asyncio"),
    ("workers", 1),
    ("max_connections", 50_000),
    ("max_publish_connections", 128),
    ("max_connections_per_ip", 0),
    ("new_connections_per_ip", 0.0),
    ("trusted_proxy", ()),
    ("max_request_header_size", 8192),
    ("max_request_body", 100_000),
    ("max_publish_body", 1_000_000),
    ("max_content_size", 32_767),
    ("max_channels_per_connection", 20),
    ("max_output_buffer", 1_048_576),
    ("id_cache_ttl", 60.0),
    ("message_wait", 5.0),
    ("origin_connect_timeout", 5.0),
    ("origin_response_timeout", 60.0),
    ("client_header_timeout", 60.0),
    ("keepalive_timeout", 75.0),
    ("linger_timeout", 5.0),
    ("shutdown_grace", 10.0),
    ("slow_consumer_policy", "close"),
]


@pytest.mark.parametrize(("field", "expected"), DEFAULTS)
def test_default(field: str, expected: object) -> None:
    assert getattr(Config(), field) == expected
    assert load_config({}, {}) == Config()


def test_every_field_has_one_option_and_a_default() -> None:
    names = [f.name for f in dataclasses.fields(Config)]
    assert names == [option.field for option in OPTIONS]
    assert names == [field for field, _ in DEFAULTS]
    flags = [option.flag for option in OPTIONS]
    assert len(set(flags)) == len(flags)
    assert all(
        option.env == "GRIPCORE_" + option.flag.upper().replace("-", "_") for option in OPTIONS
    )


def test_config_is_frozen_and_an_error_is_local() -> None:
    config = Config()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.history = 3  # type: ignore[misc]
    err = ConfigError("bad", source="option --x")
    assert isinstance(err, LocalProtocolError)
    assert (str(err), err.source, err.reason) == ("option --x: bad", "option --x", "bad")
    assert str(ConfigError("bad")) == "bad"


def test_config_normalises_lists_and_whole_seconds() -> None:
    config = Config(listen=[["::1", 80]], routes=["* a:1"], message_wait=2)  # type: ignore[arg-type]
    assert config.listen == (("::1", 80),)
    assert config.routes == ("* a:1",)
    assert config.message_wait == 2.0 and isinstance(config.message_wait, float)


# --- listen addresses ----------------------------------------------------------------------------

LISTEN_VECTORS: list[tuple[str, str, tuple[str, int]]] = [
    ("7999", "0.0.0.0", ("0.0.0.0", 7999)),
    ("  7999 ", "127.0.0.1", ("127.0.0.1", 7999)),
    ("0", "0.0.0.0", ("0.0.0.0", 0)),
    ("65535", "0.0.0.0", ("0.0.0.0", 65535)),
    ("127.0.0.1:8000", "0.0.0.0", ("127.0.0.1", 8000)),
    ("localhost:80", "0.0.0.0", ("localhost", 80)),
    ("example.com.:80", "0.0.0.0", ("example.com.", 80)),
    ("my-host.internal:1", "0.0.0.0", ("my-host.internal", 1)),
    ("[::1]:7999", "0.0.0.0", ("::1", 7999)),
    ("[::]:7999", "0.0.0.0", ("::", 7999)),
    ("[2001:db8::1]:443", "0.0.0.0", ("2001:db8::1", 443)),
    ("[::ffff:127.0.0.1]:5", "0.0.0.0", ("::ffff:127.0.0.1", 5)),
]

BAD_LISTEN: list[tuple[str, str]] = [
    ("", "the address is empty"),
    ("   ", "the address is empty"),
    ("http", "port 'http' is not a number"),
    ("-1", "port '-1' is not a number"),
    ("+80", "port '+80' is not a number"),
    ("123456", "port '123456' is not a number"),
    ("65536", "port 65536 is out of range"),
    ("99999", "port 99999 is out of range"),
    (":7999", "the host is empty"),
    ("host:", "port '' is not a number"),
    ("::1", "write an IPv6 address in brackets"),
    ("::1:7999", "write an IPv6 address in brackets"),
    ("[::1]", "needs a port after ']'"),
    ("[::1]7999", "needs a port after ']'"),
    ("[::1:7999", "has '[' without ']'"),
    ("[example.com]:80", "is not an IPv6 address"),
    ("[127.0.0.1]:80", "is not an IPv6 address"),
    ("my_host:80", "'my_host' is not an IP address or a host name"),
    ("-host:80", "is not an IP address or a host name"),
    ("a..b:80", "is not an IP address or a host name"),
    ("256.1.1.1:80", "'256.1.1.1' is not an IP address or a host name"),
    ("1.2.3:80", "is not an IP address or a host name"),
    ("x" * 64 + ".com:80", "is not an IP address or a host name"),
    (("a" * 60 + ".") * 5 + "com:80", "is not an IP address or a host name"),
]


@pytest.mark.parametrize(("text", "default_host", "expected"), LISTEN_VECTORS)
def test_parse_listen(text: str, default_host: str, expected: tuple[str, int]) -> None:
    assert parse_listen(text, default_host) == expected
    assert parse_listen(format_listen(expected), "ignored") == expected


@pytest.mark.parametrize(("text", "reason"), BAD_LISTEN)
def test_parse_listen_rejects(text: str, reason: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_listen(text, "0.0.0.0")
    assert reason in str(info.value)
    assert info.value.source == ""


def test_format_listen() -> None:
    assert format_listen(("::1", 80)) == "[::1]:80"
    assert format_listen(("localhost", 80)) == "localhost:80"


_hosts = st.one_of(
    st.ip_addresses().map(str),
    st.from_regex(r"[a-z][a-z0-9-]{0,20}[a-z0-9](\.[a-z][a-z0-9]{0,10}){0,3}", fullmatch=True),
)
_addresses = st.tuples(_hosts, st.integers(0, 65535))


@settings(max_examples=examples(50))
@given(_addresses)
def test_format_then_parse_listen_round_trips(address: tuple[str, int]) -> None:
    assert parse_listen(format_listen(address), "0.0.0.0") == address


@given(st.text(max_size=40))
def test_parse_listen_raises_only_config_error(text: str) -> None:
    try:
        host, port = parse_listen(text, "0.0.0.0")
    except ConfigError as exc:
        assert exc.reason
    else:
        assert 0 <= port <= 65535 and host


# --- precedence ----------------------------------------------------------------------------------

# (file value, environment value, flag value, expected max_connections); None = not given.
PRECEDENCE: list[tuple[int | None, str | None, str | None, int]] = [
    (None, None, None, 50_000),
    (10, None, None, 10),
    (None, "20", None, 20),
    (None, None, "30", 30),
    (10, "20", None, 20),
    (10, None, "30", 30),
    (None, "20", "30", 30),
    (10, "20", "30", 30),
]


@pytest.mark.parametrize(("file_value", "env_value", "flag_value", "expected"), PRECEDENCE)
def test_precedence(
    file_value: int | None, env_value: str | None, flag_value: str | None, expected: int
) -> None:
    text = f"max-connections = {file_value}\n" if file_value is not None else ""
    environ = {"GRIPCORE_MAX_CONNECTIONS": env_value} if env_value is not None else {}
    argv = {"max_connections": flag_value}
    config = load_config(argv, environ, text, "gripcore.toml")
    assert config.max_connections == expected


def test_a_higher_source_replaces_a_list() -> None:
    text = 'listen = ["7000", "127.0.0.1:7001"]\nroute = ["* a:1", "* b:2"]\n'
    from_file = load_config({}, {}, text, "g.toml")
    assert from_file.listen == (("0.0.0.0", 7000), ("127.0.0.1", 7001))
    assert from_file.routes == ("* a:1", "* b:2")
    environ = {"GRIPCORE_LISTEN": "8000", "GRIPCORE_ROUTE": "* c:3"}
    from_env = load_config({}, environ, text, "g.toml")
    assert from_env.listen == (("0.0.0.0", 8000),)
    assert from_env.routes == ("* c:3",)
    argv = {"listen": ["9000", "[::1]:9001"], "routes": ["* d:4"]}
    from_flags = load_config(argv, environ, text, "g.toml")
    assert from_flags.listen == (("0.0.0.0", 9000), ("::1", 9001))
    assert from_flags.routes == ("* d:4",)


def test_flags_not_given_keep_lower_sources() -> None:
    argv: dict[str, Any] = {option.field: None for option in OPTIONS}
    config = load_config(argv, {"GRIPCORE_DEBUG": "yes"}, "sig-iss = 'me'", "g.toml")
    assert (config.debug, config.sig_iss) == (True, "me")
    assert load_config({"debug": False}, {"GRIPCORE_DEBUG": "yes"}).debug is False


# --- every option's validation, from every source --------------------------------------------------

# (field, bad text value, what the message says). Text works from a flag, the environment and a
# TOML string alike.
BAD_VALUES: list[tuple[str, str, str]] = [
    ("listen", "localhost:http", "port 'http' is not a number"),
    ("listen", "7999,,8000", "the address is empty"),
    ("listen", "7999,7999", "0.0.0.0:7999 is listed twice"),
    ("publish_listen", "[::1]", "needs a port after ']'"),
    ("publish_listen", "0.0.0.0:7999", "0.0.0.0:7999 is also a client listener (listen)"),
    ("routes_file", "routes\nfile", "must not contain control characters"),
    ("routes", "* a:1\x00", "must not contain control characters"),
    ("sig_key", "sec\x1bret", "must not contain control characters"),
    ("sig_iss", "", "must not be empty"),
    ("sig_iss", "a\nb", "must not contain control characters"),
    ("publish_key", "tok\x7fen", "must not contain control characters"),
    ("upstream_key", "k\ney", "must not contain control characters"),
    ("publish_iss", "a\nb", "must not contain control characters"),
    ("allow_link_host", "example.com", "is not HOST:PORT"),
    ("max_connections_per_ip", "-1", "must be an integer >= 0, got -1"),
    ("new_connections_per_ip", "-0.5", "must be a number a second >= 0, got -0.5"),
    ("new_connections_per_ip", "fast", "must be a number a second, got 'fast'"),
    ("trusted_proxy", "10.0.0.0/33", "'10.0.0.0/33' is not an IP address or network"),
    ("log_level", "verbose", "must be one of error, warning, info, debug; got 'verbose'"),
    ("log_format", "xml", "must be one of text, json; got 'xml'"),
    ("tls_listen", "host:", "port '' is not a number from 0 to 65535"),
    ("tls_cert", "a\nb", "must not contain control characters"),
    ("tls_key", "a\nb", "must not contain control characters"),
    ("log_level", "4", "must be one of error, warning, info, debug; got '4'"),
    ("debug", "maybe", "must be true or false (or 1/0, yes/no, on/off), got 'maybe'"),
    ("allow_compression", "sometimes", "must be true or false"),
    ("engine", "postgres://db", "must be 'memory' or a redis://HOST[:PORT][/DB] URL"),
    ("engine", "redis://", "must be 'memory' or a redis://HOST[:PORT][/DB] URL"),
    ("engine", "redis://host:port/0", "must be 'memory' or a redis://HOST[:PORT][/DB] URL"),
    ("engine", "", "must not be empty"),
    ("history", "-1", "must be an integer >= 0, got -1"),
    ("history", "lots", "must be an integer, got 'lots'"),
    ("engine", "redis://host/db0", "must be 'memory' or a redis://HOST[:PORT][/DB] URL"),
    ("engine", "redis://host/0?db=1", "must be 'memory' or a redis://HOST[:PORT][/DB] URL"),
    ("engine", "redis+sentinel://s1:26379", "or redis+sentinel://HOST:PORT[,...]/MASTER_NAME"),
    ("engine", "redis+cluster://n1/0", "redis+cluster://HOST:PORT[,...]), got"),
    ("engine_linger", "-1", "must be a number of seconds >= 0, got -1.0"),
    ("engine_linger", "soon", "must be a number of seconds, got 'soon'"),
    ("push_in_spec", "127.0.0.1:5560", "must be a ZeroMQ tcp://HOST:PORT or ipc://PATH spec"),
    ("push_in_spec", "tcp://", "must be a ZeroMQ tcp://HOST:PORT or ipc://PATH spec"),
    ("push_in_sub_spec", "http://x:1", "must be a ZeroMQ tcp://HOST:PORT or ipc://PATH spec"),
    ("push_in_sub_spec", "tcp://a\n:1", "must not contain control characters"),
    ("command_spec", "5563", "must be a ZeroMQ tcp://HOST:PORT or ipc://PATH spec"),
    ("adapter", "trio", "must be one of asyncio, gevent; got 'trio'"),
    ("workers", "0", "must be an integer >= 1, got 0"),
    ("workers", "two", "must be an integer, got 'two'"),
    ("workers", "257", "must be an integer <= 256, got 257"),
    ("max_connections", "0", "must be an integer >= 1, got 0"),
    ("max_connections", "1.5", "must be an integer, got '1.5'"),
    ("max_connections", "9" * 31, "must be an integer, got"),
    ("max_request_header_size", "-5", "must be an integer >= 1, got -5"),
    ("max_request_body", "", "must be an integer, got ''"),
    ("max_publish_body", "1e6", "must be an integer, got '1e6'"),
    ("max_content_size", "0", "must be an integer >= 1, got 0"),
    ("max_channels_per_connection", "0", "must be an integer >= 1, got 0"),
    ("max_output_buffer", "x", "must be an integer, got 'x'"),
    ("id_cache_ttl", "-1", "must be a number of seconds >= 0, got -1.0"),
    ("id_cache_ttl", "soon", "must be a number of seconds, got 'soon'"),
    ("message_wait", "nan", "must be a number of seconds >= 0, got nan"),
    ("origin_connect_timeout", "0", "must be a number of seconds > 0, got 0.0"),
    ("origin_response_timeout", "inf", "must be a number of seconds > 0, got inf"),
    ("max_publish_connections", "0", "must be an integer >= 1, got 0"),
    ("client_header_timeout", "0", "must be a number of seconds > 0, got 0.0"),
    ("keepalive_timeout", "-1", "must be a number of seconds > 0, got -1.0"),
    ("linger_timeout", "x", "must be a number of seconds, got 'x'"),
    ("shutdown_grace", "-0.5", "must be a number of seconds >= 0, got -0.5"),
    ("slow_consumer_policy", "drop-newest", "must be one of close, drop-oldest"),
]

_OPTION = {option.field: option for option in OPTIONS}


def test_bad_values_cover_every_option() -> None:
    assert {field for field, _, _ in BAD_VALUES} == set(_OPTION)


def _toml_string(text: str) -> str:
    return (
        '"'
        + "".join(c if c.isprintable() and c not in '"\\' else f"\\u{ord(c):04x}" for c in text)
        + '"'
    )


@pytest.mark.parametrize(("field", "value", "reason"), BAD_VALUES)
def test_bad_value_from_a_flag(field: str, value: str, reason: str) -> None:
    option = _OPTION[field]
    raw: object = [value] if option.repeatable else value
    with pytest.raises(ConfigError) as info:
        load_config({field: raw}, {})
    assert str(info.value) == f"option --{option.flag}: {reason}" or (
        str(info.value).startswith(f"option --{option.flag}: ") and reason in str(info.value)
    )


@pytest.mark.parametrize(("field", "value", "reason"), BAD_VALUES)
def test_bad_value_from_the_environment(field: str, value: str, reason: str) -> None:
    option = _OPTION[field]
    with pytest.raises(ConfigError) as info:
        load_config({}, {option.env: value})
    assert str(info.value).startswith(f"environment variable {option.env}: ")
    assert reason in info.value.reason


@pytest.mark.parametrize(("field", "value", "reason"), BAD_VALUES)
def test_bad_value_from_the_config_file(field: str, value: str, reason: str) -> None:
    option = _OPTION[field]
    text = f"# gripcore\n\n{option.flag} = {_toml_string(value)}\n"
    with pytest.raises(ConfigError) as info:
        load_config({}, {}, text, "gripcore.toml")
    assert info.value.source == f"gripcore.toml:3: {option.flag}"
    assert reason in info.value.reason


# (field, bad typed value, what the message says) for a hand-built Config.
BAD_TYPED: list[tuple[str, object, str]] = [
    ("listen", (), "needs at least one address"),
    ("listen", "0.0.0.0:7999", "must be a list of (host, port) pairs, got a string"),
    ("listen", (("0.0.0.0",),), "must be a (host, port) pair, got a list"),
    ("listen", ((1, 80),), "host must be a string, got an integer"),
    ("listen", (("::1", "80"),), "port must be an integer, got a string"),
    ("listen", (("::1", True),), "port must be an integer, got a boolean"),
    ("listen", (("::1", 70000),), "port 70000 is out of range"),
    ("listen", (("::1", 0), ("::1", 0), ("::1", 1)), ""),
    ("publish_listen", "127.0.0.1:5561", "must be a (host, port) pair, got a string"),
    ("publish_listen", ("0.0.0.0", 7999), "0.0.0.0:7999 is also a client listener"),
    ("routes_file", "", "must not be empty"),
    ("routes_file", 3, "must be a string, got an integer"),
    ("routes", "* a:1", "must be a list of route lines, got a string"),
    ("routes", ("  ",), "a route line is blank"),
    ("routes", ("* a:1\ud800",), "must be valid UTF-8 text"),
    ("sig_key", "", "must not be empty (leave it unset instead)"),
    ("sig_key", b"secret", "must be a string, got bytes"),
    ("sig_iss", None, "must be a string, got NoneType"),
    ("publish_key", {"k": 1}, "must be a string, got a table"),
    ("log_level", "INFO", "must be one of error, warning, info, debug; got 'INFO'"),
    ("log_level", 2, "must be one of error, warning, info, debug; got an integer"),
    ("debug", 1, "must be true or false, got an integer"),
    ("engine", "redis://h:99999", "must be 'memory' or a redis://"),
    ("history", True, "must be an integer >= 0, got a boolean"),
    ("history", 1.0, "must be an integer >= 0, got a number"),
    ("adapter", "gevent ", "must be one of asyncio, gevent; got 'gevent '"),
    ("workers", 0, "must be an integer >= 1, got 0"),
    ("workers", 1000, "must be an integer <= 256, got 1000"),
    ("max_connections", -1, "must be an integer >= 1, got -1"),
    ("trusted_proxy", 5, "must be a list of addresses or networks, got an integer"),
    ("max_output_buffer", "1", "must be an integer >= 1, got a string"),
    ("id_cache_ttl", "60", "must be a number of seconds >= 0, got a string"),
    ("message_wait", False, "must be a number of seconds >= 0, got a boolean"),
    ("origin_connect_timeout", float("-inf"), "must be a number of seconds > 0, got -inf"),
    ("shutdown_grace", [], "must be a number of seconds >= 0, got a list"),
    ("slow_consumer_policy", "CLOSE", "must be one of close, drop-oldest; got 'CLOSE'"),
]


@pytest.mark.parametrize(("field", "value", "reason"), BAD_TYPED)
def test_bad_typed_value(field: str, value: object, reason: str) -> None:
    if reason == "":
        # Port 0 (any free port) may repeat; a real port may not.
        assert Config(**{field: value}).listen[0] == ("::1", 0)  # type: ignore[arg-type]
        return
    with pytest.raises(ConfigError) as info:
        Config(**{field: value})  # type: ignore[arg-type]
    assert info.value.source == f"Config.{field}"
    assert reason in info.value.reason


def test_a_long_value_is_shortened_in_messages() -> None:
    with pytest.raises(ConfigError) as info:
        load_config({"adapter": "x" * 500}, {})
    assert len(str(info.value)) < 150
    assert "..." in str(info.value)


def test_secrets_are_never_echoed() -> None:
    for field in ("sig_key", "publish_key", "upstream_key"):
        with pytest.raises(ConfigError) as info:
            load_config({field: "hunter2\n"}, {})
        assert "hunter2" not in str(info.value)


# --- parsing details per source ------------------------------------------------------------------

GOOD_TEXT: list[tuple[str, str, object]] = [
    (
        "listen",
        "7999, 127.0.0.1:8000 ,[::1]:8001",
        (("0.0.0.0", 7999), ("127.0.0.1", 8000), ("::1", 8001)),
    ),
    ("listen", "0,0", (("0.0.0.0", 0), ("0.0.0.0", 0))),
    ("publish_listen", "5562", ("127.0.0.1", 5562)),
    ("publish_listen", "[::1]:5561", ("::1", 5561)),
    ("routes_file", "/etc/gripcore/routes", "/etc/gripcore/routes"),
    ("routes_file", "", None),
    (
        "routes",
        "* a:1\n\n  # comment\n  b.example c:2,over_http  \n",
        ("* a:1", "b.example c:2,over_http"),
    ),
    ("routes", "", ()),
    ("routes", "* a:1\r\n* b\x85c:2\r* d\u2028e:3", ("* a:1", "* b\x85c:2", "* d\u2028e:3")),
    ("sig_key", "base64:c2VjcmV0", "base64:c2VjcmV0"),
    ("sig_key", "", None),
    ("sig_key", "none", None),
    ("sig_key", "NONE", None),
    ("sig_iss", "me", "me"),
    ("publish_key", "tok\ten", "tok\ten"),
    ("publish_iss", "my-app", "my-app"),
    ("allow_link_host", "feeds.example:8080", ("feeds.example:8080",)),
    ("log_level", "DEBUG", "debug"),
    ("log_level", " warn ", "warning"),
    ("log_level", "0", "error"),
    ("log_level", "3", "debug"),
    ("debug", "1", True),
    ("debug", "On", True),
    ("debug", " no ", False),
    ("debug", "FALSE", False),
    ("engine", "redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
    ("engine", "rediss://user:pw@[::1]/2", "rediss://user:pw@[::1]/2"),
    ("history", "100", 100),
    ("engine", "redis://h/3?prefix=app:", "redis://h/3?prefix=app:"),
    (
        "engine",
        "redis+sentinel://s1:26379,s2/mymaster/1",
        "redis+sentinel://s1:26379,s2/mymaster/1",
    ),
    ("engine", "redis+cluster://n1:7000,n2:7001", "redis+cluster://n1:7000,n2:7001"),
    ("engine_linger", "0", 0.0),
    ("engine_linger", "0.5", 0.5),
    ("push_in_spec", "tcp://127.0.0.1:5560", "tcp://127.0.0.1:5560"),
    ("push_in_spec", "", None),
    ("push_in_sub_spec", "ipc:///run/gripcore/sub", "ipc:///run/gripcore/sub"),
    ("command_spec", "tcp://*:5563", "tcp://*:5563"),
    ("adapter", "GEVENT", "gevent"),
    ("workers", " 2 ", 2),
    ("workers", "256", 256),
    ("max_connections", " 1_000 ", 1000),
    ("trusted_proxy", "10.0.0.0/8\n::1, 127.0.0.1", ("10.0.0.0/8", "::1", "127.0.0.1")),
    ("new_connections_per_ip", "2.5", 2.5),
    ("max_connections", "+5", 5),
    ("id_cache_ttl", "0", 0.0),
    ("message_wait", "2.5", 2.5),
    ("origin_connect_timeout", "1e-3", 0.001),
    ("slow_consumer_policy", "Drop-Oldest", "drop-oldest"),
]


@pytest.mark.parametrize(("field", "text", "expected"), GOOD_TEXT)
def test_good_text_value(field: str, text: str, expected: object) -> None:
    option = _OPTION[field]
    from_env = load_config({}, {option.env: text})
    assert getattr(from_env, field) == expected
    from_flag = load_config({field: [text] if option.repeatable else text}, {})
    assert getattr(from_flag, field) == expected


def test_environment_ignores_other_variables() -> None:
    environ = {
        "PATH": "/bin",
        "GRIP_URL": "http://x",
        "GRIPCORE_CONFIG": "/etc/g.toml",
        "GRIPCORE_NO_EXTENSIONS": "1",
        "GRIPCORE_REQUIRE_EXTENSIONS": "1",
        "gripcore_listen": "1",
    }
    assert load_config({}, environ) == Config()


# What Kubernetes puts into every pod's environment when a Service is named `gripcore`.
KUBERNETES_SERVICE_ENV = {
    "GRIPCORE_PORT": "tcp://10.0.0.11:7999",
    "GRIPCORE_PORT_7999_TCP": "tcp://10.0.0.11:7999",
    "GRIPCORE_PORT_7999_TCP_ADDR": "10.0.0.11",
    "GRIPCORE_PORT_7999_TCP_PORT": "7999",
    "GRIPCORE_PORT_7999_TCP_PROTO": "tcp",
    "GRIPCORE_SERVICE_HOST": "10.0.0.11",
    "GRIPCORE_SERVICE_PORT": "7999",
}


def test_unknown_environment_variables_are_one_warning() -> None:
    warnings: list[str] = []
    environ = {**KUBERNETES_SERVICE_ENV, "GRIPCORE_HISTORY": "3"}
    config = load_config({}, environ, on_warning=warnings.append)
    assert config == Config(history=3)
    [warning] = warnings
    names = ", ".join(sorted(KUBERNETES_SERVICE_ENV))
    assert warning.startswith(f"ignoring unknown environment variables {names}: not gripcore ")
    assert "Kubernetes" in warning
    # without on_warning, a library caller gets the same Config and no message
    assert load_config({}, environ) == config


def test_unknown_environment_variable_close_to_an_option_is_named() -> None:
    warnings: list[str] = []
    assert load_config({}, {"GRIPCORE_MAX_CONECTIONS": "5"}, on_warning=warnings.append) == Config()
    assert warnings[0].startswith(
        "ignoring unknown environment variable GRIPCORE_MAX_CONECTIONS "
        "(did you mean GRIPCORE_MAX_CONNECTIONS?): "
    )


def test_unknown_argv_field() -> None:
    with pytest.raises(ConfigError, match="unknown option field 'config'"):
        load_config({"config": "x"}, {})


# --- the config file -----------------------------------------------------------------------------

FULL_TOML = """\
# every option, in both key spellings
listen = ["7999", "127.0.0.1:8000", 8001]
publish_listen = 5562
routes = "routes"
route = ["* 127.0.0.1:8080,over_http", "example.com 10.0.0.1:80"]
sig-key = "file:key.pem"
sig_iss = "me"
publish-key = "s3cret"
log_level = 3
debug = true
engine = "redis://127.0.0.1:6379/0"
history = 10
adapter = "gevent"
workers = 3
max-connections = 1_000
max_request_header_size = 16384
max-request-body = 200000
max-publish-body = 2000000
max-content-size = 65536
max-channels-per-connection = 50
max-output-buffer = 4194304
id-cache-ttl = 0
message-wait = 2.5
origin-connect-timeout = 1
origin-response-timeout = 30.0
shutdown-grace = 0.5
slow-consumer-policy = "drop-oldest"
"""


def test_full_config_file() -> None:
    base = os.path.join("/etc", "gripcore")
    config = load_config({}, {}, FULL_TOML, os.path.join(base, "gripcore.toml"))
    assert config == Config(
        listen=(("0.0.0.0", 7999), ("127.0.0.1", 8000), ("0.0.0.0", 8001)),
        publish_listen=("127.0.0.1", 5562),
        routes_file=os.path.join(base, "routes"),
        routes=("* 127.0.0.1:8080,over_http", "example.com 10.0.0.1:80"),
        sig_key="file:" + os.path.join(base, "key.pem"),
        sig_iss="me",
        publish_key="s3cret",
        log_level="debug",
        debug=True,
        engine="redis://127.0.0.1:6379/0",
        history=10,
        adapter="gevent",
        workers=3,
        max_connections=1000,
        max_request_header_size=16384,
        max_request_body=200_000,
        max_publish_body=2_000_000,
        max_content_size=65536,
        max_channels_per_connection=50,
        max_output_buffer=4_194_304,
        id_cache_ttl=0.0,
        message_wait=2.5,
        origin_connect_timeout=1.0,
        origin_response_timeout=30.0,
        shutdown_grace=0.5,
        slow_consumer_policy="drop-oldest",
    )


RELATIVE: list[tuple[str, str | None, str, str | None]] = [
    # (routes value, file name, expected routes_file, expected sig_key for "file:k.pem")
    ("routes", "/etc/g/g.toml", "/etc/g/routes", "file:/etc/g/k.pem"),
    ("/abs/routes", "/etc/g/g.toml", "/abs/routes", "file:/etc/g/k.pem"),
    ("routes", "g.toml", "routes", "file:k.pem"),
    ("routes", None, "routes", "file:k.pem"),
]


@pytest.mark.parametrize(("routes", "file_name", "expected", "sig_key"), RELATIVE)
def test_relative_paths_follow_the_config_file(
    routes: str, file_name: str | None, expected: str, sig_key: str
) -> None:
    text = f'routes = "{routes}"\nsig-key = "file:k.pem"\n'
    config = load_config({}, {}, text, file_name)
    assert (config.routes_file, config.sig_key) == (expected, sig_key)
    # Paths given by flags or the environment are the caller's own, relative to its directory.
    assert load_config({"routes_file": "routes"}, {}).routes_file == "routes"
    keep = ["sig-key = 'file:/k.pem'", "sig-key = 'k.pem'", "sig-key = 'file:'"]
    assert [load_config({}, {}, t, file_name).sig_key for t in keep] == [
        "file:/k.pem",
        "k.pem",
        "file:",
    ]


BAD_FILES: list[tuple[str, str, str]] = [
    ("listen = [", "g.toml", "not valid TOML: "),
    ("a = 1\na = 2\n", "g.toml", "not valid TOML: "),
    ("max-conections = 5\n", "g.toml:1", "unknown key 'max-conections' (known keys: listen, "),
    ("\n\n[serve]\nlisten = 1\n", "g.toml:3", "unknown key 'serve'"),
    (
        "history = 1\nmax_connections = 1\nmax-connections = 2\n",
        "g.toml:3: max-connections",
        "given twice (also as 'max_connections')",
    ),
    ('"history" = true\n', "g.toml:1: history", "must be an integer >= 0, got a boolean"),
    ("'debug' = 1\n", "g.toml:1: debug", "must be true or false, got an integer"),
    ("listen = [true]\n", "g.toml:1: listen", "must be a [HOST:]PORT string, got a boolean"),
    ("listen = []\n", "g.toml:1: listen", "needs at least one address"),
    ("listen = 70000\n", "g.toml:1: listen", "port 70000 is out of range"),
    (
        "publish-listen = 1.5\n",
        "g.toml:1: publish-listen",
        "must be a [HOST:]PORT string, got a number",
    ),
    ("route = [1]\n", "g.toml:1: route", "must be a string, got an integer"),
    ("routes = []\n", "g.toml:1: routes", "must be a string, got a list"),
    ("sig-iss = 2020-01-01\n", "g.toml:1: sig-iss", "must be a string, got date"),
    (
        "message-wait = [1]\n",
        "g.toml:1: message-wait",
        "must be a number of seconds >= 0, got a list",
    ),
    ("log-level = 7\n", "g.toml:1: log-level", "got '7'"),
    ("log-level = true\n", "g.toml:1: log-level", "got a boolean"),
    ("adapter = 1\n", "g.toml:1: adapter", "got an integer"),
    ("a.b = 1\n", "g.toml", "unknown key 'a'"),
]


@pytest.mark.parametrize(("text", "source", "reason"), BAD_FILES)
def test_bad_config_file(text: str, source: str, reason: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config({}, {}, text, "g.toml")
    assert info.value.source == source
    assert info.value.reason.startswith(reason) or reason in info.value.reason


def test_config_file_without_a_name() -> None:
    with pytest.raises(ConfigError) as info:
        load_config({}, {}, "history = -1\n", None)
    assert str(info.value) == "config file:1: history: must be an integer >= 0, got -1"
    with pytest.raises(ConfigError, match=r"^config file: not valid TOML"):
        load_config({}, {}, "=", None)


def test_cross_check_names_both_sources() -> None:
    with pytest.raises(ConfigError) as info:
        load_config({"publish_listen": "7999"}, {}, 'listen = ["127.0.0.1:7999"]', "g.toml")
    assert info.value.source == "option --publish-listen and g.toml:1: listen"
    # Different hosts, or port 0, do not clash.
    assert load_config({"publish_listen": "0.0.0.0:5561"}, {}).publish_listen == ("0.0.0.0", 5561)
    both_any = load_config({"publish_listen": "0.0.0.0:0", "listen": ["0"]}, {})
    assert both_any.publish_listen == both_any.listen[0]


# --- writing the config back out -----------------------------------------------------------------

_text = st.text(st.characters(blacklist_categories=["Cs"]), min_size=1, max_size=12).filter(
    lambda s: not any((ord(c) < 0x20 and c != "\t") or ord(c) == 0x7F for c in s)
)
_route = _text.filter(lambda s: s.strip() and s == s.strip() and not s.startswith("#"))
_seconds = st.floats(min_value=0.001, max_value=1e9, allow_nan=False)


@st.composite
def _configs(draw: st.DrawFn) -> Config:
    listen = tuple(draw(st.lists(_addresses.map(lambda a: (a[0], 0)), min_size=1, max_size=3)))
    return Config(
        listen=listen,
        publish_listen=draw(_addresses),
        routes_file=draw(st.none() | _text),
        routes=tuple(draw(st.lists(_route, max_size=3))),
        sig_key=draw(st.none() | _text),
        sig_iss=draw(_text),
        publish_key=draw(st.none() | _text),
        log_level=draw(st.sampled_from(["error", "warning", "info", "debug"])),
        debug=draw(st.booleans()),
        engine=draw(st.sampled_from(["memory", "redis://r:6379/1", "rediss://[::1]"])),
        history=draw(st.integers(0, 10**6)),
        engine_linger=draw(st.just(0.0) | _seconds),
        push_in_spec=draw(st.none() | st.just("tcp://127.0.0.1:5560")),
        push_in_sub_spec=draw(st.none() | st.just("ipc:///tmp/sub")),
        command_spec=draw(st.none() | st.just("tcp://*:5563")),
        adapter=draw(st.sampled_from(["asyncio", "gevent"])),
        workers=draw(st.integers(1, 64)),
        max_connections=draw(st.integers(1, 2**40)),
        max_output_buffer=draw(st.integers(1, 2**40)),
        id_cache_ttl=draw(st.just(0.0) | _seconds),
        origin_connect_timeout=draw(_seconds),
        shutdown_grace=draw(_seconds),
        slow_consumer_policy=draw(st.sampled_from(["close", "drop-oldest"])),
    )


@settings(max_examples=examples(40))
@given(_configs())
def test_dump_then_load_round_trips(config: Config) -> None:
    assert load_config({}, {}, dump_config(config), "gripcore.toml") == config


def test_dump_escapes_and_redacts() -> None:
    config = Config(sig_iss='a"b\\c\td', sig_key="k", publish_key="p")
    text = dump_config(config)
    assert 'sig-iss = "a\\"b\\\\c\\u0009d"' in text
    assert 'sig-key = "k"' in text
    redacted = dump_config(config, redact_secrets=True)
    assert "# sig-key is set (hidden)" in redacted and "# publish-key is set (hidden)" in redacted
    assert '"k"' not in redacted and '"p"' not in redacted
    assert "routes =" not in dump_config(Config())  # unset options are left out
    assert 'sig-key = "none"' in dump_config(Config(sig_key=None))  # but not signing is said
    assert 'listen = ["0.0.0.0:7999"]' in dump_config(Config())
    assert (Config().listen, Config().publish_listen) == (DEFAULT_LISTEN, DEFAULT_PUBLISH_LISTEN)


# --- fuzz and size ---------------------------------------------------------------------------------

_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)


@given(st.sampled_from([option.field for option in OPTIONS]), _json_values)
def test_any_flag_value_raises_only_config_error(field: str, value: object) -> None:
    try:
        config = load_config({field: value}, {})
    except ConfigError as exc:
        assert exc.reason
    else:
        assert isinstance(config, Config)


@given(st.sampled_from([option.env for option in OPTIONS]), st.text(max_size=30))
def test_any_environment_value_raises_only_config_error(name: str, value: str) -> None:
    try:
        load_config({}, {name: value})
    except ConfigError as exc:
        assert exc.source == f"environment variable {name}"


@given(st.text(max_size=200))
def test_any_config_text_raises_only_config_error(text: str) -> None:
    try:
        load_config({}, {}, text, "g.toml")
    except ConfigError as exc:
        assert exc.source.startswith("g.toml")


@given(st.sampled_from([option.flag for option in OPTIONS]), _json_values)
def test_any_toml_value_raises_only_config_error(key: str, value: object) -> None:
    text = f"{key} = {_toml(value)}\n"
    try:
        load_config({}, {}, text, "g.toml")
    except ConfigError as exc:
        assert exc.source.startswith("g.toml")


def _toml(value: object) -> str:
    """A TOML rendering of a JSON-ish value (null becomes an empty table, which TOML lacks)."""
    if value is None:
        return "{}"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return {"inf": "inf", "-inf": "-inf"}.get(
            repr(value), "nan" if value != value else repr(value)
        )
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml(item) for item in value) + "]"
    assert isinstance(value, dict)
    return "{" + ", ".join(f"{_toml_string(k)} = {_toml(v)}" for k, v in value.items()) + "}"


def test_large_inputs_parse() -> None:
    routes = [
        f"host{i}.example 10.0.{i % 250}.1:{1000 + i % 60000},over_http" for i in range(25_000)
    ]
    text = "route = [\n" + "".join(f'  "{line}",\n' for line in routes) + "]\n"
    assert len(text) > 1_000_000
    assert load_config({}, {}, text, "g.toml").routes == tuple(routes)
    from_env = load_config({}, {"GRIPCORE_ROUTE": "\n".join(routes)})
    assert from_env.routes == tuple(routes)
    ports = ",".join(str(p) for p in range(1, 10_001))
    assert len(load_config({}, {"GRIPCORE_LISTEN": ports}).listen) == 10_000
    with pytest.raises(ConfigError, match="must be an integer, got"):
        load_config({}, {"GRIPCORE_HISTORY": "9" * 1_000_000})


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("feeds.example:8080", "must be a list of HOST:PORT, got a string"),
        (("feeds.example:0",), "'feeds.example:0' is not HOST:PORT"),
        (("feeds.example:http",), "'feeds.example:http' is not HOST:PORT ("),
        (("8080",), "'8080' is not HOST:PORT"),
    ],
)
def test_allow_link_host_values(value: object, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        Config(allow_link_host=value)  # type: ignore[arg-type]
    assert message in str(info.value)
    assert Config(allow_link_host=("feeds.example:8443",)).allow_link_host == (
        "feeds.example:8443",
    )


def test_tls_listeners_need_a_certificate_and_their_own_address() -> None:
    with pytest.raises(ConfigError, match="needs --tls-cert and --tls-key"):
        load_config({"tls_listen": ["8443"], "tls_cert": "c.pem"}, {})
    with pytest.raises(ConfigError, match="7999 is also a plain listener"):
        load_config({"tls_listen": ["7999"], "tls_cert": "c.pem", "tls_key": "k.pem"}, {})
    config = load_config(
        {}, {}, 'tls-listen = ["8443"]\ntls-cert = "c.pem"\ntls-key = "/k.pem"\n', "/etc/g/g.toml"
    )
    assert config.tls_listen == (("0.0.0.0", 8443),)
    assert (config.tls_cert, config.tls_key) == ("/etc/g/c.pem", "/k.pem")
    assert 'tls-listen = ["0.0.0.0:8443"]' in dump_config(config)
    assert load_config({}, {}, dump_config(config), "/x/g.toml") == config
