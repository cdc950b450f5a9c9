"""The DOM service in both pure cores, synchronously: the client's DOM channels
(ClientConnection), the server's (ServerProtocol), the codec, and the two wired back to back."""

from __future__ import annotations

import math
from typing import Any

import orjson
import pytest

from trio_dxlink import DomConfig, DomLevel, DomSnapshot, RemoteProtocolError
from trio_dxlink import _messages as m
from trio_dxlink._connection import (
    ChannelClosed,
    ChannelOpened,
    ChannelState,
    ClientConnection,
    DataSkipped,
    DomConfigChanged,
    DomSnapshotReceived,
    ServerErrorReceived,
)
from trio_dxlink._protocol import CLIENT_ACCEPTS, SERVER_ACCEPTS, ConnectionState
from trio_dxlink.testing import ServerConfig
from trio_dxlink.testing._server_core import Refused, ServerProtocol
from trio_dxlink.testing._server_events import DomSetupReceived

from .test_server_core import authorized_core, pump

TOKEN = "tok"


def frame(obj: dict[str, Any]) -> str:
    return orjson.dumps(obj).decode()


def sent(client: ClientConnection) -> list[dict[str, Any]]:
    return [orjson.loads(text) for text in client.data_to_send(0.0)]


def authorized_client() -> ClientConnection:
    client = ClientConnection(TOKEN)
    client.start(0.0)
    client.receive_message(frame({"type": "SETUP", "channel": 0, "version": "s"}), 0.0)
    client.receive_message(frame({"type": "AUTH_STATE", "channel": 0, "state": "UNAUTHORIZED"}), 0)
    client.receive_message(frame({"type": "AUTH_STATE", "channel": 0, "state": "AUTHORIZED"}), 0)
    client.data_to_send(0.0)
    return client


def opened_dom(client: ClientConnection) -> int:
    cid = client.open_dom_channel("AAPL", ["NTV", "DEX"], depth=5, aggregation_period=0.5)
    client.receive_message(
        frame({"type": "CHANNEL_OPENED", "channel": cid, "service": "DOM", "parameters": {}}), 0
    )
    client.data_to_send(0.0)
    return cid


# --- the codec and the tables -------------------------------------------------------------------


def test_dom_messages_round_trip_through_the_codec() -> None:
    setup = m.DomSetup(3, 0.5, 10, "FULL", ["price", "size"])
    assert m.decode(m.encode(setup)) == setup
    assert orjson.loads(m.encode(setup)) == {
        "type": "DOM_SETUP",
        "channel": 3,
        "acceptAggregationPeriod": 0.5,
        "acceptDepthLimit": 10,
        "acceptDataFormat": "FULL",
        "acceptOrderFields": ["price", "size"],
    }
    config = m.DomConfig(3, 0.5, 10, "FULL", ["price"])
    assert m.decode(m.encode(config)) == config
    snapshot = m.DomSnapshot(3, 17, [{"price": 1.5, "size": 2}], [])
    assert m.decode(m.encode(snapshot)) == snapshot
    # A DOM_SNAPSHOT's values are data: the codec hands over whatever came, never raising.
    assert m.decode(frame({"type": "DOM_SNAPSHOT", "channel": 3, "bids": "x"})) == m.DomSnapshot(
        3, None, "x", None
    )
    with pytest.raises(RemoteProtocolError, match="DOM_CONFIG"):
        m.decode(frame({"type": "DOM_CONFIG", "channel": 3, "orderFields": [1]}))


def test_the_tables_say_who_may_send_dom_messages() -> None:
    authorized = CLIENT_ACCEPTS[ConnectionState.AUTHORIZED]
    assert {m.DomConfig, m.DomSnapshot} <= authorized
    assert m.DomSetup not in authorized
    assert m.DomSetup in SERVER_ACCEPTS[ConnectionState.AUTHORIZED]
    assert m.DomSnapshot not in SERVER_ACCEPTS[ConnectionState.AUTHORIZED]


# --- the client core ----------------------------------------------------------------------------


def test_a_dom_channel_is_requested_once_authorized_and_sets_up_each_time_it_opens() -> None:
    client = ClientConnection(TOKEN)
    client.start(0.0)
    cid = client.open_dom_channel("AAPL", ["NTV"], depth=5)
    assert cid % 2 == 1
    assert client.dom_channels[cid].state is ChannelState.PENDING
    client.data_to_send(0.0)
    client.receive_message(frame({"type": "SETUP", "channel": 0, "version": "s"}), 0.0)
    client.receive_message(frame({"type": "AUTH_STATE", "channel": 0, "state": "AUTHORIZED"}), 0)
    assert sent(client) == [
        {
            "type": "CHANNEL_REQUEST",
            "channel": cid,
            "service": "DOM",
            "parameters": {"symbol": "AAPL", "sources": ["NTV"]},
        }
    ]
    events = client.receive_message(
        frame({"type": "CHANNEL_OPENED", "channel": cid, "service": "DOM", "parameters": {}}), 0
    )
    assert events == [ChannelOpened(cid, {})]
    assert sent(client) == [
        {
            "type": "DOM_SETUP",
            "channel": cid,
            "acceptDepthLimit": 5,
            "acceptDataFormat": "FULL",
            "acceptOrderFields": ["price", "size"],
        }
    ]
    assert client.open_channel() == cid + 2  # one numbering for FEED and DOM channels


def test_dom_config_is_merged_and_snapshots_are_read_into_levels() -> None:
    client = authorized_client()
    cid = opened_dom(client)
    events = client.receive_message(
        frame({"type": "DOM_CONFIG", "channel": cid, "depthLimit": 5, "orderFields": ["price"]}), 0
    )
    assert events == [DomConfigChanged(cid, DomConfig(math.nan, 5, "FULL", ("price",)))]
    events = client.receive_message(
        frame({"type": "DOM_CONFIG", "channel": cid, "aggregationPeriod": 1}), 0
    )
    assert events == [DomConfigChanged(cid, DomConfig(1.0, 5, "FULL", ("price",)))]
    snapshot = {
        "type": "DOM_SNAPSHOT",
        "channel": cid,
        "time": 1710262466056,
        "bids": [{"price": 172.33, "size": 376}, {"price": 172.32}],
        "asks": [{"price": 172.34, "size": "NaN"}],
    }
    (event,) = client.receive_message(frame(snapshot), 0)
    assert isinstance(event, DomSnapshotReceived)
    assert event.snapshot == DomSnapshot(
        "AAPL",
        ("NTV", "DEX"),
        1710262466056,
        (DomLevel(172.33, 376.0), DomLevel(172.32, math.nan)),
        (DomLevel(172.34, math.nan),),
    )


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"time": "soon"}, "time is not an integer"),
        ({"bids": {}}, "bids is not an array"),
        ({"asks": [[1, 2]]}, "asks holds a non-object"),
        ({"bids": [{"size": 1}]}, "without a price"),
        ({"asks": [{"price": 1, "size": "big"}]}, "asks size is not a number"),
    ],
)
def test_a_malformed_snapshot_is_skipped_and_the_connection_goes_on(
    change: dict[str, Any], reason: str
) -> None:
    client = authorized_client()
    cid = opened_dom(client)
    message = {"type": "DOM_SNAPSHOT", "channel": cid, "time": 1, "bids": [], "asks": [], **change}
    (event,) = client.receive_message(frame(message), 0)
    assert isinstance(event, DataSkipped)
    assert reason in event.reason
    assert client.statistics.malformed_messages == 1
    good = {"type": "DOM_SNAPSHOT", "channel": cid, "time": 2, "bids": [], "asks": []}
    (event,) = client.receive_message(frame(good), 0)
    assert isinstance(event, DomSnapshotReceived)


def test_dom_messages_for_channels_that_are_not_open_dom_channels_are_skipped() -> None:
    client = authorized_client()
    feed = client.open_channel()
    for channel in (feed, 99):
        message = {"type": "DOM_SNAPSHOT", "channel": channel, "time": 1, "bids": []}
        assert client.receive_message(frame(message), 0) == []
    assert client.statistics.skipped_unknown_channel == 2


def test_a_dom_channel_opened_as_another_service_is_a_protocol_error() -> None:
    client = authorized_client()
    cid = client.open_dom_channel("AAPL", ["NTV"], depth=5)
    with pytest.raises(RemoteProtocolError, match="opened as 'FEED'"):
        client.receive_message(
            frame({"type": "CHANNEL_OPENED", "channel": cid, "service": "FEED"}), 0
        )


def test_errors_and_closes_on_a_dom_channel_name_that_channel_only() -> None:
    client = authorized_client()
    cid = opened_dom(client)
    feed = client.open_channel()
    error = {"type": "ERROR", "channel": cid, "error": "BAD_ACTION", "message": "no"}
    assert client.receive_message(frame(error), 0) == [ServerErrorReceived(cid, "BAD_ACTION", "no")]
    assert client.receive_message(frame({"type": "CHANNEL_CLOSED", "channel": cid}), 0) == [
        ChannelClosed(cid, requested=False)
    ]
    assert client.dom_channels[cid].state is ChannelState.CLOSED
    assert client.channels[feed].state is ChannelState.REQUESTED  # untouched


def test_cancelling_a_dom_channel_forgets_it_once_closed() -> None:
    client = authorized_client()
    cid = opened_dom(client)
    client.close_channel(cid)
    assert sent(client) == [{"type": "CHANNEL_CANCEL", "channel": cid}]
    assert client.receive_message(frame({"type": "CHANNEL_CLOSED", "channel": cid}), 0) == [
        ChannelClosed(cid, requested=True)
    ]
    assert cid not in client.dom_channels


# --- the server core ----------------------------------------------------------------------------


def server_frames(core: ServerProtocol) -> list[dict[str, Any]]:
    return [orjson.loads(item) for item in core.data_to_send() if isinstance(item, str)]


def dom_request(channel: int, **parameters: Any) -> str:
    return frame(
        {"type": "CHANNEL_REQUEST", "channel": channel, "service": "DOM", "parameters": parameters}
    )


def test_the_server_opens_dom_channels_and_answers_dom_setup_with_dom_config() -> None:
    core = authorized_core()
    core.receive_message(dom_request(1, symbol="AAPL", sources=["NTV"]), 0.0)
    assert server_frames(core) == [
        {
            "type": "CHANNEL_OPENED",
            "channel": 1,
            "service": "DOM",
            "parameters": {"symbol": "AAPL", "sources": ["NTV"]},
        }
    ]
    channel = core.dom_channels[1]
    core.send_dom_snapshot(channel, 5, [(10.0, 1.0)], [])
    assert server_frames(core) == []  # nothing before DOM_SETUP
    events = core.receive_message(frame({"type": "DOM_SETUP", "channel": 1}), 0.0)
    assert DomSetupReceived(1) in events
    assert server_frames(core) == [
        {
            "type": "DOM_CONFIG",
            "channel": 1,
            "aggregationPeriod": 0.1,
            "depthLimit": 10,
            "dataFormat": "FULL",
            "orderFields": ["price", "size"],
        }
    ]
    setup = {"type": "DOM_SETUP", "channel": 1, "acceptDepthLimit": 2}
    core.receive_message(frame({**setup, "acceptOrderFields": ["price", "nonsense"]}), 0.0)
    assert server_frames(core)[0]["orderFields"] == ["price"]
    core.send_dom_snapshot(channel, 5, [(10.0, 1.0), (9.0, 2.0), (8.0, 3.0)], [(11.0, 1.0)])
    assert server_frames(core) == [
        {
            "type": "DOM_SNAPSHOT",
            "channel": 1,
            "time": 5,
            "bids": [{"price": 10.0}, {"price": 9.0}],
            "asks": [{"price": 11.0}],
        }
    ]


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        (dom_request(1, sources=["NTV"]), "needs a 'symbol'"),
        (dom_request(1, symbol="AAPL", sources=[]), "non-empty 'sources'"),
        (dom_request(1, symbol="AAPL", sources="NTV"), "non-empty 'sources'"),
        (frame({"type": "DOM_SETUP", "channel": 7}), "not a DOM channel"),
    ],
)
def test_the_server_refuses_bad_dom_requests_on_their_channel(message: str, reason: str) -> None:
    core = authorized_core()
    events = core.receive_message(message, 0.0)
    refusal = next(e for e in events if isinstance(e, Refused))
    assert reason in refusal.reason
    assert refusal.code == "BAD_ACTION"
    assert core.dom_channels == {}
    assert not core.closing


def test_the_server_refuses_a_dom_setup_it_cannot_honour() -> None:
    core = authorized_core()
    core.receive_message(dom_request(3, symbol="AAPL", sources=["NTV"]), 0.0)
    events = core.receive_message(
        frame({"type": "DOM_SETUP", "channel": 3, "acceptDataFormat": "COMPACT"}), 0.0
    )
    assert any(isinstance(e, Refused) and "data format" in e.reason for e in events)
    assert not core.dom_channels[3].set_up


def test_client_and_server_cores_speak_dom_back_to_back() -> None:
    client = ClientConnection(TOKEN)
    server = ServerProtocol(ServerConfig(simulate=False, token=TOKEN), 0.0)
    client.start(0.0)
    cid = client.open_dom_channel("/ESZ24:XCME", ["GLBX", "glbx"], depth=3)
    events = pump(client, server, 0.0)
    assert server.dom_channels[cid].sources == ("GLBX", "glbx")
    assert server.dom_channels[cid].depth_limit == 3
    assert DomConfigChanged(cid, DomConfig(0.1, 3, "FULL", ("price", "size"))) in events
    bids = [(5000.25, 4.0), (5000.0, 9.0), (4999.75, 1.0), (4999.5, 2.0)]
    server.send_dom_snapshot(server.dom_channels[cid], 42, bids, [(5000.5, 3.0)])
    (event,) = pump(client, server, 1.0)
    assert isinstance(event, DomSnapshotReceived)
    assert [level.price for level in event.snapshot.bids] == [5000.25, 5000.0, 4999.75]
    assert event.snapshot.asks == (DomLevel(5000.5, 3.0),)
    assert event.snapshot.time == 42
    client.close_channel(cid)
    assert pump(client, server, 2.0) == [ChannelClosed(cid, requested=True)]
    assert server.dom_channels == {}
