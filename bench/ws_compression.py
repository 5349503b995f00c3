"""WebSocket compression cost in the fan-out (issue 19), in process: one published message to N
WebSocket subscribers through the real Hub, uncompressed, compressed once (what gripcore does:
no context takeover), and compressed per connection with context takeover (what a server that
honoured context takeover would pay), side by side in one run.

    .venv/bin/python bench/ws_compression.py [--subscribers 5000] [--messages 200]

Reports per published message: the time for the hub's publish (encode + fan-out into every
buffer) and the bytes queued per subscriber. The send() of those bytes is the same per
delivery whatever the framing, so smaller frames can only lower it.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
import zlib

from gripcore._hub import Framing, Hub, Subscriber, Transport
from gripcore._items import Item, WsMessageFormat
from gripcore._speedups import COMPILED, encode_ws_frame


def message(n: int) -> bytes:
    """A realistic JSON event (~1 KB): a chat/feed item with repeated keys."""
    items = [
        {"user": f"user-{i % 7}", "text": f"message {n} part {i}", "likes": i} for i in range(12)
    ]
    return json.dumps({"type": "update", "seq": n, "items": items}).encode()


def run_hub(subscribers: int, messages: int, framing: Framing) -> tuple[float, float]:
    hub = Hub(max_output_buffer=0)
    subs = [Subscriber(Transport.WEBSOCKET) for _ in range(subscribers)]
    for sub in subs:
        hub.set_framing(sub, framing)
        hub.subscribe(sub, "c")
    payloads = [message(n) for n in range(messages)]
    queued = 0
    start = time.perf_counter()
    for payload in payloads:
        hub.publish(Item(channel="c", ws_message=WsMessageFormat(content=payload)))
        queued += len(subs[0].outbuf)
        for sub in subs:
            sub.outbuf.clear()
    elapsed = time.perf_counter() - start
    return elapsed / messages, queued / messages


def run_takeover(subscribers: int, messages: int) -> tuple[float, float]:
    """Per-connection compressors with context takeover: one compress per delivery."""
    compressors = [zlib.compressobj(6, zlib.DEFLATED, -15) for _ in range(subscribers)]
    payloads = [message(n) for n in range(messages)]
    outbufs = [bytearray() for _ in range(subscribers)]
    queued = 0
    start = time.perf_counter()
    for payload in payloads:
        for compressor, buf in zip(compressors, outbufs, strict=True):
            data = compressor.compress(payload) + compressor.flush(zlib.Z_SYNC_FLUSH)
            buf += encode_ws_frame(1, data[:-4])
        queued += len(outbufs[0])
        for buf in outbufs:
            buf.clear()
    elapsed = time.perf_counter() - start
    return elapsed / messages, queued / messages


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subscribers", type=int, default=5000)
    parser.add_argument("--messages", type=int, default=200)
    args = parser.parse_args()
    n, m = args.subscribers, args.messages
    print(f"# {platform.python_implementation()} {platform.python_version()}, compiled={COMPILED}")
    print(f"# {n} subscribers, {m} messages of ~{len(message(0))} bytes")
    rows = [
        ("uncompressed", *run_hub(n, m, Framing.WEBSOCKET)),
        ("compressed once (gripcore)", *run_hub(n, m, Framing.WEBSOCKET_DEFLATE)),
    ]
    takeover_n = min(n, 1000)  # per-connection zlib state: 1,000 is enough to show the slope
    per_msg, size = run_takeover(takeover_n, m)
    rows.append(
        (
            f"per connection, context takeover (x{n / takeover_n:g} scaled)",
            per_msg * n / takeover_n,
            size,
        )
    )
    base = rows[0][1]
    print("| framing | time per publish | bytes per subscriber | vs uncompressed |")
    print("|---|---|---|---|")
    for name, seconds, size in rows:
        print(f"| {name} | {seconds * 1e3:.2f} ms | {size:.0f} | {seconds / base:.2f}x |")


if __name__ == "__main__":
    main()
