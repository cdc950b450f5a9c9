"""The command line's ``book`` subcommand: a live order-book ladder, or views as NDJSON.

``book AAPL --source NTV [--source ntv ...]`` follows ``feed.order_book(...)`` and draws the
book in place in a terminal: bids and asks side by side, best prices on the top row, with each
source's snapshot status in the title. ``--json`` (and any standard output that is not a
terminal) prints one JSON object per view instead. With no ``--url`` it starts the embedded
local server, whose book stays empty unless its market simulates one.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import sys
from typing import Any, TextIO

import orjson
import trio

from ._book import BookView, PriceLevel, check_book_args
from ._client import NO_RECONNECT, ReconnectPolicy
from ._exceptions import SymbolError
from ._open import open_dxlink
from .events import AnalyticOrder, Order, SpreadOrder

__all__ = ["BookUsageError", "Ladder", "add_book_parser", "run_book", "view_json"]

_TYPES = {cls.__name__.lower(): cls for cls in (Order, SpreadOrder, AnalyticOrder)}


class BookUsageError(Exception):
    """A bad ``book`` argument (reported in one line, exit status 2)."""


def add_book_parser(sub: Any) -> None:
    """Add the ``book`` subcommand to the command line's subparsers."""
    book = sub.add_parser("book", help="show a live order book (depth of market)")
    book.add_argument("symbol", help="the symbol, e.g. AAPL or /ESZ24:XCME")
    book.add_argument(
        "--source",
        action="append",
        required=True,
        help="order source, e.g. NTV (full book) or ntv (price levels); repeat for more",
    )
    book.add_argument("--depth", type=int, default=10, help="price levels per side (default 10)")
    book.add_argument(
        "--type", default="Order", help="Order (default), SpreadOrder or AnalyticOrder"
    )
    book.add_argument("--url", help="DXLink URL (default: start the embedded local server)")
    book.add_argument("--token", help="DXLink token for --url (or DXLINK_TOKEN in the env)")
    book.add_argument("--json", action="store_true", help="one JSON object per view per line")
    book.add_argument("--count", type=int, help="stop after this many views")
    book.add_argument("--duration", type=float, help="stop after this many seconds")
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


def _number(value: float) -> str:
    if math.isnan(value):
        return "-"
    return f"{value:.6g}"


class Ladder:
    """A book drawn in place with ANSI escapes: a title, a header and ``depth`` rows."""

    def __init__(self, out: TextIO, depth: int) -> None:
        self.out = out
        self.depth = depth
        self.drawn = 0

    def lines(self, view: BookView[Any], width: int) -> list[str]:
        """The lines that show ``view`` (pure; :meth:`draw` writes them)."""
        status = " ".join(f"{name}:{state.value}" for name, state in view.sources.items())
        flag = " (rebuilt after reconnect)" if view.rebuilt else ""
        out = [f"{view.symbol}  {status}{flag}"]
        out.append(f"{'count':>6} {'size':>10} {'bid':>12} | {'ask':<12} {'size':<10} {'count':<6}")
        for row in range(self.depth):
            bid = view.bids[row] if row < len(view.bids) else None
            ask = view.asks[row] if row < len(view.asks) else None
            left = (
                f"{bid.count:>6} {_number(bid.size):>10} {_number(bid.price):>12}"
                if bid
                else " " * 30
            )
            right = (
                f"{_number(ask.price):<12} {_number(ask.size):<10} {ask.count:<6}" if ask else ""
            )
            out.append(f"{left} | {right}")
        return [line[:width] for line in out]

    def draw(self, view: BookView[Any]) -> None:
        """Draw ``view`` over the previous drawing."""
        width = shutil.get_terminal_size((100, 24)).columns
        lines = self.lines(view, width)
        if self.drawn:
            self.out.write(f"\x1b[{self.drawn}F")
        self.out.write("".join(f"\x1b[2K{line}\n" for line in lines))
        self.out.flush()
        self.drawn = len(lines)


async def run_book(args: argparse.Namespace) -> int:
    """Run ``book`` (the command line's entry for it)."""
    event_type = _TYPES.get(args.type.lower())
    if event_type is None:
        raise BookUsageError(
            f"--type must be Order, SpreadOrder or AnalyticOrder, got {args.type!r}"
        )
    try:
        check_book_args(event_type, args.symbol, args.source, args.depth)
    except (SymbolError, ValueError, TypeError) as exc:
        raise BookUsageError(str(exc)) from None
    if args.count is not None and args.count < 1:
        raise BookUsageError("--count must be at least 1")
    if args.duration is not None and args.duration <= 0:
        raise BookUsageError("--duration must be positive")
    if args.url is None:
        from .testing import Market, ServerConfig, open_dxlink_server

        config = ServerConfig(simulate=True)
        async with open_dxlink_server(config=config, market=Market(seed=args.seed)) as server:
            return await _follow(args, event_type, server.url, None)
    if not args.url.startswith(("ws://", "wss://")):
        raise BookUsageError(f"--url must be a ws:// or wss:// URL, got {args.url!r}")
    return await _follow(args, event_type, args.url, args.token or os.environ.get("DXLINK_TOKEN"))


async def _follow(
    args: argparse.Namespace, event_type: type[Any], url: str, token: str | None
) -> int:
    as_json = args.json or not sys.stdout.isatty()
    out = sys.stdout
    ladder = None if as_json else Ladder(out, args.depth)
    policy = NO_RECONNECT if args.no_reconnect else ReconnectPolicy(give_up_after=120.0)
    shown = 0
    with trio.move_on_after(args.duration if args.duration is not None else math.inf):
        async with (
            open_dxlink(url, token, reconnect=policy) as feed,
            feed.order_book(
                args.symbol, sources=args.source, depth=args.depth, event_type=event_type
            ) as book,
        ):
            if ladder is not None:
                ladder.draw(book.view)  # empty until the snapshots arrive
            async for view in book:
                if ladder is None:
                    out.buffer.write(view_json(view))
                    out.flush()
                else:
                    ladder.draw(view)
                shown += 1
                if args.count is not None and shown >= args.count:
                    break
    out.flush()
    return 0
