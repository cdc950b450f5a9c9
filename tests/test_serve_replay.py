"""``serve --replay``: a recording played by the local server to any DXLink client. In process
(``play_recording``, recorded spacing under a MockClock) and as ``python -m trio_dxlink serve
--replay`` on 127.0.0.1 with the library's client and, when installed, tastytrade's SDK."""

from __future__ import annotations

import asyncio
import gc
import itertools
from pathlib import Path

import orjson
import pytest
import trio
import trio.testing

from trio_dxlink import Overflow, Quote, open_dxlink
from trio_dxlink._codec import encode_full
from trio_dxlink.events import Event
from trio_dxlink.testing import ServerConfig, open_dxlink_server, play_recording

from .conftest import pinned_market, start_serve, until
from .test_cli import run_cli

SPACING = 5.0  # seconds between the recorded quotes


async def _record(
    path: Path, quotes: int = 4, spacing: float = SPACING
) -> tuple[list[Event], list[float]]:
    """Quotes for SPY and AAPL, ``spacing`` seconds apart, recorded; the events and their times."""
    live: list[Event] = []
    times: list[float] = []
    async with (
        open_dxlink_server(
            config=ServerConfig(simulate=False), market=pinned_market(), in_memory=True
        ) as server,
        open_dxlink(server.url, connector=server.connector(), record=path) as feed,
        feed.subscribe(Quote, ["SPY", "AAPL"], overflow=Overflow.LOSSLESS) as rx,
    ):
        await until(server, lambda: ("Quote", "AAPL") in server.subscriptions())
        for i in range(quotes):
            if i:
                await trio.sleep(spacing)
            server.publish(full_quote("SPY", 500.0 + i), full_quote("AAPL", 200.0 + i))
            for _ in range(2):
                live.append(await rx.receive())
                times.append(trio.current_time())
    return live, times


def full_quote(symbol: str, bid: float) -> Quote:
    """A quote with every field a real feed fills (tastytrade's SDK rejects missing ones)."""
    return Quote(
        symbol,
        event_time=1_700_000_000_000,
        bid_time=1_700_000_000_000,
        bid_exchange_code="Q",
        bid_price=bid,
        bid_size=100.0,
        ask_time=1_700_000_000_000,
        ask_exchange_code="Q",
        ask_price=bid + 0.5,
        ask_size=200.0,
    )


def _wire(events: list[Event]) -> list[bytes]:
    return [orjson.dumps(encode_full(e)) for e in events]


async def test_the_server_plays_a_recording_in_recorded_time(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    path = tmp_path / "session.dxrec"
    live, live_times = await _record(path)

    async with (
        open_dxlink_server(config=ServerConfig(simulate=False), in_memory=True) as server,
        trio.open_nursery() as nursery,
        open_dxlink(server.url, connector=server.connector()) as feed,
        feed.subscribe(Quote, ["SPY", "AAPL"], overflow=Overflow.LOSSLESS) as rx,
    ):
        nursery.start_soon(play_recording, server, path)
        played: list[Event] = []
        times: list[float] = []
        with trio.fail_after(60):
            for _ in live:
                played.append(await rx.receive())
                times.append(trio.current_time())
        nursery.cancel_scope.cancel()
    assert _wire(played) == _wire(live)
    spacing = [round(b - a, 3) for a, b in itertools.pairwise(times)]
    live_spacing = [round(b - a, 3) for a, b in itertools.pairwise(live_times)]
    assert spacing == live_spacing
    assert max(spacing) == pytest.approx(SPACING, abs=0.01)


async def test_speed_scales_the_spacing_and_bad_speeds_are_refused(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    path = tmp_path / "session.dxrec"
    await _record(path, quotes=3)
    async with open_dxlink_server(config=ServerConfig(simulate=False), in_memory=True) as server:
        with pytest.raises(ValueError, match="speed must be positive"):
            await play_recording(server, path, speed=0)
        async with (
            open_dxlink(server.url, connector=server.connector()) as feed,
            feed.subscribe(Quote, ["SPY"], overflow=Overflow.LOSSLESS),
        ):
            start = trio.current_time()
            assert await play_recording(server, path, speed=10.0) == 6
            assert trio.current_time() - start == pytest.approx(2 * SPACING / 10, abs=0.01)


async def test_serve_replay_on_loopback_serves_the_library_client(tmp_path: Path) -> None:
    path = tmp_path / "session.dxrec.zst"
    live, _ = await _record(path, quotes=2, spacing=0.5)  # played at 50x
    async with trio.open_nursery() as nursery:
        process, url = await start_serve(nursery, "--replay", str(path), "--speed", "50")
        try:
            with trio.fail_after(30):
                async with (
                    open_dxlink(url) as feed,
                    feed.subscribe(Quote, ["SPY", "AAPL"], overflow=Overflow.LOSSLESS) as rx,
                ):
                    played = [await rx.receive() for _ in live]
        finally:
            process.terminate()
    assert _wire(played) == _wire(live)


async def test_serve_replay_refuses_a_file_that_is_not_a_recording(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.dxrec"
    bogus.write_text('{"k": "open"}\n')
    result = await run_cli("serve", "--replay", str(bogus))
    assert result.returncode == 1
    assert b"is not a trio_dxlink recording" in result.stderr
    result = await run_cli("serve", "--replay", str(bogus), "--speed", "0")
    assert result.returncode == 2
    assert b"--speed must be positive" in result.stderr


async def _tastytrade_quotes(url: str, count: int) -> list[tuple[str, float]]:
    from tastytrade import DXLinkStreamer
    from tastytrade.dxfeed import Quote as TastytradeQuote

    from .test_tastytrade_compat import LocalSession

    session = LocalSession(url, "any-token")
    async with DXLinkStreamer(session) as streamer:  # type: ignore[arg-type]
        await streamer.subscribe(TastytradeQuote, ["SPY", "AAPL"])
        async with asyncio.timeout(20):
            quotes = [await streamer.get_event(TastytradeQuote) for _ in range(count)]
    return [(q.event_symbol, float(q.bid_price)) for q in quotes]


@pytest.mark.filterwarnings(
    "ignore::ResourceWarning", "ignore::pytest.PytestUnraisableExceptionWarning"
)
async def test_tastytrades_sdk_receives_the_recorded_quotes(tmp_path: Path) -> None:
    pytest.importorskip("tastytrade", reason="tastytrade's SDK is not installed (extra: compat)")
    path = tmp_path / "session.dxrec"
    live, _ = await _record(path, quotes=2, spacing=0.5)
    async with trio.open_nursery() as nursery:
        process, url = await start_serve(nursery, "--replay", str(path), "--speed", "50")
        try:
            with trio.fail_after(60):
                got = await trio.to_thread.run_sync(asyncio.run, _tastytrade_quotes(url, len(live)))
        finally:
            process.terminate()
            gc.collect()
    expected = [(e.event_symbol, e.bid_price) for e in live if isinstance(e, Quote)]
    assert got == expected
