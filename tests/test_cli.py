"""The command line, run as a real subprocess (``python -m trio_dxlink``); its argument errors
in-process (through ``main``: ``tests/conftest.py``'s ``run_main``)."""

from __future__ import annotations

import functools
import json
import os
import re
import subprocess

import attrs
import pytest
import trio

from trio_dxlink import (
    NO_RECONNECT,
    AuthenticationError,
    ConnectError,
    ConnectionClosedError,
    FeedState,
    Quote,
    ReconnectPolicy,
    open_dxlink,
)

from .conftest import CLI, run_main, start_serve


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
        (["stream"], 2, "the following arguments are required: type, symbols"),
    ],
)
def test_bad_arguments_give_one_line_and_a_nonzero_exit(
    args: list[str], status: int, message: str
) -> None:
    result = run_main(*args)
    assert result.returncode == status
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


async def test_serve_with_a_fault_flag_drops_connections() -> None:
    async with trio.open_nursery() as nursery:
        process, url = await start_serve(nursery, "--drop-every", "0.5")
        policy = ReconnectPolicy(initial_delay=0.05, jitter=0.0)
        with trio.fail_after(60):
            # The first connection is not retried (by design), and the server drops every
            # connection on its own timer, so on a slow machine a drop can hit the first
            # handshake: then the test connects again. Once in, drops are survived.
            for _attempt in range(10):
                entered = False
                try:
                    async with open_dxlink(url, reconnect=policy) as feed:
                        entered = True
                        await feed.wait_state(FeedState.RECONNECTING)
                        await feed.wait_state(FeedState.CONNECTED)
                        assert feed.statistics().reconnects >= 1
                        quote = await feed.get_event(Quote, "SPY")
                    break
                except (ConnectError, ConnectionClosedError):
                    if entered:  # a drop after the first connection must be survived
                        raise
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


# --- tastytrade: `serve --tastytrade` and `stream --tastytrade` ---------------------------------

BANNER = re.compile(
    r"^tastytrade (?P<env>sandbox )?API on (?P<url>http://127\.0\.0\.1:\d+)"
    r" \(TT_SECRET=(?P<secret>\S+) TT_REFRESH=(?P<refresh>\S+)\)$"
)


@attrs.frozen
class Fake:
    """What `serve --tastytrade` printed: the DXLink URL, and each API's URL and credentials."""

    dxlink_url: str
    api: dict[str, str]
    sandbox: dict[str, str]

    def env(self, *, sandbox: bool = False, **overrides: str) -> dict[str, str]:
        """This process's environment with the API's credentials in TT_SECRET / TT_REFRESH."""
        api = self.sandbox if sandbox else self.api
        env = environment_without_credentials()
        env.update(TT_SECRET=api["secret"], TT_REFRESH=api["refresh"])
        env.update(overrides)
        return env

    def secrets(self) -> list[bytes]:
        return [
            api[key].encode() for api in (self.api, self.sandbox) for key in ("secret", "refresh")
        ]


def environment_without_credentials() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("TT_SECRET", "TT_REFRESH")}


async def start_tastytrade_serve(nursery: trio.Nursery, *flags: str) -> tuple[trio.Process, Fake]:
    run = functools.partial(trio.run_process, stdout=subprocess.PIPE, check=False)
    command = [*CLI, "serve", "--tastytrade", "--port", "0", *flags]
    process: trio.Process = await nursery.start(run, command)
    assert process.stdout is not None
    buffer = b""
    with trio.fail_after(30):
        while buffer.count(b"\n") < 3:
            chunk = await process.stdout.receive_some()
            assert chunk, f"serve --tastytrade exited early, after {buffer!r}"
            buffer += chunk
    first, *banner = buffer.decode().splitlines()[:3]
    assert first.startswith("listening on ws://127.0.0.1:")  # what existing tooling reads
    apis = {}
    for line in banner:
        match = BANNER.match(line)
        assert match, line
        apis["sandbox" if match["env"] else "production"] = match.groupdict()
    return process, Fake(first.removeprefix("listening on "), apis["production"], apis["sandbox"])


async def run_stream(
    fake: Fake, env: dict[str, str], *args: str, debug: bool = False
) -> tuple[int, str, str]:
    """Run `stream ARGS` (with -vv: logging at DEBUG); check no credential was printed."""
    command = [*CLI, *(["-vv"] if debug else []), "stream", *args]
    with trio.fail_after(60):
        result = await trio.run_process(
            command, capture_stdout=True, capture_stderr=True, check=False, env=env
        )
    for secret in fake.secrets():
        assert secret not in result.stdout
        assert secret not in result.stderr
    return result.returncode, result.stdout.decode(), result.stderr.decode()


async def test_serve_tastytrade_prints_both_urls_and_stream_signs_in_through_it() -> None:
    async with trio.open_nursery() as nursery:
        process, fake = await start_tastytrade_serve(nursery)
        assert fake.api["url"] != fake.sandbox["url"]
        assert fake.api["secret"] != fake.sandbox["secret"]
        status, out, err = await run_stream(
            fake,
            fake.env(),
            "--tastytrade", "--api-url", fake.api["url"], "Quote", "SPY", "AAPL", "--json",
            "--count", "4", debug=True,
        )  # fmt: skip
        # The DXLink server serve printed first wants a token: the stream got it from the API.
        with pytest.raises(AuthenticationError, match="requires a token"):
            async with open_dxlink(fake.dxlink_url, reconnect=NO_RECONNECT):
                pass
        process.terminate()
    assert status == 0, err
    assert "signed in to tastytrade" in err  # the DEBUG log ran (and showed no secret)
    assert "Traceback" not in err
    events = [json.loads(line) for line in out.splitlines()]
    assert len(events) == 4
    assert {e["eventType"] for e in events} == {"Quote"}
    assert {e["eventSymbol"] for e in events} <= {"SPY", "AAPL"}


async def run_stream_in_process(
    fake: Fake, env: dict[str, str], monkeypatch: pytest.MonkeyPatch, *args: str
) -> tuple[int, str, str]:
    """`stream ARGS` in-process (through ``main``, in a worker thread) with the tastytrade
    credentials ``env`` holds; check no credential was printed."""
    for name in ("TT_SECRET", "TT_REFRESH"):
        if name in env:
            monkeypatch.setenv(name, env[name])
        else:
            monkeypatch.delenv(name, raising=False)
    with trio.fail_after(60):
        result = await trio.to_thread.run_sync(functools.partial(run_main, "stream", *args))
    for secret in fake.secrets():
        assert secret.decode() not in result.stdout
        assert secret.decode() not in result.stderr
    return result.returncode, result.stdout, result.stderr


async def test_stream_tastytrade_errors_are_one_line_without_secrets(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The stream runs in-process (test_stream_tastytrade_when_the_login_is_not_entitled runs
    # one such error in a real process).
    async with trio.open_nursery() as nursery:
        process, fake = await start_tastytrade_serve(nursery)
        api, sandbox = fake.api["url"], fake.sandbox["url"]
        cases = [
            # (environment, arguments, exit status, message)
            (environment_without_credentials(), ["--api-url", api], 2,
             "TT_SECRET and TT_REFRESH not set"),
            (fake.env(TT_SECRET="wrong"), ["--api-url", api], 1,
             "TastytradeAuthenticationError: tastytrade rejected the client secret"),
            (fake.env(TT_REFRESH="revoked"), ["--api-url", api], 1,
             "TastytradeAuthenticationError: tastytrade refused the refresh token"),
            (fake.env(sandbox=True), ["--sandbox", "--api-url", sandbox], 1,
             "the tastytrade sandbox has no market data"),
            (fake.env(), ["--api-url", api, "--url", fake.dxlink_url], 2,
             "--tastytrade gets the DXLink URL from tastytrade: leave out --url"),
            (fake.env(), ["--api-url", "http://example.com"], 2,
             "refusing to send tastytrade credentials in clear text to 'example.com'"),
            (fake.env(), ["--api-url", "ftp://127.0.0.1"], 2, "must be an http:// or https://"),
        ]  # fmt: skip
        results = []
        for env, args, status, message in cases:
            outcome = await run_stream_in_process(
                fake, env, monkeypatch, "--tastytrade", *args, "Quote", "SPY"
            )
            results.append((outcome, status, message))
        not_tastytrade = await run_stream_in_process(
            fake, fake.env(), monkeypatch, "--sandbox", "Quote", "SPY"
        )
        process.terminate()
    for (status, out, err), expected_status, message in results:
        assert (status, out) == (expected_status, ""), err
        assert message in err
        assert err.count("\n") == 1, err  # one line, no traceback
    assert not_tastytrade[0] == 2
    assert "--sandbox and --api-url need --tastytrade" in not_tastytrade[2]


async def test_stream_tastytrade_when_the_login_is_not_entitled() -> None:
    async with trio.open_nursery() as nursery:
        process, fake = await start_tastytrade_serve(nursery, "--not-entitled")
        status, out, err = await run_stream(
            fake, fake.env(), "--tastytrade", "--api-url", fake.api["url"], "Quote", "SPY"
        )
        process.terminate()
    assert (status, out) == (1, "")
    assert err.startswith("trio-dxlink: TastytradeAuthenticationError: ")
    assert "not entitled to market data" in err
    assert err.count("\n") == 1


def test_serve_tastytrade_flags_need_tastytrade() -> None:
    result = run_main("serve", "--not-entitled")
    assert result.returncode == 2
    assert "--api-port and --not-entitled need --tastytrade" in result.stderr
    assert "Traceback" not in result.stderr


async def test_serve_no_simulate_is_a_scripted_server() -> None:
    async with trio.open_nursery() as nursery:
        process, url = await start_serve(nursery, "--no-simulate", "--update-interval", "0.01")
        with trio.fail_after(30):
            async with open_dxlink(url) as feed, feed.subscribe(Quote, ["SPY"]) as rx:
                # A simulating server answers at once with SPY's quote and then every 10 ms;
                # a scripted one sends nothing (an absence, so it is bounded, not awaited).
                with trio.move_on_after(1):
                    await rx.receive()
                    raise AssertionError("a --no-simulate server sent market data")
                assert feed.statistics().events_received == 0
        process.terminate()
