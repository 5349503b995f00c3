"""Routes: the Pushpin routes-file tokenizer, route values, matching rules and the table."""

from __future__ import annotations

import random
from typing import Any, Literal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gripcore._errors import LocalProtocolError, ProtocolError, RoutesError
from gripcore._routes import (
    Route,
    RouteTable,
    RouteWarning,
    Target,
    _split_sections,
    format_route_line,
    parse_route_line,
    parse_routes,
)

from .hypothesis_support import examples

# --- the tokenizer -----------------------------------------------------------------------------

# (line, [(section value, [(prop name, prop value), ...]), ...]): Pushpin's RoutesFile::parseLine.
SECTION_VECTORS: list[tuple[str, list[tuple[str, list[tuple[str, str]]]]]] = [
    ("", []),
    ("    ", []),
    ("# a comment", []),
    ("   # indented comment", []),
    ("* localhost:80", [("*", []), ("localhost:80", [])]),
    (
        "*,path_beg=/ws localhost:8000,over_http",
        [("*", [("path_beg", "/ws")]), ("localhost:8000", [("over_http", "")])],
    ),
    ("a  b:1   ", [("a", []), ("b:1", [])]),
    ("a\tb:1", [("a", []), ("b:1", [])]),
    ('a,prefix="x y" b:1', [("a", [("prefix", "x y")]), ("b:1", [])]),
    ('a,prefix=x"y z"w b:1', [("a", [("prefix", "xy zw")]), ("b:1", [])]),
    ('a,p="q\\"r\\\\s" b:1', [("a", [("p", 'q"r\\s')]), ("b:1", [])]),
    ('a,p="" b:1', [("a", [("p", "")]), ("b:1", [])]),
    ('a,p="#,= " b:1', [("a", [("p", "#,= ")]), ("b:1", [])]),
    ("a,p=back\\slash b:1", [("a", [("p", "back\\slash")]), ("b:1", [])]),
    ('"a b" c:1', [("a b", []), ("c:1", [])]),
    ("id=chat app:80", [("", [("id", "chat")]), ("app:80", [])]),
    (",id=chat app:80", [("", [("id", "chat")]), ("app:80", [])]),
    ('"a=b" c:1', [("", [("a", "b")]), ("c:1", [])]),  # Pushpin re-reads any '=' as a prop
    ("a,x=1=2 b:1", [("a", [("x", "1=2")]), ("b:1", [])]),
    ("a,h=X:1,h=Y:2 b:1", [("a", [("h", "X:1"), ("h", "Y:2")]), ("b:1", [])]),
    ("a#b c", [("a", [])]),  # '#' outside quotes ends the line anywhere
    ("a,b=c#x y", [("a", [("b", "c")])]),
    ("a b:1 # trailing", [("a", []), ("b:1", [])]),
]

# (line, message): tokenizer errors, Pushpin's wording where it has one.
SECTION_ERRORS: list[tuple[str, str]] = [
    ("a,,b c:1", "expecting prop"),
    ("a, b:1", "expecting prop"),
    ("a,=x b:1", "empty prop name"),
    ('a,p="x b:1', "unterminated quoted string"),
    ('a,p="x\\', "unterminated quoted string"),
    ('a,p="x\\n" b:1', "invalid escape '\\n'"),
]


@pytest.mark.parametrize(("line", "expected"), SECTION_VECTORS)
def test_section_vectors(line: str, expected: list[tuple[str, list[tuple[str, str]]]]) -> None:
    sections = _split_sections(line)
    assert [(s.value, s.props) for s in sections] == expected


@pytest.mark.parametrize(("line", "message"), SECTION_ERRORS)
def test_section_errors(line: str, message: str) -> None:
    with pytest.raises(RoutesError) as info:
        parse_route_line(line, lineno=7)
    assert message in info.value.reason
    assert info.value.line == 7 and str(info.value).startswith("line 7: ")


# --- lines to routes ---------------------------------------------------------------------------

# (line, expected attributes of the Route)
ROUTE_VECTORS: list[tuple[str, dict[str, Any]]] = [
    (
        "* localhost:80",
        {
            "domain": "*",
            "id": "*,*,*,*",
            "explicit_id": False,
            "targets": (Target("localhost", 80),),
        },
    ),
    (
        "*,path_beg=/ws localhost:8000,over_http",
        {"path_beg": "/ws", "targets": (Target("localhost", 8000, over_http=True),)},
    ),
    (
        "example.com,ssl=yes 10.0.0.1:443,ssl,host=example.com",
        {
            "domain": "example.com",
            "ssl": True,
            "id": "example.com,*,ssl,*",
            "targets": (Target("10.0.0.1", 443, ssl=True, host_header="example.com"),),
        },
    ),
    ("*,ssl=no a:1", {"ssl": False, "id": "*,*,no-ssl,*"}),
    ("a.b,proto=ws,path_beg=/x c:1", {"proto": "ws", "id": "a.b,ws,*,/x"}),
    ("*,proto=http c:1", {"proto": "http", "id": "*,http,*,*"}),
    ("*,id=chat,prefix=chat- app:80", {"id": "chat", "explicit_id": True, "prefix": "chat-"}),
    ("id=only test", {"domain": None, "id": "only", "targets": (Target("test", 0, kind="test"),)}),
    (
        "* [::1]:8080 [2001:db8::7]:443,ssl",
        {"targets": (Target("::1", 8080), Target("2001:db8::7", 443, ssl=True))},
    ),
    (
        "*,sig_iss=me,sig_key=base64:c2VjcmV0,debug,no_grip,aco,orig_headers a:1",
        {
            "sig_iss": "me",
            "sig_key": "base64:c2VjcmV0",
            "debug": True,
            "no_grip": True,
            "aco": True,
            "orig_headers": True,
        },
    ),
    ("*,sig_key=file:keys/route.pem a:1", {"sig_key": "file:keys/route.pem"}),  # read later
    ("*,sig_iss=,sig_key=,as_host= a:1", {"sig_iss": None, "sig_key": None, "as_host": None}),
    ("*,as_host=example.com:8080,path_rem=4 a:1", {"as_host": "example.com:8080", "path_rem": 4}),
    ("*,as_host=[::1] a:1", {"as_host": "[::1]"}),
    ("*,path_beg=/v1,replace_beg=/v2 a:1", {"path_rem": 3, "replace_beg": "/v2"}),
    ("*,replace_beg=/pre a:1", {"path_rem": 0, "replace_beg": "/pre"}),
    (
        '*,header=X-A:1,"header=X-B:  two words",header=X-C: a:1',
        {"headers": (("X-A", "1"), ("X-B", "two words"), ("X-C", ""))},
    ),
    (
        "* a:1,sub=news,sub=,sub=sports,untrusted,insecure,one_event,trust_connect_host",
        {
            "targets": (
                Target(
                    "a",
                    1,
                    sub=("news", "sports"),
                    untrusted=True,
                    insecure=True,
                    one_event=True,
                    trust_connect_host=True,
                ),
            )
        },
    ),
    (
        "* a:1 b:2 test",
        {"targets": (Target("a", 1), Target("b", 2), Target("test", 0, kind="test"))},
    ),
    ("EXAMPLE.com. a:1", {"domain": "EXAMPLE.com.", "id": "EXAMPLE.com.,*,*,*"}),
    ("::1 a:1", {"domain": "::1", "id": "::1,*,*,*"}),
    ("*,debug= a:1", {"debug": True}),  # an empty value on a flag is still the flag
    (
        "*,jsonp_mode=basic,jsonp_cb=cb,session,sockjs=/s,log_level=3 a:1,client_cert=c.pem",
        {
            "ignored_options": (
                *("jsonp_mode", "jsonp_cb", "session", "sockjs", "log_level"),
                "client_cert",
            )
        },
    ),
]

# (line, message fragment): lines that are not routes. Pushpin's wording where it has one.
ROUTE_ERRORS: list[tuple[str, str]] = [
    ("*", "must specify condition and at least one target"),
    ("*,path_beg=/x", "must specify condition and at least one target"),
    ("*,proto=wss a:1", "proto must be set to 'http' or 'ws'"),
    ("*,ssl=true a:1", "ssl must be set to 'yes' or 'no'"),
    ("*,path_beg= a:1", "path_beg cannot be empty"),
    ("prefix=x a:1", "condition has no domain or id"),
    ("*,id= a:1", "id cannot be empty"),
    ("*,path_rem=x a:1", "path_rem must be a non-negative integer"),
    ("*,path_rem=-1 a:1", "path_rem must be a non-negative integer"),
    ("*,path_rem=1,replace_beg=/x a:1", "cannot be combined"),
    ("*,header=novalue a:1", "header must use format 'name:value'"),
    ("*,header=:v a:1", "header must use format 'name:value'"),
    ("*,header=Bad Name:v a:1", "header must use format 'name:value'"),
    ('*,"header=Bad Name:v" a:1', "is not a valid token"),
    ('*,"header=X:a\x01b" a:1', "control characters"),
    ("*,jsonp_mode=fancy a:1", "jsonp_mode must be set to 'basic' or 'extended'"),
    ("*,frobnicate a:1", "unknown condition option 'frobnicate'"),
    ("*,over_http a:1", "unknown condition option 'over_http'"),
    ("* a:1,path_beg=/x", "unknown target option 'path_beg'"),
    ("*,debug=yes a:1", "condition option 'debug' takes no value"),
    ("* a:1,ssl=no", "target option 'ssl' takes no value"),
    ("*,proto=ws,proto=http a:1", "option 'proto' given more than once"),
    ("* a:1,host=x,host=y", "option 'host' given more than once"),
    ("*,sig_key=base64:!!! a:1", "sig_key: key spec 'base64:' is not valid base64"),
    ("* localhost", "target bad format 'localhost' (expected host:port)"),
    ("* :80", "target bad format"),
    ("* a:0", "target invalid port"),
    ("* a:65536", "target invalid port"),
    ("* a:+80", "target invalid port"),
    ("* a:", "target invalid port"),
    ("* a:123456", "target invalid port"),
    ("* ::1:80", "target bad format"),
    ("* [::1]", "expected [ipv6]:port"),
    ("* [::1]80", "expected [ipv6]:port"),
    ("* [nothex]:80", "bad IPv6 address"),
    ("* [::1:80", "bad IPv6 address"),
    ("* a/b:80", "is not a host name or IP address"),
    ("* zhttp/tcp://127.0.0.1:10000", "zhttp targets are not supported"),
    ("* zhttpreq/tcp://127.0.0.1:10000", "zhttp targets are not supported"),
    ("*,as_host=a:b a:1", "as_host invalid port"),
    ("*,as_host=[zz] a:1", "bad IPv6 address"),
    ("* a:1,host=", "target host= value '' is invalid"),
    ('* a:1,"host=x y"', "target host= value 'x y' is invalid"),
    ('* "a:1,host=x"', "unknown target option 'a:1,host'"),  # '=' in a first token: a prop
    ("example.com:8080 a:1", "must not include a port"),
    ("[::1::2] a:1", "is not an IPv6 address"),
    ("bad/domain a:1", "is not a host name or IP address"),
]


@pytest.mark.parametrize(("line", "expected"), ROUTE_VECTORS)
def test_route_vectors(line: str, expected: dict[str, Any]) -> None:
    route = parse_route_line(line, lineno=3)
    assert route is not None and route.line == 3
    for name, value in expected.items():
        assert getattr(route, name) == value, name
    # Every route survives a trip through format_route_line (ignored options are dropped).
    again = parse_route_line(format_route_line(route), lineno=3)
    assert again is not None
    assert again == Route(**{**_fields(route), "ignored_options": ()})


def _fields(route: Route) -> dict[str, Any]:
    names = [name for name in Route.__dataclass_fields__ if not name.startswith("_")]
    return {name: getattr(route, name) for name in names}


@pytest.mark.parametrize(("line", "message"), ROUTE_ERRORS)
def test_route_errors(line: str, message: str) -> None:
    with pytest.raises(RoutesError) as info:
        parse_route_line(line, lineno=12)
    assert message in info.value.reason
    assert info.value.line == 12
    assert info.value.error_status_hint == 500  # a misconfiguration on our side


def test_blank_and_comment_lines_are_not_routes() -> None:
    for line in ("", "   ", "# * localhost:80", "\t# x"):
        assert parse_route_line(line) is None


def test_line_must_be_text() -> None:
    with pytest.raises(RoutesError, match="must be a str"):
        parse_route_line(b"* a:1")  # type: ignore[arg-type]
    with pytest.raises(RoutesError, match="must be a str"):
        parse_routes(b"* a:1")  # type: ignore[arg-type]


# --- values built in code ----------------------------------------------------------------------

T = (Target("a", 1),)

# (Route keyword arguments, message fragment)
BAD_ROUTES: list[tuple[dict[str, Any], str]] = [
    ({"domain": "", "targets": T}, "condition domain must be a host, '*' or None"),
    ({"domain": 5, "targets": T}, "condition domain must be a host, '*' or None"),
    ({"domain": "*", "targets": ()}, "at least one target"),
    ({"domain": "*", "targets": ("a:1",)}, "at least one target"),
    ({"domain": None, "targets": T}, "condition has no domain or id"),
    ({"domain": "*", "targets": T, "id": "", "explicit_id": True}, "id cannot be empty"),
    ({"domain": "*", "targets": T, "proto": "https"}, "proto must be set"),
    ({"domain": "*", "targets": T, "ssl": "yes"}, "ssl must be set"),
    ({"domain": "*", "targets": T, "path_beg": ""}, "path_beg cannot be empty"),
    ({"domain": "*", "targets": T, "path_rem": -1}, "must not be negative"),
    ({"domain": "*", "targets": T, "path_rem": True}, "path_rem must be an int"),
    ({"domain": "*", "targets": T, "replace_beg": "/x", "path_beg": "/ab"}, "must be its length"),
    ({"domain": "*", "targets": T, "sig_iss": ""}, "sig_iss must be None or non-empty"),
    ({"domain": "*", "targets": T, "prefix": "a\nb"}, "prefix cannot hold a line break"),
    ({"domain": "*", "targets": T, "prefix": 5}, "prefix must be a str, not int"),
    ({"domain": "*", "targets": T, "headers": (("X", " lead"),)}, "must not start with a space"),
    ({"domain": "*", "targets": T, "as_host": "a:b"}, "as_host invalid port"),
]


@pytest.mark.parametrize(("kwargs", "message"), BAD_ROUTES)
def test_routes_are_validated_when_built(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(RoutesError, match=None) as info:
        Route(line=4, **kwargs)
    assert message in str(info.value)
    assert info.value.line == 4


# (Target arguments, message fragment)
BAD_TARGETS: list[tuple[dict[str, Any], str]] = [
    ({"host": "", "port": 1}, "is not a host name"),
    ({"host": "a b", "port": 1}, "is not a host name"),
    ({"host": "a", "port": 0}, "out of range 1-65535"),
    ({"host": "a", "port": 70000}, "out of range 1-65535"),
    ({"host": "a", "port": "80"}, "port must be an int"),
    ({"host": "a", "port": True}, "port must be an int"),
    ({"host": "a", "port": 1, "kind": "zhttp"}, "kind must be 'net' or 'test'"),
    ({"host": "a", "port": 1, "kind": "test"}, "a test target has host 'test' and port 0"),
    ({"host": "a", "port": 1, "host_header": "x\ny"}, "target host= value"),
    ({"host": "a", "port": 1, "sub": ("",)}, "non-empty strings"),
    ({"host": "a", "port": 1, "sub": ["x"]}, "non-empty strings"),
]


@pytest.mark.parametrize(("kwargs", "message"), BAD_TARGETS)
def test_targets_are_validated_when_built(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(RoutesError) as info:
        Target(**kwargs)
    assert message in str(info.value)


def test_target_authority() -> None:
    assert Target("example.com", 443).authority == "example.com:443"
    assert Target("2001:db8::1", 80).authority == "[2001:db8::1]:80"
    assert Target("test", 0, kind="test").authority == "test"


# (route line, request path, origin path)
REWRITE_VECTORS: list[tuple[str, str, str]] = [
    ("* a:1", "/x?y", "/x?y"),
    ("*,path_rem=4 a:1", "/api/items", "/items"),
    ("*,path_rem=40 a:1", "/api", ""),
    ("*,path_beg=/v1,replace_beg=/v2 a:1", "/v1/items", "/v2/items"),
    ("*,path_beg=/old,replace_beg= a:1", "/old/x", "/x"),
    ("*,replace_beg=/pre a:1", "/x", "/pre/x"),
]


@pytest.mark.parametrize(("line", "path", "origin_path"), REWRITE_VECTORS)
def test_rewrite_path(line: str, path: str, origin_path: str) -> None:
    route = parse_route_line(line)
    assert route is not None and route.rewrite_path(path) == origin_path


# --- matching ----------------------------------------------------------------------------------

FILE = """\
# the reference file for the matching vectors
*                                   any:80
*,path_beg=/api                     api:80
*,path_beg=/api/v2                  api2:80
*,proto=ws                          ws:80
*,proto=ws,path_beg=/api            wsapi:80
*,ssl=yes                           tls:443,ssl
example.com,path_beg=/app           app:80
example.com,proto=ws                appws:80
example.com,ssl=no,path_beg=/app    appplain:80
[::1]                               v6:80
id=private                          private:80
"""

# (host, path, proto, ssl, the first target's host of the expected route, or None)
MATCH_VECTORS: list[tuple[str, str, Literal["http", "ws"], bool, str | None]] = [
    ("other.org", "/", "http", False, "any"),
    ("other.org", "/api", "http", False, "api"),
    ("other.org", "/api/v2/x", "http", False, "api2"),
    ("other.org", "/ap", "http", False, "any"),
    ("other.org", "/x/api", "http", False, "any"),  # path_beg is a prefix, not a substring
    ("other.org", "/", "ws", False, "ws"),
    ("other.org", "/api/v2", "ws", False, "wsapi"),  # proto-specific beats a longer path_beg
    ("other.org", "/", "http", True, "tls"),  # ssl-specific beats unspecified on equal paths
    ("other.org", "/api", "http", True, "api"),  # a longer path_beg beats ssl-specific
    ("", "/", "http", False, "any"),  # no Host at all: the * rules
    ("example.com", "/app/x", "http", True, "app"),
    ("example.com", "/app/x", "http", False, "appplain"),
    ("example.com", "/app", "ws", False, "appws"),
    ("example.com", "/", "http", False, None),  # the host has rules: no fallback to *
    ("example.com", "/api", "http", False, None),
    ("EXAMPLE.COM:8443", "/app", "http", True, "app"),
    ("example.com.", "/app", "http", True, "app"),
    ("[::1]:8000", "/", "http", False, "v6"),
    ("[0:0::1]", "/", "http", False, "v6"),
    ("::1", "/", "http", False, "v6"),
    ("private", "/", "http", False, "any"),  # id-only routes never match by host
]


@pytest.fixture(scope="module")
def table() -> RouteTable:
    return parse_routes(FILE)


@pytest.mark.parametrize(("host", "path", "proto", "ssl", "expected"), MATCH_VECTORS)
def test_match_vectors(
    table: RouteTable, host: str, path: str, proto: Any, ssl: bool, expected: str | None
) -> None:
    route = table.match(host, path, proto=proto, ssl=ssl)
    assert (None if route is None else route.targets[0].host) == expected


def test_no_wildcard_no_match() -> None:
    table = parse_routes("example.com a:1\n")
    assert table.match("other.org", "/") is None
    assert table.match("example.com", "/") is not None


def test_match_order_does_not_depend_on_lines() -> None:
    """Pushpin's pairwise preference depends on line order here; ours does not."""
    lines = ["*,path_beg=/abc a:1", "*,ssl=yes b:1"]
    for ordering in (lines, lines[::-1]):
        route = RouteTable.from_lines(ordering).match("h", "/abcd", ssl=True)
        assert route is not None and route.targets[0].host == "a"


@settings(max_examples=examples(40))
@given(st.randoms(use_true_random=False))
def test_shuffled_files_match_the_same(rnd: random.Random) -> None:
    lines = FILE.splitlines()
    rnd.shuffle(lines)
    shuffled = RouteTable.from_lines(lines)
    reference = parse_routes(FILE)
    for host, path, proto, ssl, _ in MATCH_VECTORS:
        a = reference.match(host, path, proto=proto, ssl=ssl)
        b = shuffled.match(host, path, proto=proto, ssl=ssl)
        assert (a and a.id) == (b and b.id)


def test_match_argument_errors(table: RouteTable) -> None:
    with pytest.raises(LocalProtocolError, match="proto must be 'http' or 'ws'"):
        table.match("h", "/", proto="wss")  # type: ignore[arg-type]
    with pytest.raises(LocalProtocolError, match="str host and path"):
        table.match(b"h", "/")  # type: ignore[arg-type]


# --- the table ---------------------------------------------------------------------------------


def test_table_by_id_and_iteration(table: RouteTable) -> None:
    assert len(table) == 11 and len(list(table)) == 11
    assert [route.line for route in table] == list(range(2, 13))
    private = table.by_id("private")
    assert private is not None and private.targets[0].host == "private"
    implicit = table.by_id("example.com,*,no-ssl,/app")
    assert implicit is not None and implicit.targets[0].host == "appplain"
    assert table.by_id("nope") is None
    assert table.warnings == ()


def test_duplicate_conditions_are_skipped_with_a_warning() -> None:
    table = parse_routes(
        "* a:1\n*,id=other b:1\nEXAMPLE.com c:1\nexample.com d:1\n*,proto=ws e:1\n"
    )
    assert [route.targets[0].host for route in table] == ["a", "c", "e"]
    assert table.warnings == (
        RouteWarning(2, "skipping duplicate condition (same as line 1)"),
        RouteWarning(4, "skipping duplicate condition (same as line 3)"),
    )
    assert str(table.warnings[0]) == "line 2: skipping duplicate condition (same as line 1)"
    assert str(RouteWarning(0, "note")) == "note"


def test_ignored_options_are_reported() -> None:
    table = parse_routes("*,sockjs=/s a:1,ipc_file_mode=700\n")
    assert [str(w) for w in table.warnings] == [
        "line 1: option 'sockjs' is not supported; ignored",
        "line 1: option 'ipc_file_mode' is not supported; ignored",
    ]


def test_duplicate_ids_are_errors() -> None:
    with pytest.raises(RoutesError) as info:
        parse_routes("*,id=x a:1\n\nexample.com,id=x b:1\n")
    assert info.value.line == 3
    assert "duplicate route id 'x' (first on line 1)" in str(info.value)
    with pytest.raises(RoutesError, match="duplicate route id"):
        parse_routes("*,id=x a:1\nid=x b:1\n")  # id-only routes share the id space


def test_first_bad_line_rejects_the_file() -> None:
    with pytest.raises(RoutesError) as info:
        parse_routes("* a:1\n\n# ok\n*,proto=nope b:1\n")
    assert info.value.line == 4


def test_table_takes_only_routes() -> None:
    with pytest.raises(LocalProtocolError, match="takes Route values"):
        RouteTable(["* a:1"])  # type: ignore[list-item]
    with pytest.raises(LocalProtocolError, match="needs a Route"):
        format_route_line("* a:1")  # type: ignore[arg-type]


def test_table_from_route_values_and_extra_warnings() -> None:
    route = Route(domain="*", targets=T)
    table = RouteTable([route], warnings=[RouteWarning(0, "from the caller")])
    assert table.routes == (route,) and table.match("x", "/") is route
    assert table.warnings == (RouteWarning(0, "from the caller"),)
    assert len(RouteTable()) == 0 and RouteTable().match("x", "/") is None


def test_text_forms_give_the_same_table() -> None:
    """The same file whole, with CRLF line ends, with a BOM, or as --route lines."""
    reference = [format_route_line(route) for route in parse_routes(FILE)]
    variants = [
        parse_routes(FILE.replace("\n", "\r\n")),
        parse_routes("\ufeff" + FILE),
        parse_routes(FILE + "\n\n# trailing comment\n   \n"),
        RouteTable.from_lines(FILE.split("\n")),
    ]
    for table in variants:
        assert [format_route_line(route) for route in table] == reference
        assert [route.line for route in table] == list(range(2, 13))


def test_from_lines_numbers_by_position() -> None:
    with pytest.raises(RoutesError) as info:
        RouteTable.from_lines(["* a:1", "", "bad"])
    assert info.value.line == 3


# --- properties --------------------------------------------------------------------------------

_text = st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=12)
_name = st.from_regex(r"[a-z0-9][a-z0-9.-]{0,10}", fullmatch=True)
_host = st.one_of(_name, st.sampled_from(["::1", "2001:db8::7", "10.0.0.1"]))
_header_value = _text.filter(lambda v: not v.startswith(" "))

_targets = st.builds(
    Target,
    host=_host,
    port=st.integers(1, 65535),
    ssl=st.booleans(),
    over_http=st.booleans(),
    untrusted=st.booleans(),
    insecure=st.booleans(),
    host_header=st.none() | _text.filter(lambda v: " " not in v),
    sub=st.lists(_text, max_size=2).map(tuple),
    one_event=st.booleans(),
    trust_connect_host=st.booleans(),
) | st.just(Target("test", 0, kind="test"))


@st.composite
def _routes(draw: st.DrawFn) -> Route:
    domain = draw(st.one_of(st.just("*"), _name, st.just("[::1]"), st.none()))
    path_beg = draw(st.none() | _text)
    replace_beg = draw(st.none() | _text | st.just(""))
    explicit = domain is None or draw(st.booleans())
    return Route(
        domain=domain,
        targets=tuple(draw(st.lists(_targets, min_size=1, max_size=3))),
        id=draw(_text) if explicit else "",
        explicit_id=explicit,
        proto=draw(st.sampled_from([None, "http", "ws"])),
        ssl=draw(st.sampled_from([None, True, False])),
        path_beg=path_beg,
        prefix=draw(_text | st.just("")),
        sig_iss=draw(st.none() | _text),
        sig_key=draw(st.none() | st.just("base64:c2VjcmV0") | _text.map(lambda v: "file:" + v)),
        debug=draw(st.booleans()),
        no_grip=draw(st.booleans()),
        as_host=draw(st.none() | _name),
        path_rem=len(path_beg or "") if replace_beg is not None else draw(st.integers(0, 99)),
        replace_beg=replace_beg,
        headers=tuple(
            draw(
                st.lists(
                    st.tuples(
                        st.from_regex(r"[A-Za-z][A-Za-z0-9-]{0,8}", fullmatch=True),
                        st.just("") | _header_value,
                    ),
                    max_size=2,
                )
            )
        ),
        aco=draw(st.booleans()),
        orig_headers=draw(st.booleans()),
    )


@settings(max_examples=examples(80))
@given(_routes())
def test_format_parse_round_trip(route: Route) -> None:
    line = format_route_line(route)
    assert "\n" not in line
    assert parse_route_line(line) == route


_route_chars = st.sampled_from([*' ,="#\\\tab:*1/[]=_-', "proto", "ssl", "id", "path_beg"])


@settings(max_examples=examples(200))
@given(st.one_of(st.text(max_size=80), st.lists(_route_chars, max_size=30).map("".join)))
def test_arbitrary_lines_raise_only_routes_errors(line: str) -> None:
    try:
        route = parse_route_line(line, lineno=1)
    except ProtocolError as exc:
        assert isinstance(exc, RoutesError) and exc.line == 1
    else:
        assert route is None or (route.targets and route.id)


@settings(max_examples=examples(100))
@given(st.text(alphabet=st.sampled_from(list(' *a:1\n\r#,=id"\\')), max_size=200))
def test_arbitrary_files_raise_only_routes_errors(text: str) -> None:
    try:
        table = parse_routes(text)
    except ProtocolError as exc:
        assert isinstance(exc, RoutesError)
    else:
        assert all(isinstance(route, Route) for route in table)


def test_large_inputs_are_linear() -> None:
    # 1 MB of routes: 5,000 hosts with their own rules, each found by one dict lookup.
    pad = "p" * 160
    text = "".join(f"h{n}.example,path_beg=/p{n % 50},prefix={pad} t{n}:80\n" for n in range(5_000))
    assert len(text) > 1_000_000
    table = parse_routes(text)
    assert len(table) == 5_000 and table.warnings == ()
    route = table.match("h4999.example", "/p49/x")
    assert route is not None and route.targets[0].host == "t4999"
    # One 1 MB line whose quoted value is all escapes: read in linear time.
    route = parse_route_line('*,prefix="' + "\\\\" * 500_000 + '" a:1')
    assert route is not None and route.prefix == "\\" * 500_000
    route = parse_route_line("*,prefix=" + "x" * 1_000_000 + " a:1")
    assert route is not None and len(route.prefix) == 1_000_000
