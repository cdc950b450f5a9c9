"""A minimal, fast DXLink server process for benchmarks (not the faithful test server).

Usage::

    python benchmarks/blast_server.py --port 0 --mode throughput|rate \\
        [--rate N] [--frame-events 500] [--symbols K]

It prints ``listening on ws://127.0.0.1:PORT`` as its first line, then serves any number of
clients until it is terminated. Each connection gets the real DXLink handshake, spoken by the local
test server's pure core (``trio_dxlink.testing._server_core.ServerProtocol``, which accepts any
token here)::

    C: SETUP              S: SETUP, AUTH_STATE UNAUTHORIZED
    C: AUTH (any token)   S: AUTH_STATE AUTHORIZED
    C: CHANNEL_REQUEST    S: CHANNEL_OPENED (parameters echoed, plus subFormat LIST)
    C: FEED_SETUP         S: FEED_CONFIG (COMPACT)
    C: FEED_SUBSCRIPTION  S: FEED_DATA ... (from the first Quote subscription on)

FEED_DATA frames are COMPACT ``["Quote", [...]]`` arrays of ``--frame-events`` events laid out in
the field order *that client* asked for in FEED_SETUP (tastytrade's SDK asks for its own list,
without ``eventType``), encoded with :func:`trio_dxlink._codec.encode_compact`. Symbols cycle
through what the client subscribed (at most ``--symbols`` of them, if given); the frames are
encoded once per subscription change and then re-sent as they are.

* ``--mode throughput``: send as fast as the socket accepts.
* ``--mode rate``: a steady ``--rate`` events/s; every event's ``eventTime`` is the wall-clock
  time of the send in **nanoseconds** (``time.time_ns()``), so a client on the same machine
  computes its latency as ``time.time_ns() - event_time``.

The core also keeps time: KEEPALIVE when nothing has been sent for half the client's keepalive
timeout, ERROR TIMEOUT and a close for a client silent for 60 s. The FEED_DATA frames bypass it:
they are written straight to the socket (the core is only told that something was sent).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import sys
import time
from collections.abc import Awaitable, Callable

import orjson
import trio
import trio_websocket

from trio_dxlink._codec import encode_compact
from trio_dxlink.events import Quote
from trio_dxlink.testing import ServerConfig
from trio_dxlink.testing._server_core import (
    AuthRequested,
    ChannelCancelled,
    Close,
    ServerProtocol,
    SubscriptionChanged,
)

MAX_MESSAGE_SIZE = 64 * 1024 * 1024
SERVER_VERSION = "1.0-trio-dxlink-blast/0.1"
STAMP = 8_888_888_888_888_888_888
"""Placeholder ``eventTime`` in rate-mode frames, replaced by ``time.time_ns()`` at send time."""
STAMP_TEXT = str(STAMP)
CONFIG = ServerConfig(
    simulate=False,
    token="any",  # UNAUTHORIZED after SETUP, then AUTHORIZED for whatever token AUTH presents
    user_id="bench",
    version=SERVER_VERSION,
    data_format_override="COMPACT",
)
TASTYTRADE_MAX_MESSAGE = 65_536
"""httpx2's default message limit, which tastytrade's DXLinkStreamer does not raise."""


def make_quotes(symbols: list[str], frame_index: int, stamp: int) -> list[Quote]:
    """Plausible quotes for ``symbols``; ``stamp`` goes into ``event_time``."""
    out = []
    now_ms = int(time.time() * 1000)
    for i, symbol in enumerate(symbols):
        k = (frame_index * 7919 + i * 104729) % 10_000
        bid = round(1.0 + k / 20.0, 2)
        out.append(
            Quote(
                event_symbol=symbol,
                event_time=stamp,
                sequence=i,
                time_nano_part=0,
                bid_time=now_ms,
                bid_exchange_code="Q",
                bid_price=bid,
                bid_size=float(100 + k % 900),
                ask_time=now_ms,
                ask_exchange_code="X",
                ask_price=round(bid + 0.05, 2),
                ask_size=float(100 + (k * 3) % 900),
            )
        )
    return out


class Session:
    """One client connection: the protocol core, the subscribed Quote symbols, the streamer."""

    def __init__(
        self,
        ws: trio_websocket.WebSocketConnection,
        args: argparse.Namespace,
        spawn: Callable[[Callable[[], Awaitable[None]]], None],
    ) -> None:
        self.ws = ws
        self.args = args
        self.spawn = spawn
        self.core = ServerProtocol(CONFIG, trio.current_time(), label="blast session")
        self.timers_changed = trio.Event()
        self.quote_channel: int | None = None
        self.symbols: dict[str, None] = {}
        self.generation = 0
        self.changed = trio.Event()
        self.streaming = False
        self.warned_size = False

    async def send_text(self, text: str) -> None:
        await self.ws.send_message(text)
        self.core.frame_sent(trio.current_time())

    async def flush(self) -> None:
        """Send what the core queued; a Close ends the session."""
        for item in self.core.data_to_send():
            if isinstance(item, Close):
                await self.ws.aclose(item.code, item.reason)  # the reader then sees it closed
                return
            await self.send_text(item)

    # --- control messages ---

    async def reader(self) -> None:
        core = self.core
        while True:
            frame = await self.ws.get_message()
            for event in core.receive_message(frame, trio.current_time()):
                if isinstance(event, AuthRequested):
                    core.authorize()
                elif isinstance(event, SubscriptionChanged):
                    self.on_subscription(event)
                elif isinstance(event, ChannelCancelled) and event.channel == self.quote_channel:
                    self.symbols.clear()
                    self.touch()
            self.timers_changed.set()  # SETUP, say, sets the keepalive interval
            await self.flush()

    def on_subscription(self, change: SubscriptionChanged) -> None:
        if change.reset and change.channel == self.quote_channel:
            self.symbols.clear()
        for entry in change.removed:
            if entry.type == "Quote":
                self.symbols.pop(entry.symbol, None)
        quotes = [e.symbol for e in change.added if e.type == "Quote"]
        if quotes:
            self.quote_channel = change.channel
            self.symbols.update(dict.fromkeys(quotes))
        self.touch()
        if quotes and not self.streaming:
            self.streaming = True
            self.spawn(self.stream)

    def touch(self) -> None:
        self.generation += 1
        self.changed.set()
        self.changed = trio.Event()

    async def keepalive(self) -> None:
        while True:
            with trio.move_on_at(self.core.next_deadline()):
                await self.timers_changed.wait()
            self.timers_changed = trio.Event()
            self.core.handle_timers(trio.current_time())
            await self.flush()

    # --- data ---

    def build_frame(self, symbols: list[str], index: int, stamp: int) -> str:
        """The FEED_DATA text of frame ``index`` of the current symbol cycle."""
        n = self.args.frame_events
        picked = [symbols[(index * n + j) % len(symbols)] for j in range(n)]
        assert self.quote_channel is not None
        channel = self.core.channels.get(self.quote_channel)
        requested = channel.event_fields.get("Quote") if channel is not None else None
        layout = tuple(requested) if requested else Quote.wire_fields()
        values = encode_compact(make_quotes(picked, index, stamp), layout)
        # the same text m.encode(m.FeedData(...)) gives, without unstructuring 6,000 values
        # one by one through cattrs (17x slower; it matters when 25,000 symbols subscribe)
        data = {"type": "FEED_DATA", "channel": self.quote_channel, "data": ["Quote", values]}
        text = orjson.dumps(data).decode()
        if len(text) > TASTYTRADE_MAX_MESSAGE and not self.warned_size:
            self.warned_size = True
            print(
                f"blast_server: frames are {len(text)} bytes, over the {TASTYTRADE_MAX_MESSAGE}"
                " that tastytrade's DXLinkStreamer accepts",
                file=sys.stderr,
            )
        return text

    async def stream(self) -> None:
        throughput = self.args.mode == "throughput"
        stamp = 0 if throughput else STAMP
        interval = self.args.frame_events / self.args.rate
        frames: dict[int, str] = {}
        generation = -1
        symbols: list[str] = []
        index = 0
        next_send = trio.current_time()
        while True:
            if generation != self.generation:
                generation = self.generation
                symbols = list(self.symbols)
                if self.args.symbols:
                    symbols = symbols[: self.args.symbols]
                frames.clear()
            if not symbols:
                await self.changed.wait()
                next_send = trio.current_time()
                continue
            index %= -(-len(symbols) // self.args.frame_events)  # frames in one symbol cycle
            text = frames.get(index)
            if text is None:
                text = frames[index] = self.build_frame(symbols, index, stamp)
            if throughput:
                await self.send_text(text)
            else:
                await trio.sleep_until(next_send)
                await self.send_text(text.replace(STAMP_TEXT, str(time.time_ns())))
                next_send += interval
                now = trio.current_time()
                if now - next_send > 10 * interval:  # far behind: resynchronise, never burst
                    next_send = now
            index = (index + 1) % -(-len(symbols) // self.args.frame_events)


async def handler(args: argparse.Namespace, request: trio_websocket.WebSocketRequest) -> None:
    ws = await request.accept()
    async with trio.open_nursery() as nursery:

        def spawn(fn: Callable[[], Awaitable[None]]) -> None:
            nursery.start_soon(_until_closed, fn, nursery.cancel_scope)

        session = Session(ws, args, spawn)
        spawn(session.reader)
        spawn(session.keepalive)


async def _until_closed(fn: Callable[[], Awaitable[None]], scope: trio.CancelScope) -> None:
    """Run one task of a session; the client going away ends the whole session quietly."""
    try:
        await fn()
    except trio_websocket.ConnectionClosed:
        scope.cancel()


async def serve(args: argparse.Namespace) -> None:
    async with trio.open_nursery() as nursery:
        server = await nursery.start(
            functools.partial(
                trio_websocket.serve_websocket,
                functools.partial(handler, args),
                args.host,
                args.port,
                ssl_context=None,
                max_message_size=MAX_MESSAGE_SIZE,
                message_queue_size=16,
            )
        )
        print(f"listening on ws://{args.host}:{server.port}", flush=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0: any free port (default)")
    p.add_argument("--mode", choices=["throughput", "rate"], default="throughput")
    p.add_argument("--rate", type=float, default=20_000, help="events/s in rate mode")
    p.add_argument("--frame-events", type=int, default=500, help="events per FEED_DATA frame")
    p.add_argument(
        "--symbols", type=int, default=0, help="use at most K subscribed symbols (0: all)"
    )
    args = p.parse_args(argv)
    if args.frame_events < 1 or args.rate <= 0:
        p.error("--frame-events and --rate must be positive")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        trio.run(serve, args)


if __name__ == "__main__":
    main()
