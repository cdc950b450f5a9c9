"""open_dxlink and scoped subscriptions, end to end over real WebSockets on 127.0.0.1 (the
keepalive tests, on a MockClock, reach the server in memory)."""

from __future__ import annotations

import math

import pytest
import trio
import trio.testing

from trio_dxlink import (
    NO_RECONNECT,
    AuthenticationError,
    Candle,
    ConnectError,
    ConnectionClosedError,
    EventFlag,
    FeedState,
    Order,
    Overflow,
    Quote,
    ReconnectPolicy,
    ServerError,
    SubscriptionClosedError,
    Token,
    Trade,
    open_dxlink,
)
from trio_dxlink._messages import (
    Auth,
    ChannelRequest,
    FeedSetup,
    FeedSubscription,
    Keepalive,
    Setup,
)
from trio_dxlink.testing import DXLinkServer, ServerConfig, open_dxlink_server

from .conftest import Session, pinned_market, task_count

pytestmark = pytest.mark.filterwarnings("error")


def kinds(server: DXLinkServer, connection: int = 1) -> list[str]:
    return [type(m).__name__ for m in server.connection(connection).received]


async def subscribed(server: DXLinkServer, event_type: str, symbol: str) -> None:
    with trio.fail_after(5):
        await server.wait_for(lambda: (event_type, symbol) in server.subscriptions())


async def unsubscribed(server: DXLinkServer, event_type: str, symbol: str) -> None:
    with trio.fail_after(5):
        await server.wait_for(lambda: (event_type, symbol) not in server.subscriptions())


# --- handshake and auth ---


async def test_handshake_in_strict_order_with_token(token_server: DXLinkServer) -> None:
    async with open_dxlink(token_server.url, token="secret") as feed:
        assert feed.state is FeedState.CONNECTED
        async with feed.subscribe(Quote, ["SPY"]):
            await subscribed(token_server, "Quote", "SPY")
    received = list(token_server.connection(1).received)
    assert isinstance(received[0], Setup)
    assert isinstance(received[1], Auth)
    assert received[1].token == "secret"
    assert [type(m) for m in received[2:4]] == [ChannelRequest, FeedSetup]
    assert isinstance(received[4], FeedSubscription)
    assert received[0].keepalive_timeout == 60


async def test_no_auth_server_connects_without_auth(server: DXLinkServer) -> None:
    async with open_dxlink(server.url) as feed:
        assert feed.state is FeedState.CONNECTED
    assert "Auth" not in kinds(server)


async def test_rejected_token_raises_authentication_error(token_server: DXLinkServer) -> None:
    before = task_count()
    with pytest.raises(AuthenticationError, match="rejected"):
        async with open_dxlink(token_server.url, token="wrong"):
            pytest.fail("the block must not be entered")
    assert task_count() == before


async def test_missing_token_raises_authentication_error(token_server: DXLinkServer) -> None:
    with pytest.raises(AuthenticationError, match="requires a token"):
        async with open_dxlink(token_server.url):
            pytest.fail("the block must not be entered")


async def test_token_never_in_reprs_or_errors(token_server: DXLinkServer) -> None:
    with pytest.raises(AuthenticationError) as info:
        async with open_dxlink(token_server.url, token="hunter2-token"):
            pass
    assert "hunter2-token" not in repr(info.value) + str(info.value)
    assert "hunter2-token" not in repr(Token("hunter2-token", "ws://x"))
    assert "hunter2-token" not in repr(token_server.connection(1).received)


async def test_unreachable_server_is_connect_error() -> None:
    async with open_dxlink_server(config=ServerConfig(simulate=False)) as srv:
        url = srv.url
    with pytest.raises(ConnectError, match="could not connect"):
        async with open_dxlink(url):
            pass


async def test_bad_url_is_value_error() -> None:
    with pytest.raises(ValueError, match="ws://"):
        async with open_dxlink("http://127.0.0.1:1/"):
            pass


async def test_session_supplies_token_and_url(token_server: DXLinkServer) -> None:
    session = Session(token_server.url, ["secret"])
    async with open_dxlink(session) as feed:
        assert feed.state is FeedState.CONNECTED
    assert session.calls == 1


async def test_session_token_rejected_refetches_once_then_fails(
    token_server: DXLinkServer,
) -> None:
    session = Session(token_server.url, ["stale", "secret"])
    async with open_dxlink(session) as feed:
        assert feed.state is FeedState.CONNECTED
    assert session.calls == 2
    bad = Session(token_server.url, ["stale", "also-stale", "secret"])
    with pytest.raises(AuthenticationError):
        async with open_dxlink(bad):
            pass
    assert bad.calls == 2


# --- subscriptions ---


async def test_subscribe_iterate_and_leave_unsubscribes(server: DXLinkServer) -> None:
    async with open_dxlink(server.url) as feed:
        async with feed.subscribe(Quote, ["SPY", "AAPL"]) as rx:
            await subscribed(server, "Quote", "AAPL")
            server.publish(Quote("SPY", bid_price=1.0, ask_price=1.5))
            server.publish(Quote("AAPL", bid_price=2.0, ask_price=2.5))
            with trio.fail_after(5):
                first = await rx.receive()
                second = await rx.receive()
            assert {first.event_symbol, second.event_symbol} == {"SPY", "AAPL"}
            spy = first if first.event_symbol == "SPY" else second
            assert spy.bid_price == 1.0
            assert math.isnan(spy.bid_size)
        await unsubscribed(server, "Quote", "SPY")
        await unsubscribed(server, "Quote", "AAPL")
        with pytest.raises(SubscriptionClosedError):
            await rx.receive()


async def test_async_for_ends_when_the_handle_closes(server: DXLinkServer) -> None:
    async with open_dxlink(server.url) as feed:
        got = []
        async with feed.subscribe(Trade, ["SPY"], overflow=Overflow.LOSSLESS) as rx:
            await subscribed(server, "Trade", "SPY")
            server.publish(Trade("SPY", price=10.0), Trade("SPY", price=11.0))
            with trio.fail_after(5):
                async for trade in rx:
                    got.append(trade.price)
                    if len(got) == 2:
                        rx.close()
        assert got == [10.0, 11.0]


async def test_fan_out_and_refcounted_unsubscribe(server: DXLinkServer) -> None:
    async with open_dxlink(server.url) as feed:
        async with feed.subscribe(Quote, ["SPY"]) as one:
            async with feed.subscribe(Quote, ["SPY"]) as two:
                await subscribed(server, "Quote", "SPY")
                server.publish(Quote("SPY", bid_price=3.0))
                with trio.fail_after(5):
                    assert (await one.receive()).bid_price == 3.0
                    assert (await two.receive()).bid_price == 3.0
            # the second handle left: the first still needs the wire subscription
            await trio.testing.wait_all_tasks_blocked()
            assert ("Quote", "SPY") in server.subscriptions()
            subs = [m for m in server.connection(1).received if isinstance(m, FeedSubscription)]
            assert all(not m.remove for m in subs)
            server.publish(Quote("SPY", bid_price=4.0))
            with trio.fail_after(5):
                assert (await one.receive()).bid_price == 4.0
        await unsubscribed(server, "Quote", "SPY")
    adds = [
        e.symbol
        for m in server.connection(1).received
        if isinstance(m, FeedSubscription)
        for e in m.add or ()
    ]
    assert adds.count("SPY") == 1


async def test_add_and_remove_while_iterating(server: DXLinkServer) -> None:
    async with open_dxlink(server.url) as feed, feed.subscribe(Quote, ["SPY"]) as rx:
        await subscribed(server, "Quote", "SPY")
        server.publish(Quote("SPY", bid_price=1.0))
        seen = []
        with trio.fail_after(5):
            async for quote in rx:
                seen.append(quote.event_symbol)
                if quote.event_symbol == "SPY" and "QQQ" not in rx.symbols:
                    rx.add(["QQQ"])
                    rx.remove(["SPY"])
                    await subscribed(server, "Quote", "QQQ")
                    await unsubscribed(server, "Quote", "SPY")
                    server.publish(Quote("SPY", bid_price=9.0), Quote("QQQ", bid_price=2.0))
                elif quote.event_symbol == "QQQ":
                    break
        assert seen == ["SPY", "QQQ"]
        assert rx.symbols == {"QQQ"}


async def test_feed_setup_requests_each_type_once_before_subscribing(
    server: DXLinkServer,
) -> None:
    async with (
        open_dxlink(server.url) as feed,
        feed.subscribe(Quote, ["SPY"]),
        feed.subscribe(Quote, ["AAPL"]),
    ):
        await subscribed(server, "Quote", "AAPL")
    received = server.connection(1).received
    setups = [m for m in received if isinstance(m, FeedSetup)]
    assert len(setups) == 1
    assert setups[0].accept_event_fields is not None
    assert setups[0].accept_event_fields["Quote"] == list(Quote.wire_fields())
    first_sub = next(i for i, m in enumerate(received) if isinstance(m, FeedSubscription))
    assert received.index(setups[0]) < first_sub


async def test_candle_history_snapshot_flags() -> None:
    config = ServerConfig(simulate=True, update_interval=3600)
    async with (
        open_dxlink_server(config=config, market=pinned_market()) as srv,
        open_dxlink(srv.url) as feed,
    ):
        from_time = 1_700_000_000_000 - 10 * 60_000
        async with feed.subscribe(Candle, ["AAPL{=1m}"], from_time=from_time) as rx:
            events: list[Candle] = []
            with trio.fail_after(5):
                async for candle in rx:
                    events.append(candle)
                    if candle.snapshot_end or candle.snapshot_snip:
                        break
    assert events[0].flags & EventFlag.SNAPSHOT_BEGIN
    assert events[-1].snapshot_end
    times = [c.time for c in events]
    assert times == sorted(times, reverse=True)
    assert times[-1] == from_time
    assert all(c.event_symbol == "AAPL{=1m}" for c in events)


async def test_removing_one_spelling_of_a_candle_symbol_keeps_the_other(
    server: DXLinkServer,
) -> None:
    # "price=last" is the default, so both spellings are routed by AAPL{=5m}
    async with (
        open_dxlink(server.url) as feed,
        feed.subscribe(Candle, ["AAPL{=5m}", "AAPL{=5m,price=last}"]) as rx,
    ):
        await subscribed(server, "Candle", "AAPL{=5m}")
        rx.remove(["AAPL{=5m,price=last}"])
        await unsubscribed(server, "Candle", "AAPL{=5m,price=last}")
        server.publish(Candle("AAPL{=5m}", time=1_700_000_000_000, close=3.0))
        with trio.fail_after(5):
            candle = await rx.receive()
        assert (candle.event_symbol, candle.close) == ("AAPL{=5m}", 3.0)
        assert feed.statistics().events_unrouted == 0


# --- one-shot reads ---


async def test_get_event_waits_for_the_next_value(server: DXLinkServer) -> None:
    async with open_dxlink(server.url) as feed, trio.open_nursery() as nursery:

        async def publish_when_subscribed() -> None:
            await subscribed(server, "Quote", "MSFT")
            server.publish(Quote("MSFT", bid_price=7.0))

        nursery.start_soon(publish_when_subscribed)
        with trio.fail_after(5):
            quote = await feed.get_event(Quote, "MSFT")
        assert quote.bid_price == 7.0
    assert ("Quote", "MSFT") not in server.subscriptions()


async def test_get_event_returns_the_cached_value(server: DXLinkServer) -> None:
    async with open_dxlink(server.url) as feed, feed.subscribe(Quote, ["SPY"]) as rx:
        await subscribed(server, "Quote", "SPY")
        server.publish(Quote("SPY", bid_price=5.0))
        with trio.fail_after(5):
            await rx.receive()
        received_before = len(server.connection(1).received)
        quote = await feed.get_event(Quote, "SPY")  # no wait, no new subscription
        assert quote.bid_price == 5.0
        assert len(server.connection(1).received) == received_before


async def test_get_event_uses_the_servers_current_value(server: DXLinkServer) -> None:
    server.publish(Quote("IBM", bid_price=8.0))  # the market now knows IBM
    async with open_dxlink(server.url) as feed:
        with trio.fail_after(5):
            quote = await feed.get_event(Quote, "IBM")
    assert quote.bid_price == 8.0


# --- errors and cancellation ---


async def test_server_error_surfaces_with_code_and_message(server: DXLinkServer) -> None:
    with pytest.raises(ServerError) as info:
        async with open_dxlink(server.url, reconnect=NO_RECONNECT) as feed:
            server.send_error(1, 0, "BAD_ACTION", "something went wrong")
            await feed.wait_state(FeedState.CLOSED)
    assert info.value.code == "BAD_ACTION"
    assert info.value.message == "something went wrong"
    assert info.value.channel == 0


async def test_server_closing_the_socket_raises_a_clear_error(server: DXLinkServer) -> None:
    before = task_count()
    with pytest.raises(ConnectionClosedError, match="closed"):
        async with (
            open_dxlink(server.url, reconnect=NO_RECONNECT) as feed,
            feed.subscribe(Quote, ["SPY"]) as rx,
        ):
            await subscribed(server, "Quote", "SPY")
            server.drop_all(code=1011, reason="maintenance")
            await rx.receive()
    assert task_count() == before


async def test_user_exception_comes_out_unwrapped(server: DXLinkServer) -> None:
    before = task_count()
    with pytest.raises(KeyError, match="mine"):
        async with open_dxlink(server.url) as feed, feed.subscribe(Quote, ["SPY"]):
            raise KeyError("mine")
    assert task_count() == before
    await unsubscribed(server, "Quote", "SPY")


async def test_outside_cancellation_exits_promptly(server: DXLinkServer) -> None:
    before = task_count()
    with trio.move_on_after(1) as scope:
        async with open_dxlink(server.url) as feed, feed.subscribe(Quote, ["SPY"]) as rx:
            await subscribed(server, "Quote", "SPY")
            scope.cancel()
            await rx.receive()
    assert scope.cancelled_caught
    assert task_count() == before


async def test_leaving_the_feed_fails_handles_used_afterwards(server: DXLinkServer) -> None:
    async with open_dxlink(server.url) as feed:
        rx = feed.subscribe(Quote, ["SPY"])
    assert feed.state is FeedState.CLOSED
    with pytest.raises(ConnectionClosedError):
        async with rx:
            pass


async def test_subscribe_rejects_bad_arguments(server: DXLinkServer) -> None:
    async with open_dxlink(server.url) as feed:
        with pytest.raises(TypeError):
            feed.subscribe(Quote, "SPY")
        with pytest.raises(ValueError, match="non-empty"):
            feed.subscribe(Quote, [""])
        with pytest.raises(TypeError):
            feed.subscribe(str, ["SPY"])  # type: ignore[type-var]
        with pytest.raises(ValueError, match="from_time is for time-series"):
            feed.subscribe(Quote, ["SPY"], from_time=0)
        with pytest.raises(ValueError, match="source is for order-book"):
            feed.subscribe(Candle, ["SPY{=d}"], source="NTV")
        with pytest.raises(ValueError, match="max_buffer"):
            feed.subscribe(Quote, ["SPY"], max_buffer=0)


# --- keepalive ---


async def test_keepalive_sent_before_the_servers_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # In memory: a MockClock that jumps while a real socket's data is in flight could time out
    # what is merely slow.
    config = ServerConfig(simulate=False, keepalive_timeout=10)
    async with (
        open_dxlink_server(config=config, market=pinned_market(), in_memory=True) as srv,
        open_dxlink(srv.url, reconnect=NO_RECONNECT, connector=srv.connector()) as feed,
    ):
        await trio.sleep(100)  # ten server timeouts of silence from the market
        assert feed.state is FeedState.CONNECTED
        keepalives = [m for m in srv.connection(1).received if isinstance(m, Keepalive)]
        assert len(keepalives) >= 100 / 5 - 2  # every half of the server's 10 s timeout
        assert not srv.connection(1).closed


async def test_server_timeout_close_surfaces(autojump_clock: trio.testing.MockClock) -> None:
    # A client that advertises a keepalive interval longer than the server's timeout is cut
    # off by the server (ERROR TIMEOUT, then close); without reconnect the block says why.
    config = ServerConfig(simulate=False, keepalive_timeout=10, keep_closed_connections=True)
    async with open_dxlink_server(config=config, market=pinned_market(), in_memory=True) as srv:
        with pytest.raises((ServerError, ConnectionClosedError)) as info:
            async with open_dxlink(
                srv.url, reconnect=NO_RECONNECT, connector=srv.connector()
            ) as feed:
                feed._keepalive_interval = 1e9  # misbehave on purpose
                live = feed._live
                assert live is not None
                live.core._keepalive_interval = 1e9
                live.core.server_keepalive_timeout = None
                await trio.sleep(60)
        assert srv.connection(1).closed
        if isinstance(info.value, ServerError):
            assert info.value.code == "TIMEOUT"


async def test_wildcard_handle_sees_every_symbol_alongside_specific_ones(
    server: DXLinkServer,
) -> None:
    async with (
        open_dxlink(server.url) as feed,
        feed.subscribe(Trade, ["*"], overflow=Overflow.LOSSLESS) as everything,
        feed.subscribe(Trade, ["SPY"], overflow=Overflow.LOSSLESS) as spy,
    ):
        await subscribed(server, "Trade", "SPY")
        await subscribed(server, "Trade", "*")
        server.publish(Trade("SPY", price=1.0), Trade("QQQ", price=2.0))
        with trio.fail_after(5):
            assert [(await everything.receive()).event_symbol for _ in range(2)] == ["SPY", "QQQ"]
            assert (await spy.receive()).event_symbol == "SPY"
        assert spy.statistics().received == 1


async def test_the_websockets_transport_works_end_to_end(server: DXLinkServer) -> None:
    pytest.importorskip("websockets.trio.client")
    from trio_dxlink import websockets_connector

    policy = ReconnectPolicy(initial_delay=0.01, jitter=0.0)
    before = task_count()
    async with (
        open_dxlink(server.url, connector=websockets_connector(), reconnect=policy) as feed,
        feed.subscribe(Quote, ["SPY"], overflow=Overflow.LOSSLESS) as rx,
    ):
        await subscribed(server, "Quote", "SPY")
        server.publish(Quote("SPY", bid_price=1.25))
        with trio.fail_after(5):
            assert (await rx.receive()).bid_price == 1.25
        server.drop_all()
        with trio.fail_after(5):
            await server.wait_for(lambda: len(server.connections) == 2)
        await subscribed(server, "Quote", "SPY")
        server.publish(Quote("SPY", bid_price=2.5))
        with trio.fail_after(5):
            while (await rx.receive()).bid_price != 2.5:
                pass
    assert task_count() == before


async def test_order_sources_are_separate_subscriptions(server: DXLinkServer) -> None:
    async with (
        open_dxlink(server.url) as feed,
        feed.subscribe(Order, ["AAPL"], source="NTV") as book,
        feed.subscribe(Order, ["AAPL"], source="ntv") as levels,
    ):
        with trio.fail_after(5):
            await server.wait_for(lambda: len(server.subscriptions("Order")) == 1)
        entries = [
            e
            for m in server.connection(1).received
            if isinstance(m, FeedSubscription)
            for e in m.add or ()
        ]
        assert sorted(e.source or "" for e in entries) == ["NTV", "ntv"]
        server.publish(
            Order("AAPL", source="ntv", index=1, price=10.0),
            Order("AAPL", source="NTV", index=2, price=11.0),
        )
        with trio.fail_after(5):
            assert (await book.receive()).price == 11.0
            assert (await levels.receive()).price == 10.0
        assert book.statistics().received == 1
        assert levels.statistics().received == 1
