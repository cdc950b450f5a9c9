"""The overflow buffers, driven synchronously, and a Subscription served by a host of our own.

The buffers (``_buffers.py``) are pure: no trio, no clock. The second half drives a real
:class:`~trio_dxlink.Subscription` through the :class:`~trio_dxlink._subscription.SubscriptionHost`
seam with a tiny host that records what the handle asks of it, so no feed and no socket is
involved.
"""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing

from trio_dxlink import (
    ConnectionClosedError,
    DataGapError,
    Overflow,
    Quote,
    SlowConsumerError,
    Subscription,
    SubscriptionClosedError,
    TimeAndSale,
)
from trio_dxlink._buffers import (
    Buffer,
    DropOldestBuffer,
    LatestBuffer,
    LosslessBuffer,
    make_buffer,
)
from trio_dxlink._subscription import SubscriptionHost


def quotes(*symbols: str) -> list[Quote]:
    return [Quote(s, bid_price=float(i)) for i, s in enumerate(symbols)]


def gap(text: str = "gap") -> DataGapError:
    return DataGapError(text)


# --- LosslessBuffer ---


def test_lossless_keeps_every_batch_in_order_up_to_the_bound() -> None:
    buffer: LosslessBuffer[Quote] = LosslessBuffer(5)
    first, second = quotes("A", "B"), quotes("C", "D", "E")
    assert buffer.push(first, None)
    assert buffer.push(second, None)
    assert len(buffer) == 5
    assert buffer.pending()
    assert buffer.take() is first  # a batch is handed over as it came, not copied
    assert len(buffer) == 3
    assert buffer.take() is second
    assert buffer.take() == []
    assert not buffer.pending()
    assert len(buffer) == 0
    assert (buffer.dropped, buffer.conflated) == (0, 0)


def test_lossless_refuses_a_batch_beyond_the_bound_and_counts_it() -> None:
    buffer: LosslessBuffer[Quote] = LosslessBuffer(3)
    assert buffer.push(quotes("A", "B"), None)
    assert not buffer.push(quotes("C", "D"), None)  # 4 > 3: refused whole
    assert buffer.dropped == 2
    assert len(buffer) == 2
    assert [q.event_symbol for q in buffer.take()] == ["A", "B"]  # what it held stays


def test_lossless_gaps_sit_in_the_stream_and_consecutive_ones_are_one() -> None:
    buffer: LosslessBuffer[Quote] = LosslessBuffer(10)
    before, after = quotes("A"), quotes("B")
    buffer.push(before, None)
    first = gap("first")
    buffer.mark_gap(first)
    buffer.mark_gap(gap("second"))  # no event between: the same gap
    buffer.push(after, None)
    assert len(buffer) == 2  # a marker is not an event
    assert buffer.take() is before
    with pytest.raises(DataGapError) as info:
        buffer.take()
    assert info.value is first
    assert buffer.take() is after
    assert not buffer.pending()


def test_lossless_a_gap_alone_is_pending() -> None:
    buffer: LosslessBuffer[Quote] = LosslessBuffer(10)
    buffer.mark_gap(gap())
    assert buffer.pending()
    assert len(buffer) == 0
    with pytest.raises(DataGapError):
        buffer.take()
    assert not buffer.pending()


# --- LatestBuffer ---


def test_latest_keeps_the_newest_per_symbol_and_counts_the_rest() -> None:
    buffer: LatestBuffer[Quote] = LatestBuffer(100)
    batch = quotes("A", "B", "A", "A")
    assert buffer.push(batch, None)
    assert len(buffer) == 2
    assert buffer.conflated == 2
    assert buffer.push(quotes("B"), ["B"])  # symbols given: not read from the events
    assert buffer.conflated == 3
    taken = buffer.take()
    assert [q.event_symbol for q in taken] == ["A", "B"]
    assert taken[0] is batch[3]
    assert buffer.take() == []
    assert not buffer.pending()
    assert buffer.dropped == 0


def test_latest_beyond_its_bound_evicts_the_symbol_updated_longest_ago() -> None:
    buffer: LatestBuffer[Quote] = LatestBuffer(2)
    buffer.push(quotes("A", "B"), None)
    buffer.push(quotes("A", "C"), None)  # B is now the stalest
    assert [q.event_symbol for q in buffer.take()] == ["A", "C"]
    assert buffer.dropped == 1
    assert buffer.conflated == 1


def test_latest_is_bounded_by_its_symbols_when_they_are_more_than_max_buffer() -> None:
    buffer: LatestBuffer[Quote] = LatestBuffer(1)
    buffer.symbols_changed(3)
    buffer.push(quotes("A", "B", "C"), None)
    assert len(buffer) == 3
    assert buffer.dropped == 0
    buffer.symbols_changed(1)  # back to max_buffer
    buffer.push(quotes("D"), None)
    assert [q.event_symbol for q in buffer.take()] == ["D"]
    assert buffer.dropped == 3


def test_latest_raises_one_gap_before_the_next_batch() -> None:
    buffer: LatestBuffer[Quote] = LatestBuffer(10)
    buffer.push(quotes("A"), None)
    first = gap("first")
    buffer.mark_gap(first)
    buffer.mark_gap(gap("second"))  # one pending gap at most
    with pytest.raises(DataGapError) as info:
        buffer.take()
    assert info.value is first
    assert [q.event_symbol for q in buffer.take()] == ["A"]
    assert not buffer.pending()


# --- DropOldestBuffer ---


def test_drop_oldest_keeps_the_newest_max_buffer_events() -> None:
    buffer: DropOldestBuffer[Quote] = DropOldestBuffer(3)
    assert buffer.push(quotes("A", "B"), None)
    assert buffer.push(quotes("C", "D", "E"), None)
    assert len(buffer) == 3
    assert buffer.dropped == 2
    assert buffer.conflated == 0
    assert [q.event_symbol for q in buffer.take()] == ["C", "D", "E"]
    assert buffer.take() == []
    assert len(buffer) == 0
    buffer.push(quotes("F"), None)  # room again: nothing more dropped
    assert buffer.dropped == 2


def test_drop_oldest_raises_one_gap_before_the_next_batch() -> None:
    buffer: DropOldestBuffer[Quote] = DropOldestBuffer(3)
    buffer.mark_gap(gap())
    buffer.mark_gap(gap())
    assert buffer.pending()
    with pytest.raises(DataGapError):
        buffer.take()
    assert not buffer.pending()


# --- make_buffer ---


@pytest.mark.parametrize(
    ("overflow", "kind"),
    [
        (Overflow.LOSSLESS, LosslessBuffer),
        (Overflow.LATEST, LatestBuffer),
        (Overflow.DROP_OLDEST, DropOldestBuffer),
    ],
)
def test_each_policy_allocates_only_its_own_buffer(overflow: Overflow, kind: type[Any]) -> None:
    buffer: Buffer[Quote] = make_buffer(overflow, 7)
    assert type(buffer) is kind
    rx = handle(RecordingHost(), overflow)
    assert type(rx._buffer) is kind
    assert (rx.overflow, rx.max_buffer) == (overflow, 100)


def test_bad_bounds_and_policies_are_refused() -> None:
    with pytest.raises(ValueError, match="max_buffer"):
        make_buffer(Overflow.LOSSLESS, 0)
    with pytest.raises(TypeError, match="Overflow"):
        make_buffer("lossless", 5)  # type: ignore[arg-type]


# --- a Subscription served by a host of our own ---


class RecordingHost:
    """A SubscriptionHost that records what its handles ask of it, and serves nothing else."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, list[str]]] = []
        self.attached: set[Subscription[Any]] = set()

    def attach(self, handle: Subscription[Any]) -> None:
        self.attached.add(handle)
        self.calls.append(("attach", sorted(handle.symbols)))

    def detach(self, handle: Subscription[Any]) -> None:
        if handle in self.attached:
            self.attached.remove(handle)
            self.calls.append(("detach", sorted(handle.symbols)))

    def add_symbols(self, handle: Subscription[Any], symbols: list[str]) -> None:
        self.calls.append(("add", symbols))

    def remove_symbols(self, handle: Subscription[Any], symbols: list[str]) -> None:
        self.calls.append(("remove", symbols))


def handle(host: SubscriptionHost, overflow: Overflow, **kwargs: Any) -> Subscription[Quote]:
    return Subscription(
        host,
        Quote,
        ["SPY"],
        from_time=None,
        source=None,
        overflow=overflow,
        max_buffer=kwargs.pop("max_buffer", 100),
        **kwargs,
    )


async def test_a_handle_asks_its_host_to_attach_change_symbols_and_detach() -> None:
    host = RecordingHost()
    rx = handle(host, Overflow.LOSSLESS)
    assert host.calls == []  # nothing until it is entered
    async with rx:
        rx.add(["QQQ", "SPY"])  # SPY is not new
        rx.remove(["SPY", "IBM"])  # IBM was never there
        rx.remove(["IBM"])  # nothing to ask
    assert host.calls == [
        ("attach", ["SPY"]),
        ("add", ["QQQ"]),
        ("remove", ["SPY"]),
        ("detach", ["QQQ"]),
    ]
    assert not host.attached


async def test_a_handle_delivers_what_is_pushed_in_order_then_ends_when_closed() -> None:
    host = RecordingHost()
    got: list[str] = []

    async def consume(rx: Subscription[Quote]) -> None:
        async for quote in rx:
            got.append(quote.event_symbol)

    # The handle's block ends first, closing it; then the nursery waits for the consumer.
    async with trio.open_nursery() as nursery, handle(host, Overflow.LOSSLESS) as rx:
        nursery.start_soon(consume, rx)
        await trio.testing.wait_all_tasks_blocked()
        rx._push(quotes("A", "B"))
        rx._push(quotes("C"), ["C"])
        await trio.testing.wait_all_tasks_blocked()
        assert got == ["A", "B", "C"]
    assert got == ["A", "B", "C"]
    stats = rx.statistics()
    assert (stats.received, stats.delivered, stats.buffered) == (3, 3, 0)
    rx._push(quotes("D"))  # after close: refused and counted
    assert rx.statistics().dropped == 1
    assert rx.statistics().received == 3


async def test_a_lossless_overflow_detaches_from_the_host_after_the_drain() -> None:
    host = RecordingHost()
    async with handle(host, Overflow.LOSSLESS, max_buffer=2) as rx:
        rx._push(quotes("A", "B"))
        rx._push(quotes("C"))  # 3 > 2: the handle fails and leaves its host at once
        assert ("detach", ["SPY"]) in host.calls
        assert not host.attached
        assert [rx.receive_nowait().event_symbol for _ in range(2)] == ["A", "B"]
        with pytest.raises(SlowConsumerError):
            await rx.receive()
        stats = rx.statistics()
        assert (stats.received, stats.delivered, stats.dropped) == (3, 2, 1)
    assert host.calls.count(("detach", ["SPY"])) == 1  # leaving the block asks nothing more


@pytest.mark.parametrize("overflow", list(Overflow))
async def test_gaps_reach_the_consumer_of_every_policy(overflow: Overflow) -> None:
    host = RecordingHost()
    async with handle(host, overflow, notify_gaps=True) as rx:
        rx._push(quotes("SPY"))
        rx._mark_gap()
        rx._mark_gap()  # no event between: one gap
        rx._push(quotes("SPY"))
        seen: list[str] = []
        while True:
            try:
                seen.append(rx.receive_nowait().event_symbol)
            except DataGapError:
                seen.append("gap")
            except trio.WouldBlock:
                break
        if overflow is Overflow.LOSSLESS:
            assert seen == ["SPY", "gap", "SPY"]  # in stream order
        elif overflow is Overflow.LATEST:
            assert seen == ["gap", "SPY"]  # the two conflated
        else:
            assert seen == ["gap", "SPY", "SPY"]
        assert rx.statistics().gaps == 2
    with pytest.raises(SubscriptionClosedError):
        rx.receive_nowait()


async def test_a_closed_host_refuses_the_handle() -> None:
    class ClosedHost(RecordingHost):
        def attach(self, handle: Subscription[Any]) -> None:
            raise ConnectionClosedError("the host is closed")

    rx: Subscription[TimeAndSale] = Subscription(
        ClosedHost(),
        TimeAndSale,
        ["SPY"],
        from_time=None,
        source=None,
        overflow=None,
        max_buffer=10,
    )
    assert rx.overflow is Overflow.LOSSLESS  # indexed events default to LOSSLESS
    with pytest.raises(ConnectionClosedError):
        await rx.__aenter__()
    with pytest.raises(SubscriptionClosedError):
        rx.add(["QQQ"])  # never attached
