"""permessage-deflate (RFC 7692) for client WebSockets: compress each published message once.

Strategy. A published message goes to many WebSockets. With context takeover, each connection's
compressor depends on what that connection was sent before, so every delivery would cost a
compression and every connection 256 KB or more of zlib state. gripcore answers every offer it
accepts with `server_no_context_takeover` (RFC 7692 section 7.1.1.1: the server may always
include it), so a message compresses to the same bytes for every subscriber: the hub compresses
once per message (`deflate_message`) and fans out one frame, as for uncompressed messages. It
also answers with `client_no_context_takeover` (section 7.1.1.2: the server may include it even
when the offer does not), so no connection keeps a decompressor between messages either.

Client messages are inflated incrementally with a bound (`ServerDeflate`): a frame that would
inflate past the connection's message limit is refused with 1009 before the bytes exist, so a
compression bomb (a few KB that inflate to gigabytes) costs nothing.

Offers are parsed strictly (section 7.1: parameters without duplicates, known names, values in
range); an offer gripcore cannot honour is declined, never an error: the client then goes on
uncompressed. An offer whose `server_max_window_bits` is under 15 is declined too: honouring it
would need a compression per window size.

The wsproto side (the extension a connection's wsproto runs, and the negotiation) is in
`_wsdeflate_server`, so that the hub, which compresses, does not import wsproto. No I/O.
"""

from __future__ import annotations

import zlib
from typing import Final

from ._speedups import encode_ws_frame, ws_frame_header

__all__ = [
    "DEFLATE_LEVEL",
    "RESPONSE",
    "deflate_frame",
    "deflate_message",
    "parse_deflate_offer",
]

# zlib's level 6 is its own default and what browsers use; levels above it cost much more CPU
# per message for a few percent. A message is compressed once for all its subscribers.
DEFLATE_LEVEL: Final = 6
# The window a message is compressed with: 15 bits (32 KiB), what every client accepts
# (RFC 7692 section 7.1.2.1: absent server_max_window_bits means up to 15).
_WINDOW_BITS: Final = 15
_TAIL: Final = b"\x00\x00\xff\xff"
_PARAMS: Final = frozenset(
    {
        "server_no_context_takeover",
        "client_no_context_takeover",
        "server_max_window_bits",
        "client_max_window_bits",
    }
)
RESPONSE: Final = "permessage-deflate; server_no_context_takeover; client_no_context_takeover"


def parse_deflate_offer(offer: str) -> dict[str, int | None] | None:
    """The parameters of one `permessage-deflate` offer (the text after the name, or the whole
    offer with its name), or None when the offer is malformed: an unknown or repeated
    parameter, a value where none may be, a window size outside 8-15 (RFC 7692 section 7.1)."""
    parts = [p.strip() for p in offer.split(";")]
    if parts and parts[0].lower() == "permessage-deflate":
        parts = parts[1:]
    params: dict[str, int | None] = {}
    for part in parts:
        if not part:
            return None
        name, eq, value = (x.strip() for x in part.partition("="))
        name = name.lower()
        if name not in _PARAMS or name in params:
            return None
        if not eq:
            if name == "server_max_window_bits":
                return None  # section 7.1.2.1: it must have a value
            params[name] = None
            continue
        if not name.endswith("_max_window_bits"):
            return None
        value = value.strip('"')
        if not (value.isdigit() and len(value) <= 2 and 8 <= int(value) <= 15):
            return None
        params[name] = int(value)
    return params


def deflate_message(payload: bytes) -> bytes:
    """`payload` compressed as one message without context takeover (RFC 7692 section 7.2.1:
    DEFLATE, sync flush, the trailing 00 00 ff ff removed). The same bytes for every
    subscriber, whatever it was sent before."""
    compressor = zlib.compressobj(DEFLATE_LEVEL, zlib.DEFLATED, -_WINDOW_BITS)
    data = compressor.compress(payload) + compressor.flush(zlib.Z_SYNC_FLUSH)
    return data[:-4] if data.endswith(_TAIL) else data


def deflate_frame(opcode: int, payload: bytes) -> bytes:
    """One final, unmasked frame carrying `payload` compressed (RSV1 set, section 6): the frame
    the hub fans out to every subscriber that negotiated permessage-deflate. Control frames
    (ping, pong, close) go uncompressed: RFC 7692 section 6.1 applies the extension to data
    messages only."""
    if opcode >= 0x8:
        return encode_ws_frame(opcode, payload)
    data = deflate_message(payload)
    header = bytearray(ws_frame_header(opcode, len(data)))
    header[0] |= 0x40  # RSV1: "Per-Message Compressed"
    return bytes(header) + data
