"""Per-subscription ``fields=`` (projection) and ``aggregation_period=``: a FEED channel per
distinct (type, fields, period), asked for with its own FEED_SETUP and replayed on reconnect.
The server is reached in memory."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Callable

import pytest
import trio
import trio.testing

from trio_dxlink import Candle, Order, Quote, Trade, open_dxlink
from trio_dxlink._channel_key import ChannelKey, channel_key_for, subscription_channel
from trio_dxlink._messages import FeedSetup, FeedSubscription
from trio_dxlink.testing import DXLinkServer

from .conftest import scripted_server

pytestmark = pytest.mark.filterwarnings("error")


@pytest.fixture
async def server() -> AsyncIterator[DXLinkServer]:
    """This module's server: the conftest one, reached in memory (``server.connector()``)."""
    async with scripted_server(in_memory=True) as srv:
        yield srv


# --- the channel key (pure) ---


def test_fields_are_named_either_way_and_kept_in_the_types_order() -> None:
    key = channel_key_for(Quote, ["askPrice", "bid_price"])
    assert key == ChannelKey("Quote", ("eventSymbol", "bidPrice", "askPrice"), None)
    assert channel_key_for(Quote) == ChannelKey("Quote")
    # every field: the ordinary channel
    assert channel_key_for(Quote, list(Quote.wire_fields())) == ChannelKey("Quote")


def test_indexed_events_keep_what_they_are_routed_and_assembled_by() -> None:
    key = channel_key_for(Order, ["price"])
    assert key.fields == ("eventSymbol", "eventFlags", "index", "source", "price")
    candle = channel_key_for(Candle, ["close"])
    assert candle.fields is not None
    assert {"eventSymbol", "eventFlags", "index", "time", "close"} == set(candle.fields)


@pytest.mark.parametrize(
    ("fields", "period", "message"),
    [
        (["bid_prize"], None, "Quote has no field 'bid_prize'"),
        ([], None, "at least one field"),
        ("bidPrice", None, "a list of field names"),
        (None, 0, "positive number of seconds"),
        (None, -1.0, "positive number of seconds"),
        (None, math.nan, "positive number of seconds"),
        (None, True, "positive number of seconds"),
    ],
)
def test_bad_fields_and_periods_are_refused(
    fields: list[str] | str | None, period: float | None, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        channel_key_for(Quote, fields, period)


def test_options_the_event_type_does_not_take_are_refused() -> None:
    with pytest.raises(ValueError, match="cannot be combined with from_time"):
        subscription_channel(
            Candle, history=True, source=None, fields=["close"], aggregation_period=None
        )
    with pytest.raises(ValueError, match="from_time is for time-series"):
        subscription_channel(Quote, history=True, source=None, fields=None, aggregation_period=None)
    with pytest.raises(ValueError, match="source is for order-book"):
        subscription_channel(
            Trade, history=False, source="NTV", fields=None, aggregation_period=None
        )
    assert subscription_channel(
        Quote, history=False, source=None, fields=None, aggregation_period=2
    ) == ChannelKey("Quote", None, 2.0)


# --- against the local server ---


def setups(server: DXLinkServer, connection: int) -> dict[int, FeedSetup]:
    return {
        m.channel: m for m in server.connection(connection).received if isinstance(m, FeedSetup)
    }


async def until(server: DXLinkServer, predicate: Callable[[], bool]) -> None:
    with trio.fail_after(5):
        await server.wait_for(predicate)


def subscribed_channels(server: DXLinkServer, symbol: str) -> set[int]:
    return {
        channel.id
        for conn in server.live
        for channel in conn.channels.values()
        for entry in channel.subscriptions.values()
        if entry.symbol == symbol
    }


async def test_a_projected_slower_subscription_gets_a_channel_of_its_own(
    server: DXLinkServer,
) -> None:
    async with (
        open_dxlink(server.url, connector=server.connector(), aggregation_period=0.1) as feed,
        feed.subscribe(Quote, ["SPY"]) as full,
        feed.subscribe(Quote, ["SPY"], fields=["bid_price"], aggregation_period=1) as thin,
    ):
        assert thin.fields == ("eventSymbol", "bidPrice")
        assert thin.aggregation_period == 1.0
        assert full.fields is None
        await until(server, lambda: len(subscribed_channels(server, "SPY")) == 2)
        by_channel = setups(server, 1)
        assert len(by_channel) == 2
        fields = sorted((m.accept_event_fields or {})["Quote"] for m in by_channel.values())
        assert fields == [["eventSymbol", "bidPrice"], list(Quote.wire_fields())]
        periods = {
            tuple((m.accept_event_fields or {})["Quote"]): m.accept_aggregation_period
            for m in by_channel.values()
        }
        assert periods[("eventSymbol", "bidPrice")] == 1.0
        assert periods[Quote.wire_fields()] == 0.1

        server.publish(Quote("SPY", bid_price=3.0, ask_price=4.0))
        with trio.fail_after(5):
            whole = await full.receive()
            projected = await thin.receive()
        assert (whole.bid_price, whole.ask_price) == (3.0, 4.0)
        assert projected.bid_price == 3.0
        assert math.isnan(projected.ask_price)  # not asked for: its default
        # the latest value comes from the ordinary channel, which has every field
        latest = feed.latest(Quote, "SPY")
        assert latest is not None
        assert latest.ask_price == 4.0


async def test_each_distinct_channel_is_replayed_on_reconnect(
    server: DXLinkServer, autojump_clock: trio.testing.MockClock
) -> None:
    # In memory, so the reconnect's backoff passes in virtual time.
    async with (
        open_dxlink(server.url, connector=server.connector()) as feed,
        feed.subscribe(Quote, ["SPY"], fields=["ask_price"]) as thin,
        feed.subscribe(Quote, ["AAPL"], aggregation_period=5),
        feed.subscribe(Quote, ["QQQ"], aggregation_period=5.0),  # the same channel
    ):
        await until(server, lambda: len(subscribed_channels(server, "QQQ")) == 1)
        before = setups(server, 1)
        assert len(before) == 2
        server.drop_all()
        await until(
            server,
            lambda: (
                bool(server.live)
                and server.live[0].id == 2
                and {"SPY", "AAPL", "QQQ"} <= {s for _, s in server.subscriptions()}
            ),
        )
        after = setups(server, 2)

        def asked(by_channel: dict[int, FeedSetup]) -> set[tuple[str, ...]]:
            return {
                (str(m.accept_aggregation_period), *(m.accept_event_fields or {})["Quote"])
                for m in by_channel.values()
            }

        assert asked(after) == asked(before)
        assert ("5.0", "eventSymbol", "askPrice") not in asked(after)
        assert ("5.0", *Quote.wire_fields()) in asked(after)
        assert subscribed_channels(server, "AAPL") == subscribed_channels(server, "QQQ")
        assert subscribed_channels(server, "SPY") != subscribed_channels(server, "QQQ")
        server.publish(Quote("SPY", bid_price=1.0, ask_price=2.0))
        with trio.fail_after(5):
            quote = await thin.receive()
        assert quote.ask_price == 2.0
        assert math.isnan(quote.bid_price)


async def test_leaving_a_projected_handle_unsubscribes_only_its_channel(
    server: DXLinkServer,
) -> None:
    async with (
        open_dxlink(server.url, connector=server.connector()) as feed,
        feed.subscribe(Quote, ["SPY"]) as full,
    ):
        async with feed.subscribe(Quote, ["SPY"], fields=["bidPrice"]):
            await until(server, lambda: len(subscribed_channels(server, "SPY")) == 2)
        await until(server, lambda: len(subscribed_channels(server, "SPY")) == 1)
        removals = [
            m for m in server.connection(1).received if isinstance(m, FeedSubscription) and m.remove
        ]
        assert len(removals) == 1
        server.publish(Quote("SPY", ask_price=7.0))
        with trio.fail_after(5):
            assert (await full.receive()).ask_price == 7.0
