"""The wire messages: encoding what the client sends, decoding what the server sends."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from trio_dxlink._exceptions import RemoteProtocolError
from trio_dxlink._messages import (
    Auth,
    AuthState,
    ChannelCancel,
    ChannelClosed,
    ChannelOpened,
    ChannelRequest,
    Error,
    FeedConfig,
    FeedData,
    FeedSetup,
    FeedSubscription,
    Keepalive,
    Message,
    Setup,
    SubscriptionEntry,
    UnknownMessage,
    decode,
    encode,
)

TOKEN = "s3cr3t-T0KEN-value"


def wire(message: Message) -> dict[str, Any]:
    """The JSON object ``encode`` produced, parsed back."""
    obj = orjson.loads(encode(message))
    assert isinstance(obj, dict)
    return obj


# --- encoding what the client sends ---


def test_encode_setup_matches_the_tastytrade_trace() -> None:
    message = Setup("0.1-DXF-JS/0.3.0", keepalive_timeout=60, accept_keepalive_timeout=60)
    assert wire(message) == {
        "type": "SETUP",
        "channel": 0,
        "version": "0.1-DXF-JS/0.3.0",
        "keepaliveTimeout": 60,
        "acceptKeepaliveTimeout": 60,
    }


def test_encode_setup_leaves_out_absent_timeouts() -> None:
    assert wire(Setup("0.1-test")) == {"type": "SETUP", "channel": 0, "version": "0.1-test"}


def test_encode_auth_and_keepalive() -> None:
    assert wire(Auth(TOKEN)) == {"type": "AUTH", "channel": 0, "token": TOKEN}
    assert wire(Keepalive()) == {"type": "KEEPALIVE", "channel": 0}


def test_encode_channel_request_and_cancel() -> None:
    assert wire(ChannelRequest(3, "FEED", {"contract": "AUTO"})) == {
        "type": "CHANNEL_REQUEST",
        "channel": 3,
        "service": "FEED",
        "parameters": {"contract": "AUTO"},
    }
    assert wire(ChannelCancel(3)) == {"type": "CHANNEL_CANCEL", "channel": 3}


def test_encode_feed_setup_uses_camel_case_and_keeps_field_order() -> None:
    fields = ["eventType", "eventSymbol", "price", "dayVolume", "size"]
    message = FeedSetup(3, 0.1, "COMPACT", {"Trade": fields})
    obj = wire(message)
    assert obj == {
        "type": "FEED_SETUP",
        "channel": 3,
        "acceptAggregationPeriod": 0.1,
        "acceptDataFormat": "COMPACT",
        "acceptEventFields": {"Trade": fields},
    }
    assert list(obj["acceptEventFields"]["Trade"]) == fields


def test_encode_feed_setup_leaves_out_unset_parts() -> None:
    assert wire(FeedSetup(1)) == {"type": "FEED_SETUP", "channel": 1}


def test_encode_feed_subscription_orders_reset_remove_add() -> None:
    message = FeedSubscription(
        1,
        add=[
            SubscriptionEntry("Quote", "AAPL"),
            SubscriptionEntry("Candle", "AAPL{=5m}", from_time=1700000000000),
            SubscriptionEntry("Order", "AAPL", source="NTV"),
        ],
        remove=[SubscriptionEntry("Quote", "MSFT")],
        reset=True,
    )
    text = encode(message)
    assert text.index('"reset"') < text.index('"remove"') < text.index('"add"')
    assert orjson.loads(text) == {
        "type": "FEED_SUBSCRIPTION",
        "channel": 1,
        "reset": True,
        "remove": [{"type": "Quote", "symbol": "MSFT"}],
        "add": [
            {"type": "Quote", "symbol": "AAPL"},
            {"type": "Candle", "symbol": "AAPL{=5m}", "fromTime": 1700000000000},
            {"type": "Order", "symbol": "AAPL", "source": "NTV"},
        ],
    }


def test_encode_feed_subscription_without_reset_or_remove() -> None:
    message = FeedSubscription(5, add=[SubscriptionEntry("Trade", "SPY")])
    assert wire(message) == {
        "type": "FEED_SUBSCRIPTION",
        "channel": 5,
        "add": [{"type": "Trade", "symbol": "SPY"}],
    }


def test_encode_unknown_message_passes_payload_through() -> None:
    message = UnknownMessage("FUTURE_THING", 7, {"type": "FUTURE_THING", "channel": 7, "x": [1]})
    assert wire(message) == {"type": "FUTURE_THING", "channel": 7, "x": [1]}


def test_subscription_identity_ignores_from_time() -> None:
    a = SubscriptionEntry("Candle", "AAPL{=d}", from_time=1)
    b = SubscriptionEntry("Candle", "AAPL{=d}", from_time=2)
    assert a.key == b.key == ("Candle", "AAPL{=d}", None)
    assert a != b
    assert (
        SubscriptionEntry("Order", "AAPL", source="NTV").key
        != SubscriptionEntry("Order", "AAPL", source="ntv").key
    )


# --- decoding what the server sends (the real tastytrade trace, protocol reference §2.1) ---


def test_decode_server_setup() -> None:
    frame = (
        '{"type":"SETUP","channel":0,"keepaliveTimeout":60,"acceptKeepaliveTimeout":60,'
        '"version":"1.0-1.2.1-20240722-153442"}'
    )
    message = decode(frame)
    assert message == Setup("1.0-1.2.1-20240722-153442", 60, 60)
    assert isinstance(message, Setup)
    assert isinstance(message.keepalive_timeout, float)


def test_decode_server_setup_without_timeouts() -> None:
    assert decode('{"type":"SETUP","channel":0,"version":"v"}') == Setup("v")


def test_decode_auth_state_with_and_without_user_id() -> None:
    assert decode('{"type":"AUTH_STATE","channel":0,"state":"UNAUTHORIZED"}') == AuthState(
        "UNAUTHORIZED"
    )
    assert decode(
        '{"type":"AUTH_STATE","channel":0,"state":"AUTHORIZED","userId":"u-42"}'
    ) == AuthState("AUTHORIZED", "u-42")


def test_decode_channel_opened_keeps_extra_parameters() -> None:
    message = decode(
        '{"type":"CHANNEL_OPENED","channel":3,"service":"FEED",'
        '"parameters":{"contract":"AUTO","subFormat":"LIST"}}'
    )
    assert message == ChannelOpened(3, "FEED", {"contract": "AUTO", "subFormat": "LIST"})


def test_decode_channel_closed_error_keepalive() -> None:
    assert decode('{"type":"CHANNEL_CLOSED","channel":3}') == ChannelClosed(3)
    assert decode('{"type":"KEEPALIVE","channel":0}') == Keepalive()
    assert decode(
        '{"type":"ERROR","channel":0,"error":"TIMEOUT","message":"The timeout has been reached."}'
    ) == Error("TIMEOUT", "The timeout has been reached.", 0)


def test_decode_feed_config_with_and_without_event_fields() -> None:
    assert decode(
        '{"type":"FEED_CONFIG","channel":3,"dataFormat":"COMPACT","aggregationPeriod":0.1}'
    ) == FeedConfig(3, 0.1, "COMPACT", None)
    message = decode(
        '{"type":"FEED_CONFIG","channel":1,"aggregationPeriod":10,"dataFormat":"COMPACT",'
        '"eventFields":{"Quote":["eventType","eventSymbol","bidPrice"]}}'
    )
    assert message == FeedConfig(
        1, 10.0, "COMPACT", {"Quote": ["eventType", "eventSymbol", "bidPrice"]}
    )


def test_decode_feed_data_hands_the_data_array_over_untouched() -> None:
    frame = (
        '{"type":"FEED_DATA","channel":3,"data":["Trade",["Trade","SPY",559.36,1.3743299E7,'
        '100.0,"Trade","BTC/USD:CXTALP",58356.71,"NaN","NaN"]]}'
    )
    message = decode(frame)
    assert isinstance(message, FeedData)
    assert message.channel == 3
    assert message.data == [
        "Trade",
        [
            "Trade",
            "SPY",
            559.36,
            13743299.0,
            100.0,
            "Trade",
            "BTC/USD:CXTALP",
            58356.71,
            "NaN",
            "NaN",
        ],
    ]


def test_decode_accepts_bytes() -> None:
    assert decode(b'{"type":"KEEPALIVE","channel":0}') == Keepalive()


def test_decode_ignores_unknown_keys() -> None:
    message = decode('{"type":"AUTH_STATE","channel":0,"state":"AUTHORIZED","shiny":{"a":1}}')
    assert message == AuthState("AUTHORIZED")


def test_decode_unknown_type_is_tolerated() -> None:
    message = decode('{"type":"INDICHART_DATA","channel":5,"time":1,"bids":[]}')
    assert isinstance(message, UnknownMessage)
    assert message.type == "INDICHART_DATA"
    assert message.channel == 5
    assert message.payload["bids"] == []


@pytest.mark.parametrize(
    "message",
    [
        Setup("0.1-x", 60.0, 30.0),
        Auth(TOKEN),
        AuthState("AUTHORIZED", "me"),
        Keepalive(),
        Error("BAD_ACTION", "nope", 3),
        ChannelRequest(1, "FEED", {"contract": "TICKER"}),
        ChannelOpened(1, "FEED", {"contract": "TICKER"}),
        ChannelCancel(1),
        ChannelClosed(1),
        FeedSetup(1, 0.5, "FULL", {"Quote": ["eventSymbol", "bidPrice"]}),
        FeedConfig(1, 0.5, "COMPACT", {"Quote": ["eventSymbol"]}),
        FeedSubscription(
            1,
            add=[SubscriptionEntry("Candle", "X{=d}", from_time=5, source=None)],
            remove=[SubscriptionEntry("Order", "X", source="NTV")],
            reset=True,
        ),
        FeedData(1, ["Quote", ["Quote", "X", 1.0]]),
    ],
    ids=lambda m: type(m).__name__,
)
def test_round_trip(message: Message) -> None:
    assert decode(encode(message)) == message


# --- malformed frames ---


@pytest.mark.parametrize(
    ("frame", "fragment"),
    [
        ("", "not valid JSON"),
        ("{", "not valid JSON"),
        ('{"type":"KEEPALIVE","channel":0', "not valid JSON"),
        ("KEEPALIVE", "not valid JSON"),
        ("[]", "not a JSON object"),
        ('["KEEPALIVE", 0]', "not a JSON object"),
        ('"KEEPALIVE"', "not a JSON object"),
        ("42", "not a JSON object"),
        ("null", "not a JSON object"),
        ('{"channel":0}', "no string 'type'"),
        ('{"type":7,"channel":0}', "no string 'type'"),
        ('{"type":null,"channel":0}', "no string 'type'"),
        ('{"type":"KEEPALIVE"}', "no valid 'channel'"),
        ('{"type":"KEEPALIVE","channel":"0"}', "no valid 'channel'"),
        ('{"type":"KEEPALIVE","channel":-1}', "no valid 'channel'"),
        ('{"type":"KEEPALIVE","channel":1.0}', "no valid 'channel'"),
        ('{"type":"KEEPALIVE","channel":true}', "no valid 'channel'"),
    ],
)
def test_malformed_envelope_raises(frame: str, fragment: str) -> None:
    with pytest.raises(RemoteProtocolError, match=fragment):
        decode(frame)


@pytest.mark.parametrize(
    "frame",
    [
        '{"type":"SETUP","channel":0}',
        '{"type":"SETUP","channel":0,"version":1}',
        '{"type":"SETUP","channel":0,"version":"v","keepaliveTimeout":"60"}',
        '{"type":"AUTH_STATE","channel":0}',
        '{"type":"AUTH_STATE","channel":0,"state":true}',
        '{"type":"ERROR","channel":0,"error":"UNKNOWN"}',
        '{"type":"CHANNEL_OPENED","channel":1,"service":"FEED","parameters":[]}',
        '{"type":"FEED_CONFIG","channel":1,"dataFormat":"COMPACT","eventFields":{"Quote":"bidPrice"}}',
        '{"type":"FEED_CONFIG","channel":1,"dataFormat":"COMPACT","eventFields":{"Quote":[1,2]}}',
        '{"type":"FEED_CONFIG","channel":1,"dataFormat":"COMPACT","eventFields":[]}',
        '{"type":"FEED_CONFIG","channel":1,"aggregationPeriod":"0.1"}',
        '{"type":"FEED_DATA","channel":1}',
        '{"type":"FEED_DATA","channel":1,"data":{"Quote":[]}}',
        '{"type":"FEED_DATA","channel":1,"data":null}',
    ],
)
def test_known_message_with_wrong_shape_raises(frame: str) -> None:
    kind = orjson.loads(frame)["type"]
    with pytest.raises(RemoteProtocolError, match=kind):
        decode(frame)


def test_wrong_shape_error_names_the_missing_field() -> None:
    with pytest.raises(RemoteProtocolError, match="version"):
        decode('{"type":"SETUP","channel":0}')


# --- the token stays secret ---


def test_auth_repr_hides_the_token() -> None:
    auth = Auth(TOKEN)
    assert TOKEN not in repr(auth)
    assert TOKEN not in str(auth)
    assert auth.token == TOKEN


@pytest.mark.parametrize(
    "frame",
    [
        '{"type":"AUTH","token":"%s"}',
        '{"type":"AUTH","channel":"0","token":"%s"}',
        '{"type":7,"channel":0,"token" : "%s"}',
        '{"type":"AUTH","channel":-5,"token":"%s","padding":"' + "x" * 300 + '"}',
        '{"type":"AUTH","channel":0,"token":"%s"',
        '{"type":"AUTH","channel":0,"token":"%s"}}',
    ],
)
def test_errors_never_contain_the_token(frame: str) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        decode(frame % TOKEN)
    assert TOKEN not in str(info.value)
    assert TOKEN not in repr(info.value)
    assert TOKEN[:8] not in str(info.value)


def test_unknown_message_repr_hides_its_payload() -> None:
    message = decode(f'{{"type":"WHATEVER","channel":0,"token":"{TOKEN}"}}')
    assert isinstance(message, UnknownMessage)
    assert TOKEN not in repr(message)
