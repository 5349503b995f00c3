"""What the proxy sends to the origin, and what it makes of the origin's answer.

Request side (pushpin-behaviour.md section 1.1): hop-by-hop and encoding headers are removed,
every client `Grip-*` header is stripped (clients must not inject `Grip-Last`, `Grip-Sig`...),
`X-Forwarded-Proto` is replaced by ours (set only for TLS clients, as Pushpin's default
`set_x_forwarded_protocol=proto-only`), `X-Forwarded-For` passes through unless a rule says
otherwise, route `header=` options are applied, and GRIP routes get `Grip-Feature` and a fresh
`Grip-Sig`. WebSocket requests also lose the client's `Sec-WebSocket-Extensions` and offer
`grip` instead.

Response side: `classify_response` says whether the origin answered with GRIP instructions
(then they are parsed, or `InstructError` is raised: the adapter answers 502) or with a plain
response to relay (hop-by-hop headers removed, the body untouched).

The adapter supplies the token (`_sig.mint_sig`, which needs the wall clock) and the peer
address; nothing here performs I/O.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from ._errors import LocalProtocolError
from ._instruct import Instruct, is_grip_response, parse_instruct, strip_hop_by_hop
from ._routes import Target

__all__ = [
    "GRIP_FEATURES",
    "Headers",
    "OriginRequest",
    "Passthrough",
    "app_request_headers",
    "classify_response",
    "forwarded_for",
    "grip_last_headers",
    "link_client_headers",
    "link_destination",
    "local_link_target",
    "next_link_instruct",
    "origin_request_headers",
]

Headers = list[tuple[bytes, bytes]]

# What this proxy supports, announced to origins in `Grip-Feature` (Pushpin 1.41's list minus
# the 2.0-only http filters, and minus `session`, which needs a state service we do not run).
GRIP_FEATURES = (
    b"status, link:next, link:gone, filter:skip-self, filter:skip-users, "
    b"filter:require-sub, filter:build-id, filter:var-subst"
)

# Request headers that describe one hop, never forwarded (RFC 9110 section 7.6.1, plus the
# encoding headers Pushpin drops so that origins answer with identity bodies it can relay).
_HOP_BY_HOP_REQUEST = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"accept-encoding",
        b"content-encoding",
        b"expect",
        b"content-length",
        b"x-forwarded-proto",
        b"x-forwarded-protocol",
    }
)

# Dropped from WebSocket handshakes and WebSocket-over-HTTP requests on top of the above.
_WEBSOCKET_REQUEST_DROP = frozenset(
    {
        b"sec-websocket-extensions",
        b"sec-websocket-key",
        b"sec-websocket-version",
        b"accept",
        b"connection-id",
    }
)


# What a header value cannot carry (RFC 9110 section 5.5: no CTLs except HTAB).
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


@dataclass(frozen=True, slots=True)
class OriginRequest:
    """A request ready to send: method, request target, headers (with Content-Length), body."""

    method: bytes
    target: bytes
    headers: Headers
    body: bytes


@dataclass(frozen=True, slots=True)
class Passthrough:
    """A non-GRIP origin response, to relay to the client as it is (hop-by-hop removed)."""

    status: int
    reason: bytes
    headers: Headers


def _connection_tokens(headers: Iterable[tuple[bytes, bytes]]) -> set[bytes]:
    tokens: set[bytes] = set()
    for name, value in headers:
        if name.lower() == b"connection":
            tokens.update(t.strip().lower() for t in value.split(b",") if t.strip())
    return tokens


def forwarded_for(headers: Sequence[tuple[bytes, bytes]], peer: str, rule: str) -> bytes | None:
    """The X-Forwarded-For value for a rule of Pushpin's form (`truncate:N`, `append`, both
    comma-separated, in any order; empty = pass through). As in Pushpin, the existing values are
    truncated to the last N first, then the peer address (if known) is appended. Returns None
    when no header should be sent; raises `LocalProtocolError` for an invalid rule."""
    values = [
        v.strip()
        for name, value in headers
        if name.lower() == b"x-forwarded-for"
        for v in value.split(b",")
        if v.strip()
    ]
    keep: int | None = None
    append = False
    for part in (p.strip() for p in rule.split(",")):
        if not part:
            continue
        if part == "append":
            append = True
        elif part.startswith("truncate:") and part[9:].isascii() and part[9:].isdigit():
            keep = int(part[9:])
        else:
            raise LocalProtocolError(f"invalid x_forwarded_for rule {part!r}")
    if keep is not None:
        values = values[len(values) - keep :] if keep else []
    if append and peer:
        values.append(peer.encode("ascii", "replace"))
    return b", ".join(values) if values else None


def origin_request_headers(
    client_headers: Sequence[tuple[bytes, bytes]],
    *,
    body_length: int,
    peer: str = "",
    client_tls: bool = False,
    grip: bool = True,
    sig_token: bytes | None = None,
    websocket: bool = False,
    x_forwarded_for: str = "",
    route_headers: Sequence[tuple[str, str]] = (),
    host: bytes | None = None,
    extra: Sequence[tuple[bytes, bytes]] = (),
    trusted_client: bool = False,
) -> Headers:
    """Headers for the origin request made on behalf of a client.

    A `trusted_client` (a GRIP proxy in front, its Grip-Sig valid for `--upstream-key`) keeps
    its `Grip-*` headers, and none of ours are added: the answer goes back to it unprocessed,
    as Pushpin's `ProxyUtil::manipulateRequestHeaders` does. `websocket` selects the WebSocket handshake / WebSocket-over-HTTP rules; `host` overrides
    the Host header (route `as_host` or target `host=`); `extra` is appended last (for example
    `Grip-Last`, `Connection-Id`, `Meta-*`, which the caller builds).
    """
    drop = set(_HOP_BY_HOP_REQUEST) | _connection_tokens(client_headers)
    if websocket:
        drop |= _WEBSOCKET_REQUEST_DROP
    out: Headers = []
    for name, value in client_headers:
        lower = name.lower()
        if lower in drop or lower == b"x-forwarded-for":
            continue
        if lower.startswith(b"grip-") and not trusted_client:
            continue
        if websocket and lower.startswith(b"meta-"):
            continue  # clients must not inject WebSocket-over-HTTP meta
        if lower == b"host" and host is not None:
            continue
        out.append((name, value))
    if host is not None:
        out.insert(0, (b"Host", host))
    xff = forwarded_for(client_headers, peer, x_forwarded_for)
    if xff is not None:
        out.append((b"X-Forwarded-For", xff))
    if client_tls:
        out.append((b"X-Forwarded-Proto", b"wss" if websocket else b"https"))
    for rname, rvalue in route_headers:
        key = rname.lower().encode("latin-1")
        out = [(n, v) for n, v in out if n.lower() != key]
        if rvalue:
            out.append((rname.encode("latin-1"), rvalue.encode("latin-1")))
    if grip and not trusted_client:
        out.append((b"Grip-Feature", GRIP_FEATURES))
        if sig_token is not None:
            out.append((b"Grip-Sig", sig_token))
        if websocket:
            out.append((b"Sec-WebSocket-Extensions", b"grip"))
    out.extend(extra)
    if body_length or not websocket:
        out.append((b"Content-Length", str(body_length).encode("ascii")))
    return out


def link_client_headers(client_headers: Sequence[tuple[bytes, bytes]], url: str) -> Headers:
    """The client headers a link request (next or gone link) starts from: a Host alone, the
    link's authority, or the client's own Host for a link without one (a local link target).

    Pushpin makes link requests as its own, with none of the client's headers: no Cookie, no
    Last-Event-ID. An origin that reads the resume point from Last-Event-ID before its link's
    query (django-eventstream does) would otherwise answer every page of a catch-up with the
    first one. The GRIP headers (`Grip-Sig`, `Grip-Last`, ...) are added as for any request.
    """
    host = urlsplit(url).netloc.encode("latin-1")
    if not host:
        host = next((v for n, v in client_headers if n.lower() == b"host"), b"")
    return [(b"Host", host)] if host else []


def app_request_headers(
    client_headers: Sequence[tuple[bytes, bytes]],
    *,
    sig_token: bytes | None = None,
    extra: Sequence[tuple[bytes, bytes]] = (),
) -> Headers:
    """Headers of a client request handed to an application in the same process (embedded
    mode, `gripcore.asgi`): the client's own, since no hop lies between them (the server that
    parsed them already dealt with framing and hop-by-hop headers), minus every `Grip-*` header
    (clients must not inject `Grip-Last` or `Grip-Sig`), plus `Grip-Feature`, the `Grip-Sig`
    token when one is given, and `extra` (`Grip-Last`, say), as `origin_request_headers` adds
    them for a GRIP route."""
    out: Headers = [(n, v) for n, v in client_headers if not n.lower().startswith(b"grip-")]
    out.append((b"Grip-Feature", GRIP_FEATURES))
    if sig_token is not None:
        out.append((b"Grip-Sig", sig_token))
    out.extend(extra)
    return out


def grip_last_headers(prev_ids: Iterable[tuple[str, str]]) -> Headers:
    """`Grip-Last: <channel>; last-id="<id>"` for each (un-prefixed channel, id).

    A pair that a header cannot carry (a control character in the channel or id, which a
    publisher's JSON can contain) is left out rather than breaking the whole request.
    """
    out: Headers = []
    for channel, last_id in prev_ids:
        if _CONTROL.search(channel) or _CONTROL.search(last_id):
            continue
        quoted = last_id.replace("\\", "\\\\").replace('"', '\\"')
        out.append((b"Grip-Last", f'{channel}; last-id="{quoted}"'.encode()))
    return out


def classify_response(
    status: int,
    reason: bytes,
    headers: Sequence[tuple[bytes, bytes]],
    body: bytes,
    *,
    request_uri: str | None = None,
    grip: bool = True,
) -> Instruct | Passthrough:
    """GRIP instructions (parsed) or a response to relay.

    Raises `InstructError` (status hint 502) when the response is GRIP but malformed.
    `grip=False` (a `no_grip` route) relays everything, GRIP headers included.
    """
    if grip and is_grip_response(list(headers)):
        return parse_instruct(status, reason, list(headers), body, request_uri=request_uri)
    return Passthrough(status, reason, strip_hop_by_hop(list(headers)))


def link_destination(
    url: str,
    *,
    request_host: str,
    targets: Sequence[Target],
    allowed: Sequence[tuple[str, int]] = (),
) -> tuple[Target, bytes] | None:
    """Where an origin-supplied link (`Grip-Link` next or gone) may be requested.

    A link to the client's own host (same origin) or to one of the route's targets goes to a
    route target, with the link's path and query; a link to a host:port the operator listed in
    `allowed` goes there; anything else is refused (None), so that an origin cannot make the
    proxy reach arbitrary hosts (no server-side request forgery). Relative links must already
    be resolved against the request URI.
    """
    parts = urlsplit(url)
    if not targets or parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return None
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    host = parts.hostname.lower()
    net_targets = [t for t in targets if t.kind == "net"]
    for target in net_targets:
        if target.host.lower() == host and target.port == port:
            return target, path.encode("latin-1", "replace")
    same_origin = request_host.lower().rstrip(".")
    if same_origin and (parts.netloc.lower() == same_origin or host == same_origin):
        chosen = net_targets[0] if net_targets else targets[0]
        return chosen, path.encode("latin-1", "replace")
    if any(h.lower() == host and p == port for h, p in allowed):
        return Target(host, port, ssl=parts.scheme == "https"), path.encode("latin-1", "replace")
    return None


def local_link_target(url: str, *, request_uri: str) -> bytes | None:
    """The request target (path and query) of an origin-supplied link that points back at the
    application itself, or None. For embedded mode, where the origin is the application in the
    same process: a link is followed there only when its scheme, host and port are those of
    the request it came with (`Grip-Link`s are already resolved against that request's URI),
    so that an origin cannot make the proxy reach anywhere else. Never raises."""
    link, request = urlsplit(url), urlsplit(request_uri)
    default = {"http": 80, "https": 443}
    try:
        same = (link.scheme, link.hostname, link.port or default.get(link.scheme)) == (
            request.scheme,
            request.hostname,
            request.port or default.get(request.scheme),
        )
    except ValueError:  # a port that is not a number
        return None
    if not same or not link.hostname:
        return None
    target = (link.path or "/") + (f"?{link.query}" if link.query else "")
    return target.encode("latin-1", "replace")


def next_link_instruct(
    status: int,
    reason: bytes,
    headers: Sequence[tuple[bytes, bytes]],
    body: bytes,
    *,
    request_uri: str | None = None,
) -> Instruct | None:
    """What a stream hold makes of the answer to its next-link request (pushpin-behaviour.md
    section 3.4): None when the fetch failed (a status other than 2xx), the body as more stream
    content with no hold for a plain answer, else the GRIP instructions. Raises `InstructError`
    for GRIP instructions that do not parse (the fetch failed too)."""
    if not 200 <= status < 300:
        return None
    if not is_grip_response(list(headers)):
        return Instruct(status=status, reason=reason, body=body)
    return parse_instruct(status, reason, list(headers), body, request_uri=request_uri)
