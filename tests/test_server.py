"""The local DXLink server (trio_dxlink.testing), driven by a raw trio-websocket client.

The client here speaks JSON by hand, so these tests check the server against the protocol
reference rather than against our own client. Synchronisation is by protocol messages,
``server.wait_for`` and ``wait_all_tasks_blocked``; timing tests run on ``autojump_clock``.
"""

from __future__ import annotations

import datetime
import itertools
import json
import math
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import attrs
import pytest
import trio
import trio.testing
from trio_websocket import (
    ConnectionClosed,
    WebSocketConnection,
    wrap_client_stream,
)

from trio_dxlink import EVENT_TYPES, open_dxlink
from trio_dxlink._messages import Auth, ChannelRequest, FeedSubscription, Keepalive, Setup
from trio_dxlink.events import (
    Candle,
    EventFlag,
    Greeks,
    Order,
    Profile,
    Quote,
    Summary,
    TheoPrice,
    TimeAndSale,
    Trade,
    index_from_time,
)
from trio_dxlink.testing import (
    DXLinkServer,
    Market,
    ServerConfig,
    candle_period_ms,
    open_dxlink_server,
    parse_option_symbol,
    serve_dxlink,
)

NOW = 1_700_000_000.0  # 2023-11-14T22:13:20Z: a pinned wall clock for deterministic events
NOW_MS = int(NOW * 1000)
QUOTE_FIELDS = ["eventSymbol", "bidPrice", "askPrice", "bidSize", "askSize"]


def pinned_market(seed: int = 0) -> Market:
    return Market(seed=seed, clock=lambda: NOW)


class Client:
    """A raw DXLink client: JSON objects in, JSON objects out, nothing clever."""

    def __init__(self, ws: WebSocketConnection) -> None:
        self.ws = ws
        self.announced: list[dict[str, Any]] = []
        """FEED_CONFIG announcements of eventFields skipped while waiting for FEED_DATA."""
        self.guard = 10.0
        """Seconds (virtual under autojump_clock) a wait may take before the test fails."""

    async def send(self, obj: dict[str, Any]) -> None:
        await self.ws.send_message(json.dumps(obj))

    async def recv(self, *, keepalives: bool = False) -> dict[str, Any]:
        """The next message (KEEPALIVEs skipped unless asked for)."""
        with trio.fail_after(self.guard):
            while True:
                msg: dict[str, Any] = json.loads(await self.ws.get_message())
                if keepalives or msg["type"] != "KEEPALIVE":
                    return msg

    async def expect(self, kind: str, **fields: Any) -> dict[str, Any]:
        msg = await self.recv()
        while kind == "FEED_DATA" and msg["type"] == "FEED_CONFIG" and "eventFields" in msg:
            self.announced.append(msg)  # the fields a type's data will come in (by default)
            msg = await self.recv()
        assert msg["type"] == kind, msg
        for key, value in fields.items():
            assert msg[key] == value, msg
        return msg

    async def closed(self) -> int | None:
        """Wait for the server to close the connection; return the close code."""
        with trio.fail_after(self.guard):
            try:
                while True:
                    await self.ws.get_message()
            except ConnectionClosed as exc:
                return None if exc.reason is None else exc.reason.code

    async def handshake(self, token: str | None = None, keepalive: float = 60) -> None:
        await self.send(
            {
                "type": "SETUP",
                "channel": 0,
                "version": "0.1-test/1.0",
                "keepaliveTimeout": keepalive,
                "acceptKeepaliveTimeout": 60,
            }
        )
        await self.expect("SETUP")
        state = await self.expect("AUTH_STATE")
        if token is not None:
            assert state["state"] == "UNAUTHORIZED"
            await self.send({"type": "AUTH", "channel": 0, "token": token})
            state = await self.expect("AUTH_STATE")
        assert state["state"] == "AUTHORIZED", state

    async def open_feed(
        self,
        channel: int = 1,
        *,
        fields: dict[str, list[str]] | None = None,
        data_format: str | None = "COMPACT",
        aggregation: float | None = None,
    ) -> dict[str, Any]:
        await self.send(
            {
                "type": "CHANNEL_REQUEST",
                "channel": channel,
                "service": "FEED",
                "parameters": {"contract": "AUTO"},
            }
        )
        await self.expect("CHANNEL_OPENED", channel=channel)
        setup: dict[str, Any] = {"type": "FEED_SETUP", "channel": channel}
        if data_format is not None:
            setup["acceptDataFormat"] = data_format
        if fields is not None:
            setup["acceptEventFields"] = fields
        if aggregation is not None:
            setup["acceptAggregationPeriod"] = aggregation
        await self.send(setup)
        return await self.expect("FEED_CONFIG", channel=channel)

    async def subscribe(self, channel: int = 1, **body: Any) -> None:
        await self.send({"type": "FEED_SUBSCRIPTION", "channel": channel, **body})


@asynccontextmanager
async def connect(server: DXLinkServer) -> AsyncIterator[Client]:
    """A raw trio-websocket client connection to ``server``.

    trio-websocket's client never closes its TCP stream once the *server* closed the WebSocket
    (``aclose`` returns early), which leaks a socket and trips ResourceWarning-as-error; so the
    test owns the stream and closes it itself.
    """
    stream = await trio.open_tcp_stream(server.host, server.port)
    try:
        async with trio.open_nursery() as nursery:
            ws = await wrap_client_stream(nursery, stream, server.host, "/", message_queue_size=64)
            try:
                yield Client(ws)
            finally:
                with trio.move_on_after(5):
                    await ws.aclose()
                nursery.cancel_scope.cancel()
    finally:
        await stream.aclose()


@asynccontextmanager
async def ready_client(
    config: ServerConfig | None = None,
    market: Market | None = None,
    *,
    fields: dict[str, list[str]] | None = None,
    data_format: str | None = "COMPACT",
    announce: bool = False,
) -> AsyncIterator[tuple[DXLinkServer, Client]]:
    """A server and a client that has done the handshake and opened FEED channel 1.

    Unless ``announce`` is set, the server does not announce fields the client chose itself
    (the tastytrade-like mode), so data follows subscriptions directly.
    """
    config = attrs.evolve(config or ServerConfig(simulate=False), event_fields_in_config=announce)
    async with (
        open_dxlink_server(config=config, market=market or pinned_market()) as server,
        connect(server) as client,
    ):
        await client.handshake(token=config.token)
        await client.open_feed(1, fields=fields, data_format=data_format)
        yield server, client


async def until(server: DXLinkServer, predicate: Callable[[], bool]) -> None:
    """``server.wait_for``, bounded so that a broken test fails instead of hanging."""
    with trio.fail_after(10):
        await server.wait_for(predicate)


async def subscribed(server: DXLinkServer, event_type: str, symbol: str) -> None:
    await until(server, lambda: (event_type, symbol) in server.subscriptions())


# --- handshake -----------------------------------------------------------------------------


async def test_handshake_without_token_authorizes_at_once() -> None:
    async with (
        open_dxlink_server(config=ServerConfig(simulate=False)) as server,
        connect(server) as client,
    ):
        await client.send(
            {
                "type": "SETUP",
                "channel": 0,
                "version": "0.1-DXF-JS/0.3.0",
                "keepaliveTimeout": 60,
                "acceptKeepaliveTimeout": 60,
            }
        )
        assert await client.recv() == {
            "type": "SETUP",
            "channel": 0,
            "version": "1.0-trio_dxlink-local",
            "keepaliveTimeout": 60,
            "acceptKeepaliveTimeout": 60,
        }
        assert await client.recv() == {
            "type": "AUTH_STATE",
            "channel": 0,
            "state": "AUTHORIZED",
            "userId": "local-user",
        }
        await until(server, lambda: bool(server.connections and server.connections[0].setup))
        conn = server.connections[0]
        assert conn.authorized
        assert conn.setup == Setup("0.1-DXF-JS/0.3.0", 60, 60)
        assert server.received == [(conn.id, conn.setup)]


async def test_handshake_with_token() -> None:
    config = ServerConfig(simulate=False, token="s3cret", user_id="u-42", keepalive_timeout=30)
    async with open_dxlink_server(config=config) as server, connect(server) as client:
        await client.send({"type": "SETUP", "channel": 0, "version": "0.1-test"})
        setup = await client.expect("SETUP")
        assert setup["keepaliveTimeout"] == 30
        assert await client.recv() == {"type": "AUTH_STATE", "channel": 0, "state": "UNAUTHORIZED"}
        assert not server.connections[0].authorized
        await client.send({"type": "AUTH", "channel": 0, "token": "s3cret"})
        state = await client.expect("AUTH_STATE", state="AUTHORIZED")
        assert state["userId"] == "u-42"
        await until(server, lambda: server.connections[0].authorized)
        assert isinstance(server.received[-1][1], Auth)
        assert "s3cret" not in repr(server.received)


async def test_bad_token_gets_unauthorized_then_close() -> None:
    config = ServerConfig(simulate=False, token="good", keep_closed_connections=True)
    async with open_dxlink_server(config=config) as server:
        async with connect(server) as client:
            await client.send({"type": "SETUP", "channel": 0, "version": "0.1-test"})
            await client.expect("SETUP")
            await client.expect("AUTH_STATE", state="UNAUTHORIZED")
            await client.send({"type": "AUTH", "channel": 0, "token": "bad"})
            await client.expect("AUTH_STATE", state="UNAUTHORIZED")
            assert await client.closed() == 1008
        await until(server, lambda: server.connections[0].closed)
        assert not server.connections[0].authorized


async def test_channel_request_before_auth_is_unauthorized() -> None:
    async with (
        open_dxlink_server(config=ServerConfig(simulate=False, token="t")) as server,
        connect(server) as client,
    ):
        await client.send({"type": "SETUP", "channel": 0, "version": "0.1-test"})
        await client.expect("SETUP")
        await client.expect("AUTH_STATE", state="UNAUTHORIZED")
        request = {"type": "CHANNEL_REQUEST", "channel": 3, "service": "FEED", "parameters": {}}
        await client.send(request)
        error = await client.expect("ERROR", channel=3, error="UNAUTHORIZED")
        assert error["message"]
        assert server.connections[0].channels == {}
        await client.send({"type": "AUTH", "channel": 0, "token": "t"})
        await client.expect("AUTH_STATE", state="AUTHORIZED")
        await client.send(request)
        await client.expect("CHANNEL_OPENED", channel=3)


async def test_messages_before_setup_are_bad_actions() -> None:
    async with (
        open_dxlink_server(config=ServerConfig(simulate=False)) as server,
        connect(server) as client,
    ):
        await client.send({"type": "KEEPALIVE", "channel": 0})
        error = await client.expect("ERROR", error="BAD_ACTION", channel=0)
        assert "SETUP" in error["message"]
        await client.handshake()  # the connection is still usable
        assert server.connections[0].received[0] == Keepalive()


async def test_invalid_message_gets_error_and_the_connection_goes_on() -> None:
    async with (
        open_dxlink_server(config=ServerConfig(simulate=False)) as server,
        connect(server) as client,
    ):
        await client.handshake()
        for bad in ("{not json", "[1, 2]", '{"type": "SETUP"}', '{"channel": 0}'):
            await client.ws.send_message(bad)
            await client.expect("ERROR", error="INVALID_MESSAGE", channel=0)
        await client.send({"type": "CHANNEL_REQUEST", "channel": "one", "service": "FEED"})
        await client.expect("ERROR", error="INVALID_MESSAGE", channel=0)
        # A well-formed envelope with fields of the wrong shape is a BAD_ACTION instead.
        await client.send({"type": "CHANNEL_REQUEST", "channel": 9, "service": 7})
        error = await client.expect("ERROR", error="BAD_ACTION", channel=9)
        assert "CHANNEL_REQUEST" in error["message"]
        await client.open_feed(1)
        assert len(server.connections[0].received) == 3  # SETUP, CHANNEL_REQUEST, FEED_SETUP


async def test_out_of_order_and_server_only_messages_are_bad_actions() -> None:
    async with ready_client() as (_, client):
        await client.subscribe(5, add=[{"type": "Quote", "symbol": "SPY"}])
        await client.expect("ERROR", error="BAD_ACTION", channel=5)
        await client.send({"type": "FEED_SETUP", "channel": 7, "acceptDataFormat": "FULL"})
        await client.expect("ERROR", error="BAD_ACTION", channel=7)
        await client.send({"type": "FEED_DATA", "channel": 1, "data": []})
        await client.expect("ERROR", error="BAD_ACTION", channel=1)
        await client.send({"type": "CHANNEL_REQUEST", "channel": 1, "service": "FEED"})
        error = await client.expect("ERROR", error="BAD_ACTION", channel=1)
        assert "already open" in error["message"]


# --- channels and feed configuration -------------------------------------------------------


async def test_channel_opened_echoes_parameters_with_sub_format() -> None:
    async with (
        open_dxlink_server(config=ServerConfig(simulate=False)) as server,
        connect(server) as client,
    ):
        await client.handshake()
        params = {"contract": "AUTO", "space": "x"}
        await client.send(
            {"type": "CHANNEL_REQUEST", "channel": 12, "service": "FEED", "parameters": params}
        )
        opened = await client.expect("CHANNEL_OPENED", channel=12, service="FEED")
        assert opened["parameters"] == {"contract": "AUTO", "space": "x", "subFormat": "LIST"}
        channel = server.connections[0].channels[12]
        assert channel.parameters == params
        assert channel.data_format == "FULL"  # the protocol's default until FEED_SETUP


async def test_feed_setup_gets_feed_config_without_event_fields() -> None:
    async with (
        open_dxlink_server(config=ServerConfig(simulate=False)) as server,
        connect(server) as client,
    ):
        await client.handshake()
        config = await client.open_feed(1, fields={"Quote": QUOTE_FIELDS}, aggregation=10)
        assert config == {
            "type": "FEED_CONFIG",
            "channel": 1,
            "aggregationPeriod": 10,
            "dataFormat": "COMPACT",
        }
        default = await client.open_feed(3, data_format=None)
        assert default["aggregationPeriod"] == 0.1
        assert default["dataFormat"] == "FULL"
        assert server.connections[0].channels[1].event_fields == {"Quote": QUOTE_FIELDS}


async def test_channel_cancel_closes_and_the_id_can_be_reused() -> None:
    async with ready_client() as (server, client):
        await client.subscribe(add=[{"type": "Quote", "symbol": "SPY"}])
        await subscribed(server, "Quote", "SPY")
        await client.send({"type": "CHANNEL_CANCEL", "channel": 1})
        assert await client.recv() == {"type": "CHANNEL_CLOSED", "channel": 1}
        assert server.subscriptions() == set()
        assert server.connections[0].channels == {}
        server.publish(Quote("SPY", bid_price=1.0, ask_price=2.0))  # nobody wants it now
        config = await client.open_feed(1)  # same id again; no FEED_DATA came in between
        assert config["type"] == "FEED_CONFIG"


# --- data ------------------------------------------------------------------------------------


async def test_compact_data_has_requested_fields_in_requested_order() -> None:
    fields = {"Quote": ["askPrice", "eventSymbol", "bidSize", "bidPrice", "eventType"]}
    async with ready_client(fields=fields) as (server, client):
        await client.subscribe(add=[{"type": "Quote", "symbol": "SPY"}])
        await subscribed(server, "Quote", "SPY")
        server.publish(
            Quote("QQQ", bid_price=9.0, ask_price=9.5),  # not subscribed: must not arrive
            Quote("SPY", bid_price=450.25, ask_price=450.5, bid_size=300.0, ask_size=math.nan),
        )
        data = await client.expect("FEED_DATA", channel=1)  # no FEED_CONFIG first: faithful
        assert data["data"] == ["Quote", [450.5, "SPY", 300.0, 450.25, "Quote"]]


async def test_unknown_fields_are_null_or_nan_and_special_doubles_are_strings() -> None:
    fields = {"Quote": ["eventSymbol", "fooBar", "dayVolume", "BIDPRICE", "askPrice", "askSize"]}
    async with ready_client(fields=fields) as (server, client):
        await client.subscribe(add=[{"type": "Quote", "symbol": "X"}])
        await subscribed(server, "Quote", "X")
        server.publish(Quote("X", bid_price=1.5, ask_price=math.inf, ask_size=math.nan))
        data = await client.expect("FEED_DATA")
        assert data["data"] == ["Quote", ["X", None, "NaN", 1.5, "Infinity", "NaN"]]


async def test_default_fields_are_announced_before_compact_data() -> None:
    async with ready_client(fields=None) as (server, client):
        await client.subscribe(add=[{"type": "Trade", "symbol": "AAPL"}])
        await subscribed(server, "Trade", "AAPL")
        server.publish(Trade("AAPL", price=190.5, size=100.0), Trade("AAPL", price=190.75))
        config = await client.expect("FEED_CONFIG")
        layout = config["eventFields"]["Trade"]
        assert layout[:3] == ["eventType", "eventSymbol", "eventTime"]
        data = (await client.expect("FEED_DATA"))["data"]
        assert data[0] == "Trade"
        rows = [data[1][i : i + len(layout)] for i in range(0, len(data[1]), len(layout))]
        assert [dict(zip(layout, row, strict=True))["price"] for row in rows] == [190.5, 190.75]
        server.publish(Trade("AAPL", price=191.0))
        assert (await client.recv())["type"] == "FEED_DATA"  # announced once only


async def test_full_format_sends_objects_with_the_requested_fields() -> None:
    fields = {"Quote": ["eventSymbol", "bidPrice", "askPrice"]}
    async with ready_client(fields=fields, data_format="FULL") as (server, client):
        await client.subscribe(add=[{"type": "Quote", "symbol": "SPY"}])
        await subscribed(server, "Quote", "SPY")
        server.publish(Quote("SPY", bid_price=1.25, ask_price=math.nan, bid_size=7.0))
        data = await client.expect("FEED_DATA")
        assert data["data"] == [
            {"eventType": "Quote", "eventSymbol": "SPY", "bidPrice": 1.25, "askPrice": "NaN"}
        ]


async def test_data_format_override_forces_full() -> None:
    config = ServerConfig(simulate=False, data_format_override="FULL")
    async with open_dxlink_server(config=config) as server, connect(server) as client:
        await client.handshake()
        reply = await client.open_feed(1, data_format="COMPACT")
        assert reply["dataFormat"] == "FULL"
        await client.subscribe(add=[{"type": "Quote", "symbol": "A"}])
        await subscribed(server, "Quote", "A")
        server.publish(Quote("A", bid_price=2.0))
        (event,) = (await client.expect("FEED_DATA"))["data"]
        assert event["eventSymbol"] == "A"
        assert event["bidPrice"] == 2.0


async def test_one_pair_per_message_by_default_and_more_when_configured() -> None:
    fields = {"Quote": ["eventSymbol", "bidPrice"], "Trade": ["eventSymbol", "price"]}
    for pairs, expected in ((1, [["Quote"], ["Trade"]]), (2, [["Quote", "Trade"]])):
        config = ServerConfig(simulate=False, pairs_per_message=pairs)
        async with ready_client(config, fields=fields) as (server, client):
            await client.subscribe(
                add=[{"type": "Quote", "symbol": "S"}, {"type": "Trade", "symbol": "S"}]
            )
            await subscribed(server, "Trade", "S")
            server.publish(Quote("S", bid_price=1.0), Trade("S", price=1.5))
            seen = []
            for _ in expected:
                data = (await client.expect("FEED_DATA"))["data"]
                seen.append(data[::2])
            assert seen == expected


async def test_event_fields_in_config_announces_before_first_data_only() -> None:
    fields = {"Quote": ["eventSymbol", "bidPrice"]}
    config = ServerConfig(simulate=False, event_fields_in_config=True)
    async with ready_client(config, fields=fields, announce=True) as (server, client):
        await client.subscribe(add=[{"type": "Quote", "symbol": "S"}])
        await subscribed(server, "Quote", "S")
        server.publish(Quote("S", bid_price=1.0))
        announced = await client.expect("FEED_CONFIG")
        assert announced["eventFields"] == fields
        assert (await client.expect("FEED_DATA"))["data"] == ["Quote", ["S", 1.0]]
        server.publish(Quote("S", bid_price=2.0))
        assert (await client.expect("FEED_DATA"))["data"] == ["Quote", ["S", 2.0]]


async def test_current_value_is_sent_on_subscription() -> None:
    async with ready_client(fields={"Quote": QUOTE_FIELDS}) as (server, client):
        server.publish(Quote("SPY", bid_price=10.0, ask_price=10.5, bid_size=1.0, ask_size=2.0))
        await client.subscribe(add=[{"type": "Quote", "symbol": "SPY"}])
        data = await client.expect("FEED_DATA")
        assert data["data"] == ["Quote", ["SPY", 10.0, 10.5, 1.0, 2.0]]


async def test_wildcard_and_source_subscriptions() -> None:
    fields = {"Quote": ["eventSymbol"], "Order": ["eventSymbol", "source", "price"]}
    async with ready_client(fields=fields) as (server, client):
        await client.subscribe(
            add=[
                {"type": "Quote", "symbol": "*"},
                {"type": "Order", "symbol": "AAPL", "source": "NTV"},
            ]
        )
        await subscribed(server, "Order", "AAPL")
        server.publish(
            Order("AAPL", source="ntv", price=1.0), Order("AAPL", source="NTV", price=2.0)
        )
        assert (await client.expect("FEED_DATA"))["data"] == ["Order", ["AAPL", "NTV", 2.0]]
        server.publish(Quote("ANYTHING"))
        assert (await client.expect("FEED_DATA"))["data"] == ["Quote", ["ANYTHING"]]


async def test_reset_remove_add_order_and_from_time_replaces() -> None:
    async with ready_client() as (server, client):
        await client.subscribe(
            add=[{"type": "Quote", "symbol": s} for s in ("A", "B", "C")],
        )
        await subscribed(server, "Quote", "C")
        await client.subscribe(
            reset=True,
            remove=[{"type": "Quote", "symbol": "D"}],
            add=[{"type": "Quote", "symbol": "D"}, {"type": "Quote", "symbol": "E"}],
        )
        await subscribed(server, "Quote", "E")
        assert server.subscriptions() == {("Quote", "D"), ("Quote", "E")}
        await client.subscribe(remove=[{"type": "Quote", "symbol": "D"}])
        await client.subscribe(add=[{"type": "Candle", "symbol": "X{=m}", "fromTime": 5}])
        await client.subscribe(add=[{"type": "Candle", "symbol": "X{=m}", "fromTime": 7}])
        await until(server, lambda: len(server.received) == 8)
        channel = server.connections[0].channels[1]
        assert [e.from_time for e in channel.subscriptions.values() if e.type == "Candle"] == [7]
        assert server.subscriptions("Quote") == {("Quote", "E")}
        assert isinstance(server.received[-1][1], FeedSubscription)


# --- time series -----------------------------------------------------------------------------


def _rows(layout: list[str], values: list[Any]) -> list[dict[str, Any]]:
    width = len(layout)
    return [
        dict(zip(layout, values[i : i + width], strict=True)) for i in range(0, len(values), width)
    ]


async def _candles(client: Client, count: int) -> list[dict[str, Any]]:
    layout = ["eventSymbol", "eventFlags", "index", "time", "open", "high", "low", "close"]
    rows: list[dict[str, Any]] = []
    while len(rows) < count:
        data = (await client.expect("FEED_DATA"))["data"]
        assert data[0] == "Candle"
        rows += _rows(layout, data[1])
    assert len(rows) == count
    return rows


CANDLE_FIELDS = {
    "Candle": ["eventSymbol", "eventFlags", "index", "time", "open", "high", "low", "close"]
}


async def test_candle_history_snapshot_is_newest_first_and_flagged() -> None:
    period = 5 * 60_000
    live_start = NOW_MS // period * period
    from_time = live_start - 6 * period
    config = ServerConfig(simulate=True, update_interval=3600)
    async with ready_client(config, pinned_market(7), fields=CANDLE_FIELDS) as (_, client):
        await client.subscribe(
            add=[{"type": "Candle", "symbol": "AAPL{=5m}", "fromTime": from_time}]
        )
        rows = await _candles(client, 7)
        assert [r["time"] for r in rows] == [live_start - k * period for k in range(7)]
        assert [r["eventFlags"] for r in rows] == [
            EventFlag.SNAPSHOT_BEGIN,
            0,
            0,
            0,
            0,
            0,
            EventFlag.SNAPSHOT_END,
        ]
        for newer, older in itertools.pairwise(rows):
            assert older["close"] == newer["open"]  # bars join up
        for r in rows:
            assert r["index"] == index_from_time(r["time"])
            assert r["low"] <= min(r["open"], r["close"]) <= max(r["open"], r["close"]) <= r["high"]

        # fromTime between bars: the snapshot ends with a synthetic REMOVE_EVENT at fromTime.
        odd = from_time + 1
        await client.subscribe(add=[{"type": "Candle", "symbol": "MSFT{=5m}", "fromTime": odd}])
        rows = await _candles(client, 7)
        assert rows[0]["eventFlags"] == EventFlag.SNAPSHOT_BEGIN
        assert rows[-1]["eventFlags"] == EventFlag.REMOVE_EVENT | EventFlag.SNAPSHOT_END
        assert rows[-1]["time"] == odd
        assert rows[-1]["index"] == index_from_time(odd)
        assert rows[-1]["open"] == "NaN"


async def test_empty_and_snipped_snapshots() -> None:
    config = ServerConfig(simulate=False, max_snapshot_events=3)
    async with ready_client(config, fields=CANDLE_FIELDS) as (server, client):
        # Nothing known: one REMOVE_EVENT|SNAPSHOT_BEGIN|SNAPSHOT_END event at fromTime.
        await client.subscribe(add=[{"type": "Candle", "symbol": "Z{=1d}", "fromTime": 1000}])
        (row,) = await _candles(client, 1)
        flags = EventFlag.REMOVE_EVENT | EventFlag.SNAPSHOT_BEGIN | EventFlag.SNAPSHOT_END
        assert (row["eventFlags"], row["time"]) == (flags, 1000)
        # More published history than the limit: the newest three, the last one SNAPSHOT_SNIP.
        day = 86_400_000
        server.publish(
            *(
                Candle("Y{=1d}", time=t * day, index=index_from_time(t * day), open=1.0)
                for t in range(1, 6)
            )
        )
        await client.subscribe(add=[{"type": "Candle", "symbol": "Y{=1d}", "fromTime": 0}])
        rows = await _candles(client, 3)
        assert [r["time"] // day for r in rows] == [5, 4, 3]
        assert [r["eventFlags"] for r in rows] == [
            EventFlag.SNAPSHOT_BEGIN,
            0,
            EventFlag.SNAPSHOT_SNIP,
        ]
        # Live updates after the snapshot go out as published.
        server.publish(Candle("Y{=1d}", time=5 * day, index=index_from_time(5 * day), close=2.0))
        (live,) = await _candles(client, 1)
        assert (live["eventFlags"], live["close"]) == (0, 2.0)


async def test_time_and_sale_snapshot_of_published_events() -> None:
    fields = {"TimeAndSale": ["eventSymbol", "eventFlags", "time", "price"]}
    async with ready_client(fields=fields) as (server, client):
        server.publish(
            *(
                TimeAndSale("T", time=NOW_MS + k, index=index_from_time(NOW_MS + k), price=float(k))
                for k in range(3)
            )
        )
        await client.subscribe(add=[{"type": "TimeAndSale", "symbol": "T", "fromTime": NOW_MS}])
        data = (await client.expect("FEED_DATA"))["data"]
        rows = _rows(fields["TimeAndSale"], data[1])
        assert [(r["price"], r["eventFlags"]) for r in rows] == [
            (2.0, EventFlag.SNAPSHOT_BEGIN),
            (1.0, 0),
            (0.0, EventFlag.SNAPSHOT_END),
        ]


# --- keepalive and limits --------------------------------------------------------------------


async def test_server_sends_keepalive_when_idle(autojump_clock: trio.testing.MockClock) -> None:
    config = ServerConfig(simulate=False, keepalive_timeout=1000)
    async with open_dxlink_server(config=config) as server, connect(server) as client:
        await client.handshake(keepalive=10)
        start = trio.current_time()
        for k in (1, 2, 3):
            assert await client.recv(keepalives=True) == {
                "type": "KEEPALIVE",
                "channel": 0,
            }
            assert trio.current_time() - start == pytest.approx(5 * k, abs=0.5)
        assert not server.connections[0].closed


async def test_silent_client_gets_error_timeout_then_close(
    autojump_clock: trio.testing.MockClock,
) -> None:
    config = ServerConfig(simulate=False, keepalive_timeout=30, keep_closed_connections=True)
    async with open_dxlink_server(config=config) as server, connect(server) as client:
        await client.handshake(keepalive=1000)
        client.guard = 100
        start = trio.current_time()
        await client.ws.ping()  # WebSocket pings are not DXLink activity
        error = await client.recv()
        assert error["type"] == "ERROR"
        assert (error["error"], error["channel"]) == ("TIMEOUT", 0)
        assert trio.current_time() - start == pytest.approx(30, abs=0.5)
        assert await client.closed() == 1000
        await until(server, lambda: server.connections[0].closed)


async def test_client_messages_keep_the_connection_alive(
    autojump_clock: trio.testing.MockClock,
) -> None:
    config = ServerConfig(simulate=False, keepalive_timeout=30)
    async with open_dxlink_server(config=config) as server, connect(server) as client:
        await client.handshake(keepalive=1000)
        for _ in range(4):
            await trio.sleep(20)  # virtual time: the client's own keepalive schedule
            await client.send({"type": "KEEPALIVE", "channel": 0})
        await until(server, lambda: len(server.connections[0].received) == 5)
        assert trio.current_time() >= 80
        assert not server.connections[0].closed


async def test_oversized_frame_gets_close_1009() -> None:
    config = ServerConfig(simulate=False, max_message_size=1000, keep_closed_connections=True)
    async with open_dxlink_server(config=config) as server, connect(server) as client:
        await client.handshake()
        await client.send({"type": "KEEPALIVE", "channel": 0, "pad": "x" * 900})  # under: fine
        await client.send({"type": "KEEPALIVE", "channel": 0, "pad": "x" * 1000})
        assert await client.closed() == 1009
        await until(server, lambda: server.connections[0].closed)
        assert server.connections[0].close_code == 1009
        assert len(server.connections[0].received) == 2


async def test_set_max_message_size() -> None:
    async with (
        open_dxlink_server(config=ServerConfig(simulate=False)) as server,
        connect(server) as client,
    ):
        await client.handshake()
        server.set_max_message_size(100)
        await client.send({"type": "KEEPALIVE", "channel": 0, "pad": "y" * 100})
        assert await client.closed() == 1009
        with pytest.raises(ValueError, match="size"):
            server.set_max_message_size(0)


# --- publishing, simulation, fault injection -------------------------------------------------


async def test_simulated_market_streams_updates(autojump_clock: trio.testing.MockClock) -> None:
    config = ServerConfig(simulate=True, update_interval=1.0)
    async with ready_client(config, Market(seed=3), fields={"Quote": QUOTE_FIELDS}) as (
        server,
        client,
    ):
        start = trio.current_time()
        await client.subscribe(add=[{"type": "Quote", "symbol": "SPY"}])
        first = (await client.expect("FEED_DATA"))["data"]  # the initial value, at once
        assert trio.current_time() - start < 0.5
        updates = [first] + [(await client.expect("FEED_DATA"))["data"] for _ in range(3)]
        assert trio.current_time() - start == pytest.approx(3.0, abs=0.5)
        for data in updates:
            symbol, bid, ask, bid_size, ask_size = data[1]
            assert symbol == "SPY"
            assert 0 < bid < ask
            assert bid_size > 0
            assert ask_size > 0
        assert server.market.latest("Quote", "SPY") is not None


async def test_publish_reaches_every_subscribed_connection() -> None:
    async with (
        open_dxlink_server(config=ServerConfig(simulate=False), market=pinned_market()) as server,
        connect(server) as a,
        connect(server) as b,
    ):
        for client in (a, b):
            await client.handshake()
            await client.open_feed(1, fields={"Quote": ["eventSymbol", "bidPrice"]})
        await a.subscribe(add=[{"type": "Quote", "symbol": "SPY"}])
        await b.subscribe(
            add=[{"type": "Quote", "symbol": "SPY"}, {"type": "Quote", "symbol": "QQQ"}]
        )
        await until(server, lambda: len(server.received) == 8)
        qqq = Quote("QQQ", bid_price=1.0)
        server.publish_many([qqq, Quote("SPY", bid_price=2.0)])
        assert (await a.expect("FEED_DATA"))["data"] == ["Quote", ["SPY", 2.0]]
        assert (await b.expect("FEED_DATA"))["data"] == ["Quote", ["QQQ", 1.0, "SPY", 2.0]]
        assert server.market.latest("Quote", "QQQ") is qqq


async def test_drop_all_aborts_every_connection() -> None:
    async with open_dxlink_server(config=ServerConfig(simulate=False)) as server:
        async with connect(server) as a, connect(server) as b:
            await a.handshake()
            await b.handshake()
            server.drop_all()
            assert await a.closed() == 1006
            assert await b.closed() == 1006
            await until(server, lambda: not server.live)
        async with connect(server) as c:  # the server itself carries on
            await c.handshake()
            assert len(server.live) == 1


async def test_drop_all_with_a_close_code() -> None:
    config = ServerConfig(simulate=False, keep_closed_connections=True)
    async with open_dxlink_server(config=config) as server, connect(server) as client:
        await client.handshake()
        server.drop_all(code=1011)
        assert await client.closed() == 1011
        await until(server, lambda: server.connections[0].closed)
        assert server.connections[0].close_code == 1011


async def test_stall_and_resume(autojump_clock: trio.testing.MockClock) -> None:
    config = ServerConfig(simulate=False, keepalive_timeout=1000)
    async with ready_client(config, fields={"Quote": ["eventSymbol"]}) as (server, client):
        await client.subscribe(add=[{"type": "Quote", "symbol": "S"}])
        await subscribed(server, "Quote", "S")
        sent = server.connections[0].frames_sent
        server.stall()
        server.publish(Quote("S"))
        await client.send(
            {"type": "CHANNEL_REQUEST", "channel": 3, "service": "FEED", "parameters": {}}
        )
        client.guard = 1000
        with trio.move_on_after(200) as waited:  # virtual time: no data, no keepalives
            await client.recv(keepalives=True)
        assert waited.cancelled_caught
        assert server.connections[0].frames_sent == sent
        assert 3 in server.connections[0].channels  # still reading and handling
        server.resume()
        assert (await client.recv(keepalives=True))["type"] == "FEED_DATA"
        await client.expect("CHANNEL_OPENED", channel=3)
        start = trio.current_time()
        assert await client.recv(keepalives=True) == {
            "type": "KEEPALIVE",
            "channel": 0,
        }
        assert trio.current_time() - start == pytest.approx(30, abs=0.5)  # keepalives are back


async def test_slow_client_is_dropped_when_its_queue_fills() -> None:
    config = ServerConfig(simulate=False, queue_size=4, keep_closed_connections=True)
    async with ready_client(config, fields={"Quote": ["eventSymbol"]}) as (server, client):
        await client.subscribe(add=[{"type": "Quote", "symbol": "S"}])
        await subscribed(server, "Quote", "S")
        server.stall()
        for _ in range(6):  # one frame is held by the stalled writer, four fit in the queue
            server.publish(Quote("S"))
        assert await client.closed() == 1006
        await until(server, lambda: server.connections[0].closed)
        server.resume()


async def test_reject_next_token() -> None:
    config = ServerConfig(simulate=False, token="tok", keep_closed_connections=True)
    async with open_dxlink_server(config=config) as server:
        server.reject_next_token()
        async with connect(server) as client:
            await client.send({"type": "SETUP", "channel": 0, "version": "0.1-test"})
            await client.expect("SETUP")
            await client.expect("AUTH_STATE", state="UNAUTHORIZED")
            await client.send({"type": "AUTH", "channel": 0, "token": "tok"})
            await client.expect("AUTH_STATE", state="UNAUTHORIZED")
            assert await client.closed() == 1008
        async with connect(server) as client:
            await client.handshake(token="tok")  # only the next AUTH was rejected
            assert server.connections[1].authorized
        server.reject_all_tokens = True
        for _ in range(2):
            async with connect(server) as client:
                await client.send({"type": "SETUP", "channel": 0, "version": "0.1-test"})
                await client.expect("SETUP")
                await client.expect("AUTH_STATE", state="UNAUTHORIZED")
                await client.send({"type": "AUTH", "channel": 0, "token": "tok"})
                await client.expect("AUTH_STATE", state="UNAUTHORIZED")
                assert await client.closed() == 1008


async def test_close_channel_send_error_and_send_raw() -> None:
    async with ready_client() as (server, client):
        conn_id = server.connections[0].id
        server.close_channel(conn_id, 1)
        assert await client.recv() == {"type": "CHANNEL_CLOSED", "channel": 1}
        assert server.connections[0].channels == {}
        server.send_error(conn_id, 0, "UNKNOWN", "something broke")
        assert await client.recv() == {
            "type": "ERROR",
            "channel": 0,
            "error": "UNKNOWN",
            "message": "something broke",
        }
        server.send_raw(conn_id, "not json {")
        assert await client.ws.get_message() == "not json {"
        await client.open_feed(1)  # the closed id can be requested again
        with pytest.raises(KeyError):
            server.send_raw(99, "x")


async def test_switch_data_format_mid_session() -> None:
    async with ready_client(fields={"Quote": ["eventSymbol", "bidPrice"]}) as (server, client):
        await client.subscribe(add=[{"type": "Quote", "symbol": "S"}])
        await subscribed(server, "Quote", "S")
        server.switch_data_format(server.connections[0].id, 1, "FULL")
        assert (await client.expect("FEED_CONFIG"))["dataFormat"] == "FULL"
        server.publish(Quote("S", bid_price=3.0))
        data = await client.expect("FEED_DATA")
        assert data["data"] == [{"eventType": "Quote", "eventSymbol": "S", "bidPrice": 3.0}]


# --- lifecycle and wait_for ------------------------------------------------------------------


async def test_wait_for_wakes_on_state_changes() -> None:
    async with open_dxlink_server(config=ServerConfig(simulate=False)) as server:
        done = trio.Event()

        async def waiter() -> None:
            await server.wait_for(lambda: any(c.authorized for c in server.connections))
            done.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(waiter)
            await trio.testing.wait_all_tasks_blocked()
            assert not done.is_set()
            async with connect(server) as client:
                await trio.testing.wait_all_tasks_blocked()
                assert not done.is_set()  # connected, not yet authorized
                await client.handshake()
                with trio.fail_after(10):
                    await done.wait()
        await server.wait_for(lambda: True)  # a true predicate returns at once


async def test_serve_dxlink_in_callers_nursery_and_nothing_outlives_the_block() -> None:
    async with trio.open_nursery() as nursery:
        server: DXLinkServer = await nursery.start(serve_dxlink)
        assert server.url == f"ws://127.0.0.1:{server.port}"
        async with connect(server) as client:
            await client.handshake()
        nursery.cancel_scope.cancel()

    async with (
        open_dxlink_server(config=ServerConfig(simulate=False)) as server,
        connect(server) as client,
    ):
        await client.handshake()
        port = server.port
    with pytest.raises(
        OSError, match="connect"
    ):  # the listener is gone: nothing outlived the block
        await trio.open_tcp_stream("127.0.0.1", port)


async def test_server_records_requests() -> None:
    async with ready_client() as (server, client):
        await client.send({"type": "KEEPALIVE", "channel": 0})
        await until(server, lambda: len(server.received) == 4)
        kinds = [type(m) for _, m in server.received]
        assert kinds[:2] == [Setup, ChannelRequest]
        assert kinds[-1] is Keepalive
        assert server.connections[0].received == [m for _, m in server.received]


# --- the market ------------------------------------------------------------------------------


def test_market_is_deterministic() -> None:
    kinds = [
        "Quote",
        "Trade",
        "Summary",
        "Profile",
        "TimeAndSale",
        "Candle",
        "Greeks",
        "Underlying",
    ]

    def run(seed: int) -> list[object]:
        clock = iter(NOW + 0.25 * k for k in range(1000))
        market = Market(seed=seed, clock=lambda: next(clock))
        return [
            market.step(kind, sym)
            for _ in range(3)
            for kind in kinds
            for sym in ("SPY", "AAPL{=5m}")
        ]

    assert repr(run(1)) == repr(run(1))  # repr: NaN fields compare unequal
    assert repr(run(1)) != repr(run(2))


def test_market_quotes_trades_and_summary_are_consistent() -> None:
    times = iter(NOW + k for k in range(10_000))
    market = Market(seed=5, clock=lambda: next(times))
    volume = 0.0
    prices = []
    for _ in range(50):
        quote = market.step("Quote", "IBM")
        assert isinstance(quote, Quote)
        assert 0 < quote.bid_price < quote.ask_price
        trade = market.step("Trade", "IBM")
        assert isinstance(trade, Trade)
        prices.append(trade.price)
        assert trade.day_volume > volume
        volume = trade.day_volume
    summary = market.step("Summary", "IBM")
    assert isinstance(summary, Summary)
    assert summary.day_low_price <= min(prices) <= max(prices) <= summary.day_high_price
    assert summary.day_close_price == prices[-1]
    profile = market.step("Profile", "IBM")
    assert isinstance(profile, Profile)
    assert profile.description
    assert profile.low_52_week_price < profile.high_52_week_price


def test_trade_prints_inside_the_quote_of_the_same_instant() -> None:
    market = pinned_market(11)
    quote = market.step("Quote", "F")
    trade = market.step("Trade", "F")
    assert isinstance(quote, Quote)
    assert isinstance(trade, Trade)
    assert quote.bid_price <= trade.price <= quote.ask_price


def test_option_greeks_and_theo_price() -> None:
    market = pinned_market(2)
    market.set_mid("SPY", 450.0)
    call = market.step("Greeks", ".SPY240119C450")
    put = market.step("Greeks", ".SPY240119P450")
    assert isinstance(call, Greeks)
    assert isinstance(put, Greeks)
    assert 0 <= call.delta <= 1
    assert -1 <= put.delta <= 0
    assert call.delta - put.delta == pytest.approx(1.0, abs=1e-3)
    assert call.price > 0
    assert put.price > 0
    theo = market.step("TheoPrice", ".SPY240119C450")
    assert isinstance(theo, TheoPrice)
    assert theo.underlying_price == pytest.approx(450.0)
    assert theo.price == pytest.approx(call.price, rel=1e-6)
    quote = market.step("Quote", ".SPY240119C450")
    assert isinstance(quote, Quote)
    assert quote.bid_price < theo.price < quote.ask_price
    deep = market.step("Greeks", ".SPY240119C300")
    assert isinstance(deep, Greeks)
    assert deep.delta > call.delta


def test_symbol_parsing() -> None:
    option = parse_option_symbol(".SPXW240119P4975.5")
    assert option is not None
    assert (option.root, option.expiration.isoformat(), option.is_call, option.strike) == (
        "SPXW",
        "2024-01-19",
        False,
        4975.5,
    )
    assert parse_option_symbol("SPY") is None
    assert parse_option_symbol(".SPY241399C1") is None  # no 13th month
    assert candle_period_ms("AAPL{=5m}") == 300_000
    assert candle_period_ms("AAPL{=1d,tho=true}") == 86_400_000
    assert candle_period_ms("AAPL{tho=true,=2h}") == 7_200_000
    assert candle_period_ms("AAPL{=w}") == 7 * 86_400_000
    assert candle_period_ms("AAPL{=30s}") == 30_000
    assert candle_period_ms("AAPL{=5zz}") == 60_000
    assert candle_period_ms("AAPL") == 60_000


def test_candle_history_is_stable_and_consistent() -> None:
    market = pinned_market(4)
    hour = 3_600_000
    bars = market.history("TSLA{=1h}", NOW_MS - 48 * hour, NOW_MS)
    assert len(bars) == 48  # bars starting at or after fromTime, up to the live one
    assert all(isinstance(b, Candle) for b in bars)
    assert [b.time for b in bars] == sorted(b.time for b in bars)
    assert all(b.index == index_from_time(b.time) for b in bars)
    assert all(b.time % hour == 0 for b in bars)
    assert all(older.close == newer.open for older, newer in itertools.pairwise(bars))
    assert all(b.low <= min(b.open, b.close) and max(b.open, b.close) <= b.high for b in bars)
    assert market.history("TSLA{=1h}", NOW_MS - 48 * hour, NOW_MS) == bars
    assert market.history("TSLA{=1h}", 0, NOW_MS, limit=5) == bars[-5:]
    weekly = market.history("TSLA{=1w}", NOW_MS - 30 * 86_400_000, NOW_MS)
    assert len(weekly) == 5  # Mondays from 2023-10-16 to 2023-11-13
    assert {_utc(b.time).weekday() for b in weekly} == {0}  # weeks start on Monday
    assert {_utc(b.time).hour for b in weekly} == {0}


def _utc(time_ms: int) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(time_ms / 1000, datetime.timezone.utc)


def test_market_walk_moves_with_the_clock() -> None:
    now = [NOW]
    market = Market(seed=9, clock=lambda: now[0])
    first = market.mid("XYZ")
    assert market.mid("XYZ") == first  # same instant, same price
    now[0] += 3600
    assert market.mid("XYZ") != first
    with pytest.raises(ValueError, match="simulate"):
        market.step("Order", "XYZ")


async def test_the_default_server_simulates_every_type_and_simulate_false_scripts_it(
    autojump_clock: trio.abc.Clock,
) -> None:
    symbols = {"Candle": "SPY{=1m}", "Greeks": ".SPY270115C600", "TheoPrice": ".SPY270115C600"}
    async with (
        open_dxlink_server(in_memory=True) as server,
        open_dxlink(server.url, connector=server.connector()) as feed,
    ):
        assert server.config.simulate
        for cls in EVENT_TYPES:
            async with feed.subscribe(cls, [symbols.get(cls.__name__, "SPY")]) as rx:
                with trio.fail_after(60):
                    event = await rx.receive()
            assert type(event) is cls
    scripted = ServerConfig(simulate=False)
    async with (
        open_dxlink_server(config=scripted, in_memory=True) as server,
        open_dxlink(server.url, connector=server.connector()) as feed,
        feed.subscribe(Quote, ["SPY"]) as quotes,
    ):
        await server.wait_for(lambda: ("Quote", "SPY") in server.subscriptions())
        with trio.move_on_after(10):  # virtual seconds: a hundred update intervals
            await quotes.receive()
            raise AssertionError("a scripted server sent an event nobody published")
