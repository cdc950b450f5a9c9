"""The recordings in ``tests/fixtures`` (made by ``tests/fixtures/make_recordings.py`` against
the local server with its fault switches) replayed through ``open_dxlink``: the client must do
exactly what it did live, each time: deliver the same events, count the same skips, raise the
same typed errors and keep the recorded connections apart. And no recording holds the token."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio
import trio.testing
import zstandard

from trio_dxlink import (
    Candle,
    ChannelError,
    ConnectionClosedError,
    DXLinkFeed,
    FeedState,
    KeepaliveTimeoutError,
    MalformedDataError,
    Overflow,
    Quote,
    Replay,
    SnapshotStatus,
    Trade,
    iter_records,
    open_dxlink,
    read_manifest,
)
from trio_dxlink.events import index_from_time

from .fixtures.make_recordings import (
    HISTORY_CLOSES,
    HISTORY_FROM,
    KEEPALIVE_TIMEOUT,
    MALFORMED,
    RECONNECT_QUOTES,
    REPLAY_POLICY,
    SECRET,
    SESSIONS,
    reconnect_quotes,
)

FIXTURES = Path(__file__).parent / "fixtures"


@asynccontextmanager
async def replayed(
    name: str, *, speed: float | None = None, keepalive_timeout: float = 60.0
) -> AsyncIterator[tuple[Replay, DXLinkFeed]]:
    with Replay(FIXTURES / name, speed=speed) as replay:
        async with open_dxlink(
            replay.url,
            replay.token,
            connector=replay.connector(),
            reconnect=REPLAY_POLICY,
            keepalive_timeout=keepalive_timeout,
        ) as feed:
            yield replay, feed


def _text(path: Path) -> bytes:
    raw = path.read_bytes()
    if path.suffix == ".zst":
        return zstandard.ZstdDecompressor().stream_reader(raw).read()
    return raw


def test_every_session_has_its_fixture_small_and_without_the_token() -> None:
    assert sorted(p.name for p in FIXTURES.glob("*.dxrec*")) == sorted(SESSIONS)
    for name in SESSIONS:
        path = FIXTURES / name
        assert path.stat().st_size < 16_000
        raw, text = path.read_bytes(), _text(path)
        assert raw.startswith(b"\x28\xb5\x2f\xfd") == name.endswith(".zst")
        for data in (raw, text):
            assert SECRET.encode() not in data, name
        assert b'"j":{"type":"AUTH","token":"<redacted>","channel":0}' in text, name
        assert read_manifest(path)["dropped"] == 0


async def test_a_dropped_connection_replays_as_a_reconnect(
    autojump_clock: trio.testing.MockClock,
) -> None:
    name = "reconnect_after_drop.dxrec"
    async with (
        replayed(name) as (replay, feed),
        feed.subscribe(Quote, ["SPY", "AAPL"], overflow=Overflow.LOSSLESS) as rx,
    ):
        with trio.fail_after(60):
            got = [await rx.receive() for _ in range(6)]
            await replay.finished.wait()
        assert reconnect_quotes(got) == RECONNECT_QUOTES  # type: ignore[arg-type]
        stats = feed.statistics()
        assert (stats.reconnects, stats.connection_losses) == (1, 1)
        assert isinstance(stats.reason, ConnectionClosedError)
        assert rx.statistics().buffered == 0  # nothing more than live
    # the two connections are kept apart in the file: each opened, then closed, in turn
    ends = [(r["k"], r["c"]) for r in iter_records(FIXTURES / name) if r["k"] in ("open", "close")]
    assert ends == [("open", 1), ("close", 1), ("open", 2), ("close", 2)]
    assert sorted(read_manifest(FIXTURES / name)["connections"]) == ["1", "2"]


async def test_malformed_frames_are_skipped_counted_and_reported_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    name = "malformed_frames.dxrec"
    async with (
        replayed(name) as (replay, feed),
        feed.subscribe(Quote, ["SPY"], notify_gaps=True, overflow=Overflow.LOSSLESS) as quotes,
        feed.subscribe(Trade, ["SPY"]) as trades,
    ):
        with trio.fail_after(60):
            assert (await quotes.receive()).bid_price == 1.0
            assert (await trades.receive()).price == 7.0
            with pytest.raises(MalformedDataError):
                await quotes.receive()
            assert (await quotes.receive()).bid_price == 2.0
            await replay.finished.wait()
        stats = feed.statistics()
        assert stats.malformed_messages == len(MALFORMED)
        assert stats.events_skipped == 3  # the ragged values (2), the row with a word (1)
        assert (stats.connection_losses, stats.reconnects) == (0, 0)
        assert quotes.statistics().skipped == 3
        assert trades.statistics().skipped == 0
        assert feed.state is FeedState.CONNECTED
    # the bad frames are in the file as the server sent them, the one that is not JSON too
    received = [r["f"] for r in iter_records(FIXTURES / name) if r["k"] == "in"]
    channel = next(c for c in range(1, 9) if MALFORMED[0] % {"c": c} in received)
    assert all(template % {"c": channel} in received for template in MALFORMED)


async def test_a_keepalive_stall_times_out_again_in_recorded_time(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with (
        replayed("keepalive_stall.dxrec", speed=1.0, keepalive_timeout=KEEPALIVE_TIMEOUT) as (
            replay,
            feed,
        ),
        feed.subscribe(Quote, ["SPY"], overflow=Overflow.LOSSLESS) as rx,
    ):
        with trio.fail_after(60):
            assert (await rx.receive()).bid_price == 1.0
            silent_from = trio.current_time()
            await feed.wait_state(FeedState.RECONNECTING)
            # the client's own timer ended it, not the replay
            assert isinstance(feed.statistics().reason, KeepaliveTimeoutError)
            assert trio.current_time() - silent_from == pytest.approx(KEEPALIVE_TIMEOUT, abs=0.5)
            await feed.wait_state(FeedState.CONNECTED)
            assert [(await rx.receive()).bid_price for _ in range(2)] == [1.0, 3.0]
            await replay.finished.wait()
        assert feed.statistics().reconnects == 1


async def test_a_channel_error_fails_only_that_channel(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with (
        replayed("channel_error.dxrec") as (replay, feed),
        feed.subscribe(Quote, ["SPY"]) as quotes,
        feed.subscribe(Trade, ["SPY"]) as trades,
    ):
        with trio.fail_after(60):
            assert (await quotes.receive()).bid_price == 1.0
            with pytest.raises(ChannelError) as info:
                await quotes.receive()
            assert (info.value.code, info.value.message) == ("BAD_ACTION", "quote channel broke")
            assert (await trades.receive()).price == 9.0
            await replay.finished.wait()
        stats = feed.statistics()
        assert (stats.connection_losses, stats.reconnects) == (0, 0)
        assert feed.state is FeedState.CONNECTED


async def test_history_in_transaction_pieces_with_string_indexes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with replayed("history_in_pieces.dxrec.zst") as (replay, feed):
        with trio.fail_after(60):
            history = await feed.history(Candle, "AAPL{=5m}", HISTORY_FROM)
            await replay.finished.wait()
    assert history.status is SnapshotStatus.SNIPPED
    assert not history.reaches_start
    assert [c.close for c in history.events] == HISTORY_CLOSES
    assert [c.time for c in history.events] == sorted(c.time for c in history.events)
    assert all(c.index == index_from_time(c.time) for c in history.events)  # sent as strings
