"""The feed's public state and counters, and the check every subscribing call starts with."""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING

import attrs

from ._channel_key import ChannelKey, subscription_channel
from ._history import history_start
from .events import Event, event_class

if TYPE_CHECKING:
    import datetime as dt
    from collections.abc import Iterable

__all__ = ["FeedState", "FeedStatistics", "check_event_type", "check_subscription"]


class FeedState(enum.Enum):
    """Where a feed's connection is."""

    CONNECTING = "connecting"
    CONNECTED = "connected"
    RECONNECTING = "reconnecting"
    CLOSED = "closed"


@attrs.frozen
class FeedStatistics:
    """A snapshot of a feed's state and counters.

    Attributes:
        state: the connection state now.
        reason: why the last connection was lost (``None`` if it never was).
        reconnects: connections established after the first.
        connection_losses: connections lost.
        messages_received / events_received: totals over all connections.
        events_unrouted: events for symbols no handle wanted (counted, not delivered).
        malformed_messages: frames that were not valid JSON messages, or whose data was (partly)
            undecodable; what could be decoded was delivered, the rest skipped.
        events_skipped: COMPACT rows and FULL objects skipped because they could not be decoded.
        last_message_time: ``trio.current_time()`` of the last frame received, if any.
        subscriptions: wire subscriptions currently wanted (history requests included).
        history_in_flight: history requests sent and waiting for the end of their snapshot.
        history_waiting: history requests waiting for their turn (see ``max_history_requests``).
        refusals: subscriptions the server refused at a limit (each failed its request).
    """

    state: FeedState
    reason: BaseException | None
    reconnects: int
    connection_losses: int
    messages_received: int
    events_received: int
    events_unrouted: int
    malformed_messages: int
    events_skipped: int
    last_message_time: float | None
    subscriptions: int
    history_in_flight: int = 0
    history_waiting: int = 0
    refusals: int = 0


def check_event_type(event_type: object) -> None:
    """``event_type`` must be an event class the codec knows (before any state changes)."""
    if not (isinstance(event_type, type) and issubclass(event_type, Event)):
        raise TypeError(f"event_type must be an event class, got {event_type!r}")
    name = getattr(event_type, "EVENT_TYPE", None)
    try:
        known = event_class(name) if isinstance(name, str) else None
    except KeyError:
        known = None
    if known is not event_type:
        raise TypeError(
            f"{event_type.__name__} is not a registered event type (a subclass of an event"
            " class is not one by itself; declare it with trio_dxlink.events.event_type)"
        )


def check_subscription(
    event_type: type[Event],
    from_time: dt.datetime | int | None,
    source: str | None,
    fields: Iterable[str] | None = None,
    aggregation_period: float | None = None,
) -> tuple[int | None, ChannelKey]:
    """``subscribe``'s argument rules, for a feed and a pool alike (before any state changes).

    Returns ``from_time`` in epoch ms (``None``: no history) and the FEED channel the
    subscription travels on (:func:`~trio_dxlink._channel_key.subscription_channel` holds the
    rules for ``source``, ``fields`` and ``aggregation_period``).

    Raises:
        TypeError: ``event_type`` is not a registered event class.
        ValueError: an option the event type does not take, a bad field list or period, or a
            bad ``from_time``.
    """
    check_event_type(event_type)
    key = subscription_channel(
        event_type,
        history=from_time is not None,
        source=source,
        fields=fields,
        aggregation_period=aggregation_period,
    )
    start = None if from_time is None else history_start(from_time, "from_time")
    return start, key
