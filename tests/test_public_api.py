"""The exported surface: what `import gripcore` offers is deliberate and complete."""

from __future__ import annotations

import gripcore

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
