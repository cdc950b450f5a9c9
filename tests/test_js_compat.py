"""dxFeed's official JavaScript client (@dxfeed/dxlink-api) against the local server: its feed,
and its depth-of-market client (DXLinkDepthOfMarket, the @dxfeed/dxlink-dom package it bundles).

The client lives in ``tests/js`` (``npm ci --prefix tests/js`` installs it; CI does). It connects
with a token, configures COMPACT data with its own field lists, subscribes to a Quote and to
Candle history, and prints the first event of each. It decodes COMPACT data only by the fields a
FEED_CONFIG announced, so this also checks that the server announces them before the data.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import trio

from .conftest import start_serve

JS = Path(__file__).parent / "js"

pytestmark = pytest.mark.skipif(
    shutil.which("node") is None or not (JS / "node_modules" / "@dxfeed").is_dir(),
    reason="needs node and `npm ci --prefix tests/js`",
)


async def test_dxfeeds_javascript_client_works_against_the_local_server() -> None:
    async with trio.open_nursery() as nursery:
        process, url = await start_serve(nursery, "--token", "js-token")
        try:
            with trio.fail_after(60):
                result = await trio.run_process(
                    ["node", str(JS / "dxlink_js_client.js"), url, "js-token"],
                    capture_stdout=True,
                    capture_stderr=True,
                    check=False,
                )
        finally:
            process.terminate()
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    seen = json.loads(result.stdout)
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
