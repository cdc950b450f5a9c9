"""Pool benchmark: events/s delivered through ``open_dxlink_pool`` with 1, 2 and 4 connections.

Run ``python benchmarks/bench_pool.py [--symbols 20000] [--rounds 20]``. The local server runs
in the same process over the in-memory transport, capped at ``symbols / connections``
subscriptions per connection; each round it publishes one Quote per symbol and the consumer
reads all of them (LOSSLESS) before the next round, so the figure is lockstep throughput of
server and client sharing one interpreter: compare the rows with one another, not with
``bench_throughput.py``. Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import math
import time

import trio

from trio_dxlink import Overflow, Quote, open_dxlink_pool
from trio_dxlink.testing import Market, ServerConfig, open_dxlink_server


async def delivered_rate(symbols: list[str], connections: int, rounds: int) -> tuple[float, int]:
    cap = math.ceil(len(symbols) / connections)
    config = ServerConfig(simulate=False, max_subscriptions=cap, queue_size=1_000_000)
    async with (
        open_dxlink_server(config=config, market=Market(seed=1), in_memory=True) as server,
        open_dxlink_pool(
            server.url,
            connector=server.connector(),
            max_subscriptions_per_connection=cap,
            max_connections=connections,
        ) as pool,
        pool.subscribe(Quote, symbols, overflow=Overflow.LOSSLESS, max_buffer=len(symbols)) as rx,
    ):
        await server.wait_for(lambda: len(server.subscriptions("Quote")) == len(symbols))
        quotes = [[Quote(s, bid_price=float(r)) for s in symbols] for r in range(rounds)]
        received = 0
        started = time.perf_counter()
        for batch in quotes:
            server.publish_many(batch)
            goal = received + len(batch)
            async for events in rx.batches():
                received += len(events)
                if received >= goal:
                    break
        elapsed = time.perf_counter() - started
        return received / elapsed, pool.connections


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    symbols = [f".SYM{i:06d}" for i in range(args.symbols)]
    print(f"| connections | events/s ({args.symbols:,} symbols x {args.rounds} rounds) |")
    print("|---|---|")
    for connections in (1, 2, 4):
        rate, opened = trio.run(delivered_rate, symbols, connections, args.rounds)
        print(f"| {opened} | {rate:,.0f} |")


if __name__ == "__main__":
    main()
