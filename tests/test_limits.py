"""Per-client limits (`_limits`): counts, rate buckets, trusted proxies, bounded memory."""

from __future__ import annotations

import pytest

from gripcore import _limits
from gripcore._errors import LocalProtocolError
from gripcore._limits import ClientLimits, parse_networks


def test_off_by_default() -> None:
    limits = ClientLimits()
    assert not limits.enabled
    assert all(limits.acquire("1.2.3.4", 0.0) is None for _ in range(1000))


def test_concurrent_connections_per_address() -> None:
    limits = ClientLimits(max_per_ip=2)
    assert limits.enabled
    assert limits.acquire("1.2.3.4", 0.0) is None
    assert limits.acquire("1.2.3.4", 0.0) is None
    assert limits.acquire("1.2.3.4", 0.0) == 1.0
    assert limits.acquire("5.6.7.8", 0.0) is None  # another address is not concerned
    limits.release("1.2.3.4")
    assert limits.connections_of("1.2.3.4") == 1
    assert limits.acquire("1.2.3.4", 0.0) is None
    for _ in range(2):
        limits.release("1.2.3.4")
    limits.release("1.2.3.4")  # one release too many is harmless
    assert limits.connections_of("1.2.3.4") == 0 and "1.2.3.4" not in limits._counts
    assert (limits.refused_connections, limits.refused_rate) == (1, 0)


def test_new_connections_per_second_with_a_burst_of_one_seconds_worth() -> None:
    limits = ClientLimits(rate_per_ip=2.0)
    assert [limits.acquire("a", 10.0) for _ in range(3)] == [None, None, 0.5]
    assert limits.acquire("a", 10.25) == pytest.approx(0.25)  # half a token back
    assert limits.acquire("a", 10.5) is None
    slow = ClientLimits(rate_per_ip=0.5)  # under one a second: a burst of one
    assert [slow.acquire("a", 0.0), slow.acquire("a", 1.0)] == [None, 1.0]
    assert slow.acquire("a", 2.0) is None
    assert limits.refused_rate == 2


def test_both_limits_refusing_counts_the_connection_limit_first() -> None:
    limits = ClientLimits(max_per_ip=1, rate_per_ip=100.0)
    assert limits.acquire("a", 0.0) is None
    assert limits.acquire("a", 0.0) == 1.0
    assert (limits.refused_connections, limits.refused_rate) == (1, 0)


@pytest.mark.parametrize(
    ("peer", "forwarded", "client"),
    [
        ("1.2.3.4", [b"9.9.9.9"], "1.2.3.4"),  # not a trusted proxy: its word is not taken
        ("10.0.0.1", [b"1.2.3.4"], "1.2.3.4"),
        ("10.0.0.1", [b"6.6.6.6, 1.2.3.4, 10.0.0.2"], "1.2.3.4"),  # rightmost untrusted
        ("10.0.0.1", [b"6.6.6.6", b"1.2.3.4"], "1.2.3.4"),  # several headers, in order
        ("10.0.0.1", [b"10.0.0.3, 10.0.0.2"], "10.0.0.3"),  # all trusted: the furthest one
        ("10.0.0.1", [], "10.0.0.1"),  # nothing forwarded: the proxy itself
        ("10.0.0.1", [b"unknown, 10.0.0.2"], "unknown"),  # not an address: the walk ends there
        ("10.0.0.1", [b", 10.0.0.2"], "10.0.0.2"),
        ("::ffff:10.0.0.1", [b"[2001:db8::1]"], "2001:db8::1"),  # mapped IPv4; bracketed IPv6
        ("::1", [b"1.2.3.4"], "1.2.3.4"),
        ("not-an-address", [b"1.2.3.4"], "not-an-address"),
    ],
)
def test_client_address(peer: str, forwarded: list[bytes], client: str) -> None:
    limits = ClientLimits(max_per_ip=1, trusted_proxies=parse_networks(["10.0.0.0/8", "::1"]))
    assert limits.client_address(peer, forwarded) == client


def test_parse_networks_and_bad_limits() -> None:
    assert [str(n) for n in parse_networks([" 10.1.2.3/8", "::1"])] == ["10.0.0.0/8", "::1/128"]
    with pytest.raises(LocalProtocolError, match="not an IP address or network: 'x'"):
        parse_networks(["x"])
    for bad in ({"max_per_ip": -1}, {"rate_per_ip": -1.0}, {"rate_per_ip": float("inf")}):
        with pytest.raises(LocalProtocolError):
            ClientLimits(**bad)  # type: ignore[arg-type]


def test_rate_buckets_stay_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_limits, "MAX_TRACKED_ADDRESSES", 3)
    limits = ClientLimits(rate_per_ip=1.0)
    for address in "abc":
        assert limits.acquire(address, 0.0) is None
    # a, b and c are refilled a second later: swept to make room for d
    assert limits.acquire("d", 1.0) is None
    assert set(limits._buckets) == {"d"}
    for address in "ef":
        assert limits.acquire(address, 1.0) is None
    # none is full yet: the oldest goes
    assert limits.acquire("g", 1.0) is None
    assert list(limits._buckets) == ["e", "f", "g"]
    assert len(limits._buckets) <= 3
