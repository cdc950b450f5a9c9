"""The local server's cap on subscriptions per connection (``ServerConfig.max_subscriptions``):
refused past the cap with an ERROR, or the connection closed, as the switch says."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing

from trio_dxlink import Quote, open_dxlink
from trio_dxlink.testing import ServerConfig, open_dxlink_server
from trio_dxlink.testing._server_core import Close, Refused, ServerProtocol, SubscriptionChanged

from .conftest import pinned_market, until
from .test_server_core import authorized_core, frame, kinds, open_channel, sent


def subscribe(core: ServerProtocol, channel: int, *symbols: str, kind: str = "Quote") -> list[Any]:
    add = [{"type": kind, "symbol": s} for s in symbols]
    return core.receive_message(
        frame({"type": "FEED_SUBSCRIPTION", "channel": channel, "add": add}), 0.0
    )


def held(core: ServerProtocol) -> int:
    return sum(len(channel.subscriptions) for channel in core.channels.values())


def test_the_cap_counts_every_channel_and_refuses_the_rest_with_one_error() -> None:
    core = authorized_core(max_subscriptions=3)
    open_channel(core, 1)
    open_channel(core, 3)
    subscribe(core, 1, "A", "B")
    events = subscribe(core, 3, "C", "D", "E", kind="Greeks")
    changed = next(e for e in events if isinstance(e, SubscriptionChanged))
    assert [entry.symbol for entry in changed.added] == ["C"]
    refused = next(e for e in events if isinstance(e, Refused))
    assert refused.channel == 3
    out = sent(core)
    assert kinds(out) == ["ERROR"]
    assert out[0]["channel"] == 3
    assert "2 refused" in out[0]["message"]
    assert "limit is 3" in out[0]["message"]
    assert held(core) == 3


def test_repeats_take_no_room_and_removals_free_it() -> None:
    core = authorized_core(max_subscriptions=2)
    open_channel(core, 1)
    subscribe(core, 1, "A", "B")
    assert not any(isinstance(e, Refused) for e in subscribe(core, 1, "A", "B"))
    assert sent(core) == []
    remove = {
        "type": "FEED_SUBSCRIPTION",
        "channel": 1,
        "remove": [{"type": "Quote", "symbol": "A"}],
    }
    core.receive_message(frame(remove), 0.0)
    assert not any(isinstance(e, Refused) for e in subscribe(core, 1, "C"))
    assert set(core.channels[1].subscriptions) == {("Quote", "B", None), ("Quote", "C", None)}


def test_a_duplicate_within_one_message_takes_one_place() -> None:
    core = authorized_core(max_subscriptions=1)
    open_channel(core, 1)
    events = subscribe(core, 1, "A", "A")
    assert not any(isinstance(e, Refused) for e in events)
    assert held(core) == 1


def test_the_close_switch_drops_the_connection_like_a_real_server() -> None:
    core = authorized_core(max_subscriptions=1, subscription_overflow="close")
    open_channel(core, 1)
    subscribe(core, 1, "A", "B")
    out = sent(core)
    assert kinds(out) == ["ERROR", "Close"]
    assert out[0]["channel"] == 0
    assert out[0]["error"] == "INVALID_MESSAGE"
    assert out[1] == Close(1011, "too many subscriptions")


def test_bad_cap_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="max_subscriptions"):
        ServerConfig(simulate=False, max_subscriptions=0)
    with pytest.raises(ValueError, match="subscription_overflow"):
        ServerConfig(simulate=False, subscription_overflow="ignore")


async def test_a_client_past_the_cap_counts_a_refusal_and_stays_connected() -> None:
    config = ServerConfig(simulate=False, max_subscriptions=2)
    async with (
        open_dxlink_server(config=config, market=pinned_market(), in_memory=True) as server,
        open_dxlink(server.url, connector=server.connector()) as feed,
        feed.subscribe(Quote, ["A", "B", "C"]) as rx,
    ):
        await until(server, lambda: len(server.subscriptions("Quote")) == 2)
        await trio.testing.wait_all_tasks_blocked()  # the client has read the ERROR
        assert feed.statistics().refusals == 1
        # Which two of the three the server kept depends on the order the client listed them.
        kept = sorted(symbol for _, symbol in server.subscriptions("Quote"))[0]
        server.publish(Quote(kept, bid_price=1.0))
        with trio.fail_after(5):
            assert (await rx.receive()).bid_price == 1.0
        assert len(server.live) == 1


async def test_a_client_past_a_closing_cap_is_dropped() -> None:
    config = ServerConfig(simulate=False, max_subscriptions=1, subscription_overflow="close")
    async with (
        open_dxlink_server(config=config, market=pinned_market(), in_memory=True) as server,
        open_dxlink(server.url, connector=server.connector()) as feed,
    ):
        first = server.live[0]
        async with feed.subscribe(Quote, ["A", "B"]):
            await until(server, lambda: first.close_code is not None)
        assert first.close_code == 1011
