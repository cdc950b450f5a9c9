"""The ``trio-dxlink`` command line (also ``python -m trio_dxlink``).

``stream TYPE SYMBOL...`` prints events: as a live table in a terminal, or one JSON object per
line with ``--json`` (and whenever standard output is not a terminal). With no ``--url`` it
starts the embedded local DXLink server in-process, with a simulated market, and streams from it.

``stream --tastytrade`` signs in to tastytrade (``TT_SECRET`` / ``TT_REFRESH``; ``--sandbox``,
``--api-url``) and streams from the DXLink server its quote token is for.

``book SYMBOL --source NTV`` shows a live order book (``_cli_book.py``): a ladder drawn in place,
or one JSON object per view with ``--json``.

``record TYPE SYMBOL... -o FILE`` records a session; ``replay FILE`` prints a recording's events
as NDJSON (``_cli_record.py``).

``serve`` runs the local DXLink server until interrupted and prints ``listening on ws://HOST:PORT``
as its first line. ``serve --tastytrade`` runs the tastytrade fake beside it and prints its API
addresses and (made-up) credentials next.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import shutil
import sys
from collections.abc import Sequence
from typing import Any, TextIO

import attrs
import orjson
import trio

from ._cli_book import BookUsageError, add_book_parser, run_book
from ._cli_record import RecordUsageError, add_record_parsers, run_record, run_replay
from ._cli_tastytrade import (
    add_serve_options,
    add_stream_options,
    fake_banner,
    serve_tastytrade_fake,
    session_from_args,
    stream_usage_problem,
)
from ._client import NO_RECONNECT, ReconnectPolicy
from ._codec import encode_full
from ._exceptions import DXLinkError
from ._open import open_dxlink
from ._tokens import TokenSource
from ._util import unwrap_group
from .events import EVENT_TYPES, Event, event_class

__all__ = ["main"]

log = logging.getLogger("trio_dxlink.cli")


class UsageError(Exception):
    """A bad command-line argument (reported in one line, exit status 2)."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trio-dxlink",
        description="Stream dxFeed DXLink market data, or run a local DXLink server.",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="log more (-vv: debug)")
    sub = parser.add_subparsers(dest="command", required=True)

    stream = sub.add_parser("stream", help="print events for symbols")
    stream.add_argument("type", help="event type, e.g. Quote, Trade, Greeks, Candle")
    stream.add_argument("symbols", nargs="+", help="symbols, e.g. SPY AAPL .SPY250117C500")
    stream.add_argument("--url", help="DXLink URL (default: start the embedded local server)")
    stream.add_argument("--token", help="DXLink token for --url (or DXLINK_TOKEN in the env)")
    stream.add_argument("--json", action="store_true", help="one JSON object per event per line")
    stream.add_argument("--count", type=int, help="stop after this many events")
    stream.add_argument("--duration", type=float, help="stop after this many seconds")
    stream.add_argument(
        "--from-time", type=int, help="history from this epoch-ms time (time-series events)"
    )
    stream.add_argument("--seed", type=int, default=0, help="embedded server's market seed")
    stream.add_argument("--no-reconnect", action="store_true", help="fail instead of reconnecting")
    add_stream_options(stream)

    add_book_parser(sub)
    add_record_parsers(sub)

    serve = sub.add_parser("serve", help="run the local DXLink server")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on")
    serve.add_argument("--port", type=int, default=0, help="port (0: any free port)")
    serve.add_argument("--token", help="require this token (default: no auth)")
    serve.add_argument("--seed", type=int, default=0, help="market simulation seed")
    serve.add_argument(
        "--update-interval", type=float, default=0.1, help="seconds between market updates"
    )
    serve.add_argument(
        "--keepalive-timeout", type=float, default=60.0, help="server keepalive timeout (s)"
    )
    serve.add_argument(
        "--max-message-size", type=int, default=2**20, help="largest client frame (bytes)"
    )
    serve.add_argument("--reject-tokens", action="store_true", help="fault: reject every token")
    serve.add_argument(
        "--drop-every", type=float, help="fault: drop every connection every N seconds"
    )
    serve.add_argument(
        "--stall-every", type=float, help="fault: stop sending (without closing) every N s"
    )
    serve.add_argument(
        "--stall-for", type=float, default=90.0, help="how long each stall lasts (s)"
    )
    serve.add_argument(
        "--channel-error-every",
        type=float,
        help="fault: send ERROR on one channel of each connection every N s",
    )
    serve.add_argument(
        "--close-channel-every",
        type=float,
        help="fault: close one channel of each connection every N s",
    )
    add_serve_options(serve)
    return parser


def _event_type(name: str) -> type[Event]:
    try:
        return event_class(name)
    except KeyError:
        for cls in EVENT_TYPES:
            if cls.__name__.lower() == name.lower():
                return cls
        known = ", ".join(c.__name__ for c in EVENT_TYPES)
        raise UsageError(f"unknown event type {name!r} (known: {known})") from None


def _json_line(event: Event) -> bytes:
    return orjson.dumps(encode_full(event)) + b"\n"


_COLUMNS = {
    "Quote": ["bid_size", "bid_price", "ask_price", "ask_size", "bid_exchange_code"],
    "Trade": ["price", "size", "change", "day_volume", "exchange_code"],
    "TradeETH": ["price", "size", "change", "day_volume", "exchange_code"],
    "Summary": [
        "day_open_price",
        "day_high_price",
        "day_low_price",
        "day_close_price",
        "prev_day_close_price",
        "open_interest",
    ],
    "Greeks": ["price", "volatility", "delta", "gamma", "theta", "vega", "rho"],
    "TheoPrice": ["price", "underlying_price", "delta", "gamma"],
    "Candle": ["time", "open", "high", "low", "close", "volume", "vwap"],
    "TimeAndSale": ["time", "price", "size", "aggressor_side", "exchange_code"],
    "Profile": ["description", "trading_status", "high_52_week_price", "low_52_week_price"],
}
_HIDDEN = {"event_symbol", "event_time", "sequence", "time_nano_part", "event_flags", "index"}


class _Table:
    """A live table, one row per symbol, redrawn in place with ANSI escapes."""

    def __init__(self, out: TextIO, event_type: type[Event]) -> None:
        self.out = out
        self.rows: dict[str, Event] = {}
        names = [f.name for f in attrs.fields(event_type)]  # type: ignore[arg-type]
        preferred = _COLUMNS.get(event_type.__name__)
        if preferred is None:
            preferred = [n for n in names if n not in _HIDDEN and not n.endswith("_time")]
        self.columns = preferred
        self.drawn = 0

    def update(self, event: Event) -> None:
        self.rows[event.event_symbol] = event

    def draw(self) -> None:
        width = shutil.get_terminal_size((120, 24)).columns
        header = ["symbol", *self.columns]
        lines = [self._row(header, width)]
        for symbol in sorted(self.rows):
            event = self.rows[symbol]
            cells = [symbol, *(_cell(getattr(event, c)) for c in self.columns)]
            lines.append(self._row(cells, width))
        if self.drawn:
            self.out.write(f"\x1b[{self.drawn}F")
        self.out.write("".join(f"\x1b[2K{line}\n" for line in lines))
        self.out.flush()
        self.drawn = len(lines)

    @staticmethod
    def _row(cells: Sequence[str], width: int) -> str:
        text = " ".join(f"{cell:>12}" if i else f"{cell:<20}" for i, cell in enumerate(cells))
        return text[:width]


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return "-" if math.isnan(value) else f"{value:.6g}"
    if value is None:
        return "-"
    return str(value)


async def _stream(args: argparse.Namespace) -> int:
    event_type = _event_type(args.type)
    if args.count is not None and args.count < 1:
        raise UsageError("--count must be at least 1")
    if args.duration is not None and args.duration <= 0:
        raise UsageError("--duration must be positive")
    as_json = args.json or not sys.stdout.isatty()
    problem = stream_usage_problem(args)
    if problem is not None:
        raise UsageError(problem)
    policy = NO_RECONNECT if args.no_reconnect else ReconnectPolicy(give_up_after=120.0)
    if args.tastytrade:
        async with session_from_args(args) as session:
            return await _consume(args, event_type, session, None, policy, as_json)
    if args.url is None:
        from .testing import Market, ServerConfig, open_dxlink_server

        config = ServerConfig(simulate=True)
        async with open_dxlink_server(config=config, market=Market(seed=args.seed)) as server:
            return await _consume(args, event_type, server.url, None, policy, as_json)
    if not args.url.startswith(("ws://", "wss://")):
        raise UsageError(f"--url must be a ws:// or wss:// URL, got {args.url!r}")
    token = args.token or os.environ.get("DXLINK_TOKEN")
    return await _consume(args, event_type, args.url, token, policy, as_json)


async def _consume(
    args: argparse.Namespace,
    event_type: type[Event],
    target: str | TokenSource,
    token: str | None,
    policy: ReconnectPolicy,
    as_json: bool,
) -> int:
    seen = 0
    out = sys.stdout
    table = None if as_json else _Table(out, event_type)
    with trio.move_on_after(args.duration if args.duration is not None else math.inf):
        async with (
            open_dxlink(target, token, reconnect=policy) as feed,
            feed.subscribe(event_type, args.symbols, from_time=args.from_time) as rx,
        ):
            next_draw = 0.0
            async for batch in rx.batches():
                for event in batch:
                    if table is None:
                        out.buffer.write(_json_line(event))
                    else:
                        table.update(event)
                    seen += 1
                    if args.count is not None and seen >= args.count:
                        break
                if table is not None and trio.current_time() >= next_draw:
                    table.draw()
                    next_draw = trio.current_time() + 0.25
                else:
                    out.flush()
                if args.count is not None and seen >= args.count:
                    break
    if table is not None:
        table.draw()
    out.flush()
    return 0


async def _serve(args: argparse.Namespace) -> int:
    from .testing import DXLinkServer, Market, ServerConfig, TastytradeServer, serve_dxlink

    for flag, port in (("--port", args.port), ("--api-port", args.api_port)):
        if not 0 <= port <= 65535:
            raise UsageError(f"{flag} must be 0..65535, got {port}")
    if not args.tastytrade and (args.api_port or args.not_entitled):
        raise UsageError("--api-port and --not-entitled need --tastytrade")
    for name in ("drop_every", "stall_every", "channel_error_every", "close_channel_every"):
        value = getattr(args, name)
        if value is not None and value <= 0:
            raise UsageError(f"--{name.replace('_', '-')} must be positive")
    config = ServerConfig(
        token=args.token,
        simulate=True,
        update_interval=args.update_interval,
        keepalive_timeout=args.keepalive_timeout,
        max_message_size=args.max_message_size,
    )
    market = Market(seed=args.seed)
    async with trio.open_nursery() as nursery:
        fake: TastytradeServer | None = None
        try:
            if args.tastytrade:
                fake = await nursery.start(serve_tastytrade_fake, args, config, market)
                server: DXLinkServer = fake.dxlink
            else:
                server = await nursery.start(
                    lambda task_status: serve_dxlink(
                        host=args.host,
                        port=args.port,
                        config=config,
                        market=market,
                        task_status=task_status,
                    )
                )
        except OSError as exc:
            raise UsageError(f"cannot listen on {args.host}:{args.port}: {exc}") from exc
        print(f"listening on {server.url}", flush=True)
        if fake is not None:
            print("\n".join(fake_banner(fake)), flush=True)
        if args.reject_tokens:
            server.reject_all_tokens = True
        for every, fault in (
            (args.drop_every, lambda: server.drop_all()),
            (args.channel_error_every, lambda: _each_channel(server, "error")),
            (args.close_channel_every, lambda: _each_channel(server, "close")),
        ):
            if every:
                nursery.start_soon(_repeat, every, fault)
        if args.stall_every:
            nursery.start_soon(_stalls, server, args.stall_every, args.stall_for)
    return 0


async def _repeat(every: float, fault: Any) -> None:
    while True:
        await trio.sleep(every)
        fault()


async def _stalls(server: Any, every: float, duration: float) -> None:
    while True:
        await trio.sleep(every)
        server.stall()
        await trio.sleep(duration)
        server.resume()


def _each_channel(server: Any, fault: str) -> None:
    for conn in server.live:
        if conn.channels:
            channel = min(conn.channels)
            if fault == "error":
                server.send_error(conn.id, channel, "UNKNOWN", "injected by --channel-error-every")
            else:
                server.close_channel(conn.id, channel)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = _parser().parse_args(argv)
    level = (logging.WARNING, logging.INFO, logging.DEBUG)[min(args.verbose, 2)]
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    run = {"stream": _stream, "book": run_book, "serve": _serve}.get(args.command)
    run = run or {"record": run_record, "replay": run_replay}[args.command]
    try:
        with unwrap_group():
            return trio.run(run, args)
    except (UsageError, BookUsageError, RecordUsageError) as exc:
        print(f"trio-dxlink: error: {exc}", file=sys.stderr)
        return 2
    except DXLinkError as exc:
        print(f"trio-dxlink: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (``| head``): stop quietly, and keep Python from complaining
        # about the flush at exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
