"""What the command line's subcommands share: the one-line usage error, the help layout, how a
time typed on the command line (``--from-time``) becomes epoch milliseconds, and the live
screen (:func:`live_screen`: something drawn in place with rich, the :class:`StatusLine` under
it, redrawn four times a second whatever happens, log messages printed above it).

Times on the command line follow the library's rules (:mod:`trio_dxlink._arguments`) once they
are read: an epoch number is milliseconds (a number that can only be seconds is refused), and
the result names one instant. What the command line adds is text:

* ``-2h``, ``-30m``, ``-1d``, ``-45s``, ``-1w``: that long before now;
* an ISO datetime (``2024-01-05T09:30``, ``2024-01-05 09:30:00+00:00``, ``2024-01-05``,
  ``...Z``): with no offset it is local time;
* digits only: epoch milliseconds.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import datetime as dt
import logging
import re
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any, NoReturn

import attrs
import trio
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.text import Text

from ._arguments import epoch_ms
from ._feed_state import FeedState, FeedStatistics

__all__ = [
    "REDRAW_INTERVAL",
    "Counter",
    "HelpFormatter",
    "OneLineErrorParser",
    "StatusLine",
    "UsageError",
    "live_screen",
    "parse_time_argument",
]


_RELATIVE = re.compile(r"^-(\d+(?:\.\d+)?)([smhdw])$")
"""A time before now typed on the command line: ``-2h``, ``-30m``, ``-1.5d``."""


class UsageError(Exception):
    """A bad command-line argument (reported in one line, exit status 2)."""


class OneLineErrorParser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (``prog: error: ...``), exit status 2.

    Subcommand parsers made with ``add_subparsers().add_parser`` are of the same class.
    """

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        # argparse takes "-2h" for an option: "--from-time -2h" becomes "--from-time=-2h".
        given = list(sys.argv[1:] if args is None else args)
        joined: list[str] = []
        for arg in given:
            after_option = joined and joined[-1].startswith("--") and "=" not in joined[-1]
            if after_option and _RELATIVE.match(arg):
                joined[-1] += "=" + arg
                continue
            joined.append(arg)
        return super().parse_known_args(joined, namespace)

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Help text as written (descriptions and epilogs keep their lines), with each option's
    default appended where it has a meaningful one (not ``None`` or ``False``)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        if (
            action.option_strings
            and default is not None
            and default is not False
            and default != argparse.SUPPRESS
            and "default" not in text
        ):
            text += " (default: %(default)s)"
        return text


_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_time_argument(text: str, option: str, now: dt.datetime | None = None) -> int:
    """A time typed on the command line as epoch milliseconds (see the module docstring).

    ``now`` (an aware datetime) is what relative times count back from (default: the clock).

    Raises:
        UsageError: text that is none of the accepted forms, or a time the library's rules
            refuse (a number that can only be seconds, ...).
    """
    text = text.strip()
    relative = _RELATIVE.match(text)
    if relative is not None:
        now = now or dt.datetime.now(dt.timezone.utc)
        seconds = float(relative[1]) * _UNIT_SECONDS[relative[2]]
        return epoch_ms(now - dt.timedelta(seconds=seconds), option)
    if text.isdigit():
        try:
            return epoch_ms(int(text), option)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    try:
        moment = dt.datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text)
    except ValueError:
        raise UsageError(
            f"{option} must be an ISO datetime (2024-01-05T09:30, local time unless it has an"
            f" offset), a relative time (-2h, -30m, -1d) or epoch milliseconds, got {text!r}"
        ) from None
    if moment.tzinfo is None:
        moment = moment.astimezone()  # local time
    return epoch_ms(moment, option)


# --- the live screen ------------------------------------------------------------------------

REDRAW_INTERVAL = 0.25
"""Seconds between redraws of a live screen."""


@attrs.frozen
class Counter:
    """One counter of the status line: its label, how it is read from the handle's statistics
    (a subscription's or an order book's), and its style when it is not zero."""

    label: str
    read: Callable[[Any], int]
    style: str = "yellow"


_STATE_STYLE = {
    FeedState.CONNECTING: "yellow",
    FeedState.CONNECTED: "green",
    FeedState.RECONNECTING: "bold yellow",
    FeedState.CLOSED: "red",
}


class StatusLine:
    """The line under a live screen: the connection state (``reconnected`` once it has come
    back), events and events per second, reconnects, the handle's own counters (gaps, dropped,
    ...: see :class:`Counter`) and the last connection loss.

    The statistics are read each time the line is drawn: ``feed_statistics`` and
    ``handle_statistics`` are ``None`` until the connection is up (the line then says
    "connecting" and shows every counter at 0). Events are counted with :meth:`count`.
    """

    def __init__(
        self, counters: Sequence[Counter], clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.counters = tuple(counters)
        self.clock = clock
        self.feed_statistics: Callable[[], FeedStatistics] | None = None
        self.handle_statistics: Callable[[], Any] | None = None
        self.events = 0
        self._samples: collections.deque[tuple[float, int]] = collections.deque()
        self._last_loss: tuple[float, str] | None = None
        self._losses = 0
        self.stopped = False

    def watch(self, feed: Callable[[], FeedStatistics], handle: Callable[[], Any]) -> None:
        """Read the feed's and the handle's statistics from now on."""
        self.feed_statistics = feed
        self.handle_statistics = handle

    def stop(self) -> None:
        """The stream has ended: from now on the line shows the state it ended in, marked
        "stopped" (not the closed feed's)."""
        if self.feed_statistics is not None:
            final = self.feed_statistics()
            self.feed_statistics = lambda: final
        if self.handle_statistics is not None:
            final_handle = self.handle_statistics()
            self.handle_statistics = lambda: final_handle
        self.stopped = True

    def count(self, events: int) -> None:
        """``events`` more events arrived."""
        self.events += events

    def rate(self) -> float:
        """Events per second over the last few seconds (0 until two samples exist)."""
        now = self.clock()
        self._samples.append((now, self.events))
        while len(self._samples) > 2 and now - self._samples[1][0] >= 3.0:
            self._samples.popleft()
        then, count = self._samples[0]
        return (self.events - count) / (now - then) if now > then else 0.0

    def render(self) -> Text:
        stats = self.feed_statistics() if self.feed_statistics else None
        state = stats.state if stats else FeedState.CONNECTING
        reconnects = stats.reconnects if stats else 0
        label = "reconnected" if state is FeedState.CONNECTED and reconnects else state.value
        line = Text("● ", style=_STATE_STYLE[state])
        line.append(label, style=_STATE_STYLE[state])
        line.append(f" · {self.events:,} events · {self.rate():,.1f} events/s")
        line.append(f" · reconnects: {reconnects}", style="yellow" if reconnects else "")
        handle = self.handle_statistics() if self.handle_statistics else None
        for counter in self.counters:
            value = counter.read(handle) if handle is not None else 0
            line.append(f" · {counter.label}: {value:,}", style=counter.style if value else "")
        if stats and stats.connection_losses:
            if stats.connection_losses != self._losses:
                self._losses = stats.connection_losses
                self._last_loss = (time.time(), type(stats.reason).__name__)
            if self._last_loss is not None:
                when = dt.datetime.fromtimestamp(self._last_loss[0]).strftime("%H:%M:%S")
                line.append(f" · last loss {when} ({self._last_loss[1]})", style="dim")
        if self.stopped:
            line.append(" · stopped", style="bold")
        return line


@contextlib.asynccontextmanager
async def live_screen(
    body: Callable[[int], RenderableType], status: StatusLine
) -> AsyncIterator[Callable[[], None]]:
    """Show ``body(height)`` (height: the terminal's rows) with ``status`` under it, drawn in
    place on standard output until the block ends: at once (before anything connects), then
    every :data:`REDRAW_INTERVAL` seconds, whatever happens (reconnects included), and once
    more at the end. Log records are printed above it meanwhile. Yields a function that
    redraws now.
    """
    console = Console(highlight=False)

    def draw() -> RenderableType:
        return Group(body(console.size.height), status.render())

    with (
        _logs_printed_by(console),
        Live(
            get_renderable=draw,
            console=console,
            auto_refresh=False,
            redirect_stdout=False,
            redirect_stderr=False,
            vertical_overflow="crop",
        ) as live,
    ):
        live.refresh()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_redraw_forever, live)
            try:
                yield live.refresh
            finally:
                nursery.cancel_scope.cancel()
        live.refresh()


async def _redraw_forever(live: Live) -> None:
    while True:
        await trio.sleep(REDRAW_INTERVAL)
        live.refresh()


@contextlib.contextmanager
def _logs_printed_by(console: Console) -> Iterator[None]:
    """While a live screen is shown, log records are printed by its console, above it (a plain
    handler writing to the terminal would scribble over it)."""
    from rich.logging import RichHandler

    root = logging.getLogger()
    saved = root.handlers[:]
    handler = RichHandler(console=console, show_path=False, markup=False, rich_tracebacks=False)
    handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
    root.handlers[:] = [handler]
    try:
        yield
    finally:
        root.handlers[:] = saved
