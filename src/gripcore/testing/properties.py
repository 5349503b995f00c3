"""Property helpers a user calls from their own tests (with or without hypothesis).

Strategy: each helper states one property of a codec or parser and fails with an
`AssertionError` that says which input broke it and how. None of them is vacuous: gripcore's own
tests feed each one a deliberately broken parser and check that it fails.

* `assert_round_trip(encode, decode, value)`: `decode(encode(value)) == value`, and encoding the
  decoded value gives the same bytes again (the encoding is canonical);
* `assert_split_invariant(parser_factory, data)`: bytes fed to an incremental parser in any split
  (whole, one byte at a time, at drawn or derived cut points) give the same outputs, or the same
  error;
* `assert_only_raises(fn, data, allowed)`: whatever `data` is, `fn` either returns or raises one
  of the `allowed` errors (by default gripcore's `ProtocolError` family), never anything else;
* `assert_rejects(fn, invalid)`: an `Invalid` case from `gripcore.testing.strategies` raises
  exactly the error it documents, with the documented message.

An incremental parser is seen through a *feed*: a callable taking a chunk of bytes and returning
what the parser produced from it, where `b""` marks the end of input (h11's convention). Outputs
before an error count too, so a feed should return an iterator that yields them one by one (a
list is lost whole when its chunk raises, which makes split runs differ).
`receive_data_feed` turns an h11-style object (`receive_data` / `next_event` / a `NEED_DATA`
sentinel, such as `WebSocketEventsDecoder`) into one.

Without an explicit list of splits, `assert_split_invariant` derives "random" cut points from the
data itself (a linear congruential sequence seeded with the data's CRC-32): reproducible, and no
global random source. Under hypothesis, draw them with `strategies.split_points(len(data))`.
"""

from __future__ import annotations

import itertools
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Protocol, TypeVar

from .._errors import ProtocolError
from .._wsevents import NEED_DATA
from .strategies import Invalid

__all__ = [
    "DERIVED_SPLITS",
    "Feed",
    "assert_only_raises",
    "assert_rejects",
    "assert_round_trip",
    "assert_split_invariant",
    "receive_data_feed",
]

T = TypeVar("T")
V = TypeVar("V")

Feed = Callable[[bytes], Iterable[object]]
"""Give a parser a chunk (`b""`: end of input); returns what it produced from that chunk."""

# Derived split patterns per call: each is a full parse, so a handful keeps a property cheap
# while still cutting inside most tokens of a short input.
DERIVED_SPLITS = 4

# Bytes shown of a failing input in an assertion message: enough to recognise it, one line.
_SHOW = 120


def _show(data: object) -> str:
    text = repr(data)
    return text if len(text) <= _SHOW else text[: _SHOW - 3] + "..."


def assert_round_trip(encode: Callable[[V], T], decode: Callable[[T], V], value: V) -> T:
    """Assert `decode(encode(value)) == value` and `encode(decoded) == encode(value)`.

    Returns the encoded form. Raises `AssertionError` naming the value and both forms when the
    round trip changes the value or the encoding of the decoded value differs (not canonical).
    Errors raised by `encode` or `decode` propagate unchanged.
    """
    encoded = encode(value)
    decoded = decode(encoded)
    if decoded != value:
        raise AssertionError(
            f"round trip changed the value: {_show(value)} encoded as {_show(encoded)} "
            f"decoded as {_show(decoded)}"
        )
    again = encode(decoded)
    if again != encoded:
        raise AssertionError(
            f"encoding is not canonical: {_show(value)} encoded as {_show(encoded)}, "
            f"its decoded copy as {_show(again)}"
        )
    return encoded


def receive_data_feed(
    decoder_factory: Callable[[], object], *, need_data: object = NEED_DATA
) -> Callable[[], Feed]:
    """Turn a factory of h11-style decoders into a factory of feeds.

    The decoder must have `receive_data(bytes)` (`b""`: end of input) and `next_event()`
    returning `need_data` when it wants more bytes. A feed call hands the chunk over at once and
    returns an iterator over the events, so the events decoded before an error are still seen.
    """

    class _Decoder(Protocol):
        def receive_data(self, data: bytes) -> None: ...

        def next_event(self) -> object: ...

    def drain(decoder: _Decoder) -> Iterator[object]:
        while (event := decoder.next_event()) is not need_data:
            yield event

    def make() -> Feed:
        decoder: _Decoder = decoder_factory()  # type: ignore[assignment]

        def feed(chunk: bytes) -> Iterator[object]:
            decoder.receive_data(chunk)
            return drain(decoder)

        return feed

    return make


def _derived_splits(data: bytes, count: int) -> list[list[int]]:
    """`count` reproducible sets of cut points in 1..len(data)-1, seeded from the data."""
    size = len(data)
    if size < 2:
        return []
    state = zlib.crc32(data)
    out = []
    for _ in range(count):
        state = (state * 1103515245 + 12345) % 2**31
        cuts = {1 + (state >> 3) % (size - 1)}
        for _ in range(min(size - 2, 7)):
            state = (state * 1103515245 + 12345) % 2**31
            cuts.add(1 + (state >> 3) % (size - 1))
        out.append(sorted(cuts))
    return out


def _run(
    factory: Callable[[], Feed], chunks: Iterable[bytes], with_message: bool
) -> tuple[list[object], str | None]:
    """Outputs of feeding `chunks` then `b""`, and the error (type, and message if asked for) if
    one ended it."""
    feed = factory()
    out: list[object] = []
    try:
        for chunk in [*chunks, b""]:
            out.extend(feed(chunk))  # from an iterator, outputs before an error are kept

    except ProtocolError as exc:
        return out, f"{type(exc).__name__}: {exc}" if with_message else type(exc).__name__
    return out, None


def _chunks(data: bytes, cuts: Sequence[int]) -> list[bytes]:
    bounds = [0, *sorted(cut for cut in cuts if 0 < cut < len(data)), len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds) if b > a]


def assert_split_invariant(
    parser_factory: Callable[[], Feed],
    data: bytes,
    *,
    splits: Iterable[Sequence[int]] | None = None,
    compare_messages: bool = True,
) -> list[object]:
    """Assert that `data` parses the same however it is split into chunks.

    `parser_factory()` gives a fresh feed (see `receive_data_feed`). The data is fed whole, one
    byte at a time, and cut at each set of offsets in `splits` (default: `DERIVED_SPLITS` sets
    derived from the data); each run ends with `b""`. Every run must produce the same outputs in
    the same order, and end with no error or the same `ProtocolError` (type and message; the
    outputs before it are compared as well; with `compare_messages=False` only the error types
    are). Returns the outputs of the whole-data run (its partial outputs if it failed).

    Raises `AssertionError` naming the first split whose result differs. Exceptions other than
    `ProtocolError` propagate (use `assert_only_raises` to test those).
    """
    expected, expected_error = _run(parser_factory, [data] if data else [], compare_messages)
    patterns: list[tuple[str, list[bytes]]] = [
        ("one byte at a time", [data[i : i + 1] for i in range(len(data))])
    ]
    chosen = _derived_splits(data, DERIVED_SPLITS) if splits is None else splits
    patterns.extend((f"cut at {list(cuts)}", _chunks(data, cuts)) for cuts in chosen)
    for label, chunks in patterns:
        got, error = _run(parser_factory, chunks, compare_messages)
        if error != expected_error:
            raise AssertionError(
                f"{_show(data)} fed {label} ended with {error or 'no error'}; fed whole it "
                f"ended with {expected_error or 'no error'}"
            )
        if got != expected:
            raise AssertionError(
                f"{_show(data)} fed {label} gave {_show(got)}; fed whole it gave {_show(expected)}"
            )
    return expected


def assert_only_raises(
    fn: Callable[[T], object],
    data: T,
    allowed: tuple[type[BaseException], ...] = (ProtocolError,),
) -> BaseException | None:
    """Call `fn(data)` and assert it returns or raises one of `allowed` (never anything else).

    Returns the allowed exception raised, or None when `fn` returned. Raises `AssertionError`
    (chained to the offending exception) for any other exception.
    """
    try:
        fn(data)
    except allowed as exc:
        return exc
    except Exception as exc:
        names = ", ".join(cls.__name__ for cls in allowed)
        raise AssertionError(
            f"{_show(data)} raised {type(exc).__name__}: {exc} (only {names} allowed)"
        ) from exc
    return None


def assert_rejects(fn: Callable[[T], object], invalid: Invalid[T]) -> ProtocolError:
    """Assert `fn(invalid.value)` raises `invalid.error` with `invalid.message` in its text.

    Returns the error. Raises `AssertionError` when `fn` returns, raises another exception
    (chained), or raises the right class with a message that lacks the expected text.
    """
    try:
        fn(invalid.value)
    except invalid.error as exc:
        if invalid.message not in str(exc):
            raise AssertionError(
                f"{_show(invalid.value)} raised {type(exc).__name__}: {exc!s}; expected the "
                f"message to contain {invalid.message!r}"
            ) from exc
        return exc
    except Exception as exc:
        raise AssertionError(
            f"{_show(invalid.value)} raised {type(exc).__name__}: {exc}; expected "
            f"{invalid.error.__name__} containing {invalid.message!r}"
        ) from exc
    raise AssertionError(
        f"{_show(invalid.value)} was accepted; expected {invalid.error.__name__} containing "
        f"{invalid.message!r}"
    )
