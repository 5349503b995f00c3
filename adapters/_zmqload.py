"""pyzmq for the ZeroMQ ingress drivers, imported only when `--push-in-spec` or
`--push-in-sub-spec` is set (the `zmq` extra): a clear error when it is missing."""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["MISSING_ZMQ", "import_zmq"]

MISSING_ZMQ = "--push-in-spec and --push-in-sub-spec need pyzmq: install gripcore[zmq]"


def import_zmq(flavour: str) -> ModuleType:
    """`zmq.asyncio` or `zmq.green`. Raises OSError (a start-up error) without pyzmq."""
    try:
        return importlib.import_module(flavour)
    except ImportError:
        raise OSError(MISSING_ZMQ) from None
