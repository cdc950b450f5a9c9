"""A recording played by the local server (``python -m trio_dxlink serve --replay FILE``).

The recording's received events are decoded with the library's decoder
(:func:`~trio_dxlink.iter_recorded_events`) and served through an ordinary
:class:`DXLinkServer`, so any DXLink client pointed at the server gets them for what it
subscribes to, after the server's usual handshake:

* **history**: the time-series events the recording received in snapshots (a ``Candle`` or
  ``TimeAndSale`` subscription with ``fromTime``: from the event flagged SNAPSHOT_BEGIN through
  the one flagged SNAPSHOT_END or SNAPSHOT_SNIP) are loaded into the server's market before
  anything is played. A client subscribing with ``fromTime`` gets them as the server answers any
  history request: a snapshot newest first, flagged as §6.7 says, from its own ``fromTime``. They
  are not played again as updates (a recording of several connections holds the same history
  once per connection; the latest of each ``index`` is kept);
* **updates**: every other event (quotes, trades, a candle's live updates, ...) is published in
  recorded time; a subscription made later gets the latest played value first, as the server
  answers any subscription.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator

import trio

from .._eventbase import EventFlag
from .._recorded_events import RecordedEvents, iter_recorded_events
from ..events import Event, TimeSeriesEvent
from ._server import DXLinkServer

__all__ = ["play_recording", "split_recorded_history"]

log = logging.getLogger("trio_dxlink.testing.playback")

_SNAPSHOT_ENDS = EventFlag.SNAPSHOT_END | EventFlag.SNAPSHOT_SNIP


def split_recorded_history(
    batches: Iterator[RecordedEvents],
) -> Iterator[tuple[RecordedEvents, list[Event], list[Event]]]:
    """For each recorded batch: the batch, its events that belong to a history snapshot, and
    the rest (the updates), in recorded order.

    A snapshot is followed per (connection, channel, type, symbol): it starts at an event
    flagged SNAPSHOT_BEGIN and ends with the one flagged SNAPSHOT_END or SNAPSHOT_SNIP.
    """
    open_snapshots: set[tuple[int, int, str, str]] = set()
    for batch in batches:
        history: list[Event] = []
        updates: list[Event] = []
        for event in batch.events:
            if not isinstance(event, TimeSeriesEvent):
                updates.append(event)
                continue
            key = (batch.connection, batch.channel, event.EVENT_TYPE, event.event_symbol)
            flags = event.event_flags
            if flags & EventFlag.SNAPSHOT_BEGIN:
                open_snapshots.add(key)
            if key in open_snapshots:
                history.append(event)
                if flags & _SNAPSHOT_ENDS:
                    open_snapshots.discard(key)
            else:
                updates.append(event)
        yield batch, history, updates


def _load_history(server: DXLinkServer, path: str | os.PathLike[str]) -> int:
    """Put the recording's snapshot events into ``server``'s market; returns how many."""
    loaded = 0
    for _, history, _ in split_recorded_history(iter_recorded_events(path)):
        for event in history:
            server.market.update(server.history.event(event))
        loaded += len(history)
    return loaded


async def play_recording(
    server: DXLinkServer, path: str | os.PathLike[str], *, speed: float | None = 1.0
) -> int:
    """Serve a recording's events through ``server`` (see the module's docstring); returns how
    many were published as updates.

    The history snapshots are loaded first (so they answer the first subscription). Playing
    starts once some client has subscribed to something, then keeps the recorded spacing
    between frames on trio's clock, scaled by ``speed`` (``2.0``: twice as fast; ``None``: as
    fast as the server takes them). Events of a type or symbol nobody has subscribed to are
    still published: the server keeps the latest of each, for later subscribers.

    Raises:
        RecordingError: the file is not a recording (or is cut mid-line).
        ValueError: ``speed`` is not positive.
    """
    if speed is not None and not speed > 0:
        raise ValueError(f"speed must be positive (or None: as fast as possible), got {speed}")
    loaded = _load_history(server, path)
    await server.wait_for(lambda: bool(server.subscriptions()))
    start = trio.current_time()
    first_t: int | None = None
    published = 0
    for batch, _, updates in split_recorded_history(iter_recorded_events(path)):
        if not updates:
            continue
        if first_t is None:
            first_t = batch.t
        if speed is None:
            await trio.lowlevel.checkpoint()
        else:
            await trio.sleep_until(start + (batch.t - first_t) / 1e9 / speed)
        server.publish_many(updates)
        published += len(updates)
    log.info(
        "played %d events from %s (and %d history events served as snapshots)",
        published,
        os.fspath(path),
        loaded,
    )
    return published
