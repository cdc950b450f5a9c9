"""Depth of market: the handle ``feed.depth_of_market(...)`` returns, and the feed's record of them.

A :class:`DepthOfMarket` is a scoped handle on one DOM channel (protocol reference §5): entering
it asks the feed to open the channel (on the live connection, and on every connection after a
reconnect, which replays it like a feed subscription); each ``DOM_SNAPSHOT`` the server sends is
a whole book, so the handle keeps only the newest one (a slow reader never sees a backlog, just
the current book). An ERROR or CHANNEL_CLOSED on its channel fails this handle only, with
:class:`~trio_dxlink.ChannelError`; the feed's other channels go on.

The handle is a :class:`trio.abc.ReceiveChannel` of :class:`~trio_dxlink.DomSnapshot`, like a
feed subscription: ``receive``, ``receive_nowait``, ``async for`` and ``aclose``.
:class:`DomHandles` is the feed's side: the handles it holds, opened on each new connection.
"""

from __future__ import annotations

from collections.abc import Iterable
from types import TracebackType
from typing import TYPE_CHECKING, Protocol

import attrs
import trio

from ._dom_channel import DomConfig, DomSnapshot
from ._exceptions import SubscriptionClosedError

if TYPE_CHECKING:
    from typing_extensions import Self

    from ._runner import Live

__all__ = ["DepthOfMarket", "DomHandles", "DomHost", "DomStatistics"]


class DomHost(Protocol):
    """What serves a :class:`DepthOfMarket` (the feed): both calls are synchronous."""

    def attach_dom(self, handle: DepthOfMarket) -> None:
        """Start serving ``handle``: open its DOM channel (now if connected, else later)."""

    def detach_dom(self, handle: DepthOfMarket) -> None:
        """Stop serving ``handle`` (idempotent): cancel its channel."""


@attrs.frozen
class DomStatistics:
    """A depth-of-market handle's counters.

    Attributes:
        received: snapshots the server sent to this handle.
        delivered: snapshots handed to the reader.
        conflated: snapshots replaced by a newer one before the reader took them.
    """

    received: int
    delivered: int
    conflated: int


class DepthOfMarket(trio.abc.ReceiveChannel[DomSnapshot]):
    """The server's depth-of-market snapshots of one symbol; make it with
    :meth:`DXLinkFeed.depth_of_market <trio_dxlink.DXLinkFeed.depth_of_market>` and enter it.

    Attributes:
        symbol: the symbol.
        sources: the order sources the book is built from.
        depth: the levels per side asked for (0: as many as the server gives).
        aggregation_period: the seconds between snapshots asked for (``None``: the server's).
    """

    def __init__(
        self,
        host: DomHost,
        symbol: str,
        sources: Iterable[str],
        *,
        depth: int,
        aggregation_period: float | None,
    ) -> None:
        self._host = host
        self.symbol = symbol
        self.sources = tuple(sources)
        self.depth = depth
        self.aggregation_period = aggregation_period
        self._latest: DomSnapshot | None = None
        self._unread = False
        self._config: DomConfig | None = None
        self._attached = False
        self._closed = False
        self._error: BaseException | None = None
        self._lot = trio.lowlevel.ParkingLot()
        self._received = 0
        self._delivered = 0

    def __repr__(self) -> str:
        state = "closed" if self._closed else ("open" if self._attached else "new")
        return f"<DepthOfMarket {self.symbol} {','.join(self.sources)} depth={self.depth} {state}>"

    # --- scope ---

    async def __aenter__(self) -> Self:
        """Open the DOM channel (entering an open handle again just returns it)."""
        if self._closed:
            raise SubscriptionClosedError("a closed depth-of-market handle cannot be entered again")
        if not self._attached:
            self._attached = True
            self._host.attach_dom(self)
        await trio.lowlevel.checkpoint()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    async def aclose(self) -> None:
        """Close the handle (as :meth:`close`). Idempotent."""
        self.close()
        await trio.lowlevel.checkpoint()

    def close(self) -> None:
        """Cancel the DOM channel and wake any reader (it sees the end). Idempotent."""
        if self._attached:
            self._attached = False
            self._host.detach_dom(self)
        if not self._closed:
            self._closed = True
            self._lot.unpark_all()

    # --- reading ---

    @property
    def latest(self) -> DomSnapshot | None:
        """The newest book received, read or not (``None`` before the first); never waits."""
        return self._latest

    @property
    def config(self) -> DomConfig | None:
        """The channel's configuration as the server last reported it (DOM_CONFIG)."""
        return self._config

    @property
    def failed(self) -> bool:
        """Whether the handle has failed (reading raises its error)."""
        return self._error is not None

    async def receive(self) -> DomSnapshot:
        """The newest book not yet read (waits for one; older unread ones were replaced).

        Raises:
            SubscriptionClosedError: the handle was closed.
            ChannelError / ConnectionClosedError: the feed can no longer serve this handle.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        while not self._unread:
            self._raise_if_done()
            await self._lot.park()
        return self._take()

    def receive_nowait(self) -> DomSnapshot:
        """The newest unread book, if there is one.

        Raises:
            trio.WouldBlock: no unread book now.
            SubscriptionClosedError, ChannelError, ...: as :meth:`receive`.
        """
        if not self._unread:
            self._raise_if_done()
            raise trio.WouldBlock
        return self._take()

    async def __anext__(self) -> DomSnapshot:
        """The next book, as ``async for`` gets it (ends when the handle is closed)."""
        try:
            return await self.receive()
        except SubscriptionClosedError:
            if self._closed and self._error is None:
                raise StopAsyncIteration from None
            raise

    def statistics(self) -> DomStatistics:
        """The handle's counters."""
        conflated = self._received - self._delivered - (1 if self._unread else 0)
        return DomStatistics(self._received, self._delivered, conflated)

    # --- the feed's side (synchronous, never blocks) ---

    def _push(self, snapshot: DomSnapshot) -> None:
        if self._closed or self._error is not None:
            return
        self._received += 1
        self._latest = snapshot
        self._unread = True
        self._lot.unpark_all()

    def _configured(self, config: DomConfig) -> None:
        self._config = config

    def _fail(self, error: BaseException) -> None:
        """Fail this handle: the reader gets ``error`` once it has read the unread book."""
        if self._error is None:
            self._error = error
            self._host.detach_dom(self)
        self._lot.unpark_all()

    def _take(self) -> DomSnapshot:
        self._unread = False
        self._delivered += 1
        assert self._latest is not None
        return self._latest

    def _raise_if_done(self) -> None:
        if self._error is not None:
            raise self._error.with_traceback(None)
        if self._closed:
            raise SubscriptionClosedError(f"depth of market for {self.symbol} is closed")


class DomHandles:
    """The depth-of-market handles a feed serves; each is opened on every new connection."""

    def __init__(self) -> None:
        self._handles: dict[DepthOfMarket, None] = {}

    def __len__(self) -> int:
        return len(self._handles)

    def attach(self, handle: DepthOfMarket, live: Live | None) -> None:
        """Serve ``handle``: on ``live`` now, if that connection is usable."""
        self._handles[handle] = None
        if live is not None and live.usable():
            live.open_dom(handle)

    def detach(self, handle: DepthOfMarket, live: Live | None) -> None:
        """Stop serving ``handle`` (its channel on ``live`` is cancelled)."""
        if self._handles.pop(handle, False) is not False and live is not None and live.usable():
            live.close_dom(handle)

    def replay(self) -> list[DepthOfMarket]:
        """The handles a fresh connection opens channels for."""
        return list(self._handles)

    def fail_all(self, error: BaseException) -> None:
        """Fail every handle (the feed is closing)."""
        for handle in list(self._handles):
            handle._fail(error)
