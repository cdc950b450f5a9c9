"""History lanes: every request for history gets a wire subscription of its own (pure, no I/O).

A wire subscription is identified by (type, symbol) on its channel, and re-adding it with
another ``fromTime`` replaces it and makes the server send a new snapshot to everyone on it.
So requests that want history (``history()``, ``time_series()``, ``subscribe(from_time=...)``)
never share one. They are placed on *lanes*: lane ``n`` is the ``n``-th FEED channel opened
with ``contract: "HISTORY"`` (the contract that returns history on tastytrade, reference §12),
and a request goes on the first lane where its (type, symbol) is free. Events that arrive on
a lane go to the one request there with that symbol, under either spelling of a candle symbol
(servers echo the normalised form).

Pacing (§12: a server refuses more than about 20 snapshots waiting at once): at most
``max_in_flight`` requests are *in flight*, sent and waiting for the end of their snapshot
(``SNAPSHOT_END`` or ``SNAPSHOT_SNIP``); the rest wait their turn in order. A refusal (the
server's ERROR names no symbol) fails the newest request in flight that has had no data, and
lowers ``max_in_flight`` to what the server accepted.

A connection that ends takes every lane with it: each placed request goes back to the front
of the queue, and the next connection places them again, each with its own ``fromTime``: the
original one, or for a request that ``resumes`` and had completed its snapshot, the time of the
last event it got (so a plain handle gets what it missed, not the whole history again).

Nothing here knows about trio or connections; the feed sends the :class:`LaneAction` lists.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Sequence
from typing import Any, NamedTuple

from ._messages import SubscriptionEntry
from ._router import aliases
from .events import Event, EventFlag, event_class

__all__ = ["HistoryLanes", "LaneAction", "LaneRequest", "LaneState"]

_SNAPSHOT_ENDS = int(EventFlag.SNAPSHOT_END | EventFlag.SNAPSHOT_SNIP)


class LaneState(enum.Enum):
    """Where a request is."""

    WAITING = "waiting"  # queued for a slot (or for a connection)
    IN_FLIGHT = "in flight"  # sent; its snapshot has not ended
    LIVE = "live"  # its snapshot ended; live updates flow
    GONE = "gone"  # removed or refused


class LaneAction(NamedTuple):
    """Send ``entry`` as an addition (``add``) or a removal on lane ``lane``."""

    lane: int
    add: bool
    entry: SubscriptionEntry


class LaneRequest:
    """One (event type, symbol) wanted from ``from_time`` by ``owner`` (any object).

    ``resume``: after a reconnect, ask from the last event received instead of ``from_time``
    (once the snapshot had ended), for raw handles that already have the older events.
    """

    def __init__(
        self, owner: Any, event_type: str, symbol: str, from_time: int, *, resume: bool = False
    ) -> None:
        self.owner = owner
        self.event_type = event_type
        self.symbol = symbol
        self.from_time = from_time
        self.resume = resume
        self.keys = [(event_type, s) for s in aliases(event_class(event_type), symbol)]
        self.state = LaneState.WAITING
        self.lane: int | None = None
        self.last_time: int | None = None  # the newest event time received
        self.completed = False  # a snapshot ended at least once
        self.got_data = False  # something arrived on the current connection

    def __repr__(self) -> str:
        return f"<LaneRequest {self.event_type} {self.symbol!r} {self.state.value}>"

    def entry(self) -> SubscriptionEntry:
        """What to ask the server for now."""
        since = self.from_time
        if self.resume and self.completed and self.last_time is not None:
            since = max(since, self.last_time)
        return SubscriptionEntry(self.event_type, self.symbol, since)


class HistoryLanes:
    """The requests for history: their lanes, their turn, and where their events go."""

    def __init__(self, max_in_flight: int = 20) -> None:
        if max_in_flight < 1:
            raise ValueError(f"max_in_flight must be at least 1, got {max_in_flight!r}")
        self.max_in_flight = max_in_flight
        self._lanes: list[dict[tuple[str, str], LaneRequest]] = []
        self._queue: deque[LaneRequest] = deque()
        self._in_flight: dict[LaneRequest, None] = {}  # in placement order
        self._placed: dict[LaneRequest, None] = {}
        self._connected = False

    def __len__(self) -> int:
        """Requests held (placed or waiting)."""
        return len(self._placed) + len(self._queue)

    @property
    def in_flight(self) -> int:
        """Requests sent and waiting for the end of their snapshot."""
        return len(self._in_flight)

    @property
    def waiting(self) -> int:
        """Requests waiting for their turn."""
        return len(self._queue)

    # --- requests come and go ---

    def add(self, request: LaneRequest) -> list[LaneAction]:
        """Queue ``request``; returns what to send now."""
        self._queue.append(request)
        return self._fill()

    def remove(self, request: LaneRequest) -> list[LaneAction]:
        """``request`` is no longer wanted; returns what to send now."""
        if request.state is LaneState.GONE:
            return []
        request.state = LaneState.GONE
        if request in self._placed:
            actions = [self._unplace(request)]
            return actions + self._fill()
        if request in self._queue:
            self._queue.remove(request)
        return []

    def refuse(self, lane: int | None) -> tuple[LaneRequest | None, list[LaneAction]]:
        """The server refused a subscription on ``lane`` (``None``: it did not say where).

        The request it was about (the newest in flight there that has had no data, else the
        newest in flight there) is removed and returned, with what to send now; ``None`` if
        no request fits. ``max_in_flight`` drops to the number still in flight: the server's
        limit is evidently lower, and sending nothing new until its refusals stop keeps them
        matched to the requests they were about.
        """
        candidates = [r for r in self._in_flight if lane is None or r.lane == lane]
        if not candidates:
            return None, []
        silent = [r for r in candidates if not r.got_data]
        request = (silent or candidates)[-1]
        # The server's limit is below ours: lower ours to what it accepted, so no new request
        # goes out while the rest of its refusals arrive (they are matched the same way).
        self.max_in_flight = max(1, min(self.max_in_flight, len(self._in_flight) - 1))
        return request, self.remove(request)

    def requests(self) -> list[LaneRequest]:
        """Every request held, placed ones first."""
        return [*self._placed, *self._queue]

    def on_lane(self, lane: int) -> list[LaneRequest]:
        """The requests placed on ``lane``."""
        return [r for r in self._placed if r.lane == lane]

    # --- connections ---

    def connected(self) -> list[LaneAction]:
        """A connection is up (its lanes are empty); returns what to send on it."""
        self._connected = True
        return self._fill()

    def connection_lost(self) -> None:
        """The connection ended: every placed request goes back to the front of the queue."""
        self._connected = False
        placed = list(self._placed)
        self._placed.clear()
        self._in_flight.clear()
        self._lanes.clear()
        for request in reversed(placed):
            request.state = LaneState.WAITING
            request.lane = None
            request.got_data = False
            self._queue.appendleft(request)

    # --- events ---

    def dispatch(
        self, lane: int, event_type: str, events: Sequence[Event]
    ) -> tuple[list[tuple[LaneRequest, list[Event]]], list[LaneAction]]:
        """Each request's share of events that arrived on ``lane``, in order, and what to send
        now (requests whose turn came as snapshots ended). Events no request wants are left
        out (see the returned shares)."""
        table = self._lanes[lane] if lane < len(self._lanes) else {}
        shares: dict[LaneRequest, list[Event]] = {}
        ended = False
        for event in events:
            request = table.get((event_type, event.event_symbol))
            if request is None:
                continue
            share = shares.get(request)
            if share is None:
                shares[request] = share = []
                request.got_data = True
            share.append(event)
            time = getattr(event, "time", None)
            if time.__class__ is int and (request.last_time is None or time > request.last_time):
                request.last_time = time
            if getattr(event, "event_flags", 0) & _SNAPSHOT_ENDS:
                request.completed = True
                if request.state is LaneState.IN_FLIGHT:
                    request.state = LaneState.LIVE
                    self._in_flight.pop(request, None)
                    ended = True
        return list(shares.items()), (self._fill() if ended else [])

    # --- internals ---

    def _fill(self) -> list[LaneAction]:
        actions: list[LaneAction] = []
        if not self._connected:
            return actions
        while self._queue and len(self._in_flight) < self.max_in_flight:
            request = self._queue.popleft()
            lane = self._free_lane(request)
            for key in request.keys:
                self._lanes[lane][key] = request
            request.lane = lane
            request.state = LaneState.IN_FLIGHT
            self._placed[request] = None
            self._in_flight[request] = None
            actions.append(LaneAction(lane, True, request.entry()))
        return actions

    def _free_lane(self, request: LaneRequest) -> int:
        for n, table in enumerate(self._lanes):
            if not any(key in table for key in request.keys):
                return n
        self._lanes.append({})
        return len(self._lanes) - 1

    def _unplace(self, request: LaneRequest) -> LaneAction:
        lane = request.lane
        assert lane is not None
        table = self._lanes[lane]
        for key in request.keys:
            if table.get(key) is request:
                del table[key]
        self._placed.pop(request, None)
        self._in_flight.pop(request, None)
        request.lane = None
        return LaneAction(lane, False, SubscriptionEntry(request.event_type, request.symbol))
