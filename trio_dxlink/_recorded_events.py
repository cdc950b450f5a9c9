"""The events of a recording, decoded without a feed (for the Arrow export and ``serve --replay``).

A recording's received FEED_DATA frames are decoded with the library's own decoder
(:class:`~trio_dxlink._feed_data.FeedDataDecoder`), each channel's field order taken from the
client's FEED_SETUP and the server's FEED_CONFIG frames, just as the live connection did.
Frames that do not decode are counted and logged by that decoder, not raised.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import attrs
import orjson

from ._client_events import FeedConfig, FeedEvents
from ._eventbase import Event
from ._feed_data import ChannelState, FeedChannel, FeedDataDecoder, Statistics
from ._recording import iter_records

__all__ = ["RecordedEvents", "iter_recorded_events"]


@attrs.frozen
class RecordedEvents:
    """The events of one recorded FEED_DATA frame (of one event type)."""

    connection: int
    """The recorded connection's number (1, 2, ...)."""
    channel: int
    """The FEED channel they arrived on."""
    t: int
    """When the frame arrived: ns since the start of the recording (trio's clock)."""
    received_ns: int
    """When the frame arrived: wall-clock ns since the Unix epoch (``started_ns + t``)."""
    events: list[Event]
    """The events, in the order the frame held them (all of one type)."""


def iter_recorded_events(path: str | os.PathLike[str]) -> Iterator[RecordedEvents]:
    """The events a recording received, frame by frame, in recorded order, decoded by the
    library's decoder (what a feed replaying it would deliver, before any conflation)."""
    statistics = Statistics()
    decoder = FeedDataDecoder(statistics)
    started_ns = 0
    channels: dict[tuple[int, int], FeedChannel] = {}
    for record in iter_records(path):
        kind = record["k"]
        if kind == "header":
            started_ns = record.get("started_ns", 0)
            continue
        if kind not in ("in", "out") or "f" not in record:
            continue
        text: str = record["f"]
        head = text[:64]
        if kind == "in" and "FEED_DATA" in head:
            message = _json(text)
            if message is None:
                continue
            channel_id = message.get("channel")
            channel = channels.get((record["c"], channel_id))  # type: ignore[arg-type]
            if not isinstance(channel_id, int) or channel is None:
                continue
            for item in decoder.decode(channel, channel_id, message.get("data"), 0.0):
                if isinstance(item, FeedEvents):
                    yield RecordedEvents(
                        record["c"], channel_id, record["t"], started_ns + record["t"], item.events
                    )
        elif "FEED_SETUP" in head or "FEED_CONFIG" in head:
            message = _json(text)
            if message is not None:
                _configure(channels, record["c"], message)


def _json(text: str) -> dict[str, Any] | None:
    try:
        message = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None
    return message if isinstance(message, dict) else None


def _configure(
    channels: dict[tuple[int, int], FeedChannel], conn: int, message: dict[str, Any]
) -> None:
    """Note the field order a FEED_SETUP asked for or a FEED_CONFIG announced."""
    channel_id = message.get("channel")
    if not isinstance(channel_id, int):
        return
    channel = channels.get((conn, channel_id))
    if channel is None:
        channel = FeedChannel(channel_id, "AUTO", state=ChannelState.OPENED)
        channels[conn, channel_id] = channel
    if message.get("type") == "FEED_SETUP":
        fields = message.get("acceptEventFields")
        if isinstance(fields, dict):
            for name, names in fields.items():
                channel.requested_fields[name] = tuple(names)
                channel.decoders.pop(name, None)
        return
    old = channel.config
    event_fields = dict(old.event_fields)
    announced = message.get("eventFields")
    if isinstance(announced, dict):
        for name, names in announced.items():
            event_fields[name] = tuple(names)
            channel.decoders.pop(name, None)
    data_format = message.get("dataFormat")
    channel.config = FeedConfig(
        data_format if isinstance(data_format, str) else old.data_format,
        old.aggregation_period,
        event_fields,
    )
