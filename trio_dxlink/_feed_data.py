"""A client's FEED channels, how FEED_DATA on them is decoded, and how subscriptions are split.

:class:`FeedDataDecoder` turns the ``data`` array of a FEED_DATA message into
:class:`~trio_dxlink._client_events.FeedEvents`, by the layout in force on the channel
(:meth:`FeedChannel.layout`): COMPACT rows through a row decoder compiled once per (channel, event
type) and FULL objects one by one. Bad data is skipped, never fatal: what decodes from a frame is
still returned; a COMPACT value array that fails is salvaged row by row; every skip is counted in
:class:`Statistics`, logged at a bounded rate and reported as a
:class:`~trio_dxlink._client_events.DataSkipped` event in stream order.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Sequence
from typing import Any

import attrs
import orjson

from . import _messages as m
from ._client_events import ConnectionEvent, DataSkipped, FeedConfig, FeedEvents
from ._codec import RowDecoder, compile_row_decoder, decode_full
from ._exceptions import LocalProtocolError, RemoteProtocolError
from ._util import LogLimiter, describe
from .events import Event, event_class

__all__ = [
    "DEFAULT_SUBSCRIPTION_BUDGET",
    "ChannelState",
    "FeedChannel",
    "FeedDataDecoder",
    "Statistics",
    "chunk_subscription",
]

log = logging.getLogger("trio_dxlink")


DEFAULT_SUBSCRIPTION_BUDGET = 8192
"""Largest FEED_SUBSCRIPTION frame, in bytes, before it is split (the JS client's figure)."""


def chunk_subscription(
    channel: int,
    *,
    add: Sequence[m.SubscriptionEntry] = (),
    remove: Sequence[m.SubscriptionEntry] = (),
    reset: bool = False,
    budget: int = DEFAULT_SUBSCRIPTION_BUDGET,
) -> list[m.FeedSubscription]:
    """Split a subscription change into FEED_SUBSCRIPTION messages each under ``budget`` bytes.

    ``reset`` goes on the first message only; removes go before adds, as the protocol orders
    them within a message. An empty change with ``reset`` gives one reset-only message.
    """
    envelope = len(m.encode(m.FeedSubscription(channel, add=[], remove=[], reset=reset or None)))
    out: list[m.FeedSubscription] = []
    cur_add: list[m.SubscriptionEntry] = []
    cur_remove: list[m.SubscriptionEntry] = []
    size = envelope
    first = True

    def flush() -> None:
        nonlocal cur_add, cur_remove, size, first
        out.append(
            m.FeedSubscription(
                channel,
                add=cur_add or None,
                remove=cur_remove or None,
                reset=True if (reset and first) else None,
            )
        )
        first = False
        cur_add, cur_remove, size = [], [], envelope

    tagged = [(True, e) for e in remove] + [(False, e) for e in add]
    for is_remove, entry in tagged:
        item = len(orjson.dumps(m.to_wire_entry(entry))) + 1
        if envelope + item > budget:
            raise LocalProtocolError(
                f"subscription entry {entry.symbol!r} alone exceeds the {budget}-byte budget"
            )
        if size + item > budget:
            flush()
        (cur_remove if is_remove else cur_add).append(entry)
        size += item
    if cur_add or cur_remove or (reset and first):
        flush()
    return out


class ChannelState(enum.Enum):
    """Where one FEED channel is in its life."""

    PENDING = "pending"  #: created, CHANNEL_REQUEST not yet sent (waiting for authorization)
    REQUESTED = "requested"  #: CHANNEL_REQUEST sent
    OPENED = "opened"  #: CHANNEL_OPENED received
    CLOSED = "closed"  #: cancelled by us or closed by the server


@attrs.define(eq=False)
class FeedChannel:
    """One FEED channel: its state, what it asked for, what the server said, what it holds."""

    id: int
    contract: str
    state: ChannelState = ChannelState.PENDING
    accept_data_format: str = "COMPACT"
    accept_aggregation_period: float | None = None
    requested_fields: dict[str, tuple[str, ...]] = attrs.field(factory=dict)
    config: FeedConfig = attrs.field(factory=FeedConfig)
    subscriptions: dict[tuple[str, str, str | None], m.SubscriptionEntry] = attrs.field(
        factory=dict
    )
    decoders: dict[str, tuple[RowDecoder, int, int]] = attrs.field(factory=dict)
    """Per event type: the row decoder, the eventSymbol column and the row width."""

    def layout(self, event_type: str) -> tuple[str, ...] | None:
        """The COMPACT field order for ``event_type``: the server's, else what we asked for."""
        return self.config.event_fields.get(event_type) or self.requested_fields.get(event_type)


@attrs.define
class Statistics:
    """Counters a connection keeps; every skip it makes is counted here and logged."""

    messages_received: int = 0
    events_received: int = 0
    unknown_messages: int = 0
    skipped_unknown_channel: int = 0
    skipped_unknown_event_type: int = 0
    malformed_messages: int = 0
    """Frames that were not valid JSON messages, or whose data was (partly) undecodable."""
    events_skipped: int = 0
    """COMPACT rows and FULL objects skipped because they could not be decoded."""


class FeedDataDecoder:
    """Decodes the FEED_DATA of a connection's channels; counts and logs what it skips.

    Args:
        statistics: the connection's counters, updated in place.
    """

    def __init__(self, statistics: Statistics) -> None:
        self.statistics = statistics
        self._now = 0.0  # the time of the frame being decoded (for rate-limited logs)
        self._skip_log = LogLimiter(log)

    def decode(
        self, channel: FeedChannel | None, channel_id: int, data: Any, now: float
    ) -> list[ConnectionEvent]:
        """The events in one FEED_DATA ``data`` value that arrived on ``channel_id``
        (``channel``: that channel, when this connection has it)."""
        self._now = now
        if data.__class__ is not list:
            self.statistics.malformed_messages += 1
            reason = f"FEED_DATA without a 'data' array: {describe(data)}"
            return [self.skipped(channel_id, None, 0, reason)]
        if channel is None or channel.state is not ChannelState.OPENED:
            self.statistics.skipped_unknown_channel += 1
            self._skip_log.warning(
                now, "skipping FEED_DATA for channel %d, which is not open", channel_id
            )
            return []
        if not data:
            return []
        if data[0].__class__ is str:
            return self._decode_compact(channel, data)
        return self._decode_full(channel, data)

    def skipped(
        self,
        channel: int | None,
        event_type: str | None,
        events: int,
        reason: str,
        now: float | None = None,
    ) -> DataSkipped:
        """Count, log (rate-limited) and report data that could not be decoded."""
        if now is not None:
            self._now = now
        self.statistics.events_skipped += events
        where = f" on channel {channel}" if channel is not None else ""
        self._skip_log.warning(self._now, "skipping malformed data%s: %s", where, reason)
        return DataSkipped(channel, event_type, events, reason)

    def _decode_compact(self, channel: FeedChannel, data: list[Any]) -> list[ConnectionEvent]:
        out: list[ConnectionEvent] = []
        malformed = False
        for i in range(0, len(data), 2):
            name = data[i]
            values = data[i + 1] if i + 1 < len(data) else None
            if name.__class__ is not str or values.__class__ is not list:
                # The pairs are out of step from here on: the rest of the frame is unreadable.
                malformed = True
                out.append(
                    self.skipped(
                        channel.id,
                        name if name.__class__ is str else None,
                        0,
                        f"COMPACT FEED_DATA item {i} is not a type name followed by a value"
                        f" array: {describe(data[i : i + 2])}",
                    )
                )
                break
            plan = channel.decoders.get(name)
            if plan is None:
                try:
                    plan = self._decoder(channel, name)
                except RemoteProtocolError as exc:  # an unusable field list
                    malformed = True
                    width = len(channel.layout(name) or ()) or 1
                    rows = -(-len(values) // width)
                    out.append(self.skipped(channel.id, name, rows, str(exc)))
                    continue
                if plan is None:
                    continue
            decoder, symbol_column, width = plan
            try:
                events = decoder(values)
            except RemoteProtocolError as exc:
                malformed = True
                events = self._salvage(channel, name, plan, values, str(exc), out)
                symbols = [e.event_symbol for e in events]
            else:
                # The decoder checked every symbol, so the column is the events' symbols.
                symbols = values[symbol_column::width]
            if events:
                self.statistics.events_received += len(events)
                out.append(FeedEvents(channel.id, type(events[0]), events, symbols))
        if malformed:
            self.statistics.malformed_messages += 1
        return out

    def _salvage(
        self,
        channel: FeedChannel,
        name: str,
        plan: tuple[RowDecoder, int, int],
        values: list[Any],
        reason: str,
        out: list[ConnectionEvent],
    ) -> list[Event]:
        """The rows of a value array that decode, one at a time; the others are skipped.

        A ragged array (not a whole number of rows) cannot be split into rows, so all of it
        is skipped. The skip is reported (in ``out``) before the rows that decoded.
        """
        decoder, _, width = plan
        rows = len(values) // width
        if len(values) % width:
            out.append(self.skipped(channel.id, name, -(-len(values) // width), reason))
            return []
        events: list[Event] = []
        bad = 0
        for start in range(0, rows * width, width):
            try:
                events.extend(decoder(values[start : start + width]))
            except RemoteProtocolError:
                bad += 1
        out.append(self.skipped(channel.id, name, bad, f"{bad} of {rows} rows: {reason}"))
        return events

    def _decoder(self, channel: FeedChannel, name: str) -> tuple[RowDecoder, int, int] | None:
        try:
            cls = event_class(name)
        except KeyError:
            self.statistics.skipped_unknown_event_type += 1
            self._skip_log.warning(
                self._now, "skipping FEED_DATA of unknown event type %s", describe(name)
            )
            return None
        layout = channel.layout(name)
        if layout is None:
            self.statistics.skipped_unknown_event_type += 1
            self._skip_log.warning(
                self._now,
                "skipping COMPACT %s data on channel %d: no field list was requested or reported",
                name,
                channel.id,
            )
            return None
        plan = (compile_row_decoder(cls, layout), layout.index("eventSymbol"), len(layout))
        channel.decoders[name] = plan
        return plan

    def _decode_full(self, channel: FeedChannel, data: list[Any]) -> list[ConnectionEvent]:
        out: list[ConnectionEvent] = []  # one group per run of same-type events, in order
        last: FeedEvents | None = None
        malformed = False
        for obj in data:
            if obj.__class__ is not dict:
                reason = f"FULL FEED_DATA holds a non-object {describe(obj)}"
                out.append(self.skipped(channel.id, None, 1, reason))
                malformed, last = True, None
                continue
            name = obj.get("eventType")
            if name.__class__ is not str:
                reason = f"FULL event without an eventType: {describe(obj)}"
                out.append(self.skipped(channel.id, None, 1, reason))
                malformed, last = True, None
                continue
            try:
                cls = event_class(name)
            except KeyError:
                self.statistics.skipped_unknown_event_type += 1
                self._skip_log.warning(
                    self._now, "skipping FEED_DATA of unknown event type %s", describe(name)
                )
                continue
            try:
                event = decode_full(cls, obj)
            except RemoteProtocolError as exc:
                out.append(self.skipped(channel.id, name, 1, str(exc)))
                malformed, last = True, None
                continue
            if last is not None and last.event_type is cls:
                last.events.append(event)
                last.symbols.append(event.event_symbol)
            else:
                last = FeedEvents(channel.id, cls, [event], [event.event_symbol])
                out.append(last)
            self.statistics.events_received += 1
        if malformed:
            self.statistics.malformed_messages += 1
        return out
