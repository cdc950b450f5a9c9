"""The command line's ``book`` subcommand: a live order-book ladder, or views as NDJSON.

``book AAPL --source NTV [--source ntv ...]`` follows ``feed.order_book(...)`` and, in a
terminal, draws the book as a ladder with rich (:class:`Ladder`): bids and asks side by side,
best prices on the top row, each source's snapshot status in the title, and the status line
shared with ``stream`` under it (:func:`~trio_dxlink._cli_common.live_screen`): drawn before
anything connects and redrawn in place four times a second whatever happens (reconnects
included), with the book's gaps, rebuilds and skipped events. ``--json`` (and any standard
output that is not a terminal) prints one JSON object per view instead. With no ``--url`` it
starts the embedded local server with its simulated market (order books for sources ``NTV``
and ``ntv``).

Every bad argument is a :class:`~trio_dxlink._cli_common.UsageError` (one line, exit status 2)
before anything connects.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Iterable
from typing import Any

import orjson
import trio
from rich import box
from rich.console import Group
from rich.table import Table
from rich.text import Text

from ._book import BookView, PriceLevel, check_book_args
from ._cli_common import Counter, HelpFormatter, StatusLine, UsageError, live_screen
from ._cli_table import price_text, size_text
from ._client import NO_RECONNECT, ReconnectPolicy
from ._exceptions import SymbolError
from ._open import open_dxlink
from .events import AnalyticOrder, Order, SpreadOrder

__all__ = ["BOOK_COUNTERS", "Ladder", "add_book_parser", "run_book", "view_json"]

_TYPES = {cls.__name__.lower(): cls for cls in (Order, SpreadOrder, AnalyticOrder)}

BOOK_COUNTERS = (
    Counter("gaps", lambda stats: stats.book.gaps),
    Counter("rebuilds", lambda stats: stats.book.rebuilds, "green"),
    Counter("skipped", lambda stats: stats.skipped, "red"),
)
"""The status line's counters for an order book (its ``statistics()``)."""


def add_book_parser(sub: Any) -> None:
    """Add the ``book`` subcommand to the command line's subparsers."""
    book = sub.add_parser(
        "book",
        help="show a live order book (depth of market)",
        description=(
            "Follow the order book of one symbol from one or more order sources: a ladder\n"
            "drawn in place in a terminal, one JSON object per view per line with --json or\n"
            "through a pipe. Without --url it starts the embedded local DXLink server with a\n"
            "simulated market (sources NTV and ntv) and follows its book."
        ),
        epilog=(
            "examples:\n"
            "  trio-dxlink book SPY --source NTV                ladder from the embedded server\n"
            "  trio-dxlink book SPY --source ntv --json --count 3\n"
            '  trio-dxlink book AAPL --source NTV --url wss://host/path --token "$TOKEN"\n'
        ),
        formatter_class=HelpFormatter,
    )
    book.add_argument("symbol", help="the symbol, e.g. AAPL or /ESZ24:XCME")
    book.add_argument(
        "--source",
        action="append",
        required=True,
        help="order source, e.g. NTV (full book) or ntv (price levels); repeat for more",
    )
    book.add_argument("--depth", type=int, default=10, help="price levels per side")
    book.add_argument("--type", default="Order", help="Order, SpreadOrder or AnalyticOrder")
    book.add_argument("--url", help="DXLink URL (default: start the embedded local server)")
    book.add_argument("--token", help="DXLink token for --url (or DXLINK_TOKEN in the env)")
    book.add_argument("--json", action="store_true", help="one JSON object per view per line")
    book.add_argument("--count", type=int, help="stop after this many views (default: no limit)")
    book.add_argument(
        "--duration", type=float, help="stop after this many seconds (default: until Ctrl-C)"
    )
    book.add_argument("--seed", type=int, default=0, help="embedded server's market seed")
    book.add_argument("--no-reconnect", action="store_true", help="fail instead of reconnecting")


def view_json(view: BookView[Any]) -> bytes:
    """One view as a JSON line: symbol, version, rebuilt, sources, bids and asks."""

    def side(levels: tuple[PriceLevel, ...]) -> list[dict[str, Any]]:
        return [{"price": lv.price, "size": lv.size, "count": lv.count} for lv in levels]

    return (
        orjson.dumps(
            {
                "symbol": view.symbol,
                "version": view.version,
                "rebuilt": view.rebuilt,
                "sources": {name: status.value for name, status in view.sources.items()},
                "bids": side(view.bids),
                "asks": side(view.asks),
            }
        )
        + b"\n"
    )


class Ladder:
    """The book as a rich table (pure: a view in, a renderable out): a title with the symbol
    and each source's snapshot status, a header, then one row per price level, bids (best,
    highest, first) on the left and asks (best, lowest, first) on the right."""

    def __init__(self, symbol: str, sources: Iterable[str], depth: int) -> None:
        self.symbol = symbol
        self.sources = tuple(sources)
        self.depth = depth

    def title(self, view: BookView[Any] | None) -> str:
        """The title: symbol, each source's status (``pending`` until the first view), and
        how many times the book was rebuilt after a lost connection."""
        statuses = (
            {name: status.value for name, status in view.sources.items()}
            if view is not None
            else dict.fromkeys(self.sources, "pending")
        )
        text = "  ".join([self.symbol, *(f"{name}:{state}" for name, state in statuses.items())])
        if view is not None and view.rebuilds:
            times = "once" if view.rebuilds == 1 else f"{view.rebuilds} times"
            text += f"  (rebuilt after reconnect, {times})"
        return text

    def render(self, view: BookView[Any] | None, max_rows: int | None = None) -> Group:
        """The ladder of ``view`` (``None``: nothing yet, the empty ladder), at most
        ``max_rows`` rows (default: the depth), under its title (one line, cut to the width
        of the terminal rather than wrapped)."""
        table = Table(
            box=box.SIMPLE_HEAD,
            header_style="bold",
            show_edge=False,
            pad_edge=False,
        )
        for header in ("orders", "bid size", "bid"):
            table.add_column(header, justify="right", style="green", no_wrap=True)
        for header in ("ask", "ask size", "orders"):
            table.add_column(header, justify="left", style="red", no_wrap=True)
        bids = view.bids if view is not None else ()
        asks = view.asks if view is not None else ()
        rows = self.depth if max_rows is None else max(1, min(self.depth, max_rows))
        for row in range(rows):
            bid = bids[row] if row < len(bids) else None
            ask = asks[row] if row < len(asks) else None
            table.add_row(*_level(bid, bid_side=True), *_level(ask, bid_side=False))
        title = Text(self.title(view), style="italic", no_wrap=True, overflow="ellipsis")
        return Group(title, table)


def _level(level: PriceLevel | None, *, bid_side: bool) -> list[Text | str]:
    if level is None:
        return ["", "", ""]
    cells: list[Text | str] = [f"{level.count:,}", size_text(level.size)]
    cells.append(Text(price_text(level.price), style="bold"))
    return cells if bid_side else cells[::-1]


def _checked(args: argparse.Namespace) -> type[Any]:
    """The event type; every argument checked."""
    event_type = _TYPES.get(args.type.lower())
    if event_type is None:
        raise UsageError(f"--type must be Order, SpreadOrder or AnalyticOrder, got {args.type!r}")
    if not args.symbol.strip():
        raise UsageError(f"empty symbol {args.symbol!r}: give a symbol such as SPY or AAPL")
    try:
        check_book_args(event_type, args.symbol, args.source, args.depth)
    except (SymbolError, ValueError, TypeError) as exc:
        raise UsageError(str(exc)) from None
    if args.count is not None and args.count < 1:
        raise UsageError("--count must be at least 1")
    if args.duration is not None and args.duration <= 0:
        raise UsageError("--duration must be positive")
    if args.token is not None and args.url is None:
        raise UsageError("--token needs --url (the embedded local server wants no token)")
    if args.url is not None and not args.url.startswith(("ws://", "wss://")):
        raise UsageError(f"--url must be a ws:// or wss:// URL, got {args.url!r}")
    return event_type


async def run_book(args: argparse.Namespace) -> int:
    """Run ``book`` (the command line's entry for it); returns the exit status."""
    event_type = _checked(args)
    if args.url is None:
        from .testing import Market, ServerConfig, open_dxlink_server

        config = ServerConfig(simulate=True)
        async with open_dxlink_server(config=config, market=Market(seed=args.seed)) as server:
            return await _follow(args, event_type, server.url, None)
    return await _follow(args, event_type, args.url, args.token or os.environ.get("DXLINK_TOKEN"))


async def _follow(
    args: argparse.Namespace, event_type: type[Any], url: str, token: str | None
) -> int:
    policy = NO_RECONNECT if args.no_reconnect else ReconnectPolicy(give_up_after=120.0)
    deadline = trio.current_time() + (args.duration if args.duration is not None else math.inf)
    if args.json or not sys.stdout.isatty():
        await _print_views(args, event_type, url, token, policy, deadline)
    else:
        await _draw_ladder(args, event_type, url, token, policy, deadline)
    return 0


def _order_book(feed: Any, args: argparse.Namespace, event_type: type[Any]) -> Any:
    return feed.order_book(
        args.symbol, sources=args.source, depth=args.depth, event_type=event_type
    )


async def _print_views(
    args: argparse.Namespace,
    event_type: type[Any],
    url: str,
    token: str | None,
    policy: ReconnectPolicy,
    deadline: float,
) -> None:
    out = sys.stdout
    shown = 0
    with trio.move_on_at(deadline):
        async with (
            open_dxlink(url, token, reconnect=policy) as feed,
            _order_book(feed, args, event_type) as book,
        ):
            async for view in book:
                out.buffer.write(view_json(view))
                out.flush()
                shown += 1
                if args.count is not None and shown >= args.count:
                    break
    out.flush()


async def _draw_ladder(
    args: argparse.Namespace,
    event_type: type[Any],
    url: str,
    token: str | None,
    policy: ReconnectPolicy,
    deadline: float,
) -> None:
    ladder = Ladder(args.symbol, args.source, args.depth)
    status = StatusLine(BOOK_COUNTERS, clock=trio.current_time)
    shown: list[BookView[Any]] = []  # the newest view handed out, once there is one

    def body(height: int) -> Group:
        return ladder.render(shown[-1] if shown else None, max_rows=height - 8)

    async with live_screen(body, status) as redraw:
        with trio.move_on_at(deadline):
            async with (
                open_dxlink(url, token, reconnect=policy) as feed,
                _order_book(feed, args, event_type) as book,
            ):
                status.watch(feed.statistics, book.statistics)
                redraw()
                try:
                    views = 0
                    async for view in book:
                        shown[:] = [view]
                        status.count(book.statistics().events - status.events)
                        views += 1
                        if args.count is not None and views >= args.count:
                            break
                finally:
                    status.stop()
