"""The benchmark origin: a tiny asyncio HTTP/1.1 server that tells a GRIP proxy to hold.

* ``GET`` (any path): ``200`` with ``Grip-Hold: stream`` and ``Grip-Channel: CHANNEL`` as a
  Server-Sent Events response, so the proxy keeps the client and streams published items.
* ``POST`` with ``Content-Type: application/websocket-events`` (WebSocket-over-HTTP): for a body
  holding ``OPEN`` it answers ``OPEN`` plus a ``c:{"type":"subscribe"}`` control message (with
  ``Sec-WebSocket-Extensions: grip``); anything later gets an empty event list.

Both gripcore and Pushpin use this origin in the benchmark, so origin cost is the same for
both. Keep-alive and pipelined requests are served; request heads and bodies are bounded.

Run: ``python bench/origin.py --port 9191 [--channel bench]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json

# Largest request head or body the origin accepts; the proxies send far less.
MAX_REQUEST = 64 * 1024


class OriginProtocol(asyncio.Protocol):
    """Serves one proxy connection: parse each request head (and body), answer at once."""

    def __init__(self, stream_response: bytes, woh_open: bytes, woh_empty: bytes) -> None:
        self.stream_response = stream_response
        self.woh_open = woh_open
        self.woh_empty = woh_empty
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buf += data
        out: list[bytes] = []
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                break
            head = bytes(self.buf[:end]).lower()
            length = 0
            at = head.find(b"\r\ncontent-length:")
            if at >= 0:
                stop = head.find(b"\r\n", at + 2)
                length = int(head[at + 17 : stop if stop >= 0 else len(head)].strip() or b"0")
            if end + 4 + length > len(self.buf):
                break
            body = bytes(self.buf[end + 4 : end + 4 + length])
            del self.buf[: end + 4 + length]
            if head.startswith(b"post") and b"application/websocket-events" in head:
                out.append(self.woh_open if body.startswith(b"OPEN") else self.woh_empty)
            else:
                out.append(self.stream_response)
        if len(self.buf) > MAX_REQUEST and self.transport is not None:
            self.transport.close()
            return
        if out and self.transport is not None:
            self.transport.write(b"".join(out))


def responses(channel: str) -> tuple[bytes, bytes, bytes]:
    """Pre-encoded answers: the SSE hold, the WebSocket-over-HTTP OPEN, an empty event list."""
    stream = (
        "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
        f"Grip-Hold: stream\r\nGrip-Channel: {channel}\r\nContent-Length: 0\r\n\r\n"
    ).encode()
    control = "c:" + json.dumps({"type": "subscribe", "channel": channel}, separators=(",", ":"))
    events = f"OPEN\r\nTEXT {len(control):x}\r\n{control}\r\n".encode()
    woh_head = (
        "HTTP/1.1 200 OK\r\nContent-Type: application/websocket-events\r\n"
        "Sec-WebSocket-Extensions: grip\r\nContent-Length: {}\r\n\r\n"
    )
    woh_open = woh_head.format(len(events)).encode() + events
    woh_empty = woh_head.format(0).encode()
    return stream, woh_open, woh_empty


async def serve(host: str, port: int, channel: str) -> None:
    stream, woh_open, woh_empty = responses(channel)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: OriginProtocol(stream, woh_open, woh_empty), host, port, backlog=4096
    )
    print(f"origin listening on {host}:{port}", flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9191)
    parser.add_argument("--channel", default="bench")
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.host, args.port, args.channel))


if __name__ == "__main__":
    main()
