"""How fast COMPACT FEED_DATA becomes events, next to the cost of parsing the JSON alone.

Builds realistic COMPACT Quote FEED_DATA frames (500 events each) and measures, best of several
repeats with ``time.perf_counter``:

1. ``orjson.loads`` alone over the frames (the floor: nothing can decode faster than parsing);
2. full decoding through ``ClientConnection.receive_message`` on an authorized connection with an
   open channel (envelope checks, dispatch, compiled row decoder, statistics);
3. ``orjson.loads`` followed by the bare compiled row decoder (``compile_row_decoder``: the C
   one when trio_dxlink's speedups are built);
4. the same with the pure-Python row decoder (what runs without the speedups).

It prints events/s for each and the connection's throughput as a percentage of loads-only
throughput; the target is at least 35 %.

Usage: python benchmarks/bench_decode.py [--frames N] [--repeats R]
"""

from __future__ import annotations

import argparse
import gc
import random
import time
from collections.abc import Callable
from typing import Any

import orjson

from trio_dxlink._accel import speedups
from trio_dxlink._codec import _py_row_decoder, compile_row_decoder
from trio_dxlink._connection import ClientConnection, FeedEvents
from trio_dxlink._messages import SubscriptionEntry
from trio_dxlink.events import Quote

EVENTS_PER_FRAME = 500
TARGET_PERCENT = 35.0
CHANNEL = 1
LAYOUT = ("eventType", *Quote.wire_fields())
EXCHANGES = ["Q", "Z", "K", "P", "N", "V", "X", "\u0000"]


def make_symbols(rng: random.Random, n: int) -> list[str]:
    """A mix of equities, SPX weekly options, futures and crypto, like a real watch list."""
    equities = ["AAPL", "MSFT", "SPY", "QQQ", "TSLA", "NVDA", "AMZN", "META", "IWM", "GOOG"]
    symbols = list(equities)
    while len(symbols) < n:
        kind = rng.random()
        if kind < 0.7:
            strike = rng.randrange(4000, 6000, 5)
            half = ".5" if rng.random() < 0.2 else ""
            symbols.append(f".SPXW{rng.randint(240101, 241231)}{rng.choice('CP')}{strike}{half}")
        elif kind < 0.9:
            symbols.append(
                f"/{rng.choice(['ES', 'NQ', 'CL', 'GC'])}{rng.choice('HMUZ')}{rng.randint(24, 27)}:XCME"
            )
        else:
            symbols.append(f"{rng.choice(['BTC', 'ETH', 'SOL'])}/USD:CXTALP")
    return symbols[:n]


def make_frame(rng: random.Random, symbols: list[str], now_ms: int, nan_sizes: bool) -> str:
    values: list[Any] = []
    for i in range(EVENTS_PER_FRAME):
        symbol = symbols[i % len(symbols)]
        mid = round(rng.uniform(1.0, 6000.0), 2)
        spread = round(rng.choice([0.01, 0.05, 0.1, 0.25]), 2)
        bid_time = now_ms - rng.randint(0, 5000)
        ask_time = now_ms - rng.randint(0, 5000)
        bid_size: Any
        ask_size: Any
        if nan_sizes and i % 3 == 0:  # index-like symbols report no sizes
            bid_size = ask_size = "NaN"
        else:
            bid_size = float(rng.randint(1, 50) * 100)
            ask_size = float(rng.randint(1, 50) * 100)
        values += [
            "Quote",
            symbol,
            0,  # eventTime, usually 0 in practice
            rng.randint(0, 2**22 - 1),  # sequence
            rng.randint(0, 999_999),  # timeNanoPart
            bid_time,
            rng.choice(EXCHANGES),
            round(mid - spread / 2, 3),
            bid_size,
            ask_time,
            rng.choice(EXCHANGES),
            round(mid + spread / 2, 3),
            ask_size,
        ]
    return orjson.dumps(
        {"type": "FEED_DATA", "channel": CHANNEL, "data": ["Quote", values]}
    ).decode()


def make_frames(n: int, seed: int = 20240722) -> list[str]:
    rng = random.Random(seed)
    symbols = make_symbols(rng, 2000)
    now_ms = 1_721_650_000_000
    # a minority of frames (1 in 5) carry "NaN" sizes
    return [make_frame(rng, symbols, now_ms + k * 100, nan_sizes=k % 5 == 4) for k in range(n)]


def authorized_connection() -> ClientConnection:
    """A connection through the handshake with channel 1 open and COMPACT Quote configured."""
    conn = ClientConnection(None)
    conn.start(0.0)
    conn.receive_message(
        '{"type":"SETUP","channel":0,"version":"bench","keepaliveTimeout":60}', 0.0
    )
    conn.receive_message('{"type":"AUTH_STATE","channel":0,"state":"AUTHORIZED"}', 0.0)
    cid = conn.open_channel(accept_aggregation_period=0.1)
    assert cid == CHANNEL
    conn.subscribe(cid, [SubscriptionEntry("Quote", "*")], fields={"Quote": LAYOUT})
    conn.receive_message(
        '{"type":"CHANNEL_OPENED","channel":1,"service":"FEED","parameters":{"contract":"AUTO"}}',
        0.0,
    )
    conn.receive_message(
        orjson.dumps(
            {
                "type": "FEED_CONFIG",
                "channel": cid,
                "dataFormat": "COMPACT",
                "aggregationPeriod": 0.1,
                "eventFields": {"Quote": list(LAYOUT)},
            }
        ).decode(),
        0.0,
    )
    conn.data_to_send(0.0)
    return conn


def best_of(
    repeats: int, run: Callable[[Any], int], setup: Callable[[], Any] = lambda: None
) -> tuple[float, int]:
    """The best wall time of ``repeats`` runs (``setup`` not timed), and the event count the
    last run reported."""
    best = float("inf")
    count = 0
    for _ in range(repeats):
        state = setup()
        gc.collect()
        start = time.perf_counter()
        count = run(state)
        best = min(best, time.perf_counter() - start)
    return best, count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--frames", type=int, default=200, help="FEED_DATA frames (500 Quotes each)"
    )
    parser.add_argument("--repeats", type=int, default=5, help="take the best of this many runs")
    args = parser.parse_args()
    if args.frames < 1 or args.repeats < 1:
        parser.error("--frames and --repeats must be at least 1")

    frames = make_frames(args.frames)
    total = len(frames) * EVENTS_PER_FRAME
    megabytes = sum(len(f) for f in frames) / 1e6
    decoder = compile_row_decoder(Quote, LAYOUT)

    def loads_only(_: None) -> int:
        n = 0
        for frame in frames:
            n += len(orjson.loads(frame)["data"][1])
        return n // len(LAYOUT)

    def through_connection(conn: ClientConnection) -> int:
        n = 0
        for frame in frames:
            for item in conn.receive_message(frame, 1.0):
                assert isinstance(item, FeedEvents)
                n += len(item.events)
        assert conn.statistics.events_received == n
        return n

    def loads_and_decoder(_: None) -> int:
        n = 0
        for frame in frames:
            n += len(decoder(orjson.loads(frame)["data"][1]))
        return n

    py_decoder = _py_row_decoder(Quote, LAYOUT)

    def loads_and_py_decoder(_: None) -> int:
        n = 0
        for frame in frames:
            n += len(py_decoder(orjson.loads(frame)["data"][1]))
        return n

    # sanity: every path sees every event, and the decoded values are right
    sample = decoder(orjson.loads(frames[0])["data"][1])[0]
    expected = orjson.loads(frames[0])["data"][1][: len(LAYOUT)]
    assert isinstance(sample, Quote)
    assert (sample.event_symbol, sample.bid_price, sample.ask_price) == (
        expected[1],
        expected[7],
        expected[11],
    )

    print(
        f"{len(frames)} COMPACT Quote FEED_DATA frames x {EVENTS_PER_FRAME} events = {total:,} events"
        f" ({megabytes:.1f} MB of JSON); best of {args.repeats} runs; C speedups "
        + ("on" if speedups is not None else "off (pure Python everywhere)")
    )
    results = {}
    no_setup: Callable[[], Any] = lambda: None  # noqa: E731
    runs: list[tuple[str, Callable[[Any], int], Callable[[], Any]]] = [
        ("orjson.loads only", loads_only, no_setup),
        ("ClientConnection.receive_message", through_connection, authorized_connection),
        ("orjson.loads + compile_row_decoder", loads_and_decoder, no_setup),
        ("orjson.loads + pure-Python decoder", loads_and_py_decoder, no_setup),
    ]
    for label, run, setup in runs:
        seconds, count = best_of(args.repeats, run, setup)
        assert count == total, (label, count, total)
        rate = total / seconds
        results[label] = rate
        print(
            f"  {label:<36} {rate:>14,.0f} events/s  ({seconds * 1e3:8.1f} ms, {seconds / total * 1e9:6.0f} ns/event)"
        )

    loads_rate = results["orjson.loads only"]
    conn_pct = 100.0 * results["ClientConnection.receive_message"] / loads_rate
    bare_pct = 100.0 * results["orjson.loads + compile_row_decoder"] / loads_rate
    verdict = "meets" if conn_pct >= TARGET_PERCENT else "BELOW"
    print(
        f"decode/loads-only: {conn_pct:.1f}% through ClientConnection ({verdict} the target of"
        f" >= {TARGET_PERCENT:.0f}%), {bare_pct:.1f}% through the bare row decoder"
    )


if __name__ == "__main__":
    main()
