"""End-to-end benchmarks of trio_dxlink against a local blast server: throughput, latency, memory.

Run ``python benchmarks/bench_throughput.py`` (everything, about 4 minutes) or ``--quick``
(short versions, the default transport only, about 30 s); ``--throughput``, ``--latency`` and ``--memory`` pick sections. The
output is a Markdown "Performance" section for the README. Figures are printed, never asserted:
each target is shown next to its figure with whether it was met.

Every measurement runs in a fresh child process (this script with ``--child ROLE``) against a
``benchmarks/blast_server.py`` process, so one client's imports, heap and garbage never pollute
another's figures, and the server never competes with the client for the interpreter.

* **Throughput.** The server streams COMPACT Quote frames of 500 events as fast as the client
  takes them. Measured, in events/s delivered to a consumer over ``--seconds``, after a
  warm-up, the median of ``--rounds`` interleaved runs, for each transport:

  - the *ceiling*: the WebSocket library configured as trio_dxlink's connector configures it,
    the handshake by hand and ``orjson.loads`` of every frame, counting
    ``len(data[1]) // width`` events: what any client on that transport could reach before
    decoding a single event;
  - trio_dxlink: ``open_dxlink`` + ``feed.subscribe(Quote, ..., overflow=LOSSLESS)``, consumed
    with ``async for q in rx`` and with ``rx.batches()``.

  The transports: trio-websocket as trio_dxlink's default connector sets it up (it reads the
  socket 64 KiB at a time); the same with trio-websocket's own default of 4 KiB reads; and
  ``websockets`` through trio_dxlink's ``websockets_connector`` when both are available.

  Then tastytrade's ``DXLinkStreamer`` (optional: ``pip install 'tastytrade>=13,<14'``; skipped
  when it is not installed), driven by a stand-in session that hands it the local URL and a
  token, with no network call, consumed with ``streamer.listen(Quote)``. Two figures: what
  ``listen()`` delivered, and what its reader decoded (delivered + still queued), the best any
  tastytrade consumer could get; the ratios use the latter.

* **Latency.** The server sends a steady ``--rate`` (20,000) events/s, stamping each event's
  ``eventTime`` with ``time.time_ns()`` at the send; the consumer computes
  ``time.time_ns() - event_time`` for every event it receives (same machine, same clock).

* **Memory.** (i) peak RSS of a trio_dxlink client subscribed to 25,000 option symbols (default
  overflow policy) while the server streams data for all of them; (ii) for each overflow
  policy, a consumer that reads normally for a moment and then stalls (reads nothing) for
  ``--stall`` seconds while the server blasts: RSS before/after and the handle's statistics.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import orjson
import psutil
import trio
import trio_websocket

import trio_dxlink
import trio_dxlink._accel
import trio_dxlink._transport
from trio_dxlink import (
    Connector,
    DXLinkFeed,
    Overflow,
    Quote,
    SlowConsumerError,
    Subscription,
    open_dxlink,
    websocket_connector,
)
from trio_dxlink._subscription import DEFAULT_MAX_BUFFER

resource: Any
try:
    import resource
except ImportError:  # Windows
    resource = None

HERE = Path(__file__).resolve().parent
SERVER = HERE / "blast_server.py"
MiB = 1024 * 1024
MAX_MESSAGE_SIZE = 64 * MiB
"""What trio_dxlink's default connector allows; the ceiling client uses the same."""
QUEUE_SIZE = 16
"""trio_dxlink's default connector's ``message_queue_size``; the ceiling client uses the same."""
BIG_READ = 64 * 1024  # what trio_dxlink's default connector reads
SMALL_READ = 4 * 1024  # trio-websocket's own default
WIDTH = len(Quote.wire_fields())
EVENT_TIME = Quote.wire_fields().index("eventTime")

TARGET_CEILING = 0.60
TARGET_TASTYTRADE = 15.0
TARGET_P99_MS = 5.0
TARGET_GROWTH_MB = 20.0
STARVED = 0.85
"""A CPU-bound client with less than this share of a core was competing with other load."""


# --- shared helpers ---


def option_symbols(n: int) -> list[str]:
    """``n`` distinct, plausible option symbols (``.SPXW260116C5000``)."""
    roots = ["SPXW", "SPY", "QQQ", "IWM", "AAPL", "TSLA", "NVDA", "AMZN"]
    out = []
    for i in range(n):
        root, rest = roots[i % len(roots)], i // len(roots)
        strike = 100 + 5 * (rest % 400)
        side = "CP"[(rest // 400) % 2]
        month, day = 1 + (rest // 800) % 12, 1 + (rest // 9600) % 28
        out.append(f".{root}26{month:02d}{day:02d}{side}{strike}")
    return out


def rss() -> int:
    """This process's resident set size, in bytes."""
    return int(psutil.Process().memory_info().rss)


def peak_rss() -> int:
    """This process's peak resident set size, in bytes."""
    if resource is None:  # no getrusage (Windows): the current RSS is the best there is
        return rss()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


class CpuMeter:
    """CPU utilisation of this process and of the server over a window (1.0 = one core)."""

    def __init__(self, server_pid: int | None) -> None:
        self.me = psutil.Process()
        self.server = psutil.Process(server_pid) if server_pid else None

    @staticmethod
    def _busy(proc: psutil.Process | None) -> float:
        if proc is None:
            return 0.0
        t = proc.cpu_times()
        return float(t.user + t.system)

    def start(self) -> None:
        self.t0 = time.perf_counter()
        self.c0, self.s0 = self._busy(self.me), self._busy(self.server)

    def stop(self) -> dict[str, float]:
        dt = time.perf_counter() - self.t0
        return {
            "client_cpu": (self._busy(self.me) - self.c0) / dt,
            "server_cpu": (self._busy(self.server) - self.s0) / dt,
        }


def percentiles(values: list[int]) -> dict[str, float]:
    """p50/p90/p99/p99.9/max of nanosecond values, in milliseconds."""
    xs = sorted(values)
    if not xs:
        return {}

    def at(q: float) -> float:
        return xs[min(len(xs) - 1, int(q * len(xs)))] / 1e6

    return {"p50": at(0.5), "p90": at(0.9), "p99": at(0.99), "p999": at(0.999), "max": xs[-1] / 1e6}


async def measure(
    count: Callable[[], int],
    args: argparse.Namespace,
    *,
    sleep: Callable[[float], Awaitable[Any]],
    warmup_only: bool = False,
    after_warmup: bool = False,
) -> dict[str, Any]:
    """Wait for the first event and a warm-up, then count events over ``args.seconds``.

    ``warmup_only`` returns after the warm-up; ``after_warmup`` skips it (for callers that take
    their own readings in between).
    """
    if not after_warmup:
        deadline = time.perf_counter() + 30
        while count() == 0:
            if time.perf_counter() > deadline:
                raise RuntimeError("no events within 30 s")
            await sleep(0.01)
        await sleep(args.warmup)
        if warmup_only:
            return {}
    cpu = CpuMeter(args.server_pid)
    n0, t0 = count(), time.perf_counter()
    cpu.start()
    await sleep(args.seconds)
    n1, t1 = count(), time.perf_counter()
    return {"events": n1 - n0, "elapsed": t1 - t0, "rate": (n1 - n0) / (t1 - t0), **cpu.stop()}


def find_websockets_connector() -> Callable[..., Connector] | None:
    """trio_dxlink's connector over the ``websockets`` library, if this version has one and
    ``websockets`` (with its trio implementation) is installed."""
    factory = getattr(trio_dxlink, "websockets_connector", None) or getattr(
        trio_dxlink._transport, "websockets_connector", None
    )
    if factory is None or importlib.util.find_spec("websockets") is None:
        return None
    try:
        importlib.import_module("websockets.trio.client")
    except ImportError:
        return None
    return factory  # type: ignore[no-any-return]


def connect(args: argparse.Namespace) -> contextlib.AbstractAsyncContextManager[DXLinkFeed]:
    """``open_dxlink`` to the blast server as a user would call it, on the chosen transport."""
    if args.transport == "websockets":
        factory = find_websockets_connector()
        assert factory is not None
        return open_dxlink(args.url, token="bench", connector=factory())
    connector = websocket_connector(receive_buffer_size=args.receive_buffer)
    return open_dxlink(args.url, token="bench", connector=connector)


Receive = Callable[[], Awaitable[str | bytes]]


async def ceiling_connect(
    send_text: Callable[[str], Awaitable[None]], receive: Receive, symbols: list[str]
) -> None:
    """The DXLink handshake by hand, then a Quote subscription on channel 1."""

    async def send(obj: dict[str, Any]) -> None:
        await send_text(orjson.dumps(obj).decode())

    async def until(kind: str, state: str | None = None) -> None:
        while True:
            msg = orjson.loads(await receive())
            if msg["type"] == kind and (state is None or msg.get("state") == state):
                return

    await send(
        {
            "type": "SETUP",
            "channel": 0,
            "version": "0.1-bench/0",
            "keepaliveTimeout": 60,
            "acceptKeepaliveTimeout": 60,
        }
    )
    await until("AUTH_STATE", "UNAUTHORIZED")
    await send({"type": "AUTH", "channel": 0, "token": "bench"})
    await until("AUTH_STATE", "AUTHORIZED")
    await send(
        {
            "type": "CHANNEL_REQUEST",
            "channel": 1,
            "service": "FEED",
            "parameters": {"contract": "AUTO"},
        }
    )
    await until("CHANNEL_OPENED")
    await send(
        {
            "type": "FEED_SETUP",
            "channel": 1,
            "acceptDataFormat": "COMPACT",
            "acceptEventFields": {"Quote": list(Quote.wire_fields())},
        }
    )
    await send(
        {
            "type": "FEED_SUBSCRIPTION",
            "channel": 1,
            "add": [{"type": "Quote", "symbol": s} for s in symbols],
        }
    )


@contextlib.asynccontextmanager
async def ceiling_socket(args: argparse.Namespace) -> AsyncIterator[Receive]:
    """A subscribed connection configured like trio_dxlink's connector for that library."""
    symbols = option_symbols(args.symbols)
    if args.transport == "websockets":
        from websockets.trio.client import connect as ws_connect

        async with ws_connect(
            args.url,
            max_size=MAX_MESSAGE_SIZE,
            max_queue=QUEUE_SIZE,
            ping_interval=None,
            compression=None,
        ) as ws:
            await ceiling_connect(ws.send, ws.recv, symbols)
            yield ws.recv
    else:
        async with trio_websocket.open_websocket_url(
            args.url,
            max_message_size=MAX_MESSAGE_SIZE,
            message_queue_size=QUEUE_SIZE,
            receive_buffer_size=args.receive_buffer,
        ) as ws:
            await ceiling_connect(ws.send_message, ws.get_message, symbols)
            yield ws.get_message


def stop_between_frames(nursery: trio.Nursery, stop: list[bool]) -> None:
    """Ask a ceiling consumer to stop after its current frame (and make sure it does).

    Cancelling a consumer blocked in ``recv()`` while the server keeps sending can make
    ``websockets``' trio client hang on close, so the consumer stops between frames instead.
    """
    stop.append(True)
    nursery.cancel_scope.deadline = trio.current_time() + 5


async def child_ceiling(args: argparse.Namespace) -> dict[str, Any]:
    n = 0
    stop: list[bool] = []
    result: dict[str, Any] = {}
    with trio.CancelScope() as everything:
        async with ceiling_socket(args) as receive:

            async def consume() -> None:
                nonlocal n
                loads = orjson.loads
                while not stop:
                    msg = loads(await receive())
                    if msg["type"] == "FEED_DATA":
                        n += len(msg["data"][1]) // WIDTH

            async with trio.open_nursery() as nursery:
                nursery.start_soon(consume)
                result = await measure(lambda: n, args, sleep=trio.sleep)
                emit(result)
                stop_between_frames(nursery, stop)
            everything.deadline = trio.current_time() + 3  # bound the close
    return {"close_timed_out": True} if everything.cancelled_caught else {}


async def child_ceiling_latency(args: argparse.Namespace) -> dict[str, Any]:
    lat: list[int] = []
    stop: list[bool] = []
    with trio.CancelScope() as everything:
        async with ceiling_socket(args) as receive:

            async def consume() -> None:
                loads, now = orjson.loads, time.time_ns
                while not stop:
                    msg = loads(await receive())
                    if msg["type"] == "FEED_DATA":
                        values = msg["data"][1]
                        lat.extend([now() - values[EVENT_TIME]] * (len(values) // WIDTH))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(consume)
                emit(await latency_window(lat, args))
                stop_between_frames(nursery, stop)
            everything.deadline = trio.current_time() + 3  # bound the close
    return {"close_timed_out": True} if everything.cancelled_caught else {}


async def latency_window(lat: list[int], args: argparse.Namespace) -> dict[str, Any]:
    while not lat:  # noqa: ASYNC110 - polling the consumer's list costs it nothing per event
        await trio.sleep(0.01)
    await trio.sleep(args.warmup)
    del lat[:]
    t0 = time.perf_counter()
    await trio.sleep(args.seconds)
    window = lat[:]
    elapsed = time.perf_counter() - t0
    return {"events": len(window), "rate": len(window) / elapsed, **percentiles(window)}


# --- child: trio_dxlink ---


async def child_dxlink(args: argparse.Namespace) -> dict[str, Any]:
    n = 0
    async with connect(args) as feed:
        symbols = option_symbols(args.symbols)
        # --handles N: the symbols dealt round-robin to N handles, each with its own consumer
        groups = [symbols[i :: args.handles] for i in range(args.handles)]
        async with contextlib.AsyncExitStack() as stack:
            handles = [
                await stack.enter_async_context(
                    feed.subscribe(
                        Quote, group, overflow=Overflow[args.policy], max_buffer=args.max_buffer
                    )
                )
                for group in groups
            ]

            async def consume(rx: Subscription[Quote]) -> None:
                nonlocal n
                if args.batches:
                    async for batch in rx.batches():
                        n += len(batch)
                else:
                    async for _ in rx:
                        n += 1

            async with trio.open_nursery() as nursery:
                for rx in handles:
                    nursery.start_soon(consume, rx)
                result = await measure(lambda: n, args, sleep=trio.sleep)
                nursery.cancel_scope.cancel()
            result["dropped"] = sum(rx.statistics().dropped for rx in handles)
            emit(result)  # the figure is safe even if closing fails
        closing = time.perf_counter()  # the server is still streaming
    return {"close_seconds": time.perf_counter() - closing}


async def child_dxlink_latency(args: argparse.Namespace) -> dict[str, Any]:
    lat: list[int] = []
    async with connect(args) as feed:
        symbols = option_symbols(args.symbols)
        async with feed.subscribe(
            Quote, symbols, overflow=Overflow.LOSSLESS, max_buffer=args.max_buffer
        ) as rx:

            async def consume() -> None:
                now, append = time.time_ns, lat.append
                async for q in rx:
                    append(now() - q.event_time)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(consume)
                result = await latency_window(lat, args)
                nursery.cancel_scope.cancel()
    return result


async def child_memory_peak(args: argparse.Namespace) -> dict[str, Any]:
    symbols = option_symbols(args.memory_symbols)
    index = {s: i for i, s in enumerate(symbols)}
    seen = bytearray(len(symbols))
    baseline = rss()
    n = 0
    t_start = time.perf_counter()
    all_seen_after: float | None = None
    # the default overflow policy (LATEST for Quote)
    async with connect(args) as feed, feed.subscribe(Quote, symbols) as rx:
        with trio.move_on_after(args.seconds + args.warmup + 10):
            while all_seen_after is None:
                batch = await rx.receive_batch()
                n += len(batch)
                for q in batch:
                    seen[index[q.event_symbol]] = 1
                if seen.count(0) == 0:
                    all_seen_after = time.perf_counter() - t_start
        with trio.move_on_after(args.seconds):
            while True:
                n += len(await rx.receive_batch())
        after = rss()
        fstats = feed.statistics()
    return {
        "symbols": len(symbols),
        "distinct_received": len(symbols) - seen.count(0),
        "all_seen_after": all_seen_after,
        "events": n,
        "feed_events": fstats.events_received,
        "baseline_rss": baseline,
        "end_rss": after,
        "peak_rss": peak_rss(),
    }


async def child_memory_stall(args: argparse.Namespace) -> dict[str, Any]:
    policy = Overflow[args.policy]
    symbols = option_symbols(args.symbols)
    async with (
        connect(args) as feed,
        feed.subscribe(Quote, symbols, overflow=policy, max_buffer=args.max_buffer) as rx,
    ):
        # read normally for a moment, so the process is warm, then stall
        with trio.move_on_after(args.warmup):
            async for _ in rx.batches():
                pass
        before = rss()
        received0 = feed.statistics().events_received
        peak = before
        t_end = time.perf_counter() + args.stall
        while time.perf_counter() < t_end:
            await trio.sleep(0.25)
            peak = max(peak, rss())
        after = rss()
        stats = rx.statistics()
        feed_received = feed.statistics().events_received - received0
        outcome, drained = "kept up", 0
        with trio.move_on_after(1.0):
            try:
                while True:
                    drained += len(await rx.receive_batch())
            except SlowConsumerError:
                outcome = "SlowConsumerError after draining"
    return {
        "policy": policy.name,
        "max_buffer": args.max_buffer,
        "symbols": len(symbols),
        "rss_before": before,
        "rss_after": after,
        "rss_peak": peak,
        "feed_rate": feed_received / args.stall,
        "received": stats.received,
        "dropped": stats.dropped,
        "conflated": stats.conflated,
        "buffered": stats.buffered,
        "outcome": outcome,
        "drained": drained,
    }


# --- child: tastytrade's DXLinkStreamer (asyncio, optional) ---


class LocalSession:
    """Stands in for ``tastytrade.Session``: the token endpoint answered locally, no network.

    ``DXLinkStreamer`` only calls ``session._get("/api-quote-tokens")`` for its URL and token,
    and builds its ``httpx2.AsyncClient`` from ``session.client_kwargs``.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self.client_kwargs: dict[str, Any] = {"trust_env": False}  # no proxies for loopback

    async def _get(self, path: str, **kwargs: Any) -> dict[str, Any]:
        if path != "/api-quote-tokens":
            raise RuntimeError(f"the stand-in session cannot serve {path}")
        return {"dxlink-url": self.url, "token": "bench", "level": "bench"}


async def child_tastytrade(args: argparse.Namespace) -> dict[str, Any]:
    from tastytrade import DXLinkStreamer
    from tastytrade.dxfeed import Quote as TTQuote

    n = 0
    async with DXLinkStreamer(LocalSession(args.url)) as streamer:  # type: ignore[arg-type]
        await streamer.subscribe(TTQuote, option_symbols(args.symbols))

        async def consume() -> None:
            nonlocal n
            async for _ in streamer.listen(TTQuote):
                n += 1

        queue = streamer._recv[TTQuote]  # the streamer's unbounded per-type queue

        def decoded() -> int:
            return n + int(queue.statistics().current_buffer_used)

        task = asyncio.create_task(consume())
        try:
            await measure(lambda: n, args, sleep=asyncio.sleep, warmup_only=True)
            rss0, d0 = rss(), decoded()
            result = await measure(lambda: n, args, sleep=asyncio.sleep, after_warmup=True)
            elapsed = result["elapsed"]
            result["decoded_rate"] = (decoded() - d0) / elapsed
            result["queued"] = queue.statistics().current_buffer_used
            result["rss_growth"] = rss() - rss0
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    return result


CHILDREN: dict[str, Callable[[argparse.Namespace], Coroutine[Any, Any, dict[str, Any]]]] = {
    "ceiling": child_ceiling,
    "ceiling-latency": child_ceiling_latency,
    "dxlink": child_dxlink,
    "dxlink-latency": child_dxlink_latency,
    "memory-peak": child_memory_peak,
    "memory-stall": child_memory_stall,
    "tastytrade": child_tastytrade,
}


def emit(result: dict[str, Any]) -> None:
    """Hand (part of) a child's result to the parent: one JSON object per stdout line."""
    print(json.dumps(result), flush=True)


def run_child(args: argparse.Namespace) -> None:
    fn = CHILDREN[args.child]
    # tastytrade's streamer runs on anyio over asyncio; everything else on trio
    emit(asyncio.run(fn(args)) if args.child == "tastytrade" else trio.run(fn, args))


# --- parent: servers, children, tables ---


class Server:
    """A ``blast_server.py`` process; its URL is read from its first line."""

    def __init__(self, *server_args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(SERVER), "--port", "0", *server_args],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith("listening on "):
            self.close()
            raise RuntimeError(f"blast server did not start: {line!r}")
        self.url = line.split()[-1]

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@contextlib.contextmanager
def server(*server_args: str) -> Iterator[Server]:
    s = Server(*server_args)
    try:
        yield s
    finally:
        s.close()


class Child:
    """One measurement in a fresh process; its last stdout line is the JSON result."""

    def __init__(
        self, role: str, srv: Server, args: argparse.Namespace, label: str, **overrides: Any
    ) -> None:
        opts = {
            "seconds": args.seconds,
            "warmup": args.warmup,
            "symbols": args.symbols,
            "memory_symbols": args.memory_symbols,
            "max_buffer": args.max_buffer,
            "stall": args.stall,
            "receive_buffer": BIG_READ,
            "policy": "LOSSLESS",
            "batches": False,
            "handles": 1,
            "transport": "trio-websocket",
            **overrides,
        }
        cmd = [sys.executable, __file__, "--child", role, "--url", srv.url]
        cmd += ["--server-pid", str(srv.proc.pid)]
        for key, value in opts.items():
            flag = "--" + key.replace("_", "-")
            if value is True:
                cmd.append(flag)
            elif value is not False:
                cmd += [flag, str(value)]
        self.label = label
        self.budget = 30 + 3 * (opts["seconds"] + opts["warmup"])
        if role == "memory-stall":
            self.budget += opts["stall"]
        progress(f"  {label} ...")
        self.t0 = time.perf_counter()
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def result(self) -> dict[str, Any]:
        timed_out = False
        try:
            stdout, stderr = self.proc.communicate(timeout=self.budget)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            stdout, stderr = self.proc.communicate()
            timed_out = True
        result: dict[str, Any] = {}
        for line in stdout.splitlines():
            if line.startswith("{"):
                result.update(json.loads(line))
        if timed_out:
            error = f"timed out after {self.budget:.0f} s"
        elif self.proc.returncode != 0:
            error = (stderr.strip().splitlines() or ["no output"])[-1]
        else:
            progress(f"  {self.label}: done in {time.perf_counter() - self.t0:.1f} s")
            return result
        progress(f"  {self.label}: failed: {error}")
        if not result:
            return {"error": error}
        result["late_error"] = error  # after the figures were out, e.g. while closing
        return result


def child(
    role: str, srv: Server, args: argparse.Namespace, label: str, **overrides: Any
) -> dict[str, Any]:
    """Run one measurement in a fresh process and wait for its result."""
    return Child(role, srv, args, label, **overrides).result()


def progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def tastytrade_version() -> str | None:
    try:
        return metadata.version("tastytrade")
    except metadata.PackageNotFoundError:
        return None


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def usable_cpus() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def fmt_int(x: float) -> str:
    return f"{x:,.0f}"


def fmt_mb(x: float) -> str:
    return f"{x / MiB:,.1f} MB"


def met(ok: bool | None) -> str:
    return "n/a" if ok is None else ("**yes**" if ok else "**NO**")


# --- sections ---


def median_run(results: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median rate (its rate the median of all); a failure if all failed."""
    ok = sorted((r for r in results if "rate" in r), key=lambda r: r["rate"])
    if not ok:
        return results[0]
    return {**ok[(len(ok) - 1) // 2], "rate": statistics.median(r["rate"] for r in ok)}


def median_tastytrade(results: list[dict[str, Any]]) -> dict[str, Any]:
    """:func:`median_run` for tastytrade runs: the median decoded and delivered rates."""
    ok = sorted((r for r in results if "decoded_rate" in r), key=lambda r: r["decoded_rate"])
    if not ok:
        return results[0]
    return {
        **ok[(len(ok) - 1) // 2],
        "decoded_rate": statistics.median(r["decoded_rate"] for r in ok),
        "rate": statistics.median(r["rate"] for r in ok),
        "runs": len(ok),
    }


def ratio(a: float | None, b: float | None, fmt: str, suffix: str = "") -> str:
    return format(a / b, fmt) + suffix if a and b else "n/a"


# (transport key, heading, child options) for each transport the throughput section measures
TRANSPORTS: list[tuple[str, str, dict[str, Any]]] = [
    ("default", "trio-websocket (trio_dxlink's default connector: 64 KiB socket reads)", {}),
    (
        "small",
        "trio-websocket, 4 KiB socket reads (trio-websocket's own default)",
        {"receive_buffer": SMALL_READ},
    ),
    (
        "websockets",
        "websockets (trio_dxlink's `websockets_connector`)",
        {"transport": "websockets"},
    ),
]
CLIENTS: list[tuple[str, str, str, dict[str, Any]]] = [
    ("ceiling", "ceiling", "ceiling: receive + `orjson.loads`", {}),
    ("iter", "dxlink", "trio_dxlink, `async for q in rx`", {}),
    ("batches", "dxlink", "trio_dxlink, `rx.batches()`", {"batches": True}),
    (
        "fanout",
        "dxlink",
        "trio_dxlink, 4 handles (the symbols dealt out), `async for` on each",
        {"handles": 4},
    ),
]
DEFAULT_TRANSPORT_ONLY = {"fanout"}
"""Clients measured on the default transport only (to keep the run short)."""


def section_throughput(args: argparse.Namespace, out: list[str], targets: list[str]) -> None:
    progress(f"throughput ({args.rounds} x {args.seconds:g} s each, {args.symbols:,} symbols)")
    transports = [t for t in TRANSPORTS if t[0] != "websockets" or find_websockets_connector()]
    if args.quick:  # the default transport only
        transports = transports[:1]
    runs: dict[tuple[str, str], list[dict[str, Any]]] = {}
    with server("--mode", "throughput", "--frame-events", "500") as srv:
        # interleaved rounds, so a slow moment on a shared machine hits every client alike
        for round_ in range(args.rounds):
            for transport, _, topts in transports:
                for client, role, _label, copts in CLIENTS:
                    if client in DEFAULT_TRANSPORT_ONLY and transport != "default":
                        continue
                    opts = {**topts, **copts}
                    name = f"[{round_ + 1}/{args.rounds}] {transport}: {client}"
                    runs.setdefault((transport, client), []).append(
                        child(role, srv, args, name, **opts)
                    )
        tt: dict[str, Any] = {}
        if tastytrade_version() and not args.no_tastytrade:
            # its figures move more from run to run than ours: the median of as many runs
            tt = median_tastytrade(
                [
                    child("tastytrade", srv, args, f"[{i + 1}/{args.rounds}] tastytrade")
                    for i in range(args.rounds)
                ]
            )
    best = {key: median_run(results) for key, results in runs.items()}
    closes = [
        (r["close_seconds"], t)
        for (t, _), results in runs.items()
        for r in results
        if r.get("close_seconds") is not None
    ]
    # the conservative tastytrade figure: everything its reader decoded, consumed or queued
    tt_best = tt.get("decoded_rate")
    out += [
        "### Throughput",
        "",
        f"COMPACT Quote frames of 500 events for {args.symbols:,} option symbols, as fast as the"
        f" client takes them; a LOSSLESS handle; events/s delivered to the consumer over"
        f" {args.seconds:g} s after a {args.warmup:g} s warm-up"
        + (f", the median of {args.rounds} interleaved runs." if args.rounds > 1 else ".")
        + " Each transport's ceiling is a client on the same WebSocket library, configured the"
        " same way, that does the handshake by hand and only runs `orjson.loads` on each frame,"
        " counting `len(data[1]) // 12` events."
        + (
            " The 4 KiB rows pass `receive_buffer_size=4096` to both (trio-websocket's own"
            " default)."
            if len(transports) > 1
            else ""
        ),
        "",
        "| transport | client | events/s | vs same-transport ceiling | vs tastytrade (decoded) | client CPU | server CPU |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    starved: list[str] = []

    def row(
        transport: str, label: str, rate: float | None, result: dict[str, Any], ref: float | None
    ) -> None:
        if rate is None:
            out.append(f"| {transport} | {label} | failed: {result.get('error')} | | | | |")
            return
        overflowed = " (its buffer overflowed)" if result.get("dropped") else ""
        if result["client_cpu"] < STARVED:
            overflowed += " †"
            starved.append(label)
        out.append(
            f"| {transport} | {label} | {fmt_int(rate)}{overflowed} | {ratio(rate, ref, '.0%')} |"
            f" {ratio(rate, tt_best, '.1f', 'x')} | {result['client_cpu']:.0%} |"
            f" {result['server_cpu']:.0%} |"
        )

    for transport, heading, _ in transports:
        ceiling = best[transport, "ceiling"].get("rate")
        for client, _, label, _ in CLIENTS:
            if (transport, client) in best:
                result = best[transport, client]
                row(heading, label, result.get("rate"), result, ceiling)
    tt_name = f"tastytrade {tastytrade_version()} `DXLinkStreamer`"
    if tt:
        http = "httpx2 websockets (its own)"
        row(http, f"{tt_name}: decoded by its reader", tt_best, tt, None)
        row(http, f"{tt_name}: delivered to `listen()`", tt.get("rate"), tt, None)
    else:
        why = "not installed" if not tastytrade_version() else "skipped (--no-tastytrade)"
        out.append(f"| | tastytrade `DXLinkStreamer` | {why} | | | | |")
    out.append("")
    if tt.get("queued") is not None:
        out += [
            f"tastytrade's reader task parses frame after frame while its consumer waits for a"
            f" turn, so `listen()` got about {tt['rate'] / (tt['decoded_rate'] / 500):.1f} events"
            f" per 500-event frame; {tt['queued']:,} events were waiting in its unbounded queue"
            f" at the end, which grew the process by {fmt_mb(tt['rss_growth'])} in"
            f" {tt['elapsed']:.1f} s. The ratios use the decoded figure, tastytrade's best case"
            + (f"; its figures are the median of {tt['runs']} runs." if tt["runs"] > 1 else "."),
            "",
        ]
    if starved:
        out += [
            f"† The client process had less than {STARVED:.0%} of a CPU during that measurement:"
            " something else on the machine competed for it, so that figure is low.",
            "",
        ]
    late = sorted(
        {
            f"{t} transport, {c}: "
            + (r.get("late_error") or "the WebSocket close did not finish within 3 s")
            for (t, c), rs in runs.items()
            for r in rs
            if r.get("late_error") or r.get("close_timed_out")
        }
    )
    if late:
        out += ["Errors after a measurement, while closing: " + "; ".join(late), ""]
    if closes:
        slowest, where = max(closes)
        out += [
            f"Leaving `open_dxlink` while the server was still streaming took at most"
            f" {slowest:.2f} s ({where} transport).",
            "",
        ]
    c, r = best["default", "ceiling"].get("rate"), best["default", "iter"].get("rate")
    t, tl = tt_best, tt.get("rate")
    targets.append(
        f"| trio_dxlink `async for` ≥ {TARGET_CEILING:.0%} of the same-transport ceiling |"
        f" {ratio(r, c, '.0%')} | {met(r / c >= TARGET_CEILING if c and r else None)} |"
    )
    if ("small", "iter") in best:
        rb, cb = best["small", "iter"].get("rate"), best["small", "ceiling"].get("rate")
        targets.append(
            f"| the same, both reading 4 KiB at a time | {ratio(rb, cb, '.0%')} |"
            f" {met(rb / cb >= TARGET_CEILING if rb and cb else None)} |"
        )
    targets += [
        f"| trio_dxlink `async for` ≥ {TARGET_TASTYTRADE:g}x tastytrade's DXLinkStreamer,"
        f" all it decoded | {ratio(r, t, '.1f', 'x')} |"
        f" {met(r / t >= TARGET_TASTYTRADE if t and r else None)} |",
        f"| trio_dxlink `async for` ≥ {TARGET_TASTYTRADE:g}x tastytrade's DXLinkStreamer,"
        f" delivered to `listen()` | {ratio(r, tl, ',.0f', 'x')} |"
        f" {met(r / tl >= TARGET_TASTYTRADE if tl and r else None)} |",
    ]


def section_latency(args: argparse.Namespace, out: list[str], targets: list[str]) -> None:
    fe = args.latency_frame_events
    seconds = args.latency_seconds
    progress(f"latency ({args.rate:,.0f} events/s, {fe}-event frames, {seconds:g} s)")
    with server("--mode", "rate", "--rate", str(args.rate), "--frame-events", str(fe)) as srv:
        ceiling = child("ceiling-latency", srv, args, "ceiling", seconds=seconds)
        dx = child("dxlink-latency", srv, args, "trio_dxlink async for", seconds=seconds)
    out += [
        "### Latency",
        "",
        f"A steady {args.rate:,.0f} events/s in frames of {fe} events ({args.rate / fe:,.0f}"
        f" frames/s); latency is `time.time_ns()` at the consumer minus the server's"
        f" `time.time_ns()` at the send, for every event, over {seconds:g} s after a"
        f" {args.warmup:g} s warm-up. Both use trio-websocket as trio_dxlink's default"
        " connector configures it.",
        "",
        "| client | events/s received | p50 | p90 | p99 | p99.9 | max |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for label, result in (
        ("ceiling: receive + `orjson.loads`", ceiling),
        ("trio_dxlink, `async for q in rx`", dx),
    ):
        if "p50" not in result:
            out.append(f"| {label} | failed: {result.get('error', 'no events')} | | | | | |")
            continue
        ms = " | ".join(f"{result[k]:.2f} ms" for k in ("p50", "p90", "p99", "p999", "max"))
        out.append(f"| {label} | {fmt_int(result['rate'])} | {ms} |")
    out.append("")
    p99 = dx.get("p99")
    targets.append(
        f"| p99 latency < {TARGET_P99_MS:g} ms at {args.rate:,.0f} events/s |"
        f" {(f'{p99:.2f} ms' if p99 is not None else 'n/a')} |"
        f" {met(p99 < TARGET_P99_MS if p99 is not None else None)} |"
    )


def section_memory(args: argparse.Namespace, out: list[str], targets: list[str]) -> None:
    progress(f"memory ({args.memory_symbols:,} symbols; stall {args.stall:g} s per policy)")
    with server("--mode", "throughput", "--frame-events", "500") as srv:
        peak = child("memory-peak", srv, args, f"peak RSS, {args.memory_symbols:,} symbols")
        # the three stalls run at once, each in its own process on its own connection
        running = [
            Child("memory-stall", srv, args, f"stalled consumer, {p.name}", policy=p.name)
            for p in Overflow
        ]
        stalls = [c.result() for c in running]
    out += ["### Memory", ""]
    if "peak_rss" in peak:
        seen_after = peak["all_seen_after"]
        out += [
            f"A trio_dxlink client subscribed to {peak['symbols']:,} option symbols (Quote, the"
            " default LATEST policy) while the server streams all of them as fast as it can:",
            "",
            "| measurement | value |",
            "|---|---:|",
            f"| RSS before connecting (interpreter + trio_dxlink + symbol list) | {fmt_mb(peak['baseline_rss'])} |",
            f"| peak RSS | {fmt_mb(peak['peak_rss'])} |",
            f"| peak RSS - baseline | {fmt_mb(peak['peak_rss'] - peak['baseline_rss'])} |",
            f"| RSS at the end | {fmt_mb(peak['end_rss'])} |",
            f"| symbols with data received | {peak['distinct_received']:,} of {peak['symbols']:,}"
            + (f" (all within {seen_after:.1f} s)" if seen_after is not None else "")
            + " |",
            f"| events decoded by the feed | {fmt_int(peak['feed_events'])} |",
            "",
        ]
    else:
        out += [f"Peak RSS measurement failed: {peak.get('error')}", ""]
    out += [
        f"One consumer per policy (each its own process and connection, all three at once)"
        f" reads normally for {args.warmup:g} s, then stalls (reads nothing) for"
        f" {args.stall:g} s while the server blasts {args.symbols:,} symbols at it;"
        f" `max_buffer={args.max_buffer:,}` (the default is {DEFAULT_MAX_BUFFER:,}). Growth is"
        " the larger of RSS after and peak RSS during the stall, minus RSS when it began;"
        ' "afterwards" is what the consumer met when it read again.',
        "",
        "| policy | feed events/s during stall | RSS before | RSS after | growth | buffered | growth per buffered event | received | dropped | conflated | afterwards |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    per_event: list[float] = []
    for result in stalls:
        if "rss_before" not in result:
            out.append(f"| ? | failed: {result.get('error')} | | | | | | | | | |")
            targets.append(
                f"| stalled consumer: growth < {TARGET_GROWTH_MB:g} MB | failed | {met(None)} |"
            )
            continue
        growth = max(result["rss_after"], result["rss_peak"]) - result["rss_before"]
        buffered = result["buffered"]
        each = growth / buffered if buffered >= 10_000 else None
        if each:
            per_event.append(each)
        out.append(
            f"| {result['policy']} | {fmt_int(result['feed_rate'])} |"
            f" {fmt_mb(result['rss_before'])} | {fmt_mb(result['rss_after'])} |"
            f" {fmt_mb(growth)} | {fmt_int(buffered)} |"
            f" {f'{each:,.0f} B' if each else 'n/a'} | {fmt_int(result['received'])} |"
            f" {fmt_int(result['dropped'])} | {fmt_int(result['conflated'])} |"
            f" {result['outcome']} |"
        )
        targets.append(
            f"| stalled consumer, {result['policy']}: RSS growth < {TARGET_GROWTH_MB:g} MB"
            f" | {fmt_mb(growth)} | {met(growth < TARGET_GROWTH_MB * MiB)} |"
        )
    out.append("")
    if per_event:
        each = statistics.median(per_event)
        out += [
            f"A buffered Quote costs about {each:,.0f} bytes, so a {TARGET_GROWTH_MB:g} MB bound"
            f" holds about {TARGET_GROWTH_MB * MiB / each:,.0f} events per handle.",
            "",
        ]


def machine_info(args: argparse.Namespace) -> list[str]:
    versions = ", ".join(
        f"{name} {metadata.version(name)}"
        for name in ("trio", "trio-websocket", "wsproto", "orjson", "attrs", "cattrs")
    )
    tt = tastytrade_version()
    return [
        "## Performance",
        "",
        f"Measured by `python benchmarks/bench_throughput.py{' --quick' if args.quick else ''}` on"
        f" {platform.system()} {platform.machine()}, {cpu_model()}, {usable_cpus()} usable CPUs"
        f" (os.cpu_count() = {os.cpu_count()}); Python {platform.python_version()}"
        f" ({platform.python_implementation()}); {versions}"
        + (f"; tastytrade {tt}" if tt else "; tastytrade not installed")
        + ". trio_dxlink's C speedups: "
        + ("built and on" if trio_dxlink._accel.speedups is not None else "**off** (pure Python)")
        + ". Server and client are separate processes on loopback."
        + (
            f" Load average when the run began: {os.getloadavg()[0]:.2f}."
            if hasattr(os, "getloadavg")
            else ""
        ),
        "",
    ]


def run_parent(args: argparse.Namespace) -> None:
    chosen = {s for s in ("throughput", "latency", "memory") if getattr(args, s)}
    sections = chosen or {"throughput", "latency", "memory"}
    t0 = time.perf_counter()
    out = machine_info(args)
    targets = ["| target | measured | met |", "|---|---:|:---:|"]
    if "throughput" in sections:
        section_throughput(args, out, targets)
    if "latency" in sections:
        section_latency(args, out, targets)
    if "memory" in sections:
        section_memory(args, out, targets)
    out += ["### Targets", "", *targets, ""]
    load = (
        f"; load average at the end {os.getloadavg()[0]:.2f}" if hasattr(os, "getloadavg") else ""
    )
    out.append(f"_Total benchmark time: {time.perf_counter() - t0:.0f} s{load}._")
    print("\n".join(out))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--throughput", action="store_true", help="run the throughput section")
    p.add_argument("--latency", action="store_true", help="run the latency section")
    p.add_argument("--memory", action="store_true", help="run the memory section")
    p.add_argument(
        "--quick", action="store_true", help="short runs, default transport only (about 30 s)"
    )
    p.add_argument(
        "--seconds", type=float, help="measuring time per run (default 2.5; --rounds runs each)"
    )
    p.add_argument("--latency-seconds", type=float, help="measuring time for latency (default 5)")
    p.add_argument("--warmup", type=float, help="warm-up before measuring (default 1)")
    p.add_argument("--stall", type=float, help="stalled-consumer time per policy (default 30)")
    p.add_argument("--rounds", type=int, help="interleaved throughput runs (default 4; 1 with --quick)")
    p.add_argument(
        "--symbols", type=int, default=2_000, help="symbols for throughput/latency/stall"
    )
    p.add_argument("--memory-symbols", type=int, default=25_000, help="symbols for peak RSS")
    p.add_argument("--rate", type=float, default=20_000, help="events/s for the latency run")
    p.add_argument(
        "--latency-frame-events", type=int, default=100, help="events per frame (latency)"
    )
    p.add_argument("--max-buffer", type=int, default=DEFAULT_MAX_BUFFER, help="handles' max_buffer")
    p.add_argument("--no-tastytrade", action="store_true", help="skip tastytrade even if installed")
    # internal: one measurement in a child process
    p.add_argument("--child", choices=sorted(CHILDREN), help=argparse.SUPPRESS)
    p.add_argument("--url", help=argparse.SUPPRESS)
    p.add_argument("--server-pid", type=int, help=argparse.SUPPRESS)
    p.add_argument(
        "--receive-buffer",
        type=int,
        default=BIG_READ,
        help=argparse.SUPPRESS,
    )
    p.add_argument("--policy", default="LOSSLESS", help=argparse.SUPPRESS)
    p.add_argument("--batches", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--handles", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--transport", default="trio-websocket", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    quick = args.quick
    if args.seconds is None:
        args.seconds = 1.5 if quick else 2.5
    if args.latency_seconds is None:
        args.latency_seconds = 1.5 if quick else 5.0
    if args.warmup is None:
        args.warmup = 0.5 if quick else 1.0
    if args.rounds is None:
        args.rounds = 1 if quick else 4
    if args.stall is None:
        args.stall = 3.0 if quick else 30.0
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.child:
        run_child(args)
    else:
        run_parent(args)


if __name__ == "__main__":
    main()
