"""The command line, run as a real subprocess (``python -m trio_dxlink``)."""

from __future__ import annotations

import functools
import json
import subprocess

import pytest
import trio

from trio_dxlink import FeedState, Quote, ReconnectPolicy, open_dxlink

from .conftest import CLI, start_serve


async def run_cli(*args: str) -> subprocess.CompletedProcess[bytes]:
    with trio.fail_after(60):
        return await trio.run_process(
            [*CLI, *args], capture_stdout=True, capture_stderr=True, check=False
        )


async def test_stream_json_from_the_embedded_server() -> None:
    result = await run_cli("stream", "Quote", "SPY", "AAPL", "--json", "--count", "6")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.decode().splitlines()
    assert len(lines) == 6
    events = [json.loads(line) for line in lines]
    assert {e["eventType"] for e in events} == {"Quote"}
    assert {e["eventSymbol"] for e in events} <= {"SPY", "AAPL"}
    for e in events:
        assert e["bidPrice"] < e["askPrice"]
    assert result.stderr == b""


async def test_stream_candle_history_as_json() -> None:
    result = await run_cli(
        "stream", "Candle", "AAPL{=5m}", "--json", "--count", "3", "--from-time", "1700000000000"
    )
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.decode().splitlines()]
    assert events[0]["eventFlags"] & 0x04  # SNAPSHOT_BEGIN on the first
    assert events[0]["time"] > events[1]["time"] > events[2]["time"]  # newest first


@pytest.mark.parametrize(
    ("args", "status", "message"),
    [
        (["stream", "Quoet", "SPY"], 2, "unknown event type 'Quoet'"),
        (["stream", "Quote", "SPY", "--url", "http://example"], 2, "must be a ws:// or wss://"),
        (["stream", "Quote", "SPY", "--count", "0"], 2, "--count must be at least 1"),
        (
            ["stream", "Quote", "SPY", "--url", "ws://127.0.0.1:1", "--no-reconnect"],
            1,
            "ConnectError: could not connect",
        ),
        (["serve", "--port", "99999"], 2, "--port must be"),
        (["stream"], 2, "usage:"),
    ],
)
async def test_bad_arguments_give_one_line_and_a_nonzero_exit(
    args: list[str], status: int, message: str
) -> None:
    result = await run_cli(*args)
    assert result.returncode == status
    err = result.stderr.decode()
    assert message in err
    assert "Traceback" not in err
    assert result.stdout == b""


async def test_serve_with_a_fault_flag_drops_connections() -> None:
    async with trio.open_nursery() as nursery:
        process, url = await start_serve(nursery, "--drop-every", "0.3")
        policy = ReconnectPolicy(initial_delay=0.05, jitter=0.0)
        with trio.fail_after(30):
            async with open_dxlink(url, reconnect=policy) as feed:
                await feed.wait_state(FeedState.RECONNECTING)
                await feed.wait_state(FeedState.CONNECTED)
                assert feed.statistics().reconnects >= 1
                quote = await feed.get_event(Quote, "SPY")
        assert quote.event_symbol == "SPY"
        process.terminate()


async def test_serve_prints_its_url_first_and_serves() -> None:
    async with trio.open_nursery() as nursery:
        process, url = await start_serve(nursery, "--seed", "7")
        with trio.fail_after(30):
            async with open_dxlink(url) as feed:
                quote = await feed.get_event(Quote, "SPY")
        assert quote.event_symbol == "SPY"
        assert quote.bid_price < quote.ask_price
        process.terminate()


async def test_a_closed_pipe_ends_the_stream_quietly() -> None:
    async with trio.open_nursery() as nursery:
        run = functools.partial(
            trio.run_process, stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=False
        )
        process: trio.Process = await nursery.start(
            run, [*CLI, "stream", "Quote", "SPY", "AAPL", "--json", "--duration", "30"]
        )
        assert process.stdout is not None
        assert process.stderr is not None
        with trio.fail_after(30):
            first = await process.stdout.receive_some()
            assert first.startswith(b"{")
            await process.stdout.aclose()  # like `| head -1`
            errors = b""
            while chunk := await process.stderr.receive_some():
                errors += chunk
            await process.wait()
    assert process.returncode == 0
    assert b"Traceback" not in errors
