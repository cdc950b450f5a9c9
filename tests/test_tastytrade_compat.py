"""tastytrade's own SDK (``DXLinkStreamer``, asyncio) against the local DXLink server.

The local server must be faithful enough for the clients people already use. This runs the real
``tastytrade`` package (optional: ``pip install -e '.[compat]'``) against ``trio-dxlink serve`` in
a subprocess on 127.0.0.1, with a stand-in session that answers the token request locally.
"""

from __future__ import annotations

import asyncio
import gc
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
import trio

from .conftest import start_serve

tastytrade = pytest.importorskip("tastytrade")

# tastytrade leaves anyio memory streams unclosed when its streamer exits: its warnings, not ours.
pytestmark = pytest.mark.filterwarnings(
    "ignore::ResourceWarning", "ignore::pytest.PytestUnraisableExceptionWarning"
)


class LocalSession:
    """Stands in for ``tastytrade.Session``: no network; the token comes from here."""

    def __init__(self, url: str, token: str) -> None:
        self.url = url
        self.token = token
        self.client_kwargs: dict[str, Any] = {"trust_env": False}

    async def _get(self, path: str, **kwargs: Any) -> dict[str, Any]:
        assert path == "/api-quote-tokens", path
        return {"dxlink-url": self.url, "token": self.token, "level": "api"}


async def run_tastytrade(url: str) -> dict[str, Any]:
    from tastytrade import DXLinkStreamer
    from tastytrade.dxfeed import Candle, Greeks, Quote, Summary, Trade

    out: dict[str, Any] = {}
    session = LocalSession(url, "compat-token")
    async with DXLinkStreamer(session) as streamer:  # type: ignore[arg-type]
        await streamer.subscribe(Quote, ["SPY", "AAPL"])
        await streamer.subscribe(Trade, ["SPY"])
        await streamer.subscribe(Summary, ["SPY"])
        await streamer.subscribe(Greeks, [".SPY270115C500"])
        start = datetime.now(timezone.utc) - timedelta(minutes=30)
        await streamer.subscribe_candle(["AAPL"], "5m", start)
        async with asyncio.timeout(20):
            quotes = [await streamer.get_event(Quote) for _ in range(4)]
            out["quotes"] = [(q.event_symbol, q.bid_price, q.ask_price) for q in quotes]
            trade = await streamer.get_event(Trade)
            out["trade"] = (trade.event_symbol, trade.price)
            summary = await streamer.get_event(Summary)
            out["summary"] = summary.event_symbol
            greeks = await streamer.get_event(Greeks)
            out["greeks"] = (greeks.event_symbol, float(greeks.delta))
            candle = await streamer.get_event(Candle)
            out["candle"] = (candle.event_symbol, candle.open, candle.close)
    return out


async def test_tastytrade_dxlinkstreamer_works_against_the_local_server() -> None:
    async with trio.open_nursery() as nursery:
        process, url = await start_serve(nursery, "--token", "compat-token")
        try:
            with trio.fail_after(60):
                out = await trio.to_thread.run_sync(asyncio.run, run_tastytrade(url))
        finally:
            process.terminate()
            gc.collect()  # tastytrade's unclosed streams warn now, under this module's filter
    assert {symbol for symbol, _, _ in out["quotes"]} <= {"SPY", "AAPL"}
    assert all(float(bid) < float(ask) for _, bid, ask in out["quotes"])
    assert out["trade"][0] == "SPY"
    assert out["summary"] == "SPY"
    assert out["greeks"][0] == ".SPY270115C500"
    assert 0.0 <= out["greeks"][1] <= 1.0
    assert out["candle"][0].startswith("AAPL{=5m")
