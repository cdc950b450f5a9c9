"""One-shot history, live time series, history lanes and pacing, time arguments (issue 12).

The pure parts (lanes, time rules, the refusal classifier, the codec) are tested synchronously;
the rest end to end against the local server, in memory, with one loopback test.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio
import trio.testing

from trio_dxlink import (
    Candle,
    FeedState,
    History,
    Quote,
    ReconnectPolicy,
    SnapshotStatus,
    SubscriptionRefusedError,
    SymbolError,
    TimeAndSale,
    datetime_of,
    open_dxlink,
)
from trio_dxlink._arguments import SECONDS_LIMIT, epoch_ms
from trio_dxlink._codec import decode_full, to_long
from trio_dxlink._lanes import HistoryLanes, LaneRequest, LaneState
from trio_dxlink._messages import FeedSubscription, SubscriptionEntry
from trio_dxlink._runner import is_subscription_refusal
from trio_dxlink.events import EventFlag, index_from_time
from trio_dxlink.testing import DXLinkServer, ServerConfig, open_dxlink_server

from .conftest import NOW, pinned_market, until

T0 = int(NOW * 1000) - 100 * 300_000  # 100 five-minute bars before the pinned "now"
BAR = 300_000
FAST = ReconnectPolicy(initial_delay=0.01, max_delay=0.05, jitter=0.0)


def bar(symbol: str, n: int, **kw: Any) -> Candle:
    time = T0 + n * BAR
    kw.setdefault("close", 100.0 + n)
    return Candle(symbol, time=time, index=index_from_time(time), **kw)


# --- pure: time arguments ---


def test_times_are_aware_datetimes_or_milliseconds() -> None:
    moment = dt.datetime(2024, 1, 2, 3, 4, 5, 678000, tzinfo=dt.timezone.utc)
    assert epoch_ms(moment) == 1_704_164_645_678
    assert epoch_ms(1_704_164_645_678) == 1_704_164_645_678
    assert epoch_ms(0) == 0  # from the earliest data
    assert datetime_of(1_704_164_645_678) == moment
    assert bar("A{=5m}", 0).time_dt == datetime_of(T0)


def test_naive_datetimes_seconds_and_other_types_are_refused() -> None:
    with pytest.raises(ValueError, match=r"naive datetime.*time zone"):
        epoch_ms(dt.datetime(2024, 1, 2), "from_time")
    with pytest.raises(ValueError, match=r"looks like epoch seconds.*pass 1700000000000"):
        epoch_ms(1_700_000_000, "from_time")
    with pytest.raises(ValueError, match="seconds"):
        epoch_ms(SECONDS_LIMIT - 1)
    assert epoch_ms(SECONDS_LIMIT) == SECONDS_LIMIT
    with pytest.raises(ValueError, match="negative"):
        epoch_ms(-1)
    for bad in (True, 1.7e12, "1700000000000", None):
        with pytest.raises(TypeError, match="aware datetime or epoch milliseconds"):
            epoch_ms(bad)  # type: ignore[arg-type]


# --- pure: the codec reads a long written as a decimal string (§12) ---


def test_long_fields_accept_decimal_strings() -> None:
    index = index_from_time(T0, 7)
    assert to_long(str(index)) == index
    assert to_long("-5") == -5
    for bad in ("1.5", "0x10", "", "9" * 20, str(2**63)):
        with pytest.raises(Exception, match="integer"):
            to_long(bad)
    event = decode_full(
        Candle, {"eventSymbol": "SPX{=h}", "index": str(index), "time": T0, "eventFlags": "8"}
    )
    assert event.index == index
    assert event.event_flags == 8


def test_refusals_are_recognised_by_their_message() -> None:
    text = "Subscription size for event type 'Candle' is too big"
    assert is_subscription_refusal("UNKNOWN", text)
    assert is_subscription_refusal("BAD_ACTION", "too many candle subscriptions")
    assert not is_subscription_refusal("BAD_ACTION", "AUTH step missing")
    assert not is_subscription_refusal("TIMEOUT", "keepalive")


# --- pure: history lanes ---


def test_two_requests_for_one_symbol_get_lanes_of_their_own() -> None:
    lanes = HistoryLanes(20)
    assert lanes.connected() == []
    early = LaneRequest("early", "Candle", "AAPL{=5m}", T0)
    late = LaneRequest("late", "Candle", "AAPL{=5m}", T0 + 50 * BAR)
    other = LaneRequest("other", "Candle", "SPY{=5m}", T0)
    (a,) = lanes.add(early)
    (b,) = lanes.add(late)
    (c,) = lanes.add(other)
    assert (a.lane, b.lane, c.lane) == (0, 1, 0)
    assert b.entry.from_time == T0 + 50 * BAR
    # events are routed by lane, under either spelling of the candle symbol
    shares, _ = lanes.dispatch(1, "Candle", [bar("AAPL{=5m}", 60)])
    assert [(r.owner, len(e)) for r, e in shares] == [("late", 1)]
    shares, _ = lanes.dispatch(0, "Candle", [bar("AAPL{=5m}", 1), bar("SPY{=5m}", 1)])
    assert [r.owner for r, _ in shares] == ["early", "other"]
    normalised = LaneRequest("n", "Candle", "SPX{=1h}", T0)
    (d,) = lanes.add(normalised)
    shares, _ = lanes.dispatch(d.lane, "Candle", [bar("SPX{=h}", 1)])
    assert [r.owner for r, _ in shares] == ["n"]


def test_requests_are_paced_until_snapshots_end() -> None:
    lanes = HistoryLanes(2)
    requests = [LaneRequest(i, "Candle", f"S{i}{{=5m}}", T0) for i in range(5)]
    sent = [action for r in requests for action in lanes.add(r)]
    assert sent == []  # not connected yet: everything waits
    sent = lanes.connected()
    assert [a.entry.symbol for a in sent] == ["S0{=5m}", "S1{=5m}"]
    assert (lanes.in_flight, lanes.waiting) == (2, 3)
    # a snapshot that is only begun frees nothing; its end does
    _, more = lanes.dispatch(0, "Candle", [bar("S0{=5m}", 2, event_flags=4)])
    assert more == []
    _, more = lanes.dispatch(0, "Candle", [bar("S0{=5m}", 1, event_flags=8)])
    assert [a.entry.symbol for a in more] == ["S2{=5m}"]
    assert requests[0].state is LaneState.LIVE
    # leaving frees a slot too, and sends a removal
    actions = lanes.remove(requests[1])
    assert [(a.add, a.entry.symbol) for a in actions] == [(False, "S1{=5m}"), (True, "S3{=5m}")]
    assert lanes.remove(requests[4]) == []  # still waiting: nothing was sent
    assert len(lanes) == 3


def test_a_reconnect_replays_each_request_from_its_own_time() -> None:
    lanes = HistoryLanes(20)
    lanes.connected()
    raw = LaneRequest("raw", "Candle", "AAPL{=5m}", T0, resume=True)
    model = LaneRequest("model", "Candle", "AAPL{=5m}", T0 + 10 * BAR)
    lanes.add(raw)
    lanes.add(model)
    ended = EventFlag.SNAPSHOT_END
    lanes.dispatch(0, "Candle", [bar("AAPL{=5m}", 40, event_flags=4), bar("X", 1)])
    lanes.dispatch(0, "Candle", [bar("AAPL{=5m}", 0, event_flags=int(ended))])
    lanes.dispatch(1, "Candle", [bar("AAPL{=5m}", 40, event_flags=int(4 | ended))])
    lanes.connection_lost()
    assert lanes.in_flight == 0
    assert lanes.waiting == 2
    replay = {a.entry.from_time: a.lane for a in lanes.connected()}
    # the raw handle resumes from the newest bar it got; the model starts over
    assert replay == {T0 + 40 * BAR: 0, T0 + 10 * BAR: 1}


def test_a_refusal_fails_the_newest_request_that_had_no_data() -> None:
    lanes = HistoryLanes(20)
    lanes.connected()
    first, second, third = (LaneRequest(i, "Candle", f"S{i}{{=5m}}", T0) for i in range(3))
    for request in (first, second, third):
        lanes.add(request)
    lanes.dispatch(0, "Candle", [bar("S2{=5m}", 1, event_flags=4)])
    refused, actions = lanes.refuse(0)
    assert refused is second
    assert [(a.add, a.entry.symbol) for a in actions] == [(False, "S1{=5m}")]
    assert second.state is LaneState.GONE
    assert lanes.max_in_flight == 2  # learned: the server accepted no more than that
    assert lanes.refuse(5) == (None, [])


# --- end to end ---


@pytest.fixture
async def memory_server() -> AsyncIterator[DXLinkServer]:
    config = ServerConfig(simulate=False, keep_closed_connections=True)
    async with open_dxlink_server(config=config, market=pinned_market(), in_memory=True) as srv:
        yield srv


def record(server: DXLinkServer, symbol: str, count: int) -> list[Candle]:
    bars = [bar(symbol, n) for n in range(count)]
    for candle in bars:
        server.market.update(candle)
    return bars


def history_adds(server: DXLinkServer) -> list[tuple[int, SubscriptionEntry]]:
    """Every (channel, add) with a fromTime the server received, in order."""
    return [
        (m.channel, e)
        for _, m in server.received
        if isinstance(m, FeedSubscription)
        for e in m.add or ()
        if e.from_time is not None
    ]


def contract_of(server: DXLinkServer, channel: int) -> str | None:
    for conn in server.live:
        if channel in conn.channels:
            return conn.channels[channel].parameters.get("contract")  # type: ignore[no-any-return]
    return None


async def test_history_returns_the_snapshot_oldest_first(memory_server: DXLinkServer) -> None:
    bars = record(memory_server, "AAPL{=5m}", 30)
    async with open_dxlink(memory_server.url, connector=memory_server.connector()) as feed:
        with trio.fail_after(5):
            result = await feed.history(Candle, "AAPL{=5m}", T0 + 10 * BAR, T0 + 20 * BAR)
        assert isinstance(result, History)
        assert result.status is SnapshotStatus.COMPLETE
        assert result.reaches_start
        assert [c.close for c in result.events] == [c.close for c in bars[10:21]]
        assert result.first_time == T0 + 10 * BAR
        assert all(not c.remove_event for c in result)
        rows = result.rows(datetimes=True)
        assert rows[0]["close"] == 110.0
        assert rows[0]["time"] == datetime_of(T0 + 10 * BAR)
        # asked on a HISTORY channel, and withdrawn afterwards
        ((channel, entry),) = history_adds(memory_server)
        assert entry.from_time == T0 + 10 * BAR
        assert contract_of(memory_server, channel) == "HISTORY"
        await until(memory_server, lambda: not memory_server.subscriptions("Candle"))
        assert feed.statistics().subscriptions == 0


async def test_history_that_does_not_reach_start_says_so(memory_server: DXLinkServer) -> None:
    record(memory_server, "AAPL{=5m}", 30)
    async with open_dxlink(memory_server.url, connector=memory_server.connector()) as feed:
        with trio.fail_after(5):
            empty = await feed.history(Candle, "NONE{=5m}", T0)
            early = await feed.history(Candle, "AAPL{=5m}", T0 - 10 * BAR)
    assert empty.status is SnapshotStatus.EMPTY
    assert empty.events == ()
    assert early.status is SnapshotStatus.COMPLETE
    assert len(early) == 30  # the end marker at start is not an event
    assert early.first_time == T0
    assert early.reaches_start  # the server's marker says it looked back to start


async def test_a_snipped_history_is_marked() -> None:
    config = ServerConfig(simulate=False, max_snapshot_events=5)
    async with open_dxlink_server(config=config, market=pinned_market(), in_memory=True) as srv:
        record(srv, "AAPL{=5m}", 30)
        async with open_dxlink(srv.url, connector=srv.connector()) as feed:
            with trio.fail_after(5):
                result = await feed.history(Candle, "AAPL{=5m}", T0)
    assert result.status is SnapshotStatus.SNIPPED
    assert not result.reaches_start
    assert [c.time for c in result] == [T0 + n * BAR for n in range(25, 30)]


async def test_history_works_for_other_time_series_types(memory_server: DXLinkServer) -> None:
    for n in range(4):
        time = T0 + n * 1000
        memory_server.market.update(
            TimeAndSale("AAPL", time=time, index=index_from_time(time), price=10.0 + n)
        )
    async with open_dxlink(memory_server.url, connector=memory_server.connector()) as feed:
        with trio.fail_after(5):
            result = await feed.history(TimeAndSale, "AAPL", T0 + 1000)
    assert [t.price for t in result] == [11.0, 12.0, 13.0]


async def test_history_arguments_are_checked_before_anything_is_sent(
    memory_server: DXLinkServer,
) -> None:
    async with open_dxlink(memory_server.url, connector=memory_server.connector()) as feed:
        with pytest.raises(SymbolError, match="xyz"):
            await feed.history(Candle, "AAPL{=xyz}", T0)
        with pytest.raises(ValueError, match="seconds"):
            await feed.history(Candle, "AAPL{=5m}", T0 // 1000)
        with pytest.raises(ValueError, match="future"):
            tomorrow = dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=1)
            await feed.history(Candle, "AAPL{=5m}", tomorrow)
        with pytest.raises(ValueError, match="before start"):
            await feed.history(Candle, "AAPL{=5m}", T0, T0 - 1)
        with pytest.raises(TypeError, match="time-series"):
            await feed.history(Quote, "AAPL", T0)  # type: ignore[type-var]
        with pytest.raises(SymbolError, match="xyz"):
            feed.subscribe(Candle, ["AAPL{=xyz}"])
        async with feed.subscribe(Candle, ["AAPL{=5m}"]) as rx:
            with pytest.raises(SymbolError):
                rx.add(["AAPL{=5q}"])
        assert history_adds(memory_server) == []


async def test_a_from_time_in_the_future_asks_for_no_history(memory_server: DXLinkServer) -> None:
    async with open_dxlink(memory_server.url, connector=memory_server.connector()) as feed:
        later = dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=1)
        rx = feed.subscribe(Candle, ["AAPL{=5m}"], from_time=later)
        assert rx.from_time is not None
        assert rx.from_time <= epoch_ms(later) - 3_000_000


async def test_history_does_not_disturb_another_handle(memory_server: DXLinkServer) -> None:
    record(memory_server, "AAPL{=5m}", 30)
    async with (
        open_dxlink(memory_server.url, connector=memory_server.connector()) as feed,
        feed.subscribe(Candle, ["AAPL{=5m}"], from_time=T0 + 25 * BAR) as rx,
    ):
        first = []
        with trio.fail_after(5):
            async for candle in rx:
                first.append(candle)
                if candle.snapshot_end:
                    break
            result = await feed.history(Candle, "AAPL{=5m}", T0)
        assert len(result) == 30
        # the handle saw only its own snapshot, and still gets live updates
        assert [c.time for c in first] == [T0 + n * BAR for n in range(29, 24, -1)]
        memory_server.publish(bar("AAPL{=5m}", 30))
        with trio.fail_after(5):
            live = await rx.receive()
        assert live.time == T0 + 30 * BAR
        assert live.event_flags == 0
        assert rx.statistics().received == 6


async def test_two_handles_with_their_own_from_time_across_a_reconnect(
    memory_server: DXLinkServer,
) -> None:
    record(memory_server, "AAPL{=5m}", 30)
    async with open_dxlink(
        memory_server.url, connector=memory_server.connector(), reconnect=FAST
    ) as feed:
        early = feed.subscribe(Candle, ["AAPL{=5m}"], from_time=T0 + 20 * BAR)
        late = feed.subscribe(Candle, ["AAPL{=5m}"], from_time=T0 + 27 * BAR)
        async with early, late:
            got = {}
            with trio.fail_after(5):
                for name, rx in (("early", early), ("late", late)):
                    got[name] = [c.time async for c in _until_end(rx)]
            # regression: the second handle neither re-snapshots the first nor gets its history
            assert got["early"] == [T0 + n * BAR for n in range(29, 19, -1)]
            assert got["late"] == [T0 + n * BAR for n in range(29, 26, -1)]
            assert early.statistics().received == 10
            memory_server.drop_all()
            await feed.wait_state(FeedState.RECONNECTING)
            with trio.fail_after(5):
                await feed.wait_state(FeedState.CONNECTED)
                resumed = [c.time async for c in _until_end(early)]
            # regression: after the reconnect a handle resumes from its newest event instead
            # of receiving the whole snapshot a second time
            assert resumed == [T0 + 29 * BAR]
            times = {e.from_time for c, e in history_adds(memory_server)}
            assert times == {T0 + 20 * BAR, T0 + 27 * BAR, T0 + 29 * BAR}


async def _until_end(rx: Any) -> AsyncIterator[Candle]:
    async for candle in rx:
        if not candle.remove_event:
            yield candle
        if candle.snapshot_end or candle.snapshot_snip:
            return


async def test_time_series_yields_whole_snapshots_then_changes(
    memory_server: DXLinkServer,
) -> None:
    record(memory_server, "AAPL{=5m}", 10)
    record(memory_server, "SPY{=5m}", 5)
    async with (
        open_dxlink(memory_server.url, connector=memory_server.connector(), reconnect=FAST) as feed,
        feed.time_series(Candle, ["AAPL{=5m}", "SPY{=5m}"], T0) as ts,
    ):
        with trio.fail_after(5):
            snapshots = {u.symbol: u async for u in _take(ts, 2)}
        assert {s: len(u.events) for s, u in snapshots.items()} == {"AAPL{=5m}": 10, "SPY{=5m}": 5}
        assert all(u.snapshot and not u.after_gap for u in snapshots.values())
        assert ts.status("AAPL{=5m}") is SnapshotStatus.COMPLETE
        memory_server.publish(bar("AAPL{=5m}", 9, close=1.0))  # the live bar changes
        with trio.fail_after(5):
            change = await ts.receive()
        assert not change.snapshot
        assert [c.close for c in change.events] == [1.0]
        assert ts.events("AAPL{=5m}")[-1].close == 1.0
        assert len(ts.events("AAPL{=5m}")) == 10
        memory_server.drop_all()
        with trio.fail_after(5):
            fresh = [u async for u in _take(ts, 2)]
        # after the reconnect: a fresh, whole snapshot per symbol, marked as such
        assert all(u.snapshot and u.after_gap for u in fresh)
        assert {u.symbol: len(u.events) for u in fresh} == {"AAPL{=5m}": 10, "SPY{=5m}": 5}
    await until(memory_server, lambda: not memory_server.subscriptions("Candle"))


async def _take(ts: Any, count: int) -> AsyncIterator[Any]:
    for _ in range(count):
        yield await ts.receive()


async def test_sixty_requests_at_once_are_paced(memory_server: DXLinkServer) -> None:
    symbols = [f"S{i}{{=5m}}" for i in range(60)]
    for symbol in symbols:
        record(memory_server, symbol, 3)
    results: dict[str, History[Candle]] = {}
    async with open_dxlink(memory_server.url, connector=memory_server.connector()) as feed:
        with trio.fail_after(5):
            await feed.history(Candle, symbols[0], T0)  # opens the HISTORY channel
        memory_server.stall()  # nothing answers: at most 20 requests may go out meanwhile

        async def fetch(symbol: str) -> None:
            results[symbol] = await feed.history(Candle, symbol, T0)

        with trio.fail_after(20):
            async with trio.open_nursery() as nursery:
                for symbol in symbols:
                    nursery.start_soon(fetch, symbol)
                await until(memory_server, lambda: len(history_adds(memory_server)) >= 21)
                await trio.testing.wait_all_tasks_blocked()
                assert len(history_adds(memory_server)) == 21  # the first one, then 20
                stats = feed.statistics()
                assert (stats.history_in_flight, stats.history_waiting) == (20, 40)
                memory_server.resume()
        assert feed.state is FeedState.CONNECTED
    assert sorted(results) == sorted(symbols)
    assert all(len(r) == 3 and r.status is SnapshotStatus.COMPLETE for r in results.values())
    assert memory_server.connections[-1].id == 1  # one connection throughout


async def test_a_server_cap_refuses_requests_but_never_the_connection() -> None:
    # The client allows 20 in flight, the server only 5: the rest are refused one by one.
    config = ServerConfig(simulate=False, max_snapshots_in_flight=5, keep_closed_connections=True)
    async with open_dxlink_server(config=config, market=pinned_market(), in_memory=True) as srv:
        symbols = [f"S{i}{{=5m}}" for i in range(60)]
        for symbol in symbols:
            record(srv, symbol, 3)
        outcomes: dict[str, History[Candle] | SubscriptionRefusedError] = {}
        async with open_dxlink(srv.url, connector=srv.connector()) as feed:

            async def fetch(symbol: str) -> None:
                try:
                    outcomes[symbol] = await feed.history(Candle, symbol, T0)
                except SubscriptionRefusedError as exc:
                    outcomes[symbol] = exc

            with trio.fail_after(20):
                async with trio.open_nursery() as nursery:
                    for symbol in symbols:
                        nursery.start_soon(fetch, symbol)
            refused = [o for o in outcomes.values() if isinstance(o, SubscriptionRefusedError)]
            served = [o for o in outcomes.values() if isinstance(o, History)]
            assert len(outcomes) == 60
            assert refused, "the server's cap was never reached"
            assert all("too big" in e.message for e in refused)
            assert all(len(h) == 3 for h in served)
            stats = feed.statistics()
            assert stats.refusals == len(refused)
            assert stats.reconnects == 0
            assert feed.state is FeedState.CONNECTED
            with trio.fail_after(5):
                again = await feed.history(Candle, symbols[0], T0)  # still usable
            assert len(again) == 3
        assert [c.id for c in srv.connections] == [1]


async def test_pacing_under_the_server_cap_means_no_refusals() -> None:
    config = ServerConfig(simulate=False, max_snapshots_in_flight=5)
    async with open_dxlink_server(config=config, market=pinned_market(), in_memory=True) as srv:
        symbols = [f"S{i}{{=5m}}" for i in range(60)]
        for symbol in symbols:
            record(srv, symbol, 3)
        results: list[History[Candle]] = []
        async with open_dxlink(srv.url, connector=srv.connector(), max_history_requests=5) as feed:

            async def fetch(symbol: str) -> None:
                results.append(await feed.history(Candle, symbol, T0))

            with trio.fail_after(20):
                async with trio.open_nursery() as nursery:
                    for symbol in symbols:
                        nursery.start_soon(fetch, symbol)
            assert feed.statistics().refusals == 0
    assert len(results) == 60


@pytest.mark.parametrize("data_format", ["COMPACT", "FULL"])
async def test_normalised_echo_string_index_and_split_snapshots(data_format: str) -> None:
    # The server answers SPX{=1h} as SPX{=h}, with index as a string, in TX_PENDING pieces.
    config = ServerConfig(
        simulate=False,
        normalize_candle_symbols=True,
        index_as_string=True,
        snapshot_transaction_size=3,
        data_format_override=data_format,
    )
    hour = 3_600_000
    async with open_dxlink_server(config=config, market=pinned_market(), in_memory=True) as srv:
        for n in range(10):
            t = T0 + n * hour
            srv.market.update(Candle("SPX{=h}", time=t, index=index_from_time(t), close=float(n)))
        async with (
            open_dxlink(srv.url, connector=srv.connector()) as feed,
            feed.time_series(Candle, ["SPX{=1h}"], T0 + 5 * hour) as ts,
        ):
            with trio.fail_after(5):
                result = await feed.history(Candle, "SPX{=1h}", T0)
                first = await ts.receive()
    assert [c.close for c in result] == [float(n) for n in range(10)]
    assert result.events[0].event_symbol == "SPX{=h}"
    assert result.events[0].index == index_from_time(T0)
    assert result.status is SnapshotStatus.COMPLETE
    assert first.snapshot
    assert [c.close for c in first.events] == [5.0, 6.0, 7.0, 8.0, 9.0]


async def test_history_over_loopback() -> None:
    async with open_dxlink_server(
        config=ServerConfig(simulate=False), market=pinned_market()
    ) as srv:
        record(srv, "AAPL{=5m}", 50)
        async with open_dxlink(srv.url) as feed:
            with trio.fail_after(10):
                result = await feed.history(Candle, "AAPL{=5m}", T0 + 40 * BAR)
    assert [c.time for c in result] == [T0 + n * BAR for n in range(40, 50)]
