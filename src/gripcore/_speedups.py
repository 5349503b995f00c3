"""Selector for the hot path: the compiled `_fast` when it imported, else the pure twin.

`GRIPCORE_NO_EXTENSIONS=1` forces the pure twin (`_fast_py`). `GRIPCORE_REQUIRE_EXTENSIONS=1`
turns a missing or broken compiled module into an ImportError instead of a silent fallback, so
a CI leg can prove the compiled one is in use. Every other module imports hot functions from here
and nowhere else. `hot_path_note` says which one is live, for `gripcore serve` to log at start: a
warning when the compiled module is missing (gripcore was installed where it could not be built,
see setup.py), so a slow fan-out never goes unexplained.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from types import ModuleType
from typing import TYPE_CHECKING

from . import _fast_py

__all__ = [
    "COMPILED",
    "encode_chunk",
    "encode_woh_event",
    "encode_ws_frame",
    "fanout",
    "flush_connections",
    "hot_path_note",
    "impl",
    "ws_frame_header",
]

_TRUE = ("1", "true", "yes", "on")


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in _TRUE


def _select() -> ModuleType:
    if _env_flag("GRIPCORE_NO_EXTENSIONS"):
        return _fast_py
    try:
        from . import _fast  # type: ignore[attr-defined,unused-ignore]
    except ImportError:
        if _env_flag("GRIPCORE_REQUIRE_EXTENSIONS"):
            raise
        return _fast_py
    return _fast  # type: ignore[no-any-return,unused-ignore]


impl: ModuleType = _select()
COMPILED: bool = impl is not _fast_py


def hot_path_note(live: ModuleType, environ: Mapping[str, str]) -> tuple[bool, str]:
    """(is it a warning, the line to log) about the hot path `live` and how it was chosen."""
    if live is not _fast_py:
        return False, "hot path: compiled (gripcore._fast)"
    if environ.get("GRIPCORE_NO_EXTENSIONS", "").strip().lower() in _TRUE:
        return False, "hot path: pure-Python twin (GRIPCORE_NO_EXTENSIONS is set)"
    return True, (
        "hot path: pure-Python twin, because the compiled module gripcore._fast is not installed "
        "(gripcore was installed without a C compiler?); fan-out is slower. For the compiled one, "
        "install a C compiler and the Python headers and reinstall gripcore from source "
        "(pip install --force-reinstall --no-binary gripcore gripcore); see docs/operations.md"
    )


if TYPE_CHECKING:
    from ._fast_py import (
        encode_chunk,
        encode_woh_event,
        encode_ws_frame,
        fanout,
        flush_connections,
        ws_frame_header,
    )
else:
    encode_chunk = impl.encode_chunk
    encode_woh_event = impl.encode_woh_event
    encode_ws_frame = impl.encode_ws_frame
    fanout = impl.fanout
    flush_connections = impl.flush_connections
    ws_frame_header = impl.ws_frame_header
