"""The local server's pure core (ServerProtocol), driven synchronously: no trio, no sockets.

Client frames are scripted (in order, out of order, hostile), or come from a real
ClientConnection wired back to back with the server core; the time is a plain number.
"""

from __future__ import annotations

import ast
import math
from pathlib import Path
from typing import Any

import orjson
import pytest

from trio_dxlink import _messages as m
from trio_dxlink._connection import ClientConnection, FeedEvents
from trio_dxlink._exceptions import KeepaliveTimeoutError
from trio_dxlink._messages import SubscriptionEntry
from trio_dxlink._protocol import (
    CLIENT_ACCEPTS,
    SERVER_ACCEPTS,
    ConnectionState,
    KeepaliveTimers,
    keepalive_send_interval,
    sane_keepalive_timeout,
)
from trio_dxlink.events import Quote, Trade
from trio_dxlink.testing import ServerConfig
from trio_dxlink.testing import _server_core as core_module
from trio_dxlink.testing._server_core import (
    AuthRequested,
    ChannelCancelled,
    ChannelRequested,
    ClientErrorReceived,
    ClientTimedOut,
    Close,
    FeedSetupReceived,
    HandlingFailed,
    MessageReceived,
    Outgoing,
    Refused,
    ServerProtocol,
    SubscriptionChanged,
)

SETUP = {"type": "SETUP", "channel": 0, "version": "test", "keepaliveTimeout": 20}


def frame(obj: dict[str, Any]) -> str:
    return orjson.dumps(obj).decode()


def sent(core: ServerProtocol, now: float | None = None) -> list[Any]:
    """What the core queued: frames as dicts, closes as Close."""
    out: list[Outgoing] = core.data_to_send(now)
    return [item if isinstance(item, Close) else orjson.loads(item) for item in out]


def kinds(items: list[Any]) -> list[str]:
    return [item.__class__.__name__ if isinstance(item, Close) else item["type"] for item in items]


def authorized_core(**config: Any) -> ServerProtocol:
    core = ServerProtocol(ServerConfig(**config), 0.0)
    core.receive_message(frame(SETUP), 0.0)
    sent(core)
    return core


def open_channel(core: ServerProtocol, channel: int = 1, **setup: Any) -> None:
    request = {"type": "CHANNEL_REQUEST", "channel": channel, "service": "FEED", "parameters": {}}
    core.receive_message(frame(request), 0.0)
    core.receive_message(frame({"type": "FEED_SETUP", "channel": channel, **setup}), 0.0)
    sent(core)


# --- the shared rules -------------------------------------------------------------------------


def test_the_core_imports_no_trio() -> None:
    tree = ast.parse(Path(core_module.__file__).read_text())
    imported = {
        name
        for node in ast.walk(tree)
        if isinstance(node, (ast.Import, ast.ImportFrom))
        for name in (
            [alias.name for alias in node.names]
            if isinstance(node, ast.Import)
            else [node.module or ""]
        )
    }
    assert not any(name.split(".")[0] in ("trio", "trio_websocket") for name in imported)


def test_each_role_has_its_own_table() -> None:
    # A client accepts only a server's messages, a server only a client's; channel traffic
    # reaches a client only once it is authorized, and a server takes only SETUP first.
    assert SERVER_ACCEPTS[ConnectionState.IDLE] == frozenset({m.Setup})
    assert m.FeedData in CLIENT_ACCEPTS[ConnectionState.AUTHORIZED]
    assert m.FeedData not in CLIENT_ACCEPTS[ConnectionState.AUTHENTICATING]
    assert ConnectionState.IDLE not in CLIENT_ACCEPTS
    assert not any(m.FeedData in accepted for accepted in SERVER_ACCEPTS.values())
    assert not any(m.Auth in accepted for accepted in CLIENT_ACCEPTS.values())


def test_keepalive_rules() -> None:
    assert sane_keepalive_timeout(0.001) == 1.0
    assert sane_keepalive_timeout(math.nan) == 3600.0
    assert keepalive_send_interval(20) == 10
    assert keepalive_send_interval(20, limit=4) == 4
    assert keepalive_send_interval(None, limit=4) == 4
    assert keepalive_send_interval(-5) == 0.5  # clamped to 1 s first
    timers = KeepaliveTimers()
    timers.start(0.1)
    # Waking at the deadline always finds it due, whatever the rounding of 0.1 + 30.
    assert timers.send_due(timers.send_deadline(30.0), 30.0)
    assert timers.peer_expired(timers.receive_deadline(30.0), 30.0)
    assert not timers.send_due(30.0, 30.0)


# --- the handshake ------------------------------------------------------------------------------


def test_setup_without_a_token_authorizes_at_once() -> None:
    core = ServerProtocol(ServerConfig(simulate=False, user_id="u1", keepalive_timeout=30), 0.0)
    events = core.receive_message(frame(SETUP), 1.0)
    assert [type(e) for e in events] == [MessageReceived]
    out = sent(core)
    assert kinds(out) == ["SETUP", "AUTH_STATE"]
    assert out[0]["keepaliveTimeout"] == 30
    assert out[1] == {"type": "AUTH_STATE", "channel": 0, "state": "AUTHORIZED", "userId": "u1"}
    assert core.authorized
    assert core.state is ConnectionState.AUTHORIZED


def test_a_token_is_checked_by_the_driver() -> None:
    core = ServerProtocol(ServerConfig(simulate=False, token="secret"), 0.0)
    core.receive_message(frame(SETUP), 0.0)
    assert kinds(sent(core)) == ["SETUP", "AUTH_STATE"]
    assert core.state is ConnectionState.AUTHENTICATING
    assert not core.authorized
    events = core.receive_message(frame({"type": "AUTH", "channel": 0, "token": "t1"}), 0.0)
    assert events[1:] == [AuthRequested("t1")]
    assert sent(core) == []  # nothing until the driver decides
    core.authorize()
    assert sent(core)[0]["state"] == "AUTHORIZED"
    # A refreshed token that the driver rejects: UNAUTHORIZED, then close 1008; then deaf.
    core.receive_message(frame({"type": "AUTH", "channel": 0, "token": "t2"}), 0.0)
    core.reject_token()
    assert sent(core) == [
        {"type": "AUTH_STATE", "channel": 0, "state": "UNAUTHORIZED"},
        Close(1008, "unauthorized"),
    ]
    assert not core.authorized
    assert core.closing
    assert core.receive_message(frame({"type": "KEEPALIVE", "channel": 0}), 1.0) == []
    assert sent(core) == []


@pytest.mark.parametrize(
    "first",
    [
        {"type": "KEEPALIVE", "channel": 0},
        {"type": "AUTH", "channel": 0, "token": "x"},
        {"type": "CHANNEL_REQUEST", "channel": 1, "service": "FEED", "parameters": {}},
        {"type": "FEED_DATA", "channel": 1, "data": []},
    ],
)
def test_anything_before_setup_is_a_bad_action(first: dict[str, Any]) -> None:
    core = ServerProtocol(ServerConfig(simulate=False), 0.0)
    events = core.receive_message(frame(first), 0.0)
    assert isinstance(events[-1], Refused)
    assert events[-1].code == "BAD_ACTION"
    (error,) = sent(core)
    assert error["error"] == "BAD_ACTION"
    assert error["message"].startswith("SETUP must come first, not ")
    assert core.state is ConnectionState.IDLE  # still waiting for SETUP


def test_channels_wait_for_authorization_and_setup_comes_again() -> None:
    core = ServerProtocol(ServerConfig(simulate=False, token="secret"), 0.0)
    core.receive_message(frame(SETUP), 0.0)
    sent(core)
    request = {"type": "CHANNEL_REQUEST", "channel": 3, "service": "FEED", "parameters": {}}
    events = core.receive_message(frame(request), 0.0)
    assert events[-1] == Refused(3, "UNAUTHORIZED", "the connection is not authorized")
    assert sent(core)[0]["error"] == "UNAUTHORIZED"
    core.receive_message(frame(SETUP), 0.0)  # a second SETUP is answered, no new AUTH_STATE
    assert kinds(sent(core)) == ["SETUP"]
    core.receive_message(frame({"type": "AUTH", "channel": 0, "token": "secret"}), 0.0)
    core.authorize()
    sent(core)
    events = core.receive_message(frame(request), 0.0)
    assert events[-1] == ChannelRequested(3)
    assert sent(core) == [
        {
            "type": "CHANNEL_OPENED",
            "channel": 3,
            "service": "FEED",
            "parameters": {"subFormat": "LIST"},
        }
    ]


def test_messages_only_a_server_sends_are_refused() -> None:
    core = authorized_core()
    for obj in (
        {"type": "FEED_DATA", "channel": 1, "data": []},
        {"type": "AUTH_STATE", "channel": 0, "state": "AUTHORIZED"},
        {"type": "SOMETHING_NEW", "channel": 0},
    ):
        (*_, refused) = core.receive_message(frame(obj), 0.0)
        assert isinstance(refused, Refused)
        assert (refused.channel, refused.code) == (obj["channel"], "BAD_ACTION")
        assert refused.reason.startswith("a client may not send ")
    assert kinds(sent(core)) == ["ERROR"] * 3
    assert core.authorized  # and the connection goes on


# --- channels, FEED_SETUP and subscriptions ----------------------------------------------------


def test_feed_setup_and_subscription_change_the_channel() -> None:
    core = authorized_core()
    request = {"type": "CHANNEL_REQUEST", "channel": 1, "service": "FEED", "parameters": {}}
    core.receive_message(frame(request), 0.0)
    sent(core)
    setup = {
        "type": "FEED_SETUP",
        "channel": 1,
        "acceptDataFormat": "COMPACT",
        "acceptAggregationPeriod": 0.5,
        "acceptEventFields": {"Quote": ["eventSymbol", "bidPrice"]},
    }
    assert core.receive_message(frame(setup), 0.0)[1:] == [FeedSetupReceived(1)]
    assert sent(core) == [
        {"type": "FEED_CONFIG", "channel": 1, "aggregationPeriod": 0.5, "dataFormat": "COMPACT"}
    ]
    channel = core.channels[1]
    assert channel.event_fields == {"Quote": ["eventSymbol", "bidPrice"]}
    add = {"type": "FEED_SUBSCRIPTION", "channel": 1, "add": [{"type": "Quote", "symbol": "A"}]}
    events = core.receive_message(frame(add), 0.0)
    assert events[1:] == [SubscriptionChanged(1, [SubscriptionEntry("Quote", "A")], [], False)]
    remove = {
        "type": "FEED_SUBSCRIPTION",
        "channel": 1,
        "reset": True,
        "remove": [{"type": "Quote", "symbol": "A"}],
        "add": [{"type": "Trade", "symbol": "B"}],
    }
    core.receive_message(frame(remove), 0.0)
    assert list(channel.subscriptions) == [("Trade", "B", None)]
    cancel = {"type": "CHANNEL_CANCEL", "channel": 1}
    assert core.receive_message(frame(cancel), 0.0)[1:] == [ChannelCancelled(1)]
    assert kinds(sent(core)) == ["CHANNEL_CLOSED"]
    assert core.channels == {}
    # Cancelling again just confirms it; FEED_SETUP on the closed channel is refused.
    core.receive_message(frame(cancel), 0.0)
    core.receive_message(frame(setup), 0.0)
    out = sent(core)
    assert kinds(out) == ["CHANNEL_CLOSED", "ERROR"]
    assert out[1]["message"] == "channel 1 is not open"


def test_events_go_out_in_the_channels_layout_announced_first() -> None:
    core = authorized_core(pairs_per_message=2)
    open_channel(
        core,
        acceptDataFormat="COMPACT",
        acceptEventFields={"Quote": ["eventSymbol", "bidPrice"], "Trade": ["eventSymbol"]},
    )
    channel = core.channels[1]
    core.send_events(channel, [Quote("A", bid_price=1.5), Trade("B"), Quote("C")])
    out = sent(core)
    assert kinds(out) == ["FEED_CONFIG", "FEED_CONFIG", "FEED_DATA"]
    assert out[0]["eventFields"] == {"Quote": ["eventSymbol", "bidPrice"]}
    assert out[2]["data"] == ["Quote", ["A", 1.5, "C", "NaN"], "Trade", ["B"]]
    core.send_events(channel, [Quote("A")])
    assert kinds(sent(core)) == ["FEED_DATA"]  # announced once
    core.switch_data_format(1, "FULL")
    core.send_events(channel, [Quote("A", bid_price=2.0)])
    out = sent(core)
    assert out[0] == {
        "type": "FEED_CONFIG",
        "channel": 1,
        "aggregationPeriod": 0.1,
        "dataFormat": "FULL",
    }
    assert out[1]["data"] == [{"eventType": "Quote", "eventSymbol": "A", "bidPrice": 2.0}]
    with pytest.raises(ValueError, match="data_format"):
        core.switch_data_format(1, "CSV")


def test_server_initiated_messages() -> None:
    core = authorized_core()
    open_channel(core)
    core.close_channel(1)
    core.send_error(0, "X", "y")
    core.send_raw("not json")
    assert core.data_to_send() == [
        '{"type":"CHANNEL_CLOSED","channel":1}',
        '{"type":"ERROR","error":"X","message":"y","channel":0}',
        "not json",
    ]
    assert core.channels == {}


# --- hostile input ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "code", "channel"),
    [
        ("not json", "INVALID_MESSAGE", 0),
        ("[1, 2]", "INVALID_MESSAGE", 0),
        ('{"type": "SETUP"}', "INVALID_MESSAGE", 0),
        ('{"type": "SETUP", "channel": 0, "version": 7}', "BAD_ACTION", 0),
        ('{"type": "AUTH", "channel": 5, "token": "t"}', "BAD_ACTION", 5),
        ('{"type": "CHANNEL_REQUEST", "channel": 0, "service": "FEED"}', "BAD_ACTION", 0),
        ('{"type": "CHANNEL_REQUEST", "channel": 1, "service": "DOM"}', "BAD_ACTION", 1),
        ('{"type": "FEED_SUBSCRIPTION", "channel": 9, "add": []}', "BAD_ACTION", 9),
    ],
)
def test_hostile_frames_get_an_error_and_the_connection_goes_on(
    text: str, code: str, channel: int
) -> None:
    core = authorized_core()
    events = core.receive_message(text, 0.0)
    assert isinstance(events[-1], Refused)
    (error,) = sent(core)
    assert (error["type"], error["error"], error["channel"]) == ("ERROR", code, channel)
    assert not core.closing
    core.receive_message(frame({"type": "KEEPALIVE", "channel": 0}), 0.0)
    assert sent(core) == []


def test_a_message_the_server_fails_on_costs_that_connection_only() -> None:
    core = authorized_core()
    # Parameters nested too deep for orjson to write back in CHANNEL_OPENED.
    deep = "[" * 600 + '"x"' + "]" * 600
    text = f'{{"type":"CHANNEL_REQUEST","channel":1,"service":"FEED","parameters":{{"d":{deep}}}}}'
    events = core.receive_message(text, 0.0)
    assert isinstance(events[-1], HandlingFailed)
    out = sent(core)
    assert kinds(out) == ["ERROR", "Close"]
    assert out[0]["error"] == "UNKNOWN"
    assert out[1].code == 1011


def test_an_unknown_data_format_is_refused() -> None:
    core = authorized_core()
    open_channel(core)
    core.receive_message(frame({"type": "FEED_SETUP", "channel": 1, "acceptDataFormat": "CSV"}), 0)
    assert sent(core)[0]["message"] == "unknown data format 'CSV'"
    assert core.channels[1].data_format == "FULL"


def test_a_client_error_is_reported() -> None:
    core = authorized_core()
    events = core.receive_message(
        frame({"type": "ERROR", "channel": 0, "error": "BAD", "message": "m"}), 0.0
    )
    assert events[1:] == [ClientErrorReceived(0, "BAD", "m")]


# --- keepalive ----------------------------------------------------------------------------------


def test_keepalive_at_half_the_clients_timeout_and_a_timeout_for_silence() -> None:
    core = ServerProtocol(ServerConfig(simulate=False, keepalive_timeout=25), 0.0)
    assert core.send_deadline() == math.inf  # silent until SETUP says how often to speak
    assert core.next_deadline() == 25
    core.receive_message(frame(SETUP), 0.0)  # the client's keepaliveTimeout is 20
    sent(core, 0.0)
    assert core.next_deadline() == 10
    assert core.handle_timers(9.9) == []
    assert sent(core) == []
    assert core.handle_timers(10.0) == []
    assert kinds(sent(core, 10.0)) == ["KEEPALIVE"]
    core.receive_message(frame({"type": "KEEPALIVE", "channel": 0}), 12.0)
    assert core.next_deadline() == 20  # the next KEEPALIVE; the client's silence ends at 37
    core.frame_sent(21.0)  # a driver reports the write itself
    assert core.next_deadline() == 31
    assert core.handle_timers(37.0) == [ClientTimedOut(25.0)]
    out = sent(core)
    assert kinds(out) == ["ERROR", "Close"]
    assert out[0]["error"] == "TIMEOUT"
    assert out[1] == Close(1000, "keepalive timeout")
    assert core.receive_deadline() == math.inf
    assert core.handle_timers(99.0) == []


def test_a_setup_without_a_keepalive_timeout_gets_the_default() -> None:
    core = ServerProtocol(ServerConfig(simulate=False, keepalive_timeout=1000), 0.0)
    core.receive_message(frame({"type": "SETUP", "channel": 0, "version": "v"}), 0.0)
    assert core.keepalive_interval == 30.0
    core.receive_message(frame({**SETUP, "keepaliveTimeout": 0.01}), 0.0)
    assert core.keepalive_interval == 0.5  # a client cannot make the server flood it


# --- back to back with the client core ----------------------------------------------------------


def pump(client: ClientConnection, server: ServerProtocol, now: float) -> list[Any]:
    """Carry frames both ways until both are quiet; the client's events, in order."""
    events: list[Any] = []
    while True:
        moved = False
        for text in client.data_to_send(now):
            moved = True
            for event in server.receive_message(text, now):
                if isinstance(event, AuthRequested):
                    server.authorize() if event.token == "tok" else server.reject_token()
        for item in server.data_to_send(now):
            moved = True
            if isinstance(item, Close):
                client.connection_closed()
                return events
            events += client.receive_message(item, now)
        if not moved:
            return events


def test_client_and_server_cores_back_to_back() -> None:
    client = ClientConnection("tok", keepalive_timeout=40)
    server = ServerProtocol(ServerConfig(simulate=False, token="tok", keepalive_timeout=30), 0.0)
    client.start(0.0)
    channel = client.open_channel()
    client.subscribe(channel, [SubscriptionEntry("Quote", "AAPL")])
    pump(client, server, 0.0)
    assert client.authorized
    assert server.authorized
    assert list(server.channels[channel].subscriptions) == [("Quote", "AAPL", None)]
    assert server.channels[channel].data_format == "COMPACT"
    server.send_events(server.channels[channel], [Quote("AAPL", bid_price=101.5)])
    (feed,) = [e for e in pump(client, server, 1.0) if isinstance(e, FeedEvents)]
    assert feed.events == [Quote("AAPL", bid_price=101.5)]
    # Each side's keepalive follows the other's announced timeout: the client every 15 s
    # (half the server's 30), the server every 20 s (half the client's 40).
    assert client.keepalive_interval == 15
    assert server.keepalive_interval == 20
    assert client.next_deadline() == 15.0
    assert server.next_deadline() == 21.0
    for now in (15.0, 21.0, 30.0, 41.0):
        client.handle_timers(now)
        server.handle_timers(now)
        pump(client, server, now)
    assert not server.closing
    assert client.authorized
    # The client unsubscribes and closes its channel; the server forgets it.
    client.unsubscribe(channel, [SubscriptionEntry("Quote", "AAPL")])
    client.close_channel(channel)
    pump(client, server, 42.0)
    assert server.channels == {}
    assert client.channels == {}


def test_back_to_back_a_silent_client_is_timed_out_and_a_silent_server_too() -> None:
    client = ClientConnection("wrong", keepalive_timeout=40)
    server = ServerProtocol(ServerConfig(simulate=False, token="tok", keepalive_timeout=30), 0.0)
    client.start(0.0)
    pump(client, server, 0.0)
    assert server.closing
    assert client.state is ConnectionState.CLOSED
    # Another pair where nobody sends: the server times the client out at 30 s ...
    client = ClientConnection(None, keepalive_timeout=40)
    server = ServerProtocol(ServerConfig(simulate=False, keepalive_timeout=30), 0.0)
    client.start(0.0)
    pump(client, server, 0.0)
    assert server.handle_timers(30.0) == [ClientTimedOut(30.0)]
    # ... and a client whose server went quiet raises at its own 40 s.
    with pytest.raises(KeepaliveTimeoutError):
        client.handle_timers(40.0)
