"""The command line's ``stream`` subcommand: events as a live table, or one JSON object a line.

``stream TYPE SYMBOL...`` subscribes to one event type for some symbols. In a terminal it shows
a live table (:mod:`trio_dxlink._cli_table`, drawn in place with rich) with a status line under
it, drawn before the first event and redrawn four times a second whatever happens (reconnects
included); log messages are printed above the table. With ``--json``, or whenever standard
output is not a terminal, it prints one JSON object per event per line (the FULL wire form).

Every bad argument is a :class:`~trio_dxlink._cli_common.UsageError` (one line, exit status 2)
before anything connects.
"""

from __future__ import annotations

import argparse
import datetime
import math
import os
import re
import sys
from typing import TYPE_CHECKING, Any

import orjson
import trio

from ._arguments import check_symbols_for
from ._cli_common import HelpFormatter, StatusLine, UsageError, live_screen, parse_time_argument
from ._cli_table import SUBSCRIPTION_COUNTERS, EventTable
from ._cli_tastytrade import add_stream_options, session_from_args, stream_usage_problem
from ._client import NO_RECONNECT, ReconnectPolicy
from ._codec import encode_full
from ._exceptions import SymbolError
from ._expirations import tasty_monthly
from ._open import open_dxlink
from ._tokens import TokenSource
from .events import EVENT_TYPES, Event, IndexedEvent, TimeSeriesEvent, event_class

if TYPE_CHECKING:
    from rich.table import Table

__all__ = ["add_stream_parser", "event_type_named", "run_stream"]

_ROLE = re.compile(r":\w+:`~?([^`]+)`")


def _type_list() -> str:
    lines = []
    for cls in EVENT_TYPES:
        doc = (cls.__doc__ or "").strip().splitlines()
        summary = _ROLE.sub(r"\1", doc[0] if doc else "").replace("``", "")
        lines.append(f"  {cls.__name__:<14}{summary}")
    return "\n".join(lines)


def listed_option(today: datetime.date | None = None) -> str:
    """An option symbol the embedded server's simulated chain lists on ``today`` (default: the
    date in New York now): SPY's call at 600 (where SPY starts) in the monthly expiration about
    45 days out, so its Greeks are sensible. The help's examples use it."""
    return f".SPY{tasty_monthly(today):%y%m%d}C600"


def _examples() -> str:
    option = listed_option()
    return f"""\
examples:
  trio-dxlink stream Quote SPY AAPL                   live table from the embedded server
  trio-dxlink stream Trade SPY --json --count 10      ten events as JSON lines
  trio-dxlink stream Candle 'AAPL{{=5m}}' --from-time -2h
  trio-dxlink stream Greeks {option:<26}Greeks of an option the simulated chain lists
  trio-dxlink stream OptionSale SPY                   SPY's option prints (option_symbol says which)
  trio-dxlink stream Order AAPL --source NTV          one row per order of one source
  trio-dxlink stream Order AAPL                       changes of every source (simulated: NTV, ntv)
  trio-dxlink stream Quote SPY --url wss://host/path --token "$TOKEN"
"""


def add_stream_parser(sub: Any) -> argparse.ArgumentParser:
    """Add the ``stream`` subcommand to the command line's subparsers (and return it)."""
    stream: argparse.ArgumentParser = sub.add_parser(
        "stream",
        help="print events for symbols (a live table, or JSON lines)",
        description=(
            "Stream one event type for some symbols: a live table in a terminal, one JSON\n"
            "object per event per line with --json or through a pipe. Without --url it starts\n"
            "the embedded local DXLink server with a simulated market and streams from it.\n"
            "Times in the table are local."
        ),
        epilog=f"event types (matched case-insensitively):\n{_type_list()}\n\n{_examples()}",
        formatter_class=HelpFormatter,
    )
    stream.add_argument("type", help="event type (listed below), e.g. Quote, Candle, Order")
    stream.add_argument(
        "symbols",
        nargs="+",
        help=f"symbols, e.g. SPY AAPL, 'AAPL{{=5m}}' (candles), {listed_option()} (options)",
    )
    stream.add_argument(
        "--source", help="order source for Order, SpreadOrder, AnalyticOrder (e.g. NTV, ntv)"
    )
    stream.add_argument(
        "--from-time",
        metavar="TIME",
        help="history from this time (time-series types: Candle, TimeAndSale, Greeks, ...):"
        " -2h, -30m, -1d (before now), an ISO datetime (local unless it has an offset)"
        " or epoch milliseconds (default: no history, live events only)",
    )
    stream.add_argument("--url", help="DXLink URL (default: start the embedded local server)")
    stream.add_argument("--token", help="DXLink token for --url (or DXLINK_TOKEN in the env)")
    stream.add_argument("--json", action="store_true", help="one JSON object per event per line")
    stream.add_argument("--count", type=int, help="stop after this many events (default: no limit)")
    stream.add_argument(
        "--duration", type=float, help="stop after this many seconds (default: until Ctrl-C)"
    )
    stream.add_argument("--seed", type=int, default=0, help="embedded server's market seed")
    stream.add_argument("--no-reconnect", action="store_true", help="fail instead of reconnecting")
    add_stream_options(stream)
    return stream


def event_type_named(name: str) -> type[Event]:
    """The event class called ``name`` (case-insensitively), or a :class:`UsageError`."""
    try:
        return event_class(name)
    except KeyError:
        for cls in EVENT_TYPES:
            if cls.__name__.lower() == name.lower():
                return cls
        known = ", ".join(c.__name__ for c in EVENT_TYPES)
        raise UsageError(f"unknown event type {name!r} (known: {known})") from None


def _checked(args: argparse.Namespace) -> tuple[type[Event], int | None]:
    """The event type and ``--from-time`` (epoch ms); every argument checked."""
    event_type = event_type_named(args.type)
    if args.count is not None and args.count < 1:
        raise UsageError("--count must be at least 1")
    if args.duration is not None and args.duration <= 0:
        raise UsageError("--duration must be positive")
    for symbol in args.symbols:
        if not symbol.strip():
            raise UsageError(f"empty symbol {symbol!r}: give symbols such as SPY or AAPL")
    try:
        check_symbols_for(event_type, args.symbols)
    except SymbolError as exc:
        raise UsageError(str(exc)) from None
    order_type = issubclass(event_type, IndexedEvent) and not issubclass(
        event_type, TimeSeriesEvent
    )
    if args.source is not None and not (order_type and event_type.__name__.endswith("Order")):
        raise UsageError(
            f"--source is for Order, SpreadOrder and AnalyticOrder, not {event_type.__name__}"
        )
    if args.source is not None and not args.source.strip():
        raise UsageError("--source must be an order source such as NTV, got ''")
    from_time = None
    if args.from_time is not None:
        if not issubclass(event_type, TimeSeriesEvent):
            raise UsageError(
                "--from-time is for time-series types (Candle, TimeAndSale, Greeks, TheoPrice,"
                f" Underlying), not {event_type.__name__}"
            )
        from_time = parse_time_argument(args.from_time, "--from-time")
    problem = stream_usage_problem(args)
    if problem is not None:
        raise UsageError(problem)
    if args.token is not None and args.url is None:
        raise UsageError("--token needs --url (the embedded local server wants no token)")
    if args.url is not None and not args.url.startswith(("ws://", "wss://")):
        raise UsageError(f"--url must be a ws:// or wss:// URL, got {args.url!r}")
    return event_type, from_time


async def run_stream(args: argparse.Namespace) -> int:
    """Run ``stream`` (the command line's entry for it); returns the exit status."""
    event_type, from_time = _checked(args)
    as_json = args.json or not sys.stdout.isatty()
    policy = NO_RECONNECT if args.no_reconnect else ReconnectPolicy(give_up_after=120.0)
    stream = _Stream(args, event_type, from_time, policy)
    if args.tastytrade:
        async with session_from_args(args) as session:
            await stream.run(session, None, as_json)
        return 0
    if args.url is None:
        from .testing import Market, ServerConfig, open_dxlink_server

        config = ServerConfig(simulate=True)
        async with open_dxlink_server(config=config, market=Market(seed=args.seed)) as server:
            await stream.run(server.url, None, as_json)
        return 0
    await stream.run(args.url, args.token or os.environ.get("DXLINK_TOKEN"), as_json)
    return 0


def _json_line(event: Event) -> bytes:
    return orjson.dumps(encode_full(event)) + b"\n"


class _Stream:
    def __init__(
        self,
        args: argparse.Namespace,
        event_type: type[Event],
        from_time: int | None,
        policy: ReconnectPolicy,
    ) -> None:
        self.args = args
        self.event_type = event_type
        self.from_time = from_time
        self.policy = policy
        self.seen = 0

    @property
    def done(self) -> bool:
        return self.args.count is not None and self.seen >= self.args.count

    async def run(self, target: str | TokenSource, token: str | None, as_json: bool) -> None:
        if as_json:
            await self._json(target, token)
        else:
            await self._table(target, token)

    def _subscribe(self, feed: Any) -> Any:
        return feed.subscribe(
            self.event_type, self.args.symbols, from_time=self.from_time, source=self.args.source
        )

    def _deadline(self) -> float:
        duration = self.args.duration
        return trio.current_time() + (duration if duration is not None else math.inf)

    async def _json(self, target: str | TokenSource, token: str | None) -> None:
        out = sys.stdout
        with trio.move_on_at(self._deadline()):
            async with (
                open_dxlink(target, token, reconnect=self.policy) as feed,
                self._subscribe(feed) as rx,
            ):
                async for batch in rx.batches():
                    for event in batch:
                        out.buffer.write(_json_line(event))
                        self.seen += 1
                        if self.done:
                            break
                    out.flush()
                    if self.done:
                        break
        out.flush()

    async def _table(self, target: str | TokenSource, token: str | None) -> None:
        table = EventTable(self.event_type)
        status = StatusLine(SUBSCRIPTION_COUNTERS, clock=trio.current_time)
        title = self.event_type.__name__ + (
            f" · source {self.args.source}" if self.args.source else ""
        )

        def body(height: int) -> Table:
            return table.render(title, max(height - 8, 1))

        deadline = self._deadline()
        async with live_screen(body, status) as redraw:
            with trio.move_on_at(deadline):
                async with (
                    open_dxlink(target, token, reconnect=self.policy) as feed,
                    self._subscribe(feed) as rx,
                ):
                    status.watch(feed.statistics, rx.statistics)
                    redraw()
                    try:
                        await self._fill(rx, table, status)
                    finally:
                        status.stop()

    async def _fill(self, rx: Any, table: EventTable, status: StatusLine) -> None:
        async for batch in rx.batches():
            if self.args.count is not None:
                batch = batch[: self.args.count - self.seen]
            table.add_all(batch)
            status.count(len(batch))
            self.seen += len(batch)
            if self.done:
                break
