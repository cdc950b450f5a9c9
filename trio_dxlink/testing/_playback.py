"""A recording played by the local server (``python -m trio_dxlink serve --replay FILE``).

The recording's received events are decoded with the library's decoder
(:func:`~trio_dxlink.iter_recorded_events`) and published through an ordinary
:class:`DXLinkServer` in recorded time, so any DXLink client pointed at the server gets them for
what it subscribes to, after the server's usual handshake (and, for a subscription made later,
the latest recorded value first, as the server answers any subscription).
"""

from __future__ import annotations

import logging
import os

import trio

from .._recorded_events import iter_recorded_events
from ._server import DXLinkServer

__all__ = ["play_recording"]

log = logging.getLogger("trio_dxlink.testing.playback")


async def play_recording(
    server: DXLinkServer, path: str | os.PathLike[str], *, speed: float | None = 1.0
) -> int:
    """Publish the events a recording received through ``server``; returns how many.

    Playing starts once some client has subscribed to something, then keeps the recorded
    spacing between frames on trio's clock, scaled by ``speed`` (``2.0``: twice as fast;
    ``None``: as fast as the server takes them). Events of a type or symbol nobody has subscribed
    to are still published: the server keeps the latest of each, for later subscribers.

    Raises:
        RecordingError: the file is not a recording (or is cut mid-line).
        ValueError: ``speed`` is not positive.
    """
    if speed is not None and not speed > 0:
        raise ValueError(f"speed must be positive (or None: as fast as possible), got {speed}")
    await server.wait_for(lambda: bool(server.subscriptions()))
    start = trio.current_time()
    first_t: int | None = None
    published = 0
    for batch in iter_recorded_events(path):
        if first_t is None:
            first_t = batch.t
        if speed is None:
            await trio.lowlevel.checkpoint()
        else:
            await trio.sleep_until(start + (batch.t - first_t) / 1e9 / speed)
        server.publish_many(batch.events)
        published += len(batch.events)
    log.info("played %d events from %s", published, os.fspath(path))
    return published
