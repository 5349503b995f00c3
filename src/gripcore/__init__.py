"""gripcore: a GRIP proxy and realtime push broker with a sans-IO core.

The public names are re-exported here; everything else lives in private modules whose names
may change. Adapters (I/O drivers) live in `gripcore.adapters`. The publishers (`Publisher`,
`AsyncPublisher`, `PublishFailed`) are drivers too, so they are imported from there on first use
(module `__getattr__`): `import gripcore` itself loads no I/O module.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Final

from ._broker import Broker, BrokerStats
from ._config import Config, ConfigError, load_config
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
from ._filters import FilterContext, apply_filters
from ._holds import ResponseHold, StreamHold
from ._hub import Framing, Hub, MessagesDropped, Subscriber, Transport
from ._instruct import Channel, Instruct, KeepAlive, Link, is_grip_response, parse_instruct
from ._items import (
    HttpResponseFormat,
    HttpStreamFormat,
    Item,
    WsMessageFormat,
    encode_publish_body,
    item_to_json,
    parse_item,
    parse_items,
    parse_publish_body,
)
from ._publishapi import PublishResponse, handle_publish_request
from ._routes import Route, RouteTable, Target, parse_route_line, parse_routes
from ._sequencer import Sequencer
from ._sig import (
    FASTLY_FANOUT_JWK,
    SigningKey,
    VerifyKey,
    is_valid_sig,
    mint_sig,
    parse_key_spec,
    parse_verify_key,
    validate_sig,
)
from ._wscontrol import (
    ControlMessage,
    Detach,
    FlushDelayed,
    SendDelayed,
    SetMeta,
    Subscribe,
    Unsubscribe,
    classify_origin_message,
    encode_control_message,
    parse_control_message,
)
from ._wsevents import (
    Binary,
    Close,
    Disconnect,
    Open,
    Ping,
    Pong,
    Text,
    WebSocketEvent,
    WebSocketEventsDecoder,
    decode_events,
    encode_events,
)
from ._wsgateway import WebSocketGateway

if TYPE_CHECKING:
    from .adapters.asyncio.publisher import AsyncPublisher
    from .adapters.publisher import Publisher, PublishFailed

# The one place the version is written (pyproject.toml reads it: setuptools dynamic version).
__version__ = "0.1.0"

# Public names that live in the drivers, and the module each is imported from when first used.
_LAZY: Final = {
    "AsyncPublisher": "gripcore.adapters.asyncio.publisher",
    "PublishFailed": "gripcore.adapters.publisher",
    "Publisher": "gripcore.adapters.publisher",
}


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'gripcore' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups find it without coming here
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


__all__ = [
    "FASTLY_FANOUT_JWK",
    "AsyncPublisher",
    "Binary",
    "Broker",
    "BrokerStats",
    "Channel",
    "Close",
    "Config",
    "ConfigError",
    "ContentTooLargeError",
    "ControlMessage",
    "ControlMessageError",
    "Detach",
    "Disconnect",
    "FilterContext",
    "FilterError",
    "FlushDelayed",
    "Framing",
    "HttpResponseFormat",
    "HttpStreamFormat",
    "Hub",
    "Instruct",
    "InstructError",
    "Item",
    "KeepAlive",
    "Link",
    "LocalProtocolError",
    "MessagesDropped",
    "Open",
    "Ping",
    "Pong",
    "ProtocolError",
    "PublishError",
    "PublishFailed",
    "PublishResponse",
    "Publisher",
    "RemoteProtocolError",
    "ResponseHold",
    "Route",
    "RouteTable",
    "RoutesError",
    "SendDelayed",
    "Sequencer",
    "SetMeta",
    "SigError",
    "SigningKey",
    "StreamHold",
    "Subscribe",
    "Subscriber",
    "Target",
    "Text",
    "Transport",
    "Unsubscribe",
    "VerifyKey",
    "WebSocketEvent",
    "WebSocketEventsDecoder",
    "WebSocketEventsError",
    "WebSocketGateway",
    "WsMessageFormat",
    "__version__",
    "apply_filters",
    "classify_origin_message",
    "decode_events",
    "encode_control_message",
    "encode_events",
    "encode_publish_body",
    "handle_publish_request",
    "is_grip_response",
    "is_valid_sig",
    "item_to_json",
    "load_config",
    "mint_sig",
    "parse_control_message",
    "parse_instruct",
    "parse_item",
    "parse_items",
    "parse_key_spec",
    "parse_publish_body",
    "parse_route_line",
    "parse_routes",
    "parse_verify_key",
    "validate_sig",
]
