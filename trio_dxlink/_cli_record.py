"""The ``record`` and ``replay`` subcommands of the command line (see ``__main__.py``).

``record TYPE SYMBOL... -o FILE`` records a session (from ``--url``, or from the embedded local
server with a simulated market) with a progress line on standard error: events, bytes, rate.
``replay FILE`` plays a recording through :func:`~trio_dxlink.open_dxlink`, subscribing to what
was recorded, and prints every event as one JSON object per line (in order within each event
type), stopping at the end of the recording. ``export FILE --to parquet DIR`` writes the
recording's events as one Parquet file per event type (:mod:`trio_dxlink.arrow`).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from typing import Any

import orjson
import trio

from ._buffers import Overflow
from ._client import ReconnectPolicy
from ._codec import encode_full
from ._open import open_dxlink
from ._record import open_recorder
from ._recording import read_manifest
from ._replay import Replay, recorded_subscriptions
from ._subscription import Subscription
from .events import Event, event_class

__all__ = ["RecordUsageError", "add_record_parsers", "run_export", "run_record", "run_replay"]


class RecordUsageError(Exception):
    """A bad ``record``/``replay`` argument (one line, exit status 2)."""


def add_record_parsers(sub: Any) -> None:
    """Add ``record`` and ``replay`` to the CLI's subparsers."""
    record = sub.add_parser("record", help="record a session to a file")
    record.add_argument("type", help="event type, e.g. Quote")
    record.add_argument("symbols", nargs="+", help="symbols, e.g. SPY AAPL")
    record.add_argument("-o", "--output", required=True, help="file (.zst: zstd-compressed)")
    record.add_argument("--url", help="DXLink URL (default: the embedded local server)")
    record.add_argument("--token", help="DXLink token for --url (or DXLINK_TOKEN in the env)")
    record.add_argument("--duration", type=float, help="stop after this many seconds")
    record.add_argument("--count", type=int, help="stop after this many events")
    record.add_argument("--seed", type=int, default=0, help="embedded server's market seed")

    replay = sub.add_parser("replay", help="print the events of a recording as NDJSON")
    replay.add_argument("file", help="a recording made by `record` or open_dxlink(record=)")
    replay.add_argument(
        "--speed", type=float, help="play in recorded time scaled by this (default: at once)"
    )

    export = sub.add_parser("export", help="write a recording's events as Parquet files")
    export.add_argument("file", help="a recording made by `record` or open_dxlink(record=)")
    export.add_argument("--to", required=True, choices=["parquet"], help="the output format")
    export.add_argument("directory", help="where to write <EventType>.parquet files")


def _event_class(name: str) -> type[Event]:
    try:
        return event_class(name)
    except KeyError:
        raise RecordUsageError(f"unknown event type {name!r}") from None


async def run_record(args: argparse.Namespace) -> int:
    """``record``: subscribe and record until ``--duration``/``--count`` or an interrupt."""
    event_type = _event_class(args.type)
    for flag, value in (("--duration", args.duration), ("--count", args.count)):
        if value is not None and value <= 0:
            raise RecordUsageError(f"{flag} must be positive")
    if args.url is None:
        from .testing import Market, ServerConfig, open_dxlink_server

        config = ServerConfig(simulate=True)
        async with open_dxlink_server(config=config, market=Market(seed=args.seed)) as server:
            return await _record(args, event_type, server.url, None)
    if not args.url.startswith(("ws://", "wss://")):
        raise RecordUsageError(f"--url must be a ws:// or wss:// URL, got {args.url!r}")
    token = args.token or os.environ.get("DXLINK_TOKEN")
    return await _record(args, event_type, args.url, token)


async def _record(
    args: argparse.Namespace, event_type: type[Event], url: str, token: str | None
) -> int:
    seen = 0
    started = trio.current_time()
    policy = ReconnectPolicy(give_up_after=120.0)
    with trio.move_on_after(args.duration if args.duration is not None else math.inf):
        async with (
            open_recorder(args.output) as recorder,
            open_dxlink(url, token, reconnect=policy, record=recorder) as feed,
            feed.subscribe(event_type, args.symbols) as rx,
        ):
            next_line = 0.0
            async for batch in rx.batches():
                seen += len(batch)
                now = trio.current_time()
                if now >= next_line:
                    stats = recorder.statistics()
                    rate = seen / max(now - started, 1e-9)
                    dropped = f", {stats.dropped} dropped" if stats.dropped else ""
                    sys.stderr.write(
                        f"\r{seen} events, {stats.bytes} bytes, {rate:,.0f} events/s{dropped}"
                    )
                    sys.stderr.flush()
                    next_line = now + 0.5
                if args.count is not None and seen >= args.count:
                    break
    sys.stderr.write(f"\r{seen} events recorded to {args.output}\n")
    return 0


async def run_replay(args: argparse.Namespace) -> int:
    """``replay``: play the recording, print its events, stop at its end."""
    if args.speed is not None and not args.speed > 0:  # NaN too
        raise RecordUsageError("--speed must be positive")
    manifest = await trio.to_thread.run_sync(read_manifest, args.file)
    subscriptions = recorded_subscriptions(manifest)
    out = sys.stdout.buffer
    with Replay(args.file, speed=args.speed) as replay:
        async with open_dxlink(
            replay.url, replay.token, connector=replay.connector(), reconnect=_replay_policy()
        ) as feed:
            handles: list[Subscription[Event]] = []
            async with trio.open_nursery() as nursery:
                for name, entries in subscriptions.items():
                    symbols = [e["symbol"] for e in entries]
                    handle = feed.subscribe(
                        event_class(name), symbols, overflow=Overflow.LOSSLESS, max_buffer=2**24
                    )
                    await handle.__aenter__()
                    handles.append(handle)
                    nursery.start_soon(_print, handle, out)
                await replay.finished.wait()
                nursery.cancel_scope.cancel()
            for handle in handles:  # what was delivered but not printed yet
                while True:
                    try:
                        event = handle.receive_nowait()
                    except trio.WouldBlock:
                        break
                    out.write(orjson.dumps(encode_full(event)) + b"\n")
                await handle.aclose()
    out.flush()
    return 0


def _replay_policy() -> ReconnectPolicy:
    """Recorded reconnects are replayed at once (no backoff)."""
    return ReconnectPolicy(initial_delay=0.0, jitter=0.0)


async def _print(handle: Subscription[Event], out: Any) -> None:
    async for event in handle:
        out.write(orjson.dumps(encode_full(event)) + b"\n")


async def run_export(args: argparse.Namespace) -> int:
    """``export``: the recording's events as one Parquet file per event type."""
    await trio.lowlevel.checkpoint()
    try:
        from .arrow import to_arrow, write_parquet

        tables = to_arrow(args.file)
        written = write_parquet(tables, args.directory)
    except ImportError as exc:
        print(f"trio-dxlink: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        raise RecordUsageError(f"cannot write to {args.directory!r}: {exc}") from exc
    for name, path in written.items():
        print(f"{name}: {tables[name].num_rows} events -> {path}")
    if not written:
        print("the recording holds no events; nothing written", file=sys.stderr)
    return 0
