"""Recording a feed's connections at the transport seam (the format: ``_recording.py``).

:func:`open_recorder` opens a file and a writer task; :meth:`Recorder.connector` wraps any
:data:`~trio_dxlink.Connector` so every frame sent and received is queued for it. Queuing never
waits for the disk and copies nothing: a text frame's line is its text between a fixed prefix
and suffix (``frame_line``: no JSON encoding), queued as those three pieces, the frame's own
string among them. The writer task lets lines gather for ``FLUSH_INTERVAL`` (or until
``FLUSH_BYTES`` of frames wait), then hands the batch to a worker thread, which writes it in one
call that does not hold the GIL (see ``_Sink``). When more than ``max_buffer_bytes`` of frames
wait, further frames are dropped, counted (:attr:`RecorderStatistics.dropped`), logged and
marked in the file.

What this costs the delivered rate, and why the batch is 100 ms: ``benchmarks/README.md``.
"""

from __future__ import annotations

import base64
import errno
import io
import logging
import os
import sys
import time
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import IO, Any, TypeAlias

import attrs
import orjson
import trio

from ._accel import speedups
from ._exceptions import RecordingError
from ._recording import FORMAT, REDACTED, VERSION, _zstd, frame_line, safe_url
from ._transport import Connector, Transport
from ._util import unwrap_group

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup

__all__ = ["Recorder", "RecorderStatistics", "open_recorder", "recording_for"]

log = logging.getLogger("trio_dxlink.record")

DEFAULT_MAX_BUFFER_BYTES = 64 * 1024 * 1024

FLUSH_INTERVAL = 0.1
"""Seconds the writer lets lines gather before it writes them (unless ``FLUSH_BYTES`` wait
sooner): one worker-thread write per batch, not per frame. Shorter batches cost more hand-overs
to the thread, much longer ones more memory faulted in and freed (measured in
``benchmarks/README.md``)."""
FLUSH_BYTES = 8 * 1024 * 1024
"""Queued bytes (counted as for ``max_buffer_bytes``) that make the writer write at once (or half
of ``max_buffer_bytes``, if that is smaller)."""
ZSTD_LEVEL = 1
"""The zstd compression level of compressed recordings: on recorded quotes, level 1 compresses
as well as zstd's default (3; 7.7:1 against 7.8:1) in four fifths of the time."""
ZSTD_WRITE_SIZE = 1024 * 1024
"""Bytes of compressed output gathered before they are written to the file."""
LINE_ALLOWANCE = 160
"""Bytes a queued frame is counted for besides its text (against ``max_buffer_bytes``): what its
line's other pieces, their list slots and the frame string's own header take, so that a feed of
small frames cannot hold several times the bound."""
_ADVISE_EVERY = 4
"""Batches between two page-cache advices of the sink; each covers the last ``2 *
_ADVISE_EVERY`` batches (the older half is on disk by then, and dropped)."""

_Payload: TypeAlias = str | bytes | int | tuple[str, str]
"""A record's frame / url / count of dropped frames / (reason, by)."""


@attrs.frozen
class RecorderStatistics:
    """What a :class:`Recorder` has done so far."""

    frames: int
    """Frames recorded (queued for writing)."""
    bytes: int
    """Characters of frame text recorded."""
    dropped: int
    """Frames not recorded because the write buffer was full."""
    connections: int
    """Connections recorded."""


class Recorder:
    """Writes the frames of the connections it wraps to a recording (see :func:`open_recorder`).

    Pass it as ``open_dxlink(..., record=recorder)``, or wrap a connector yourself with
    :meth:`connector`. One recorder may record one feed at a time.
    """

    def __init__(self, path: str | os.PathLike[str], max_buffer_bytes: int) -> None:
        self.path = os.fspath(path)
        self._max_buffer = max_buffer_bytes
        self._flush_bytes = min(FLUSH_BYTES, max(1, max_buffer_bytes // 2))
        self._pending: list[bytes | str] = []
        """The lines waiting for the writer, in pieces (a frame's text is one of them)."""
        self._pending_bytes = 0
        """What ``_pending`` holds, as ``max_buffer_bytes`` counts it: each frame's text plus
        ``LINE_ALLOWANCE``."""
        self._wakeup = trio.Event()
        self._batch_full = trio.Event()
        self._t0 = trio.current_time()
        self._started_ns = time.time_ns()
        self._frames = 0
        self._bytes = 0
        self._dropped = 0
        self._unmarked_drops: dict[int, int] = {}
        self._connections: dict[int, dict[str, Any]] = {}
        self._url: str | None = None

    def statistics(self) -> RecorderStatistics:
        """Counters so far."""
        return RecorderStatistics(
            frames=self._frames,
            bytes=self._bytes,
            dropped=self._dropped,
            connections=len(self._connections),
        )

    def connector(self, inner: Connector) -> Connector:
        """``inner``, with every connection it opens recorded."""

        @asynccontextmanager
        async def connect(url: str) -> AsyncIterator[Transport]:
            async with inner(url) as transport:
                conn = self._open(url)
                recording = _RecordingTransport(transport, self, conn)
                reason = "closed"
                try:
                    yield recording
                except BaseException as exc:
                    reason = _ending(exc)
                    raise
                finally:
                    by = "peer" if recording.failed else "client"
                    self._queue("close", conn, (reason, by), 0)

        return connect

    # --- the hot path: called by the transports, never waits ---

    def _now(self) -> int:
        return int((trio.current_time() - self._t0) * 1e9)

    def _open(self, url: str) -> int:
        conn = len(self._connections) + 1
        safe = safe_url(url)
        if self._url is None:
            self._url = safe
        self._connections[conn] = {"url": safe, "channels": {}}
        self._queue("open", conn, safe, 0)
        return conn

    def _queue(self, kind: str, conn: int, payload: _Payload, size: int) -> None:
        if kind in ("in", "out") and isinstance(payload, str):
            self._pending += frame_line(kind, conn, self._now(), payload)
        else:
            self._pending.append(_record_line(kind, conn, self._now(), payload))
        self._pending_bytes += size
        self._wakeup.set()
        if self._pending_bytes >= self._flush_bytes:
            self._batch_full.set()

    def frame(self, conn: int, kind: str, frame: str | bytes) -> None:
        """Record one frame of connection ``conn`` (``kind``: ``"in"`` or ``"out"``)."""
        size = len(frame)
        if self._pending_bytes + size + LINE_ALLOWANCE > self._max_buffer:
            self._dropped += 1
            if conn not in self._unmarked_drops:
                log.warning("recording to %s fell behind; dropping frames", self.path)
            self._unmarked_drops[conn] = self._unmarked_drops.get(conn, 0) + 1
            return
        if self._unmarked_drops:
            for lost_conn, count in self._unmarked_drops.items():
                self._queue("dropped", lost_conn, count, 0)
            self._unmarked_drops.clear()
        if isinstance(frame, str) and not frame.isascii() and not _is_unicode(frame):
            # lone surrogates (from a transport of the user's): kept exactly, as a binary frame
            frame = frame.encode("utf-8", "surrogatepass")
        if isinstance(frame, str) and (kind == "out" or "FEED_DATA" not in frame[:64]):
            frame = self._inspect(conn, frame)  # control frames: few and small
        self._frames += 1
        self._bytes += size
        self._queue(kind, conn, frame, size + LINE_ALLOWANCE)

    def _inspect(self, conn: int, frame: str) -> str:
        """Note what the manifest needs from a control frame; redact an AUTH frame's token."""
        try:
            message = orjson.loads(frame)
        except orjson.JSONDecodeError:
            return frame
        if not isinstance(message, dict):
            return frame
        kind = message.get("type")
        if kind == "AUTH" or "token" in message:
            message["token"] = REDACTED
            return orjson.dumps(message).decode()
        channel = message.get("channel")
        if not isinstance(channel, int) or channel == 0:
            return frame
        channels: dict[str, dict[str, Any]] = self._connections[conn]["channels"]
        if kind == "CHANNEL_REQUEST":
            channels[str(channel)] = {
                "contract": message.get("parameters", {}).get("contract"),
                "service": message.get("service"),
                "event_fields": {},
                "subscriptions": [],
            }
        entry = channels.get(str(channel))
        if entry is None:
            return frame
        if kind == "FEED_CONFIG" and isinstance(message.get("eventFields"), dict):
            entry["event_fields"].update(message["eventFields"])
        elif kind == "FEED_SUBSCRIPTION":
            subscriptions: list[dict[str, Any]] = entry["subscriptions"]
            for item in message.get("add") or []:
                if item not in subscriptions:
                    subscriptions.append(item)
        return frame

    # --- the writer ---

    def _manifest(self) -> dict[str, Any]:
        return {
            "k": "manifest",
            "format": FORMAT,
            "version": VERSION,
            "library": _library_version(),
            "url": self._url,
            "started_ns": self._started_ns,
            "ended_ns": self._started_ns + self._now(),
            "frames": self._frames,
            "bytes": self._bytes,
            "dropped": self._dropped,
            "connections": {str(n): info for n, info in self._connections.items()},
        }

    async def _write_loop(self, sink: _Sink) -> None:
        while True:
            await self._wakeup.wait()
            with trio.move_on_after(FLUSH_INTERVAL):
                await self._batch_full.wait()
            await self._flush(sink)

    async def _flush(self, sink: _Sink) -> None:
        """Write what is queued. The queued frames count against the buffer until written."""
        self._wakeup = trio.Event()
        self._batch_full = trio.Event()
        data, self._pending = self._pending, []
        size = self._pending_bytes
        if not data:
            return
        try:
            await trio.to_thread.run_sync(sink.write, data)
        except BaseException:
            self._pending[:0] = data  # not written (cancelled before the thread started)
            raise
        self._pending_bytes -= size


class _RecordingTransport:
    """A :class:`Transport` that records what passes through it, and whether the connection
    failed under it (a receive or send raised: the peer or the network ended it) or the
    client ended it."""

    def __init__(self, inner: Transport, recorder: Recorder, conn: int) -> None:
        self._inner = inner
        self._recorder = recorder
        self._conn = conn
        self._closing = False
        self.failed = False
        """A receive or send raised before the client closed the transport."""

    async def send(self, text: str) -> None:
        self._recorder.frame(self._conn, "out", text)
        try:
            await self._inner.send(text)
        except trio.Cancelled:
            raise
        except BaseException:
            self.failed = not self._closing
            raise

    async def receive(self) -> str | bytes:
        try:
            frame = await self._inner.receive()
        except trio.Cancelled:
            raise
        except BaseException:
            self.failed = not self._closing
            raise
        self._recorder.frame(self._conn, "in", frame)
        return frame

    async def aclose(self) -> None:
        self._closing = True
        await self._inner.aclose()


def _record_line(kind: str, conn: int, t: int, payload: _Payload) -> bytes:
    """The line of a record other than a text frame (see ``_recording.py``)."""
    record: dict[str, Any] = {"k": kind, "c": conn, "t": t}
    if isinstance(payload, bytes):
        record["b"] = base64.b64encode(payload).decode()
    elif kind == "open":
        record["url"] = payload
    elif isinstance(payload, tuple):
        record["reason"], record["by"] = payload
    else:
        record["count"] = payload
    return orjson.dumps(record) + b"\n"


def _ending(exc: BaseException) -> str:
    """How a connection ended, from what left its block: ``"closed"`` for a cancellation (the
    client leaving), else the first error that is not one."""
    if isinstance(exc, BaseExceptionGroup):
        leaf: BaseException | None = exc.split(trio.Cancelled)[1]
        while isinstance(leaf, BaseExceptionGroup):
            leaf = leaf.exceptions[0]
        if leaf is None:
            return "closed"
        exc = leaf
    if isinstance(exc, trio.Cancelled):
        return "closed"
    return f"{type(exc).__name__}: {exc}"[:300]


class _Sink:
    """The file side, used from a worker thread: writes batches of line pieces (through a zstd
    compressor if asked), and lets the kernel drop what is written from its page cache.

    Each batch is one call that runs without the GIL (``write_text``: ``writev`` of the pieces;
    compressed: ``join_text``, then zstd), so the worker thread seldom needs the GIL the event
    loop's thread holds. A recording is written once and read, if ever, later: every
    ``_ADVISE_EVERY`` batches the sink advises ``POSIX_FADV_DONTNEED`` over the last ``2 *
    _ADVISE_EVERY``. The kernel starts writing the newest ones out and frees the pages of older
    ones already on disk (it never drops dirty pages), so a day-long recording does not crowd
    other files out of the page cache, and new batches fill pages freed a moment ago, which
    costs a fraction of filling pages the kernel has not used for a while (``benchmarks/
    README.md``, "Recording"). Where there is no ``posix_fadvise`` (macOS, Windows) or the file
    is not a regular file, the sink only writes.
    """

    def __init__(self, path: str, compress: bool) -> None:
        self._path = path
        self.failed: RecordingError | None = None
        """The error of the first write (or close) that failed."""
        try:
            self._raw: IO[bytes] = open(path, "wb", buffering=0)  # noqa: SIM115 - see close()
        except OSError as exc:
            raise RecordingError(f"cannot write recording {path!r}: {exc}") from exc
        self._fd = self._raw.fileno()
        self._zstd: Any = None
        self._buffered: io.BufferedWriter | None = None
        if compress:
            # the zstd writer ignores a short write's count: a buffered file writes it all
            self._buffered = io.BufferedWriter(self._raw, buffer_size=ZSTD_WRITE_SIZE)
            compressor = _zstd().ZstdCompressor(level=ZSTD_LEVEL, write_checksum=True)
            self._zstd = compressor.stream_writer(self._buffered, closefd=False)
        self._written = 0
        """Bytes written to the file so far."""
        self._advise = getattr(os, "posix_fadvise", None)
        self._batches = 0
        self._batch_ends: deque[int] = deque([0], maxlen=2 * _ADVISE_EVERY + 1)

    def write_line(self, record: dict[str, Any]) -> None:
        self.write([orjson.dumps(record) + b"\n"])

    def write(self, pieces: list[bytes | str]) -> None:
        try:
            if self._zstd is None:
                self._written += write_text(self._fd, pieces)
            else:
                self._zstd.write(join_text(pieces))
                self._written = self._zstd.tell()
        except (OSError, UnicodeError) as exc:
            raise self._fail(exc) from exc
        self._release_written()

    def _fail(self, exc: BaseException) -> RecordingError:
        if self.failed is None:
            self.failed = RecordingError(f"cannot write recording {self._path!r}: {exc}")
        return self.failed

    def _release_written(self) -> None:
        self._batches += 1
        self._batch_ends.append(self._written)
        if self._advise is None or self._batches % _ADVISE_EVERY:
            return
        start = self._batch_ends[0]
        try:
            self._advise(self._fd, start, self._written - start, os.POSIX_FADV_DONTNEED)
        except OSError:  # not a regular file: nothing cached to release
            self._advise = None

    def close(self) -> None:
        """Write what the compressor holds and close the file. Raises :class:`RecordingError`
        if that fails and nothing had failed before."""
        failed = self.failed
        try:
            try:
                if self._zstd is not None:
                    self._zstd.close()
                if self._buffered is not None:
                    self._buffered.flush()
            finally:
                self._raw.close()
        except OSError as exc:
            if failed is None:
                raise self._fail(exc) from exc


def _is_unicode(text: str) -> bool:
    """Whether ``text`` can be written as UTF-8 (it holds no lone surrogate)."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def _join_text(pieces: list[bytes | str]) -> bytes:
    """The pieces as one bytes object, text as UTF-8 (the C twin copies without the GIL)."""
    return b"".join([piece.encode() if isinstance(piece, str) else piece for piece in pieces])


def _write_text(fd: int, pieces: list[bytes | str]) -> int:
    """Write the pieces to ``fd``, text as UTF-8; the count of bytes written (the C twin
    writes them with ``writev``, without joining them or holding the GIL)."""
    data = _join_text(pieces)
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        if not written:
            raise OSError(errno.EIO, "write() wrote nothing")
        view = view[written:]
    return len(data)


join_text = getattr(speedups, "join_text", _join_text)
write_text = getattr(speedups, "write_text", _write_text)


def _library_version() -> str:
    from . import __version__

    return __version__


@asynccontextmanager
async def open_recorder(
    path: str | os.PathLike[str],
    *,
    compress: bool | None = None,
    max_buffer_bytes: int = DEFAULT_MAX_BUFFER_BYTES,
) -> AsyncIterator[Recorder]:
    """Record to ``path`` for the duration of the block (format: see ``docs/record-replay.md``).

    ``compress``: write one zstd stream (needs ``pip install 'trio-dxlink[zstd]'``); the
    default compresses when ``path`` ends in ``.zst``. ``max_buffer_bytes``: how much may wait for
    the disk before frames are dropped (counted and marked in the file): each waiting frame counts
    its text plus ``LINE_ALLOWANCE`` (160) bytes. Leaving the block writes what is queued and the
    manifest, and closes the file.
    """
    if max_buffer_bytes <= 0:
        raise ValueError(f"max_buffer_bytes must be positive, got {max_buffer_bytes}")
    if compress is None:
        compress = os.fspath(path).endswith(".zst")
    sink = await trio.to_thread.run_sync(_Sink, os.fspath(path), compress)
    recorder = Recorder(path, max_buffer_bytes)
    try:
        header = {
            "k": "header",
            "format": FORMAT,
            "version": VERSION,
            "library": _library_version(),
            "started_ns": recorder._started_ns,
        }
        await trio.to_thread.run_sync(sink.write_line, header)
        with unwrap_group():
            async with trio.open_nursery() as nursery:
                nursery.start_soon(recorder._write_loop, sink)
                try:
                    yield recorder
                finally:
                    nursery.cancel_scope.cancel()
    finally:
        with trio.CancelScope(shield=True):
            try:
                if sink.failed is None:  # else the disk failed: the error is on its way out
                    await recorder._flush(sink)
                    await trio.to_thread.run_sync(sink.write_line, recorder._manifest())
            finally:
                await trio.to_thread.run_sync(sink.close)
        if recorder._dropped:
            log.warning(
                "recording %s: %d frames dropped (the disk fell behind)",
                recorder.path,
                recorder._dropped,
            )


@asynccontextmanager
async def recording_for(
    record: str | os.PathLike[str] | Recorder | None,
) -> AsyncIterator[Recorder | None]:
    """``open_dxlink(record=...)``: a path is recorded to for the block; a :class:`Recorder`
    is used as it is (its owner closes it); ``None`` records nothing."""
    if record is None or isinstance(record, Recorder):
        yield record
        return
    async with open_recorder(record) as recorder:
        yield recorder
