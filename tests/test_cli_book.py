"""``python -m trio_dxlink book``: NDJSON views from a server the test publishes orders on (a
real subprocess), the ladder drawn in place, and one-line usage errors."""

from __future__ import annotations

import functools
import io
import json
import subprocess
from typing import Any

import attrs
import pytest
import trio

from trio_dxlink import Order, OrderBook
from trio_dxlink._cli_book import Ladder
from trio_dxlink.events import EventFlag
from trio_dxlink.testing import DXLinkServer

from .conftest import CLI, until

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


def test_the_ladder_is_redrawn_in_place_with_bids_and_asks_side_by_side() -> None:
    book = OrderBook(Order, "AAPL", ["NTV"])
    book.feed([order(1, "BUY", 10.0, 5, BEGIN), order(2, "SELL", 10.5, 3, END)])
    out = io.StringIO()
    ladder = Ladder(out, depth=2)
    ladder.draw(book.view(2))
    first = out.getvalue()
    assert "\x1b[" not in first.split("\n")[0][4:]  # no cursor move before the first drawing
    rows = first.replace("\x1b[2K", "").splitlines()
    assert rows[0] == "AAPL  NTV:complete"
    assert rows[2].split() == ["1", "5", "10", "|", "10.5", "3", "1"]
    assert len(rows) == 4  # title, header, two rows
    book.feed([order(3, "BUY", 10.25, 1)])
    ladder.draw(book.view(2))
    second = out.getvalue()[len(first) :]
    assert second.startswith("\x1b[4F")  # back up over the previous drawing
    assert second.replace("\x1b[4F", "").replace("\x1b[2K", "").splitlines()[2].split()[:3] == [
        "1",
        "1",
        "10.25",
    ]


def test_a_rebuilt_view_says_so_in_the_title() -> None:
    book = OrderBook(Order, "AAPL", ["NTV"])
    book.feed([order(1, "BUY", 10.0, 5, BEGIN | END)])
    book.connection_lost()
    book.feed([attrs.evolve(order(1, "BUY", 10.0, 5), event_flags=BEGIN | END)])
    assert (
        Ladder(io.StringIO(), 1).lines(book.view(1), 200)[0].endswith("(rebuilt after reconnect)")
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["book", "AAPL", "--source", "TOOLONG"], "malformed order source 'TOOLONG'"),
        (["book", "*", "--source", "NTV"], "needs one symbol"),
        (["book", "AAPL", "--source", "NTV", "--depth", "0"], "depth must be at least 1"),
        (["book", "AAPL", "--source", "NTV", "--type", "Quote"], "--type must be Order"),
        (["book", "AAPL", "--source", "NTV", "--url", "http://x"], "--url must be a ws://"),
    ],
)
async def test_bad_book_arguments_give_one_line_and_status_2(args: list[str], message: str) -> None:
    with trio.fail_after(60):
        result = await trio.run_process(
            [*CLI, *args], capture_stdout=True, capture_stderr=True, check=False
        )
    assert result.returncode == 2
    lines = result.stderr.decode().splitlines()
    assert len(lines) == 1
    assert message in lines[0]
