"""pyzmq for the ZeroMQ ingress drivers, imported only when `--push-in-spec` or
`--push-in-sub-spec` is set (the `zmq` extra): a clear error when it is missing."""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["MISSING_ZMQ", "import_zmq", "push_message"]

MISSING_ZMQ = (
    "--push-in-spec, --push-in-sub-spec and --command-spec need pyzmq: install gripcore[zmq]"
)


def import_zmq(flavour: str) -> ModuleType:
    """`zmq.asyncio` or `zmq.green`. Raises OSError (a start-up error) without pyzmq."""
    try:
        return importlib.import_module(flavour)
    except ImportError:
        raise OSError(MISSING_ZMQ) from None


def push_message(spec: str, frame: bytes, timeout: float) -> None:
    """Send one message to a PULL socket at `spec` (what `gripcore publish --spec tcp://...`
    does, as pushpin-publish): connect a PUSH socket, send, and wait up to `timeout` seconds
    for a peer to take it. Raises OSError (pyzmq missing, no peer in time, a bad spec)."""
    zmq = import_zmq("zmq")
    context = zmq.Context()
    sock = context.socket(zmq.PUSH)
    wait_ms = max(1, round(timeout * 1000))
    sock.sndtimeo = wait_ms
    sock.immediate = True  # queue only on a live connection, so "nobody there" is seen
    sent = False
    try:
        sock.connect(spec)
        sock.send(frame)
        sent = True
    except zmq.Again:
        raise OSError(f"no ZeroMQ peer took the message within {timeout:g} s") from None
    except zmq.ZMQError as exc:
        raise OSError(f"ZeroMQ: {exc}") from None
    finally:
        # a sent message is flushed before the socket goes (up to the timeout)
        sock.close(linger=wait_ms if sent else 0)
        context.term()
