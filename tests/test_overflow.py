"""Overflow policies and batched delivery, against the local server (reached in memory; the
first test over real WebSockets on 127.0.0.1).

A consumer is "slow" here simply by not reading while the server publishes. To know that the
client has dispatched everything, each test publishes a sentinel event last, on the same
connection and channel, and waits for it on a second handle: frames are handled in order, so
once the sentinel is in, every earlier event has been routed.
"""

from __future__ import annotations

import traceback
from collections.abc import AsyncIterator

import orjson
import pytest
import trio
import trio.testing

from trio_dxlink import (
    FeedState,
    Overflow,
    Quote,
    SlowConsumerError,
    Subscription,
    TimeAndSale,
    open_dxlink,
)
from trio_dxlink._codec import encode_compact
from trio_dxlink.testing import DXLinkServer

from .conftest import scripted_server

SENTINEL = "ZZZ"


@pytest.fixture
async def server() -> AsyncIterator[DXLinkServer]:
    """This module's server: the conftest one, reached in memory (``server.connector()``)."""
    async with scripted_server(in_memory=True) as srv:
        yield srv


async def ready(server: DXLinkServer, *symbols: str) -> None:
    with trio.fail_after(5):
        await server.wait_for(lambda: all(("Quote", s) in server.subscriptions() for s in symbols))


async def publish_one_frame_each(server: DXLinkServer, quotes: list[Quote]) -> None:
    for quote in quotes:
        server.publish(quote)  # one FEED_DATA frame per event


async def settle(server: DXLinkServer, sentinel: Subscription[Quote]) -> None:
    server.publish(Quote(SENTINEL, bid_price=-1.0))
    with trio.fail_after(5):
        while (await sentinel.receive()).event_symbol != SENTINEL:
            pass


def quotes(symbol: str, n: int, start: float = 1.0) -> list[Quote]:
    return [Quote(symbol, bid_price=start + i) for i in range(n)]


async def test_lossless_fails_only_the_slow_handle(loopback_server: DXLinkServer) -> None:
    # Over real WebSockets on 127.0.0.1 (the module's other tests reach the server in memory).
    server = loopback_server
    async with (
        open_dxlink(server.url) as feed,
        feed.subscribe(Quote, [SENTINEL], overflow=Overflow.LOSSLESS) as sentinel,
        feed.subscribe(Quote, ["SPY"], overflow=Overflow.LOSSLESS, max_buffer=10) as slow,
        feed.subscribe(Quote, ["SPY"], overflow=Overflow.LOSSLESS) as fast,
    ):
        await ready(server, SENTINEL, "SPY")
        await publish_one_frame_each(server, quotes("SPY", 11))
        await settle(server, sentinel)

        stats = slow.statistics()
        assert (stats.received, stats.buffered, stats.dropped) == (11, 10, 1)
        got = [(await slow.receive()).bid_price for _ in range(10)]
        assert got == [1.0 + i for i in range(10)]  # what it held is delivered first...
        with pytest.raises(SlowConsumerError, match="buffer of 10 events"):
            await slow.receive()  # ...then the failure
        with pytest.raises(SlowConsumerError):
            await slow.receive()  # and it stays failed

        fast_got = [(await fast.receive()).bid_price for _ in range(11)]
        assert fast_got == [1.0 + i for i in range(11)]  # the other handle lost nothing
        server.publish(Quote("SPY", bid_price=99.0))
        with trio.fail_after(5):
            assert (await fast.receive()).bid_price == 99.0
        assert feed.state is FeedState.CONNECTED
        assert ("Quote", "SPY") in server.subscriptions()


async def test_latest_keeps_only_the_newest_per_symbol(server: DXLinkServer) -> None:
    async with (
        open_dxlink(server.url, connector=server.connector()) as feed,
        feed.subscribe(Quote, [SENTINEL], overflow=Overflow.LOSSLESS) as sentinel,
        feed.subscribe(Quote, ["SPY", "AAPL"], overflow=Overflow.LATEST) as rx,
    ):
        await ready(server, SENTINEL, "SPY", "AAPL")
        await publish_one_frame_each(
            server, [*quotes("SPY", 5, start=10.0), *quotes("AAPL", 3, start=20.0)]
        )
        await settle(server, sentinel)
        stats = rx.statistics()
        assert (stats.received, stats.buffered, stats.conflated, stats.dropped) == (8, 2, 6, 0)
        batch = await rx.receive_batch()
        assert {(q.event_symbol, q.bid_price) for q in batch} == {("SPY", 14.0), ("AAPL", 22.0)}
        assert rx.statistics().delivered == 2


async def test_latest_is_the_default_for_quotes_lossless_for_indexed(
    server: DXLinkServer,
) -> None:
    async with open_dxlink(server.url, connector=server.connector()) as feed:
        assert feed.subscribe(Quote, ["SPY"]).overflow is Overflow.LATEST
        assert feed.subscribe(TimeAndSale, ["SPY"]).overflow is Overflow.LOSSLESS


async def test_drop_oldest_keeps_the_newest_n(server: DXLinkServer) -> None:
    async with (
        open_dxlink(server.url, connector=server.connector()) as feed,
        feed.subscribe(Quote, [SENTINEL], overflow=Overflow.LOSSLESS) as sentinel,
        feed.subscribe(Quote, ["SPY"], overflow=Overflow.DROP_OLDEST, max_buffer=3) as rx,
    ):
        await ready(server, SENTINEL, "SPY")
        await publish_one_frame_each(server, quotes("SPY", 10))
        await settle(server, sentinel)
        stats = rx.statistics()
        assert (stats.received, stats.buffered, stats.dropped) == (10, 3, 7)
        got = [(await rx.receive()).bid_price for _ in range(3)]
        assert got == [8.0, 9.0, 10.0]
        assert rx.statistics().delivered == 3


async def test_one_frame_is_one_batch_and_iteration_stays_in_order(
    server: DXLinkServer,
) -> None:
    async with (
        open_dxlink(server.url, connector=server.connector()) as feed,
        feed.subscribe(Quote, [SENTINEL], overflow=Overflow.LOSSLESS) as sentinel,
        feed.subscribe(Quote, ["A", "B", "C"], overflow=Overflow.LOSSLESS) as rx,
    ):
        await ready(server, SENTINEL, "A", "B", "C")
        burst = [Quote(s, bid_price=float(i)) for i in range(30) for s in "ABC"]
        server.publish_many(burst)  # the server packs these into frames of up to 100
        await settle(server, sentinel)
        batch = await rx.receive_batch()
        assert len(batch) == 90  # one frame in, one batch out
        assert [(q.event_symbol, q.bid_price) for q in batch] == [
            (q.event_symbol, q.bid_price) for q in burst
        ]
        server.publish_many(burst[:6])
        with trio.fail_after(5):
            seen = [await rx.receive() for _ in range(6)]
        assert [q.bid_price for q in seen] == [q.bid_price for q in burst[:6]]


async def test_events_for_unsubscribed_symbols_are_counted_not_delivered(
    server: DXLinkServer,
) -> None:
    async with (
        open_dxlink(server.url, connector=server.connector()) as feed,
        feed.subscribe(Quote, [SENTINEL], overflow=Overflow.LOSSLESS) as sentinel,
        feed.subscribe(Quote, ["SPY"]) as rx,
    ):
        await ready(server, SENTINEL, "SPY")
        rx.remove(["SPY"])
        rx.add(["QQQ"])
        with trio.fail_after(5):
            await server.wait_for(lambda: ("Quote", "SPY") not in server.subscriptions())
        # The server still has SPY in flight for a moment; pretend it sent one late.
        conn = server.connection(1)
        (channel,) = [
            cid
            for cid, ch in conn.channels.items()
            if (("Quote", SENTINEL, None) in ch.subscriptions)
        ]
        row = encode_compact([Quote("SPY", bid_price=1.0)], Quote.wire_fields())
        frame = {"type": "FEED_DATA", "channel": channel, "data": ["Quote", row]}
        server.send_raw(1, orjson.dumps(frame).decode())
        await settle(server, sentinel)
        assert feed.statistics().events_unrouted == 1
        assert rx.statistics().received == 0


async def test_a_cancelled_receive_loses_nothing(server: DXLinkServer) -> None:
    async with (
        open_dxlink(server.url, connector=server.connector()) as feed,
        feed.subscribe(Quote, [SENTINEL], overflow=Overflow.LOSSLESS) as sentinel,
        feed.subscribe(Quote, ["SPY"], overflow=Overflow.LOSSLESS) as rx,
    ):
        await ready(server, SENTINEL, "SPY")
        await publish_one_frame_each(server, quotes("SPY", 3))
        await settle(server, sentinel)
        for attempt in (rx.receive, rx.receive_batch, rx.__anext__):
            with trio.CancelScope() as scope:
                scope.cancel()
                await attempt()
            assert scope.cancelled_caught
        got = [(await rx.receive()).bid_price for _ in range(3)]
        assert got == [1.0, 2.0, 3.0]
        assert rx.statistics().delivered <= 3


# --- several readers, repeated errors, bounded conflation ---


async def test_two_tasks_reading_one_handle_each_get_different_events(
    server: DXLinkServer,
) -> None:
    """Like a trio memory channel, a handle may have several readers: every event goes to
    exactly one of them, whichever way each one reads."""
    async with (
        open_dxlink(server.url, connector=server.connector()) as feed,
        feed.subscribe(Quote, [SENTINEL], overflow=Overflow.LOSSLESS) as sentinel,
        feed.subscribe(Quote, ["SPY"], overflow=Overflow.LOSSLESS) as rx,
    ):
        await ready(server, SENTINEL, "SPY")
        seen: list[float] = []
        total = 200
        all_seen = trio.Event()

        def record(*prices: float) -> None:
            seen.extend(prices)
            if len(seen) >= total:
                all_seen.set()

        async def by_event() -> None:
            async for quote in rx:
                record(quote.bid_price)

        async def by_batch() -> None:
            async for batch in rx.batches():
                record(*(q.bid_price for q in batch))

        async def by_receive() -> None:
            while True:
                record((await rx.receive()).bid_price)

        def publish(first: int, last: int) -> None:
            for start in range(first, last, 20):  # frames of twenty
                server.publish(*quotes("SPY", 20, start=float(start)))

        with trio.fail_after(10):
            publish(0, total // 2)  # half of it waits in the buffer before anyone reads
            await settle(server, sentinel)
            async with trio.open_nursery() as nursery:
                for reader in (by_event, by_batch, by_receive):
                    nursery.start_soon(reader)
                await trio.testing.wait_all_tasks_blocked()  # all three wait for data
                publish(total // 2, total)  # and half of it arrives while they wait
                await all_seen.wait()
                await trio.testing.wait_all_tasks_blocked()  # anything extra would show now
                nursery.cancel_scope.cancel()
        assert sorted(seen) == [float(i) for i in range(total)]  # none lost, none twice
        assert rx.statistics().delivered == total


async def test_a_failed_handle_raises_its_error_again_without_growing_it(
    server: DXLinkServer,
) -> None:
    async with (
        open_dxlink(server.url, connector=server.connector()) as feed,
        feed.subscribe(Quote, [SENTINEL], overflow=Overflow.LOSSLESS) as sentinel,
        feed.subscribe(Quote, ["SPY"], overflow=Overflow.LOSSLESS, max_buffer=1) as rx,
    ):
        await ready(server, SENTINEL, "SPY")
        server.publish(*quotes("SPY", 2))  # one frame of two: more than max_buffer
        await settle(server, sentinel)
        depths = []
        for _ in range(3):
            with pytest.raises(SlowConsumerError) as caught:
                await rx.receive()
            depths.append(len(list(traceback.walk_tb(caught.value.__traceback__))))
        assert depths[0] == depths[1] == depths[2]


async def test_a_bounded_wildcard_latest_handle_evicts_the_stalest_symbol(
    server: DXLinkServer,
) -> None:
    async with (
        open_dxlink(server.url, connector=server.connector()) as feed,
        feed.subscribe(Quote, [SENTINEL], overflow=Overflow.LOSSLESS) as sentinel,
        feed.subscribe(Quote, ["*"], overflow=Overflow.LATEST, max_buffer=3) as rx,
    ):
        await ready(server, SENTINEL, "*")
        server.publish(
            Quote("A", bid_price=1.0), Quote("B", bid_price=1.0), Quote("C", bid_price=1.0)
        )
        server.publish(Quote("D", bid_price=2.0), Quote("A", bid_price=2.0))  # A is now fresh
        await settle(server, sentinel)  # the wildcard handle gets the sentinel's quote too
        got = {q.event_symbol: q.bid_price for q in await rx.receive_batch()}
        assert got == {"D": 2.0, "A": 2.0, SENTINEL: -1.0}  # B, then C, updated longest ago
        stats = rx.statistics()
        assert (stats.received, stats.dropped, stats.delivered) == (6, 2, 3)
