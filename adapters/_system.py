"""What every driver gives the core from the operating system: files, the wall clock and
randomness for a `ProxyNode`, the routes file's change stamp, and systemd notifications (the
core's `Notifier` decides; this sends). One place, so the asyncio, gevent and ASGI drivers build
their node alike."""

from __future__ import annotations

import logging
import os
import resource
import socket
import ssl
import time
from collections.abc import Callable

from gripcore._config import Config
from gripcore._node import ProxyNode
from gripcore._systemd import Notifier

__all__ = [
    "descriptor_limit",
    "file_stamp",
    "read_file",
    "sd_notify",
    "server_tls_context",
    "system_node",
    "systemd_notifier",
]

log = logging.getLogger("gripcore")


def read_file(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def file_stamp(path: str) -> tuple[float, int] | None:
    """What tells a changed routes file (polled): modification time and size; None if absent."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_mtime, st.st_size


def descriptor_limit() -> int | None:
    """The process's soft RLIMIT_NOFILE (None: unlimited)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return None if soft == resource.RLIM_INFINITY else soft


def system_node(config: Config, clock: Callable[[], float], *, accepts: bool = True) -> ProxyNode:
    """A node on this machine: `clock` is the driver's (the base of its timers). A driver that
    `accepts` client sockets itself gets --max-connections fitted to the descriptor limit (an
    embedded one's server owns its sockets and limits)."""
    node = ProxyNode(
        config,
        clock=clock,
        wall_clock=time.time,
        read_file=read_file,
        is_file=os.path.isfile,
        random_bytes=os.urandom,
    )
    if accepts:
        node.fit_descriptor_limit(descriptor_limit())
    return node


def systemd_notifier() -> Notifier | None:
    """The systemd notifier this process was started with (`Type=notify`), if any."""
    return Notifier.from_environ(os.environ, os.getpid())


def sd_notify(notifier: Notifier | None, message: bytes) -> None:
    """Send one notification datagram; a failure is logged, never raised (systemd may be gone
    while we shut down, and serving matters more than telling)."""
    if notifier is None:
        return
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.sendto(message, notifier.address)
    except OSError as exc:
        log.warning("cannot notify systemd at %r: %s", notifier.address, exc)


def server_tls_context(config: Config) -> ssl.SSLContext:
    """The TLS context of the client listeners (--tls-cert, --tls-key): TLS 1.2 at least,
    ALPN offering http/1.1. Read anew on each call, so SIGHUP can swap a renewed certificate
    in for new connections. Raises OSError (a file that cannot be read) or ssl.SSLError."""
    assert config.tls_cert is not None and config.tls_key is not None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(["http/1.1"])
    context.load_cert_chain(config.tls_cert, config.tls_key)
    return context
