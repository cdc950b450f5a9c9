"""Reading what the Redis bridge publishes, through the feed's typed ``subscribe`` API.

``open_redis_feed(url)`` gives a :class:`RedisFeed`; ``feed.subscribe(Quote, ["SPY"])`` returns
the same :class:`~trio_dxlink.Subscription` handle a DXLink feed does (the feed is its
:class:`~trio_dxlink.SubscriptionHost`), filled by one reader task that ``XREAD``\\ s, blocking,
the streams the handles need. A stream is read from what is published after the reader first
looked at it (as ``XREAD ... $`` would); :meth:`RedisFeed.wait_subscribed` waits for that, for
every handle attached so far. A lost Redis connection is retried with backoff; handles created
with ``notify_gaps=True`` then see a :class:`~trio_dxlink.DataGapError`.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import attrs
import trio

from ._bridge import describe_failure, import_coredis, is_redis_failure
from ._buffers import Overflow
from ._exceptions import ConnectionClosedError, RemoteProtocolError
from ._redis_codec import DEFAULT_PREFIX, check_stream_per, decode_entry, stream_key
from ._subscription import DEFAULT_MAX_BUFFER, Subscription
from .events import Event

__all__ = ["RedisFeed", "RedisFeedStatistics", "open_redis_feed"]

log = logging.getLogger("trio_dxlink.redis_feed")

E = TypeVar("E", bound=Event)


@attrs.frozen
class RedisFeedStatistics:
    """Counters of a :class:`RedisFeed`.

    Attributes:
        received: stream entries read.
        skipped: entries that were not valid events (logged and skipped).
        reconnects: times the reader reconnected to Redis after a failure.
    """

    received: int
    skipped: int
    reconnects: int


class RedisFeed:
    """Events the Redis bridge publishes, with the feed's ``subscribe`` API.

    Create it with :func:`open_redis_feed`.
    """

    def __init__(self, *, prefix: str, stream_per: str, block_ms: int, count: int) -> None:
        self.prefix = prefix
        self.stream_per = check_stream_per(stream_per)
        self._block_ms = block_ms
        self._count = count
        self._handles: dict[Subscription[Any], None] = {}
        self._positions: dict[str, str] = {}  # stream key -> last ID read
        self._changed = trio.lowlevel.ParkingLot()
        self._generation = 0  # bumped by every change to what is wanted
        self._synced = 0  # the generation the reader has fixed start positions for
        self._synced_lot = trio.lowlevel.ParkingLot()
        self._closed = False
        self._received = 0
        self._skipped = 0
        self._reconnects = 0

    # --- the public API ---

    def subscribe(
        self,
        event_type: type[E],
        symbols: Iterable[str],
        *,
        overflow: Overflow | None = None,
        max_buffer: int = DEFAULT_MAX_BUFFER,
        notify_gaps: bool = False,
    ) -> Subscription[E]:
        """A handle for ``event_type`` events of ``symbols`` from Redis; enter it to start.

        As :meth:`DXLinkFeed.subscribe` (without history or order sources).
        """
        return Subscription(
            self,
            event_type,
            symbols,
            from_time=None,
            source=None,
            overflow=overflow,
            max_buffer=max_buffer,
            notify_gaps=notify_gaps,
        )

    async def wait_subscribed(self) -> None:
        """Wait until every handle attached so far is being read: whatever the bridge
        publishes for them after this returns is delivered."""
        wanted = self._generation
        while self._synced < wanted and not self._closed:
            await self._synced_lot.park()
        await trio.lowlevel.checkpoint()

    def statistics(self) -> RedisFeedStatistics:
        """The reader's counters."""
        return RedisFeedStatistics(
            received=self._received, skipped=self._skipped, reconnects=self._reconnects
        )

    # --- SubscriptionHost ---

    def attach(self, handle: Subscription[Any]) -> None:
        """Start serving ``handle`` (see :class:`~trio_dxlink.SubscriptionHost`)."""
        if self._closed:
            raise ConnectionClosedError("the Redis feed is closed")
        self._handles[handle] = None
        self._changed_now()

    def detach(self, handle: Subscription[Any]) -> None:
        """Stop serving ``handle``. Idempotent."""
        if self._handles.pop(handle, 0) is None:
            self._changed_now()

    def add_symbols(self, handle: Subscription[Any], symbols: list[str]) -> None:
        """``handle`` wants these symbols too."""
        self._changed_now()

    def remove_symbols(self, handle: Subscription[Any], symbols: list[str]) -> None:
        """``handle`` no longer wants these symbols."""
        self._changed_now()

    # --- the reader ---

    def _changed_now(self) -> None:
        self._generation += 1
        self._changed.unpark_all()

    def _wanted(self) -> dict[str, None]:
        keys: dict[str, None] = {}
        for handle in self._handles:
            name = handle.event_type.EVENT_TYPE
            if self.stream_per == "type":
                keys[stream_key(self.prefix, name, "", "type")] = None
            else:
                for symbol in handle.symbols:
                    keys[stream_key(self.prefix, name, symbol, "symbol")] = None
        return keys

    async def run(self, url: str, backoff: tuple[float, float]) -> None:
        """Read until cancelled, reconnecting after failures."""
        coredis = import_coredis()
        delay = backoff[0]
        while True:
            try:
                async with coredis.Redis.from_url(url) as client:
                    await self._read(client)
            except BaseException as exc:
                if not is_redis_failure(exc):
                    raise
                self._reconnects += 1
                log.warning(
                    "Redis read failed (%r); reconnecting in %.2f s", describe_failure(exc), delay
                )
                for handle in list(self._handles):
                    handle._mark_gap()
                await trio.sleep(delay)
                delay = min(delay * 2, backoff[1])

    async def _read(self, client: Any) -> None:
        while True:
            generation = self._generation
            wanted = self._wanted()
            for key in list(self._positions):
                if key not in wanted:
                    del self._positions[key]
            for key in wanted:
                if key not in self._positions:
                    last = await client.xrevrange(key, "+", "-", count=1)
                    self._positions[key] = last[0].identifier.decode() if last else "0-0"
            self._synced = generation
            self._synced_lot.unpark_all()
            if not wanted:
                await self._changed.park()
                continue
            reply = await client.xread(
                dict(self._positions), count=self._count, block=self._block_ms
            )
            if reply:
                self._deliver(reply)

    def _deliver(self, reply: dict[Any, Any]) -> None:
        routed: dict[Subscription[Any], list[Event]] = {}
        for raw_key, entries in reply.items():
            key = raw_key.decode() if isinstance(raw_key, bytes) else raw_key
            if key not in self._positions:
                continue
            self._positions[key] = entries[-1].identifier.decode()
            self._received += len(entries)
            for entry in entries:
                try:
                    event = decode_entry(entry.field_values)
                except RemoteProtocolError as exc:
                    self._skipped += 1
                    log.warning("skipped an entry of %s: %s", key, exc)
                    continue
                for handle in self._handles:
                    if type(event) is handle.event_type and event.event_symbol in handle._symbols:
                        routed.setdefault(handle, []).append(event)
        for handle, events in routed.items():
            handle._push(events)

    def _close(self) -> None:
        self._closed = True
        self._synced_lot.unpark_all()
        for handle in list(self._handles):
            handle._fail(ConnectionClosedError("the Redis feed is closed"))


@asynccontextmanager
async def open_redis_feed(
    url: str,
    *,
    prefix: str = DEFAULT_PREFIX,
    stream_per: str = "type",
    block_ms: int = 1000,
    count: int = 1000,
    backoff: tuple[float, float] = (0.1, 5.0),
) -> AsyncIterator[RedisFeed]:
    """Read the events a Redis bridge (:func:`run_bridge`) publishes, for the block's duration.

    Args:
        url: the Redis server, ``redis://host:port/db``.
        prefix, stream_per: as the bridge was run with (they name the streams to read).
        block_ms: how long one ``XREAD`` blocks; new handles are picked up between reads.
        count: most entries one ``XREAD`` returns per stream.
        backoff: the first and the longest wait between reconnection attempts, in seconds.

    Raises:
        ImportError: ``coredis`` is not installed (``pip install 'trio-dxlink[redis]'``).
    """
    import_coredis()
    if block_ms < 1 or count < 1:
        raise ValueError("block_ms and count must be positive")
    feed = RedisFeed(prefix=prefix, stream_per=stream_per, block_ms=block_ms, count=count)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(feed.run, url, backoff)
            try:
                yield feed
            finally:
                nursery.cancel_scope.cancel()
    finally:
        feed._close()
