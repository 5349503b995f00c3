"""The exported surface: what `import gripcore` offers is deliberate and complete."""

from __future__ import annotations

import pytest

import gripcore
from gripcore.adapters.asyncio.publisher import AsyncPublisher
from gripcore.adapters.publisher import Publisher, PublishFailed

EXPECTED = {
    # errors
    "ProtocolError", "LocalProtocolError", "RemoteProtocolError", "InstructError",
    "WebSocketEventsError", "ControlMessageError", "PublishError", "ContentTooLargeError",
    "FilterError", "RoutesError", "SigError", "ConfigError",
    # GRIP instructs
    "parse_instruct", "is_grip_response", "Instruct", "Channel", "KeepAlive", "Link",
    # publish items
    "Item", "HttpResponseFormat", "HttpStreamFormat", "WsMessageFormat", "parse_item",
    "parse_items", "parse_publish_body", "encode_publish_body", "item_to_json",
    "handle_publish_request", "PublishResponse",
    # WebSocket-over-HTTP and control messages
    "WebSocketEvent", "Open", "Text", "Binary", "Ping", "Pong", "Close", "Disconnect",
    "WebSocketEventsDecoder", "decode_events", "encode_events", "ControlMessage", "Subscribe",
    "Unsubscribe", "Detach", "SetMeta", "SendDelayed", "FlushDelayed", "parse_control_message",
    "encode_control_message", "classify_origin_message",
    # fan-out, sessions, sequencing, filters
    "Hub", "Subscriber", "Transport", "Framing", "MessagesDropped", "Broker", "BrokerStats", "Sequencer",
    "ResponseHold", "StreamHold", "WebSocketGateway", "FilterContext", "apply_filters",
    # routes, signatures, configuration
    "Route", "RouteTable", "Target", "parse_routes", "parse_route_line", "SigningKey",
    "VerifyKey", "parse_key_spec", "parse_verify_key", "mint_sig", "validate_sig",
    "is_valid_sig", "FASTLY_FANOUT_JWK", "Config", "load_config",
    # publishers (drivers, imported from gripcore.adapters on first use)
    "Publisher", "AsyncPublisher", "PublishFailed",
    "__version__",
}  # fmt: skip


def test_exported_names_are_exactly_the_public_surface() -> None:
    assert set(gripcore.__all__) == EXPECTED
    assert len(gripcore.__all__) == len(set(gripcore.__all__))


def test_every_exported_name_resolves_to_a_public_object() -> None:
    for name in gripcore.__all__:
        obj = getattr(gripcore, name)
        module = getattr(obj, "__module__", "gripcore")
        assert module.startswith("gripcore"), (name, module)


def test_package_is_typed() -> None:
    from importlib.resources import files

    assert files("gripcore").joinpath("py.typed").is_file()


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("Publisher", Publisher),
        ("AsyncPublisher", AsyncPublisher),
        ("PublishFailed", PublishFailed),
    ],
)
def test_publishers_are_imported_from_the_drivers_on_first_use(
    monkeypatch: pytest.MonkeyPatch, name: str, expected: type
) -> None:
    monkeypatch.delitem(gripcore.__dict__, name, raising=False)  # as before the first use
    assert getattr(gripcore, name) is expected
    assert gripcore.__dict__[name] is expected  # the next lookup is a plain attribute
    assert name in dir(gripcore)


def test_unknown_attribute_is_still_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="module 'gripcore' has no attribute 'Publishr'"):
        _ = gripcore.Publishr  # type: ignore[attr-defined]
