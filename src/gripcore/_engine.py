"""Engines: where publishes meet subscriptions. The memory engine (one node) and the Redis engine
(many nodes, one broker), with per-channel history and resume.

Strategy. Both engines keep the local part of the broker — the `Hub` of this node's subscribers
and a `Sequencer` (dedup and prev-id order) in front of it — and differ in where an item travels
between the publish API and the sequencer:

* `MemoryEngine`: straight in, in process (it is the `Broker` plus an optional history ring).
* `RedisEngine`: out to Redis and back. Publishing an item runs one Lua script (`PUBLISH_SCRIPT`)
  per item, atomically: `SET NX PX ttl` on the item's (channel, id) — a duplicate published to
  any node stops there, cluster-wide —, then `XADD MAXLEN ~ N` to the channel's stream when
  history is on, then `PUBLISH` to the channel. Every node subscribed to the channel receives it
  from Redis in Redis's one order and runs its own sequencer on it, so every node makes the same
  prev-id decisions, the publishing node included.

This module is sans-IO: the Redis engine says what to do (`Subscribe`, `Unsubscribe`,
`ReadHistory`, and the `ScriptCall`s of a publish) and is told what happened (`receive` for a
channel message, `subscribed` for a SUBSCRIBE confirmation, `history_read`, `link_down`,
`link_up`). Driving it — connections, reconnects with backoff — is the adapter's job
(adapters/asyncio/_redis.py, adapters/gevent/_redis.py).

Highly available Redis. With a Sentinel target nothing changes here (the drivers ask the
Sentinels where the master is). With a Redis Cluster target every name of a channel carries its
hash tag (`hash_tag`), so the script's keys and its shard channel share one slot; the script
SPUBLISHes (`SHARDED_PUBLISH_SCRIPT`); and the driver hands `link_up` the slot map
(`cluster_slots`), from which the engine sends each slot's SSUBSCRIBE to the primary owning
it (`key_slot`, `slot_owner`). A `sunsubscribe` Redis sends for a channel still
wanted (its slot moved) sets `relink`: the driver reconnects with a fresh map.

Subscriptions follow interest: a node subscribes in Redis only to channels with local
subscribers. When the last one leaves, the channel lingers `linger` seconds before the node
unsubscribes, so a client that reconnects at once (the usual case) finds the subscription still
there, and its resume has no SUBSCRIBE round trip to wait for.

Resume. A stream hold whose request carried `Last-Event-ID` (or a WebSocket with the
`last-event-id` query parameter) calls `resume(sub, last_id, now)` once subscribed. The memory
engine replays from its ring at once, before any live item can arrive. The Redis engine must
read the stream, which takes a round trip while live items keep coming, so it pauses the
subscriber's channels in the hub (`Hub.pause`), holds the live items it receives meanwhile with
their stream ids, and reads the history only once Redis confirmed the channel subscription: any
item published after the read is then received live with a larger stream id. When the read
arrives it delivers the missed items, then the held live ones newer than the newest history
entry, and unpauses. A last id that is not in the history changes nothing (the held items go
out as they would have): the origin's recovery path applies.

Limits, by design: history order is Redis's arrival order, which differs from the delivered
order only for prev-id items that waited for a predecessor; an item still waiting in a node's
sequencer when a resume reads the history may reach that client twice.
"""

from __future__ import annotations

import binascii
import bisect
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import parse_qs, unquote, urlsplit

from ._broker import Broker, BrokerStats
from ._errors import LocalProtocolError, PublishError
from ._history import MAX_HISTORY, History, missed_after
from ._hub import ChannelChange, Hub, PublishResult, Subscriber
from ._items import DEFAULT_MAX_CONTENT_SIZE, Item, item_to_json, parse_item
from ._sequencer import Sequencer

__all__ = [
    "DEFAULT_ENGINE_LINGER",
    "DEFAULT_MAX_RESUME_HOLD",
    "HISTORY_TTL",
    "PUBLISH_SCRIPT",
    "SHARDED_PUBLISH_SCRIPT",
    "Command",
    "EngineStats",
    "EngineUnavailable",
    "MemoryEngine",
    "ReadHistory",
    "Received",
    "RedisEngine",
    "RedisTarget",
    "ScriptCall",
    "Subscribe",
    "Unsubscribe",
    "client_options",
    "cluster_slots",
    "failure_reason",
    "key_slot",
    "link_back_message",
    "link_lost_message",
    "parse_engine_url",
    "pubsub_options",
]

# How long a node stays subscribed in Redis after a channel's last local subscriber left. Clients
# that reconnect do so within a second or two (EventSource retries after ~3 s at most by
# default), so 5 s keeps the subscription across a reconnect without holding idle channels long.
DEFAULT_ENGINE_LINGER = 5.0

# Live items held for one resuming subscriber while its history is read (one round trip to
# Redis). Past this the resume gives up and delivers what it holds, so a stalled read cannot
# grow memory without bound.
DEFAULT_MAX_RESUME_HOLD = 10_000

_REDIS_SCHEMES: Final = ("redis", "rediss")
SENTINEL_SCHEME: Final = "redis+sentinel"
CLUSTER_SCHEME: Final = "redis+cluster"

# Redis Cluster's key space: a key (or shard channel) lives in slot CRC16(tag) mod 16384
# (the cluster spec's "Keys distribution model").
CLUSTER_SLOTS = 16384

# A channel's history stream expires this long after its last publish: Redis memory stays
# bounded by the channels in use, not by every channel ever published to. A day covers any
# client that could still resume (browsers give up reconnecting long before).
HISTORY_TTL = 86_400.0

# --- the drivers' policy (both adapters' Redis drivers use these, so they behave alike) ---

# Reconnect backoff: the first retry is quick (a Redis restart takes well under a second
# here), then it doubles up to a cap that keeps a long outage from flooding the log or Redis.
BACKOFF_MIN = 0.1
BACKOFF_MAX = 5.0

# Connecting to Redis and each command: past this, Redis is as good as unreachable, and a
# publisher waiting for its 200 is better off with a 503 it can retry.
CONNECT_TIMEOUT = 2.0
COMMAND_TIMEOUT = 5.0

# The pub/sub connection is PINGed this often; when nothing at all (not even the PONG) came
# back for three intervals, Redis is taken as gone (a hung server or a half-open connection
# never closes the socket) and the driver reconnects.
HEALTH_INTERVAL = 5.0


class EngineUnavailable(Exception):
    """The engine cannot be reached (at start: exit with an error; on publish: a 503). Raised
    by the adapters' engine drivers."""


def client_options(target: RedisTarget) -> dict[str, Any]:
    """redis-py client options (sync or asyncio) for the command connection pool; the driver
    adds `retry=Retry(NoBackoff(), 0)` so a failed publish gets its 503 now, not later. For a
    Sentinel target these go to `Sentinel.master_for` (no address: the Sentinels give it), for
    a cluster to `RedisCluster` with the seed nodes (no address, no database: a cluster has
    only database 0)."""
    options: dict[str, Any] = {
        "host": target.host,
        "port": target.port,
        "db": target.db,
        "username": target.username,
        "password": target.password,
        "ssl": target.tls,
        "socket_connect_timeout": CONNECT_TIMEOUT,
        "socket_timeout": COMMAND_TIMEOUT,
        "protocol": 2,  # the replies the core parses (as redis-py 5 and Redis 5+ give them)
    }
    if target.mode != SINGLE:
        for name in ("host", "port", "ssl"):
            del options[name]
    if target.mode == CLUSTER:
        del options["db"]
    return options


def pubsub_options(target: RedisTarget, address: tuple[str, int] | None = None) -> dict[str, Any]:
    """redis-py `Connection` options for a pub/sub connection (SSLConnection when `tls`), to
    `address` when given (a Sentinel's current master, a cluster node), else the target's."""
    host, port = address if address is not None else (target.host, target.port)
    return {
        "host": host,
        "port": port,
        "username": target.username,
        "password": target.password,
        "socket_connect_timeout": CONNECT_TIMEOUT,
        "socket_timeout": None,  # pushes come when they come; a broken link reads as EOF
        "socket_keepalive": True,
        "protocol": 2,  # RESP2: channel messages are plain replies to read, not push callbacks
    }


def link_lost_message(target: RedisTarget, reason: str) -> str:
    return (
        f"lost the Redis engine at {target.display} ({reason}): held connections stay open, "
        "publishes get 503 until it is back; reconnecting"
    )


def link_back_message(target: RedisTarget, gap: float) -> str:
    return (
        f"Redis engine at {target.display} reconnected after {gap:.1f} s; items published in "
        "that gap were refused (503) or not received by this node"
    )


# A failure's text as told to publishers and the log: redis-py's messages may carry a whole
# client's repr (MasterNotFoundError does), which says nothing more to a publisher.
MAX_REASON = 200


def failure_reason(exc: BaseException) -> str:
    """What went wrong, short: the message up to any client repr, or the exception's type."""
    text = str(exc).split(" : <", 1)[0].strip() or type(exc).__name__
    return text if len(text) <= MAX_REASON else text[: MAX_REASON - 3] + "..."


def next_backoff(delay: float) -> float:
    """The wait before the next reconnect attempt after waiting `delay`."""
    return min(delay * 2, BACKOFF_MAX)


def link_silent(last_received: float, now: float, interval: float = HEALTH_INTERVAL) -> bool:
    """Whether the pub/sub connection heard nothing (not even a PONG) for three intervals."""
    return now - last_received > 3 * interval


# KEYS: dedup key, stream key. ARGV: id TTL in ms (0: no dedup), history length (0: none),
# pub/sub channel, item id ('' for none), the item as JSON, history TTL in ms. Returns 1 when
# published, 0 for a duplicate. The message is "<stream id or ''>\n<item JSON>".
PUBLISH_SCRIPT: Final = """\
if ARGV[4] ~= '' and tonumber(ARGV[1]) > 0 then
  if not redis.call('SET', KEYS[1], '1', 'NX', 'PX', ARGV[1]) then
    return 0
  end
end
local sid = ''
if tonumber(ARGV[2]) > 0 then
  sid = redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', 'i', ARGV[4], 'm', ARGV[5])
  redis.call('PEXPIRE', KEYS[2], ARGV[6])
end
redis.call('PUBLISH', ARGV[3], sid .. '\\n' .. ARGV[5])
return 1
"""

# The same for a Redis Cluster: SPUBLISH to the shard channel, which the hash tag puts in the
# slot of both keys, so the script touches one slot (Redis 7's sharded pub/sub: a message goes
# only to the shard that owns the channel, not to every node of the cluster).
SHARDED_PUBLISH_SCRIPT: Final = PUBLISH_SCRIPT.replace("'PUBLISH'", "'SPUBLISH'")


# --- the engine URL -------------------------------------------------------------------------


SINGLE: Final = "single"
SENTINEL: Final = "sentinel"
CLUSTER: Final = "cluster"


@dataclass(frozen=True, slots=True)
class RedisTarget:
    """Where the Redis engine connects, and the prefix of every key and channel it uses.

    `mode` is `single` (one server at `host:port`), `sentinel` (`nodes` are the Sentinels,
    asked for the current master of `master_name`) or `cluster` (`nodes` are seed nodes of a
    Redis Cluster; keys and shard channels are hash-tagged per channel)."""

    host: str
    port: int = 6379
    db: int = 0
    tls: bool = False
    username: str | None = None
    password: str | None = None
    prefix: str = ""
    mode: str = SINGLE
    nodes: tuple[tuple[str, int], ...] = ()
    master_name: str = ""

    @property
    def display(self) -> str:
        """The URL without credentials, for messages."""
        if self.mode == SINGLE:
            scheme = "rediss" if self.tls else "redis"
            return f"{scheme}://{_hostport(self.host, self.port)}/{self.db}"
        nodes = ",".join(_hostport(h, p) for h, p in self.nodes)
        if self.mode == SENTINEL:
            return f"{SENTINEL_SCHEME}://{nodes}/{self.master_name}/{self.db}"
        return f"{CLUSTER_SCHEME}://{nodes}"


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


_URL_FORMS: Final = (
    "redis://HOST[:PORT][/DB][?prefix=P], "
    "redis+sentinel://HOST:PORT[,HOST:PORT...]/MASTER_NAME[/DB][?prefix=P] or "
    "redis+cluster://HOST:PORT[,HOST:PORT...][?prefix=P]"
)


def parse_engine_url(url: str) -> RedisTarget:
    """`redis://[[USER]:PASSWORD@]HOST[:PORT][/DB][?prefix=P]` (`rediss://` for TLS),
    `redis+sentinel://[[USER]:PASSWORD@]HOST:PORT[,HOST:PORT...]/MASTER_NAME[/DB][?prefix=P]`
    (the Sentinels; the credentials are the master's), or
    `redis+cluster://[[USER]:PASSWORD@]HOST:PORT[,HOST:PORT...][?prefix=P]` (seed nodes of a
    Redis Cluster; a port defaults to 26379 for Sentinels, 6379 for cluster nodes).

    Pub/sub channels are shared by every database of a server, so the default prefix,
    `gripcore:DB:`, includes the database number: one database is one cluster. A cluster's
    prefix may not hold `{` or `}` (the hash tag that follows it must be the first).
    Raises `LocalProtocolError` for anything else.
    """
    bad = f"engine URL must be {_URL_FORMS}, got {url!r}"
    scheme, sep, _ = url.partition("://")
    if sep and scheme in (SENTINEL_SCHEME, CLUSTER_SCHEME):
        return _parse_multi(url, scheme, bad)
    parts = urlsplit(url)
    if parts.scheme not in _REDIS_SCHEMES or not parts.hostname:
        raise LocalProtocolError(bad)
    try:
        port = parts.port or 6379
    except ValueError:
        raise LocalProtocolError(bad) from None
    path = parts.path.strip("/")
    db = _parse_db(path, bad)
    return RedisTarget(
        host=parts.hostname,
        port=port,
        db=db,
        tls=parts.scheme == "rediss",
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password is not None else None,
        prefix=_parse_prefix(parts.query, db, bad),
    )


def _parse_db(text: str, bad: str) -> int:
    if text and not (text.isdigit() and text.isascii()):
        raise LocalProtocolError(bad)
    return int(text) if text else 0


def _parse_prefix(query: str, db: int, bad: str) -> str:
    fields = parse_qs(query, keep_blank_values=True)
    if set(fields) - {"prefix"} or len(fields.get("prefix", ())) > 1:
        raise LocalProtocolError(bad)
    return fields["prefix"][0] if "prefix" in fields else f"gripcore:{db}:"


def _parse_multi(url: str, scheme: str, bad: str) -> RedisTarget:
    """The Sentinel and cluster forms: a comma-separated list of HOST[:PORT] (urlsplit cannot
    take one), then the path."""
    rest = url[len(scheme) + 3 :]
    rest, _, query = rest.partition("?")
    netloc, _, path = rest.partition("/")
    userinfo, at, hosts = netloc.rpartition("@")
    username = password = None
    if at:
        user, colon, secret = userinfo.partition(":")
        username = unquote(user) if user else None
        password = unquote(secret) if colon else None
    default_port = 26379 if scheme == SENTINEL_SCHEME else 6379
    nodes = tuple(_parse_node(node, default_port, bad) for node in hosts.split(","))
    names = path.strip("/").split("/") if path.strip("/") else []
    if scheme == SENTINEL_SCHEME:
        if not 1 <= len(names) <= 2:
            raise LocalProtocolError(bad)
        master_name, db = names[0], _parse_db(names[1] if len(names) > 1 else "", bad)
        mode = SENTINEL
    else:
        if names:
            raise LocalProtocolError(bad)
        master_name, db, mode = "", 0, CLUSTER
    prefix = _parse_prefix(query, db, bad)
    if mode == CLUSTER and ("{" in prefix or "}" in prefix):
        raise LocalProtocolError(bad)
    return RedisTarget(
        host=nodes[0][0],
        port=nodes[0][1],
        db=db,
        username=username,
        password=password,
        prefix=prefix,
        mode=mode,
        nodes=nodes,
        master_name=master_name,
    )


def _parse_node(text: str, default_port: int, bad: str) -> tuple[str, int]:
    parts = urlsplit(f"//{text}")
    try:
        port = parts.port or default_port
    except ValueError:
        raise LocalProtocolError(bad) from None
    if not parts.hostname or parts.username is not None or parts.path:
        raise LocalProtocolError(bad)
    return parts.hostname, port


def key_slot(key: str) -> int:
    """The Redis Cluster slot of a key or shard channel: CRC16 of its hash tag (the text
    between the first `{` and the next `}`, when not empty), else of the whole key."""
    data = key.encode("utf-8")
    start = data.find(b"{")
    if start >= 0:
        end = data.find(b"}", start + 1)
        if end > start + 1:
            data = data[start + 1 : end]
    return binascii.crc_hqx(data, 0) % CLUSTER_SLOTS


def hash_tag(channel: str) -> str:
    """The hash tag that puts every key and the shard channel of `channel` in one slot: the
    channel itself, or, when it holds `}` (which would end the tag early) or is empty, `~` and
    its UTF-8 in hex (a `~` channel cannot clash: the tag only picks the slot, the key still
    names the channel)."""
    if channel and "}" not in channel:
        return "{" + channel + "}"
    return "{~" + channel.encode("utf-8").hex() + "}"


def cluster_slots(reply: Sequence[Any]) -> tuple[tuple[int, int, str, int], ...]:
    """The `CLUSTER SLOTS` reply as sorted (first slot, last slot, primary host, port) ranges.
    Raises ValueError (or IndexError, TypeError) for a reply that is not one."""
    ranges = []
    for entry in reply:
        first, last, primary = int(entry[0]), int(entry[1]), entry[2]
        ranges.append((first, last, _text(primary[0]), int(primary[1])))
    ranges.sort()
    return tuple(ranges)


def slot_owner(ranges: Sequence[tuple[int, int, str, int]], slot: int) -> tuple[str, int] | None:
    """The primary (host, port) serving `slot` in `cluster_slots` ranges; None when no node
    serves it."""
    index = bisect.bisect_right(ranges, (slot, CLUSTER_SLOTS, "\uffff", 0)) - 1
    if index >= 0 and ranges[index][0] <= slot <= ranges[index][1]:
        return ranges[index][2], ranges[index][3]
    return None


# --- commands for the adapter ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Subscribe:
    """SUBSCRIBE to these Redis channels (on the pub/sub connection); in a cluster,
    SSUBSCRIBE on the pub/sub connection to `node`, the primary owning their slots."""

    channels: tuple[str, ...]
    node: tuple[str, int] | None = None

    @property
    def verb(self) -> str:
        return "SUBSCRIBE" if self.node is None else "SSUBSCRIBE"


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    """UNSUBSCRIBE from these Redis channels (SUNSUBSCRIBE on `node`'s connection)."""

    channels: tuple[str, ...]
    node: tuple[str, int] | None = None

    @property
    def verb(self) -> str:
        return "UNSUBSCRIBE" if self.node is None else "SUNSUBSCRIBE"


@dataclass(frozen=True, slots=True)
class ReadHistory:
    """`XREVRANGE key + - COUNT count`; hand the reply to `history_read(token, ...)`, or call
    `history_failed(token)` when the command cannot be run."""

    token: int
    key: str
    count: int


Command = Subscribe | Unsubscribe | ReadHistory


@dataclass(frozen=True, slots=True)
class ScriptCall:
    """One run of `PUBLISH_SCRIPT`: EVALSHA with these keys and args."""

    keys: tuple[str, str]
    args: tuple[int, int, str, str, bytes, int]


# --- what arrives from Redis ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Received:
    """An item as received from Redis, with its stream id ('' without history). What the Redis
    engine's sequencer orders (it reads the item's sequencing fields through it)."""

    item: Item
    sid: str = ""

    @property
    def channel(self) -> str:
        return self.item.channel

    @property
    def id(self) -> str | None:
        return self.item.id

    @property
    def prev_id(self) -> str | None:
        return self.item.prev_id

    @property
    def no_seq(self) -> bool:
        return self.item.no_seq


def _sid_key(sid: str) -> tuple[int, int]:
    """A stream id `MS-SEQ` as a sortable pair."""
    ms, _, seq = sid.partition("-")
    return int(ms), int(seq or 0)


def _text(value: bytes | str) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else value


def encode_item(item: Item) -> bytes:
    """The item as the compact JSON carried in Redis messages and streams."""
    doc = item_to_json(item)
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def decode_item(data: bytes, max_content_size: int) -> Item:
    """Raises `PublishError` (or ValueError for bytes that are not JSON)."""
    return parse_item(json.loads(data), max_content_size=max_content_size)


@dataclass(slots=True)
class EngineStats:
    """Counters of the Redis engine since start."""

    outages: int = 0
    """Times the connection to Redis was lost."""
    outage_seconds: float = 0.0
    """Total time without a connection to Redis (finished outages)."""
    rejected: int = 0
    """Published items refused (503) because Redis could not take them."""
    duplicates: int = 0
    """Published items Redis dropped as duplicates (cluster-wide dedup)."""
    bad_messages: int = 0
    """Messages from Redis that did not decode (another program publishing on our prefix)."""
    resumes: int = 0
    """Resumes whose last id was found in the history."""
    resume_misses: int = 0
    """Resumes whose last id was not in the history (the origin's recovery applies)."""


# --- the memory engine ----------------------------------------------------------------------


@dataclass(slots=True)
class MemoryEngine(Broker):
    """The in-process engine: the `Broker`, plus the last `history.size` items per channel."""

    history: History | None = None
    engine_stats: EngineStats = field(default_factory=EngineStats)

    remote = False

    def resume(self, sub: Subscriber, last_id: str, now: float) -> PublishResult:
        """Deliver to `sub`, on each channel it is subscribed to, the items after `last_id` when
        the history holds it. Called right after the subscription, before live items."""
        total = PublishResult()
        if self.history is None:
            return total
        self.sync()
        for channel in list(sub.channels):
            missed = self.history.missed(channel, last_id)
            if missed is None:
                self.engine_stats.resume_misses += 1
                continue
            self.engine_stats.resumes += 1
            for item in missed:
                _merge(total, self.hub.deliver_to(sub, channel, item))
        return total

    def take_commands(self, now: float) -> list[Command]:
        """Nothing to do elsewhere: the memory engine has no I/O."""
        return []

    def _fan_out(self, ready: list[Item], total: PublishResult) -> None:
        if self.history is not None:
            for item in ready:
                self.history.record(item)
        Broker._fan_out(self, ready, total)


def _merge(total: PublishResult, result: PublishResult) -> None:
    total.delivered += result.delivered
    total.woken.extend(result.woken)


# --- the Redis engine -----------------------------------------------------------------------


@dataclass(slots=True, eq=False)
class _Resume:
    token: int
    sub: Subscriber
    channel: str
    last_id: str
    held: list[Received] = field(default_factory=list)


class RedisEngine:
    """The core of the Redis engine (module header). `history` is the items kept per channel
    (0: none), `linger` the seconds a channel stays subscribed in Redis after its last local
    subscriber left, `id_cache_ttl` the dedup window (0: off), `max_content_size` the limit
    applied to items decoded from Redis. `on_commands` is called (with no argument) whenever
    commands are waiting for `take_commands`; the adapter schedules its executor there.

    Raises `LocalProtocolError` for a history over MAX_HISTORY, or a negative one or linger. Never raises for what arrives
    from Redis: a message that does not decode is counted in `engine_stats.bad_messages`.
    """

    remote = True

    def __init__(
        self,
        target: RedisTarget,
        hub: Hub,
        sequencer: Sequencer[Received],
        *,
        history: int = 0,
        linger: float = DEFAULT_ENGINE_LINGER,
        id_cache_ttl: float = 60.0,
        max_content_size: int = DEFAULT_MAX_CONTENT_SIZE,
        max_resume_hold: int = DEFAULT_MAX_RESUME_HOLD,
        on_commands: Callable[[], None] | None = None,
    ) -> None:
        if not 0 <= history <= MAX_HISTORY:
            raise LocalProtocolError(f"history size must be 1..{MAX_HISTORY}, got {history!r}")
        if linger < 0 or id_cache_ttl < 0 or max_resume_hold < 1:
            raise LocalProtocolError("linger and id_cache_ttl must be >= 0, max_resume_hold >= 1")
        self.target = target
        self.hub = hub
        self.sequencer = sequencer
        self.history = history
        self.linger = float(linger)
        self.max_content_size = max_content_size
        self.max_resume_hold = max_resume_hold
        self.on_commands = on_commands
        self.stats = BrokerStats()
        self.engine_stats = EngineStats()
        self.up = False
        self._ttl_ms = max(1, round(id_cache_ttl * 1000)) if id_cache_ttl > 0 else 0
        self._tagged = target.mode == CLUSTER  # hash tags, shard channels
        self._slots: tuple[tuple[int, int, str, int], ...] = ()  # a cluster's slot owners
        self.relink = False
        self._down_since: float | None = None
        self._subscribed: set[str] = set()  # SUBSCRIBE sent (local channel names)
        self._confirmed: set[str] = set()  # ... and confirmed by Redis on this connection
        self._idle: dict[str, float | None] = {}  # lingering: deadline, None until stamped
        self._commands: list[Command] = []
        self._resumes: dict[int, _Resume] = {}
        self._resuming: dict[str, list[_Resume]] = {}  # by channel, holding live items
        self._waiting: dict[str, list[_Resume]] = {}  # by channel, until the SUBSCRIBE is done
        self._next_token = 1

    # --- names ---

    def _prefix(self, channel: str) -> str:
        # in a cluster the channel's hash tag follows the prefix: its keys share one slot
        return self.target.prefix + (hash_tag(channel) if self._tagged else "")

    def redis_channel(self, channel: str) -> str:
        return f"{self._prefix(channel)}c:{channel}"

    def stream_key(self, channel: str) -> str:
        return f"{self._prefix(channel)}h:{channel}"

    def dedup_key(self, channel: str, item_id: str) -> str:
        # the length keeps (channel, id) pairs apart whatever characters they hold
        return f"{self._prefix(channel)}id:{len(channel)}:{channel}{item_id}"

    @property
    def script(self) -> str:
        """The Lua script each `ScriptCall` runs."""
        return SHARDED_PUBLISH_SCRIPT if self._tagged else PUBLISH_SCRIPT

    @property
    def pipelined(self) -> bool:
        """Whether a publish's script runs go out in one pipeline (one server, a Sentinel's
        master), or one after another, in order (a cluster: each may go to another primary)."""
        return not self._tagged

    def _local(self, redis_channel: bytes | str) -> str | None:
        name = _text(redis_channel)
        if not name.startswith(self.target.prefix):
            return None
        rest = name[len(self.target.prefix) :]
        if self._tagged:  # a tag never holds "}": the first one ends it
            end = rest.find("}")
            rest = rest[end + 1 :] if rest.startswith("{") else ""
        if not rest.startswith("c:"):
            return None
        channel = rest[2:]
        return channel if self.redis_channel(channel) == name else None

    def _by_node(
        self, kind: type[Subscribe] | type[Unsubscribe], channels: Iterable[str]
    ) -> list[Command]:
        """(UN)SUBSCRIBE commands for these local channels: one, or in a cluster one per slot
        (Redis refuses an SSUBSCRIBE whose channels are in different slots, CROSSSLOT), sent
        to the primary owning it (an unknown slot goes to the first node, whose MOVED reply
        makes the driver reconnect with a fresh slot map)."""
        names = [self.redis_channel(c) for c in channels]
        if not self._tagged:
            return [kind(tuple(names))]
        groups: dict[tuple[tuple[str, int], int], list[str]] = {}
        fallback = (self._slots[0][2], self._slots[0][3]) if self._slots else self.target.nodes[0]
        for name in names:
            slot = key_slot(name)
            node = slot_owner(self._slots, slot) or fallback
            groups.setdefault((node, slot), []).append(name)
        return [kind(tuple(group), node) for (node, _), group in groups.items()]

    # --- publishing ---

    def publish_calls(self, items: Iterable[Item]) -> list[ScriptCall]:
        """The script runs that publish `items` (validated), in order; run them in one pipeline
        and pass the replies to `published`."""
        calls = []
        for item in items:
            item_id = item.id or ""
            calls.append(
                ScriptCall(
                    (self.dedup_key(item.channel, item_id), self.stream_key(item.channel)),
                    (
                        self._ttl_ms,
                        self.history,
                        self.redis_channel(item.channel),
                        item_id,
                        encode_item(item),
                        round(HISTORY_TTL * 1000),
                    ),
                )
            )
        return calls

    def published(self, replies: Sequence[object]) -> None:
        """Redis ran the calls: count what it took and what it dropped as duplicates."""
        self.stats.received += len(replies)
        self.engine_stats.duplicates += sum(1 for reply in replies if reply in (0, b"0", "0"))

    def publish_failed(self, count: int) -> None:
        """Redis could not take `count` items: the publisher got a 503."""
        self.engine_stats.rejected += count

    # --- subscriptions ---

    def sync(self) -> list[ChannelChange]:
        """Take the hub's channel changes: SUBSCRIBE new channels, start lingering on left
        ones (the sequencer forgets them at once, as on one node). Returns the changes."""
        changes = self.hub.take_channel_changes()
        new: list[str] = []
        for change in changes:
            channel = change.channel
            if change.subscribed:
                self._idle.pop(channel, None)
                if channel not in self._subscribed:
                    self._subscribed.add(channel)
                    new.append(channel)
            else:
                self.sequencer.channel_unsubscribed(channel)
                self._idle[channel] = None
        if new:
            self._commands.extend(self._by_node(Subscribe, new))
        if changes:
            self._notify()
        return changes

    def subscribed(self, redis_channel: bytes | str) -> None:
        """Redis confirmed a SUBSCRIBE: read the history of resumes that waited for it."""
        channel = self._local(redis_channel)
        if channel is None or channel not in self._subscribed:
            return
        self._confirmed.add(channel)
        for resume in self._waiting.pop(channel, ()):
            self._read(resume)

    def take_commands(self, now: float) -> list[Command]:
        """What to do now. Also stamps the linger deadline of channels left since the last
        call (and unsubscribes those already due, at once when `linger` is 0)."""
        for channel, deadline in self._idle.items():
            if deadline is None:
                self._idle[channel] = now + self.linger
        self._expire(now)
        commands, self._commands = self._commands, []
        return commands

    def next_deadline(self) -> float | None:
        """When `handle_timer` must next run: a sequencer wait or a linger ending."""
        deadlines = [
            d for d in (self.sequencer.next_deadline(), self._first_linger()) if d is not None
        ]
        return min(deadlines) if deadlines else None

    def _first_linger(self) -> float | None:
        # channels are stamped in the order they were left, so the first one ends first
        return next(iter(self._idle.values()), None)

    def handle_timer(self, now: float) -> PublishResult:
        """Release items whose wait for a predecessor is over; unsubscribe lingered channels."""
        total = PublishResult()
        self._fan_out(self.sequencer.handle_timer(now), total)
        self._expire(now)
        return total

    def _expire(self, now: float) -> None:
        gone: list[str] = []
        idle = self._idle
        while idle:
            channel, deadline = next(iter(idle.items()))
            if deadline is None or deadline > now:
                break
            del idle[channel]
            self._subscribed.discard(channel)
            self._confirmed.discard(channel)
            for resume in self._waiting.pop(channel, ()):
                del self._resumes[resume.token]
                self._finish(resume, None)  # the subscriber left: nothing to deliver
            gone.append(channel)
        if gone:
            self._commands.extend(self._by_node(Unsubscribe, gone))
            self._notify()

    # --- the connection to Redis ---

    def link_down(self, now: float) -> None:
        """The pub/sub connection was lost: subscriptions are gone until `link_up`."""
        if not self.up:
            return
        self.up = False
        self._down_since = now
        self.engine_stats.outages += 1
        self._confirmed.clear()

    def link_up(
        self, now: float, slots: tuple[tuple[int, int, str, int], ...] = ()
    ) -> float | None:
        """Connected (again): SUBSCRIBE every channel with local subscribers (and those still
        lingering). A cluster's driver passes the slot owners (`cluster_slots`) it connected
        to. Returns how long the outage lasted, None on the first connection."""
        self.up = True
        self.relink = False
        self._slots = slots
        gap = None
        if self._down_since is not None:
            gap = max(0.0, now - self._down_since)
            self.engine_stats.outage_seconds += gap
            self._down_since = None
        # a SUBSCRIBE queued while down went nowhere; everything is subscribed afresh
        self._commands = [c for c in self._commands if isinstance(c, ReadHistory)]
        if self._subscribed:
            self._commands.extend(self._by_node(Subscribe, sorted(self._subscribed)))
            self._notify()
        return gap

    def receive(self, redis_channel: bytes | str, data: bytes, now: float) -> PublishResult:
        """A message arrived on a subscribed channel: sequence it, deliver what is ready."""
        total = PublishResult()
        channel = self._local(redis_channel)
        sid, _, body = data.partition(b"\n")
        try:
            item = decode_item(body, self.max_content_size)
            received = Received(item, sid.decode("ascii"))
            if sid:
                _sid_key(received.sid)
        except (ValueError, PublishError):  # UnicodeDecodeError is a ValueError
            item = None
        if item is None or item.channel != channel:
            self.engine_stats.bad_messages += 1
            return total
        ready = self.sequencer.publish(
            received, now, has_subscribers=self.hub.has_subscribers(channel)
        )
        self._fan_out(ready, total)
        return total

    def handle_push(self, push: object, now: float) -> PublishResult | None:
        """One reply read from the pub/sub connection (RESP2, as redis-py parses it): a channel
        message is received (its deliveries returned), a SUBSCRIBE confirmation noted; anything
        else (PONG, UNSUBSCRIBE confirmations) is nothing to act on: None. Shard channels
        (`smessage`, `ssubscribe`) alike; a `sunsubscribe` for a channel still wanted is Redis
        dropping it (its slot moved to another node): `relink` is set, and the driver
        reconnects with a fresh slot map."""
        if not isinstance(push, list) or len(push) < 3:
            return None
        kind = push[0]
        if kind in (b"message", b"smessage"):
            return self.receive(push[1], push[2], now)
        if kind in (b"subscribe", b"ssubscribe"):
            self.subscribed(push[1])
        elif kind == b"sunsubscribe" and self._local(push[1]) in self._subscribed:
            self.relink = True
        return None

    def _fan_out(self, ready: list[Received], total: PublishResult) -> None:
        stats = self.stats
        for received in ready:
            resuming = self._resuming.get(received.channel)
            if resuming:
                for resume in list(resuming):  # _hold may end a resume
                    self._hold(resume, received, total)
            result = self.hub.publish(received.item)
            stats.fanned_out += 1
            stats.delivered += result.delivered
            _merge(total, result)

    # --- resume ---

    def resume(self, sub: Subscriber, last_id: str, now: float) -> PublishResult:
        """Start resuming `sub` after `last_id` on each channel it is subscribed to (module
        header). Deliveries happen later, in `history_read`."""
        if not self.history:
            return PublishResult()
        self.sync()
        for channel in list(sub.channels):
            resume = _Resume(self._next_token, sub, channel, last_id)
            self._next_token += 1
            self.hub.pause(sub, channel)
            self._resumes[resume.token] = resume
            self._resuming.setdefault(channel, []).append(resume)
            if channel in self._confirmed:
                self._read(resume)
            else:
                self._waiting.setdefault(channel, []).append(resume)
        return PublishResult()

    def _read(self, resume: _Resume) -> None:
        self._commands.append(
            ReadHistory(resume.token, self.stream_key(resume.channel), self.history)
        )
        self._notify()

    def _hold(self, resume: _Resume, received: Received, total: PublishResult) -> None:
        if len(resume.held) < self.max_resume_hold:
            resume.held.append(received)
            return
        # the read is taking too long: give up on the history, deliver what is held
        self._resumes.pop(resume.token, None)
        waiting = self._waiting.get(resume.channel)
        if waiting is not None and resume in waiting:
            waiting.remove(resume)
        _merge(total, self._finish(resume, None))

    def history_read(
        self,
        token: int,
        reply: Sequence[tuple[bytes | str, Mapping[bytes | str, bytes | str]]],
        now: float,
    ) -> PublishResult:
        """The XREVRANGE reply (newest first) of `ReadHistory(token)`: deliver what was missed,
        then the live items held meanwhile that the history did not hold."""
        resume = self._resumes.pop(token, None)
        if resume is None:
            return PublishResult()
        entries: list[tuple[str | None, tuple[str, bytes]]] = []
        for sid, fields in reversed(reply):
            item_id = _text(fields.get(b"i", fields.get("i", b"")))
            raw = fields.get(b"m", fields.get("m", b""))
            data = raw.encode() if isinstance(raw, str) else raw
            entries.append((item_id or None, (_text(sid), data)))
        missed = missed_after(entries, resume.last_id)
        if missed is None:
            self.engine_stats.resume_misses += 1
            return self._finish(resume, None)
        self.engine_stats.resumes += 1
        newest = _sid_key(entries[-1][1][0])
        replay: list[Item] = []
        for _, data in missed:
            try:
                replay.append(decode_item(data, self.max_content_size))
            except (ValueError, PublishError):
                self.engine_stats.bad_messages += 1
        return self._finish(resume, (replay, newest))

    def history_failed(self, token: int) -> PublishResult:
        """The history could not be read (Redis went away): resume without it."""
        resume = self._resumes.pop(token, None)
        if resume is None:
            return PublishResult()
        return self._finish(resume, None)

    def _finish(
        self, resume: _Resume, found: tuple[list[Item], tuple[int, int]] | None
    ) -> PublishResult:
        """End a resume: unpause, deliver the replay (when found), then the held live items
        that are newer than the history's newest entry (all of them when not found)."""
        total = PublishResult()
        resuming = self._resuming[resume.channel]
        resuming.remove(resume)
        if not resuming:
            del self._resuming[resume.channel]
        sub, channel = resume.sub, resume.channel
        if channel not in sub.channels:
            return total  # the subscriber left meanwhile
        self.hub.pause(sub, channel, paused=False)
        held = resume.held
        if found is not None:
            replay, newest = found
            for item in replay:
                _merge(total, self.hub.deliver_to(sub, channel, item))
            held = [r for r in held if not r.sid or _sid_key(r.sid) > newest]
        for received in held:
            _merge(total, self.hub.deliver_to(sub, channel, received.item))
        return total

    # --- the adapter's queue ---

    def _notify(self) -> None:
        if self.on_commands is not None:
            self.on_commands()

    @property
    def pending_resumes(self) -> int:
        """Resumes waiting for their history (for tests and metrics)."""
        return len(self._resumes)

    @property
    def subscribed_channels(self) -> frozenset[str]:
        """Channels subscribed in Redis (SUBSCRIBE sent), lingering ones included."""
        return frozenset(self._subscribed)
