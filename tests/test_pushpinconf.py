"""Pushpin's pushpin.conf read as gripcore options (`_pushpinconf`), and `serve --pushpin-config`."""

from __future__ import annotations

import pytest

from gripcore._config import Config, ConfigError, load_config
from gripcore._pushpinconf import MAX_PUSHPIN_CONFIG_SIZE, parse_pushpin_config

# The settings of Pushpin 1.36's shipped /etc/pushpin/pushpin.conf (Debian package), comments
# trimmed.
SHIPPED = """\
[global]
include={libdir}/internal.conf
rundir=/var/run/pushpin
ipc_prefix=pushpin-
port_offset=0
stats_connection_ttl=120

[runner]
services=condure,pushpin-proxy,pushpin-handler
# plain HTTP port to listen on for client connections
http_port=7999
#https_ports=443
logdir=/var/log/pushpin
log_level=2
client_buffer_size=8192
client_maxconn=50000
condure_bin=condure

[proxy]
routesfile=routes
debug=false
auto_cross_origin=false
sig_iss=pushpin
sig_key=changeme
upstream_key=
updates_check=off

[handler]
push_in_spec=tcp://127.0.0.1:5560
push_in_sub_specs=tcp://127.0.0.1:5562
push_in_http_addr=127.0.0.1
push_in_http_port=5561
push_in_http_max_body_size=1000000
stats_spec=ipc://{rundir}/{ipc_prefix}stats
command_spec=tcp://127.0.0.1:5563
message_rate=2500
message_wait=5000
id_cache_ttl=60
connection_subscription_max=20
"""


def options(text: str, **kw: object) -> dict[str, str]:
    conf = parse_pushpin_config(text, "/etc/pushpin/pushpin.conf", **kw)  # type: ignore[arg-type]
    return {flag: value for flag, (value, _) in conf.options().items()}


def test_the_shipped_config_maps_to_gripcores_defaults_but_routes() -> None:
    conf = parse_pushpin_config(SHIPPED, "/etc/pushpin/pushpin.conf")
    mapped = conf.options()
    assert {flag: value for flag, (value, _) in mapped.items()} == {
        "listen": "0.0.0.0:7999",
        "log-level": "2",
        "max-request-header-size": "8192",
        "max-connections": "50000",
        "routes": "/etc/pushpin/routes",
        "debug": "false",
        "sig-iss": "pushpin",
        "sig-key": "changeme",
        "publish-listen": "127.0.0.1:5561",
        "max-publish-body": "1000000",
        "message-wait": "5",
        "id-cache-ttl": "60",
        "max-channels-per-connection": "20",
        "push-in-spec": "tcp://127.0.0.1:5560",
        "push-in-sub-spec": "tcp://127.0.0.1:5562",
        "command-spec": "tcp://127.0.0.1:5563",
    }
    assert mapped["sig-key"][1] == "/etc/pushpin/pushpin.conf:24: [proxy] sig_key"
    config = load_config({}, {}, pushpin_options=mapped)
    defaults = Config()
    assert config.routes_file == "/etc/pushpin/routes"
    for field in (
        "listen",
        "publish_listen",
        "sig_key",
        "sig_iss",
        "max_connections",
        "max_request_header_size",
        "max_publish_body",
        "message_wait",
        "id_cache_ttl",
        "max_channels_per_connection",
        "log_level",
        "debug",
    ):
        assert getattr(config, field) == getattr(defaults, field), field
    report = conf.report()
    assert len(report) == len(conf.settings) == 29  # the publish address and port are one
    assert "global/include ignored: Pushpin's internal wiring between its own processes" in report
    assert "handler/message_wait = '5000' -> --message-wait 5 (milliseconds to seconds)" in report
    assert "proxy/upstream_key ignored: empty: no proxy in front is trusted" in report
    assert "proxy/updates_check ignored: gripcore never calls home" in report


def test_flags_environment_and_config_file_win_over_pushpin_conf() -> None:
    mapped = parse_pushpin_config(SHIPPED, "/p/pushpin.conf").options()
    config = load_config(
        {"sig_iss": "from-flag"},
        {"GRIPCORE_ID_CACHE_TTL": "5"},
        "max-connections = 7\n",
        "gripcore.toml",
        pushpin_options=mapped,
    )
    assert (config.sig_iss, config.id_cache_ttl, config.max_connections) == ("from-flag", 5.0, 7)
    assert config.message_wait == 5.0 and config.routes_file == "/p/routes"


def test_a_bad_value_names_the_pushpin_line() -> None:
    text = SHIPPED.replace("client_maxconn=50000", "client_maxconn=many")
    with pytest.raises(ConfigError) as info:
        load_config({}, {}, pushpin_options=parse_pushpin_config(text, "p.conf").options())
    assert str(info.value).startswith("p.conf:16: [runner] client_maxconn: must be an integer")
    with pytest.raises(ConfigError, match="unknown option 'nope'"):
        load_config({}, {}, pushpin_options={"nope": ("1", "somewhere")})


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # a list of ports, with addresses, IPv6 in brackets (runner's parsePort)
        (
            "[runner]\nhttp_port=7999, 127.0.0.1:8000,[::1]:8001\n",
            {"listen": "0.0.0.0:7999,127.0.0.1:8000,[::1]:8001"},
        ),
        ('[runner]\nhttp_port="7999"\n', {"listen": "0.0.0.0:7999"}),
        ("[runner]\nhttp_port=7999,\n", {"listen": "0.0.0.0:7999"}),
        # port_offset moves the publish port (Settings::adjustedPort), not http_port
        (
            "[global]\nport_offset=100\n[runner]\nhttp_port=7999\n[handler]\npush_in_http_port=5561\n",
            {"listen": "0.0.0.0:7999", "publish-listen": "127.0.0.1:5661"},
        ),
        # the address alone takes Pushpin's default port; IPv6 is bracketed
        ("[handler]\npush_in_http_addr=::1\n", {"publish-listen": "[::1]:5561"}),
        ("[handler]\npush_in_http_port=6000\n", {"publish-listen": "127.0.0.1:6000"}),
        # an empty key: Pushpin sends no Grip-Sig
        ("[proxy]\nsig_key=\n", {"sig-key": "none"}),
        # one level for gripcore; Pushpin's 4 (trace) is debug; service levels are reported
        ("[runner]\nlog_level=proxy:3,1\n", {"log-level": "1"}),
        ("[runner]\nlog_level=4,\n", {"log-level": "3"}),
        ("[runner]\nlog_level=proxy:3\n", {"log-level": "2"}),
        # section names are case-insensitive; the last of two same keys wins, as QSettings
        ("[PROXY]\nsig_iss=a\nsig_iss=b\n", {"sig-iss": "b"}),
        # key files are relative to the config file's folder too
        (
            "[proxy]\nsig_key=file:k.pem\nupstream_key=file:/abs/u.pem\n",
            {"sig-key": "file:/etc/pushpin/k.pem", "upstream-key": "file:/abs/u.pem"},
        ),
        ("[proxy]\nupstream_key=base64:c2VjcmV0\n", {"upstream-key": "base64:c2VjcmV0"}),
        # an absolute routes file stays as it is
        ("[proxy]\nroutesfile=/srv/routes\n", {"routes": "/srv/routes"}),
        ("; comment\n\nkey_before_any_section=1\n", {}),
    ],
)
def test_mappings(text: str, expected: dict[str, str]) -> None:
    assert options(text) == expected


def test_report_lines() -> None:
    conf = parse_pushpin_config(
        "[runner]\nlog_level=proxy:3,2\nnew_thing=1\n[handler]\nmessage_rate=10\n", "p.conf"
    )
    assert conf.report() == [
        "runner/log_level = 'proxy:3,2' -> --log-level 2 (per-service levels proxy:3 ignored)",
        "runner/new_thing ignored: not a setting gripcore knows",
        "handler/message_rate ignored: no delivery rate limit: slow clients are handled by "
        "--slow-consumer-policy",
    ]


def test_include_is_read_for_what_the_file_does_not_set() -> None:
    files = {"/etc/pushpin/extra.conf": "[proxy]\nsig_iss=included\ndebug=true\n"}

    def read(path: str) -> str:
        try:
            return files[path]
        except KeyError:
            raise OSError(2, "No such file or directory") from None

    text = "[global]\ninclude=extra.conf\n[proxy]\ndebug=false\n"
    conf = parse_pushpin_config(text, "/etc/pushpin/pushpin.conf", read_file=read)
    assert {f: v for f, (v, _) in conf.options().items()} == {
        "debug": "false",
        "sig-iss": "included",
    }
    assert conf.options()["sig-iss"][1] == "/etc/pushpin/extra.conf:2: [proxy] sig_iss"
    assert conf.report()[0] == (
        "global/include ignored: /etc/pushpin/extra.conf read for what this file does not set"
    )
    missing = parse_pushpin_config("[global]\ninclude=/nope.conf\n", "p.conf", read_file=read)
    assert missing.report() == [
        "global/include ignored: cannot read /nope.conf: No such file or directory"
    ]
    unread = parse_pushpin_config("[global]\ninclude=/x.conf\n", "p.conf")
    assert unread.report() == [
        "global/include ignored: cannot read /x.conf: includes are not read here"
    ]
    internal = parse_pushpin_config("[global]\ninclude=internal.conf\n", "p.conf", read_file=read)
    assert internal.options() == {}


def test_rundir_and_port_offset_are_resolved_in_values() -> None:
    text = (
        "[global]\nrundir=/run/pp\nport_offset=10\n"
        "[handler]\nstats_spec=ipc://{rundir}/{ipc_prefix}stats\ncommand_spec=tcp://127.0.0.1:5563\n"
        "message_wait=250\n"
    )
    conf = parse_pushpin_config(text, "p.conf")
    assert options(text) == {"message-wait": "0.25", "command-spec": "tcp://127.0.0.1:5573"}
    assert [s.raw for s in conf.settings][-3:] == [
        "ipc://{rundir}/{ipc_prefix}stats",
        "tcp://127.0.0.1:5563",
        "250",
    ]
    bad_offset = "[global]\nport_offset=x\n[handler]\npush_in_http_port=5561\n"
    assert options(bad_offset) == {"publish-listen": "127.0.0.1:5561"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[runner]\nhttp_port\n", "p.conf:2: not a [section], a comment or a key=value line"),
        ("=value\n", "p.conf:1: not a [section], a comment or a key=value line"),
        ("[runner]\nhttp_port=eighty\n", "invalid http_port: 'eighty'"),
        ("[handler]\nmessage_wait=1.5\n", "message_wait must be whole milliseconds"),
        ("x" * (MAX_PUSHPIN_CONFIG_SIZE + 1), "not a Pushpin config"),
    ],
)
def test_errors(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_pushpin_config(text, "p.conf")
    assert message in str(info.value)


def test_a_bad_publish_port_is_left_to_the_option_to_refuse() -> None:
    mapped = parse_pushpin_config("[handler]\npush_in_http_port=x\n", "p.conf").options()
    assert mapped["publish-listen"][0] == "127.0.0.1:x"
    with pytest.raises(ConfigError, match=r"p.conf:2: \[handler\] push_in_http_port"):
        load_config({}, {}, pushpin_options=mapped)


def test_without_pyzmq_the_zeromq_sockets_are_reported_not_mapped() -> None:
    conf = parse_pushpin_config(SHIPPED, "/etc/pushpin/pushpin.conf", zmq=False)
    assert not {"push-in-spec", "push-in-sub-spec", "command-spec"} & set(conf.options())
    assert (
        "handler/push_in_spec ignored: ZeroMQ publishing needs pyzmq: pip install 'gripcore[zmq]'"
        in conf.report()
    )
    assert options("[handler]\npush_in_sub_specs=tcp://a:1, tcp://b:2\n") == {
        "push-in-sub-spec": "tcp://a:1"
    }
