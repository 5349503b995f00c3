"""Side-by-side benchmark of gripcore, Pushpin and Nchan (issue 4, scenarios 1-6).

Strategy. Every scenario runs against each proxy in turn, in the same run, with the same compiled
load client (``bench/loadclient.c``, built here with ``cc -O2``) and the same publisher (this
script re-run as a separate process with ``--publisher-spec``). Each proxy is started fresh for
each scenario on fresh loopback ports and killed afterwards (``try/finally``; process groups, so
nothing is left running). Messages carry a sequence number and the publisher's
``time.time_ns()``, so the client measures completeness and publish-to-delivery latency.

Scenarios (``--scenarios``, default all):

* ``fanout``  -- N SSE subscribers on one channel, publisher paced to offer ``--offered``
  deliveries/s (0: as fast as the proxy accepts) for ``--duration`` s; repeated for each N
  in ``--fanout-conns``.
* ``latency`` -- 1,000 SSE subscribers, 20 messages/s: p50/p99/max latency.
* ``ws``      -- the fan-out scenario with WebSocket subscribers (WebSocket-over-HTTP for
  gripcore and Pushpin; Nchan's own WebSocket subscriber).
* ``ramp``    -- ``--ramp-conns`` SSE connections opened at ``--ramp-rate``/s: errors and time;
  then, held idle, resident memory per connection (VmRSS summed over every process of the
  proxy, minus the same sum before the ramp) -- scenarios 5 and 4 in one.
* ``ingress`` -- items/s accepted by the publish API, batches of 1 and of 100.
* ``ceiling`` -- the loopback send() ceiling: one send() to each of N sockets, sends/s.
* ``cluster`` -- gripcore only: ``--cluster-conns`` SSE subscribers on node B, publishes to
  node A, two nodes on a Redis engine (a redis-server started here, on a free port), next to
  one node with the memory engine: the latency run (20 msg/s) and the fan-out run (offered
  ``--offered`` deliveries/s) for each. "proxy CPU" covers both nodes and Redis.
  Not in the default ``--scenarios``; needs ``redis-server``.

Prints one table per scenario with gripcore's ratio to each peer, and writes every raw figure to
``--out`` (JSON). ``BENCH_GRIPCORE_PROFILE=DIR`` runs gripcore under ``cProfile`` (one
``.prof`` file per scenario in DIR; not with ``--gripcore-workers``: workers exit without
writing one).
``--gripcore-workers N`` runs ``gripcore serve --workers N`` (N processes sharing the listeners,
as Nchan runs one nginx worker per core); the default is one process.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import signal
import socket
import string
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
VENV_BIN = Path(sys.executable).parent
RUN_PUSHPIN = Path("/work/shared/tools/run-pushpin")
CHANNEL = "bench"
PROXIES = ("gripcore", "gripcore-gevent", "pushpin", "nchan")
ADAPTER_OF = {"gripcore": "asyncio", "gripcore-gevent": "gevent"}
SCENARIOS = ("fanout", "latency", "ws", "ramp", "ingress", "ceiling")
EXTRA_SCENARIOS = ("cluster",)  # run only when named in --scenarios

# Bounds: every wait in this driver ends. Startup of a proxy (Pushpin is the slowest, ~2 s).
START_TIMEOUT = 20.0
# Graceful stop before SIGKILL.
STOP_TIMEOUT = 5.0
# The machine allows ~19,000 fds per process; the client needs one per connection plus a few.
MAX_FDS = 19000
# Listening ports are picked from here: below the ephemeral range, above the well-known ports.
PORT_LOW, PORT_HIGH = 20000, 32000
# Padding after "M SEQ TS " so a message is about the size of a small real event (~80 bytes).
PAD = "x" * 48
# Most items the publisher puts in one POST when it is behind schedule (the batch size).
MAX_BATCH = 100


# ---------------------------------------------------------------- process helpers


def free_port(span: int = 1) -> int:
    """A loopback port P such that P-1 .. P+span are all free (Pushpin's ZeroMQ ports).

    Picked below the kernel's ephemeral range (32768+), where the load client's 10,000 outgoing
    connections live, and probed with SO_REUSEADDR so ports in TIME_WAIT count as free.
    """
    rng = random.Random()
    for _ in range(1000):
        base = rng.randrange(PORT_LOW + 1, PORT_HIGH - span)
        ok = True
        for p in range(base - 1, base + span + 1):
            with socket.socket() as t:
                t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    t.bind(("127.0.0.1", p))
                    t.listen(1)
                except OSError:
                    ok = False
                    break
        if ok:
            return base
    raise RuntimeError("no free loopback port range found")


def wait_port(port: int, timeout: float = START_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            s.settimeout(0.5)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listening on 127.0.0.1:{port} after {timeout:.0f} s")


def spawn(
    args: Sequence[str], log: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    out = log.open("wb")
    try:
        return subprocess.Popen(
            list(args),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env=env,
        )
    finally:
        out.close()


def kill_group(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    """Stop a process started with spawn(): signal its group, wait, then SIGKILL."""
    if proc.poll() is None:
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        with suppress(subprocess.TimeoutExpired):
            proc.wait(STOP_TIMEOUT)
    with suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    with suppress(subprocess.TimeoutExpired):
        proc.wait(STOP_TIMEOUT)


def session_pids(sids: set[int]) -> list[int]:
    """Every process in the given sessions (each proxy is started in a session of its own)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        if int(stat[stat.rindex(")") + 2 :].split()[3]) in sids:
            pids.append(int(entry))
    return pids


def kill_sessions(sids: set[int]) -> None:
    """SIGTERM every process left in the sessions, then SIGKILL what is still there after 5 s."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in session_pids(sids):
            with suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + STOP_TIMEOUT
        while session_pids(sids) and time.monotonic() < deadline:
            time.sleep(0.1)


def sessions_rss(sids: set[int]) -> tuple[int, list[str]]:
    """VmRSS in bytes summed over every process in the given sessions, and their names."""
    total = 0
    names: list[str] = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            fields = stat[stat.rindex(")") + 2 :].split()
            if int(fields[3]) not in sids:
                continue
            status = Path(f"/proc/{entry}/status").read_text()
        except (OSError, ValueError):
            continue
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1]) * 1024
        names.append(stat[stat.index("(") + 1 : stat.rindex(")")])
    return total, sorted(names)


def sessions_cpu(sids: set[int]) -> float:
    """User+system CPU seconds used so far by every process in the sessions."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[3]) in sids:
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


# ---------------------------------------------------------------- the proxies


@dataclass
class Proxy:
    """One running proxy: where clients connect, where to publish, which processes are its own."""

    name: str
    http_port: int
    publish_port: int
    sids: set[int] = field(default_factory=set)  # its processes' session ids
    origin_sids: set[int] = field(default_factory=set)  # the bench origin's, when it has one
    stop: Callable[[], None] = lambda: None

    def sub_path(self, channel: str) -> str:
        return f"/sub/{channel}" if self.name == "nchan" else f"/stream/{channel}"


@contextmanager
def origin(workdir: Path) -> Iterator[tuple[int, int]]:
    port = free_port()
    proc = spawn(
        [sys.executable, str(BENCH / "origin.py"), "--port", str(port), "--channel", CHANNEL],
        workdir / "origin.log",
    )
    try:
        wait_port(port)
        yield port, proc.pid
    finally:
        kill_group(proc)


@contextmanager
def run_proxy(name: str, workdir: Path, label: str, workers: int = 1) -> Iterator[Proxy]:
    """Start one proxy (with the bench origin where it needs one); always stop it."""
    if name == "nchan":
        with run_nchan(workdir) as proxy:
            yield proxy
        return
    with origin(workdir) as (origin_port, origin_pid):
        if name in ADAPTER_OF:
            with run_gripcore(workdir, origin_port, label, name=name, workers=workers) as proxy:
                proxy.origin_sids = {origin_pid}
                yield proxy
        else:
            with run_pushpin(workdir, origin_port) as proxy:
                proxy.origin_sids = {origin_pid}
                yield proxy


@contextmanager
def run_gripcore(
    workdir: Path,
    origin_port: int,
    label: str,
    extra: Sequence[str] = (),
    name: str = "gripcore",
    workers: int = 1,
) -> Iterator[Proxy]:
    http_port, publish_port = free_port(), free_port()
    serve = [
        "serve",
        "--adapter",
        ADAPTER_OF[name],
        "--listen",
        f"127.0.0.1:{http_port}",
        "--publish-listen",
        f"127.0.0.1:{publish_port}",
        "--route",
        f"* 127.0.0.1:{origin_port},over_http",
        "--log-level",
        "warning",
        "--shutdown-grace",
        "1",
        *extra,
    ]
    if workers > 1 and ADAPTER_OF[name] == "asyncio":  # gevent runs one process
        serve += ["--workers", str(workers)]
    profile_dir = os.environ.get("BENCH_GRIPCORE_PROFILE")
    if profile_dir:
        Path(profile_dir).mkdir(parents=True, exist_ok=True)
        out = Path(profile_dir) / f"{name}-{label}.prof"
        args = [sys.executable, "-m", "cProfile", "-o", str(out), "-m", "gripcore", *serve]
    else:
        args = [str(VENV_BIN / "gripcore"), *serve]
    # gripcore reads GRIPCORE_* settings from the environment: run it with defaults only.
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRIPCORE_")}
    proc = spawn(args, workdir / "gripcore.log", env)
    try:
        wait_port(publish_port)
        wait_port(http_port)
        yield Proxy(name, http_port, publish_port, {proc.pid})
    finally:
        kill_group(proc, signal.SIGTERM)  # graceful: lets cProfile write its file


@contextmanager
def redis_server(workdir: Path) -> Iterator[tuple[int, int]]:
    """A fresh redis-server (no persistence) on a free port: (port, pid)."""
    port = free_port()
    proc = spawn(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        workdir / "redis.log",
    )
    try:
        wait_port(port)
        yield port, proc.pid
    finally:
        kill_group(proc)


@contextmanager
def run_gripcore_cluster(workdir: Path, label: str) -> Iterator[Proxy]:
    """Two gripcore nodes on one Redis: clients connect to B, the publisher posts to A."""
    with origin(workdir) as (origin_port, origin_pid), redis_server(workdir) as (rport, rpid):
        engine = ["--engine", f"redis://127.0.0.1:{rport}/0"]
        (workdir / "a").mkdir()
        (workdir / "b").mkdir()
        with (
            run_gripcore(workdir / "a", origin_port, f"{label}-a", engine) as a,
            run_gripcore(workdir / "b", origin_port, f"{label}-b", engine) as b,
        ):
            yield Proxy(
                "gripcore", b.http_port, a.publish_port, a.sids | b.sids | {rpid}, {origin_pid}
            )


@contextmanager
def run_pushpin(workdir: Path, origin_port: int) -> Iterator[Proxy]:
    http_port = free_port()
    publish_port = free_port(span=3)
    pdir = workdir / "pushpin"
    try:
        subprocess.run(
            [
                str(RUN_PUSHPIN),
                "start",
                f"127.0.0.1:{origin_port},over_http",
                str(http_port),
                str(publish_port),
                str(pdir),
            ],
            check=True,
            timeout=START_TIMEOUT * 3,
            stdout=subprocess.DEVNULL,
        )
        wait_port(http_port)
        sids = {int((pdir / f).read_text()) for f in ("pushpin.pid", "zurl.pid")}
        yield Proxy("pushpin", http_port, publish_port, sids)
    finally:
        sids = set()
        for f in ("pushpin.pid", "zurl.pid"):
            with suppress(OSError, ValueError):
                sids.add(int((pdir / f).read_text()))
        subprocess.run([str(RUN_PUSHPIN), "stop", str(pdir)], timeout=30, check=False)
        kill_sessions(sids)


@contextmanager
def run_nchan(workdir: Path) -> Iterator[Proxy]:
    http_port, publish_port = free_port(), free_port()
    ndir = workdir / "nchan"
    ndir.mkdir(exist_ok=True)
    conf = string.Template((BENCH / "nchan.conf.template").read_text()).substitute(
        dir=str(ndir),
        http_port=http_port,
        publish_port=publish_port,
        workers=os.cpu_count() or 1,
        nofile=MAX_FDS,
        worker_connections=MAX_FDS - 100,
    )
    (ndir / "nginx.conf").write_text(conf)
    proc = spawn(["nginx", "-p", str(ndir), "-c", str(ndir / "nginx.conf")], ndir / "nginx.out")
    try:
        wait_port(http_port)
        wait_port(publish_port)
        yield Proxy("nchan", http_port, publish_port, {proc.pid})
    finally:
        kill_group(proc, signal.SIGQUIT)  # nginx: graceful stop


# ---------------------------------------------------------------- the publisher process


def publish_request(kind: str, port: int, proto: str, seqs: range) -> bytes:
    """One POST carrying the messages `seqs`, in the proxy's own publish API."""
    ts = time.time_ns()
    if kind == "nchan":  # one message per POST; Nchan frames it as SSE data or a WS frame
        (seq,) = seqs
        body = f"M {seq} {ts} {PAD}".encode()
        target = f"/pub/{CHANNEL}"
        ctype = "text/plain"
    else:
        fmt = "ws-message" if proto == "ws" else "http-stream"
        items = []
        for seq in seqs:
            text = f"M {seq} {ts} {PAD}"
            content = text if proto == "ws" else f"data: {text}\n\n"
            items.append({"channel": CHANNEL, "formats": {fmt: {"content": content}}})
        body = json.dumps({"items": items}, separators=(",", ":")).encode()
        target = "/publish/"
        ctype = "application/json"
    head = (
        f"POST {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: {ctype}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


class HttpConn:
    """A keep-alive HTTP/1.1 client connection reading Content-Length or chunked answers."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.sock: socket.socket | None = None
        self.buf = b""

    def request(self, data: bytes, timeout: float) -> int:
        if self.sock is None:
            self.sock = socket.create_connection(("127.0.0.1", self.port), timeout=timeout)
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.buf = b""
        try:
            self.sock.sendall(data)
            return self._response()
        except OSError:
            self.close()
            return 0

    def _recv(self) -> None:
        assert self.sock is not None
        chunk = self.sock.recv(65536)
        if not chunk:
            raise OSError("publish connection closed")
        self.buf += chunk

    def _response(self) -> int:
        while b"\r\n\r\n" not in self.buf:
            self._recv()
        head, _, rest = self.buf.partition(b"\r\n\r\n")
        self.buf = rest
        status = int(head[9:12])
        lower = head.lower()
        if b"transfer-encoding: chunked" in lower:
            while b"0\r\n\r\n" not in self.buf:
                self._recv()
            self.buf = self.buf.split(b"0\r\n\r\n", 1)[1]
        else:
            length = 0
            at = lower.find(b"content-length:")
            if at >= 0:
                length = int(lower[at + 15 :].split(b"\r\n", 1)[0])
            while len(self.buf) < length:
                self._recv()
            self.buf = self.buf[length:]
        if b"connection: close" in lower:
            self.close()
        return status

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


def run_publisher(spec: dict[str, Any]) -> dict[str, Any]:
    """Publish for spec['duration'] s at spec['rate'] msg/s (0: back to back); report counts."""
    kind, port, proto = spec["kind"], spec["port"], spec["proto"]
    rate, duration, batch = float(spec["rate"]), float(spec["duration"]), int(spec["batch"])
    if kind == "nchan":
        batch = 1
    conn = HttpConn(port)
    seq = int(spec.get("first", 1))
    first = seq
    posts = errors = 0
    statuses: dict[str, int] = {}
    t_start_ns = time.time_ns()
    t0 = time.monotonic()
    deadline = t0 + duration
    while (now := time.monotonic()) < deadline:
        if rate > 0:
            due = int((now - t0) * rate) + 1 - (seq - first)
            if due <= 0:
                time.sleep(min(0.002, (seq - first) / rate - (now - t0)))
                continue
            n = min(due, batch)
        else:
            n = batch
        status = conn.request(publish_request(kind, port, proto, range(seq, seq + n)), 10.0)
        posts += 1
        statuses[str(status)] = statuses.get(str(status), 0) + 1
        if 200 <= status < 300:
            seq += n
        else:
            errors += 1
            time.sleep(0.01)
    elapsed = time.monotonic() - t0
    conn.close()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "first": first,
        "last": seq - 1,
        "items": seq - first,
        "posts": posts,
        "errors": errors,
        "statuses": statuses,
        "elapsed_s": elapsed,
        "items_per_s": (seq - first) / elapsed if elapsed else 0.0,
        "t_start_ns": t_start_ns,
        "cpu_s": usage.ru_utime + usage.ru_stime,
    }


def publisher(proxy: Proxy, proto: str, rate: float, duration: float, batch: int) -> dict[str, Any]:
    spec = {
        "kind": proxy.name,
        "port": proxy.publish_port,
        "proto": proto,
        "rate": rate,
        "duration": duration,
        "batch": batch,
    }
    out = subprocess.run(
        [sys.executable, __file__, "--publisher-spec", json.dumps(spec)],
        capture_output=True,
        timeout=duration + 60,
        check=True,
        start_new_session=True,
    )
    result: dict[str, Any] = json.loads(out.stdout)
    return result


# ---------------------------------------------------------------- the load client


def build_client(workdir: Path) -> Path:
    exe = workdir / "loadclient"
    subprocess.run(
        ["cc", "-O2", "-Wall", "-Wextra", "-o", str(exe), str(BENCH / "loadclient.c")],
        check=True,
        timeout=120,
    )
    return exe


class Client:
    """The load client as a subprocess: wait for READY, then END, then read the summary."""

    def __init__(self, exe: Path, args: Sequence[str], max_time: float) -> None:
        self.proc = subprocess.Popen(
            [str(exe), *args, "--max-time", str(max_time)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        self.max_time = max_time

    def ready(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()  # the client's own --max-time bounds this wait
        if not line.startswith("READY "):
            raise RuntimeError(f"load client failed before READY: {line!r}")
        result: dict[str, Any] = json.loads(line[6:])
        return result

    def finish(self, first: int | None, last: int | None) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        with suppress(BrokenPipeError):
            if first is not None and last is not None:
                self.proc.stdin.write(f"END {first} {last}\n")
            self.proc.stdin.close()
        line = self.proc.stdout.readline()
        self.proc.wait(self.max_time)
        result: dict[str, Any] = json.loads(line)
        return result

    def kill(self) -> None:
        if self.proc.poll() is None:
            with suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(STOP_TIMEOUT)


# ---------------------------------------------------------------- scenarios


@dataclass
class Ctx:
    args: argparse.Namespace
    exe: Path
    workdir: Path


def fanout_run(
    ctx: Ctx, proxy: Proxy, proto: str, conns: int, msg_rate: float, duration: float
) -> dict[str, Any]:
    """Hold `conns` subscribers, publish for `duration`, collect deliveries and latency."""
    client = Client(
        ctx.exe,
        [
            "sub",
            "--port",
            str(proxy.http_port),
            "--path",
            proxy.sub_path(CHANNEL),
            "--proto",
            proto,
            "--conns",
            str(conns),
            "--rate",
            str(ctx.args.connect_rate),
            "--drain-timeout",
            str(ctx.args.drain_timeout),
        ],
        max_time=duration + conns / ctx.args.connect_rate + ctx.args.drain_timeout + 60,
    )
    try:
        ready = client.ready()
        time.sleep(0.5)  # let the last subscriptions settle in the proxy
        held = flush_pass_metrics(proxy)
        cpu_before = sessions_cpu(proxy.sids)
        pub = publisher(proxy, proto, msg_rate, duration, MAX_BATCH)
        summary = client.finish(pub["first"], pub["last"])
        proxy_cpu = sessions_cpu(proxy.sids) - cpu_before
        passes = flush_pass_metrics(proxy)
        if passes is not None and held is not None:
            passes["streams"] = held["streams"]
    finally:
        client.kill()
    delivered = summary["messages_in_order"] + summary["out_of_order"]
    span = (summary["last_rx_ns"] - pub["t_start_ns"]) / 1e9 if summary["last_rx_ns"] > 0 else 0
    return {
        "conns": conns,
        "offered_deliveries_per_s": msg_rate * conns,
        "published_items_per_s": pub["items_per_s"],
        "deliveries": delivered,
        "deliveries_per_s": delivered / span if span > 0 else 0.0,
        "complete": summary["missing"] == 0
        and summary["duplicates"] == 0
        and summary["out_of_order"] == 0
        and summary["conns_failed"] == 0
        and summary["closed_after_open"] == 0,
        "proxy_cpu_s": proxy_cpu,
        "flush_passes": passes,
        "ready": ready,
        "client": summary,
        "publisher": pub,
    }


def flush_pass_metrics(proxy: Proxy) -> dict[str, float] | None:
    """gripcore's `publish_to_write_seconds` (from a publish to the last write of its flush
    pass) as its /metrics reports it (with --workers: the worker that answered)."""
    if proxy.name not in ADAPTER_OF:
        return None
    url = f"http://127.0.0.1:{proxy.publish_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as answer:
        text = answer.read().decode()
    values: dict[str, float] = {}
    for line in text.splitlines():
        for key in ("sum", "count"):
            if line.startswith(f"gripcore_publish_to_write_seconds_{key} "):
                values[key] = float(line.split()[-1])
        if line.startswith('gripcore_connections{transport="stream"} '):
            values["streams"] = float(line.split()[-1])
    if "streams" not in values:
        return None
    return {
        "passes": values.get("count", 0.0),
        "mean_ms": values["sum"] / values["count"] * 1000 if values.get("count") else 0.0,
        "streams": values.get("streams", 0.0),  # held by the process that answered
    }


def scenario_fanout(ctx: Ctx, proxy: Proxy, conns: int, proto: str = "sse") -> dict[str, Any]:
    offered = ctx.args.offered
    msg_rate = offered / conns if offered > 0 else 0.0
    return fanout_run(ctx, proxy, proto, conns, msg_rate, ctx.args.duration)


def scenario_latency(ctx: Ctx, proxy: Proxy) -> dict[str, Any]:
    return fanout_run(ctx, proxy, "sse", ctx.args.latency_conns, 20.0, ctx.args.latency_duration)


def scenario_ramp(ctx: Ctx, proxy: Proxy) -> dict[str, Any]:
    conns = ctx.args.ramp_conns
    time.sleep(0.5)
    rss_before, names = sessions_rss(proxy.sids)
    client = Client(
        ctx.exe,
        [
            "sub",
            "--port",
            str(proxy.http_port),
            "--path",
            proxy.sub_path(CHANNEL),
            "--conns",
            str(conns),
            "--rate",
            str(ctx.args.ramp_rate),
            "--connect-timeout",
            "10",
        ],
        max_time=conns / ctx.args.ramp_rate + 120,
    )
    cpu_before = sessions_cpu(proxy.sids), sessions_cpu(proxy.origin_sids)
    try:
        ready = client.ready()
        cpu_ramp = sessions_cpu(proxy.sids), sessions_cpu(proxy.origin_sids)
        time.sleep(1.0)  # idle: let allocations settle
        rss_after, names = sessions_rss(proxy.sids)
        summary = client.finish(None, None)
    finally:
        client.kill()
    opened = ready["conns_opened"]
    return {
        "conns": conns,
        "rate": ctx.args.ramp_rate,
        "ramp_seconds": ready["ramp_seconds"],
        "errors": ready["conns_failed"],
        "opened": opened,
        "rss_before": rss_before,
        "rss_after": rss_after,
        "bytes_per_conn": (rss_after - rss_before) / opened if opened else 0.0,
        "processes": names,
        "proxy_cpu_s": cpu_ramp[0] - cpu_before[0],
        "origin_cpu_s": cpu_ramp[1] - cpu_before[1],
        "ready": ready,
        "client": summary,
    }


def scenario_ingress(ctx: Ctx, proxy: Proxy, batch: int) -> dict[str, Any]:
    # Publish with no subscribers: the cost of the publish API alone.
    cpu_before = sessions_cpu(proxy.sids)
    pub = publisher(proxy, "sse", 0.0, ctx.args.ingress_duration, batch)
    pub["proxy_cpu_s"] = sessions_cpu(proxy.sids) - cpu_before
    pub["batch"] = 1 if proxy.name == "nchan" else batch
    return pub


def scenario_ceiling(ctx: Ctx) -> dict[str, Any]:
    out = subprocess.run(
        [str(ctx.exe), "ceiling", "--conns", str(ctx.args.ceiling_conns), "--rounds", "20"],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    result: dict[str, Any] = json.loads(out.stdout)
    return result


CLUSTER_SETUPS = ("1 node, memory engine", "2 nodes on Redis (sub B, pub A)")


def scenario_cluster(ctx: Ctx) -> dict[str, Any]:
    """The cross-node figures next to the single-node ones (module header)."""
    conns = ctx.args.cluster_conns
    offered = ctx.args.offered
    runs = {
        "latency": (20.0, ctx.args.latency_duration),
        "fanout": (offered / conns if offered > 0 else 0.0, ctx.args.duration),
    }
    res: dict[str, Any] = {}
    for kind, (rate, duration) in runs.items():
        for setup in CLUSTER_SETUPS:
            wd = ctx.workdir / f"cluster-{kind}-{CLUSTER_SETUPS.index(setup)}"
            wd.mkdir()
            label = f"cluster-{kind}"
            try:
                runner = (
                    run_proxy("gripcore", wd, label)
                    if setup == CLUSTER_SETUPS[0]
                    else run_gripcore_cluster(wd, label)
                )
                with runner as proxy:
                    res.setdefault(kind, {})[setup] = fanout_run(
                        ctx, proxy, "sse", conns, rate, duration
                    )
            except (RuntimeError, OSError, subprocess.SubprocessError, ValueError) as exc:
                res.setdefault(kind, {})[setup] = {"error": f"{type(exc).__name__}: {exc}"}
            print(f"  cluster {kind} {setup}: done", file=sys.stderr, flush=True)
    return res


def cluster_table(
    title: str, rows: list[tuple[str, Callable[[dict[str, Any]], Any]]], res: dict[str, Any]
) -> str:
    single, pair = CLUSTER_SETUPS
    header = ["metric", single, pair, "2 nodes / 1 node"]
    lines = [f"\n### {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for label, get in rows:
        vals: list[Any] = []
        for setup in CLUSTER_SETUPS:
            try:
                vals.append(get(res[setup]) if "error" not in res[setup] else None)
            except (KeyError, TypeError):
                vals.append(None)
        lines.append("| " + " | ".join([label, *map(fmt, vals), ratio(vals[1], vals[0])]) + " |")
    errs = [f"{s}: {res[s]['error']}" for s in CLUSTER_SETUPS if "error" in res.get(s, {})]
    if errs:
        lines.append("\nerrors: " + "; ".join(errs))
    return "\n".join(lines)


# ---------------------------------------------------------------- report


def fmt(v: Any) -> str:
    if isinstance(v, bool):
        return "yes" if v else "NO"
    if isinstance(v, float):
        return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.3g}"
    if isinstance(v, int):
        return f"{v:,}"
    return "-" if v is None else str(v)


def ratio(g: Any, p: Any) -> str:
    if isinstance(g, bool) or not isinstance(g, int | float) or not isinstance(p, int | float):
        return ""
    if not p:
        return "-"
    return f"{g / p:.2f}x"


def table(
    title: str, rows: list[tuple[str, Callable[[dict[str, Any]], Any]]], res: dict[str, Any]
) -> str:
    names = [n for n in PROXIES if n in res]
    ours = [n for n in names if n in ADAPTER_OF]
    peers = [n for n in names if n not in ADAPTER_OF]
    pairs = [(o, n) for o in ours for n in peers]
    if len(ours) == 2:
        pairs.append(("gripcore-gevent", "gripcore"))
    header = ["metric", *names, *(f"{o}/{n}" for o, n in pairs)]
    lines = [f"\n### {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for label, get in rows:
        vals: dict[str, Any] = {}
        for n in names:
            try:
                vals[n] = get(res[n]) if "error" not in res[n] else None
            except (KeyError, TypeError):
                vals[n] = None
        cells = [label, *(fmt(vals[n]) for n in names)]
        cells += [ratio(vals[o], vals[n]) for o, n in pairs]
        lines.append("| " + " | ".join(cells) + " |")
    errs = [f"{n}: {res[n]['error']}" for n in names if "error" in res[n]]
    if errs:
        lines.append("\nerrors: " + "; ".join(errs))
    return "\n".join(lines)


FANOUT_ROWS: list[tuple[str, Callable[[dict[str, Any]], Any]]] = [
    ("offered deliveries/s", lambda r: r["offered_deliveries_per_s"]),
    ("published items/s", lambda r: r["published_items_per_s"]),
    ("deliveries/s (higher better)", lambda r: r["deliveries_per_s"]),
    ("complete (all got all, in order)", lambda r: r["complete"]),
    ("missing deliveries", lambda r: r["client"]["missing"]),
    ("incomplete connections", lambda r: r["client"]["conns_incomplete"]),
    ("duplicates", lambda r: r["client"]["duplicates"]),
    ("out of order", lambda r: r["client"]["out_of_order"]),
    ("connections failed", lambda r: r["client"]["conns_failed"]),
    ("closed by proxy", lambda r: r["client"]["closed_after_open"]),
    ("latency p50 ms", lambda r: r["client"]["latency_us"]["p50"] / 1000),
    ("latency p99 ms", lambda r: r["client"]["latency_us"]["p99"] / 1000),
    ("latency max ms", lambda r: r["client"]["latency_us"]["max"] / 1000),
    ("publish to last write ms (mean per pass)", lambda r: r["flush_passes"]["mean_ms"]),
    ("streams held by the process answering /metrics", lambda r: r["flush_passes"]["streams"]),
    ("proxy CPU s", lambda r: r["proxy_cpu_s"]),
    ("load client CPU s", lambda r: r["client"]["cpu_user_s"] + r["client"]["cpu_sys_s"]),
    ("publisher CPU s", lambda r: r["publisher"]["cpu_s"]),
]

RAMP_ROWS: list[tuple[str, Callable[[dict[str, Any]], Any]]] = [
    ("connections opened", lambda r: r["opened"]),
    ("errors (lower better)", lambda r: r["errors"]),
    ("HTTP 5xx", lambda r: r["ready"]["status_5xx"]),
    ("handshake timeouts (10 s)", lambda r: r["ready"]["fail_timeout"]),
    ("ramp seconds", lambda r: r["ramp_seconds"]),
    ("proxy CPU s during ramp", lambda r: r["proxy_cpu_s"]),
    ("origin CPU s during ramp", lambda r: r["origin_cpu_s"]),
    ("RSS before MB", lambda r: r["rss_before"] / 1e6),
    ("RSS held MB", lambda r: r["rss_after"] / 1e6),
    ("bytes per idle connection (lower better)", lambda r: r["bytes_per_conn"]),
    ("load client CPU s", lambda r: r["ready"]["cpu_user_s"] + r["ready"]["cpu_sys_s"]),
]

INGRESS_ROWS: list[tuple[str, Callable[[dict[str, Any]], Any]]] = [
    ("items per POST", lambda r: r["batch"]),
    ("items/s accepted (higher better)", lambda r: r["items_per_s"]),
    ("POST errors", lambda r: r["errors"]),
    ("proxy CPU s", lambda r: r["proxy_cpu_s"]),
    ("publisher CPU s", lambda r: r["cpu_s"]),
    ("elapsed s", lambda r: r["elapsed_s"]),
]


# ---------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="gripcore vs Pushpin vs Nchan, issue 4 scenarios; quick defaults.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--publisher-spec", help=argparse.SUPPRESS)
    p.add_argument("--proxies", default=",".join(PROXIES), help="comma-separated subset")
    p.add_argument("--scenarios", default=",".join(SCENARIOS), help="comma-separated subset")
    p.add_argument(
        "--fanout-conns", default="1000", help="N list for fanout/ws, e.g. 1000,5000,10000"
    )
    p.add_argument(
        "--offered", type=float, default=300000.0, help="offered deliveries/s (0: unpaced)"
    )
    p.add_argument("--duration", type=float, default=5.0, help="publish seconds per fan-out run")
    p.add_argument(
        "--gripcore-workers", type=int, default=1, help="gripcore serve --workers N (asyncio)"
    )
    p.add_argument("--latency-conns", type=int, default=1000)
    p.add_argument("--latency-duration", type=float, default=5.0)
    p.add_argument("--ramp-conns", type=int, default=10000)
    p.add_argument("--ramp-rate", type=float, default=2000.0, help="connections opened per second")
    p.add_argument("--ingress-duration", type=float, default=3.0)
    p.add_argument("--ceiling-conns", type=int, default=5000)
    p.add_argument("--cluster-conns", type=int, default=1000, help="subscribers, cluster scenario")
    p.add_argument("--connect-rate", type=float, default=5000.0, help="subscriber connects/s")
    p.add_argument("--drain-timeout", type=float, default=5.0, help="wait for stragglers, s")
    p.add_argument("--out", default=str(BENCH / "results.json"), help="raw results (JSON)")
    return p.parse_args(argv)


def machine_info() -> dict[str, Any]:
    def cmd(args: list[str]) -> str:
        try:
            r = subprocess.run(args, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return "unavailable"
        return (r.stdout + r.stderr).strip().splitlines()[0] if (r.stdout + r.stderr) else ""

    model = "unknown"
    with suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "uptime_load": cmd(["uptime"]),
        "gripcore_commit": cmd(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"]),
        "pushpin": cmd(["pushpin", "--version"]),
        "nginx": cmd(["nginx", "-v"]),
        "python": sys.version.split()[0],
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.publisher_spec:
        print(json.dumps(run_publisher(json.loads(args.publisher_spec))))
        return 0
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, MAX_FDS + 500), hard))
    proxies = [p for p in args.proxies.split(",") if p]
    scenarios = [s for s in args.scenarios.split(",") if s]
    for bad in set(proxies) - set(PROXIES) | set(scenarios) - set(SCENARIOS + EXTRA_SCENARIOS):
        print(f"unknown proxy or scenario: {bad}", file=sys.stderr)
        return 2
    needed = ["cc"]
    if set(scenarios) & set(SCENARIOS):
        needed += ["nginx", "pushpin"]
    if "cluster" in scenarios:
        needed.append("redis-server")
    missing_tools = [t for t in needed if shutil.which(t) is None]
    if missing_tools:
        print(f"missing tools: {', '.join(missing_tools)}", file=sys.stderr)
        return 2
    results: dict[str, Any] = {"machine": machine_info(), "args": vars(args), "scenarios": {}}
    print(json.dumps(results["machine"], indent=1))
    report: list[str] = []
    with tempfile.TemporaryDirectory(prefix="gripcore-bench-") as tmp:
        ctx = Ctx(args, build_client(Path(tmp)), Path(tmp))

        def each(label: str, run: Callable[[Proxy], dict[str, Any]]) -> dict[str, Any]:
            res: dict[str, Any] = {}
            for name in proxies:
                wd = Path(tmp) / f"{label}-{name}"
                wd.mkdir()
                try:
                    with run_proxy(name, wd, label, args.gripcore_workers) as proxy:
                        res[name] = run(proxy)
                except (RuntimeError, OSError, subprocess.SubprocessError, ValueError) as exc:
                    res[name] = {"error": f"{type(exc).__name__}: {exc}"}
                print(f"  {label} {name}: done", file=sys.stderr, flush=True)
            results["scenarios"][label] = res
            return res

        if "ceiling" in scenarios:
            c = scenario_ceiling(ctx)
            results["scenarios"]["ceiling"] = c
            report.append(
                f"\n### loopback send() ceiling\n\n{c['conns']:,} sockets x {c['rounds']} rounds "
                f"of one {c['size']}-byte send(): {c['sends_per_s']:,.0f} sends/s "
                f"({c['ns_per_send']:,.0f} ns each)"
            )
        for n in (int(x) for x in args.fanout_conns.split(",") if x):
            if "fanout" in scenarios:
                res = each(f"fanout-sse-{n}", lambda p, n=n: scenario_fanout(ctx, p, n))
                report.append(table(f"1. SSE fan-out, {n:,} subscribers", FANOUT_ROWS, res))
            if "ws" in scenarios:
                res = each(f"fanout-ws-{n}", lambda p, n=n: scenario_fanout(ctx, p, n, "ws"))
                report.append(table(f"3. WebSocket fan-out, {n:,} subscribers", FANOUT_ROWS, res))
        if "latency" in scenarios:
            res = each("latency", lambda p: scenario_latency(ctx, p))
            title = f"2. latency, {args.latency_conns:,} SSE subscribers x 20 msg/s"
            report.append(table(title, FANOUT_ROWS, res))
        if "ramp" in scenarios:
            res = each("ramp", lambda p: scenario_ramp(ctx, p))
            title = (
                f"5+4. ramp {args.ramp_conns:,} SSE connections at {args.ramp_rate:,.0f}/s, "
                "then memory held idle"
            )
            report.append(table(title, RAMP_ROWS, res))
        if "cluster" in scenarios:
            res = scenario_cluster(ctx)
            results["scenarios"]["cluster"] = res
            n = args.cluster_conns
            report.append(
                cluster_table(
                    f"cross-node latency, {n:,} SSE subscribers x 20 msg/s",
                    FANOUT_ROWS,
                    res["latency"],
                )
            )
            report.append(
                cluster_table(
                    f"cross-node fan-out, {n:,} SSE subscribers", FANOUT_ROWS, res["fanout"]
                )
            )
        if "ingress" in scenarios:
            for batch in (1, 100):
                res = each(f"ingress-{batch}", lambda p, b=batch: scenario_ingress(ctx, p, b))
                report.append(table(f"6. publish ingress, batches of {batch}", INGRESS_ROWS, res))
    text = "\n".join(report)
    print(text)
    results["report"] = text
    Path(args.out).write_text(json.dumps(results, indent=1))
    print(f"\nraw results: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
