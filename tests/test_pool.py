"""The connection pool (open_dxlink_pool) against the local server capping subscriptions per
connection: placement, spreading, per-connection reconnects and gaps, statistics, rebalance."""

from __future__ import annotations

import math

import pytest
import trio
import trio.testing

from trio_dxlink import (
    Candle,
    DataGapError,
    FeedState,
    Greeks,
    Overflow,
    PoolFullError,
    Quote,
    open_dxlink_pool,
)
from trio_dxlink._messages import FeedSetup
from trio_dxlink.testing import ServerConfig, open_dxlink_server
from trio_dxlink.testing._server import DXLinkServer
from trio_dxlink.testing._server_connection import ServerConnection

from .conftest import FAST, pinned_market, until


def held(server: DXLinkServer) -> list[int]:
    """Subscriptions per live server connection, in connection order."""
    return [
        sum(len(ch.subscriptions) for ch in conn.channels.values())
        for conn in sorted(server.live, key=lambda conn: conn.id)
    ]


async def test_subscriptions_fill_one_connection_then_open_the_next() -> None:
    config = ServerConfig(simulate=False, max_subscriptions=3)
    async with (
        open_dxlink_server(config=config, market=pinned_market(), in_memory=True) as server,
        open_dxlink_pool(
            server.url, connector=server.connector(), max_subscriptions_per_connection=3
        ) as pool,
    ):
        assert pool.connections == 1
        async with (
            pool.subscribe(Quote, ["A", "B"]) as quotes,
            pool.subscribe(Greeks, ["A", "B", "C"], overflow=Overflow.LATEST) as greeks,
        ):
            assert pool.connections == 2
            await until(server, lambda: held(server) == [3, 2])
            async with pool.subscribe(Quote, ["A", "B"]):  # held already: no new wire ones
                assert pool.connections == 2
            await pool.wait_state(FeedState.CONNECTED)
            server.publish(Quote("A", bid_price=1.0))
            server.publish_many(Greeks(s, delta=0.5) for s in "ABC")
            with trio.fail_after(5):
                assert (await quotes.receive()).bid_price == 1.0
                await receive_symbols(greeks, {"A", "B", "C"})
            assert pool.latest(Quote, "A") == Quote("A", bid_price=1.0)
            assert (await pool.get_event(Greeks, "C")).delta == 0.5
            stats = pool.statistics()
            assert stats.subscriptions == 5
            assert [s.subscriptions for s in stats.connections] == [3, 2]
            assert [s.events_received for s in stats.connections] == [2, 2]  # one Greeks on 0
            assert stats.events_received == 4
        await until(server, lambda: held(server) == [0, 0])
        assert pool.statistics().subscriptions == 0


async def test_a_full_pool_refuses_and_subscribes_nothing() -> None:
    async with (
        open_dxlink_server(
            config=ServerConfig(simulate=False), market=pinned_market(), in_memory=True
        ) as server,
        open_dxlink_pool(
            server.url,
            connector=server.connector(),
            max_subscriptions_per_connection=2,
            max_connections=2,
        ) as pool,
        pool.subscribe(Quote, ["A", "B", "C"]),
    ):
        with pytest.raises(PoolFullError, match="2 new subscriptions do not fit: 1 free"):
            async with pool.subscribe(Quote, ["D", "E"]):
                pass  # pragma: no cover
        assert pool.statistics().subscriptions == 3
        async with pool.subscribe(Quote, ["D"]):
            assert pool.statistics().subscriptions == 4


async def test_fields_and_aggregation_period_open_a_channel_of_their_own_on_each_connection() -> (
    None
):
    config = ServerConfig(simulate=False)
    async with (
        open_dxlink_server(config=config, market=pinned_market(), in_memory=True) as server,
        open_dxlink_pool(
            server.url, connector=server.connector(), max_subscriptions_per_connection=2
        ) as pool,
        pool.subscribe(Quote, ["A"]) as full,
        pool.subscribe(Quote, ["A", "B", "C"], fields=["bid_price"], aggregation_period=2) as thin,
    ):
        assert thin.fields == ("eventSymbol", "bidPrice")
        assert thin.aggregation_period == 2.0
        # A with every field and A projected are two wire subscriptions: [A, A] then [B, C].
        assert pool.connections == 2
        await until(server, lambda: held(server) == [2, 2])
        for conn in server.live:
            asked = {
                (m.accept_aggregation_period, tuple((m.accept_event_fields or {})["Quote"]))
                for m in conn.received
                if isinstance(m, FeedSetup) and m.accept_event_fields
            }
            assert (2.0, ("eventSymbol", "bidPrice")) in asked, asked
        await pool.wait_state(FeedState.CONNECTED)
        server.publish(*(Quote(s, bid_price=1.0, ask_price=2.0) for s in "ABC"))
        got: dict[str, Quote] = {}
        with trio.fail_after(5):
            whole = await full.receive()
            async for quote in thin:
                got[quote.event_symbol] = quote
                if len(got) == 3:
                    break
        assert (whole.bid_price, whole.ask_price) == (1.0, 2.0)
        assert all(q.bid_price == 1.0 and math.isnan(q.ask_price) for q in got.values()), got
        latest = pool.latest(Quote, "A")  # from the channel with every field
        assert latest is not None
        assert latest.ask_price == 2.0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"fields": ["bid_prize"]}, "Quote has no field 'bid_prize'"),
        ({"fields": "bidPrice"}, "a list of field names"),
        ({"aggregation_period": 0}, "positive number of seconds"),
        ({"aggregation_period": math.inf}, "positive number of seconds"),
    ],
)
async def test_the_pool_refuses_bad_fields_and_periods_as_the_feed_does(
    kwargs: dict[str, object], message: str
) -> None:
    async with (
        open_dxlink_server(
            config=ServerConfig(simulate=False), market=pinned_market(), in_memory=True
        ) as server,
        open_dxlink_pool(server.url, connector=server.connector()) as pool,
    ):
        with pytest.raises(ValueError, match=message):
            pool.subscribe(Quote, ["A"], **kwargs)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="cannot be combined with from_time"):
            pool.subscribe(Candle, ["A{=1m}"], from_time=1_700_000_000_000, fields=["close"])
        assert pool.statistics().subscriptions == 0


async def test_bad_pool_sizes_are_refused() -> None:
    with pytest.raises(ValueError, match="max_connections"):
        async with open_dxlink_pool("ws://127.0.0.1:1", max_connections=0):
            pass  # pragma: no cover


async def test_rebalance_moves_only_when_asked() -> None:
    symbols = ["A", "B", "C", "D", "E", "F", "G", "H"]
    async with (
        open_dxlink_server(
            config=ServerConfig(simulate=False), market=pinned_market(), in_memory=True
        ) as server,
        open_dxlink_pool(
            server.url, connector=server.connector(), max_subscriptions_per_connection=4
        ) as pool,
        pool.subscribe(Quote, symbols) as rx,
        pool.subscribe(Quote, ["X"]) as one,
    ):
        await until(server, lambda: held(server) == [4, 4, 1])
        assert pool.rebalance() == 2  # ceil(9 / 3) = 3 each
        assert [s.subscriptions for s in pool.statistics().connections] == [3, 3, 3]
        await until(server, lambda: held(server) == [3, 3, 3])
        assert pool.rebalance() == 0
        server.publish(*(Quote(s, bid_price=2.0) for s in [*symbols, "X"]))
        seen: set[str] = set()
        with trio.fail_after(5):
            assert (await one.receive()).event_symbol == "X"
            async for event in rx:
                seen.add(event.event_symbol)
                if len(seen) == len(symbols):
                    break


def holds(conn: ServerConnection, event_type: str, symbol: str) -> bool:
    return any((event_type, symbol, None) in ch.subscriptions for ch in conn.channels.values())


async def receive_symbols(rx: object, wanted: set[str]) -> None:
    """Read ``rx`` until every symbol of ``wanted`` has had an event."""
    seen: set[str] = set()
    async for event in rx:  # type: ignore[attr-defined]
        seen.add(event.event_symbol)
        if seen >= wanted:
            return


async def test_sixty_thousand_subscriptions_over_six_capped_connections() -> None:
    symbols = [f".S{i:05d}" for i in range(30_000)]
    config = ServerConfig(simulate=False, max_subscriptions=10_000, queue_size=100_000)
    async with (
        open_dxlink_server(config=config, market=pinned_market(), in_memory=True) as server,
        open_dxlink_pool(
            server.url,
            connector=server.connector(),
            max_subscriptions_per_connection=10_000,
            reconnect=FAST,
        ) as pool,
        pool.subscribe(Quote, symbols, notify_gaps=True) as quotes,
        pool.subscribe(Greeks, symbols, overflow=Overflow.LATEST, notify_gaps=True) as greeks,
        pool.subscribe(Quote, symbols[:100], notify_gaps=True) as first_quotes,
    ):
        assert pool.connections == 6
        await until(server, lambda: held(server) == [10_000] * 6)
        await pool.wait_state(FeedState.CONNECTED)
        # Every symbol of both types gets data.
        server.publish_many(Quote(s, bid_price=1.0) for s in symbols)
        server.publish_many(Greeks(s, delta=0.1) for s in symbols)
        with trio.fail_after(30):
            await receive_symbols(quotes, set(symbols))
            await receive_symbols(greeks, set(symbols))
        assert pool.statistics().events_received == 60_000  # the 100 share wire subscriptions
        # Quotes sit on connections 0-2 (in symbol order), Greeks on 3-5: drop connection 2
        # and keep it down while the others stream.
        dropped_symbols = set(symbols[20_000:])
        server.reject_upgrades(503)
        (holder,) = [conn for conn in server.live if holds(conn, "Quote", symbols[-1])]
        holder.drop()
        await pool.wait_state(FeedState.RECONNECTING)
        server.publish_many(Greeks(s, delta=0.2) for s in symbols)
        server.publish(Quote(symbols[0], bid_price=2.0))
        with trio.fail_after(30):
            await receive_symbols(greeks, set(symbols))
            assert (await first_quotes.receive()).bid_price == 2.0
        stats = pool.statistics()
        assert [s.connection_losses for s in stats.connections] == [0, 0, 1, 0, 0, 0]
        assert stats.connections[2].state is FeedState.RECONNECTING
        assert all(
            s.state is FeedState.CONNECTED for i, s in enumerate(stats.connections) if i != 2
        )
        # Back up: its share is replayed, on a connection of its own.
        server.accept_upgrades()
        await pool.wait_state(FeedState.CONNECTED)
        await until(server, lambda: held(server) == [10_000] * 6)
        server.publish_many(Quote(s, bid_price=3.0) for s in dropped_symbols)
        with trio.fail_after(30), pytest.raises(DataGapError):
            await receive_symbols(quotes, dropped_symbols)
        with trio.fail_after(30):
            await receive_symbols(quotes, dropped_symbols)
        assert quotes.statistics().gaps == 1
        assert greeks.statistics().gaps == 0
        assert first_quotes.statistics().gaps == 0
        assert pool.statistics().connections[2].reconnects == 1
