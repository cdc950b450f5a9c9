"""The feed's pure decision modules, driven synchronously: no trio, no clock, no socket.

DesiredState (who holds which wire subscription, from when), Router (which handle gets which
event), Reconnector (what to do after a connection fails).
"""

from __future__ import annotations

import random
from typing import Any

import pytest

from trio_dxlink._channel_key import ChannelKey as K
from trio_dxlink._connection import ClientConnection, ConnectionState
from trio_dxlink._desired import DesiredState
from trio_dxlink._exceptions import (
    AuthenticationError,
    CertificateError,
    ConnectError,
    ConnectionClosedError,
    GaveUpError,
    LocalProtocolError,
    RemoteProtocolError,
    ServerError,
)
from trio_dxlink._messages import SubscriptionEntry
from trio_dxlink._reconnect import (
    MAX_TOKEN_REJECTIONS,
    GiveUp,
    Reconnector,
    ReconnectPolicy,
    Retry,
    TokenRejected,
)
from trio_dxlink._router import Router
from trio_dxlink.events import Candle, Event, Order, Quote

# --- DesiredState ---


def test_a_wire_subscription_is_added_by_its_first_holder_and_removed_by_its_last() -> None:
    state = DesiredState()
    assert state.add("a", K("Quote"), ["SPY", "QQQ"]) == [
        SubscriptionEntry("Quote", "SPY"),
        SubscriptionEntry("Quote", "QQQ"),
    ]
    assert state.add("b", K("Quote"), ["SPY"]) == []  # already on the wire
    assert state.add("b", K("Quote"), ["SPY"]) == []  # idempotent
    assert len(state) == 2
    assert state.remove("a", K("Quote"), ["SPY"]) == []  # b still holds it
    assert state.remove("a", K("Quote"), ["SPY"]) == []  # a no longer does
    assert state.remove("b", K("Quote"), ["SPY"]) == [SubscriptionEntry("Quote", "SPY")]
    assert state.replay() == {K("Quote"): [SubscriptionEntry("Quote", "QQQ")]}


def test_sources_are_separate_wire_subscriptions() -> None:
    state = DesiredState()
    assert len(state.add("a", K("Order"), ["SPY"], source="NTV")) == 1
    assert len(state.add("b", K("Order"), ["SPY"], source="DEX")) == 1
    assert state.remove("a", K("Order"), ["SPY"], source="NTV") == [
        SubscriptionEntry("Order", "SPY", None, "NTV")
    ]


def test_each_holder_keeps_its_from_time_and_replay_uses_the_earliest() -> None:
    # Regression: the wire entry used to take the newest from_time and never give it back,
    # so after a reconnect the older holder was replayed from the wrong time.
    state = DesiredState()
    assert state.add("old", K("Candle"), ["AAPL{=5m}"], from_time=1_000) == [
        SubscriptionEntry("Candle", "AAPL{=5m}", 1_000)
    ]
    # A newer holder re-sends the subscription so that it gets its own snapshot.
    assert state.add("new", K("Candle"), ["AAPL{=5m}"], from_time=5_000) == [
        SubscriptionEntry("Candle", "AAPL{=5m}", 5_000)
    ]
    assert state.replay() == {K("Candle"): [SubscriptionEntry("Candle", "AAPL{=5m}", 1_000)]}
    state.remove("new", K("Candle"), ["AAPL{=5m}"])
    assert state.replay() == {K("Candle"): [SubscriptionEntry("Candle", "AAPL{=5m}", 1_000)]}
    state.add("live", K("Candle"), ["AAPL{=5m}"])  # no from_time: nothing to re-send
    state.remove("old", K("Candle"), ["AAPL{=5m}"])
    assert state.replay() == {K("Candle"): [SubscriptionEntry("Candle", "AAPL{=5m}", None)]}


# --- Router ---


class Handle:
    """A stand-in receiver: records what the router pushes."""

    def __init__(
        self, event_type: type[Event], symbols: list[str], source: str | None = None
    ) -> None:
        self.event_type = event_type
        self.channel_key = K(event_type.EVENT_TYPE)
        self.source = source
        self.symbols = frozenset(symbols)
        self.got: list[Any] = []

    def _push(self, events: list[Any], symbols: list[str] | None = None) -> None:
        self.got += events


def routed(router: Router, *handles: Handle) -> None:
    for handle in handles:
        router.attach(handle)
        router.add(handle, handle.symbols)


def quotes(*symbols: str) -> tuple[list[Event], list[str]]:
    return [Quote(s) for s in symbols], list(symbols)


def test_one_handle_gets_its_symbols_and_the_rest_is_counted() -> None:
    router = Router()
    spy = Handle(Quote, ["SPY"])
    routed(router, spy)
    router.dispatch(K("Quote"), *quotes("SPY", "IBM", "SPY"))
    assert [e.event_symbol for e in spy.got] == ["SPY", "SPY"]
    assert router.unrouted == 1
    assert router.events == 3
    assert router.latest("Quote", "SPY") is spy.got[-1]
    assert router.latest("Quote", "IBM") is None


def test_several_handles_share_a_batch_in_order() -> None:
    router = Router()
    a, b = Handle(Quote, ["SPY", "QQQ"]), Handle(Quote, ["QQQ"])
    routed(router, a, b)
    router.dispatch(K("Quote"), *quotes("QQQ", "SPY", "QQQ"))
    assert [e.event_symbol for e in a.got] == ["QQQ", "SPY", "QQQ"]
    assert [e.event_symbol for e in b.got] == ["QQQ", "QQQ"]


def test_wildcard_and_source_filters() -> None:
    router = Router()
    every, ntv = Handle(Order, ["*"]), Handle(Order, ["SPY"], source="NTV")
    routed(router, every, ntv)
    events: list[Event] = [Order("SPY", source="NTV"), Order("SPY", source="DEX"), Order("X")]
    router.dispatch(K("Order"), events, [e.event_symbol for e in events])
    assert every.got == events
    assert ntv.got == events[:1]


def test_candle_spellings_share_a_route_until_the_last_is_removed() -> None:
    router = Router()
    handle = Handle(Candle, ["AAPL{=5m,price=last}", "AAPL{=5m}"])
    routed(router, handle)
    handle.symbols = frozenset({"AAPL{=5m}"})
    router.remove(handle, ["AAPL{=5m,price=last}"])
    router.dispatch(K("Candle"), [Candle("AAPL{=5m}")], ["AAPL{=5m}"])
    assert len(handle.got) == 1
    handle.symbols = frozenset()
    router.remove(handle, ["AAPL{=5m}"])
    router.dispatch(K("Candle"), [Candle("AAPL{=5m}")], ["AAPL{=5m}"])
    assert len(handle.got) == 1
    assert router.unrouted == 1


# --- Reconnector ---

FAST = ReconnectPolicy(initial_delay=1.0, multiplier=2.0, max_delay=8.0, jitter=0.0)
LOST = ConnectionClosedError("lost")


def reconnector(policy: ReconnectPolicy = FAST, *, fixed: bool = False) -> Reconnector:
    return Reconnector(policy, fixed_token=fixed, rng=random.Random(0))


def test_the_first_connection_is_not_retried() -> None:
    decision = reconnector().failed(ConnectError("refused"), authorized_at=None, now=0.0)
    assert isinstance(decision, GiveUp)
    assert isinstance(decision.error, ConnectError)


def test_backoff_grows_caps_and_resets_after_a_healthy_connection() -> None:
    r = reconnector()
    delays = [r.failed(LOST, authorized_at=0.0, now=1.0)]
    delays += [r.failed(LOST, authorized_at=None, now=2.0) for _ in range(5)]
    assert [d.delay for d in delays if isinstance(d, Retry)] == [1, 2, 4, 8, 8, 8]
    decision = r.failed(LOST, authorized_at=100.0, now=200.0)  # up for 100 s: healthy
    assert decision == Retry(1.0, 1)


def test_max_attempts_and_give_up_after() -> None:
    r = reconnector(ReconnectPolicy(max_attempts=2, jitter=0.0))
    assert isinstance(r.failed(LOST, authorized_at=0.0, now=1.0), Retry)
    assert isinstance(r.failed(LOST, authorized_at=None, now=2.0), Retry)
    decision = r.failed(LOST, authorized_at=None, now=3.0)
    assert isinstance(decision, GiveUp)
    assert isinstance(decision.error, GaveUpError)
    assert decision.error.__cause__ is LOST
    r = reconnector(ReconnectPolicy(give_up_after=10.0, initial_delay=4.0, jitter=0.0))
    assert isinstance(r.failed(LOST, authorized_at=0.0, now=1.0), Retry)
    assert isinstance(r.failed(LOST, authorized_at=None, now=9.0), GiveUp)


@pytest.mark.parametrize(
    "error",
    [
        ServerError("UNSUPPORTED_PROTOCOL", "no", 0),
        CertificateError("self-signed certificate"),
        AuthenticationError("bad token source"),
    ],
)
def test_failures_reconnecting_cannot_cure_end_the_feed(error: Exception) -> None:
    r = reconnector()
    r.failed(LOST, authorized_at=0.0, now=1.0)
    decision = r.failed(error, authorized_at=None, now=2.0)  # type: ignore[arg-type]
    assert decision == GiveUp(error)


def test_a_rejected_session_token_gets_one_free_retry_on_first_contact() -> None:
    r = reconnector()
    assert r.failed(TokenRejected("no"), authorized_at=None, now=0.0) == Retry(0.0, 0)
    decision = r.failed(TokenRejected("no"), authorized_at=None, now=0.0)
    assert isinstance(decision, GiveUp)
    assert type(decision.error) is AuthenticationError


def test_tokens_rejected_on_a_live_connection_are_retried_under_the_policy() -> None:
    r = reconnector()
    decisions = [r.failed(TokenRejected("no"), authorized_at=0.0, now=1.0)]
    decisions += [
        r.failed(TokenRejected("no"), authorized_at=None, now=2.0)
        for _ in range(MAX_TOKEN_REJECTIONS - 1)
    ]
    assert [d.delay for d in decisions if isinstance(d, Retry)] == [1, 2, 4][:MAX_TOKEN_REJECTIONS]
    decision = r.failed(TokenRejected("no"), authorized_at=None, now=3.0)
    assert isinstance(decision, GiveUp)
    assert type(decision.error) is AuthenticationError
    assert "rejected" in str(decision.error)


def test_a_fixed_token_rejected_is_final() -> None:
    r = reconnector(fixed=True)
    decision = r.failed(TokenRejected("no"), authorized_at=0.0, now=1.0)
    assert isinstance(decision, GiveUp)
    assert type(decision.error) is AuthenticationError


# --- the core's transition table covers FEED_DATA; its errors are its own ---


def test_feed_data_while_not_authorized_is_a_protocol_error() -> None:
    conn = ClientConnection("token")
    conn.start(0.0)
    conn.receive_message('{"type":"SETUP","channel":0,"version":"1"}', 0.0)
    conn.receive_message('{"type":"AUTH_STATE","channel":0,"state":"UNAUTHORIZED"}', 0.0)
    assert conn.state is ConnectionState.AUTHENTICATING
    with pytest.raises(RemoteProtocolError, match="FEED_DATA"):
        conn.receive_message('{"type":"FEED_DATA","channel":1,"data":[]}', 0.0)


def test_subscribing_an_unknown_type_is_a_local_error_and_changes_nothing() -> None:
    conn = ClientConnection(None)
    conn.start(0.0)
    cid = conn.open_channel()
    with pytest.raises(LocalProtocolError, match="Bogus"):
        conn.subscribe(cid, [SubscriptionEntry("Quote", "SPY"), SubscriptionEntry("Bogus", "X")])
    assert conn.channels[cid].subscriptions == {}
