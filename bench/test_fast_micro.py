"""Micro-benchmarks: each hot function, compiled (`_fast`) next to its pure twin (`_fast_py`).

Run with `make bench` (pytest-benchmark). Ratios, not absolute times, are what to compare:
both implementations run in the same session on the same machine.
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import Any

import pytest

from gripcore import _fast_py

try:
    from gripcore import _fast  # type: ignore[attr-defined,unused-ignore]
except ImportError:  # pure-only install: benchmark the twin alone
    IMPLS: list[ModuleType] = [_fast_py]
else:
    IMPLS = [_fast_py, _fast]

SSE = b"data: " + b"x" * 64 + b"\n\n"
N_SUBSCRIBERS = 5000


@pytest.fixture(params=IMPLS, ids=lambda m: m.__name__.rsplit(".", 1)[-1])
def impl(request: pytest.FixtureRequest) -> ModuleType:
    module: ModuleType = request.param
    return module


def test_encode_chunk(benchmark: Callable[..., Any], impl: ModuleType) -> None:
    assert benchmark(impl.encode_chunk, SSE).endswith(b"\r\n")


def test_encode_ws_frame(benchmark: Callable[..., Any], impl: ModuleType) -> None:
    assert benchmark(impl.encode_ws_frame, 1, SSE)[0] == 0x81


def test_fanout_5000_subscribers(benchmark: Callable[..., Any], impl: ModuleType) -> None:
    """One item appended to 5,000 idle subscriber buffers (then drained, as a flush would)."""
    targets: dict[object, bytearray] = {object(): bytearray() for _ in range(N_SUBSCRIBERS)}
    payload = impl.encode_chunk(SSE)

    def one_publish() -> int:
        woken: list[object] = []
        n: int = impl.fanout(targets, payload, woken, [], 0)
        for buf in targets.values():
            buf.clear()
        return n

    assert benchmark(one_publish) == N_SUBSCRIBERS
