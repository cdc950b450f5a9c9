"""dxFeed's official JavaScript client (@dxfeed/dxlink-api) against the local server: its feed,
and its depth-of-market client (DXLinkDepthOfMarket, the @dxfeed/dxlink-dom package it bundles).

The client lives in ``tests/js`` (``npm ci --prefix tests/js`` installs it; CI does). It connects
with a token, configures COMPACT data with its own field lists, subscribes to a Quote and to
Candle history, and prints the quotes and the whole candle snapshot it got. It decodes COMPACT
data only by the fields a FEED_CONFIG announced, so this also checks that the server announces
them before the data. The same script is pointed at ``serve --replay`` of a recording.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

from trio_dxlink import Candle, EventFlag, Overflow, Quote, open_dxlink
from trio_dxlink.testing import ServerConfig, open_dxlink_server

from .conftest import NOW, pinned_market, start_serve, until
from .fixtures.make_recordings import BAR, candle_bars
from .test_serve_replay import full_quote

JS = Path(__file__).parent / "js"

pytestmark = pytest.mark.skipif(
    shutil.which("node") is None or not (JS / "node_modules" / "@dxfeed").is_dir(),
    reason="needs node and `npm ci --prefix tests/js`",
)


async def _run_js_client(serve_flags: list[str], *js_args: str) -> dict[str, Any]:
    """``serve SERVE_FLAGS`` on loopback, ``dxlink_js_client.js URL JS_ARGS`` against it; what the
    script printed."""
    async with trio.open_nursery() as nursery:
        process, url = await start_serve(nursery, *serve_flags)
        try:
            with trio.fail_after(60):
                result = await trio.run_process(
                    ["node", str(JS / "dxlink_js_client.js"), url, *js_args],
                    capture_stdout=True,
                    capture_stderr=True,
                    check=False,
                )
        finally:
            process.terminate()
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    seen: dict[str, Any] = json.loads(result.stdout)
    return seen


async def test_dxfeeds_javascript_client_works_against_the_local_server() -> None:
    seen = await _run_js_client(["--token", "js-token"], "js-token")
    quote, candle = seen["Quote"], seen["Candle"]
    assert quote["eventSymbol"] == "SPY"
    assert quote["bidPrice"] < quote["askPrice"]
    assert candle["eventSymbol"] == "AAPL{=5m}"
    assert candle["eventFlags"] & 0x04  # the history snapshot starts with SNAPSHOT_BEGIN
    assert candle["low"] <= candle["open"] <= candle["high"]


async def test_dxfeeds_javascript_dom_client_works_against_the_local_server() -> None:
    async with trio.open_nursery() as nursery:
        process, url = await start_serve(nursery, "--token", "js-token")
        try:
            with trio.fail_after(60):
                result = await trio.run_process(
                    ["node", str(JS / "dxlink_js_dom.js"), url, "js-token"],
                    capture_stdout=True,
                    capture_stderr=True,
                    check=False,
                )
        finally:
            process.terminate()
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    seen = json.loads(result.stdout)
    assert seen["config"] == {
        "aggregationPeriod": 0.5,
        "depthLimit": 5,
        "dataFormat": "FULL",
        "orderFields": ["price", "size"],
    }
    bids, asks = seen["bids"], seen["asks"]
    assert 0 < len(bids) <= 5
    assert 0 < len(asks) <= 5
    assert [b["price"] for b in bids] == sorted((b["price"] for b in bids), reverse=True)
    assert [a["price"] for a in asks] == sorted(a["price"] for a in asks)
    assert bids[0]["price"] < asks[0]["price"]
    assert all(level["size"] > 0 for level in bids + asks)
    assert seen["time"] > 1_600_000_000_000


CANDLE = "AAPL{=5m}"
FROM_TIME = (int(NOW * 1000) // BAR - 6) * BAR


async def _record_quotes_and_candles(path: Path) -> tuple[list[Quote], list[Candle]]:
    """A session recorded with the library's client: SPY quotes, and CANDLE history from
    FROM_TIME (six bars published before the subscription, then a live update of the last one);
    the quotes and the history snapshot the client received."""
    bars = candle_bars(CANDLE, FROM_TIME)
    async with (
        open_dxlink_server(
            config=ServerConfig(simulate=False), market=pinned_market(), in_memory=True
        ) as server,
        open_dxlink(server.url, connector=server.connector(), record=path) as feed,
        feed.subscribe(Quote, ["SPY"], overflow=Overflow.LOSSLESS) as quotes_rx,
    ):
        server.publish(*bars)
        async with feed.subscribe(
            Candle, [CANDLE], from_time=FROM_TIME, overflow=Overflow.LOSSLESS
        ) as candles_rx:
            candles: list[Candle] = []
            while not candles or not candles[-1].event_flags & EventFlag.SNAPSHOT_END:
                candle = await candles_rx.receive()
                assert isinstance(candle, Candle)
                candles.append(candle)
            await until(server, lambda: ("Quote", "SPY") in server.subscriptions())
            quotes: list[Quote] = []
            for i in range(3):
                server.publish(full_quote("SPY", 500.0 + i))
                quote = await quotes_rx.receive()
                assert isinstance(quote, Quote)
                quotes.append(quote)
            server.publish(attrs.evolve(bars[-1], close=107.25))
            update = await candles_rx.receive()
            assert isinstance(update, Candle)
            assert update.close == 107.25
    return quotes, candles


async def test_dxfeeds_javascript_client_receives_a_recording_from_serve_replay(
    tmp_path: Path,
) -> None:
    path = tmp_path / "session.dxrec"
    quotes, snapshot = await _record_quotes_and_candles(path)
    assert len(snapshot) == 6  # newest first, SNAPSHOT_BEGIN on the first, END on the last

    seen = await _run_js_client(
        ["--replay", str(path), "--speed", "20"],
        *("--quotes", str(len(quotes)), "--candle", CANDLE, "--from-time", str(FROM_TIME)),
    )

    # The quotes, played in recorded time, with the recorded values.
    assert [
        (q["eventSymbol"], q["bidPrice"], q["askPrice"], q["bidSize"], q["askSize"])
        for q in seen["Quotes"]
    ] == [(q.event_symbol, q.bid_price, q.ask_price, q.bid_size, q.ask_size) for q in quotes]
    # The candle history is answered from the recorded snapshot (not an empty one, and not
    # the live update played later): the same bars, flags and order as the live client got.
    assert [
        (c["eventSymbol"], c["time"], c["open"], c["high"], c["low"], c["close"], c["eventFlags"])
        for c in seen["Candles"]
    ] == [(c.event_symbol, c.time, c.open, c.high, c.low, c.close, c.event_flags) for c in snapshot]
