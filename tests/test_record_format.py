"""The recording format, version 2: a text frame's line is written around the frame's text (no
JSON encoding), read back verbatim whatever the frame holds (not JSON, line breaks, any Unicode,
binary); version 1 files are still read and replayed."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import orjson
import pytest
import trio
import trio.testing

from trio_dxlink import (
    Overflow,
    Quote,
    RecordingError,
    Replay,
    iter_records,
    open_dxlink,
    open_recorder,
    read_manifest,
)
from trio_dxlink._recording import frame_of
from trio_dxlink._transport import Transport

from .fixtures.make_recordings import RECONNECT_QUOTES, REPLAY_POLICY, reconnect_quotes

FIXTURES = Path(__file__).parent / "fixtures"

RECEIVED: list[str | bytes] = [
    '{"type":"FEED_DATA","channel":1,"data":["Quote",["SPY",1.5,"NaN"]]}',
    '{"type":"FEED_DATA", "channel" : 1,\n "data":[]}',  # a line break: written as a string
    "{nope",  # not JSON: kept as it came
    '{"type":"ERROR","message":"caf\u00e9 \u20ac \U0001f600 \u2028 \\" \\\\ \\u0000"}',
    "carriage\rreturn",
    "",
    b"\x00\x01binary\xff",
    '{"type":"KEEPALIVE","channel":0}',
]
SENT = ['{"type":"SETUP","channel":0}', '{"type":"AUTH","channel":0,"token":"t0ken-x"}']


class _Scripted:
    """A transport that hands out ``RECEIVED`` and keeps what it is sent."""

    def __init__(self) -> None:
        self.frames = list(RECEIVED)

    async def send(self, text: str) -> None:
        await trio.lowlevel.checkpoint()

    async def receive(self) -> str | bytes:
        await trio.lowlevel.checkpoint()
        return self.frames.pop(0)

    async def aclose(self) -> None:
        await trio.lowlevel.checkpoint()


@asynccontextmanager
async def _scripted(url: str) -> AsyncIterator[Transport]:
    await trio.lowlevel.checkpoint()
    yield _Scripted()


@pytest.mark.parametrize("name", ["s.dxrec", "s.dxrec.zst"])
async def test_every_frame_is_read_back_exactly(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    async with (
        open_recorder(path) as recorder,
        recorder.connector(_scripted)("ws://127.0.0.1:1/x") as transport,
    ):
        for text in SENT:
            await transport.send(text)
        got = [await transport.receive() for _ in RECEIVED]
    assert got == RECEIVED
    records = list(iter_records(path))
    assert records[0]["version"] == 2
    frames = [(r["k"], frame_of(r)) for r in records if r["k"] in ("in", "out")]
    redacted = '{"type":"AUTH","channel":0,"token":"<redacted>"}'
    assert frames == [("out", SENT[0]), ("out", redacted)] + [("in", f) for f in RECEIVED]
    if name.endswith(".dxrec"):
        lines = path.read_bytes().split(b"\n")
        assert lines[4].startswith(b'{"k":"in","c":1,"t":')
        assert lines[4].endswith(b',"j":' + RECEIVED[0].encode() + b"}")  # type: ignore[union-attr]
        assert b'"f":"{\\"type\\":\\"FEED_DATA\\", \\"channel\\" : 1,\\n' in lines[5]
        assert lines[6].endswith(b'"j":{nope}')  # a frame that is not JSON: its line is not
        assert lines[9].endswith(b'"j":}')  # the empty frame
        for number, line in enumerate(lines[:-1]):
            if number not in (6, 9):
                orjson.loads(line)


async def test_a_version_1_recording_is_still_read_and_replayed(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    old = tmp_path / "v1.dxrec"
    with old.open("wb") as out:  # a fixture rewritten as version 1 wrote it: frames as strings
        for record in iter_records(FIXTURES / "reconnect_after_drop.dxrec"):
            if record["k"] == "header":
                record["version"] = 1
            out.write(orjson.dumps(record) + b"\n")
    assert b'"j":' not in old.read_bytes()
    with Replay(old) as replay:
        async with (
            open_dxlink(
                replay.url, replay.token, connector=replay.connector(), reconnect=REPLAY_POLICY
            ) as feed,
            feed.subscribe(Quote, ["SPY", "AAPL"], overflow=Overflow.LOSSLESS) as rx,
        ):
            with trio.fail_after(60):
                got = [await rx.receive() for _ in range(6)]
    assert reconnect_quotes(got) == RECONNECT_QUOTES  # type: ignore[arg-type]


def test_a_cut_frame_line_and_unknown_versions_are_recording_errors(tmp_path: Path) -> None:
    header = '{"k":"header","format":"trio-dxlink-recording","version":2}\n'
    cut = tmp_path / "cut.dxrec"
    cut.write_text(header + '{"k":"in","c":1,"t":5,"j":{"type":"KEEPALIVE","chan\n')
    with pytest.raises(RecordingError, match=r"cut\.dxrec:2: a frame record cut short"):
        list(iter_records(cut))
    future = tmp_path / "future.dxrec"
    future.write_text(header.replace('"version":2', '"version":3'))
    with pytest.raises(RecordingError, match=r"not a trio_dxlink recording \(versions 1, 2\)"):
        list(iter_records(future))


# --- damaged files: a RecordingError naming what is wrong, never another exception ---

_HEADER = '{"k":"header","format":"trio-dxlink-recording","version":2,"started_ns":0}'
_OPEN = '{"k":"open","c":1,"t":0,"url":"ws://127.0.0.1:1/"}'
_FRAME = '{"k":"in","c":1,"t":5,"j":{"type":"KEEPALIVE","channel":0}}'
_CLOSE = '{"k":"close","c":1,"t":9,"reason":"closed","by":"client"}'
_MANIFEST = (
    '{"k":"manifest","format":"trio-dxlink-recording","version":2,"started_ns":0,'
    '"connections":{"1":{"url":"ws://127.0.0.1:1/","channels":{}}}}'
)
_GOOD = [_HEADER, _OPEN, _FRAME, _CLOSE, _MANIFEST]


def _lines(*replace: tuple[int, str]) -> bytes:
    lines = list(_GOOD)
    for index, line in replace:
        lines[index] = line
    return ("\n".join(lines) + "\n").encode()


def _zstd(data: bytes) -> bytes:
    import zstandard

    return zstandard.ZstdCompressor(write_checksum=True).compress(data)


def _flipped(data: bytes, at: int) -> bytes:
    out = bytearray(data)
    out[at] ^= 0x10
    return bytes(out)


DAMAGED: dict[str, bytes] = {
    "empty": b"",
    "blank first line": b"\n" + _lines(),
    "binary garbage": b"\xff\xfe\x00garbage\x80\n" * 3,
    "zstd magic, then garbage": b"\x28\xb5\x2f\xfd" + b"\x13garbage" * 10,
    "zstd, a byte flipped": _flipped(_zstd(_lines() * 20), -3),
    "zstd, cut in half": _zstd(_lines() * 20)[: len(_zstd(_lines() * 20)) // 2],
    "not UTF-8 in a frame": _lines((2, '{"k":"in","c":1,"t":5,"j":{"x":"\xff"}}')).replace(
        b"\xc3\xbf", b"\xff"
    ),
    "open with no url": _lines((1, '{"k":"open","c":1,"t":0}')),
    "connection not an integer": _lines((2, '{"k":"in","c":"1","t":5,"f":"x"}')),
    "time a string": _lines((2, '{"k":"in","c":1,"t":"5","f":"x"}')),
    "time too large": _lines((2, '{"k":"in","c":1,"t":4611686018427387904,"f":"x"}')),
    "frame text a number": _lines((2, '{"k":"in","c":1,"t":5,"f":123}')),
    "frame with no text": _lines((2, '{"k":"in","c":1,"t":5}')),
    "bad base64": _lines((2, '{"k":"in","c":1,"t":5,"b":"%%%"}')),
    "dropped count a string": _lines((2, '{"k":"dropped","c":1,"t":5,"count":"3"}')),
    "unknown kind": _lines((2, '{"k":"mystery","c":1,"t":5}')),
    "manifest connection not a number": _lines(
        (4, _MANIFEST.replace('"connections":{"1"', '"connections":{"a"'))
    ),
    "manifest subscriptions not a list": _lines(
        (4, _MANIFEST.replace('"channels":{}', '"channels":{"1":{"subscriptions":3}}'))
    ),
}


@pytest.mark.parametrize("damage", list(DAMAGED))
async def test_a_damaged_recording_is_a_recording_error(tmp_path: Path, damage: str) -> None:
    path = tmp_path / "damaged.dxrec"
    path.write_bytes(DAMAGED[damage])
    with pytest.raises(RecordingError):
        read_manifest(path)  # reads every record
    with pytest.raises(RecordingError), Replay(path) as replay, trio.fail_after(10):
        async with open_dxlink(replay.url, replay.token, connector=replay.connector()):
            await replay.finished.wait()


def test_a_frame_line_written_by_another_tool_is_still_a_frame(tmp_path: Path) -> None:
    # re-serialised with spaces (json.dumps): not the fixed layout, read through JSON instead
    path = tmp_path / "respaced.dxrec"
    path.write_bytes(
        _lines((2, '{"k": "in", "c": 1, "t": 5, "j": {"type": "KEEPALIVE", "channel": 0}}'))
    )
    frames = [r for r in iter_records(path) if r["k"] == "in"]
    assert [orjson.loads(frame_of(r)) for r in frames] == [{"type": "KEEPALIVE", "channel": 0}]
    assert read_manifest(path)["connections"]["1"]["url"] == "ws://127.0.0.1:1/"
