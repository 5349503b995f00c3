"""systemd notification: the core's decisions (tests/test_serve_process.py sends them for real,
to an AF_UNIX datagram socket, from `gripcore serve` on both adapters)."""

from __future__ import annotations

import pytest

from gripcore._systemd import READY, STOPPING, WATCHDOG, Notifier


def test_not_under_systemd() -> None:
    assert Notifier.from_environ({}, pid=7) is None
    assert Notifier.from_environ({"NOTIFY_SOCKET": ""}, pid=7) is None
    assert Notifier.from_environ({"NOTIFY_SOCKET": "vsock:2:1234"}, pid=7) is None


def test_socket_path_and_abstract_name() -> None:
    assert Notifier.from_environ({"NOTIFY_SOCKET": "/run/systemd/notify"}, pid=7) == Notifier(
        "/run/systemd/notify"
    )
    assert Notifier.from_environ({"NOTIFY_SOCKET": "@sd-notify"}, pid=7) == Notifier("\0sd-notify")


@pytest.mark.parametrize(
    ("environ", "interval"),
    [
        ({"WATCHDOG_USEC": "30000000"}, 15.0),  # WatchdogSec=30: ping every 15 s
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "7"}, 15.0),  # ours to ping
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "8"}, None),  # another process's
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({"WATCHDOG_USEC": "\u00b2"}, None),  # a digit to str.isdigit, not to int()
        ({}, None),
    ],
)
def test_watchdog_interval_is_half_of_watchdog_usec(
    environ: dict[str, str], interval: float | None
) -> None:
    notifier = Notifier.from_environ({"NOTIFY_SOCKET": "/run/n", **environ}, pid=7)
    assert notifier is not None
    assert notifier.watchdog_interval == interval


def test_messages_are_sd_notify_assignments() -> None:
    for message in (READY, STOPPING, WATCHDOG):
        lines = message.decode().splitlines()
        assert all("=" in line for line in lines)
    assert READY.startswith(b"READY=1\n")
    assert STOPPING.startswith(b"STOPPING=1\n")
    assert WATCHDOG == b"WATCHDOG=1\n"
