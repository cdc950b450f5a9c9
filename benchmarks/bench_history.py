"""How long ``feed.history()`` takes for 8,000 five-minute candles on loopback.

A local server on 127.0.0.1 holds 8,000 recorded ``AAPL{=5m}`` candles. Best of several repeats
(``time.perf_counter``), it measures:

1. ``feed.history(Candle, "AAPL{=5m}", start)``: subscribe on a HISTORY channel, receive and
   decode the snapshot, assemble it (§6.7), filter, withdraw the subscription;
2. the same frames received without a model: a raw ``subscribe(..., from_time=start)`` handle
   read until the event flagged SNAPSHOT_END (receive, parse, decode and route only).

The difference is what the consistent model costs.

Usage: python benchmarks/bench_history.py [--candles N] [--repeats R]
"""

from __future__ import annotations

import argparse
import time

import trio

from trio_dxlink import Candle, open_dxlink
from trio_dxlink.events import index_from_time
from trio_dxlink.testing import Market, ServerConfig, open_dxlink_server

SYMBOL = "AAPL{=5m}"
BAR_MS = 300_000
NOW_S = 1_700_000_000.0


async def run(candles: int, repeats: int) -> None:
    market = Market(seed=1, clock=lambda: NOW_S)
    start = int(NOW_S * 1000) - candles * BAR_MS
    for n in range(candles):
        t = start + n * BAR_MS
        price = 100.0 + (n % 50) / 10
        market.update(
            Candle(SYMBOL, time=t, index=index_from_time(t), close=price, volume=1000.0 + n)
        )
    config = ServerConfig(
        simulate=False, max_snapshot_events=candles + 10, max_events_per_message=500
    )
    model: list[float] = []
    raw: list[float] = []
    async with open_dxlink_server(config=config, market=market) as server:  # noqa: SIM117
        async with open_dxlink(server.url) as feed:
            for _ in range(repeats):
                began = time.perf_counter()
                result = await feed.history(Candle, SYMBOL, start)
                model.append(time.perf_counter() - began)
                assert len(result) == candles, len(result)

                began = time.perf_counter()
                received = 0
                async with feed.subscribe(Candle, [SYMBOL], from_time=start) as rx:
                    async for batch in rx.batches():
                        received += len(batch)
                        if batch[-1].snapshot_end or batch[-1].snapshot_snip:
                            break
                raw.append(time.perf_counter() - began)
                assert received >= candles, received
    best_model, best_raw = min(model), min(raw)
    print(f"{candles:,} five-minute candles over loopback (best of {repeats}):")
    print(f"  history() (subscribe, decode, assemble, withdraw): {best_model * 1e3:8.1f} ms")
    print(f"  the same frames received and parsed, no model:     {best_raw * 1e3:8.1f} ms")
    print(f"  the model costs {best_model / best_raw:.2f}x the bare receive")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--candles", type=int, default=8000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    trio.run(run, args.candles, args.repeats)


if __name__ == "__main__":
    main()
