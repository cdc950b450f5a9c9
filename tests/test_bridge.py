"""The Redis Streams bridge and reader against a real redis-server on 127.0.0.1 (started here)
and the local DXLink server: what the bridge publishes, read back by an independent client and
by open_redis_feed, equals what a direct subscription received; Redis stopped and restarted."""

from __future__ import annotations

import gc
import json
import math
import warnings
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import orjson
import pytest
import trio

from trio_dxlink import (
    BridgeStatistics,
    Event,
    Overflow,
    Quote,
    Trade,
    open_dxlink,
    open_redis_feed,
    run_bridge,
)
from trio_dxlink._redis_codec import decode_entry, encode_entry, stream_key
from trio_dxlink.testing import DXLinkServer, ServerConfig, open_dxlink_server

from .conftest import pinned_market, run_main
from .redis_server import RedisServer, running_redis
from .test_cli import run_cli

coredis = pytest.importorskip("coredis")

# coredis 6.9 leaves the anyio memory streams of a connection that failed to connect unclosed
# (a ResourceWarning when they are collected); that is its leak, not ours.
COREDIS_LEAK = "Unclosed <MemoryObject"
pytestmark = pytest.mark.filterwarnings(f"ignore:{COREDIS_LEAK}:ResourceWarning")


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisServer]:
    with running_redis(tmp_path) as server:
        yield server
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", COREDIS_LEAK, ResourceWarning)
        gc.collect()


@pytest.fixture
async def dx() -> AsyncIterator[DXLinkServer]:
    async with open_dxlink_server(
        config=ServerConfig(simulate=False), market=pinned_market(), in_memory=True
    ) as server:
        yield server


def wire_subscriptions(server: DXLinkServer) -> int:
    return sum(len(ch.subscriptions) for conn in server.live for ch in conn.channels.values())


async def subscribed(server: DXLinkServer, count: int) -> None:
    """Wait until the DXLink server holds ``count`` subscriptions."""
    with trio.fail_after(10):
        await server.wait_for(lambda: wire_subscriptions(server) == count)


async def eventually(predicate: Callable[[], bool]) -> None:
    """Wait (at most 10 s) until ``predicate()`` holds (it watches another process)."""
    with trio.fail_after(10):
        while not predicate():  # noqa: ASYNC110 - the state changes in another process
            await trio.sleep(0.005)


async def xrange(url: str, key: str) -> list[Event]:
    """Every entry of ``key``, read by a plain Redis client of the test's own."""
    async with coredis.Redis.from_url(url) as client:
        return [decode_entry(entry.field_values) for entry in await client.xrange(key)]


def same(a: list[Event], b: list[Event]) -> bool:
    # NaN != NaN: compare the encoded forms
    return [encode_entry(e) for e in a] == [encode_entry(e) for e in b]


def test_entries_are_dxlink_names_with_json_values() -> None:
    quote = Quote("SPY", bid_price=1.5, ask_price=math.nan, ask_exchange_code=None)
    entry = encode_entry(quote)
    assert entry["eventType"] == b'"Quote"'
    assert entry["eventSymbol"] == b'"SPY"'
    assert entry["bidPrice"] == b"1.5"
    assert entry["askPrice"] == b'"NaN"'
    assert "askExchangeCode" not in entry
    assert same([decode_entry(entry)], [quote])
    assert stream_key("dxlink", "Quote", "SPY", "type") == "dxlink:Quote"
    assert stream_key("dxlink", "Quote", "SPY", "symbol") == "dxlink:Quote:SPY"


async def test_published_events_equal_a_direct_subscription(
    redis: RedisServer, dx: DXLinkServer
) -> None:
    symbols = ["SPY", "AAPL"]
    quotes = [Quote(symbols[i % 2], bid_price=100.0 + i, ask_price=101.0 + i) for i in range(200)]
    trades = [Trade("SPY", price=50.0 + i, size=float(i)) for i in range(20)]
    async with (
        open_dxlink(dx.url, connector=dx.connector()) as feed,
        feed.subscribe(Quote, symbols, overflow=Overflow.LOSSLESS) as direct,
        open_redis_feed(redis.url, block_ms=20) as reader,
        reader.subscribe(Quote, symbols, overflow=Overflow.LOSSLESS) as from_redis,
        trio.open_nursery() as nursery,
    ):
        bridge = await nursery.start(
            lambda task_status: run_bridge(
                feed, [Quote, Trade], symbols, redis.url, batch=64, task_status=task_status
            )
        )
        await reader.wait_subscribed()
        await subscribed(dx, 4)
        dx.publish_many(quotes)
        dx.publish_many(trades)
        received: list[Event] = []
        with trio.fail_after(10):
            while len(received) < len(quotes):
                received.extend(await direct.receive_batch())
        assert same(received, quotes)
        await eventually(lambda: bridge.statistics().published == len(quotes) + len(trades))

        # an independent client: redis-cli, and a plain XRANGE
        assert redis.cli("XLEN", "dxlink:Quote").strip() == str(len(quotes))
        assert redis.cli("TYPE", "dxlink:Trade").strip() == "stream"
        assert same(await xrange(redis.url, "dxlink:Quote"), received)
        assert same(await xrange(redis.url, "dxlink:Trade"), trades)

        # the typed reader
        read: list[Event] = []
        with trio.fail_after(10):
            while len(read) < len(quotes):
                read.extend(await from_redis.receive_batch())
        assert same(read, received)
        assert all(type(e) is Quote for e in read)
        stats = bridge.statistics()
        assert stats == BridgeStatistics(
            received=220, published=220, dropped=0, pending=0, reconnects=0, batches=stats.batches
        )
        assert stats.batches >= 220 // 64
        assert reader.statistics().received == len(quotes)
        nursery.cancel_scope.cancel()


async def test_stream_per_symbol_with_approximate_maxlen(
    redis: RedisServer, dx: DXLinkServer
) -> None:
    async with (
        open_dxlink(dx.url, connector=dx.connector()) as feed,
        open_redis_feed(redis.url, stream_per="symbol", block_ms=20) as reader,
        reader.subscribe(Quote, ["AAPL"], overflow=Overflow.LOSSLESS) as aapl,
        trio.open_nursery() as nursery,
    ):
        bridge = await nursery.start(
            lambda task_status: run_bridge(
                feed,
                Quote,
                ["SPY", "AAPL"],
                redis.url,
                stream_per="symbol",
                maxlen=10,
                batch=50,
                task_status=task_status,
            )
        )
        await reader.wait_subscribed()
        await subscribed(dx, 2)
        dx.publish_many(Quote("SPY", bid_price=i) for i in range(1000))
        dx.publish(Quote("AAPL", bid_price=7.0))
        await eventually(lambda: bridge.statistics().published == 1001)
        assert redis.cli("EXISTS", "dxlink:Quote").strip() == "0"
        assert redis.cli("XLEN", "dxlink:Quote:AAPL").strip() == "1"
        spy = int(redis.cli("XLEN", "dxlink:Quote:SPY"))
        assert 10 <= spy < 1000  # trimmed, approximately (whole radix-tree nodes)
        lines = redis.cli("XREVRANGE", "dxlink:Quote:SPY", "+", "-", "COUNT", "1").splitlines()
        last = dict(zip(lines[1::2], lines[2::2], strict=True))
        assert last["eventType"] == '"Quote"'
        assert orjson.loads(last["bidPrice"]) == 999
        with trio.fail_after(10):
            assert (await aapl.receive()).bid_price == 7.0
        nursery.cancel_scope.cancel()


async def test_redis_stopped_and_restarted_drops_are_counted_and_dxlink_never_blocks(
    redis: RedisServer, dx: DXLinkServer
) -> None:
    async with (
        open_dxlink(dx.url, connector=dx.connector()) as feed,
        feed.subscribe(Quote, ["SPY"], overflow=Overflow.LOSSLESS) as direct,
        trio.open_nursery() as nursery,
    ):
        bridge = await nursery.start(
            lambda task_status: run_bridge(
                feed,
                Quote,
                ["SPY"],
                redis.url,
                batch=5,
                max_pending=20,
                backoff=(0.01, 0.05),
                task_status=task_status,
            )
        )

        async def direct_gets(n: int, first: float) -> None:
            seen = []
            with trio.fail_after(10):
                while len(seen) < n:
                    seen.extend(q.bid_price for q in await direct.receive_batch())
            assert seen == [first + i for i in range(n)]

        await subscribed(dx, 1)
        dx.publish_many(Quote("SPY", bid_price=i) for i in range(5))
        await direct_gets(5, 0)
        await eventually(lambda: bridge.statistics().published == 5)

        redis.stop()
        dx.publish_many(Quote("SPY", bid_price=100 + i) for i in range(200))
        await direct_gets(200, 100)  # the DXLink side goes on at once, every event
        await eventually(lambda: bridge.statistics().received == 205)
        await eventually(lambda: bridge.statistics().reconnects >= 1)
        stats = bridge.statistics()
        assert stats.published == 5
        assert stats.pending <= 20
        assert stats.dropped >= 200 - 20
        assert stats.received == 205

        redis.start()  # empty again: it saves nothing
        dx.publish_many(Quote("SPY", bid_price=1000 + i) for i in range(3))
        await direct_gets(3, 1000)
        await eventually(lambda: bridge.statistics().received == 208)
        # A batch being written is neither pending nor yet published or dropped: wait until
        # every event is accounted for, not merely until nothing is pending.
        await eventually(lambda: bridge.statistics().published + bridge.statistics().dropped == 208)
        stats = bridge.statistics()
        assert stats.pending == 0
        after = await xrange(redis.url, "dxlink:Quote")
        assert len(after) == stats.published - 5
        assert [q.bid_price for q in after][-3:] == [1000, 1001, 1002]  # type: ignore[attr-defined]
        nursery.cancel_scope.cancel()


async def test_the_reader_recovers_when_redis_restarts(
    redis: RedisServer, dx: DXLinkServer
) -> None:
    async with (
        open_dxlink(dx.url, connector=dx.connector()) as feed,
        open_redis_feed(redis.url, block_ms=20, backoff=(0.01, 0.05)) as reader,
        reader.subscribe(Quote, ["SPY"], notify_gaps=True) as rx,
        trio.open_nursery() as nursery,
    ):
        await nursery.start(
            lambda task_status: run_bridge(
                feed, Quote, ["SPY"], redis.url, backoff=(0.01, 0.05), task_status=task_status
            )
        )
        await reader.wait_subscribed()
        await subscribed(dx, 1)
        redis.stop()
        await eventually(lambda: reader.statistics().reconnects >= 1)
        redis.start()
        with trio.fail_after(10):
            with pytest.raises(Exception, match="missing") as gap:
                await rx.receive()
        assert type(gap.value).__name__ == "DataGapError"
        # once reconnected, what the bridge publishes arrives
        with trio.fail_after(10):
            while True:
                dx.publish(Quote("SPY", bid_price=42.0))
                with trio.move_on_after(0.2):
                    event = await rx.receive()
                    if not isinstance(event, Quote):  # pragma: no cover
                        continue
                    assert event.bid_price == 42.0
                    break
        nursery.cancel_scope.cancel()


async def test_the_bridge_command_publishes_to_redis(redis: RedisServer) -> None:
    result = await run_cli(
        "bridge", "Quote,Trade", "SPY", "AAPL", "--redis", redis.url,
        "--stream-per", "symbol", "--maxlen", "1000", "--count", "20",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    status = json.loads(result.stderr.decode().splitlines()[-1])
    assert status["published"] >= 20
    assert status["dropped"] == 0
    keys = set(redis.cli("KEYS", "dxlink:*").split())
    assert keys <= {f"dxlink:{t}:{s}" for t in ("Quote", "Trade") for s in ("SPY", "AAPL")}
    assert "dxlink:Quote:SPY" in keys
    total = sum(int(redis.cli("XLEN", key)) for key in keys)
    assert total == status["published"]


def test_bad_bridge_arguments(redis: RedisServer) -> None:
    result = run_main("bridge", "Nope", "SPY", "--redis", redis.url)
    assert result.returncode == 2
    assert "unknown event type 'Nope'" in result.stderr
    result = run_main("bridge", "Quote", "SPY", "--redis", "http://x", "--count", "1")
    assert result.returncode == 2
    assert "--redis must be a redis:// URL" in result.stderr
    result = run_main("bridge", "Quote", "SPY", "--redis", redis.url, "--maxlen", "0")
    assert result.returncode == 2
    assert "--maxlen must be positive" in result.stderr
