"""Recording and replay: what recording costs the delivered rate, and how fast a replay decodes.

Run ``python benchmarks/bench_record.py [--seconds 5] [--rounds 3]``. A ``blast_server.py``
process streams COMPACT Quote frames of 500 events as fast as the client takes them; the client
(``open_dxlink`` + a LOSSLESS handle consumed with ``rx.batches()``) runs in this process:

* **live**: events/s delivered with recording off, on (plain NDJSON) and on (zstd), the median
  of ``--rounds`` interleaved runs of ``--seconds`` each, and the cost of recording against the
  target of at most 10%; also this process's CPU time per delivered event (all its threads,
  the recorder's writer included), which other jobs on a shared machine disturb less;
* **replay**: the zstd recording of the last round played back with ``Replay(path)`` (as fast as
  possible) through ``open_dxlink``: events/s, against the live decode rate.

Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import trio

from trio_dxlink import Overflow, Quote, Replay, open_dxlink, open_recorder

HERE = Path(__file__).resolve().parent
SYMBOLS = [f"S{i}" for i in range(500)]


async def _live(url: str, seconds: float, record: Path | None) -> tuple[float, float]:
    """Events/s delivered, and CPU ns per delivered event."""
    count = 0
    async with (
        open_recorder(record) if record is not None else _nothing() as recorder,
        open_dxlink(url, "t", record=recorder) as feed,
        feed.subscribe(Quote, SYMBOLS, overflow=Overflow.LOSSLESS, max_buffer=2**22) as rx,
    ):
        started = time.perf_counter()
        cpu = time.process_time()
        with trio.move_on_after(seconds):
            async for batch in rx.batches():
                count += len(batch)
        elapsed = time.perf_counter() - started
        cpu = time.process_time() - cpu
        if recorder is not None and recorder.statistics().dropped:
            print(f"  ({recorder.statistics().dropped} frames dropped by the recorder)")
    return count / elapsed, cpu / count * 1e9


class _nothing:
    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, *exc: object) -> None:
        return None


async def _replay(path: Path) -> tuple[float, int]:
    count = 0
    with Replay(path) as replay:
        async with (
            open_dxlink(replay.url, replay.token, connector=replay.connector()) as feed,
            feed.subscribe(Quote, SYMBOLS, overflow=Overflow.LOSSLESS, max_buffer=2**24) as rx,
        ):
            started = time.perf_counter()
            async with trio.open_nursery() as nursery:

                async def consume() -> None:
                    nonlocal count
                    async for batch in rx.batches():
                        count += len(batch)

                nursery.start_soon(consume)
                await replay.finished.wait()
                nursery.cancel_scope.cancel()
            count += rx.statistics().buffered  # decoded, not yet consumed
            elapsed = time.perf_counter() - started
    return count / elapsed, count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    server = subprocess.Popen(
        [sys.executable, str(HERE / "blast_server.py"), "--port", "0", "--mode", "throughput"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        url = server.stdout.readline().split()[-1]
        rates: dict[str, list[float]] = {"off": [], "ndjson": [], "zstd": []}
        cpu: dict[str, list[float]] = {"off": [], "ndjson": [], "zstd": []}
        with tempfile.TemporaryDirectory() as tmp:
            paths = {
                "off": None,
                "ndjson": Path(tmp) / "r.dxrec",
                "zstd": Path(tmp) / "r.dxrec.zst",
            }
            for _ in range(args.rounds):
                for name, path in paths.items():
                    rate, ns = trio.run(_live, url, args.seconds, path)
                    rates[name].append(rate)
                    cpu[name].append(ns)
            print("## Recording and replay\n")
            print(
                "| recording | delivered events/s (median) | cost | CPU ns/event (median) | cost |"
            )
            print("|---|---:|---:|---:|---:|")
            base = statistics.median(rates["off"])
            base_cpu = statistics.median(cpu["off"])
            for name, values in rates.items():
                rate = statistics.median(values)
                ns = statistics.median(cpu[name])
                cost = "" if name == "off" else f"{(1 - rate / base) * 100:.1f}%"
                cpu_cost = "" if name == "off" else f"{(ns / base_cpu - 1) * 100:.1f}%"
                print(f"| {name} | {rate:,.0f} | {cost} | {ns:,.0f} | {cpu_cost} |")
            worst = max(1 - statistics.median(rates[n]) / base for n in ("ndjson", "zstd"))
            print(f"\nTarget: recording costs at most 10%: {'met' if worst <= 0.10 else 'NOT met'}")
            zstd = paths["zstd"]
            assert zstd is not None
            size = zstd.stat().st_size
            replay_rate, count = trio.run(_replay, zstd)
            print(
                f"\nReplay (zstd, {size / 1e6:.1f} MB, {count:,} events) as fast as possible: "
                f"{replay_rate:,.0f} events/s = {replay_rate / base:.2f}x the live decode rate"
            )
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
