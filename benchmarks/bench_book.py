"""How many order events per second an order book applies: 5 sources, views 10 levels deep.

Builds a realistic stream for one symbol: each of 5 sources starts with a snapshot of 200
orders around a mid price, then gets live updates (new orders, size changes, price moves,
removals by REMOVE_EVENT and by size 0), a fifth of them inside transactions of 2-6 events.
Measures, best of several repeats with ``time.perf_counter``:

1. events applied per second by :meth:`trio_dxlink.OrderBook.feed`, fed in batches as a
   connection hands them over (``--batch`` events);
2. the same with a 10-level view built after every batch (what a reader that never falls behind
   costs; a slower reader costs less, since views are built only when asked for).

Usage: python benchmarks/bench_book.py [--events N] [--batch B] [--repeats R]
"""

from __future__ import annotations

import argparse
import gc
import random
import time

import attrs

from trio_dxlink import Order, OrderBook
from trio_dxlink.events import EventFlag

SOURCES = ["NTV", "GLBX", "BZX", "ntv", "ICE"]
DEPTH = 10
SNAPSHOT_ORDERS = 200
TX = int(EventFlag.TX_PENDING)
REMOVE = int(EventFlag.REMOVE_EVENT)
BEGIN = int(EventFlag.SNAPSHOT_BEGIN)
END = int(EventFlag.SNAPSHOT_END)


def make_stream(events: int, seed: int = 1) -> list[Order]:
    """Snapshots of every source, then ``events`` live updates spread over the sources."""
    rng = random.Random(seed)
    mid = 100.0
    live: dict[str, dict[int, tuple[str, float]]] = {s: {} for s in SOURCES}
    next_index = dict.fromkeys(SOURCES, 1)
    out: list[Order] = []

    def new_order(source: str, flags: int = 0) -> Order:
        side = rng.choice(("BUY", "SELL"))
        ticks = rng.randint(1, 30)
        price = round(mid - ticks * 0.01 if side == "BUY" else mid + ticks * 0.01, 2)
        index = next_index[source]
        next_index[source] += 1
        live[source][index] = (side, price)
        return Order("AAPL", event_flags=flags, index=index, source=source, order_side=side,
                     price=price, size=float(rng.randint(1, 50) * 100))  # fmt: skip

    for source in SOURCES:
        snapshot = [new_order(source) for _ in range(SNAPSHOT_ORDERS)]
        snapshot[0] = attrs.evolve(snapshot[0], event_flags=BEGIN)
        snapshot[-1] = attrs.evolve(snapshot[-1], event_flags=END)
        out += snapshot

    while len(out) < events + len(SOURCES) * SNAPSHOT_ORDERS:
        source = rng.choice(SOURCES)
        run = rng.randint(2, 6) if rng.random() < 0.2 else 1
        for n in range(run):
            flags = TX if n < run - 1 else 0
            orders = live[source]
            what = rng.random()
            if what < 0.4 or len(orders) < 20:
                out.append(new_order(source, flags))
                continue
            index = rng.choice(list(orders))
            side, price = orders[index]
            if what < 0.7:  # a size change
                out.append(Order("AAPL", event_flags=flags, index=index, source=source,
                                 order_side=side, price=price,
                                 size=float(rng.randint(1, 50) * 100)))  # fmt: skip
            else:  # removed, by flag or by size 0
                del orders[index]
                gone = flags | REMOVE if what < 0.85 else flags
                out.append(Order("AAPL", event_flags=gone, index=index, source=source,
                                 order_side=side, price=price, size=0.0))  # fmt: skip
    return out


def run(stream: list[Order], batch: int, with_views: bool) -> float:
    """Seconds to apply ``stream`` to a fresh book (and build a view after each batch)."""
    book = OrderBook(Order, "AAPL", SOURCES)
    batches = [stream[i : i + batch] for i in range(0, len(stream), batch)]
    gc.collect()
    start = time.perf_counter()
    for piece in batches:
        book.feed(piece)
        if with_views:
            book.view(DEPTH)
    elapsed = time.perf_counter() - start
    view = book.view(DEPTH)
    if len(view.bids) < DEPTH or len(view.asks) < DEPTH:
        raise SystemExit("the book should be at least 10 levels deep on each side")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000, help="live updates after snapshots")
    parser.add_argument("--batch", type=int, default=50, help="events per feed() call")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    stream = make_stream(args.events)
    print(f"{len(stream):,} order events ({len(SOURCES)} sources, {DEPTH}-level views),"
          f" batches of {args.batch}")  # fmt: skip
    for label, with_views in (("applied", False), ("applied + a view per batch", True)):
        best = min(run(stream, args.batch, with_views) for _ in range(args.repeats))
        print(f"{label:>28}: {len(stream) / best:>12,.0f} events/s")


if __name__ == "__main__":
    main()
