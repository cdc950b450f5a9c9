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
