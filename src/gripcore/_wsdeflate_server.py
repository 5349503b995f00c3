"""The wsproto side of permessage-deflate (see `_wsdeflate` for the strategy): the extension a
client WebSocket's wsproto runs, and the negotiation of a handshake's offers."""

from __future__ import annotations

import zlib
from collections.abc import Sequence

from wsproto.extensions import PerMessageDeflate
from wsproto.frame_protocol import CloseReason, FrameDecoder, FrameProtocol, Opcode, RsvBits

from ._wsdeflate import _WINDOW_BITS, RESPONSE, parse_deflate_offer

__all__ = ["ServerDeflate", "negotiate"]


class ServerDeflate(PerMessageDeflate):
    """wsproto's permessage-deflate, as a server that compresses each message once.

    `accept` takes only offers it can honour (see the module docstring) and answers
    `RESPONSE`; inbound messages inflate to at most `max_message` bytes, else the connection
    fails with 1009 (MESSAGE_TOO_BIG).
    """

    def __init__(self, max_message: int) -> None:
        super().__init__(server_no_context_takeover=True, client_no_context_takeover=True)
        self.max_message = max_message
        self._inbound_size = 0

    def accept(self, offer: str) -> bool | str | None:
        params = parse_deflate_offer(offer)
        if params is None:
            return None
        if params.get("server_max_window_bits", _WINDOW_BITS) != _WINDOW_BITS:
            return None
        self._enabled = True
        return RESPONSE.removeprefix("permessage-deflate; ")

    def frame_inbound_header(
        self,
        proto: FrameDecoder | FrameProtocol,
        opcode: Opcode,
        rsv: RsvBits,
        payload_length: int,
    ) -> CloseReason | RsvBits:
        if self._inbound_compressed is None:  # a message begins
            self._inbound_size = 0
        return super().frame_inbound_header(proto, opcode, rsv, payload_length)

    def frame_inbound_payload_data(
        self, proto: FrameDecoder | FrameProtocol, data: bytes
    ) -> bytes | CloseReason:
        if not self._inbound_compressed or not self._inbound_is_compressible:
            return data
        assert self._decompressor is not None
        room = self.max_message - self._inbound_size
        try:
            out = self._decompressor.decompress(bytes(data), room + 1)
        except zlib.error:
            return CloseReason.INVALID_FRAME_PAYLOAD_DATA
        self._inbound_size += len(out)
        if self._inbound_size > self.max_message or self._decompressor.unconsumed_tail:
            return CloseReason.MESSAGE_TOO_BIG
        return out


def negotiate(
    headers: Sequence[tuple[bytes, bytes]], max_message: int
) -> tuple[ServerDeflate, bytes] | None:
    """The first `permessage-deflate` offer of a client's handshake (its
    `Sec-WebSocket-Extensions` headers, in order) that can be honoured: the extension for the
    connection's wsproto, and the value of the `Sec-WebSocket-Extensions` answer. None when the
    client offered none that can be."""
    for name, value in headers:
        if name.lower() != b"sec-websocket-extensions":
            continue
        for offer in value.decode("latin-1").split(","):
            if offer.split(";", 1)[0].strip().lower() != "permessage-deflate":
                continue
            extension = ServerDeflate(max_message)
            if extension.accept(offer) is not None:
                return extension, RESPONSE.encode("ascii")
    return None
