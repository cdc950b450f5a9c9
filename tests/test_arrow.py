"""Events as columns: Arrow tables from events, histories and recordings; Parquet read back
with pyarrow (and polars when it is installed); the decoded events of a recording."""

from __future__ import annotations

import math
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import trio
import trio.testing

from trio_dxlink import (
    Candle,
    History,
    Overflow,
    Profile,
    Quote,
    SnapshotStatus,
    TimeAndSale,
    Trade,
    iter_recorded_events,
    open_dxlink,
)
from trio_dxlink.arrow import event_schema, to_arrow, ts_event_field, write_parquet
from trio_dxlink.events import Event
from trio_dxlink.testing import ServerConfig, open_dxlink_server

from .conftest import pinned_market, until

MS = 1_700_000_000_000  # an epoch-millisecond time
NS = MS * 1_000_000
UTC_NS = pa.timestamp("ns", tz="UTC")

QUOTES = [
    Quote("SPY", event_time=MS, bid_time=MS + 1, ask_time=MS + 2, bid_price=1.5, ask_price=2.5),
    Quote("AAPL", event_time=MS + 5, time_nano_part=7, bid_price=3.0),  # no bid/ask times
    Quote("SPY"),  # no time at all
]


async def _record(path: Path) -> list[Event]:
    """Quotes (with NaN fields) and a trade recorded against the in-memory server."""
    live: list[Event] = []
    async with (
        open_dxlink_server(
            config=ServerConfig(simulate=False), market=pinned_market(), in_memory=True
        ) as server,
        open_dxlink(server.url, connector=server.connector(), record=path) as feed,
        feed.subscribe(Quote, ["SPY", "AAPL"], overflow=Overflow.LOSSLESS) as quotes,
        feed.subscribe(Trade, ["SPY"], overflow=Overflow.LOSSLESS) as trades,
    ):
        await until(server, lambda: ("Trade", "SPY") in server.subscriptions())
        server.publish(*QUOTES[:2])
        server.publish(Trade("SPY", time=MS + 9, time_nano_part=3, price=7.0, size=math.nan))
        live += [await quotes.receive(), await quotes.receive(), await trades.receive()]
    return live


def test_a_list_of_events_becomes_one_table_per_type() -> None:
    candle = Candle("SPY{=d}", event_flags=4, index=42, time=MS, open=1.0, close=math.nan)
    tables = to_arrow([*QUOTES, candle])
    assert set(tables) == {"Quote", "Candle"}

    quotes = tables["Quote"]
    assert quotes.schema.equals(event_schema(Quote))
    assert quotes.column_names[:3] == ["ts_event", "ts_recv", "event_symbol"]
    assert quotes.column("ts_event").type == UTC_NS
    assert quotes.column("ts_event").cast(pa.int64()).to_pylist() == [
        (MS + 2) * 1_000_000,  # the later of bid_time and ask_time
        (MS + 5) * 1_000_000,  # no bid/ask times: event_time (its nano part belongs to time)
        None,  # no time at all
    ]
    assert quotes.column("ts_recv").null_count == 3
    assert quotes.column("event_symbol").to_pylist() == ["SPY", "AAPL", "SPY"]
    assert quotes.column("bid_price").to_pylist() == [1.5, 3.0, None]  # NaN stored as null
    assert quotes.column("ask_exchange_code").to_pylist() == [None, None, None]

    candles = tables["Candle"]
    assert candles.column("event_flags").to_pylist() == [4]
    assert candles.column("index").to_pylist() == [42]
    assert candles.column("ts_event").cast(pa.int64()).to_pylist() == [NS]
    assert candles.column("close").to_pylist() == [None]
    assert candles.schema.metadata[b"trio_dxlink.ts_event"] == b"time"


def test_the_documented_ts_event_field_per_type() -> None:
    assert ts_event_field(Quote) == "bid_time/ask_time"
    assert ts_event_field(Trade) == "time"
    assert ts_event_field(TimeAndSale) == "time"
    assert ts_event_field(Candle) == "time"
    assert ts_event_field(Profile) == "event_time"
    sale = TimeAndSale("SPY", time=MS, time_nano_part=250, price=1.0)
    ns = to_arrow([sale])["TimeAndSale"].column("ts_event").cast(pa.int64()).to_pylist()
    assert ns == [NS + 250]


def test_a_history_becomes_a_table() -> None:
    events = (Candle("SPY{=d}", index=1, time=MS), Candle("SPY{=d}", index=2, time=MS + 1))
    history = History(Candle, "SPY{=d}", MS, None, SnapshotStatus.COMPLETE, events, True)
    table = to_arrow(history)["Candle"]
    assert table.num_rows == 2
    assert table.column("index").to_pylist() == [1, 2]


async def test_a_recording_becomes_tables_and_parquet_files(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    path = tmp_path / "session.dxrec.zst"
    live = await _record(path)

    decoded = [event for batch in iter_recorded_events(path) for event in batch.events]
    assert decoded == [e for e in decoded if isinstance(e, (Quote, Trade))]
    assert [(type(e), e.event_symbol) for e in decoded] == [(type(e), e.event_symbol) for e in live]

    tables = to_arrow(path)
    written = write_parquet(tables, tmp_path / "parquet")
    assert sorted(p.name for p in written.values()) == ["Quote.parquet", "Trade.parquet"]

    quotes = pq.read_table(written["Quote"])
    assert quotes.schema.equals(event_schema(Quote), check_metadata=False)
    assert quotes.column("event_symbol").to_pylist() == ["SPY", "AAPL"]
    assert quotes.column("bid_price").to_pylist() == [1.5, 3.0]
    assert quotes.column("ask_price").to_pylist() == [2.5, None]
    recv = quotes.column("ts_recv").cast(pa.int64()).to_pylist()
    assert all(isinstance(t, int) and t > 0 for t in recv)  # the recording's receive times

    trades = pq.read_table(written["Trade"])
    assert trades.column("ts_event").cast(pa.int64()).to_pylist() == [NS + 9_000_000 + 3]
    assert trades.column("size").to_pylist() == [None]
    assert trades.column("price").to_pylist() == [7.0]


def test_polars_reads_the_parquet(tmp_path: Path) -> None:
    pl = pytest.importorskip("polars", reason="polars is not installed (it is optional)")
    written = write_parquet(to_arrow(QUOTES), tmp_path)
    frame = pl.read_parquet(written["Quote"])
    assert frame.columns[:3] == ["ts_event", "ts_recv", "event_symbol"]
    assert frame.schema["ts_event"] == pl.Datetime("ns", "UTC")
    assert frame["bid_price"].to_list() == [1.5, 3.0, None]
    assert frame["ts_event"].null_count() == 1
