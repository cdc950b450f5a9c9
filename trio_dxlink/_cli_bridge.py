"""The ``bridge`` subcommand of the command line (see ``__main__.py``).

``bridge TYPE[,TYPE...] SYMBOL... --redis redis://127.0.0.1:6379`` publishes events to Redis
Streams (:func:`~trio_dxlink.run_bridge`) from ``--url``, or from the embedded local server with
a simulated market, until interrupted (or ``--duration`` / ``--count``). Every ``--every``
seconds, and once at the end, it prints the bridge's statistics as one JSON object per line on
standard error.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

import attrs
import orjson
import trio

from ._bridge import RedisBridge, run_bridge
from ._cli_common import UsageError
from ._open import open_dxlink
from .events import Event, event_class

__all__ = ["add_bridge_parser", "run_bridge_command"]


def add_bridge_parser(sub: Any) -> None:
    """Add ``bridge`` to the CLI's subparsers."""
    bridge = sub.add_parser("bridge", help="publish events to Redis Streams")
    bridge.add_argument("types", help="event type(s), comma-separated: Quote or Quote,Trade")
    bridge.add_argument("symbols", nargs="+", help="symbols, e.g. SPY AAPL")
    bridge.add_argument("--redis", required=True, help="Redis URL, e.g. redis://127.0.0.1:6379")
    bridge.add_argument("--url", help="DXLink URL (default: the embedded local server)")
    bridge.add_argument("--token", help="DXLink token for --url (or DXLINK_TOKEN in the env)")
    bridge.add_argument(
        "--stream-per", choices=("type", "symbol"), default="type", help="one stream per ..."
    )
    bridge.add_argument("--prefix", default="dxlink", help="stream key prefix")
    bridge.add_argument("--maxlen", type=int, default=100_000, help="approximate stream length")
    bridge.add_argument("--batch", type=int, default=500, help="entries per pipeline")
    bridge.add_argument(
        "--max-pending", type=int, default=100_000, help="events buffered while Redis is down"
    )
    bridge.add_argument("--every", type=float, default=5.0, help="seconds between status lines")
    bridge.add_argument("--duration", type=float, help="stop after this many seconds")
    bridge.add_argument("--count", type=int, help="stop after publishing this many events")
    bridge.add_argument("--seed", type=int, default=0, help="embedded server's market seed")


def _event_types(text: str) -> list[type[Event]]:
    types = []
    for name in text.split(","):
        try:
            types.append(event_class(name.strip()))
        except KeyError:
            raise UsageError(f"unknown event type {name!r}") from None
    return types


async def run_bridge_command(args: argparse.Namespace) -> int:
    """``bridge``: publish until ``--duration`` / ``--count`` or an interrupt."""
    types = _event_types(args.types)
    for flag in ("maxlen", "batch", "max_pending", "every", "duration", "count"):
        value = getattr(args, flag)
        if value is not None and value <= 0:
            raise UsageError(f"--{flag.replace('_', '-')} must be positive")
    if not args.redis.startswith(("redis://", "rediss://", "unix://")):
        raise UsageError(f"--redis must be a redis:// URL, got {args.redis!r}")
    if args.url is None:
        from .testing import Market, ServerConfig, open_dxlink_server

        config = ServerConfig(simulate=True)
        async with open_dxlink_server(config=config, market=Market(seed=args.seed)) as server:
            return await _bridge(args, types, server.url, None)
    if not args.url.startswith(("ws://", "wss://")):
        raise UsageError(f"--url must be a ws:// or wss:// URL, got {args.url!r}")
    return await _bridge(args, types, args.url, args.token or os.environ.get("DXLINK_TOKEN"))


async def _bridge(
    args: argparse.Namespace, types: list[type[Event]], url: str, token: str | None
) -> int:
    async with open_dxlink(url, token) as feed, trio.open_nursery() as nursery:
        bridge: RedisBridge = await nursery.start(
            lambda task_status: run_bridge(
                feed,
                types,
                args.symbols,
                args.redis,
                stream_per=args.stream_per,
                prefix=args.prefix,
                maxlen=args.maxlen,
                batch=args.batch,
                max_pending=args.max_pending,
                task_status=task_status,
            )
        )
        try:
            with trio.move_on_after(args.duration if args.duration else float("inf")):
                await _report_until_done(bridge, args.every, args.count)
        finally:
            _status(bridge)
            nursery.cancel_scope.cancel()
    return 0


async def _report_until_done(bridge: RedisBridge, every: float, count: int | None) -> None:
    next_report = trio.current_time() + every
    while count is None or bridge.statistics().published < count:
        await trio.sleep(0.05 if count is not None else every)
        if trio.current_time() >= next_report:
            _status(bridge)
            next_report += every


def _status(bridge: RedisBridge) -> None:
    line = orjson.dumps(attrs.asdict(bridge.statistics())) + b"\n"
    sys.stderr.write(line.decode())
    sys.stderr.flush()
