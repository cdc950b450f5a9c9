"""The ``trio-dxlink`` command line (also ``python -m trio_dxlink``).

``stream TYPE SYMBOL...`` prints events: as a live table in a terminal, or one JSON object per
line with ``--json`` (and whenever standard output is not a terminal). With no ``--url`` it
starts the embedded local DXLink server in-process, with a simulated market, and streams from it.

``stream --tastytrade`` signs in to tastytrade (``TT_SECRET`` / ``TT_REFRESH``; ``--sandbox``,
``--api-url``) and streams from the DXLink server its quote token is for.

``book SYMBOL --source NTV`` shows a live order book (``_cli_book.py``): a ladder drawn in place
with a status line, as ``stream``'s table is, or one JSON object per view with ``--json``.

``record TYPE SYMBOL... -o FILE`` records a session; ``replay FILE`` prints a recording's events
as NDJSON; ``export FILE --to parquet DIR`` writes its events as Parquet (``_cli_record.py``).

``bridge TYPE SYMBOL... --redis URL`` publishes events to Redis Streams (``_cli_bridge.py``).

``serve`` runs the local DXLink server until interrupted and prints ``listening on ws://HOST:PORT``
as its first line. ``serve --replay FILE [--speed X]`` serves a recording's events (from the first
subscription on, in recorded time) instead of a simulated market. ``serve --tastytrade`` runs the
tastytrade fake beside it and prints its API addresses and (made-up) credentials next.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

import trio

from ._cli_book import add_book_parser, run_book
from ._cli_bridge import add_bridge_parser, run_bridge_command
from ._cli_common import OneLineErrorParser, UsageError
from ._cli_record import (
    RecordUsageError,
    add_record_parsers,
    run_export,
    run_record,
    run_replay,
)
from ._cli_stream import add_stream_parser, run_stream
from ._cli_tastytrade import add_serve_options, fake_banner, serve_tastytrade_fake
from ._exceptions import DXLinkError
from ._recording import iter_records
from ._util import unwrap_group

__all__ = ["main"]

log = logging.getLogger("trio_dxlink.cli")


def _parser() -> argparse.ArgumentParser:
    parser = OneLineErrorParser(
        prog="trio-dxlink",
        description="Stream dxFeed DXLink market data, or run a local DXLink server.",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="log more (-vv: debug)")
    sub = parser.add_subparsers(dest="command", required=True)

    add_stream_parser(sub)
    add_book_parser(sub)
    add_record_parsers(sub)
    add_bridge_parser(sub)

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
    serve.add_argument(
        "--replay", metavar="FILE", help="serve a recording's events instead of a simulated market"
    )
    serve.add_argument(
        "--speed", type=float, default=1.0, help="--replay in recorded time scaled by this"
    )
    serve.add_argument(
        "--no-simulate",
        action="store_true",
        help="a scripted server: send no simulated market data (what a client publishes is all)",
    )
    add_serve_options(serve)
    return parser


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
    if not args.speed > 0:
        raise UsageError(f"--speed must be positive, got {args.speed}")
    if args.replay is not None:
        for _record in iter_records(args.replay):  # the whole file checked: a RecordingError
            pass  # now, not when a client subscribes
    config = ServerConfig(
        token=args.token,
        simulate=args.replay is None and not args.no_simulate,
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
        if args.replay is not None:
            nursery.start_soon(_play, server, args.replay, args.speed)
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


async def _play(server: Any, path: str, speed: float) -> None:
    from .testing import play_recording

    played = await play_recording(server, path, speed=speed)
    print(f"replay finished: {played} events from {path}", file=sys.stderr, flush=True)


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
    run = {
        "stream": run_stream,
        "book": run_book,
        "serve": _serve,
        "record": run_record,
        "replay": run_replay,
        "export": run_export,
        "bridge": run_bridge_command,
    }[args.command]
    try:
        with unwrap_group():
            return trio.run(run, args)
    except (UsageError, RecordUsageError) as exc:
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
