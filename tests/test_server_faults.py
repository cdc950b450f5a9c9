"""Issue 9 on the server's side: nothing one client sends may kill the local server, the server
keeps only what it needs, and its fault switches announce what they are told to.

Clients here are raw trio-websocket (or wsproto) connections speaking JSON by hand, as in
``test_server.py``; synchronisation is by protocol messages and ``server.wait_for``.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import cast

import pytest
import trio
import trio.testing
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, CloseConnection, Event, Request, TextMessage

from trio_dxlink import Quote, open_dxlink
from trio_dxlink.testing import DXLinkServer, ServerConfig, open_dxlink_server

from .conftest import pinned_market, start_serve
from .test_server import connect, until

DEPTH = 1000  # orjson parses up to 1,024 levels; repr of a value this deep raises RecursionError
DEEP = "[" * DEPTH + "]" * DEPTH
SETUP = {
    "type": "SETUP",
    "channel": 0,
    "version": "0.1-test/1.0",
    "keepaliveTimeout": 60,
    "acceptKeepaliveTimeout": 60,
}


def nested(depth: int) -> str:
    """The JSON text of an array nested ``depth`` levels deep."""
    return "[" * depth + "]" * depth


async def still_serves(server: DXLinkServer) -> None:
    """Another client still connects, subscribes and gets data."""
    server.publish(Quote(event_symbol="SPY", bid_price=1.0, ask_price=2.0))
    with trio.fail_after(10):
        async with open_dxlink(server.url) as feed:
            quote = await feed.get_event(Quote, "SPY")
    assert quote.bid_price == 1.0


# --- A: hostile frames cost only their own client ----------------------------------------------


async def test_deeply_nested_frames_get_bounded_errors_and_the_server_lives_on() -> None:
    async with open_dxlink_server(
        config=ServerConfig(simulate=False), market=pinned_market()
    ) as server:
        async with connect(server) as client:
            await client.ws.send_message(DEEP)
            error = await client.expect("ERROR", error="INVALID_MESSAGE")
            assert len(error["message"]) < 300

            frame = '{"type":"SETUP","channel":0,"version":' + DEEP + "}"
            await client.ws.send_message(frame)
            error = await client.expect("ERROR", error="BAD_ACTION", channel=0)
            assert error["message"].startswith("malformed SETUP message: expected a string")
            assert len(error["message"]) < 300

            # The connection itself is still served: the handshake works after all that.
            await client.handshake()
            assert not server.connection(1).closed
        await still_serves(server)


async def test_deep_values_in_every_checked_field_get_bad_action() -> None:
    frames = [
        '{"type":"CHANNEL_REQUEST","channel":1,"service":' + DEEP + ',"parameters":{}}',
        '{"type":"FEED_SETUP","channel":1,"acceptEventFields":{"Quote":' + DEEP + "}}",
        '{"type":"FEED_SUBSCRIPTION","channel":1,"add":[{"type":"Quote","symbol":' + DEEP + "}]}",
        '{"type":"AUTH","channel":0,"token":' + DEEP + "}",
        '{"type":"ERROR","channel":0,"error":"X","message":' + DEEP + "}",
    ]
    async with (
        open_dxlink_server(config=ServerConfig(simulate=False), market=pinned_market()) as server,
        connect(server) as client,
    ):
        await client.handshake()
        await client.open_feed(1)
        for frame in frames:
            await client.ws.send_message(frame)
            error = await client.expect("ERROR", error="BAD_ACTION")
            assert "[[[[…" in error["message"], error
            assert len(error["message"]) < 300
        assert not server.connection(1).closed


async def test_long_strings_are_quoted_short_in_errors() -> None:
    long = "z" * 500_000
    async with (
        open_dxlink_server(config=ServerConfig(simulate=False), market=pinned_market()) as server,
        connect(server) as client,
    ):
        await client.handshake()
        await client.send({"type": "CHANNEL_REQUEST", "channel": 1, "service": long})
        error = await client.expect("ERROR", error="BAD_ACTION", channel=1)
        assert error["message"].startswith("unsupported service 'zzz")
        assert len(error["message"]) < 300
        await client.open_feed(2, data_format=None)
        await client.send({"type": "FEED_SETUP", "channel": 2, "acceptDataFormat": long})
        error = await client.expect("ERROR", error="BAD_ACTION", channel=2)
        assert error["message"].startswith("unknown data format 'zzz")
        assert len(error["message"]) < 300
        assert not server.connection(1).closed


async def test_a_message_the_server_cannot_answer_closes_that_client_only() -> None:
    # CHANNEL_OPENED echoes the parameters, and orjson will not write 300 levels: the handler
    # fails. That client gets ERROR UNKNOWN and close 1011; everyone else is served on.
    async with open_dxlink_server(
        config=ServerConfig(simulate=False), market=pinned_market()
    ) as server:
        async with connect(server) as bystander, connect(server) as client:
            await bystander.handshake()
            await client.handshake()
            await client.ws.send_message(
                '{"type":"CHANNEL_REQUEST","channel":1,"service":"FEED","parameters":{"x":'
                + nested(300)
                + "}}"
            )
            error = await client.expect("ERROR", error="UNKNOWN", channel=0)
            assert "TypeError" in error["message"]
            assert await client.closed() == 1011
            await bystander.open_feed(1)
        await still_serves(server)


async def test_any_from_time_is_answered() -> None:
    # fromTime is any 64-bit integer; an index only holds 32-bit seconds (it used to fail to
    # encode). Both extremes get a snapshot, clamped to what an index can say.
    async with (
        open_dxlink_server(config=ServerConfig(simulate=False), market=pinned_market()) as server,
        connect(server) as client,
    ):
        await client.handshake()
        await client.open_feed(1, data_format="FULL")
        for from_time in (2**63 - 1, -(2**63)):
            entry = {"type": "TimeAndSale", "symbol": "SPY", "fromTime": from_time}
            await client.subscribe(1, add=[entry])
            data = await client.expect("FEED_DATA", channel=1)
            (marker,) = data["data"]
            assert marker["eventFlags"] & 0x0A == 0x0A  # REMOVE_EVENT | SNAPSHOT_END
            assert 0 <= marker["time"] < 2**31 * 1000
            await client.subscribe(1, reset=True)
        assert not server.connection(1).closed


async def test_serve_survives_a_deeply_nested_frame() -> None:
    async with trio.open_nursery() as nursery:
        process, url = await start_serve(nursery)
        host, port = url.removeprefix("ws://").rsplit(":", 1)
        fake = cast(DXLinkServer, _Address(host, int(port)))
        with trio.fail_after(30):
            async with connect(fake) as client:
                await client.ws.send_message(DEEP)
                await client.expect("ERROR", error="INVALID_MESSAGE")
                await client.ws.send_message('{"type":"SETUP","channel":0,"version":' + DEEP + "}")
                await client.expect("ERROR", error="BAD_ACTION")
            async with connect(fake) as other:
                await other.send(SETUP)
                reply = await other.expect("SETUP")
                assert reply["version"]
            async with open_dxlink(url) as feed:
                quote = await feed.get_event(Quote, "SPY")
        assert quote.event_symbol == "SPY"
        assert process.returncode is None
        process.terminate()


class _Address:
    """What ``connect`` reads from a server: where it listens (here, a subprocess)."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port


# --- B: announcing any keepaliveTimeout ---------------------------------------------------------


@pytest.mark.parametrize(
    ("announced", "on_the_wire"),
    [
        (-1, -1),
        (0, 0),
        (0.0, 0.0),
        (0.0001, 0.0001),
        (1e9, 1e9),
        (2**70, float(2**70)),
        (math.nan, "NaN"),
        (math.inf, "Infinity"),
        (-math.inf, "-Infinity"),
    ],
)
async def test_setup_announces_the_keepalive_timeout_it_is_given(
    announced: float, on_the_wire: object
) -> None:
    config = ServerConfig(simulate=False, announce_keepalive_timeout=announced)
    async with open_dxlink_server(config=config) as server, connect(server) as client:
        await client.send(SETUP)
        reply = await client.expect("SETUP", channel=0)
        assert reply["keepaliveTimeout"] == on_the_wire
        assert type(reply["keepaliveTimeout"]) is type(on_the_wire)
        assert reply["acceptKeepaliveTimeout"] == 60
        await client.expect("AUTH_STATE", state="AUTHORIZED")


async def test_the_announced_keepalive_timeout_does_not_drive_the_servers_timer(
    autojump_clock: trio.testing.MockClock,
) -> None:
    config = ServerConfig(simulate=False, keepalive_timeout=30, announce_keepalive_timeout=0.0001)
    async with open_dxlink_server(config=config) as server, connect(server) as client:
        client.guard = 100
        await client.send(SETUP)
        assert (await client.expect("SETUP"))["keepaliveTimeout"] == 0.0001
        await client.expect("AUTH_STATE")
        start = trio.current_time()
        error = await client.recv()  # silent client: the server's real timer (30 s) runs out
        assert (error["type"], error["error"]) == ("ERROR", "TIMEOUT")
        assert trio.current_time() - start == pytest.approx(30, abs=0.5)
        assert await client.closed() == 1000


def test_announce_keepalive_timeout_must_be_a_number() -> None:
    with pytest.raises(TypeError, match="announce_keepalive_timeout"):
        ServerConfig(simulate=False, announce_keepalive_timeout="60")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="announce_keepalive_timeout"):
        ServerConfig(simulate=False, announce_keepalive_timeout=True)
    assert ServerConfig(simulate=False).announce_keepalive_timeout is None


# --- C: the server keeps only what it needs -----------------------------------------------------


async def test_closed_connections_are_forgotten() -> None:
    async with (
        open_dxlink_server(config=ServerConfig(simulate=False), market=pinned_market()) as server,
        connect(server) as stayer,
    ):
        await stayer.handshake()
        first = server.live[0]
        for _ in range(20):
            async with connect(server) as client:
                await client.handshake()
                await client.open_feed(1)
            await until(server, lambda: len(server.live) == 1)
        assert server.connections == [first]
        assert len(server.received) == len(first.received) == 1  # the stayer's SETUP
        assert {conn_id for conn_id, _ in server.received} == {first.id}
        with pytest.raises(KeyError, match="no connection 2"):
            server.connection(2)


async def test_closed_connections_are_kept_on_request() -> None:
    config = ServerConfig(simulate=False, keep_closed_connections=True)
    async with open_dxlink_server(config=config, market=pinned_market()) as server:
        for _ in range(3):
            async with connect(server) as client:
                await client.handshake()
            await until(server, lambda: not server.live)
        assert [conn.id for conn in server.connections] == [1, 2, 3]
        assert all(conn.closed and conn.close_code == 1000 for conn in server.connections)
        assert [conn_id for conn_id, _ in server.received] == [1, 2, 3]
        assert server.connection(2).setup is not None


@asynccontextmanager
async def raw_websocket(
    server: DXLinkServer,
) -> AsyncIterator[tuple[trio.SocketStream, WSConnection]]:
    """A bare wsproto client, so a test can send part of a frame and stop."""
    stream = await trio.open_tcp_stream(server.host, server.port)
    try:
        ws = WSConnection(ConnectionType.CLIENT)
        await stream.send_all(ws.send(Request(host=server.host, target="/")))
        await next_event(stream, ws, AcceptConnection)
        yield stream, ws
    finally:
        await stream.aclose()


async def next_event(stream: trio.SocketStream, ws: WSConnection, kind: type[Event]) -> Event:
    with trio.fail_after(10):
        while True:
            for event in ws.events():
                if isinstance(event, kind):
                    return event
            data = await stream.receive_some(65536)
            assert data, f"the server closed the socket before sending {kind.__name__}"
            ws.receive_data(data)


def frame_head(ws: WSConnection, declared: int, sent: int) -> bytes:
    """The first ``sent`` payload bytes of a text frame that says it holds ``declared``."""
    frame = ws.send(TextMessage(data="x" * declared))
    header = len(frame) - declared
    return frame[: header + sent]


async def test_an_oversized_frame_is_refused_as_it_arrives() -> None:
    # A frame that says it holds 5 MB: the server closes with 1009 once it has 1 MiB + 1 byte of
    # it, without waiting for (and buffering) the rest, which this client never sends.
    limit = 2**20
    config = ServerConfig(simulate=False, max_message_size=limit, keep_closed_connections=True)
    async with open_dxlink_server(config=config) as server:
        async with raw_websocket(server) as (stream, ws):
            await stream.send_all(frame_head(ws, 5_000_000, limit + 1))
            close = await next_event(stream, ws, CloseConnection)
            assert isinstance(close, CloseConnection)
            assert close.code == 1009
        await until(server, lambda: not server.live)
        assert server.connection(1).close_code == 1009


async def test_a_frame_at_the_limit_is_read() -> None:
    config = ServerConfig(simulate=False, max_message_size=1000)
    async with open_dxlink_server(config=config) as server, connect(server) as client:
        await client.handshake()
        pad = "x" * (1000 - len('{"type":"KEEPALIVE","channel":0,"pad":""}'))
        await client.ws.send_message('{"type":"KEEPALIVE","channel":0,"pad":"' + pad + '"}')
        await until(server, lambda: len(server.received) == 2)
        assert not server.live[0].closed


async def test_set_max_message_size_applies_to_live_and_new_connections() -> None:
    async with open_dxlink_server(config=ServerConfig(simulate=False)) as server:
        async with raw_websocket(server) as (stream, ws):
            await until(server, lambda: len(server.live) == 1)
            server.set_max_message_size(10_000)
            await stream.send_all(frame_head(ws, 100_000, 10_001))
            close = await next_event(stream, ws, CloseConnection)
            assert isinstance(close, CloseConnection)
            assert close.code == 1009
        async with raw_websocket(server) as (stream, ws):
            await stream.send_all(frame_head(ws, 100_000, 10_001))
            close = await next_event(stream, ws, CloseConnection)
            assert isinstance(close, CloseConnection)
            assert close.code == 1009
        server.set_max_message_size(2**27)  # no ceiling beyond the one given
        assert server.max_message_size == 2**27
