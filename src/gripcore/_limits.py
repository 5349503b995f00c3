"""Per-client limits: concurrent connections and new connections per second per client address.

Strategy. A push proxy holds connections for a long time, so one client (a script, a browser
tab reopening in a loop, an attacker) can take a large share of `--max-connections`. These
limits bound each client address: `max_per_ip` connections at once and `rate_per_ip` new ones a
second (a token bucket whose burst is one second's worth), refused with 429 and `Retry-After`,
as nginx's `limit_conn`/`limit_req` do.

The client address is the socket's peer, unless the peer is a trusted proxy (`trusted_proxies`,
networks such as the load balancer in front): then each request names its client in
`X-Forwarded-For`, read from the right, skipping trusted hops (the rightmost untrusted address is
the one the trusted proxy saw; what is further left is the client's own claim). Such a request
counts against its client while it is handled or held; the proxy's connection itself is not
counted.

Everything is bounded: the counts hold only addresses with live connections, and the rate
buckets are swept once they are full again (an address that stopped connecting costs nothing),
never keeping more than MAX_TRACKED_ADDRESSES of them.

No I/O: `now` is an argument; the connection asks, writes the 429 and tells `release`.
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

from ._errors import LocalProtocolError

__all__ = ["MAX_TRACKED_ADDRESSES", "ClientLimits", "parse_networks"]

# Rate buckets kept at once. An address's bucket is only needed while it is not full; past this
# many the full ones are swept, and if none is full (a flood from many addresses) the oldest go:
# a few MB at most, whatever the number of addresses.
MAX_TRACKED_ADDRESSES: Final = 100_000

_Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(texts: Sequence[str]) -> tuple[_Network, ...]:
    """`10.0.0.0/8`, `127.0.0.1`, `::1` ... as networks. Raises LocalProtocolError naming the
    one that is not an address or network."""
    out: list[_Network] = []
    for text in texts:
        try:
            out.append(ipaddress.ip_network(text.strip(), strict=False))
        except ValueError:
            raise LocalProtocolError(f"not an IP address or network: {text!r}") from None
    return tuple(out)


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        address = ipaddress.ip_address(text.strip().strip("[]"))
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


@dataclass
class ClientLimits:
    """The limits and what each client address holds. 0 turns a limit off."""

    max_per_ip: int = 0
    rate_per_ip: float = 0.0
    trusted_proxies: tuple[_Network, ...] = ()
    refused_connections: int = 0
    refused_rate: int = 0
    _counts: dict[str, int] = field(default_factory=dict)
    _buckets: dict[str, tuple[float, float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.max_per_ip < 0 or not 0 <= self.rate_per_ip < math.inf:
            raise LocalProtocolError("per-client limits must be >= 0 (0 is off)")

    @property
    def enabled(self) -> bool:
        return bool(self.max_per_ip or self.rate_per_ip)

    def is_trusted_proxy(self, peer: str) -> bool:
        address = _address(peer)
        return address is not None and any(address in net for net in self.trusted_proxies)

    def client_address(self, peer: str, forwarded_for: Sequence[bytes]) -> str:
        """Who a request comes from: `peer`, or, from a trusted proxy, the rightmost address of
        `X-Forwarded-For` (all its values, in order) that is not itself a trusted proxy. A
        value that is not an address ends the walk there (that hop is the client)."""
        if not self.is_trusted_proxy(peer):
            return peer
        hops = [hop for value in forwarded_for for hop in value.decode("latin-1").split(",")]
        client = peer
        for hop in reversed(hops):
            address = _address(hop)
            if address is None:
                return hop.strip() or client
            client = str(address)
            if not any(address in net for net in self.trusted_proxies):
                return client
        return client

    def acquire(self, address: str, now: float) -> float | None:
        """Count a new connection (or a proxied request) from `address`: None when admitted
        (then `release` it once), else the seconds a client should wait (Retry-After)."""
        if self.max_per_ip and self._counts.get(address, 0) >= self.max_per_ip:
            self.refused_connections += 1
            return 1.0
        if self.rate_per_ip:
            burst = max(1.0, self.rate_per_ip)
            tokens, last = self._buckets.get(address, (burst, now))
            tokens = min(burst, tokens + (now - last) * self.rate_per_ip)
            if tokens < 1.0:
                self.refused_rate += 1
                self._buckets[address] = (tokens, now)
                return (1.0 - tokens) / self.rate_per_ip
            if len(self._buckets) >= MAX_TRACKED_ADDRESSES and address not in self._buckets:
                self._sweep(now, burst)
            self._buckets[address] = (tokens - 1.0, now)
        self._counts[address] = self._counts.get(address, 0) + 1
        return None

    def release(self, address: str) -> None:
        """The connection or request `acquire` admitted has ended."""
        left = self._counts.get(address, 0) - 1
        if left > 0:
            self._counts[address] = left
        else:
            self._counts.pop(address, None)

    def connections_of(self, address: str) -> int:
        return self._counts.get(address, 0)

    def _sweep(self, now: float, burst: float) -> None:
        full = [
            a
            for a, (t, last) in self._buckets.items()
            if t + (now - last) * self.rate_per_ip >= burst
        ]
        for address in full:
            del self._buckets[address]
        while len(self._buckets) >= MAX_TRACKED_ADDRESSES:  # none full: drop the oldest
            del self._buckets[next(iter(self._buckets))]
