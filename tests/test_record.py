"""Recording at the transport seam and replaying through ``open_dxlink``: round trips against
the in-memory local server (with a reconnect in the middle), token redaction, recorded
spacing under a MockClock, the manifest, and counted drops when the disk falls behind."""

from __future__ import annotations

import base64
import io
import os
import sys
from functools import partial
from pathlib import Path

import orjson
import pytest
import trio
import trio.testing
import zstandard

from trio_dxlink import (
    FeedState,
    Overflow,
    Quote,
    RecordingError,
    Replay,
    Trade,
    iter_records,
    open_dxlink,
    open_recorder,
    read_manifest,
    recorded_subscriptions,
)
from trio_dxlink._codec import encode_full
from trio_dxlink.events import Event
from trio_dxlink.testing import DXLinkServer, ServerConfig, open_dxlink_server

from .conftest import pinned_market, until

TOKEN = "s3cret-t0ken-abc"


# Lossless handles: a conflating one's output depends on when its consumer runs, not only on
# the frames.


def _wire(events: list[Event]) -> list[bytes]:
    """Events as comparable bytes (NaN != NaN, so events with NaN fields never compare equal)."""
    return [orjson.dumps(encode_full(e)) for e in events]


async def _receive_until(rx: object, price: float, within: float = 30) -> list[Event]:
    got: list[Event] = []
    with trio.fail_after(within):
        async for event in rx:  # type: ignore[attr-defined]
            got.append(event)
            if isinstance(event, Quote) and event.bid_price == price:
                return got
    raise AssertionError("the handle ended")


async def _record_session(path: Path, server: DXLinkServer) -> list[Event]:
    """A live session recorded to ``path``: quotes, a dropped connection, more quotes."""
    url = server.url + "?token=" + TOKEN  # a query string must not reach the file either
    live: list[Event] = []
    async with (
        open_dxlink(url, TOKEN, connector=server.connector(), record=path) as feed,
        feed.subscribe(Quote, ["SPY", "AAPL"], overflow=Overflow.LOSSLESS) as rx,
        feed.subscribe(Trade, ["SPY"]) as trades,
    ):
        await until(server, lambda: ("Trade", "SPY") in server.subscriptions())
        for i in range(1, 6):
            server.publish(Quote("SPY", bid_price=i), Quote("AAPL", bid_price=100 + i))
        server.publish(Trade("SPY", price=7.0))
        live += await _receive_until(rx, 105)
        assert (await trades.receive()).price == 7.0
        server.drop_all()
        with trio.fail_after(60):
            await feed.wait_state(FeedState.RECONNECTING)
            await feed.wait_state(FeedState.CONNECTED)
        await until(server, lambda: ("Quote", "AAPL") in server.subscriptions())
        for i in range(6, 9):
            server.publish(Quote("AAPL", bid_price=100 + i))
        live += await _receive_until(rx, 108)
    return live


@pytest.mark.parametrize("name", ["session.dxrec", "session.dxrec.zst"])
async def test_a_session_with_a_reconnect_replays_to_the_same_events(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, name: str
) -> None:
    path = tmp_path / name
    config = ServerConfig(simulate=False, token=TOKEN)
    async with open_dxlink_server(config=config, market=pinned_market(), in_memory=True) as server:
        live = await _record_session(path, server)
    assert len(live) >= 8

    with Replay(path) as replay:
        assert replay.url == server.url
        async with (
            open_dxlink(replay.url, replay.token, connector=replay.connector()) as feed,
            feed.subscribe(Quote, ["SPY", "AAPL"], overflow=Overflow.LOSSLESS) as rx,
            feed.subscribe(Trade, ["SPY"]) as trades,
        ):
            replayed = [await rx.receive() for _ in live]
            assert (await trades.receive()).price == 7.0
            with trio.fail_after(10):
                await replay.finished.wait()
            assert feed.statistics().reconnects == 1
    assert _wire(replayed) == _wire(live)


@pytest.mark.parametrize("compress", [False, True])
async def test_no_token_reaches_the_file(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, compress: bool
) -> None:
    path = tmp_path / "s.dxrec"
    config = ServerConfig(simulate=False, token=TOKEN)
    async with (
        open_dxlink_server(config=config, market=pinned_market(), in_memory=True) as server,
        open_recorder(path, compress=compress) as recorder,
    ):
        await _record_session(path.with_suffix(".other"), server)  # record= a path, too
        async with (
            open_dxlink(
                server.url + "?token=" + TOKEN, TOKEN, connector=server.connector(), record=recorder
            ) as feed,
            feed.subscribe(Quote, ["SPY"]) as rx,
        ):
            server.publish(Quote("SPY", bid_price=3.0))
            await _receive_until(rx, 3.0)
        assert recorder.statistics().frames > 0
    raw = path.read_bytes()
    assert raw.startswith(b"\x28\xb5\x2f\xfd") == compress
    text = zstandard.ZstdDecompressor().stream_reader(raw).read() if compress else raw
    other = path.with_suffix(".other").read_bytes()
    for data in (text, other):  # the AUTH frames are there, redacted
        assert b'"j":{"type":"AUTH","token":"<redacted>"' in data
    for data in (raw, text, other):
        assert TOKEN.encode() not in data


async def test_the_manifest_describes_the_session(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    path = tmp_path / "s.dxrec"
    async with open_dxlink_server(
        config=ServerConfig(simulate=False, token=TOKEN), market=pinned_market(), in_memory=True
    ) as server:
        await _record_session(path, server)
    manifest = read_manifest(path)
    assert manifest["library"]
    assert manifest["url"] == server.url.split("?")[0]
    assert manifest["dropped"] == 0
    assert manifest["ended_ns"] > manifest["started_ns"]
    assert set(manifest["connections"]) == {"1", "2"}
    first = manifest["connections"]["1"]["channels"]
    quote_channel = next(ch for ch in first.values() if ch["subscriptions"][0]["type"] == "Quote")
    assert "bidPrice" in quote_channel["event_fields"]["Quote"]
    subscribed = recorded_subscriptions(manifest)
    assert list(subscribed) == ["Quote", "Trade"]  # in the order of their channels
    assert sorted(entry["symbol"] for entry in subscribed["Quote"]) == ["AAPL", "SPY"]
    assert subscribed["Trade"] == [{"type": "Trade", "symbol": "SPY"}]
    kinds = [(r["k"], r.get("c")) for r in iter_records(path) if r["k"] in ("open", "close")]
    assert kinds == [("open", 1), ("close", 1), ("open", 2), ("close", 2)]


async def test_replay_at_1x_keeps_the_recorded_spacing_and_fast_replay_takes_no_time(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    path = tmp_path / "hour.dxrec"
    gaps = [0.0, 600.0, 1200.0, 1800.0, 2400.0, 3600.0]
    async with (
        open_dxlink_server(
            config=ServerConfig(simulate=False), market=pinned_market(), in_memory=True
        ) as server,
        open_dxlink(server.url, connector=server.connector(), record=path) as feed,
        feed.subscribe(Quote, ["SPY"]) as rx,
    ):
        await until(server, lambda: ("Quote", "SPY") in server.subscriptions())
        live_times = []
        start = trio.current_time()
        for i, at in enumerate(gaps):
            await trio.sleep_until(start + at)
            server.publish(Quote("SPY", bid_price=i + 1))
            await _receive_until(rx, i + 1, within=7200)
            live_times.append(trio.current_time() - start)

    for speed, expected in ((1.0, live_times), (4.0, [t / 4 for t in live_times])):
        with Replay(path, speed=speed) as replay:
            async with (
                open_dxlink(replay.url, replay.token, connector=replay.connector()) as feed,
                feed.subscribe(Quote, ["SPY"]) as rx,
            ):
                times = []
                for i in range(len(gaps)):
                    await _receive_until(rx, i + 1, within=7200)
                    times.append(trio.current_time())
                spacing = [t - times[0] for t in times]
        assert spacing == pytest.approx(expected, abs=1e-6)

    with Replay(path) as replay:
        began = trio.current_time()
        async with (
            open_dxlink(replay.url, replay.token, connector=replay.connector()) as feed,
            feed.subscribe(Quote, ["SPY"]) as rx,
        ):
            await _receive_until(rx, len(gaps))
            assert trio.current_time() - began < 1.0  # an hour, replayed at once


async def test_a_full_buffer_drops_frames_counts_them_and_never_blocks(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    path = tmp_path / "s.dxrec"
    async with (
        open_dxlink_server(
            config=ServerConfig(simulate=False), market=pinned_market(), in_memory=True
        ) as server,
        open_recorder(path, max_buffer_bytes=1) as recorder,
        open_dxlink(server.url, connector=server.connector(), record=recorder) as feed,
        feed.subscribe(Quote, ["SPY"]) as rx,
    ):
        server.publish(Quote("SPY", bid_price=1.0))
        await _receive_until(rx, 1.0)  # delivered although nothing could be recorded
        stats = recorder.statistics()
        assert stats.frames == 0
        assert stats.dropped >= 4
    manifest = read_manifest(path)
    assert manifest["dropped"] >= stats.dropped  # and the frames of the close, after


async def test_bad_recordings_are_recording_errors(tmp_path: Path) -> None:
    missing = tmp_path / "missing.dxrec"
    with pytest.raises(RecordingError, match="cannot open"):
        read_manifest(missing)
    other = tmp_path / "other.dxrec"
    other.write_text('{"k":"header","format":"something-else","version":1}\n')
    with pytest.raises(RecordingError, match="not a trio_dxlink recording"):
        read_manifest(other)
    broken = tmp_path / "broken.dxrec"
    broken.write_text('{"k":"header","format":"trio-dxlink-recording","version":1}\n{nope\n')
    with pytest.raises(RecordingError, match=":2: not JSON"):
        read_manifest(broken)
    cut = tmp_path / "cut.dxrec"
    cut.write_text('{"k":"header","format":"trio-dxlink-recording","version":1}\n')
    with pytest.raises(RecordingError, match="no manifest"):
        read_manifest(cut)
    with pytest.raises(ValueError, match="speed"):
        Replay(cut, speed=0)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
async def test_a_recording_to_a_pipe_is_written_whole(tmp_path: Path) -> None:
    # not a regular file: the page-cache advice fails (ESPIPE) and the recorder just writes
    path = tmp_path / "fifo.dxrec"
    os.mkfifo(path)
    received: list[bytes] = []

    def drain() -> None:
        with open(path, "rb") as fifo:
            received.append(fifo.read())

    async with trio.open_nursery() as nursery:
        # abandoned if the test fails before the recorder opens the pipe (not left hanging)
        nursery.start_soon(partial(trio.to_thread.run_sync, drain, abandon_on_cancel=True))
        async with (
            open_dxlink_server(
                config=ServerConfig(simulate=False), market=pinned_market(), in_memory=True
            ) as server,
            open_dxlink(server.url, TOKEN, connector=server.connector(), record=path) as feed,
            feed.subscribe(Quote, ["SPY"], overflow=Overflow.LOSSLESS) as rx,
        ):
            await until(server, lambda: ("Quote", "SPY") in server.subscriptions())
            for i in range(1, 4):
                server.publish(Quote("SPY", bid_price=i))
            live = await _receive_until(rx, 3)
    assert TOKEN.encode() not in received[0]
    copy = tmp_path / "copy.dxrec"
    copy.write_bytes(received[0])
    assert read_manifest(copy)["frames"] > 0
    with Replay(copy) as replay, trio.fail_after(30):
        async with (
            open_dxlink(replay.url, replay.token, connector=replay.connector()) as feed,
            feed.subscribe(Quote, ["SPY"], overflow=Overflow.LOSSLESS) as rx,
        ):
            replayed = await _receive_until(rx, 3)
    assert [q.bid_price for q in replayed][-3:] == [1.0, 2.0, 3.0]
    assert _wire(replayed) == _wire(live)


@pytest.mark.parametrize("compress", [False, True])
@pytest.mark.parametrize("target", ["file", "pipe"])
async def test_the_sink_writes_every_batch_whole(
    tmp_path: Path, compress: bool, target: str
) -> None:
    # enough batches for the page-cache advice to run (a pipe refuses it: the sink goes on)
    from trio_dxlink._record import _ADVISE_EVERY, _Sink

    path = tmp_path / "out.dxrec"
    batches: list[list[bytes | str]] = [
        [
            b'{"k":"in","c":1,"t":%d,"j":' % i,
            '{"type":"KEEPALIVE","x":"%s"}' % ("é" * i * 999),
            b"}\n",
        ]
        for i in range(3 * _ADVISE_EVERY)
    ]
    expected = b"".join(p.encode() if isinstance(p, str) else p for b in batches for p in b)
    received: list[bytes] = []

    def write_all() -> _Sink:
        sink = _Sink(str(path), compress)
        try:
            for batch in batches:
                sink.write(batch)
        finally:
            sink.close()
        return sink

    def drain() -> None:
        with open(path, "rb") as fifo:
            received.append(fifo.read())

    if target == "pipe":
        os.mkfifo(path)
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            if target == "pipe":
                nursery.start_soon(partial(trio.to_thread.run_sync, drain, abandon_on_cancel=True))
            sink = await trio.to_thread.run_sync(write_all, abandon_on_cancel=True)
    data = received[0] if target == "pipe" else path.read_bytes()
    if compress:
        data = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data)).read()
    assert data == expected
    if target == "pipe" or not hasattr(os, "posix_fadvise"):
        assert sink._advise is None
    else:
        assert sink._advise is not None


async def test_a_frame_that_is_not_unicode_is_kept_as_bytes(tmp_path: Path) -> None:
    # a lone surrogate cannot be written as UTF-8 (a transport of the user's could hand one over)
    path = tmp_path / "s.dxrec"
    async with open_recorder(path) as recorder:
        conn = recorder._open("ws://127.0.0.1:1/")
        recorder.frame(conn, "in", '{"type":"KEEPALIVE","x":"\udc80"}')
        recorder.frame(conn, "in", '{"type":"KEEPALIVE","x":"é"}')
    frames = [r for r in iter_records(path) if r["k"] == "in"]
    lone = '{"type":"KEEPALIVE","x":"\udc80"}'
    assert base64.b64decode(frames[0]["b"]) == lone.encode("utf-8", "surrogatepass")
    assert frames[1]["f"] == '{"type":"KEEPALIVE","x":"é"}'


async def test_small_frames_count_their_line_against_the_buffer(tmp_path: Path) -> None:
    # a frame is counted as its text plus LINE_ALLOWANCE, so many small frames cannot hold
    # several times max_buffer_bytes in memory
    from trio_dxlink._record import LINE_ALLOWANCE

    frame = '{"type":"KEEPALIVE","channel":0}'
    room = 5 * (len(frame) + LINE_ALLOWANCE)
    async with open_recorder(tmp_path / "s.dxrec", max_buffer_bytes=room) as recorder:
        conn = recorder._open("ws://127.0.0.1:1/")
        for _ in range(8):  # no checkpoint: the writer cannot run in between
            recorder.frame(conn, "in", frame)
        stats = recorder.statistics()
        assert (stats.frames, stats.dropped) == (5, 3)
        assert stats.bytes == 5 * len(frame)


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
@pytest.mark.parametrize("compress", [False, True])
async def test_a_full_disk_is_a_recording_error(compress: bool) -> None:
    # every write fails (ENOSPC): the header, a batch, the compressor's last block at close
    with pytest.raises(RecordingError, match="No space left"):
        async with (
            open_dxlink_server(
                config=ServerConfig(simulate=False), market=pinned_market(), in_memory=True
            ) as server,
            open_recorder("/dev/full", compress=compress) as recorder,
            open_dxlink(server.url, connector=server.connector(), record=recorder) as feed,
            feed.subscribe(Quote, ["SPY"]) as rx,
        ):
            await until(server, lambda: ("Quote", "SPY") in server.subscriptions())
            server.publish(Quote("SPY", bid_price=1.0))
            await _receive_until(rx, 1.0)  # (plain: the header's write failed already)
    # compressed: the failure shows when the compressor's last block is written, at the end


_FILE_SIZE_LIMIT_SCRIPT = """
import resource, signal, sys, trio
from trio_dxlink import Overflow, Quote, RecordingError, open_dxlink, open_recorder
from trio_dxlink.testing import ServerConfig, open_dxlink_server

async def main():
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
    resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))
    try:
        async with (
            open_dxlink_server(config=ServerConfig(simulate=False), in_memory=True) as server,
            open_recorder(sys.argv[1]) as recorder,
            open_dxlink(server.url, connector=server.connector(), record=recorder) as feed,
            feed.subscribe(Quote, ["SPY"], overflow=Overflow.LOSSLESS) as rx,
        ):
            with trio.fail_after(30):
                for i in range(1, 100_000):
                    server.publish(Quote("SPY", bid_price=float(i)))
                    await rx.receive()
    except RecordingError as exc:
        print("RecordingError:", exc)

trio.run(main)
"""


@pytest.mark.skipif(sys.platform == "win32", reason="needs POSIX resource limits")
async def test_a_disk_that_fills_mid_recording_ends_the_block_with_a_recording_error(
    tmp_path: Path,
) -> None:
    result = await trio.run_process(
        [sys.executable, "-c", _FILE_SIZE_LIMIT_SCRIPT, str(tmp_path / "s.dxrec")],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr.decode()
    assert b"RecordingError: cannot write recording" in result.stdout
    assert b"File too large" in result.stdout
