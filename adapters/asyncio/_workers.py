"""`gripcore serve --workers N`: N worker processes of the asyncio driver, one supervisor.

Why: a fan-out pass is one `send()` per connection, and a loopback `send()` costs 7-10 us on a
small machine, so one process writes 1,000 connections in ~10 ms on one core however little
Python is left around the call. N workers split the connections, and so the pass, over N cores
(DESIGN.md, "Performance model") -- when there are N cores to spare: on a 2-core machine
shared with the readers and other jobs, each worker's writes cost more and the pass is no
shorter (bench/RESULTS.md, "Light-load latency").

Process plumbing (all of it here; the decisions are in the core):

* The supervisor (the process `gripcore serve` started) binds every listener *before* forking,
  so a port that is in use fails the start with status 2 and no connection is refused while
  workers start. Each client listener is bound once per worker with SO_REUSEPORT: the kernel
  spreads new connections evenly over the workers (one shared socket would let whichever worker
  wakes first accept a whole burst). Without SO_REUSEPORT the workers share one socket.
* Worker 0 serves the publish API (so /metrics describes worker 0) and is the one origin of
  publish order: `ProxyNode.relay` writes each accepted batch (gripcore._relay frame) to every
  sibling over a socketpair, then fans it out itself. Siblings decode the frames in order and
  call `ProxyNode.publish_relayed`; every worker's sequencer sees the same items in the same
  order and decides dedup and prev-id the same way for its own subscribers.
* Signals: the supervisor forwards SIGTERM/SIGINT (graceful stop) and SIGHUP (reload routes) to
  every worker; signals are blocked across fork so none is lost while a worker starts.
* A worker that exits when no stop was asked for is a crash: the supervisor logs it, stops the
  other workers and exits non-zero (1, or the worker's own status). It does not restart it: a
  new worker would start with empty sequencer state and its predecessor's clients are gone
  anyway; restarting is the process manager's job (systemd, Kubernetes), as for one process.
* A worker whose supervisor disappears (SIGKILL) sees its lifeline pipe reach EOF and stops
  gracefully, so no orphan keeps the ports. A sibling that loses its relay stops too (and the
  supervisor, unless it is stopping anyway, counts that as a crash); one that reads a frame it
  cannot decode stops with status 1.
* A sibling that stops reading its relay would make worker 0 buffer without end: above
  RELAY_MAX_BUFFERED bytes worker 0 drops that relay (the sibling then stops, and so does the
  whole server).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, cast

from gripcore._cli import set_log_worker
from gripcore._errors import ProtocolError
from gripcore._relay import RelayDecoder, relay_frame_limit

if TYPE_CHECKING:
    from gripcore._config import Config

    from ._server import Server

__all__ = ["Worker", "run_workers"]

log = logging.getLogger("gripcore")

# Bytes worker 0 may buffer for one sibling's relay before it gives that sibling up: ~64
# publish bodies of the default 1 MB limit; a live sibling reads far faster than that fills.
RELAY_MAX_BUFFERED = 64 * 1024 * 1024

# Listen backlogs (Server.start uses the same): the client one takes a burst of thousands of
# connects (the bench's ramp opens 2,000/s).
CLIENT_BACKLOG = 4096
PUBLISH_BACKLOG = 1024

_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_FORWARDED = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}


@dataclass(eq=False)
class Worker:
    """What one worker process gets from the supervisor: its sockets and its lifeline."""

    index: int
    count: int
    listen: list[socket.socket]  # this worker's client listeners (bound and listening)
    publish: socket.socket | None  # the publish API's listener: worker 0 only
    relay_out: list[socket.socket]  # worker 0: one stream to each sibling
    relay_in: socket.socket | None  # a sibling: the stream from worker 0
    lifeline: int  # read end of a pipe the supervisor holds open; EOF: it is gone
    sigmask: set[int | signal.Signals]  # the mask to restore once the loop handles signals
    status: int = 0  # the exit status the worker reports (1 after a relay frame it cannot read)
    _out: list[asyncio.Transport] = field(default_factory=list)
    _in: asyncio.Transport | None = None
    _stop: asyncio.Event | None = None

    async def attach(self, server: Server) -> None:
        """Connect the relay streams to the node (after `server.start`)."""
        loop = asyncio.get_running_loop()
        for sock in self.relay_out:
            transport, _ = await loop.create_unix_connection(lambda: _RelayOut(self), sock=sock)
            self._out.append(transport)
        if self._out:
            server.node.relay = self._relay
        if self.relay_in is not None:
            transport, _ = await loop.create_unix_connection(
                lambda: _RelayIn(self, server, relay_frame_limit(server.config.max_publish_body)),
                sock=self.relay_in,
            )
            self._in = transport

    def watch(self, stop: asyncio.Event) -> None:
        """Stop when the supervisor is gone (lifeline EOF) or the relay is lost; called once
        the loop handles signals, so the signals blocked across fork can now come in."""
        self._stop = stop
        asyncio.get_running_loop().add_reader(self.lifeline, self._parent_gone)
        signal.pthread_sigmask(signal.SIG_SETMASK, self.sigmask)

    def close(self) -> None:
        loop = asyncio.get_running_loop()
        loop.remove_reader(self.lifeline)
        os.close(self.lifeline)
        for transport in self._out:
            transport.close()
        if self._in is not None:
            self._in.close()

    def fail(self, message: str) -> None:
        """Stop with status 1: something this process relies on broke."""
        if self._stop is not None and not self._stop.is_set():
            log.error("worker %d: %s; stopping", self.index, message)
            self.status = 1
            self._stop.set()

    def end(self, message: str) -> None:
        """Stop (status 0): the other side went away. On a normal stop that is expected (the
        SIGTERM may still be on its way here); otherwise the supervisor sees this worker exit
        unasked and reports it."""
        if self._stop is not None and not self._stop.is_set():
            log.info("worker %d: %s; stopping", self.index, message)
            self._stop.set()

    def _parent_gone(self) -> None:
        asyncio.get_running_loop().remove_reader(self.lifeline)
        self.end("the supervisor process is gone")

    def _relay(self, frame: bytes) -> None:
        for transport in list(self._out):
            if transport.get_write_buffer_size() > RELAY_MAX_BUFFERED:
                log.error("worker %d: a sibling stopped reading publishes; dropping it", self.index)
                transport.abort()
                self._out.remove(transport)
                continue
            transport.write(frame)


class _RelayOut(asyncio.Protocol):
    """Worker 0's end of a sibling's relay: nothing is read; a lost sibling is forgotten."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.transport in self.worker._out:
            self.worker._out.remove(self.transport)


class _RelayIn(asyncio.Protocol):
    """A sibling's end: frames from worker 0, published in the order they come."""

    def __init__(self, worker: Worker, server: Server, max_frame: int) -> None:
        self.worker = worker
        self.server = server
        self.decoder = RelayDecoder(max_frame)

    def data_received(self, data: bytes) -> None:
        try:
            batches = self.decoder.receive_data(data)
        except ProtocolError as exc:
            self.worker.fail(f"relay broken: {exc}")
            return
        for batch in batches:
            self.server.node.publish_relayed(batch)

    def eof_received(self) -> bool | None:
        self.worker.end("worker 0 closed the publish relay")
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.worker.end("worker 0 closed the publish relay")


# ---------------------------------------------------------------- the supervisor


def _bind(
    host: str, port: int, count: int, backlog: int, *, share: bool = True
) -> list[list[socket.socket]]:
    """For each address `host` resolves to: `count` listening sockets on one port (shared with
    SO_REUSEPORT unless `share` is False), or one socket when the platform has no
    SO_REUSEPORT."""
    reuse_port = share and hasattr(socket, "SO_REUSEPORT")
    groups: list[list[socket.socket]] = []
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    seen: set[tuple[int, object]] = set()
    try:
        for family, type_, proto, _, address in infos:
            if (family, address) in seen:
                continue
            seen.add((family, address))
            group: list[socket.socket] = []
            groups.append(group)
            for _ in range(count if reuse_port else 1):
                sock = socket.socket(family, type_, proto)
                group.append(sock)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if reuse_port:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                sock.bind(address)
                sock.listen(backlog)
                sock.setblocking(False)
                address = sock.getsockname()  # port 0: the siblings take the port it got
    except OSError:
        for group in groups:
            for sock in group:
                sock.close()
        raise
    return groups


def run_workers(config: Config, run_worker: Callable[[Worker], int]) -> int:
    """Bind, fork `config.workers` workers (each runs `run_worker` and exits with its result),
    supervise them, and return the server's exit status."""
    count = config.workers
    listen: list[list[socket.socket]] = []
    try:
        for host, port in config.listen:
            listen.extend(_bind(host, port, count, CLIENT_BACKLOG))
        publish = _bind(*config.publish_listen, 1, PUBLISH_BACKLOG)[0][0]
    except OSError as exc:
        for group in listen:
            for sock in group:
                sock.close()
        print(f"gripcore serve: cannot start: {exc}", file=sys.stderr)
        return 2
    pairs = [socket.socketpair() for _ in range(count - 1)]
    lifeline_r, lifeline_w = os.pipe()
    owned = [s for group in listen for s in group] + [publish] + [s for p in pairs for s in p]

    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, _FORWARDED)
    pids: dict[int, int] = {}
    for index in range(count):
        mine = [group[index % len(group)] for group in listen]
        worker = Worker(
            index=index,
            count=count,
            listen=mine,
            publish=publish if index == 0 else None,
            relay_out=[a for a, _ in pairs] if index == 0 else [],
            relay_in=pairs[index - 1][1] if index > 0 else None,
            lifeline=lifeline_r,
            sigmask=blocked,
        )
        pid = os.fork()
        if pid == 0:  # the worker
            status = 1
            try:
                set_log_worker(index)
                os.close(lifeline_w)
                keep = {*mine, *worker.relay_out}
                keep.update(s for s in (worker.publish, worker.relay_in) if s is not None)
                for sock in owned:
                    if sock not in keep:
                        sock.close()
                status = run_worker(worker)  # signals stay blocked until Worker.watch
            except BaseException:  # anything at all: report it, never return into the parent
                traceback.print_exc()
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(status)
        pids[pid] = index
    for sock in owned:
        sock.close()
    os.close(lifeline_r)
    return _supervise(pids, lifeline_w, blocked)


def _supervise(pids: dict[int, int], lifeline: int, blocked: set[int | signal.Signals]) -> int:
    """Forward signals to the workers and wait for all of them; see the module header."""
    stopping = False
    status = 0

    def forward(signum: int, _frame: object) -> None:
        nonlocal stopping
        if signum in _STOP_SIGNALS:
            stopping = True
            signum = signal.SIGTERM
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):  # exited, not reaped yet
                os.kill(pid, signum)

    previous = {sig: signal.signal(sig, forward) for sig in _FORWARDED}
    signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
    try:
        while pids:
            pid, wait_status = os.wait()
            index = pids.pop(pid)
            code = os.waitstatus_to_exitcode(wait_status)
            if not stopping:
                how = f"with status {code}" if code >= 0 else f"on signal {-code}"
                log.error(
                    "worker %d (pid %d) exited %s; stopping the other workers", index, pid, how
                )
                stopping = True
                status = code if code > 0 else 1
                forward(signal.SIGTERM, None)
            elif code != 0 and status == 0:
                status = code if code > 0 else 1
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        os.close(lifeline)
    return status
