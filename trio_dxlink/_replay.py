"""Playing a recording back into :func:`~trio_dxlink.open_dxlink`, through the same decoder.

A :class:`Replay` is a :data:`~trio_dxlink.Connector`: each connection the feed opens plays the
next recorded connection's received frames; when a recorded connection ended (and another
follows), the replayed one ends too, so the feed reconnects just as it did live. When it ends:
as fast as possible, once its frames are played; in recorded time (``speed``), at its recorded
end if the server ended it, and if the client ended it (a keepalive timeout, say), not before
``CLIENT_CLOSE_GRACE`` seconds after that, so the replayed client ends it itself, for the same
reason, as it did live. After the last recorded frame, :attr:`Replay.finished` is set and the
connection stays open, idle (it answers keepalives), so the application sees a quiet feed
rather than an error.

A received frame on channel N is played only once the client has sent something on channel N
(channel 0: once it has sent anything), so an application that subscribes after the block is
entered still sees every frame: it must ask for what was recorded, in the same order (the
recording's channel numbers).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import trio

from ._exceptions import ConnectionClosedError, RecordingError
from ._recording import frame_of, iter_records
from ._transport import Connector, Transport

__all__ = ["Replay", "recorded_subscriptions"]

log = logging.getLogger("trio_dxlink.replay")

CLIENT_CLOSE_GRACE = 1.0
"""Seconds (of trio's clock, unscaled) a replayed connection that the client ended live is kept
open past its recorded end, waiting for the client to end it again."""

_CHANNEL = re.compile(r'"channel"\s*:\s*(\d+)')
_KEEPALIVE = '{"type":"KEEPALIVE","channel":0}'


def _channel_of(frame: str | bytes) -> int:
    head = frame[:80] if isinstance(frame, str) else frame[:80].decode("utf-8", "replace")
    match = _CHANNEL.search(head)
    return int(match.group(1)) if match else 0


class Replay:
    """A recording played as a :data:`~trio_dxlink.Connector`::

        with Replay("session.dxrec") as replay:
            async with open_dxlink(replay.url, replay.token, connector=replay.connector()) as feed:
                ...

    ``speed=None`` plays as fast as the client takes frames; ``speed=1.0`` keeps the recorded
    spacing on trio's clock (so under a :class:`~trio.testing.MockClock` an hour passes
    instantly), ``2.0`` twice as fast. The file is read as it is played.
    """

    def __init__(self, path: str | os.PathLike[str], *, speed: float | None = None) -> None:
        if speed is not None and not speed > 0:
            raise ValueError(f"speed must be positive (or None: as fast as possible), got {speed}")
        self.path = os.fspath(path)
        self.speed = speed
        self.token = "replayed"
        """A stand-in token to give ``open_dxlink`` (the recorded tokens are redacted): a client
        without one gives up when the recorded server asks for one."""
        self.finished = trio.Event()
        """Set once every recorded frame has been played (and handled by the client)."""
        self.frames = 0
        """Frames played so far."""
        self.dropped = 0
        """Frames the recorder had dropped (marked in the file) met so far."""
        self._records: Iterator[dict[str, Any]] = iter_records(path)
        self._peeked: dict[str, Any] | None = None
        self._ended = False
        self._first_open: dict[str, Any] | None = None

    def __enter__(self) -> Replay:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the file (the context manager does this)."""
        close = getattr(self._records, "close", None)
        if close is not None:
            close()

    @property
    def url(self) -> str:
        """The URL the first recorded connection went to (without query string)."""
        while self._first_open is None:
            record = self._peek()
            if record is None:
                raise RecordingError(f"{self.path} holds no connection")
            if record["k"] == "open":
                self._first_open = record
            else:
                self._advance()
        url: str = self._first_open["url"]
        return url

    def _peek(self) -> dict[str, Any] | None:
        if self._peeked is None and not self._ended:
            try:
                self._peeked = next(self._records)
            except StopIteration:
                self._ended = True
        return self._peeked

    def _advance(self) -> None:
        self._peeked = None

    def connector(self) -> Connector:
        """The :data:`~trio_dxlink.Connector` that plays this recording (the URL is ignored)."""

        @asynccontextmanager
        async def connect(url: str) -> AsyncIterator[Transport]:
            await trio.lowlevel.checkpoint()
            while (record := self._peek()) is not None and record["k"] != "open":
                self._advance()  # what is left of a connection the client closed early
            if record is None:
                yield _ReplayTransport(self, None, 0)
                return
            self._advance()
            yield _ReplayTransport(self, record["c"], record["t"])

        return connect

    def _next_received(self, conn: int) -> dict[str, Any] | None:
        """The next received-frame record of connection ``conn``; ``None`` at its end."""
        while (record := self._peek()) is not None:
            kind = record["k"]
            if kind == "in" and record["c"] == conn:
                self._advance()
                return record
            if kind == "open" or (kind == "close" and record["c"] == conn):
                return None
            if kind == "dropped":
                self.dropped += record["count"]
                log.warning(
                    "%s: %d frames missing (the recorder fell behind)", self.path, record["count"]
                )
            self._advance()
        return None

    def _more_connections(self) -> bool:
        while (record := self._peek()) is not None and record["k"] not in ("open", "manifest"):
            self._advance()
        return record is not None and record["k"] == "open"


class _ReplayTransport:
    """One replayed connection (``conn=None``: the idle one after the recording's end)."""

    def __init__(self, replay: Replay, conn: int | None, t0: int) -> None:
        self._replay = replay
        self._conn = conn
        self._t0 = t0
        self._start = trio.current_time()
        self._sent: set[int] = set()
        self._sent_anything = False
        self._changed = trio.Event()
        self._held: dict[str, Any] | None = None
        self._idle = conn is None
        self._replies: list[str] = []

    async def send(self, text: str) -> None:
        await trio.lowlevel.checkpoint()
        self._sent.add(_channel_of(text))
        self._sent_anything = True
        if self._idle and '"KEEPALIVE"' in text:
            self._replies.append(_KEEPALIVE)
        self._changed.set()

    async def _wait_for_client(self) -> None:
        self._changed = trio.Event()
        await self._changed.wait()

    async def receive(self) -> str | bytes:
        if self._conn is not None and not self._idle:
            if self._held is None:
                self._held = self._replay._next_received(self._conn)
            record = self._held
            if record is not None:
                return await self._play(record)
            end = self._recorded_end()
            if self._replay._more_connections():
                if end is not None:
                    await trio.sleep_until(end)
                raise ConnectionClosedError(f"recorded connection {self._conn} ended")
            self._idle = True
        self._replay.finished.set()
        while not self._replies:
            await self._wait_for_client()
        return self._replies.pop(0)

    def _recorded_end(self) -> float | None:
        """In recorded time, when this connection ends (see the module's docstring)."""
        close = self._replay._peek()
        speed = self._replay.speed
        if speed is None or close is None or close["k"] != "close" or close["c"] != self._conn:
            return None
        end: float = self._start + (close["t"] - self._t0) / 1e9 / speed
        return end + CLIENT_CLOSE_GRACE if close.get("by") == "client" else end

    async def _play(self, record: dict[str, Any]) -> str | bytes:
        frame = frame_of(record)
        channel = _channel_of(frame)
        while not (channel in self._sent if channel else self._sent_anything):
            await self._wait_for_client()
        speed = self._replay.speed
        if speed is None:
            await trio.lowlevel.checkpoint()
        else:
            await trio.sleep_until(self._start + (record["t"] - self._t0) / 1e9 / speed)
        self._held = None
        self._replay.frames += 1
        return frame

    async def aclose(self) -> None:
        await trio.lowlevel.checkpoint()


def recorded_subscriptions(manifest: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """The subscriptions of a recording's first connection, by event type, in the order of
    their channels (the order an application must subscribe in to replay it), from its
    manifest (:func:`~trio_dxlink.read_manifest`). Each entry is a wire subscription object
    (``{"type", "symbol"}``, plus ``"source"`` or ``"fromTime"`` where recorded)."""
    connections: dict[str, Any] = manifest.get("connections") or {}
    if not connections:
        return {}
    first = connections[min(connections, key=int)]
    result: dict[str, list[dict[str, Any]]] = {}
    for _, channel in sorted(first["channels"].items(), key=lambda item: int(item[0])):
        for entry in channel["subscriptions"]:
            result.setdefault(entry["type"], []).append(entry)
    return result
