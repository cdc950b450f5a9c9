"""The sans-I/O ClientConnection, driven synchronously by scripting the server's side.

Every test feeds JSON text to ``receive_message(frame, now)`` and reads ``data_to_send(now)``;
there is no socket, no clock and no trio here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import orjson
import pytest

from trio_dxlink._connection import (
    Authorized,
    AuthRejected,
    ChannelClosed,
    ChannelOpened,
    ClientConnection,
    ConfigChanged,
    ConnectionEvent,
    ConnectionState,
    DataSkipped,
    FeedConfig,
    FeedEvents,
    ServerErrorReceived,
    SetupReceived,
    chunk_subscription,
)
from trio_dxlink._exceptions import (
    KeepaliveTimeoutError,
    LocalProtocolError,
    RemoteProtocolError,
)
from trio_dxlink._messages import FeedSubscription, SubscriptionEntry, encode
from trio_dxlink.events import Candle, Event, Order, Quote, Trade

TOKEN = "tok-9f8e7d6c5b4a"

# The server's side of the real tastytrade trace (protocol reference §2.1).
SERVER_SETUP = (
    '{"type":"SETUP","channel":0,"keepaliveTimeout":60,"acceptKeepaliveTimeout":60,'
    '"version":"1.0-1.2.1-20240722-153442"}'
)
UNAUTHORIZED = '{"type":"AUTH_STATE","channel":0,"state":"UNAUTHORIZED"}'
AUTHORIZED = '{"type":"AUTH_STATE","channel":0,"state":"AUTHORIZED","userId":"<id>"}'
TRACE_FIELDS = ["eventType", "eventSymbol", "price", "dayVolume", "size"]
TRACE_DATA = (
    '"data":["Trade",["Trade","SPY",559.36,1.3743299E7,100.0,'
    '"Trade","BTC/USD:CXTALP",58356.71,"NaN","NaN"]]'
)

QUOTE_FIELDS = ["eventSymbol", "bidPrice", "askPrice"]


def opened(channel: int) -> str:
    return (
        f'{{"type":"CHANNEL_OPENED","channel":{channel},"service":"FEED",'
        '"parameters":{"contract":"AUTO","subFormat":"LIST"}}'
    )


def closed(channel: int) -> str:
    return f'{{"type":"CHANNEL_CLOSED","channel":{channel}}}'


def msg(**obj: Any) -> str:
    """A server frame from keyword arguments (``type`` and ``channel`` included)."""
    return orjson.dumps(obj).decode()


def feed_data(channel: int, data: list[Any]) -> str:
    return msg(type="FEED_DATA", channel=channel, data=data)


def take(conn: ClientConnection, now: float = 0.0) -> list[dict[str, Any]]:
    """The frames the connection wants sent, parsed."""
    return [orjson.loads(frame) for frame in conn.data_to_send(now)]


def kinds(frames: Sequence[dict[str, Any]]) -> list[str]:
    return [frame["type"] for frame in frames]


def flatten(result: Sequence[ConnectionEvent]) -> list[Event]:
    events: list[Event] = []
    for item in result:
        assert isinstance(item, FeedEvents)
        assert all(type(e) is item.event_type for e in item.events)
        events += item.events
    return events


def authorized(token: str | None = TOKEN, **kwargs: Any) -> ClientConnection:
    """A connection that went through the full handshake; its outbox is empty."""
    conn = ClientConnection(token, **kwargs)
    conn.start(0.0)
    conn.receive_message(SERVER_SETUP, 0.0)
    conn.receive_message(UNAUTHORIZED, 0.0)
    conn.receive_message(AUTHORIZED, 0.0)
    conn.data_to_send(0.0)
    assert conn.authorized
    return conn


def open_feed(
    conn: ClientConnection,
    entries: Sequence[SubscriptionEntry] = (),
    fields: dict[str, Sequence[str]] | None = None,
) -> int:
    """Open a channel on an authorized connection, subscribe, drain the outbox."""
    cid = conn.open_channel()
    if entries:
        conn.subscribe(cid, entries, fields=fields)
    conn.receive_message(opened(cid), 0.0)
    conn.data_to_send(0.0)
    return cid


def quote_channel() -> tuple[ClientConnection, int]:
    conn = authorized()
    cid = open_feed(conn, [SubscriptionEntry("Quote", "AAPL")], {"Quote": QUOTE_FIELDS})
    return conn, cid


# --- the handshake, in strict order ---


def test_handshake_follows_the_strict_order() -> None:
    conn = ClientConnection(TOKEN)
    # A channel and its subscriptions set up before anything happened only queue up.
    cid = conn.open_channel(accept_aggregation_period=0.1)
    conn.subscribe(
        cid,
        [SubscriptionEntry("Trade", "SPY"), SubscriptionEntry("Trade", "BTC/USD:CXTALP")],
        fields={"Trade": TRACE_FIELDS},
    )
    assert take(conn) == []

    conn.start(0.0)
    assert take(conn) == [
        {
            "type": "SETUP",
            "channel": 0,
            "version": "0.1-DXF-JS/0.3.0",
            "keepaliveTimeout": 60,
            "acceptKeepaliveTimeout": 60,
        }
    ]
    assert conn.state is ConnectionState.SETUP

    assert conn.receive_message(SERVER_SETUP, 0.1) == [
        SetupReceived("1.0-1.2.1-20240722-153442", 60.0)
    ]
    assert conn.server_version == "1.0-1.2.1-20240722-153442"
    assert take(conn) == []  # no AUTH before the server says UNAUTHORIZED

    assert conn.receive_message(UNAUTHORIZED, 0.2) == []
    assert take(conn) == [{"type": "AUTH", "channel": 0, "token": TOKEN}]
    assert conn.state is ConnectionState.AUTHENTICATING
    assert not conn.authorized

    assert conn.receive_message(AUTHORIZED, 0.3) == [Authorized("<id>")]
    assert conn.user_id == "<id>"
    assert take(conn) == [
        {
            "type": "CHANNEL_REQUEST",
            "channel": cid,
            "service": "FEED",
            "parameters": {"contract": "AUTO"},
        }
    ]

    result = conn.receive_message(opened(cid), 0.4)
    assert result == [ChannelOpened(cid, {"contract": "AUTO", "subFormat": "LIST"})]
    frames = take(conn)
    assert kinds(frames) == ["FEED_SETUP", "FEED_SUBSCRIPTION"]
    assert frames[0] == {
        "type": "FEED_SETUP",
        "channel": cid,
        "acceptAggregationPeriod": 0.1,
        "acceptDataFormat": "COMPACT",
        "acceptEventFields": {"Trade": TRACE_FIELDS},
    }
    assert frames[1] == {
        "type": "FEED_SUBSCRIPTION",
        "channel": cid,
        "reset": True,
        "add": [{"type": "Trade", "symbol": "SPY"}, {"type": "Trade", "symbol": "BTC/USD:CXTALP"}],
    }

    config = '{"type":"FEED_CONFIG","channel":%d,"dataFormat":"COMPACT","aggregationPeriod":0.1}'
    assert conn.receive_message(config % cid, 0.5) == [
        ConfigChanged(cid, FeedConfig("COMPACT", 0.1, {}))
    ]

    result = conn.receive_message(f'{{"type":"FEED_DATA","channel":{cid},{TRACE_DATA}}}', 0.6)
    spy, btc = flatten(result)
    assert result[0].channel == cid
    assert isinstance(spy, Trade)
    assert isinstance(btc, Trade)
    assert (spy.event_symbol, spy.price, spy.day_volume, spy.size) == (
        "SPY",
        559.36,
        13743299.0,
        100.0,
    )
    assert (btc.event_symbol, btc.price) == ("BTC/USD:CXTALP", 58356.71)
    assert math.isnan(btc.day_volume)
    assert math.isnan(btc.size)
    assert conn.statistics.events_received == 2


def test_channels_are_not_requested_while_authenticating() -> None:
    conn = ClientConnection(TOKEN)
    conn.start(0.0)
    conn.receive_message(SERVER_SETUP, 0.0)
    conn.receive_message(UNAUTHORIZED, 0.0)
    assert kinds(take(conn)) == ["SETUP", "AUTH"]
    first = conn.open_channel()
    conn.subscribe(first, [SubscriptionEntry("Quote", "AAPL")])
    second = conn.open_channel()
    assert take(conn) == []
    conn.receive_message(AUTHORIZED, 1.0)
    frames = take(conn)
    assert kinds(frames) == ["CHANNEL_REQUEST", "CHANNEL_REQUEST"]
    assert [f["channel"] for f in frames] == [first, second]
    # Nothing for the channel's feed goes out before CHANNEL_OPENED.
    conn.subscribe(first, [SubscriptionEntry("Quote", "MSFT")])
    assert take(conn) == []


def test_channel_ids_are_odd_and_requested_at_once_when_authorized() -> None:
    conn = authorized()
    ids = [conn.open_channel(contract=c) for c in ("AUTO", "TICKER", "HISTORY")]
    assert ids == [1, 3, 5]
    frames = take(conn)
    assert [(f["channel"], f["parameters"]["contract"]) for f in frames] == [
        (1, "AUTO"),
        (3, "TICKER"),
        (5, "HISTORY"),
    ]


def test_no_token_and_unauthorized_is_rejected() -> None:
    conn = ClientConnection(None)
    cid = conn.open_channel()
    conn.start(0.0)
    conn.receive_message(SERVER_SETUP, 0.0)
    assert conn.receive_message(UNAUTHORIZED, 0.0) == [AuthRejected(had_token=False)]
    assert kinds(take(conn)) == ["SETUP"]  # no AUTH, no CHANNEL_REQUEST
    assert not conn.authorized
    assert conn.channels[cid].state.value == "pending"


def test_rejected_token() -> None:
    conn = ClientConnection(TOKEN)
    conn.open_channel()
    conn.start(0.0)
    conn.receive_message(SERVER_SETUP, 0.0)
    conn.receive_message(UNAUTHORIZED, 0.0)
    assert kinds(take(conn)) == ["SETUP", "AUTH"]
    result = conn.receive_message(UNAUTHORIZED, 1.0)
    assert result == [AuthRejected(had_token=True)]
    assert not conn.authorized
    assert take(conn) == []  # the token is not sent again and no channel is requested
    assert TOKEN not in repr(result)
    assert TOKEN not in repr(conn)


def test_server_without_auth_is_authorized_straight_away() -> None:
    conn = ClientConnection(TOKEN)  # a token that is never needed
    cid = conn.open_channel()
    conn.start(0.0)
    conn.receive_message('{"type":"SETUP","channel":0,"version":"demo"}', 0.0)
    assert conn.receive_message('{"type":"AUTH_STATE","channel":0,"state":"AUTHORIZED"}', 0.0) == [
        Authorized(None)
    ]
    assert kinds(take(conn)) == ["SETUP", "CHANNEL_REQUEST"]  # never AUTH
    assert conn.receive_message(opened(cid), 0.0) == [
        ChannelOpened(cid, {"contract": "AUTO", "subFormat": "LIST"})
    ]


def test_no_token_no_auth_server() -> None:
    conn = ClientConnection()
    conn.start(0.0)
    conn.receive_message(SERVER_SETUP, 0.0)
    conn.receive_message('{"type":"AUTH_STATE","channel":0,"state":"AUTHORIZED"}', 0.0)
    assert conn.authorized
    assert kinds(take(conn)) == ["SETUP"]


def test_reauthenticate_sends_auth_without_re_requesting_channels() -> None:
    conn = authorized()
    open_feed(conn, [SubscriptionEntry("Quote", "AAPL")])
    conn.reauthenticate("fresh-token")
    assert take(conn) == [{"type": "AUTH", "channel": 0, "token": "fresh-token"}]
    assert conn.receive_message(AUTHORIZED, 1.0) == []
    assert take(conn) == []
    assert conn.receive_message(UNAUTHORIZED, 2.0) == [AuthRejected(had_token=True)]


def test_reauthenticate_before_authorization_is_a_local_error() -> None:
    conn = ClientConnection(TOKEN)
    conn.start(0.0)
    with pytest.raises(LocalProtocolError):
        conn.reauthenticate("x")


def test_start_twice_is_a_local_error() -> None:
    conn = ClientConnection(TOKEN)
    conn.start(0.0)
    with pytest.raises(LocalProtocolError):
        conn.start(1.0)


def test_unknown_auth_state_is_a_protocol_error() -> None:
    conn = ClientConnection(TOKEN)
    conn.start(0.0)
    with pytest.raises(RemoteProtocolError, match="MAYBE"):
        conn.receive_message('{"type":"AUTH_STATE","channel":0,"state":"MAYBE"}', 0.0)
    assert conn.state is ConnectionState.ERROR


@pytest.mark.parametrize(
    "frame",
    [
        '{"type":"CHANNEL_OPENED","channel":1,"service":"FEED","parameters":{}}',
        '{"type":"FEED_CONFIG","channel":1,"dataFormat":"COMPACT","aggregationPeriod":1}',
        '{"type":"CHANNEL_CLOSED","channel":1}',
    ],
)
def test_channel_messages_before_authorization_are_protocol_errors(frame: str) -> None:
    conn = ClientConnection(TOKEN)
    conn.open_channel()
    conn.start(0.0)
    conn.receive_message(SERVER_SETUP, 0.0)
    with pytest.raises(RemoteProtocolError, match="unexpected"):
        conn.receive_message(frame, 0.0)


def test_server_must_not_send_client_messages() -> None:
    conn = authorized()
    with pytest.raises(RemoteProtocolError, match="Auth"):
        conn.receive_message('{"type":"AUTH","channel":0,"token":"x"}', 0.0)


def test_after_a_protocol_error_the_connection_refuses_use() -> None:
    conn = authorized()
    with pytest.raises(RemoteProtocolError):
        conn.receive_message(opened(7), 1.0)  # a channel that was never requested
    assert conn.state is ConnectionState.ERROR
    with pytest.raises(LocalProtocolError):
        conn.receive_message('{"type":"KEEPALIVE","channel":0}', 2.0)
    with pytest.raises(LocalProtocolError):
        conn.open_channel()


def test_connection_closed_is_an_input() -> None:
    conn, cid = quote_channel()
    conn.connection_closed()
    assert conn.state is ConnectionState.CLOSED
    assert conn.channels[cid].state.value == "closed"
    with pytest.raises(LocalProtocolError):
        conn.receive_message('{"type":"KEEPALIVE","channel":0}', 1.0)
    with pytest.raises(LocalProtocolError):
        conn.subscribe(cid, [SubscriptionEntry("Quote", "MSFT")])
    conn.handle_timers(1000.0)  # a closed connection has no timers to fail
    assert take(conn) == []


@pytest.mark.parametrize(
    "frame",
    ["", "[]", '"x"', "null", '{"channel":0}', '{"type":"KEEPALIVE"}', '{"type":1,"channel":0}'],
)
def test_malformed_frames_are_skipped_and_counted(frame: str) -> None:
    conn = authorized()
    (skipped,) = conn.receive_message(frame, 0.0)
    assert isinstance(skipped, DataSkipped)
    assert skipped.channel is None
    assert conn.statistics.malformed_messages == 1
    assert conn.authorized  # the connection goes on
    assert conn.receive_message('{"type":"KEEPALIVE","channel":0}', 1.0) == []


def test_malformed_control_messages_are_protocol_errors() -> None:
    conn = authorized()
    with pytest.raises(RemoteProtocolError):
        conn.receive_message('{"type":"AUTH_STATE","channel":0,"state":7}', 0.0)
    assert conn.state is ConnectionState.ERROR


def test_server_error_is_reported() -> None:
    conn, cid = quote_channel()
    frame = msg(type="ERROR", channel=cid, error="BAD_ACTION", message="nope")
    assert conn.receive_message(frame, 0.0) == [ServerErrorReceived(cid, "BAD_ACTION", "nope")]
    assert conn.authorized


def test_unknown_message_types_are_tolerated_and_counted() -> None:
    conn, cid = quote_channel()
    assert conn.receive_message('{"type":"SHINY_NEW","channel":0,"x":1}', 0.0) == []
    assert conn.receive_message(msg(type="INDICHART_DATA", channel=cid), 0.0) == []
    assert conn.statistics.unknown_messages == 2
    assert conn.authorized
    result = conn.receive_message(feed_data(cid, ["Quote", ["AAPL", 1.0, 2.0]]), 0.0)
    assert len(flatten(result)) == 1


def test_inbound_keepalive_is_ignored() -> None:
    conn = authorized()
    assert conn.receive_message('{"type":"KEEPALIVE","channel":0}', 5.0) == []
    assert take(conn) == []


def test_repr_hides_the_token() -> None:
    conn = ClientConnection(TOKEN)
    conn.start(0.0)
    assert TOKEN not in repr(conn)
    assert "token=set" in repr(conn)


# --- channels ---


def test_close_channel_sends_cancel_and_forgets_it_when_closed() -> None:
    conn, cid = quote_channel()
    conn.close_channel(cid)
    assert take(conn) == [{"type": "CHANNEL_CANCEL", "channel": cid}]
    assert conn.receive_message(closed(cid), 0.0) == [ChannelClosed(cid, requested=True)]
    assert cid not in conn.channels
    with pytest.raises(LocalProtocolError):
        conn.subscribe(cid, [SubscriptionEntry("Quote", "AAPL")])


def test_server_closed_channel_drops_its_data() -> None:
    conn, cid = quote_channel()
    assert conn.receive_message(closed(cid), 0.0) == [ChannelClosed(cid, requested=False)]
    assert conn.receive_message(feed_data(cid, ["Quote", ["AAPL", 1.0, 2.0]]), 0.0) == []
    assert conn.statistics.skipped_unknown_channel == 1
    with pytest.raises(LocalProtocolError, match="closed"):
        conn.subscribe(cid, [SubscriptionEntry("Quote", "MSFT")])


def test_channel_opened_after_our_cancel_is_ignored() -> None:
    # The server may open the channel before it reads our CHANNEL_CANCEL (request, cancel and
    # opened cross on the wire); that is a race, not a protocol violation.
    conn = authorized()
    cid = conn.open_channel()
    conn.subscribe(cid, [SubscriptionEntry("Quote", "AAPL")])
    assert kinds(take(conn)) == ["CHANNEL_REQUEST"]
    conn.close_channel(cid)
    assert kinds(take(conn)) == ["CHANNEL_CANCEL"]
    assert conn.receive_message(opened(cid), 0.0) == []
    assert take(conn) == []  # no FEED_SETUP or subscription for a cancelled channel
    assert conn.authorized
    assert conn.receive_message(closed(cid), 0.0) == [ChannelClosed(cid, requested=True)]


def test_channel_opened_for_a_channel_never_requested_is_an_error() -> None:
    conn = authorized()
    with pytest.raises(RemoteProtocolError, match="not requested"):
        conn.receive_message(opened(7), 0.0)


def test_channel_opened_as_another_service_is_an_error() -> None:
    conn = authorized()
    cid = conn.open_channel()
    with pytest.raises(RemoteProtocolError, match="DOM"):
        conn.receive_message(
            msg(type="CHANNEL_OPENED", channel=cid, service="DOM", parameters={}), 0.0
        )


def test_channel_without_subscriptions_sends_nothing_on_open() -> None:
    conn = authorized()
    cid = conn.open_channel()
    take(conn)
    conn.receive_message(opened(cid), 0.0)
    assert take(conn) == []


def test_feed_data_for_unknown_channel_is_skipped_and_counted() -> None:
    conn, _ = quote_channel()
    assert conn.receive_message(feed_data(99, ["Quote", ["X", 1.0, 2.0]]), 0.0) == []
    assert conn.statistics.skipped_unknown_channel == 1


# --- FEED_CONFIG merging ---


def config_frame(cid: int, **parts: Any) -> str:
    return msg(type="FEED_CONFIG", channel=cid, **parts)


def test_data_before_any_feed_config_uses_the_requested_fields() -> None:
    conn, cid = quote_channel()
    (quote,) = flatten(conn.receive_message(feed_data(cid, ["Quote", ["AAPL", 1.0, 2.0]]), 0.0))
    assert (quote.event_symbol, quote.bid_price, quote.ask_price) == ("AAPL", 1.0, 2.0)  # type: ignore[attr-defined]


def test_feed_config_without_event_fields_keeps_the_requested_layout() -> None:
    conn, cid = quote_channel()
    result = conn.receive_message(
        config_frame(cid, dataFormat="COMPACT", aggregationPeriod=0.1), 0.0
    )
    assert result == [ConfigChanged(cid, FeedConfig("COMPACT", 0.1, {}))]
    (quote,) = flatten(conn.receive_message(feed_data(cid, ["Quote", ["AAPL", 1.0, 2.0]]), 0.0))
    assert quote.ask_price == 2.0  # type: ignore[attr-defined]


def test_late_feed_config_with_other_order_replaces_the_layout() -> None:
    conn, cid = quote_channel()
    # Decode once with the requested layout (this compiles and caches a decoder)...
    (before,) = flatten(conn.receive_message(feed_data(cid, ["Quote", ["AAPL", 1.0, 2.0]]), 0.0))
    assert before.bid_price == 1.0  # type: ignore[attr-defined]
    # ...then the server reports a different order, as the demo does lazily.
    fields = ["eventType", "eventSymbol", "askPrice", "bidPrice", "askSize"]
    result = conn.receive_message(config_frame(cid, eventFields={"Quote": fields}), 0.0)
    (changed,) = result
    assert isinstance(changed, ConfigChanged)
    assert changed.channel == cid
    assert changed.config.event_fields == {"Quote": tuple(fields)}
    assert math.isnan(changed.config.aggregation_period)  # never reported: still unknown
    data = ["Quote", ["Quote", "AAPL", 5.0, 4.0, 300]]
    (after,) = flatten(conn.receive_message(feed_data(cid, data), 0.0))
    assert isinstance(after, Quote)
    assert (after.ask_price, after.bid_price, after.ask_size) == (5.0, 4.0, 300.0)
    assert conn.channels[cid].layout("Quote") == tuple(fields)


def test_repeated_partial_feed_configs_merge_per_type() -> None:
    conn = authorized()
    cid = open_feed(
        conn,
        [SubscriptionEntry("Quote", "AAPL"), SubscriptionEntry("Trade", "AAPL")],
        {"Quote": QUOTE_FIELDS, "Trade": ["eventSymbol", "price"]},
    )
    conn.receive_message(config_frame(cid, dataFormat="COMPACT", aggregationPeriod=0.5), 0.0)
    conn.receive_message(
        config_frame(
            cid,
            eventFields={"Quote": ["eventSymbol", "askPrice"], "Trade": ["eventSymbol", "size"]},
        ),
        0.0,
    )
    (changed,) = conn.receive_message(
        config_frame(cid, eventFields={"Trade": ["price", "eventSymbol"]}), 0.0
    )
    assert isinstance(changed, ConfigChanged)
    assert changed.config.event_fields == {
        "Quote": ("eventSymbol", "askPrice"),  # kept from the earlier FEED_CONFIG
        "Trade": ("price", "eventSymbol"),  # overridden by the latest
    }
    assert changed.config.aggregation_period == 0.5  # kept when omitted
    assert changed.config.data_format == "COMPACT"  # kept when omitted
    result = conn.receive_message(
        feed_data(cid, ["Quote", ["AAPL", 9.0], "Trade", [1.25, "AAPL"]]), 0.0
    )
    quote, trade = flatten(result)
    assert isinstance(quote, Quote)
    assert quote.ask_price == 9.0
    assert math.isnan(quote.bid_price)
    assert isinstance(trade, Trade)
    assert trade.price == 1.25


def test_aggregation_period_changes_when_given() -> None:
    conn, cid = quote_channel()
    conn.receive_message(config_frame(cid, dataFormat="COMPACT", aggregationPeriod=0.1), 0.0)
    (changed,) = conn.receive_message(config_frame(cid, aggregationPeriod=10), 0.0)
    assert changed.config == FeedConfig("COMPACT", 10.0, {})  # type: ignore[union-attr]


def test_switch_to_full_mid_session() -> None:
    conn, cid = quote_channel()
    conn.receive_message(config_frame(cid, dataFormat="COMPACT", aggregationPeriod=0.1), 0.0)
    assert len(flatten(conn.receive_message(feed_data(cid, ["Quote", ["A", 1.0, 2.0]]), 0.0))) == 1
    (changed,) = conn.receive_message(config_frame(cid, dataFormat="FULL"), 1.0)
    assert changed.config == FeedConfig("FULL", 0.1, {})  # type: ignore[union-attr]
    full = [
        {"eventType": "Quote", "eventSymbol": "A", "bidPrice": 1.5, "askSize": "NaN"},
        {"eventType": "Quote", "eventSymbol": "B", "askPrice": 2.5},
    ]
    a, b = flatten(conn.receive_message(feed_data(cid, full), 1.0))
    assert isinstance(a, Quote)
    assert isinstance(b, Quote)
    assert (a.event_symbol, a.bid_price, b.event_symbol, b.ask_price) == ("A", 1.5, "B", 2.5)
    assert math.isnan(a.ask_size)
    # ...and back to COMPACT.
    conn.receive_message(config_frame(cid, dataFormat="COMPACT"), 2.0)
    (c,) = flatten(conn.receive_message(feed_data(cid, ["Quote", ["C", 3.0, 4.0]]), 2.0))
    assert c.event_symbol == "C"


def test_unknown_data_format_is_a_protocol_error() -> None:
    conn, cid = quote_channel()
    with pytest.raises(RemoteProtocolError, match="XML"):
        conn.receive_message(config_frame(cid, dataFormat="XML"), 0.0)


def test_feed_config_for_unknown_channel_is_skipped_and_counted() -> None:
    conn, _ = quote_channel()
    assert conn.receive_message(config_frame(77, dataFormat="COMPACT"), 0.0) == []
    assert conn.statistics.skipped_unknown_channel == 1


# --- FEED_DATA decoding through the connection ---


def test_several_type_pairs_in_one_message_keep_their_order() -> None:
    conn = authorized()
    cid = open_feed(
        conn,
        [SubscriptionEntry("Quote", "A"), SubscriptionEntry("Trade", "A")],
        {"Quote": QUOTE_FIELDS, "Trade": ["eventSymbol", "price"]},
    )
    data = ["Quote", ["A", 1.0, 2.0, "B", 3.0, 4.0], "Trade", ["A", 5.0], "Quote", ["C", 6.0, 7.0]]
    result = conn.receive_message(feed_data(cid, data), 0.0)
    assert [(r.event_type, len(r.events)) for r in result] == [(Quote, 2), (Trade, 1), (Quote, 1)]  # type: ignore[union-attr]
    assert [e.event_symbol for e in flatten(result)] == ["A", "B", "A", "C"]
    assert conn.statistics.events_received == 4


def test_full_data_mixing_types_keeps_arrival_order() -> None:
    conn, cid = quote_channel()
    data = [
        {"eventType": "Quote", "eventSymbol": "A"},
        {"eventType": "Trade", "eventSymbol": "T"},
        {"eventType": "Quote", "eventSymbol": "B"},
    ]
    events = flatten(conn.receive_message(feed_data(cid, data), 0.0))
    assert [(type(e), e.event_symbol) for e in events] == [(Quote, "A"), (Trade, "T"), (Quote, "B")]


def test_unknown_event_types_are_counted_and_skipped() -> None:
    conn, cid = quote_channel()
    data = ["Mystery", [1, 2, 3], "Quote", ["AAPL", 1.0, 2.0]]
    events = flatten(conn.receive_message(feed_data(cid, data), 0.0))
    assert [e.event_symbol for e in events] == ["AAPL"]
    full = [{"eventType": "Mystery", "x": 1}, {"eventType": "Quote", "eventSymbol": "B"}]
    events = flatten(conn.receive_message(feed_data(cid, full), 0.0))
    assert [e.event_symbol for e in events] == ["B"]
    assert conn.statistics.skipped_unknown_event_type == 2


def test_known_type_without_any_field_list_is_skipped_and_counted() -> None:
    conn, cid = quote_channel()  # only Quote was requested
    assert conn.receive_message(feed_data(cid, ["Trade", ["X", 1.0]]), 0.0) == []
    assert conn.statistics.skipped_unknown_event_type == 1


def test_empty_feed_data() -> None:
    conn, cid = quote_channel()
    assert conn.receive_message(feed_data(cid, []), 0.0) == []
    assert conn.receive_message(feed_data(cid, ["Quote", []]), 0.0) == []


def skips(result: Sequence[ConnectionEvent]) -> list[DataSkipped]:
    return [item for item in result if isinstance(item, DataSkipped)]


def test_ragged_row_is_skipped_with_a_helpful_reason() -> None:
    conn, cid = quote_channel()
    frame = feed_data(cid, ["Quote", ["AAPL", 1.0, 2.0, "MSFT", 3.0], "Quote", ["IBM", 4.0, 5.0]])
    result = conn.receive_message(frame, 0.0)
    (skipped,) = skips(result)
    assert skipped.channel == cid
    assert skipped.event_type == "Quote"
    assert skipped.events == 2  # a ragged array of 5 values is at most 2 rows
    assert "5 values" in skipped.reason
    assert "3 fields" in skipped.reason
    # The well-formed block in the same frame is delivered; the connection goes on.
    assert [e.event_symbol for e in flatten([r for r in result if r is not skipped])] == ["IBM"]
    assert conn.state is ConnectionState.AUTHORIZED
    assert conn.statistics.malformed_messages == 1
    assert conn.statistics.events_skipped == 2
    assert conn.statistics.events_received == 1


def test_wrong_kind_value_skips_only_its_row() -> None:
    conn, cid = quote_channel()
    frame = feed_data(cid, ["Quote", ["AAPL", 1.0, 2.0, "MSFT", 3.0, "cheap", "IBM", 4.0, 5.0]])
    result = conn.receive_message(frame, 0.0)
    (skipped,) = skips(result)
    assert result.index(skipped) == 0  # reported before the rows that were kept
    assert skipped.events == 1
    assert "askPrice" in skipped.reason
    assert "'cheap'" in skipped.reason
    events = flatten(result[1:])
    assert [e.event_symbol for e in events] == ["AAPL", "IBM"]
    assert conn.statistics.events_skipped == 1
    assert conn.statistics.events_received == 2


@pytest.mark.parametrize(
    ("data", "good"),
    [
        (["Quote"], []),
        (["Quote", ["AAPL", 1.0, 2.0], "Trade"], ["AAPL"]),
        (["Quote", "AAPL"], []),
        (["Quote", {"AAPL": 1}], []),
        (["Quote", ["AAPL", 1.0, 2.0], 5, []], ["AAPL"]),
        ([{"eventType": "Quote", "eventSymbol": "A"}, "Quote"], ["A"]),
        ([{"eventSymbol": "A"}], []),
        ([{"eventType": 5, "eventSymbol": "A"}], []),
        ([{"eventType": "Quote"}], []),
        ([{"eventType": "Quote", "eventSymbol": "A", "bidPrice": "lots"}], []),
        (
            [
                [{"eventType": "Quote", "eventSymbol": "A"}],
                {"eventType": "Quote", "eventSymbol": "B"},
            ],
            ["B"],
        ),
    ],
)
def test_malformed_feed_data_is_skipped(data: list[Any], good: list[str]) -> None:
    conn, cid = quote_channel()
    result = conn.receive_message(feed_data(cid, data), 0.0)
    assert len(skips(result)) == 1
    assert skips(result)[0].channel == cid
    kept = [item for item in result if not isinstance(item, DataSkipped)]
    assert [e.event_symbol for e in flatten(kept)] == good
    assert conn.statistics.malformed_messages == 1
    assert conn.state is ConnectionState.AUTHORIZED


@pytest.mark.parametrize("data", ["not an array", None, {"Quote": []}, 5])
def test_feed_data_without_a_data_array_is_skipped(data: Any) -> None:
    conn, cid = quote_channel()
    (skipped,) = conn.receive_message(msg(type="FEED_DATA", channel=cid, data=data), 0.0)
    assert isinstance(skipped, DataSkipped)
    assert skipped.channel == cid
    assert conn.state is ConnectionState.AUTHORIZED


def test_unusable_field_list_skips_that_types_data() -> None:
    conn, cid = quote_channel()
    config = msg(type="FEED_CONFIG", channel=cid, eventFields={"Quote": ["bidPrice"]})
    conn.receive_message(config, 0.0)  # a field list without eventSymbol
    (skipped,) = conn.receive_message(feed_data(cid, ["Quote", [1.0]]), 0.0)
    assert isinstance(skipped, DataSkipped)
    assert "eventSymbol" in skipped.reason
    assert conn.state is ConnectionState.AUTHORIZED


def test_deeply_nested_values_give_bounded_reasons() -> None:
    conn, cid = quote_channel()
    deep = "[" * 1000 + "]" * 1000

    def frame(data: str) -> str:
        return f'{{"type":"FEED_DATA","channel":{cid},"data":{data}}}'

    frames = [
        frame(f'["Quote",["AAPL",{deep},1.0]]'),
        frame(f"[{deep}]"),
        frame(deep),
        frame(f'[{{"eventType":"Quote","eventSymbol":{deep}}}]'),
        deep,
    ]
    for frame in frames:
        (skipped,) = conn.receive_message(frame, 0.0)
        assert isinstance(skipped, DataSkipped)
        assert len(skipped.reason) < 400
    assert conn.state is ConnectionState.AUTHORIZED


def test_skip_logs_are_rate_limited(caplog: pytest.LogCaptureFixture) -> None:
    conn, cid = quote_channel()
    bad = feed_data(cid, ["Quote", ["AAPL", "x", 1.0]])
    for i in range(1000):
        conn.receive_message(bad, i / 1000)
    assert conn.statistics.events_skipped == 1000
    assert 1 <= len(caplog.records) <= 10
    conn.receive_message(bad, 120.0)  # a new window: logged, with the count held back
    assert "suppressed" in caplog.records[-1].getMessage()


@pytest.mark.parametrize(
    ("announced", "believed"),
    [(-1, 1.0), (0, 1.0), (0.0001, 1.0), (1e9, 3600.0), (30, 30.0), (7200, 3600.0)],
)
def test_server_keepalive_timeout_is_clamped(announced: float, believed: float) -> None:
    conn = ClientConnection(TOKEN, keepalive_interval=30.0)
    conn.start(0.0)
    setup = msg(type="SETUP", channel=0, version="x", keepaliveTimeout=announced)
    (event,) = conn.receive_message(setup, 0.0)
    assert isinstance(event, SetupReceived)
    assert event.keepalive_timeout == believed
    assert conn.keepalive_interval == min(30.0, believed / 2)
    assert conn.next_deadline() >= 0.5
    # However long the server says, a tick a moment later queues no keepalive.
    conn.data_to_send(0.0)
    conn.handle_timers(0.01)
    assert conn.data_to_send(0.01) == []


# --- keepalive ---


def test_keepalive_is_queued_after_the_interval() -> None:
    conn = ClientConnection(TOKEN, keepalive_interval=30.0)
    conn.start(100.0)
    conn.data_to_send(100.0)
    assert conn.next_deadline() == 130.0
    conn.handle_timers(129.9)
    assert take(conn, 129.9) == []
    conn.handle_timers(130.0)
    assert take(conn, 130.0) == [{"type": "KEEPALIVE", "channel": 0}]
    # the interval counts from the last send; hearing from the server does not reset it
    conn.receive_message(SERVER_SETUP, 140.0)
    conn.receive_message('{"type":"AUTH_STATE","channel":0,"state":"AUTHORIZED"}', 150.0)
    assert conn.next_deadline() == 160.0
    conn.handle_timers(159.0)
    assert take(conn, 159.0) == []
    conn.handle_timers(160.0)
    assert kinds(take(conn, 160.0)) == ["KEEPALIVE"]


def test_any_sent_frame_postpones_the_keepalive() -> None:
    conn = authorized()
    conn.open_channel()
    assert kinds(take(conn, 20.0)) == ["CHANNEL_REQUEST"]
    assert conn.next_deadline() == 50.0
    conn.handle_timers(49.0)
    assert take(conn, 49.0) == []


def test_no_keepalive_while_frames_are_waiting() -> None:
    conn = authorized()
    conn.open_channel()  # queued, not yet taken
    conn.handle_timers(31.0)
    assert kinds(take(conn, 31.0)) == ["CHANNEL_REQUEST"]


def test_repeated_timer_calls_queue_one_keepalive() -> None:
    conn = authorized()
    conn.handle_timers(30.0)
    conn.handle_timers(30.5)
    assert kinds(take(conn, 31.0)) == ["KEEPALIVE"]


def test_keepalive_interval_is_capped_at_half_the_server_timeout() -> None:
    conn = ClientConnection(TOKEN, keepalive_interval=30.0)
    assert conn.keepalive_interval == 30.0
    conn.start(0.0)
    conn.data_to_send(0.0)
    conn.receive_message('{"type":"SETUP","channel":0,"version":"v","keepaliveTimeout":10}', 0.0)
    assert conn.server_keepalive_timeout == 10.0
    assert conn.keepalive_interval == 5.0
    assert conn.next_deadline() == 5.0
    conn.handle_timers(5.0)
    assert kinds(take(conn, 5.0)) == ["KEEPALIVE"]


def test_keepalive_interval_is_kept_below_a_generous_server_timeout() -> None:
    conn = ClientConnection(TOKEN, keepalive_interval=30.0)
    conn.start(0.0)
    conn.receive_message('{"type":"SETUP","channel":0,"version":"v","keepaliveTimeout":600}', 0.0)
    assert conn.keepalive_interval == 30.0


def test_server_setup_without_timeout_keeps_the_configured_interval() -> None:
    conn = ClientConnection(TOKEN, keepalive_interval=20.0)
    conn.start(0.0)
    conn.receive_message('{"type":"SETUP","channel":0,"version":"v"}', 0.0)
    assert conn.keepalive_interval == 20.0


def test_server_silence_raises_keepalive_timeout() -> None:
    conn = ClientConnection(TOKEN, keepalive_timeout=60.0, keepalive_interval=1000.0)
    conn.start(0.0)
    conn.receive_message('{"type":"SETUP","channel":0,"version":"v"}', 5.0)
    conn.data_to_send(5.0)
    assert conn.next_deadline() == 65.0
    conn.handle_timers(64.9)
    with pytest.raises(KeepaliveTimeoutError) as info:
        conn.handle_timers(65.0)
    assert "60" in str(info.value)
    assert conn.state is ConnectionState.ERROR
    with pytest.raises(LocalProtocolError):
        conn.receive_message('{"type":"KEEPALIVE","channel":0}', 66.0)


def test_inbound_traffic_resets_the_silence_timer() -> None:
    conn = authorized(keepalive_timeout=60.0)
    conn.receive_message('{"type":"KEEPALIVE","channel":0}', 50.0)
    conn.handle_timers(100.0)  # 50 s of silence: fine
    assert kinds(take(conn, 100.0)) == ["KEEPALIVE"]
    with pytest.raises(KeepaliveTimeoutError):
        conn.handle_timers(110.0)


def test_keepalive_timeout_is_advertised_in_setup() -> None:
    conn = ClientConnection(TOKEN, keepalive_timeout=45.0, accept_keepalive_timeout=25.0)
    conn.start(0.0)
    (setup,) = take(conn)
    assert (setup["keepaliveTimeout"], setup["acceptKeepaliveTimeout"]) == (45, 25)


def test_timers_do_nothing_before_start() -> None:
    conn = ClientConnection(TOKEN)
    conn.handle_timers(10_000.0)
    assert take(conn) == []


# --- subscriptions ---


def test_subscribing_the_same_identity_twice_sends_it_once() -> None:
    conn, cid = quote_channel()
    conn.subscribe(cid, [SubscriptionEntry("Quote", "AAPL")])
    assert take(conn) == []
    conn.subscribe(cid, [SubscriptionEntry("Quote", "MSFT")])
    assert take(conn) == [
        {"type": "FEED_SUBSCRIPTION", "channel": cid, "add": [{"type": "Quote", "symbol": "MSFT"}]}
    ]


def test_identity_is_type_symbol_and_source() -> None:
    conn = authorized()
    entries = [
        SubscriptionEntry("Order", "AAPL", source="NTV"),
        SubscriptionEntry("Order", "AAPL", source="ntv"),
        SubscriptionEntry("Order", "AAPL"),
        SubscriptionEntry("Quote", "AAPL"),
    ]
    cid = open_feed(conn, entries)
    assert len(conn.channels[cid].subscriptions) == 4
    conn.subscribe(cid, [SubscriptionEntry("Order", "AAPL", source="NTV")])
    assert take(conn) == []


def test_re_adding_with_a_new_from_time_replaces() -> None:
    conn = authorized()
    old = SubscriptionEntry("Candle", "AAPL{=5m}", from_time=1_700_000_000_000)
    cid = open_feed(conn, [old])
    new = SubscriptionEntry("Candle", "AAPL{=5m}", from_time=1_700_000_600_000)
    conn.subscribe(cid, [new])
    assert take(conn) == [
        {
            "type": "FEED_SUBSCRIPTION",
            "channel": cid,
            "add": [{"type": "Candle", "symbol": "AAPL{=5m}", "fromTime": 1_700_000_600_000}],
        }
    ]
    assert list(conn.channels[cid].subscriptions.values()) == [new]


def test_unsubscribe_sends_remove() -> None:
    conn = authorized()
    candle = SubscriptionEntry("Candle", "AAPL{=d}", from_time=1_000)
    quote = SubscriptionEntry("Quote", "AAPL")
    cid = open_feed(conn, [candle, quote])
    # identity ignores fromTime, so a remove without it still matches
    conn.unsubscribe(
        cid, [SubscriptionEntry("Candle", "AAPL{=d}"), SubscriptionEntry("Quote", "NOPE")]
    )
    assert take(conn) == [
        {
            "type": "FEED_SUBSCRIPTION",
            "channel": cid,
            "remove": [{"type": "Candle", "symbol": "AAPL{=d}", "fromTime": 1_000}],
        }
    ]
    assert list(conn.channels[cid].subscriptions) == [quote.key]
    conn.unsubscribe(cid, [SubscriptionEntry("Quote", "NOPE")])
    assert take(conn) == []


def test_changes_before_open_are_folded_into_the_reset() -> None:
    conn = authorized()
    cid = conn.open_channel()
    conn.subscribe(cid, [SubscriptionEntry("Quote", s) for s in ("A", "B", "C")])
    conn.unsubscribe(cid, [SubscriptionEntry("Quote", "B")])
    take(conn)
    conn.receive_message(opened(cid), 0.0)
    frames = take(conn)
    assert kinds(frames) == ["FEED_SETUP", "FEED_SUBSCRIPTION"]
    assert frames[1]["reset"] is True
    assert "remove" not in frames[1]
    assert [a["symbol"] for a in frames[1]["add"]] == ["A", "C"]


def test_new_event_type_on_an_open_channel_sends_feed_setup_first() -> None:
    conn, cid = quote_channel()
    conn.subscribe(cid, [SubscriptionEntry("Trade", "AAPL"), SubscriptionEntry("Quote", "MSFT")])
    frames = take(conn)
    assert kinds(frames) == ["FEED_SETUP", "FEED_SUBSCRIPTION"]
    assert frames[0]["acceptEventFields"] == {"Trade": list(Trade.wire_fields())}
    assert frames[0]["acceptDataFormat"] == "COMPACT"
    assert frames[1]["add"] == [
        {"type": "Trade", "symbol": "AAPL"},
        {"type": "Quote", "symbol": "MSFT"},
    ]


def test_default_field_request_is_every_field_of_the_class() -> None:
    conn = authorized()
    cid = conn.open_channel()
    conn.subscribe(cid, [SubscriptionEntry("Candle", "SPY{=d}", from_time=0)])
    take(conn)
    conn.receive_message(opened(cid), 0.0)
    setup = take(conn)[0]
    assert setup["acceptEventFields"] == {"Candle": list(Candle.wire_fields())}


def test_subscribing_an_unknown_type_changes_nothing() -> None:
    conn, cid = quote_channel()
    with pytest.raises(LocalProtocolError, match="Bogus"):
        conn.subscribe(cid, [SubscriptionEntry("Quote", "MSFT"), SubscriptionEntry("Bogus", "X")])
    assert take(conn) == []
    assert SubscriptionEntry("Quote", "MSFT").key not in conn.channels[cid].subscriptions
    # so subscribing the good entry again really sends it
    conn.subscribe(cid, [SubscriptionEntry("Quote", "MSFT")])
    assert kinds(take(conn)) == ["FEED_SUBSCRIPTION"]


def test_subscribe_on_unknown_channel_is_a_local_error() -> None:
    conn = authorized()
    with pytest.raises(LocalProtocolError, match="no channel 41"):
        conn.subscribe(41, [SubscriptionEntry("Quote", "X")])


def test_order_subscription_with_source_decodes_orders() -> None:
    conn = authorized()
    cid = open_feed(
        conn,
        [SubscriptionEntry("Order", "AAPL", source="NTV")],
        {"Order": ["eventSymbol", "source", "index", "price", "size", "orderSide"]},
    )
    data = ["Order", ["AAPL", "NTV", 5, 172.33, 376, "BUY"]]
    (order,) = flatten(conn.receive_message(feed_data(cid, data), 0.0))
    assert isinstance(order, Order)
    assert (order.source, order.index, order.price, order.size, order.order_side) == (
        "NTV",
        5,
        172.33,
        376.0,
        "BUY",
    )


# --- chunking ---


def option_symbols(n: int) -> list[str]:
    """``n`` distinct SPX weekly option streamer symbols (28 expiries x call/put x strikes)."""
    out = []
    for i in range(n):
        expiry, right, strike = 240101 + i % 28, "CP"[i // 28 % 2], 2000 + i // 56 * 5
        out.append(f".SPXW{expiry}{right}{strike}{'.5' if i // 56 % 3 else ''}")
    return out


def frame_size(message: FeedSubscription) -> int:
    return len(encode(message).encode())


def test_chunking_25000_option_symbols_stays_under_the_budget() -> None:
    entries = [SubscriptionEntry("Quote", s) for s in option_symbols(25_000)]
    assert len({e.key for e in entries}) == 25_000
    chunks = chunk_subscription(3, add=entries, reset=True)
    assert len(chunks) > 1
    assert all(frame_size(c) <= 8192 for c in chunks)
    assert chunks[0].reset is True
    assert all(c.reset is None for c in chunks[1:])
    assert all(c.channel == 3 and c.remove is None for c in chunks)
    sent = [e for c in chunks for e in (c.add or [])]
    assert sent == entries
    # the chunks are reasonably full (no degenerate one-entry frames)
    assert len(chunks) <= 2 * sum(frame_size(c) for c in chunks) // 8192 + 1
    for chunk in chunks[1:]:
        assert '"reset"' not in encode(chunk)


@pytest.mark.parametrize("budget", [200, 512, 1000, 4096])
def test_chunking_respects_any_budget_with_multibyte_symbols(budget: int) -> None:
    add = [
        SubscriptionEntry("Candle", f"ÄÖÜ€{i}{{=5m}}", from_time=1_700_000_000_000 + i)
        for i in range(300)
    ]
    remove = [SubscriptionEntry("Order", f"日本{i}", source="NTV") for i in range(100)]
    chunks = chunk_subscription(1, add=add, remove=remove, reset=True, budget=budget)
    assert all(frame_size(c) <= budget for c in chunks)
    assert [c.reset for c in chunks] == [True] + [None] * (len(chunks) - 1)
    assert [e for c in chunks for e in (c.remove or [])] == remove
    assert [e for c in chunks for e in (c.add or [])] == add
    # every remove goes out before the first add
    last_remove = max(i for i, c in enumerate(chunks) if c.remove)
    first_add = min(i for i, c in enumerate(chunks) if c.add)
    assert last_remove <= first_add


def test_chunking_empty_changes() -> None:
    assert chunk_subscription(1) == []
    assert chunk_subscription(1, reset=True) == [FeedSubscription(1, reset=True)]


def test_entry_too_big_for_the_budget_is_a_local_error() -> None:
    with pytest.raises(LocalProtocolError, match="budget"):
        chunk_subscription(1, add=[SubscriptionEntry("Quote", "X" * 500)], budget=300)


def test_connection_chunks_its_subscriptions() -> None:
    conn = authorized(subscription_budget=2048)
    cid = conn.open_channel()
    entries = [SubscriptionEntry("Quote", s) for s in option_symbols(25_000)]
    conn.subscribe(cid, entries)
    take(conn)
    conn.receive_message(opened(cid), 0.0)
    frames = conn.data_to_send(0.0)
    assert orjson.loads(frames[0])["type"] == "FEED_SETUP"
    subs = [orjson.loads(f) for f in frames[1:]]
    assert len(subs) > 100
    assert all(len(f.encode()) <= 2048 for f in frames[1:])
    assert [s.get("reset") for s in subs] == [True] + [None] * (len(subs) - 1)
    assert sum(len(s["add"]) for s in subs) == 25_000
    # a large later change is chunked too, without reset
    conn.unsubscribe(cid, entries[:5000])
    later = [orjson.loads(f) for f in conn.data_to_send(0.0)]
    assert len(later) > 1
    assert all("reset" not in s for s in later)
    assert sum(len(s["remove"]) for s in later) == 5000


def test_rows_under_an_unusable_field_list_are_counted() -> None:
    conn, cid = quote_channel()
    conn.receive_message(
        msg(type="FEED_CONFIG", channel=cid, eventFields={"Quote": ["bidPrice"]}), 0.0
    )
    (skipped,) = conn.receive_message(feed_data(cid, ["Quote", [1.0, 2.0, 3.0]]), 0.0)
    assert isinstance(skipped, DataSkipped)
    assert skipped.events == 3
    assert conn.statistics.events_skipped == 3
