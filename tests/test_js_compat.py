"""dxFeed's official JavaScript client (@dxfeed/dxlink-api) against the local server.

The client lives in ``tests/js`` (``npm ci --prefix tests/js`` installs it; CI does). It connects
with a token, configures COMPACT data with its own field lists, subscribes to a Quote and to
Candle history, and prints the first event of each. It decodes COMPACT data only by the fields a
FEED_CONFIG announced, so this also checks that the server announces them before the data.
"""

from __future__ import annotations

import functools
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import trio

JS = Path(__file__).parent / "js"
CLI = [sys.executable, "-m", "trio_dxlink"]

pytestmark = pytest.mark.skipif(
    shutil.which("node") is None or not (JS / "node_modules" / "@dxfeed").is_dir(),
    reason="needs node and `npm ci --prefix tests/js`",
)


async def test_dxfeeds_javascript_client_works_against_the_local_server() -> None:
    async with trio.open_nursery() as nursery:
        run = functools.partial(trio.run_process, stdout=subprocess.PIPE, check=False)
        process = await nursery.start(run, [*CLI, "serve", "--token", "js-token"])
        buffer = b""
        with trio.fail_after(30):
            while b"\n" not in buffer:
                chunk = await process.stdout.receive_some()
                assert chunk, "serve exited early"
                buffer += chunk
        url = buffer.split(b"\n", 1)[0].decode().removeprefix("listening on ")
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
