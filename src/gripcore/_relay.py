"""The publish relay between worker processes (`gripcore serve --workers N`), sans-IO.

With several workers, each holds its own share of the client connections and runs its own
broker; every published item must reach every worker, in one order, so that each worker's
sequencer makes the same dedup and prev-id decisions. One worker (the one that serves the
publish API) is the origin of that order: it encodes each batch it accepts as one *frame* and
writes the frame to each sibling over a stream (a socketpair the driver owns) before it fans the
batch out itself. A sibling feeds the bytes it reads to a `RelayDecoder`, which returns the
batches in the order they were sent; the driver hands each to `ProxyNode.publish_relayed`.

Frame: a 4-byte big-endian length, then the batch (a list of `Item`) pickled. Pickle is used
because both ends are the same program forked from one parent over a private socketpair, and it
is the cheapest way to hand validated values across (no second JSON parse per worker). Items
keep their `meta` in a read-only mapping, which pickle cannot take as it is: the pickler here
sends it as a plain dict and rebuilds the read-only view.

Errors: a frame longer than the decoder's limit (`relay_frame_limit`: far above what a publish
body within `max_publish_body` pickles to), or bytes that do not unpickle to a list of items,
mean the stream is not what this module wrote: `LocalProtocolError` (our own program broke its
contract), and the driver treats the relay as lost.
"""

from __future__ import annotations

import copyreg
import io
import pickle
from collections.abc import Sequence
from types import MappingProxyType
from typing import Any, Final

from ._errors import LocalProtocolError
from ._items import Item

__all__ = ["MAX_RELAY_FRAME", "RelayDecoder", "encode_relay_frame", "relay_frame_limit"]

# Largest frame a decoder takes by default: a publish body is bounded by max_publish_body (1 MB
# by default) and a batch pickles to about its JSON size or less; 64 MiB leaves ample room.
MAX_RELAY_FRAME: Final = 64 * 1024 * 1024

# A batch pickles to at most a few times its JSON body (a minimal item's JSON is ~50 bytes, its
# pickle ~150); the limit for a given max_publish_body keeps a wide margin over that.
_BODY_FACTOR: Final = 8

_HEADER = 4
_MAX_ENCODABLE = 2 ** (8 * _HEADER) - 1


def relay_frame_limit(max_publish_body: int) -> int:
    """The decoder limit that fits publishes of up to `max_publish_body` bytes."""
    return max(MAX_RELAY_FRAME, _BODY_FACTOR * max_publish_body)


def _mapping_proxy(mapping: dict[Any, Any]) -> MappingProxyType[Any, Any]:
    return MappingProxyType(mapping)


def _reduce_mapping_proxy(proxy: MappingProxyType[Any, Any]) -> tuple[Any, tuple[Any, ...]]:
    return _mapping_proxy, (dict(proxy),)  # the type itself cannot be pickled by name


_DISPATCH: Final = {**copyreg.dispatch_table, MappingProxyType: _reduce_mapping_proxy}


def encode_relay_frame(items: Sequence[Item], max_frame: int = _MAX_ENCODABLE) -> bytes:
    """One frame carrying `items` (already validated), for every sibling worker. Raises
    `LocalProtocolError` past `max_frame` (by default what the 4-byte length can say)."""
    out = io.BytesIO()
    out.write(b"\0" * _HEADER)
    pickler = pickle.Pickler(out, protocol=pickle.HIGHEST_PROTOCOL)
    pickler.dispatch_table = _DISPATCH
    pickler.dump(list(items))
    size = out.tell() - _HEADER
    if size > max_frame:
        raise LocalProtocolError(f"relay frame of {size} bytes exceeds {max_frame}")
    frame = out.getbuffer()
    frame[:_HEADER] = size.to_bytes(_HEADER, "big")
    del frame  # release the view before reading the bytes out
    return out.getvalue()


class RelayDecoder:
    """Frames in, batches out: `receive_data(bytes)` returns every batch completed so far."""

    def __init__(self, max_frame: int = MAX_RELAY_FRAME) -> None:
        self.max_frame = max_frame
        self._buf = bytearray()

    def receive_data(self, data: bytes) -> list[list[Item]]:
        buf = self._buf
        buf += data
        batches: list[list[Item]] = []
        start = 0
        while len(buf) - start >= _HEADER:
            size = int.from_bytes(buf[start : start + _HEADER], "big")
            if size > self.max_frame:
                raise LocalProtocolError(f"relay frame of {size} bytes exceeds {self.max_frame}")
            end = start + _HEADER + size
            if len(buf) < end:
                break
            batches.append(_load(bytes(buf[start + _HEADER : end])))
            start = end
        del buf[:start]
        return batches

    @property
    def buffered(self) -> int:
        """Bytes of an incomplete frame waiting for the rest."""
        return len(self._buf)


def _load(payload: bytes) -> list[Item]:
    try:
        batch = pickle.loads(payload)
    except Exception as exc:  # any unpickling failure: not a frame this module wrote
        raise LocalProtocolError(f"relay frame does not decode: {exc}") from None
    if not isinstance(batch, list) or not all(isinstance(item, Item) for item in batch):
        raise LocalProtocolError("relay frame is not a batch of items")
    return batch
