"""The Redis Streams bridge: publish a feed's events to Redis, never stalling the feed.

``run_bridge`` subscribes to the event types and symbols asked for and publishes every event to
a Redis stream (the key naming and entry encoding are ``_redis_codec.py``'s), with ``XADD ...
MAXLEN ~ maxlen``, ``batch`` entries per pipeline.

The DXLink side never waits for Redis. One task per event type moves what its handle delivers
into the bridge's own buffer, synchronously; that buffer holds at most ``max_pending`` events
and, when it is full, drops the oldest (counted as ``dropped``). One writer task takes up to
``batch`` events at a time off it and writes them. When Redis is slow the buffer fills and old
events are dropped; when it is down (a write fails, or takes longer than ``write_timeout``) the
batch being written is dropped too (it may or may not have reached Redis; nothing is written
twice), and the writer reconnects with exponential backoff (counted as ``reconnects``) while
the buffer keeps the newest events. So the memory the bridge holds is bounded by
``max_pending`` events plus one batch, whatever Redis does.
"""

from __future__ import annotations

import collections
import logging
import sys
from collections.abc import Iterable, Sequence
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Any

import attrs
import trio

from ._buffers import Overflow
from ._redis_codec import DEFAULT_PREFIX, check_stream_per, encode_entry, stream_key
from ._subscription import Subscription
from ._util import collapse
from .events import Event

if TYPE_CHECKING:
    from ._client import DXLinkFeed
    from ._pool import DXLinkPool

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup

__all__ = ["BridgeStatistics", "RedisBridge", "run_bridge"]

log = logging.getLogger("trio_dxlink.bridge")


def import_coredis() -> Any:
    """The ``coredis`` module (the bridge's Redis client), or an ImportError saying how."""
    try:
        import coredis
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "the Redis bridge needs the 'coredis' package: pip install 'trio-dxlink[redis]'"
        ) from exc
    return coredis


def is_redis_failure(exc: BaseException) -> bool:
    """Whether ``exc`` (or every leaf of a group) is Redis being unreachable or failing."""
    coredis = import_coredis()
    if isinstance(exc, BaseExceptionGroup):
        return all(is_redis_failure(e) for e in exc.exceptions)
    return isinstance(exc, (coredis.exceptions.RedisError, OSError, trio.TooSlowError))


def describe_failure(exc: BaseException) -> str:
    """A Redis failure for the log: the one error inside a group, if there is one."""
    return repr(collapse(exc) if isinstance(exc, BaseExceptionGroup) else exc)


@attrs.frozen
class BridgeStatistics:
    """Counters of a running bridge.

    Attributes:
        received: events the feed delivered to the bridge.
        published: events written to Redis.
        dropped: events that were not written: pushed out of a full buffer, or in a batch
            whose write failed. ``received == published + dropped + pending`` but while a
            batch is being written.
        pending: events waiting to be written now.
        reconnects: times the writer reconnected to Redis after a failure.
        batches: pipelines written.
    """

    received: int
    published: int
    dropped: int
    pending: int
    reconnects: int
    batches: int


class RedisBridge:
    """A running bridge (what :func:`run_bridge` hands to ``task_status.started``)."""

    def __init__(
        self,
        redis_url: str,
        *,
        stream_per: str,
        prefix: str,
        maxlen: int | None,
        batch: int,
        max_pending: int,
        write_timeout: float,
        backoff: tuple[float, float],
    ) -> None:
        if batch < 1 or max_pending < 1:
            raise ValueError("batch and max_pending must be positive")
        if maxlen is not None and maxlen < 1:
            raise ValueError("maxlen must be positive (or None: no trimming)")
        self.redis_url = redis_url
        self.stream_per = check_stream_per(stream_per)
        self.prefix = prefix
        self.maxlen = maxlen
        self.batch = batch
        self.max_pending = max_pending
        self._write_timeout = write_timeout
        self._backoff = backoff
        self._pending: collections.deque[Event] = collections.deque()
        self._lot = trio.lowlevel.ParkingLot()
        self._handles: list[Subscription[Event]] = []
        self._published = 0
        self._dropped = 0
        self._reconnects = 0
        self._batches = 0

    def statistics(self) -> BridgeStatistics:
        """The bridge's counters now."""
        handles = [rx.statistics() for rx in self._handles]
        return BridgeStatistics(
            received=sum(h.received for h in handles),
            published=self._published,
            dropped=self._dropped + sum(h.dropped for h in handles),
            pending=len(self._pending) + sum(h.buffered for h in handles),
            reconnects=self._reconnects,
            batches=self._batches,
        )

    def offer(self, events: list[Event]) -> None:
        """Queue events for publishing (never blocks; drops the oldest past ``max_pending``)."""
        pending = self._pending
        pending.extend(events)
        excess = len(pending) - self.max_pending
        if excess > 0:
            self._dropped += excess
            for _ in range(excess):
                pending.popleft()
        self._lot.unpark_all()

    async def pump(self, rx: Subscription[Event]) -> None:
        """Move what an (entered) handle delivers into the buffer until cancelled."""
        if rx not in self._handles:
            self._handles.append(rx)
        async for events in rx.batches():
            self.offer(events)

    async def write_forever(self) -> None:
        """Write the buffer to Redis until cancelled, reconnecting after failures."""
        coredis = import_coredis()
        delay = self._backoff[0]
        while True:
            published_before = self._published
            try:
                async with coredis.Redis.from_url(self.redis_url) as client:
                    await self._write(client)
            except BaseException as exc:
                if not is_redis_failure(exc):
                    raise
                if self._published > published_before:  # it worked for a while: start over
                    delay = self._backoff[0]
                self._reconnects += 1
                log.warning(
                    "Redis write failed (%r); reconnecting in %.2f s", describe_failure(exc), delay
                )
                await trio.sleep(delay)
                delay = min(delay * 2, self._backoff[1])

    async def _write(self, client: Any) -> None:
        coredis = import_coredis()
        approximately = coredis.PureToken.APPROXIMATELY
        maxlen_token = coredis.PureToken.MAXLEN
        pending = self._pending
        while True:
            while not pending:
                await self._lot.park()
            events = [pending.popleft() for _ in range(min(self.batch, len(pending)))]
            try:
                with trio.fail_after(self._write_timeout):
                    async with client.pipeline(transaction=False) as pipe:
                        for event in events:
                            key = stream_key(
                                self.prefix, event.EVENT_TYPE, event.event_symbol, self.stream_per
                            )
                            if self.maxlen is None:
                                pipe.xadd(key, encode_entry(event))
                            else:
                                pipe.xadd(
                                    key,
                                    encode_entry(event),
                                    trim_strategy=maxlen_token,
                                    threshold=self.maxlen,
                                    trim_operator=approximately,
                                )
            except BaseException:
                self._dropped += len(events)
                raise
            self._published += len(events)
            self._batches += 1


async def run_bridge(
    feed: DXLinkFeed | DXLinkPool,
    event_types: type[Event] | Sequence[type[Event]],
    symbols: Iterable[str],
    redis_url: str,
    *,
    stream_per: str = "type",
    prefix: str = DEFAULT_PREFIX,
    maxlen: int | None = 100_000,
    batch: int = 500,
    max_pending: int = 100_000,
    write_timeout: float = 5.0,
    backoff: tuple[float, float] = (0.1, 5.0),
    task_status: trio.TaskStatus[RedisBridge] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Publish ``feed``'s events of ``event_types`` for ``symbols`` to Redis Streams, until
    cancelled.

    Host it in a nursery (``bridge = await nursery.start(run_bridge, feed, ...)``); the
    :class:`RedisBridge` it starts with has the :meth:`~RedisBridge.statistics`.

    Args:
        feed: an open feed or pool (``open_dxlink`` / ``open_dxlink_pool``).
        event_types: the event class, or several.
        symbols: the symbols to subscribe to, for every type.
        redis_url: ``redis://host:port/db`` (``rediss://`` for TLS).
        stream_per: ``"type"`` (one stream per event type, ``dxlink:Quote``) or ``"symbol"``
            (``dxlink:Quote:SPY``).
        prefix: the first part of every stream key.
        maxlen: each stream's approximate length bound (``XADD ... MAXLEN ~``); ``None``: no
            trimming.
        batch: most entries written in one pipeline.
        max_pending: most events buffered while Redis is slow or down; past it the oldest are
            dropped and counted.
        write_timeout: a pipeline taking longer than this is a failure (reconnect).
        backoff: the first and the longest wait between reconnection attempts, in seconds.

    Raises:
        ImportError: ``coredis`` is not installed (``pip install 'trio-dxlink[redis]'``).
    """
    import_coredis()
    types = [event_types] if isinstance(event_types, type) else list(event_types)
    wanted = list(symbols)
    if isinstance(symbols, str) or not wanted or not types:
        raise ValueError("run_bridge needs at least one event type and a list of symbols")
    bridge = RedisBridge(
        redis_url,
        stream_per=stream_per,
        prefix=prefix,
        maxlen=maxlen,
        batch=batch,
        max_pending=max_pending,
        write_timeout=write_timeout,
        backoff=backoff,
    )
    async with AsyncExitStack() as stack, trio.open_nursery() as nursery:
        for event_type in types:
            rx = feed.subscribe(
                event_type, wanted, overflow=Overflow.DROP_OLDEST, max_buffer=max_pending
            )
            bridge._handles.append(await stack.enter_async_context(rx))
            nursery.start_soon(bridge.pump, rx)
        nursery.start_soon(bridge.write_forever)
        task_status.started(bridge)
