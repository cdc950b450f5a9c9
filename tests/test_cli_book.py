"""``python -m trio_dxlink book``: NDJSON views from a server the test publishes orders on (a
real subprocess), the ladder (pure, and in a pseudo-terminal across a server-side disconnect),
and one-line usage errors (in-process, through ``main``)."""

from __future__ import annotations

import functools
import json
import re
import signal
import subprocess
from typing import Any

import attrs
import pytest
import trio
from rich.console import Console

from trio_dxlink import BookView, Order, OrderBook
from trio_dxlink._cli_book import Ladder
from trio_dxlink.events import EventFlag
from trio_dxlink.testing import DXLinkServer, ServerConfig, open_dxlink_server

from .conftest import CLI, run_main, until
from .terminal import Terminal, status_line

BEGIN = int(EventFlag.SNAPSHOT_BEGIN)
END = int(EventFlag.SNAPSHOT_END)


def order(index: int, side: str, price: float, size: float, flags: int = 0) -> Order:
    return Order(
        "AAPL",
        event_flags=flags,
        index=index,
        source="NTV",
        order_side=side,
        price=price,
        size=size,
    )


def subscribed(server: DXLinkServer) -> bool:
    return any(
        ("Order", "AAPL", "NTV") in channel.subscriptions
        for conn in server.live
        for channel in conn.channels.values()
    )


async def test_book_json_prints_each_view_of_the_published_orders(server: DXLinkServer) -> None:
    command = [*CLI, "book", "AAPL", "--source", "NTV", "--depth", "2", "--json", "--count", "2"]
    command += ["--url", server.url, "--no-reconnect"]
    lines: list[bytes] = []

    async def next_line(stdout: trio.abc.ReceiveStream, pending: bytearray) -> dict[str, Any]:
        while b"\n" not in pending:
            chunk = await stdout.receive_some()
            assert chunk, "the book command ended early"
            pending += chunk
        line, _, rest = bytes(pending).partition(b"\n")
        pending[:] = rest
        lines.append(line)
        return json.loads(line)  # type: ignore[no-any-return]

    run = functools.partial(
        trio.run_process, command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=False
    )
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            process: trio.Process = await nursery.start(run)
            assert process.stdout is not None
            await until(server, lambda: subscribed(server))
            server.publish(
                order(1, "BUY", 10.0, 5, BEGIN),
                order(2, "BUY", 9.5, 1),
                order(3, "BUY", 9.0, 1),
                order(4, "SELL", 11.0, 2, END),
            )
            pending = bytearray()
            first = await next_line(process.stdout, pending)
            server.publish(order(2, "BUY", 9.5, 0.0))  # removed
            second = await next_line(process.stdout, pending)
            assert await process.wait() == 0
            assert process.stderr is not None
            assert await process.stderr.receive_some() == b""
    assert first["sources"] == {"NTV": "complete"}
    assert first["bids"] == [
        {"price": 10.0, "size": 5.0, "count": 1},
        {"price": 9.5, "size": 1.0, "count": 1},
    ]
    assert first["asks"] == [{"price": 11.0, "size": 2.0, "count": 1}]
    assert [b["price"] for b in second["bids"]] == [10.0, 9.0]
    assert second["version"] > first["version"]


def rendered(ladder: Ladder, view: BookView[Order] | None) -> list[str]:
    console = Console(width=120, record=True, color_system=None)
    console.print(ladder.render(view))
    return [line.rstrip() for line in console.export_text().splitlines()]


def test_the_ladder_shows_bids_and_asks_side_by_side_best_first() -> None:
    book = OrderBook(Order, "AAPL", ["NTV"])
    book.feed(
        [
            order(1, "BUY", 10.0, 5, BEGIN),
            order(2, "BUY", 9.5, 1200),
            order(3, "SELL", 10.5, 3),
            order(4, "SELL", 10.5, 2, END),
        ]
    )
    lines = rendered(Ladder("AAPL", ["NTV"], depth=3), book.view(3))
    assert lines[0] == "AAPL  NTV:complete"
    assert lines[1].split() == ["orders", "bid", "size", "bid", "ask", "ask", "size", "orders"]
    rows = [line.split() for line in lines[2:] if line.strip() and "─" not in line]
    assert rows == [["1", "5", "10.00", "10.50", "5", "2"], ["1", "1,200", "9.50"]]


def test_the_empty_ladder_is_drawn_before_the_first_view() -> None:
    lines = rendered(Ladder("AAPL", ["NTV", "ntv"], depth=2), None)
    assert lines[0] == "AAPL  NTV:pending  ntv:pending"
    assert "orders" in lines[1]
    assert "bid" in lines[1]


def test_a_rebuilt_book_says_so_in_the_title() -> None:
    book = OrderBook(Order, "AAPL", ["NTV"])
    book.feed([order(1, "BUY", 10.0, 5, BEGIN | END)])
    book.connection_lost()
    book.feed([attrs.evolve(order(1, "BUY", 10.0, 5), event_flags=BEGIN | END)])
    title = Ladder("AAPL", ["NTV"], 1).title(book.view(1))
    assert title == "AAPL  NTV:complete  (rebuilt after reconnect, once)"


# --- the ladder in a pseudo-terminal ------------------------------------------------------------


def ladder_headers(lines: list[str]) -> list[str]:
    return [line for line in lines if re.search(r"orders +bid size +bid +ask +ask size", line)]


def priced_rows(lines: list[str]) -> list[str]:
    return [line for line in lines if re.fullmatch(r" *[\d,]+ +[\d,.]+ +\d+\.\d\d +\d.*", line)]


async def test_the_ladder_in_a_terminal_survives_a_server_side_disconnect() -> None:
    async with open_dxlink_server(config=ServerConfig(simulate=True)) as server:
        # Two sources: the title after the rebuild is wider than the ladder (one line still).
        command = [*CLI, "book", "SPY", "--source", "NTV", "--source", "ntv", "--depth", "5"]
        command += ["--url", server.url]
        terminal = Terminal(command)
        try:
            with trio.fail_after(60):
                # Drawn before anything arrives: the header and a status line.
                await terminal.until(lambda lines: ladder_headers(lines) and status_line(lines))
                await terminal.until(
                    lambda lines: (
                        "connected" in status_line(lines)
                        and any("NTV:complete  ntv:complete" in line for line in lines)
                        and len(priced_rows(lines)) == 5
                    )
                )
                server.drop_all()
                await terminal.until(
                    lambda lines: (
                        "reconnected" in status_line(lines) and "rebuilds: 1" in status_line(lines)
                    )
                )
                terminal.process.send_signal(signal.SIGINT)
                status = await terminal.finish()
        finally:
            if terminal.process.poll() is None:
                terminal.process.kill()
                terminal.process.wait()
    lines = terminal.lines()
    screen = "\n".join(lines)
    assert status == 130, screen
    assert len(ladder_headers(lines)) == 1, screen
    assert len([line for line in lines if line.startswith("SPY  NTV:")]) == 1, screen
    assert "rebuilt after reconnect, once" in screen
    text = status_line(lines)
    assert re.search(r"reconnects: 1\b", text), screen
    assert re.search(r"gaps: 1\b", text), screen
    assert "Traceback" not in screen
    # The best bid is below the best ask, on the first row.
    best = priced_rows(lines)[0].split()
    assert float(best[2].replace(",", "")) < float(best[3].replace(",", "")), best


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["book", "AAPL", "--source", "TOOLONG"], "malformed order source 'TOOLONG'"),
        (["book", "*", "--source", "NTV"], "needs one symbol"),
        (["book", "AAPL", "--source", "NTV", "--depth", "0"], "depth must be at least 1"),
        (["book", "AAPL", "--source", "NTV", "--type", "Quote"], "--type must be Order"),
        (["book", "AAPL", "--source", "NTV", "--url", "http://x"], "--url must be a ws://"),
        (["book", "", "--source", "NTV"], "empty symbol ''"),
        (["book", "AAPL", "--source", ""], "malformed order source ''"),
        (["book", "AAPL", "--source", "NTV", "--token", "t"], "--token needs --url"),
        (["book", "AAPL", "--source", "NTV", "--count", "0"], "--count must be at least 1"),
        (["book", "AAPL", "--source", "NTV", "--duration", "0"], "--duration must be positive"),
        (["book", "AAPL", "--source", "NTV", "--depth", "x"], "invalid int value: 'x'"),
        (["book", "AAPL"], "the following arguments are required: --source"),
    ],
)
def test_bad_book_arguments_give_one_line_and_status_2(args: list[str], message: str) -> None:
    result = run_main(*args)
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1
    assert message in lines[0]
    assert lines[0].startswith("trio-dxlink")
    assert result.stdout == ""


def test_book_help_shows_the_defaults_and_examples() -> None:
    result = run_main("book", "--help")
    assert result.returncode == 0
    text = result.stdout
    assert "(default: 10)" in text  # --depth
    assert "(default: Order)" in text  # --type
    assert "trio-dxlink book SPY --source NTV" in text
