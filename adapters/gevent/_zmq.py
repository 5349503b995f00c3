"""The ZeroMQ publishing ingress on gevent (zmq.green): the sockets of gripcore._zmqin, one
greenlet reading each. See adapters/asyncio/_zmq.py; this is the same driver with greenlets."""

from __future__ import annotations

import logging
from typing import Any

import gevent

from gripcore._config import Config
from gripcore._node import ProxyNode
from gripcore._zmqin import SubscriptionOp, advertised_uris, handle_command, ingress_sockets

from .._zmqload import import_zmq

__all__ = ["ZmqIngress"]


log = logging.getLogger("gripcore")

# Pushpin's DEFAULT_HWM for its push_in sockets.
RECEIVE_HWM = 1000

# Messages read in one go before other greenlets run (about a millisecond of items).
DRAIN = 64


class ZmqIngress:
    """The ZeroMQ sockets of one node (none when no option is set)."""

    def __init__(self, config: Config, node: ProxyNode) -> None:
        self.config = config
        self.node = node
        self._context: Any = None
        self._sockets: list[Any] = []
        self._readers: list[gevent.Greenlet] = []
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
        zmq = import_zmq("zmq.green")
        self._context = zmq.Context()
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
                self._readers.append(gevent.spawn(self._serve_commands, sock))
                continue
            self._readers.append(gevent.spawn(self._read, name, sock))
        self.uris = advertised_uris({name: spec for name, _, spec in specs}, self.endpoints)

    def _subscription(self, op: SubscriptionOp) -> None:
        subscribe, topic = op
        if subscribe:
            self._sub.subscribe(topic)
        else:
            self._sub.unsubscribe(topic)

    def _serve_commands(self, sock: Any) -> None:
        """Answer the command socket's requests (REP: one answer per request)."""
        while True:
            frames = sock.recv_multipart()
            sock.send(handle_command(frames[-1], self.uris))

    def _read(self, name: str, sock: Any) -> None:
        """Wait for a message, then take what else is queued (up to DRAIN) without waiting."""
        import zmq

        ready: Any = zmq.Socket.shadow(sock.underlying)  # the same socket, not green
        while True:
            self._handle(name, sock.recv_multipart())
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

    def close(self) -> None:
        gevent.killall(self._readers, block=True, timeout=5)
        self.node.broker.hub.channel_listener = None
        self._release()

    def _release(self) -> None:
        for sock in self._sockets:
            sock.close(linger=0)
        self._sockets = []
        if self._context is not None:
            self._context.term()
            self._context = None
