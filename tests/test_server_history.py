"""How the local server publishes history (protocol reference §6.7, §12), and its switches.

The pure helpers of ``trio_dxlink.testing._history`` are checked synchronously; the server is
checked on the wire with the raw JSON client of ``test_server.py`` (so nothing of our own
client's decoding is assumed), and end to end with the real client over the in-memory transport.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import trio
import trio.testing

from trio_dxlink import (
    Candle,
    ChannelError,
    FeedState,
    Quote,
    SubscriptionRefusedError,
    open_dxlink,
)
from trio_dxlink._messages import FeedSubscription
from trio_dxlink.events import EventFlag, TimeAndSale, index_from_time
from trio_dxlink.testing import ServerConfig, open_dxlink_server
from trio_dxlink.testing._history import (
    SNAPSHOT_LIMIT_CODE,
    SnapshotSlots,
    as_transaction,
    snapshot,
    snapshot_limit_message,
    transaction_pieces,
    wire_symbol,
)

from .conftest import pinned_market
from .test_server import CANDLE_FIELDS, NOW_MS, Client, _candles, _rows, ready_client, until

BEGIN = EventFlag.SNAPSHOT_BEGIN
END = EventFlag.SNAPSHOT_END
SNIP = EventFlag.SNAPSHOT_SNIP
REMOVE = EventFlag.REMOVE_EVENT
TX = EventFlag.TX_PENDING
DAY = 86_400_000
RECENT = 20_000  # a day number in 2024: the client refuses 1970 times as seconds


def bar(symbol: str, day: int, **fields: Any) -> Candle:
    time = day * DAY
    return Candle(symbol, time=time, index=index_from_time(time), **fields)


# --- the pure rules -----------------------------------------------------------------------------


def test_a_complete_snapshot_is_newest_first_begin_to_end() -> None:
    history = [bar("A{=d}", day, close=float(day)) for day in (3, 1, 2)]  # any order in
    out = snapshot(Candle, "A{=d}", DAY, history, limit=10)
    assert [event.time // DAY for event in out] == [3, 2, 1]
    assert [event.event_flags for event in out] == [BEGIN, 0, END]


def test_history_short_of_from_time_ends_with_the_synthetic_marker() -> None:
    history = [bar("A{=d}", day) for day in (2, 3)]
    out = snapshot(Candle, "A{=d}", DAY + 5, history, limit=10)
    assert [event.event_flags for event in out] == [BEGIN, 0, REMOVE | END]
    marker = out[-1]
    assert isinstance(marker, Candle)
    assert (marker.time, marker.index, marker.sequence) == (DAY + 5, index_from_time(DAY + 5), 0)
    assert math.isnan(marker.close)
    assert math.isnan(marker.volume)


def test_an_empty_snapshot_is_the_marker_alone_with_flags_14() -> None:
    (marker,) = snapshot(Candle, "A{=d}", 1000, [], limit=10)
    assert marker.event_flags == BEGIN | END | REMOVE == 14
    assert marker.time == 1000


def test_a_one_event_snapshot_carries_begin_and_end() -> None:
    (only,) = snapshot(Candle, "A{=d}", DAY, [bar("A{=d}", 1)], limit=10)
    assert only.event_flags == BEGIN | END


def test_past_the_limit_the_newest_are_kept_and_the_last_is_snipped() -> None:
    history = [bar("A{=d}", day) for day in range(1, 6)]
    out = snapshot(Candle, "A{=d}", 0, history, limit=3)
    assert [event.time // DAY for event in out] == [5, 4, 3]
    assert [event.event_flags for event in out] == [BEGIN, 0, SNIP]
    (single,) = snapshot(Candle, "A{=d}", 0, history, limit=1)
    assert single.event_flags == BEGIN | SNIP


def test_transaction_pieces_flag_all_but_each_pieces_last() -> None:
    events = snapshot(Candle, "A{=d}", DAY, [bar("A{=d}", day) for day in range(1, 6)], limit=9)
    pieces = transaction_pieces(events, 2)
    assert [[event.event_flags for event in piece] for piece in pieces] == [
        [BEGIN | TX, 0],
        [TX, 0],
        [END],
    ]
    assert transaction_pieces(events, None) == [events]
    assert transaction_pieces([], 2) == []
    live = as_transaction([bar("A{=d}", 1, event_flags=TX), bar("A{=d}", 2, event_flags=TX)])
    assert [event.event_flags for event in live] == [TX, 0]


def test_wire_symbol_normalises_candle_symbols_only() -> None:
    assert wire_symbol("SPX{=1h}") == "SPX{=h}"
    assert wire_symbol("AAPL{=5m}") == "AAPL{=5m}"
    assert wire_symbol("AAPL") == "AAPL"
    assert wire_symbol("AAPL{=xyz}") == "AAPL{=xyz}"  # what does not parse is left alone


def test_snapshot_slots_count_until_the_last_frame_is_written() -> None:
    slots = SnapshotSlots(2)
    assert slots.take(("a",))
    assert slots.take(("b",))
    assert not slots.take(("c",))  # the cap
    slots.queued(("a",), 3)
    slots.queued(("b",), 5)
    assert not slots.take(("a",))  # a duplicate of one still waiting
    slots.written(4)
    assert len(slots) == 1
    assert slots.take(("c",))
    assert SnapshotSlots(None).take(("a",))
    assert SnapshotSlots(None).take(("a",))


def test_config_checks_the_switches() -> None:
    with pytest.raises(ValueError, match="snapshot_transaction_size"):
        ServerConfig(simulate=False, snapshot_transaction_size=0)
    with pytest.raises(ValueError, match="max_snapshots_in_flight"):
        ServerConfig(simulate=False, max_snapshots_in_flight=0)
    with pytest.raises(TypeError, match="collection of symbols"):
        ServerConfig(simulate=False, empty_snapshot_symbols="AAPL")  # type: ignore[arg-type]
    assert ServerConfig(
        simulate=False, empty_snapshot_symbols=["A"]
    ).empty_snapshot_symbols == frozenset({"A"})


# --- on the wire --------------------------------------------------------------------------------


async def _messages(client: Client, count: int) -> list[dict[str, Any]]:
    """The next ``count`` FEED_DATA and ERROR messages (announcements skipped)."""
    out: list[dict[str, Any]] = []
    while len(out) < count:
        msg = await client.recv()
        if msg["type"] in ("FEED_DATA", "ERROR"):
            out.append(msg)
    return out


def _flags(messages: list[dict[str, Any]]) -> list[list[int]]:
    layout = CANDLE_FIELDS["Candle"]
    return [[row["eventFlags"] for row in _rows(layout, msg["data"][1])] for msg in messages]


async def test_a_snapshot_split_into_tx_pending_pieces_one_frame_each() -> None:
    config = ServerConfig(simulate=False, snapshot_transaction_size=2)
    async with ready_client(config, fields=CANDLE_FIELDS) as (server, client):
        server.publish(*(bar("A{=d}", day) for day in range(1, 6)))
        await client.subscribe(add=[{"type": "Candle", "symbol": "A{=d}", "fromTime": DAY}])
        frames = await _messages(client, 3)
        assert _flags(frames) == [[BEGIN | TX, 0], [TX, 0], [END]]


async def test_a_live_transaction_spans_frames() -> None:
    async with ready_client(fields=CANDLE_FIELDS) as (server, client):
        await client.subscribe(add=[{"type": "Candle", "symbol": "A{=d}", "fromTime": DAY}])
        assert _flags(await _messages(client, 1)) == [[BEGIN | END | REMOVE]]
        server.publish_transaction(bar("A{=d}", 1), bar("A{=d}", 2, event_flags=REMOVE))
        assert _flags(await _messages(client, 2)) == [[TX], [REMOVE]]
        server.publish_transaction(bar("A{=d}", 3), bar("A{=d}", 4), per_message=2)
        assert _flags(await _messages(client, 1)) == [[TX, 0]]
        assert [event.time // DAY for event in server.market.series("Candle", "A{=d}")] == [1, 3, 4]
        with pytest.raises(TypeError, match="indexed events"):
            server.publish_transaction(Quote("A"))  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="per_message"):
            server.publish_transaction(bar("A{=d}", 5), per_message=0)


@pytest.mark.parametrize("data_format", ["COMPACT", "FULL"])
async def test_index_goes_out_as_a_string(data_format: str) -> None:
    config = ServerConfig(simulate=False, index_as_string=True)
    async with ready_client(config, fields=CANDLE_FIELDS, data_format=data_format) as (
        server,
        client,
    ):
        server.publish(bar("A{=d}", 2))
        await client.subscribe(add=[{"type": "Candle", "symbol": "A{=d}", "fromTime": 2 * DAY}])
        (msg,) = await _messages(client, 1)
        if data_format == "FULL":
            (row,) = msg["data"]
        else:
            (row,) = _rows(CANDLE_FIELDS["Candle"], msg["data"][1])
        assert row["index"] == str(index_from_time(2 * DAY))
        assert row["time"] == 2 * DAY  # other longs stay numbers


async def test_candle_symbols_are_echoed_normalised() -> None:
    config = ServerConfig(simulate=False, normalize_candle_symbols=True)
    async with ready_client(config, fields=CANDLE_FIELDS) as (server, client):
        server.publish(bar("SPX{=1h}", 1, close=1.0))  # recorded as SPX{=h}
        assert server.market.series("Candle", "SPX{=h}") != []
        await client.subscribe(add=[{"type": "Candle", "symbol": "SPX{=1h}", "fromTime": DAY}])
        (row,) = await _candles(client, 1)
        assert (row["eventSymbol"], row["eventFlags"]) == ("SPX{=h}", BEGIN | END)
        # A live update in either spelling reaches the subscriber, normalised.
        server.publish(bar("SPX{=h}", 1, close=2.0))
        server.publish(bar("SPX{=1h}", 1, close=3.0))
        rows = await _candles(client, 2)
        assert [(r["eventSymbol"], r["close"]) for r in rows] == [
            ("SPX{=h}", 2.0),
            ("SPX{=h}", 3.0),
        ]
        assert ("Candle", "SPX{=1h}") in server.subscriptions()  # what the client sent


async def test_empty_snapshot_symbols_get_the_marker_even_with_history() -> None:
    config = ServerConfig(simulate=False, empty_snapshot_symbols={"E{=d}"})
    async with ready_client(config, fields=CANDLE_FIELDS) as (server, client):
        server.publish(bar("E{=d}", 1), bar("F{=d}", 1))
        await client.subscribe(add=[{"type": "Candle", "symbol": "E{=d}", "fromTime": DAY}])
        (row,) = await _candles(client, 1)
        assert (row["eventFlags"], row["time"], row["open"]) == (BEGIN | END | REMOVE, DAY, "NaN")
        server.history.empty_snapshot_symbols.discard("E{=d}")  # switched off while serving
        await client.subscribe(add=[{"type": "Candle", "symbol": "E{=d}", "fromTime": DAY}])
        (row,) = await _candles(client, 1)
        assert row["eventFlags"] == BEGIN | END


async def test_a_new_from_time_re_snapshots_only_that_symbol() -> None:
    async with ready_client(fields=CANDLE_FIELDS) as (server, client):
        server.publish(*(bar(s, day) for s in ("A{=d}", "B{=d}") for day in (1, 2, 3)))
        await client.subscribe(
            add=[
                {"type": "Candle", "symbol": "A{=d}", "fromTime": DAY},
                {"type": "Candle", "symbol": "B{=d}", "fromTime": DAY},
            ]
        )
        rows = await _candles(client, 6)
        assert [r["eventSymbol"] for r in rows] == ["A{=d}"] * 3 + ["B{=d}"] * 3
        await client.subscribe(add=[{"type": "Candle", "symbol": "B{=d}", "fromTime": 3 * DAY}])
        subscriptions = server.live[0].channels[1].subscriptions
        await until(server, lambda: subscriptions[("Candle", "B{=d}", None)].from_time == 3 * DAY)
        server.publish(bar("A{=d}", 3, close=9.0))  # a marker: nothing else came before it
        rows = await _candles(client, 2)
        assert [(r["eventSymbol"], r["eventFlags"]) for r in rows] == [
            ("B{=d}", BEGIN | END),
            ("A{=d}", 0),
        ]


async def test_live_updates_of_the_current_candle_reuse_its_index() -> None:
    period = 5 * 60_000
    live_start = NOW_MS // period * period
    config = ServerConfig(simulate=True, update_interval=0.01)
    async with ready_client(config, pinned_market(3), fields=CANDLE_FIELDS) as (_, client):
        from_time = live_start - 2 * period
        await client.subscribe(
            add=[{"type": "Candle", "symbol": "AAPL{=5m}", "fromTime": from_time}]
        )
        rows = await _candles(client, 3)
        assert [r["eventFlags"] for r in rows] == [BEGIN, 0, END]
        newest = rows[0]
        updates = await _candles(client, 2)
        for update in updates:
            assert (update["index"], update["eventFlags"]) == (newest["index"], 0)


async def test_the_cap_refuses_excess_snapshots_and_keeps_the_connection() -> None:
    config = ServerConfig(simulate=False, max_snapshots_in_flight=20)
    async with ready_client(config, fields=CANDLE_FIELDS) as (server, client):
        symbols = [f"S{k}{{=d}}" for k in range(60)]
        await client.subscribe(
            add=[{"type": "Candle", "symbol": s, "fromTime": DAY} for s in symbols]
        )
        replies = await _messages(client, 60)
        errors = [msg for msg in replies if msg["type"] == "ERROR"]
        data = [msg for msg in replies if msg["type"] == "FEED_DATA"]
        assert len(errors) == 40
        assert len(data) == 20
        for error in errors:
            assert (error["channel"], error["error"]) == (1, SNAPSHOT_LIMIT_CODE)
            assert error["message"] == snapshot_limit_message("Candle")
            assert "'Candle' is too big" in error["message"]
        served = {
            row["eventSymbol"]
            for msg in data
            for row in _rows(CANDLE_FIELDS["Candle"], msg["data"][1])
        }
        assert served == set(symbols[:20])
        assert {s for _, s in server.subscriptions("Candle")} == served  # refused: unsubscribed
        conn = server.live[0]
        await until(server, lambda: conn.snapshots_in_flight == 0)
        # The slots are free again: the next twenty are all served, on the same connection.
        await client.subscribe(
            add=[{"type": "Candle", "symbol": s, "fromTime": DAY} for s in symbols[20:40]]
        )
        replies = await _messages(client, 20)
        assert {msg["type"] for msg in replies} == {"FEED_DATA"}
        assert [c.id for c in server.live] == [1]
        assert not conn.closed


async def test_the_cap_refuses_a_duplicate_of_a_snapshot_still_waiting() -> None:
    config = ServerConfig(simulate=False, max_snapshots_in_flight=20)
    async with ready_client(config, fields=CANDLE_FIELDS) as (server, client):
        conn = server.live[0]
        server.stall()  # nothing is written, so the first snapshot keeps waiting
        entry = {"type": "Candle", "symbol": "D{=d}", "fromTime": DAY}
        await client.subscribe(add=[entry])
        await client.subscribe(add=[entry])
        await until(
            server, lambda: sum(isinstance(m, FeedSubscription) for m in conn.received) == 2
        )
        assert conn.snapshots_in_flight == 1
        server.resume()
        kinds = [msg["type"] for msg in await _messages(client, 2)]
        assert kinds == ["FEED_DATA", "ERROR"]


# --- end to end with the real client ------------------------------------------------------------


async def test_the_client_reads_a_snapshot_in_tx_pending_pieces() -> None:
    config = ServerConfig(simulate=False, snapshot_transaction_size=2)
    market = pinned_market()
    for day in range(1, 5):
        market.update(bar("A{=d}", RECENT + day, close=float(day)))
    async with (
        open_dxlink_server(config=config, market=market, in_memory=True) as server,
        open_dxlink(server.url, connector=server.connector()) as feed,
        feed.subscribe(Candle, ["A{=d}"], from_time=(RECENT + 1) * DAY) as rx,
    ):
        with trio.fail_after(5):
            events = [await rx.receive() for _ in range(4)]
        assert [event.close for event in events] == [4.0, 3.0, 2.0, 1.0]
        assert [event.event_flags for event in events] == [BEGIN | TX, 0, TX, END]
        assert [event.index for event in events] == [
            index_from_time((RECENT + day) * DAY) for day in (4, 3, 2, 1)
        ]


async def test_sixty_requests_at_once_never_drop_the_connection() -> None:
    config = ServerConfig(simulate=False, max_snapshots_in_flight=20)
    async with (
        open_dxlink_server(config=config, market=pinned_market(), in_memory=True) as server,
        open_dxlink(server.url, connector=server.connector()) as feed,
        feed.subscribe(Quote, ["SPY"]) as quotes,
    ):
        outcomes: list[str] = []

        async def request(symbol: str) -> None:
            try:
                async with feed.subscribe(Candle, [symbol], from_time=RECENT * DAY) as rx:
                    event = await rx.receive()
                    assert event.event_flags == BEGIN | END | REMOVE
                    outcomes.append("served")
            except (ChannelError, SubscriptionRefusedError):
                outcomes.append("refused")

        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                for k in range(60):
                    nursery.start_soon(request, f"T{k}{{=d}}")
            # Each request is served or cleanly refused; the client paces its requests
            # (max_history_requests, default 20), so under this cap none is refused.
            assert len(outcomes) == 60
            assert outcomes.count("served") == 60
            await until(server, lambda: ("Quote", "SPY") in server.subscriptions())
            server.publish(Quote("SPY", bid_price=1.0))
            assert (await quotes.receive()).bid_price == 1.0
        assert feed.state is FeedState.CONNECTED
        assert feed.statistics().reconnects == 0
        assert [conn.id for conn in server.live] == [1]


async def test_time_and_sale_history_follows_the_same_rules() -> None:
    config = ServerConfig(simulate=False, max_snapshot_events=2)
    fields = {"TimeAndSale": ["eventSymbol", "eventFlags", "time", "price"]}
    async with ready_client(config, fields=fields) as (server, client):
        server.publish(
            *(
                TimeAndSale("T", time=NOW_MS + k, index=index_from_time(NOW_MS + k))
                for k in range(3)
            )
        )
        await client.subscribe(add=[{"type": "TimeAndSale", "symbol": "T", "fromTime": NOW_MS}])
        (msg,) = await _messages(client, 1)
        rows = _rows(fields["TimeAndSale"], msg["data"][1])
        assert [(r["time"] - NOW_MS, r["eventFlags"]) for r in rows] == [(2, BEGIN), (1, SNIP)]
