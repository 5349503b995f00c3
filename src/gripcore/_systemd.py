"""systemd's service notification protocol (sd_notify(3)): whether to notify, where, what, when.

A service started with `Type=notify` gets `NOTIFY_SOCKET` (an AF_UNIX datagram socket: a path,
or `@name` in the abstract namespace) and tells systemd about itself with datagrams of
`KEY=value` lines: `READY=1` once it serves (systemd holds back units ordered after it until
then), `STOPPING=1` when it begins to shut down, and, when the unit sets `WatchdogSec=`,
`WATCHDOG=1` at least every `WATCHDOG_USEC` microseconds or systemd restarts it. sd_notify(3)
advises pinging at half that interval; `WATCHDOG_PID`, when set, names the one process meant
to ping.

The decisions live here, as values; a driver only sends `message` bytes to `address` (one
`sendto` on a datagram socket) and arms a timer for `watchdog_interval`. Sending the watchdog
ping from the driver's own event loop is the point: a loop that stops turning stops pinging.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

__all__ = ["READY", "STOPPING", "WATCHDOG", "Notifier"]

READY: Final = b"READY=1\nSTATUS=serving\n"
STOPPING: Final = b"STOPPING=1\nSTATUS=shutting down\n"
WATCHDOG: Final = b"WATCHDOG=1\n"


@dataclass(frozen=True, slots=True)
class Notifier:
    """Where systemd listens (`address`: a filesystem path, or an abstract socket name starting
    with a NUL byte) and how often to ping its watchdog (seconds; None: no watchdog)."""

    address: str
    watchdog_interval: float | None = None

    @classmethod
    def from_environ(cls, environ: Mapping[str, str], pid: int) -> Notifier | None:
        """The notifier systemd asked for in `environ`, for process `pid`; None when not run
        under systemd with `Type=notify` (no usable `NOTIFY_SOCKET`)."""
        socket = environ.get("NOTIFY_SOCKET", "")
        if socket.startswith("@"):
            socket = "\0" + socket[1:]  # the abstract namespace, as sd_notify spells it
        elif not socket.startswith("/"):
            return None  # unset, empty, or a form we do not speak (vsock:...)
        return cls(socket, _watchdog_interval(environ, pid))


def _watchdog_interval(environ: Mapping[str, str], pid: int) -> float | None:
    usec = environ.get("WATCHDOG_USEC", "")
    if not (usec.isascii() and usec.isdigit()) or int(usec) == 0:
        return None
    watchdog_pid = environ.get("WATCHDOG_PID", "")
    if watchdog_pid and watchdog_pid != str(pid):
        return None  # the watchdog is another process's to ping
    return int(usec) / 1_000_000 / 2
