"""gripcore.testing: a property-based conformance kit for anything that speaks GRIP.

* `gripcore.testing.strategies`: hypothesis strategies for valid and deliberately invalid GRIP
  artefacts (instructs, Grip-Channel, Grip-Keep-Alive, publish items, WebSocket-over-HTTP streams,
  control messages, Grip-Sig tokens);
* `gripcore.testing.properties`: property helpers (round trips, split invariance, "only the
  documented errors");
* `gripcore.testing.plugin`: the pytest plugin (`--grip-proxy`, `--grip-publish` and their
  fixtures); `gripcore.testing.checks`: black-box checks of a running server's publish API.

This package needs the test extra (`pip install gripcore[test]`: pytest and hypothesis);
`import gripcore` alone never imports it. The plugin and checks are not re-exported here, so
importing the strategies does not import pytest.
"""

from __future__ import annotations

from .properties import (
    assert_only_raises,
    assert_rejects,
    assert_round_trip,
    assert_split_invariant,
    receive_data_feed,
)
from .strategies import (
    ExpectedInstruct,
    InstructCase,
    Invalid,
    OriginResponse,
    SigToken,
    channels,
    control_messages,
    grip_channel_headers,
    grip_keep_alive_headers,
    grip_sigs,
    instructs,
    invalid_control_messages,
    invalid_grip_sigs,
    invalid_instructs,
    invalid_publish_bodies,
    invalid_websocket_event_streams,
    item_objects,
    items,
    json_values,
    publish_bodies,
    split_points,
    websocket_event_streams,
    websocket_events,
)

__all__ = [
    "ExpectedInstruct",
    "InstructCase",
    "Invalid",
    "OriginResponse",
    "SigToken",
    "assert_only_raises",
    "assert_rejects",
    "assert_round_trip",
    "assert_split_invariant",
    "channels",
    "control_messages",
    "grip_channel_headers",
    "grip_keep_alive_headers",
    "grip_sigs",
    "instructs",
    "invalid_control_messages",
    "invalid_grip_sigs",
    "invalid_instructs",
    "invalid_publish_bodies",
    "invalid_websocket_event_streams",
    "item_objects",
    "items",
    "json_values",
    "publish_bodies",
    "receive_data_feed",
    "split_points",
    "websocket_event_streams",
    "websocket_events",
]
