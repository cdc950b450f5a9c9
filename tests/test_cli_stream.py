"""``trio-dxlink stream``: arguments and JSON output for every event type (in-process, through
``main``), one bad argument and the live table in a pseudo-terminal across a server-side
disconnect (real subprocesses)."""

from __future__ import annotations

import datetime as dt
import functools
import json
import re
import signal
import subprocess
from collections.abc import AsyncIterator

import pytest
import trio
from rich.console import Console

from trio_dxlink._cli_common import UsageError, parse_time_argument
from trio_dxlink._cli_stream import listed_option
from trio_dxlink._cli_table import EventTable, local_time
from trio_dxlink.events import EVENT_TYPES, Candle, Order, Quote
from trio_dxlink.testing import DXLinkServer, Market, ServerConfig, open_dxlink_server

from .conftest import CLI, run_main
from .terminal import Terminal, status_line


async def run_cli(*args: str) -> subprocess.CompletedProcess[bytes]:
    with trio.fail_after(60):
        return await trio.run_process(
            [*CLI, *args], capture_stdout=True, capture_stderr=True, check=False
        )


# --- arguments ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["Quote", ""], "empty symbol ''"),
        (["Quote", "SPY", " "], "empty symbol ' '"),
        (["Candle", "AAPL{=xyz}"], "invalid candle symbol 'AAPL{=xyz}'"),
        (["Quote", "SPY", "--token", "secret"], "--token needs --url"),
        (["Quoet", "SPY"], "unknown event type 'Quoet' (known: Quote, Trade,"),
        (["Quote", "SPY", "--source", "NTV"], "--source is for Order, SpreadOrder and"),
        (["Order", "SPY", "--source", ""], "--source must be an order source"),
        (["Quote", "SPY", "--from-time", "-2h"], "--from-time is for time-series types"),
        (["Candle", "SPY{=1m}", "--from-time", "yesterday"], "--from-time must be an ISO"),
        (["Candle", "SPY{=1m}", "--from-time", "1700000000"], "looks like epoch seconds"),
        (["Quote", "SPY", "--duration", "0"], "--duration must be positive"),
        (["Quote", "SPY", "--count", "x"], "argument --count: invalid int value: 'x'"),
        (["Quote"], "the following arguments are required: symbols"),
    ],
)
def test_each_bad_argument_is_one_line_and_exit_status_2(args: list[str], message: str) -> None:
    result = run_main("stream", *args)
    err = result.stderr
    assert result.returncode == 2, err
    assert message in err
    assert err.count("\n") == 1, err
    assert err.startswith("trio-dxlink")
    assert result.stdout == ""


async def test_a_bad_argument_to_the_real_command_is_one_line_and_exit_status_2() -> None:
    result = await run_cli("stream", "Quote", "SPY", "--duration", "0")
    err = result.stderr.decode()
    assert result.returncode == 2, err
    assert err == "trio-dxlink: error: --duration must be positive\n"
    assert result.stdout == b""


def test_help_lists_every_event_type_and_the_defaults() -> None:
    result = run_main("stream", "--help")
    assert result.returncode == 0
    text = result.stdout
    listed = re.findall(r"^  (\w+) +\S", text.split("event types", 1)[1], re.MULTILINE)
    assert listed[: len(EVENT_TYPES)] == [cls.__name__ for cls in EVENT_TYPES]
    assert "(default: 0)" in text  # --seed
    assert "-2h" in text
    assert "``" not in text  # docstring markup is not shown


def test_from_time_text_forms() -> None:
    now = dt.datetime(2024, 1, 5, 15, 0, tzinfo=dt.timezone.utc)
    at = int(now.timestamp() * 1000)
    assert parse_time_argument("-2h", "t", now) == at - 2 * 3_600_000
    assert parse_time_argument("-30m", "t", now) == at - 30 * 60_000
    assert parse_time_argument("-1d", "t", now) == at - 86_400_000
    assert parse_time_argument("1704466800000", "t") == 1_704_466_800_000
    assert parse_time_argument("2024-01-05T15:00:00Z", "t") == at
    assert parse_time_argument("2024-01-05 16:00+01:00", "t") == at
    naive = dt.datetime(2024, 1, 5, 15, 0).astimezone()  # no offset: local time
    assert parse_time_argument("2024-01-05T15:00", "t") == int(naive.timestamp() * 1000)
    with pytest.raises(UsageError, match="epoch seconds"):
        parse_time_argument("1704466800", "t")
    with pytest.raises(UsageError, match="relative time"):
        parse_time_argument("-2x", "t")


def test_candle_history_from_a_relative_time() -> None:
    result = run_main(
        "stream", "Candle", "AAPL{=5m}", "--json", "--count", "3", "--from-time", "-2h"
    )
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(events) == 3
    assert events[0]["time"] > events[1]["time"] > events[2]["time"]  # newest first
    now_ms = dt.datetime.now(dt.timezone.utc).timestamp() * 1000
    assert all(now_ms - 2 * 3_600_000 - 300_000 <= e["time"] <= now_ms for e in events)


# --- every event type as JSON -----------------------------------------------------------------

SYMBOLS = {
    "Greeks": listed_option(),
    "TheoPrice": listed_option(),
    "OptionSale": listed_option(),
    "Candle": "SPY{=1m}",
}


def _case(type_name: str, *extra: str) -> object:
    return pytest.param(type_name, list(extra), id=" ".join((type_name, *extra)))


TYPE_CASES = [
    *[_case(cls.__name__) for cls in EVENT_TYPES],
    *[_case(name, "--source", "NTV") for name in ("Order", "SpreadOrder", "AnalyticOrder")],
]


@pytest.fixture
async def simulating_server() -> AsyncIterator[DXLinkServer]:
    """A simulating server on 127.0.0.1 (the embedded server's default market, seed 0) whose
    market moves every 10 ms."""
    config = ServerConfig(simulate=True, update_interval=0.01)
    async with open_dxlink_server(config=config, market=Market(seed=0)) as server:
        yield server


@pytest.mark.parametrize(("type_name", "extra"), TYPE_CASES)
async def test_stream_json_prints_five_events_of_each_type(
    simulating_server: DXLinkServer, type_name: str, extra: list[str]
) -> None:
    # The embedded server's market moves every 100 ms (tests/test_cli.py streams from it);
    # this one every 10 ms, so five events of each type take little waiting.
    symbol = SYMBOLS.get(type_name, "SPY")
    args = ("stream", type_name, symbol, *extra, "--json", "--count", "5")
    with trio.fail_after(60):
        result = await trio.to_thread.run_sync(
            functools.partial(run_main, *args, "--url", simulating_server.url)
        )
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(events) == 5
    assert {e["eventType"] for e in events} == {type_name}
    assert result.stderr == ""
    if type_name == "Greeks":  # the help's option is near the money: sensible Greeks
        assert all(0.2 < e["delta"] < 0.8 and e["gamma"] > 0 for e in events), events
    if type_name in ("Order", "SpreadOrder", "AnalyticOrder"):
        sources = {e["source"] for e in events}
        assert sources <= ({"NTV"} if extra else {"NTV", "ntv"}), sources


def test_the_helps_option_is_one_the_simulated_chain_lists() -> None:
    start = dt.date(2026, 1, 1)
    for day in (start + dt.timedelta(days=n) for n in range(0, 400, 3)):
        assert listed_option(day) in Market().option_chain("SPY", today=day), day


# --- the live table in a pseudo-terminal --------------------------------------------------------


def header_lines(lines: list[str]) -> list[str]:
    return [line for line in lines if re.search(r"symbol +bid size +bid +ask +ask size", line)]


async def test_live_table_in_a_terminal_survives_a_server_side_disconnect() -> None:
    async with open_dxlink_server(config=ServerConfig(simulate=True)) as server:
        terminal = Terminal([*CLI, "stream", "Quote", "SPY", "AAPL", "--url", server.url])
        try:
            with trio.fail_after(60):
                # Drawn before the first event: the header and a status line.
                await terminal.until(lambda lines: header_lines(lines) and status_line(lines))
                await terminal.until(
                    lambda lines: (
                        "connected" in status_line(lines)
                        and any(line.startswith("SPY ") for line in lines)
                        and any(line.startswith("AAPL ") for line in lines)
                    )
                )
                server.drop_all()
                await terminal.until(lambda lines: "reconnected" in status_line(lines))
                terminal.process.send_signal(signal.SIGINT)
                status = await terminal.finish()
        finally:
            if terminal.process.poll() is None:
                terminal.process.kill()
                terminal.process.wait()
    lines = terminal.lines()
    screen = "\n".join(lines)
    assert status == 130, screen
    assert len(header_lines(lines)) == 1, screen
    status_text = status_line(lines)
    assert "reconnected" in status_text, screen
    assert re.search(r"reconnects: 1\b", status_text), screen
    assert re.search(r"gaps: 1\b", status_text), screen
    assert "Traceback" not in screen
    # Prices are local-time stamped and numbers, one row per symbol.
    spy = [line for line in lines if line.startswith("SPY ")]
    assert len(spy) == 1, screen
    assert re.search(r"\d+\.\d\d.*\d\d:\d\d:\d\d\.\d{3}", spy[0]), spy[0]


# --- the table's rows (pure) ------------------------------------------------------------------


def rendered(table: EventTable) -> list[str]:
    console = Console(width=200, record=True, color_system=None)
    console.print(table.render("t", max_rows=20))
    return console.export_text().splitlines()


def test_table_marks_moves_keeps_newest_bars_and_follows_orders() -> None:
    quotes = EventTable(Quote)
    quotes.add(Quote("SPY", bid_price=100.0, ask_price=100.5))
    quotes.add(Quote("SPY", bid_price=100.25, ask_price=100.25))
    spy = next(line for line in rendered(quotes) if line.startswith("SPY"))
    assert "100.25▲" in spy  # bid up
    assert "100.25▼" in spy  # ask down

    candles = EventTable(Candle)
    for time_ms, close in ((3_000_000, 3.0), (2_000_000, 2.0), (1_000_000, 1.0)):  # newest first
        candles.add(Candle("A{=1m}", time=1_700_000_000_000 + time_ms, close=close))
    assert candles.rows["A{=1m}"].close == 3.0

    orders = EventTable(Order)
    orders.add(Order("A", index=1, source="NTV", order_side="BUY", price=9.0, size=1.0))
    orders.add(Order("A", index=2, source="NTV", order_side="BUY", price=10.0, size=1.0))
    orders.add(Order("A", index=3, source="NTV", order_side="SELL", price=11.0, size=1.0))
    lines = [line for line in rendered(orders) if line.startswith("A ")]
    assert [re.findall(r"\d+\.\d\d", line)[0] for line in lines] == ["10.00", "9.00", "11.00"]
    orders.add(Order("A", index=2, source="NTV", event_flags=0x02))  # REMOVE_EVENT
    assert len(orders.rows) == 2


def test_local_time_shows_today_as_a_time_and_other_days_with_the_date() -> None:
    moment = dt.datetime(2024, 1, 5, 9, 30, 1, 250_000).astimezone()
    ms = int(moment.timestamp() * 1000)
    assert local_time(ms, today=moment.date()) == "09:30:01.250"
    assert local_time(ms, today=dt.date(2030, 1, 1)) == "2024-01-05 09:30:01"
    assert local_time(0) == "-"
