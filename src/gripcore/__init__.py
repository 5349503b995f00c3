"""gripcore: a GRIP proxy and realtime push broker with a sans-IO core.

The public names are re-exported here; everything else lives in private modules.
"""

from __future__ import annotations

from ._errors import (
    ContentTooLargeError,
    ControlMessageError,
    FilterError,
    InstructError,
    LocalProtocolError,
    ProtocolError,
    PublishError,
    RemoteProtocolError,
    RoutesError,
    SigError,
    WebSocketEventsError,
)

__version__ = "0.1.0"

__all__ = [
    "ContentTooLargeError",
    "ControlMessageError",
    "FilterError",
    "InstructError",
    "LocalProtocolError",
    "ProtocolError",
    "PublishError",
    "RemoteProtocolError",
    "RoutesError",
    "SigError",
    "WebSocketEventsError",
    "__version__",
]
