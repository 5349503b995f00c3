"""The ZeroMQ publishing ingress on asyncio (zmq.asyncio): the sockets of gripcore._zmqin.

A PULL socket bound at `--push-in-spec` and a SUB socket bound at `--push-in-sub-spec`, as
Pushpin's handler binds them. Each message read goes to `ProxyNode.receive_zmq`, which
decodes, validates and publishes it (or logs and counts it); the SUB socket subscribes to the
channels the node reports through `ProxyNode.watch_channels`. pyzmq is imported only here, when
an option is set.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from gripcore._config import Config
from gripcore._node import ProxyNode
from gripcore._zmqin import SubscriptionOp, advertised_uris, handle_command, ingress_sockets

from .._zmqload import import_zmq

__all__ = ["ZmqIngress"]


log = logging.getLogger("gripcore")

# Messages a socket may queue before ZeroMQ stops taking more from publishers (Pushpin's
# DEFAULT_HWM for its push_in sockets).
RECEIVE_HWM = 1000

# Messages read in one go before the loop runs other work (about a millisecond of items).
DRAIN = 64


def _spawn(fn: Callable[..., Coroutine[Any, Any, None]], *args: Any) -> asyncio.Task[None]:
    return asyncio.ensure_future(fn(*args))


class ZmqIngress:
    """The ZeroMQ sockets of one node (none when no option is set)."""

    def __init__(self, config: Config, node: ProxyNode) -> None:
        self.config = config
        self.node = node
        self._context: Any = None
        self._sockets: list[Any] = []
        self._readers: list[asyncio.Task[None]] = []
        self._sub: Any = None
        self.endpoints: dict[str, str] = {}
        """The bound endpoint of each socket ("pull", "sub", "command"): a `tcp://HOST:*`
        spec's port."""
        self.uris: dict[str, str] = {}  # what the command socket's get-zmq-uris answers

    def start(self) -> None:
        """Bind the configured sockets and start reading. Raises OSError (pyzmq missing, an
        address that cannot be bound)."""
        config = self.config
        specs = ingress_sockets(config.push_in_spec, config.push_in_sub_spec, config.command_spec)
        if not specs:
            return
        zmq_asyncio = import_zmq("zmq.asyncio")
        import zmq

        self._context = zmq_asyncio.Context()
        for name, kind, spec in specs:
            sock = self._context.socket(getattr(zmq, kind))
            sock.linger = 0
            sock.rcvhwm = RECEIVE_HWM
            self._sockets.append(sock)
            try:
                sock.bind(spec)
            except zmq.ZMQError as exc:
                self._release()
                raise OSError(f"cannot bind the ZeroMQ {name} socket to {spec}: {exc}") from None
            self.endpoints[name] = sock.last_endpoint.decode()
            log.info("ZeroMQ %s socket: %s", name, self.endpoints[name])
            if name == "sub":
                self._sub = sock
                self.node.watch_channels(self._subscription)
            if name == "command":
                self._readers.append(_spawn(self._serve_commands, sock))
                continue
            self._readers.append(_spawn(self._read, name, sock))
        self.uris = advertised_uris({name: spec for name, _, spec in specs}, self.endpoints)

    def _subscription(self, op: SubscriptionOp) -> None:
        subscribe, topic = op
        if subscribe:
            self._sub.subscribe(topic)
        else:
            self._sub.unsubscribe(topic)

    async def _serve_commands(self, sock: Any) -> None:
        """Answer the command socket's requests (REP: one answer per request)."""
        while True:
            frames = await sock.recv_multipart()
            await sock.send(handle_command(frames[-1], self.uris))

    async def _read(self, name: str, sock: Any) -> None:
        """Wait for a message, then take what else is queued (up to DRAIN) without waiting:
        one future per message costs more than handling the item."""
        import zmq

        ready: Any = zmq.Socket.shadow(sock.underlying)  # the same socket, without futures
        while True:
            self._handle(name, await sock.recv_multipart())
            for _ in range(DRAIN):
                try:
                    frames = ready.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                self._handle(name, frames)

    def _handle(self, name: str, frames: list[bytes]) -> None:
        try:
            self.node.receive_zmq(name, frames)
        except Exception:  # one bad message must not stop the socket
            log.exception("ZeroMQ %s socket: message not handled", name)

    async def close(self) -> None:
        for task in self._readers:
            task.cancel()
        await asyncio.gather(*self._readers, return_exceptions=True)
        self.node.broker.hub.channel_listener = None
        self._release()

    def _release(self) -> None:
        for sock in self._sockets:
            sock.close(linger=0)
        self._sockets = []
        if self._context is not None:
            self._context.term()
            self._context = None
