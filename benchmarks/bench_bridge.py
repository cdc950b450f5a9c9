"""Redis bridge benchmark: events/s the bridge publishes into a local Redis, next to
``redis-benchmark``'s XADD rate (one field; unpipelined and 500 per pipeline) on the same
machine (redis-benchmark 7.0 has no ``-t xadd``, so the command is given), and memory while Redis is stopped.

Run ``python benchmarks/bench_bridge.py [--symbols 1000] [--rounds 50] [--batch 500]``. It starts
its own ``redis-server`` on 127.0.0.1 (a free port, nothing saved) and the local DXLink server in
the same process over the in-memory transport; each round publishes one Quote per symbol, and
the figure is events published to Redis per second, from the first publish until the bridge's
``published`` counter reaches the total. Then it stops Redis, publishes ``--down-events`` more
and prints the process's RSS growth and the bridge's ``pending`` / ``dropped`` (bounded by
``--max-pending``). Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import shutil
import socket
import subprocess
import tempfile
import time

import psutil
import trio
import trio.lowlevel

from trio_dxlink import Overflow, Quote, open_dxlink, run_bridge
from trio_dxlink.testing import Market, ServerConfig, open_dxlink_server


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_redis(port: int, directory: str) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", directory],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    for _ in range(500):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                if sock.recv(16).startswith(b"+PONG"):
                    return process
        except OSError:
            time.sleep(0.01)
    raise RuntimeError("redis-server did not start")


async def bridge_rate(args: argparse.Namespace, port: int, redis: subprocess.Popen[bytes]) -> None:
    symbols = [f"SYM{i}" for i in range(args.symbols)]
    url = f"redis://127.0.0.1:{port}"
    config = ServerConfig(simulate=False, queue_size=1_000_000)
    async with (
        open_dxlink_server(config=config, market=Market(seed=1), in_memory=True) as server,
        open_dxlink(server.url, connector=server.connector()) as feed,
        feed.subscribe(Quote, symbols, overflow=Overflow.LOSSLESS, max_buffer=10**7) as direct,
        trio.open_nursery() as nursery,
    ):
        bridge = await nursery.start(
            lambda task_status: run_bridge(
                feed, Quote, symbols, url, batch=args.batch, max_pending=args.max_pending,
                maxlen=1_000_000, backoff=(0.05, 0.5), task_status=task_status,
            )
        )  # fmt: skip
        await server.wait_for(lambda: len(server.subscriptions("Quote")) == len(symbols))
        total = args.symbols * args.rounds
        started = time.perf_counter()
        for r in range(args.rounds):
            server.publish_many(Quote(s, bid_price=float(r)) for s in symbols)
            await trio.lowlevel.checkpoint()
        while bridge.statistics().published + bridge.statistics().dropped < total:  # noqa: ASYNC110
            await trio.sleep(0.001)
        elapsed = time.perf_counter() - started
        stats = bridge.statistics()
        print(f"bridge -> Redis: {stats.published / elapsed:12,.0f} events/s"
              f"  ({stats.published:,} published in {elapsed:.2f} s, {stats.batches:,} pipelines"
              f" of <= {args.batch}, {stats.dropped} dropped)")  # fmt: skip

        redis.terminate()
        redis.wait()
        process = psutil.Process()
        rss = process.memory_info().rss
        for r in range(args.down_events // args.symbols):
            server.publish_many(Quote(s, bid_price=float(r)) for s in symbols)
            await trio.lowlevel.checkpoint()
        while (
            direct.statistics().received < total + args.down_events // args.symbols * args.symbols
        ):
            await direct.receive_batch()
        await trio.sleep(0.5)
        grown = (process.memory_info().rss - rss) / 2**20
        stats = bridge.statistics()
        print(f"Redis stopped: {args.down_events:,} more events -> RSS +{grown:.1f} MiB,"
              f" pending {stats.pending:,} (max_pending {args.max_pending:,}),"
              f" dropped {stats.dropped:,}, reconnect attempts {stats.reconnects}")  # fmt: skip
        nursery.cancel_scope.cancel()


def redis_benchmark(port: int, n: int) -> None:
    if shutil.which("redis-benchmark") is None:
        print("redis-benchmark: not installed")
        return
    for pipeline in (1, 500):
        out = subprocess.run(
            ["redis-benchmark", "-p", str(port), "-n", str(n), "-q", "-P", str(pipeline),
             "XADD", "bench", "MAXLEN", "~", "1000000", "*", "f", "v"],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        line = out.strip().splitlines()[-1].split("\r")[-1]
        print(f"redis-benchmark XADD -P {pipeline:<3}: {line.split(':', 1)[-1].strip()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--max-pending", type=int, default=100_000)
    parser.add_argument("--down-events", type=int, default=200_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        port = free_port()
        redis = start_redis(port, directory)
        try:
            redis_benchmark(port, args.symbols * args.rounds)
        finally:
            redis.terminate()
            redis.wait()
        redis = start_redis(port, directory)
        try:
            trio.run(bridge_rate, args, port, redis)
        finally:
            redis.terminate()
            redis.wait()


if __name__ == "__main__":
    main()
