"""End-to-end: the Redis engine on highly available Redis, on both adapters.

* Sentinel: a master, its replica and a Sentinel, started here; the master is killed while a
  client is held and publishes keep coming; the Sentinel promotes the replica and the nodes
  follow it (`redis+sentinel://`).
* Redis Cluster: three primaries, started here; the primary owning the channel's slot is
  killed and started again while a client is held and publishes keep coming
  (`redis+cluster://`, sharded pub/sub).

Each time: the held connection survives, every publish gets 200 or 503 (the counts add up with
the node's refused-items counter), every item that got 200 reaches the held client or is
caught up through the history by a client resuming from the last item before the fault, and
nothing that got no 200 is invented. Every server runs on a fixed port of 26400-26420 and is
killed at the end, even when the test fails.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from gripcore._config import Config
from gripcore._engine import EngineUnavailable, key_slot

from .e2e_support import (
    Origin,
    OriginRequest,
    ProxyThread,
    RawClient,
    publish,
    running_proxy,
    wait_for,
)
from .test_cluster import _sse, metric, sse_client

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("proxy_adapter")]

HOST = "127.0.0.1"
SENTINEL_MASTER, SENTINEL_REPLICA, SENTINEL_PORT, NO_SENTINEL = 26401, 26402, 26405, 26409
CLUSTER_PORTS = (26411, 26412, 26413)


MANY = [f"ch{n}" for n in range(8)]  # 8 channels on 3 primaries: some share one, in 2 slots


def _many(request: OriginRequest) -> tuple[int, list[tuple[str, str]], bytes]:
    return (
        200,
        [
            ("Content-Type", "text/event-stream"),
            ("Grip-Hold", "stream"),
            ("Grip-Channel", ", ".join(MANY)),
        ],
        b"",
    )


@pytest.fixture(scope="module")
def origin() -> Iterator[Origin]:
    server = Origin(routes={"/sse": _sse, "/many": _many}).start()
    yield server
    server.stop()


class Servers:
    """Redis processes started by a test, all killed at its end."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.procs: dict[int, subprocess.Popen[bytes]] = {}

    def start(self, port: int, *args: str, program: str = "redis-server") -> None:
        path = shutil.which(program)
        assert path is not None, (
            f"{program} is needed (apt-get install redis-server redis-sentinel)"
        )
        home = self.root / str(port)
        home.mkdir(exist_ok=True)
        if program == "redis-sentinel":
            config = home / "sentinel.conf"
            if not config.exists():
                config.write_text("\n".join(args) + "\n")
            argv = [path, str(config), "--port", str(port), "--bind", HOST, "--dir", str(home)]
        else:
            argv = [path, "--port", str(port), "--bind", HOST, "--dir", str(home), "--save", ""]
            argv += list(args)
        self.procs[port] = subprocess.Popen(
            argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        probe = redis.Redis(host=HOST, port=port)
        try:
            wait_for(lambda: _answers(probe))
        finally:
            probe.close()

    def kill(self, port: int) -> None:
        proc = self.procs.pop(port)
        proc.send_signal(signal.SIGKILL)
        proc.wait()

    def close(self) -> None:
        for port in list(self.procs):
            self.kill(port)


def _answers(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[Servers]:
    started = Servers(tmp_path)
    try:
        yield started
    finally:
        started.close()


def item(n: int) -> dict[str, Any]:
    return {
        "channel": "news",
        "id": str(n),
        "formats": {"http-stream": {"content": f"id: {n}\ndata: {n}\n\n"}},
    }


def ids_in(data: bytes) -> list[int]:
    return [int(n) for n in re.findall(rb"\nid: (\d+)\n", b"\n" + data.replace(b"\r\n", b"\n"))]


class Publisher:
    """Publishes items 1, 2, 3... to a node, one per request, and remembers every answer."""

    def __init__(self, node: ProxyThread) -> None:
        self.node = node
        self.next = 1
        self.accepted: list[int] = []
        self.refused: list[int] = []

    def one(self) -> int:
        n, self.next = self.next, self.next + 1
        status, body = publish(self.node.publish_port, [item(n)])
        assert status in (200, 503), (status, body)
        (self.accepted if status == 200 else self.refused).append(n)
        return status

    def until_accepted(self, count: int, limit: int = 2000) -> None:
        """Keep publishing through the fault until `count` in a row are accepted."""
        streak = 0
        while streak < count:
            assert self.next < limit, "the engine did not come back"
            streak = streak + 1 if self.one() == 200 else 0


def check_fault_outcome(
    publisher: Publisher, held: RawClient, before: int, nodes: list[ProxyThread]
) -> None:
    """The guarantees after a fault (module header)."""
    sent = publisher.next - 1
    assert len(publisher.accepted) + len(publisher.refused) == sent
    assert publisher.refused, "the fault never refused a publish"
    assert sum(metric(node, "engine_rejected_items_total") for node in nodes) == len(
        publisher.refused
    )
    last = publisher.accepted[-1]
    live = ids_in(held.read_until(f"data: {last}\n\n\r\n".encode()))
    assert live == sorted(live) and set(live) <= set(publisher.accepted)  # held, in order
    assert live[:before] == list(range(1, before + 1))
    # a client resuming from the last item before the fault catches up through the history
    again = sse_client(nodes[0], f"Last-Event-ID: {before}\r\n")
    caught_up = ids_in(again.read_until(f"data: {last}\n\n\r\n".encode()))
    assert caught_up == [n for n in publisher.accepted if n > before]
    for node in nodes:
        assert metric(node, "engine_up") == 1
        assert metric(node, "engine_outages_total") >= 1


# --- Sentinel ---------------------------------------------------------------------------------


def test_sentinel_failover_while_held_and_publishing(origin: Origin, servers: Servers) -> None:
    servers.start(SENTINEL_MASTER, "--repl-diskless-sync-delay", "0")
    servers.start(SENTINEL_REPLICA, "--replicaof", HOST, str(SENTINEL_MASTER))
    replica = redis.Redis(host=HOST, port=SENTINEL_REPLICA)
    wait_for(lambda: replica.info("replication")["master_link_status"] == "up")
    servers.start(
        SENTINEL_PORT,
        f"sentinel monitor m {HOST} {SENTINEL_MASTER} 1",
        "sentinel down-after-milliseconds m 1000",
        "sentinel failover-timeout m 3000",
        program="redis-sentinel",
    )
    # the first Sentinel listed does not answer: the next one is asked
    url = f"redis+sentinel://{HOST}:{NO_SENTINEL},{HOST}:{SENTINEL_PORT}/m/0?prefix=ha:"
    routes = (f"* 127.0.0.1:{origin.port},over_http",)
    master = redis.Redis(host=HOST, port=SENTINEL_MASTER)
    with (
        running_proxy(engine=url, routes=routes, history=1000) as a,
        running_proxy(engine=url, routes=routes, history=1000) as b,
    ):
        held = sse_client(b)
        wait_for(lambda: master.pubsub_numsub("ha:c:news")[0][1] == 1)
        publisher = Publisher(a)
        for _ in range(5):
            assert publisher.one() == 200
        master.set("ha:sync", 1)
        assert master.wait(1, 5000) == 1  # the replica has the five items (replication is async)
        master.close()
        servers.kill(SENTINEL_MASTER)
        publisher.until_accepted(5)
        assert replica.info("replication")["role"] == "master"  # promoted
        wait_for(lambda: replica.pubsub_numsub("ha:c:news")[0][1] == 1)  # b followed it
        publisher.until_accepted(3)
        check_fault_outcome(publisher, held, 5, [a, b])
        assert replica.xlen("ha:h:news") == len(publisher.accepted)
    replica.close()


# --- Redis Cluster ----------------------------------------------------------------------------


def start_cluster_node(servers: Servers, port: int) -> None:
    servers.start(
        port,
        "--cluster-enabled",
        "yes",
        "--cluster-config-file",
        "nodes.conf",
        "--cluster-node-timeout",
        "1000",
        # the restarted primary keeps its history and dedup marks (this test's choice)
        "--appendonly",
        "yes",
        "--appendfsync",
        "always",
    )


def cluster_ok(port: int) -> bool:
    client = redis.Redis(host=HOST, port=port)
    try:
        return bool(client.cluster("info")["cluster_state"] == "ok")
    except redis.RedisError:
        return False
    finally:
        client.close()


def shard_numsub(port: int, channel: str) -> int:
    client = redis.Redis(host=HOST, port=port)
    try:
        reply = client.execute_command("PUBSUB", "SHARDNUMSUB", channel)
        return int(reply[1])
    finally:
        client.close()


CHANNEL = "ha:{news}c:news"
CLUSTER_URL = f"redis+cluster://{HOST}:{CLUSTER_PORTS[0]},{HOST}:{CLUSTER_PORTS[1]}?prefix=ha:"


def make_cluster(servers: Servers) -> int:
    """Three primaries, no replicas; returns the port of the one owning CHANNEL's slot."""
    for port in CLUSTER_PORTS:
        start_cluster_node(servers, port)
    cli = shutil.which("redis-cli")
    assert cli is not None
    subprocess.run(
        [cli, "--cluster", "create", *(f"{HOST}:{p}" for p in CLUSTER_PORTS), "--cluster-yes"],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_for(lambda: all(cluster_ok(p) for p in CLUSTER_PORTS), 20)
    seed = redis.Redis(host=HOST, port=CLUSTER_PORTS[0])
    try:
        return next(
            int(primary[1])
            for first, last, primary, *_ in seed.execute_command("CLUSTER", "SLOTS")
            if first <= key_slot(CHANNEL) <= last
        )
    finally:
        seed.close()


def move_slot(slot: int, source: int, target: int) -> None:
    """Reshard one slot with its keys, as `redis-cli --cluster reshard` does."""
    clients = {port: redis.Redis(host=HOST, port=port) for port in CLUSTER_PORTS}
    try:
        src, dst = clients[source], clients[target]
        src_id = src.execute_command("CLUSTER", "MYID").decode()
        dst_id = dst.execute_command("CLUSTER", "MYID").decode()
        dst.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", src_id)
        src.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", dst_id)
        keys = src.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 100)
        if keys:
            src.execute_command("MIGRATE", HOST, target, "", 0, 5000, "KEYS", *keys)
        for client in (dst, src, *clients.values()):
            client.execute_command("CLUSTER", "SETSLOT", slot, "NODE", dst_id)
    finally:
        for client in clients.values():
            client.close()


def test_cluster_node_restart_while_held_and_publishing(origin: Origin, servers: Servers) -> None:
    owner = make_cluster(servers)
    channel, url = CHANNEL, CLUSTER_URL
    routes = (f"* 127.0.0.1:{origin.port},over_http",)
    with (
        running_proxy(engine=url, routes=routes, history=1000) as a,
        running_proxy(engine=url, routes=routes, history=1000) as b,
    ):
        held = sse_client(b)
        wait_for(lambda: shard_numsub(owner, channel) == 1)  # SSUBSCRIBEd on the owner
        publisher = Publisher(a)
        for _ in range(5):
            assert publisher.one() == 200
        servers.kill(owner)
        for _ in range(3):  # the node is gone: its slots cannot take items
            assert publisher.one() == 503
        start_cluster_node(servers, owner)
        publisher.until_accepted(5)
        wait_for(lambda: shard_numsub(owner, channel) == 1)  # b subscribed again
        publisher.until_accepted(3)
        check_fault_outcome(publisher, held, 5, [a, b])


def test_cluster_slot_moved_while_held(origin: Origin, servers: Servers) -> None:
    """Resharding the channel's slot: Redis drops the node's shard subscription (the engine
    relinks and SSUBSCRIBEs on the new owner), publishes follow MOVED, the history moved along."""
    owner = make_cluster(servers)
    other = next(port for port in CLUSTER_PORTS if port != owner)
    routes = (f"* 127.0.0.1:{origin.port},over_http",)
    with (
        running_proxy(engine=CLUSTER_URL, routes=routes, history=1000) as a,
        running_proxy(engine=CLUSTER_URL, routes=routes, history=1000) as b,
    ):
        held = sse_client(b)
        wait_for(lambda: shard_numsub(owner, CHANNEL) == 1)
        publisher = Publisher(a)
        for _ in range(3):
            assert publisher.one() == 200
        move_slot(key_slot(CHANNEL), owner, other)
        wait_for(lambda: shard_numsub(other, CHANNEL) == 1)  # b followed the slot
        for _ in range(3):
            assert publisher.one() == 200  # a's script runs followed MOVED
        assert ids_in(held.read_until(b"data: 6\n\n\r\n")) == [1, 2, 3, 4, 5, 6]
        again = sse_client(a, "Last-Event-ID: 2\r\n")
        assert ids_in(again.read_until(b"data: 6\n\n\r\n")) == [3, 4, 5, 6]
        assert metric(b, "engine_outages_total") == 1  # the relink


def test_cluster_channels_on_every_shard(origin: Origin, servers: Servers) -> None:
    """One client on channels of every primary, several in different slots of one primary:
    each slot gets its own SSUBSCRIBE on its owner, and every channel delivers."""
    make_cluster(servers)
    routes = (f"* 127.0.0.1:{origin.port},over_http",)
    with running_proxy(engine=CLUSTER_URL, routes=routes) as a:
        held = RawClient(a.port)
        held.get("/many")
        assert held.read_until(b"\r\n\r\n").startswith(b"HTTP/1.1 200 OK\r\n")
        # pigeonhole: some primary owns two of these channels, in two slots
        assert len({key_slot(f"ha:{{{ch}}}c:{ch}") for ch in MANY}) == len(MANY) > 3
        wait_for(
            lambda: (
                sum(shard_numsub(p, f"ha:{{{ch}}}c:{ch}") for p in CLUSTER_PORTS for ch in MANY)
                == len(MANY)
            )
        )
        for ch in MANY:
            text = f"to {ch}\n"
            status, _ = publish(
                a.publish_port, [{"channel": ch, "formats": {"http-stream": {"content": text}}}]
            )
            assert status == 200
        got = held.read_until(f"to {MANY[-1]}\n".encode())
        assert [line for line in got.split(b"\r\n") if line.startswith(b"to ")] == [
            f"to {ch}".encode() + b"\n" for ch in MANY
        ]
        assert metric(a, "engine_outages_total") == 0


@pytest.mark.parametrize(
    "url",
    [
        f"redis+sentinel://{HOST}:{NO_SENTINEL}/m/0",  # no Sentinel answers
        f"redis+cluster://{HOST}:{CLUSTER_PORTS[2]}",  # no cluster node answers
    ],
)
def test_unreachable_at_start(origin: Origin, url: str) -> None:
    """As with one server: the node does not start (gripcore serve exits with status 3)."""
    from . import e2e_support

    proxy = ProxyThread(
        Config(
            engine=url,
            routes=(f"* 127.0.0.1:{origin.port},over_http",),
            listen=((HOST, 0),),
            publish_listen=(HOST, 0),
            adapter=e2e_support.ADAPTER,
        )
    )
    try:
        with pytest.raises(EngineUnavailable) as failure:
            proxy.start()
    finally:
        proxy.stop()
        if proxy.loop is not None:
            proxy.loop.close()  # the harness leaves a loop that never ran open
    assert str(failure.value).startswith(f"cannot reach Redis at {url}: ")
