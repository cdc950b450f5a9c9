"""The recording file format (``.dxrec``), shared by the recorder, the replay and the exports.

A recording is UTF-8 text, one JSON object per line (NDJSON), optionally compressed as one zstd
stream (a file that starts with zstd's magic number is decompressed on reading, whatever its
name). Every line has a ``"k"`` (kind):

``header`` (the first line)
    ``format`` (``"trio-dxlink-recording"``), ``version`` (2; version 1 files are read too),
    ``library`` (trio_dxlink's version), ``started_ns`` (wall-clock time of the start, ns since
    the Unix epoch).
``open``
    A connection was opened: ``c`` (its number, 1, 2, ... within the recording), ``t``,
    ``url`` (without query string or credentials).
``in`` / ``out``
    One WebSocket frame received / sent, written as one of:

    * ``{"k":"in","c":C,"t":T,"j":FRAME}``: the frame's text exactly, as the value of ``j``
      (a DXLink frame is a JSON object, so the line is JSON and ``jq .j`` shows the message).
      The layout is fixed (no spaces, keys in this order) and a reader takes FRAME verbatim
      from between ``"j":`` and the line's last ``}``, without parsing it: a frame that is not
      JSON (a malformed one from a faulty server) is kept as it came, and only its line is not
      JSON. Used for every text frame without a line break;
    * ``"f"``: the frame's text as a JSON string (a text frame holding ``\n`` or ``\r``; every
      text frame in version 1);
    * ``"b"``: a binary frame, base64.

    AUTH frames are written with their ``token`` replaced by ``"<redacted>"``.
    :func:`iter_records` hands every frame record over with ``f`` (text) or ``b``, whichever way
    it was written.
``dropped``
    ``count`` frames of connection ``c`` were not written because the disk fell behind
    (written before the next frame that was).
``close``
    Connection ``c`` ended at ``t``; ``reason`` says how, ``by`` who: ``"peer"`` (a receive or
    send failed: the server or the network ended it) or ``"client"`` (version 2).
``manifest`` (the last line)
    ``started_ns``, ``ended_ns``, ``library``, ``url``, ``frames``, ``bytes``, ``dropped`` and
    ``connections``: for each connection number (a string), its ``url`` and ``channels``: for
    each channel number (a string), ``contract``, ``event_fields`` (the fields the server
    negotiated per event type, from its FEED_CONFIG) and ``subscriptions`` (every
    ``{"type", "symbol", ...}`` entry the client subscribed on it, in order, once each).

``t`` is the time of the record in ns since the start of the recording, on trio's clock (so a
recording made under :class:`trio.testing.MockClock` has the mock's spacing); the wall-clock
time of a record is ``started_ns + t``. Connections follow one another: each ``open`` is
followed by that connection's records and its ``close`` before the next ``open``.
"""

from __future__ import annotations

import base64
import io
import os
import re
from collections.abc import Callable, Iterator
from typing import IO, Any

import orjson

from ._exceptions import RecordingError

__all__ = [
    "FORMAT",
    "VERSION",
    "frame_line",
    "iter_records",
    "open_text",
    "read_manifest",
    "safe_url",
]

FORMAT = "trio-dxlink-recording"
VERSION = 2
"""The version the recorder writes."""
READABLE_VERSIONS = (1, 2)
"""The versions :func:`iter_records` reads."""
REDACTED = "<redacted>"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


_FRAME_LINE = re.compile(r'\{"k":"(in|out)","c":(\d+),"t":(-?\d+),"j":')
"""The fixed start of a ``j`` line (the frame follows, then the closing ``}``)."""


def frame_line(kind: str, conn: int, t: int, frame: str) -> tuple[bytes, str, bytes] | tuple[bytes]:
    """The line (with its ``\\n``) that records text ``frame``, in pieces: joined, with text as
    UTF-8, they make the line (see the module's docstring). The frame's own text is one of the
    pieces, not copied."""
    if "\n" in frame or "\r" in frame:
        return (
            b'{"k":"%s","c":%d,"t":%d,"f":%s}\n' % (kind.encode(), conn, t, orjson.dumps(frame)),
        )
    return (b'{"k":"%s","c":%d,"t":%d,"j":' % (kind.encode(), conn, t), frame, b"}\n")


def safe_url(url: str) -> str:
    """``url`` without its query string, fragment or user credentials (which may hold a token)."""
    url = url.split("?", 1)[0].split("#", 1)[0]
    scheme, sep, rest = url.partition("://")
    if sep:
        authority, slash, path = rest.partition("/")
        url = f"{scheme}://{authority.rpartition('@')[2]}{slash}{path}"
    return url


def _zstd() -> Any:
    try:
        import zstandard
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise RecordingError(
            "compressed recordings need the 'zstandard' package: pip install 'trio-dxlink[zstd]'"
        ) from exc
    return zstandard


def open_text(path: str | os.PathLike[str]) -> IO[str]:
    """``path`` opened for reading as text, decompressed if it is zstd."""
    try:
        raw = open(path, "rb")  # noqa: SIM115 - returned to the caller, who closes it
    except OSError as exc:
        raise RecordingError(f"cannot open recording {os.fspath(path)!r}: {exc}") from exc
    if raw.read(4) == ZSTD_MAGIC:
        raw.seek(0)
        reader = _zstd().ZstdDecompressor().stream_reader(raw, closefd=True)
        return io.TextIOWrapper(io.BufferedReader(reader), encoding="utf-8")
    raw.seek(0)
    return io.TextIOWrapper(raw, encoding="utf-8")


def _unreadable() -> tuple[type[BaseException], ...]:
    """What reading a damaged file raises: undecodable UTF-8, a broken zstd stream, I/O."""
    errors: tuple[type[BaseException], ...] = (UnicodeDecodeError, OSError)
    try:
        import zstandard
    except ImportError:  # pragma: no cover - depends on the environment
        return errors
    return (*errors, zstandard.ZstdError)


def iter_records(path: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
    """Every record of the recording at ``path``, in order, as dicts (see the module's
    docstring for their keys; a frame record has ``f`` or ``b``, however it was written). The
    header and each record's keys are checked: a damaged file is a :class:`RecordingError`
    naming the line."""
    name = os.fspath(path)
    try:
        with open_text(path) as text:
            yield from _records(name, text)
    except _unreadable() as exc:
        raise RecordingError(f"{name}: not a readable recording ({exc})") from exc


def _records(name: str, text: IO[str]) -> Iterator[dict[str, Any]]:
    number = 0
    for number, line in enumerate(text, 1):
        if number > 1 and not line.strip():
            continue
        if number > 1 and (match := _FRAME_LINE.match(line)):
            end = line.rstrip("\n")
            if not end.endswith("}"):
                raise RecordingError(f"{name}:{number}: a frame record cut short")
            kind, conn, t = match.groups()
            yield {
                "k": kind,
                "c": int(conn),
                "t": _time(name, number, int(t)),
                "f": end[match.end() : -1],
            }
            continue
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            if number == 1:
                raise _not_a_recording(name) from exc
            raise RecordingError(f"{name}:{number}: not JSON ({exc})") from exc
        if number == 1:
            if (
                not isinstance(record, dict)
                or record.get("k") != "header"
                or record.get("format") != FORMAT
                or record.get("version") not in READABLE_VERSIONS
            ):
                raise _not_a_recording(name)
            _time(name, number, record.get("started_ns", 0))
        else:
            _check_record(name, number, record)
        yield record
    if number == 0:
        raise _not_a_recording(name)


def _not_a_recording(name: str) -> RecordingError:
    versions = ", ".join(map(str, READABLE_VERSIONS))
    return RecordingError(f"{name} is not a trio_dxlink recording (versions {versions})")


_TIME_BOUND = 2**62
"""Times (``t``, ``started_ns``) are integers of less than this magnitude, so that their sum
is a 64-bit integer (Arrow's timestamps)."""


def _time(name: str, number: int, t: object) -> int:
    if not isinstance(t, int) or isinstance(t, bool) or not -_TIME_BOUND < t < _TIME_BOUND:
        raise RecordingError(f"{name}:{number}: time {t!r} is not an integer of 62 bits")
    return t


def _check_record(name: str, number: int, record: Any) -> None:
    """Raise :class:`RecordingError` unless ``record`` has the keys its kind needs, of the
    right types (so readers can use them as they are). A ``j`` frame written in another layout
    (re-serialised by another tool) becomes the ``f`` of its JSON text."""

    def bad(what: str) -> RecordingError:
        return RecordingError(f"{name}:{number}: {what}")

    if not isinstance(record, dict) or not isinstance(record.get("k"), str):
        raise bad("not a recording record")
    kind = record["k"]
    if kind == "manifest":
        _check_manifest(record, bad)
        _time(name, number, record.get("started_ns", 0))
        return
    if kind not in ("in", "out", "open", "close", "dropped"):
        raise bad(f"unknown record kind {kind!r}")
    conn = record.get("c")
    if not isinstance(conn, int) or isinstance(conn, bool):
        raise bad(f"connection {conn!r} is not an integer")
    _time(name, number, record.get("t"))
    if kind in ("in", "out"):
        if "j" in record:
            record["f"] = orjson.dumps(record.pop("j")).decode()
        if isinstance(record.get("f"), str):
            return
        try:
            base64.b64decode(record["b"], validate=True)
        except (KeyError, TypeError, ValueError) as exc:
            raise bad("a frame record with no text (f, j) or base64 bytes (b)") from exc
    elif kind == "open" and not isinstance(record.get("url"), str):
        raise bad("an open record with no url")
    elif kind == "dropped" and (
        not isinstance(record.get("count"), int) or isinstance(record["count"], bool)
    ):
        raise bad("a dropped record with no count")


def _check_manifest(record: dict[str, Any], bad: Callable[[str], RecordingError]) -> None:
    connections = record.get("connections", {})
    if not isinstance(connections, dict):
        raise bad("a manifest whose connections are not an object")
    for conn, info in connections.items():
        channels = info.get("channels", {}) if isinstance(info, dict) else None
        if not conn.isdecimal() or not isinstance(channels, dict):
            raise bad(f"a manifest with a malformed connection {conn!r}")
        for channel, entry in channels.items():
            if (
                not channel.isdecimal()
                or not isinstance(entry, dict)
                or not isinstance(entry.get("event_fields", {}), dict)
                or not isinstance(entry.get("subscriptions", []), list)
                or not all(
                    isinstance(item, dict) and isinstance(item.get("type"), str)
                    for item in entry.get("subscriptions", [])
                )
            ):
                raise bad(f"a manifest with a malformed channel {channel!r}")


def frame_of(record: dict[str, Any]) -> str | bytes:
    """The frame an ``in``/``out`` record holds."""
    if "f" in record:
        text: str = record["f"]
        return text
    return base64.b64decode(record["b"])


def read_manifest(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The manifest (last line) of a recording. Raises :class:`RecordingError` if the
    recording has none (it was cut short)."""
    manifest: dict[str, Any] | None = None
    for record in iter_records(path):
        if record["k"] == "manifest":
            manifest = record
    if manifest is None:
        raise RecordingError(f"{os.fspath(path)} has no manifest (the recording was cut short)")
    return manifest
