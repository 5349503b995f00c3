"""Held HTTP requests: the long-poll (response hold) and stream hold state machines.

After the origin answers with GRIP instructions the proxy holds the client's request. These
sessions decide everything that happens next; the adapter only performs what they ask for and
feeds them what happens: hub events (publishes, actions), timers (`next_deadline` /
`handle_timer(now)`), the result of an origin request they asked for, and the client going away.

What a session asks for is a list of `HoldAction` values:

* `Respond` (long-poll) - send this complete response; the request is over.
* `Retry` - send the client's original request to the origin again with these `Grip-Last`
  headers, and feed the answer to `retry_response` (long-poll after a hint or a gap,
  pushpin-behaviour.md sections 2.4 and 2.5).
* `FetchNextLink` - GET this URL with these headers and feed the answer to
  `next_link_response` (streams, section 3.4).
* `EndStream` - write the end of the body (the stream ends), optionally after an error text.
* `PostGoneLink` - POST to this URL, best effort (section 3.8), once the session is over.

Stream output (initial body, published chunks, keep-alives) goes to `subscriber.outbuf`, framed
for the connection; the adapter drains it and calls `wrote(now)` so that idle keep-alives
restart. Each session's transitions are one table, `_TRANSITIONS`; an input with no entry for
the current state is a `LocalProtocolError` (the adapter called at the wrong time).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from ._errors import FilterError, LocalProtocolError
from ._filters import filter_response_body
from ._hub import (
    BufferOverflow,
    CloseRequested,
    FilterFailed,
    Framing,
    GapDetected,
    HintReceived,
    Hub,
    HubEvent,
    ResponseReady,
    Subscriber,
    Transport,
)
from ._instruct import Instruct, KeepAlive
from ._items import HttpResponseFormat
from ._jsonpatch import apply_body_patch
from ._proxy import Headers, grip_last_headers
from ._speedups import encode_chunk

__all__ = [
    "EndStream",
    "FetchNextLink",
    "HoldAction",
    "HoldState",
    "LastIds",
    "PostGoneLink",
    "Respond",
    "ResponseHold",
    "Retry",
    "StreamHold",
    "published_response",
]

# A chunked body ends with a zero-size chunk and no trailers (RFC 9112 section 7.1).
LAST_CHUNK = b"0\r\n\r\n"


class LastIds(Protocol):
    """What a hold asks the sequencer (`Sequencer` is one): is its prev-id stale?"""

    def last_id(self, channel: str) -> str | None: ...

    def forget_last_id(self, channel: str) -> None: ...


class HoldState(enum.Enum):
    HOLDING = "holding"  # subscribed, waiting for publishes and timers
    WAITING_ORIGIN = "waiting-origin"  # a retry or next-link request is in flight
    DONE = "done"  # answered, ended or abandoned; nothing more will happen


@dataclass(frozen=True, slots=True)
class HoldAction:
    """Something the adapter must do for a held request."""


@dataclass(frozen=True, slots=True)
class Respond(HoldAction):
    status: int
    reason: bytes
    headers: Headers
    body: bytes


@dataclass(frozen=True, slots=True)
class Retry(HoldAction):
    grip_last: Headers


@dataclass(frozen=True, slots=True)
class FetchNextLink(HoldAction):
    url: str
    grip_last: Headers


@dataclass(frozen=True, slots=True)
class EndStream(HoldAction):
    """End the body. `abort`: drop the connection at once instead (a reader that stopped
    reading would never take the rest: the slow-consumer policy)."""

    error: str | None = None
    abort: bool = False


@dataclass(frozen=True, slots=True)
class PostGoneLink(HoldAction):
    url: str


_HOLDING, _WAITING, _DONE = HoldState.HOLDING, HoldState.WAITING_ORIGIN, HoldState.DONE

# (state, input) -> next state. Inputs: publish/hub events, timer, origin answers, client gone.
_TRANSITIONS: dict[tuple[HoldState, str], HoldState] = {
    (_HOLDING, "respond"): _DONE,
    (_HOLDING, "retry"): _WAITING,
    (_HOLDING, "fetch"): _WAITING,
    (_HOLDING, "end"): _DONE,
    (_HOLDING, "client-gone"): _DONE,
    (_WAITING, "origin-answer"): _HOLDING,
    (_WAITING, "origin-final"): _DONE,
    (_WAITING, "respond"): _DONE,
    (_WAITING, "end"): _DONE,
    (_WAITING, "client-gone"): _DONE,
    (_DONE, "client-gone"): _DONE,
}


def published_response(
    timeout_status: int,
    timeout_headers: Sequence[tuple[bytes, bytes]],
    timeout_body: bytes,
    fmt: HttpResponseFormat,
    body: bytes | None,
) -> Respond:
    """The response a long-poll gets for a published `http-response` (section 2.3).

    Headers: the timeout response's, where a published header replaces every inherited header
    of the same name; published `Grip-*` headers are dropped. Body: the published (filtered)
    body, or the hold's body with `body-patch` applied. Content-Length is the adapter's job.
    """
    published = [
        (name.encode("latin-1"), value.encode("latin-1"))
        for name, value in fmt.headers
        if not name.lower().startswith("grip-")
    ]
    replaced = {name.lower() for name, _ in published}
    headers = [(n, v) for n, v in timeout_headers if n.lower() not in replaced]
    headers.extend(published)
    if body is None:
        assert fmt.body_patch is not None
        body = apply_body_patch(timeout_body, fmt.body_patch)
    del timeout_status  # the published code always wins (default 200)
    return Respond(fmt.code, fmt.reason_phrase.encode("latin-1"), headers, body)


class _Hold:
    """What both hold kinds share: the subscriber, its channels, the table, the gone link."""

    def __init__(
        self,
        hub: Hub,
        subscriber: Subscriber,
        instruct: Instruct,
        *,
        channel_prefix: str = "",
        implicit_channels: Sequence[str] = (),
    ) -> None:
        self.hub = hub
        self.subscriber = subscriber
        self.instruct = instruct
        self.channel_prefix = channel_prefix
        self.implicit_channels = tuple(implicit_channels)
        self.state = _HOLDING
        self.gone_link = instruct.gone_link.url if instruct.gone_link is not None else None
        subscriber.channel_prefix = channel_prefix
        subscriber.meta.update(instruct.meta)
        if instruct.hold is not None:
            # a non-hold with a next link subscribes to nothing (Pushpin keeps its channel
            # table empty until a hold): its next-link request carries no Grip-Last
            self._subscribe(instruct)

    def _subscribe(self, instruct: Instruct) -> None:
        """Make the subscriptions those of `instruct` plus the route's implicit channels."""
        wanted: dict[str, tuple[tuple[str, ...], str | None]] = {}
        for channel in instruct.channels:
            wanted[self.channel_prefix + channel.name] = (channel.filters, channel.prev_id)
        for name in self.implicit_channels:
            wanted.setdefault(self.channel_prefix + name, ((), None))
        for name in list(self.subscriber.channels):
            if name not in wanted:
                self.hub.unsubscribe(self.subscriber, name)
        for name, (filters, prev_id) in wanted.items():
            # beyond the per-connection limit Pushpin silently truncates HTTP holds
            self.hub.subscribe(self.subscriber, name, filters=filters, prev_id=prev_id)

    def _stale(self, instruct: Instruct, last_ids: LastIds) -> bool:
        """Whether a channel's prev-id is not the last id delivered on it (an item went out
        before this hold subscribed). The stale last ids are forgotten, every one of them, as
        Pushpin does, so the origin's answer is taken as it is."""
        stale = False
        for channel in instruct.channels:
            name = self.channel_prefix + channel.name
            last = last_ids.last_id(name)
            if channel.prev_id is not None and last is not None and last != channel.prev_id:
                last_ids.forget_last_id(name)
                stale = True
        return stale

    def _move(self, event: str) -> None:
        nxt = _TRANSITIONS.get((self.state, event))
        if nxt is None:
            raise LocalProtocolError(f"{type(self).__name__}: {event!r} while {self.state.value}")
        self.state = nxt

    def _finish(self, actions: list[HoldAction]) -> list[HoldAction]:
        self.hub.remove(self.subscriber)
        if self.gone_link is not None:
            actions.append(PostGoneLink(self.gone_link))
            self.gone_link = None
        return actions

    def grip_last(self) -> Headers:
        cut = len(self.channel_prefix)
        return grip_last_headers(
            (name[cut:], sub.prev_id)
            for name, sub in self.subscriber.channels.items()
            if sub.prev_id is not None
        )

    def client_gone(self) -> list[HoldAction]:
        """The client disconnected: leave every channel; fire the gone link if any."""
        if self.state is _DONE:
            return []
        self._move("client-gone")
        return self._finish([])

    @property
    def done(self) -> bool:
        return self.state is _DONE


class ResponseHold(_Hold):
    """A held long-poll: answered by a publish, a timeout, or a retry to the origin."""

    def __init__(
        self,
        hub: Hub,
        subscriber: Subscriber,
        instruct: Instruct,
        now: float,
        *,
        channel_prefix: str = "",
        implicit_channels: Sequence[str] = (),
        last_ids: LastIds | None = None,
    ) -> None:
        """`last_ids` is the broker's sequencer: a hold whose prev-id is not the last id it
        delivered on the channel is stale and retried at once (`take_actions`), as Pushpin
        does (spec 2.1 step 2)."""
        if subscriber.transport is not Transport.RESPONSE:
            raise LocalProtocolError("a response hold needs a RESPONSE subscriber")
        super().__init__(
            hub,
            subscriber,
            instruct,
            channel_prefix=channel_prefix,
            implicit_channels=implicit_channels,
        )
        self.deadline: float | None = now + instruct.timeout
        self.pending: list[HoldAction] = []
        if last_ids is not None and self._stale(instruct, last_ids):
            self.pending.append(self._retry())

    def take_actions(self) -> list[HoldAction]:
        """Actions decided at the start (a retry of a stale hold)."""
        actions, self.pending = self.pending, []
        return actions

    def _retry(self) -> Retry:
        grip_last = self.grip_last()
        self._move("retry")
        self.hub.remove(self.subscriber)
        return Retry(grip_last)

    def next_deadline(self) -> float | None:
        return self.deadline if self.state is _HOLDING else None

    def wrote(self, now: float) -> None:
        """Nothing is written to a held long-poll before its one response."""

    def timeout_response(self) -> Respond:
        i = self.instruct
        return Respond(i.status, i.reason, list(i.headers), i.body)

    def handle_timer(self, now: float) -> list[HoldAction]:
        if self.state is not _HOLDING or self.deadline is None or now < self.deadline:
            return []
        self._move("respond")
        return self._finish([self.timeout_response()])

    def handle_events(self, events: Iterable[HubEvent]) -> list[HoldAction]:
        actions: list[HoldAction] = []
        for event in events:
            if self.state is not _HOLDING:
                break
            if isinstance(event, ResponseReady):
                self._move("respond")
                i = self.instruct
                actions.append(
                    published_response(i.status, i.headers, i.body, event.format, event.body)
                )
                self._finish(actions)
            elif isinstance(event, HintReceived | GapDetected):
                actions.append(self._retry())
            # FilterFailed: the item is skipped for this subscriber, the hold goes on
        return actions

    def retry_response(self, instruct: Instruct | None, now: float) -> list[HoldAction]:
        """The origin answered a `Retry`: with a new hold (held again, fresh timeout) or with a
        final response (`instruct` None: the adapter relays it itself). An answer arriving
        after the client left is ignored; one that was not asked for is a `LocalProtocolError`."""
        if self.state is _DONE:
            return []
        if instruct is None or instruct.hold != "response":
            self._move("origin-final")
            if instruct is None:
                return self._finish([])
            final = Respond(instruct.status, instruct.reason, list(instruct.headers), instruct.body)
            return self._finish([final])
        self._move("origin-answer")
        self.instruct = instruct
        self.subscriber.meta.update(instruct.meta)
        self._subscribe(instruct)
        self.deadline = now + instruct.timeout
        return []


class StreamHold(_Hold):
    """A held HTTP stream: published chunks, keep-alives, next links, close."""

    def __init__(
        self,
        hub: Hub,
        subscriber: Subscriber,
        instruct: Instruct,
        now: float,
        *,
        channel_prefix: str = "",
        implicit_channels: Sequence[str] = (),
        debug: bool = False,
        last_ids: LastIds | None = None,
    ) -> None:
        """`last_ids` is the broker's sequencer: a first hold whose prev-id is not the last
        id it delivered on the channel is stale (an item went out before the subscription)
        and fetches its next link at once (`take_actions`), as Pushpin does (spec 3.4 (f))."""
        if subscriber.transport is not Transport.STREAM:
            raise LocalProtocolError("a stream hold needs a STREAM subscriber")
        self.debug = debug
        self._keep_alive: KeepAlive | None = None
        self._keep_alive_at: float | None = None
        self._next_url: str | None = None
        self._next_timeout: float | None = None
        self._next_at: float | None = None
        self.pending: list[HoldAction] = []
        super().__init__(
            hub,
            subscriber,
            instruct,
            channel_prefix=channel_prefix,
            implicit_channels=implicit_channels,
        )
        if self._write_body(instruct.body, instruct):
            self._configure(instruct, now)
        held = self.state is _HOLDING and instruct.next_link is not None
        if held and last_ids is not None and self._stale(instruct, last_ids):
            self.pending.append(self._fetch())

    # --- output ---

    def _frame(self, data: bytes) -> bytes:
        return encode_chunk(data) if self.subscriber.framing is Framing.CHUNKED else data

    def _write(self, data: bytes) -> None:
        if data:
            self.subscriber.outbuf += self._frame(data)

    def _write_body(self, body: bytes, instruct: Instruct) -> bool:
        """Write an origin body (the initial one, or a next-link answer's) through the
        `build-id` filter of `instruct`'s channels, as Pushpin does (`filter_response_body`).
        A filter error ends the stream (pending: `EndStream`) and returns False."""
        try:
            body = filter_response_body((c.filters for c in instruct.channels), instruct.meta, body)
        except FilterError as exc:
            self.pending.extend(self._end(f"filter error: {exc}"))
            return False
        self._write(body)
        return True

    def wrote(self, now: float) -> None:
        """The adapter wrote stream data: an idle-mode keep-alive starts counting again."""
        ka = self._keep_alive
        if ka is not None and ka.mode == "idle" and self.state is not _DONE:
            self._keep_alive_at = now + ka.timeout

    def end_bytes(self) -> bytes:
        """What ends the body on the wire (the last chunk; nothing for close-delimited)."""
        return LAST_CHUNK if self.subscriber.framing is Framing.CHUNKED else b""

    # --- configuration from an instruct (initial or next-link answer) ---

    def _configure(self, instruct: Instruct, now: float) -> None:
        self.instruct = instruct
        ka = instruct.keep_alive
        self._keep_alive = ka
        self._keep_alive_at = now + ka.timeout if ka is not None else None
        link = instruct.next_link
        self._next_url = link.url if link is not None else None
        self._next_timeout = float(link.timeout) if link is not None and link.timeout else None
        self._next_at = now + self._next_timeout if self._next_timeout is not None else None
        if self._next_url is None:
            for channel in instruct.channels:
                if channel.prev_id is not None:
                    message = f"channel '{channel.name}' specifies prev-id, but no next link found"
                    self.pending.extend(self._end(message))
                    return
        if instruct.hold is None:
            if self._next_url is not None:
                self.pending.append(self._fetch())
            else:
                self.pending.extend(self._end(None))

    def take_actions(self) -> list[HoldAction]:
        """Actions decided while configuring (an immediate next-link fetch, an early end)."""
        actions, self.pending = self.pending, []
        return actions

    # --- inputs ---

    def next_deadline(self) -> float | None:
        if self.state is _DONE:
            return None
        times = [t for t in (self._keep_alive_at, self._next_at) if t is not None]
        if self.state is _WAITING:
            times = [t for t in (self._keep_alive_at,) if t is not None]
        return min(times) if times else None

    def handle_timer(self, now: float) -> list[HoldAction]:
        actions: list[HoldAction] = []
        if self.state is _DONE:
            return actions
        ka = self._keep_alive
        if ka is not None and self._keep_alive_at is not None and now >= self._keep_alive_at:
            self._write(ka.data)
            self._keep_alive_at = now + ka.timeout
        if self.state is _HOLDING and self._next_at is not None and now >= self._next_at:
            actions.append(self._fetch())
        return actions

    def handle_events(self, events: Iterable[HubEvent]) -> list[HoldAction]:
        actions: list[HoldAction] = []
        for event in events:
            if self.state is _DONE:
                break
            if isinstance(event, CloseRequested):
                actions.extend(self._end(None))
            elif isinstance(event, BufferOverflow):
                actions.extend(self._end("slow consumer: output buffer full", abort=True))
            elif isinstance(event, FilterFailed):
                if self.debug:
                    actions.extend(self._end(event.message))
            elif (
                isinstance(event, HintReceived | GapDetected)
                and self._next_url is not None
                and self.state is _HOLDING
            ):
                actions.append(self._fetch())
        return actions

    def next_link_response(self, instruct: Instruct | None, now: float) -> list[HoldAction]:
        """The origin answered a `FetchNextLink`. `instruct` None means the fetch failed."""
        if self.state is _DONE:
            return []
        self._move("origin-answer")
        if instruct is None:
            return self._end("Failed to retrieve next link.")
        if instruct.hold == "response":
            return self._end("Next link returned non-stream hold.")
        # Pushpin filters a next-link answer's body with the filters in force when it was asked
        # for (the previous instruct's), before the answer's own instructions apply
        if not self._write_body(instruct.body, self.instruct):
            return self.take_actions()
        self.subscriber.meta.update(instruct.meta)
        if instruct.hold == "stream":
            self._subscribe(instruct)
        self._configure(instruct, now)
        if self.state is _HOLDING:
            # what was published during the request, against the answer's prev-ids
            self.hub.release_items(self.subscriber)
        return self.take_actions()

    # --- helpers ---

    def _fetch(self) -> FetchNextLink:
        assert self._next_url is not None
        self._move("fetch")
        self._next_at = None
        self.hub.hold_items(self.subscriber)
        return FetchNextLink(self._next_url, self.grip_last())

    def _end(self, error: str | None, *, abort: bool = False) -> list[HoldAction]:
        """End the stream (Pushpin appends the error text in debug mode only)."""
        self._move("end")
        if error is not None and self.debug:
            self._write(f"\n\n{error}\n".encode())
        return self._finish([EndStream(error, abort)])
