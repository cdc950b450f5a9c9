"""Reading single values off a feed without managing a handle: :class:`LatestReads`, shared by
:class:`~trio_dxlink.DXLinkFeed` and :class:`~trio_dxlink.DXLinkPool` (and any host with a
:class:`~trio_dxlink._router.Router` and a ``subscribe``)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, TypeVar, overload

import trio

from ._buffers import Overflow
from ._feed_state import check_event_type
from .events import Event

if TYPE_CHECKING:
    from ._router import Router
    from ._subscription import Subscription

__all__ = ["LatestReads"]

E = TypeVar("E", bound=Event)

_SymbolCollection = list[str] | tuple[str, ...] | set[str] | frozenset[str]


class LatestReads:
    """``get_event`` and ``latest``, answered from the router's latest values."""

    _router: Router

    if TYPE_CHECKING:

        def subscribe(
            self, event_type: type[E], symbols: Iterable[str], *, overflow: Overflow | None = None
        ) -> Subscription[E]: ...

    @overload
    async def get_event(self, event_type: type[E], symbol: str) -> E: ...

    @overload
    async def get_event(self, event_type: type[E], symbol: _SymbolCollection) -> dict[str, E]: ...

    async def get_event(
        self, event_type: type[E], symbol: str | _SymbolCollection
    ) -> E | dict[str, E]:
        """The latest known ``event_type`` event for ``symbol``, or the next one to arrive.

        Given several symbols (a list), it returns a dict from each symbol to its event, once
        every one of them has one. Bound the wait with :func:`trio.move_on_after` /
        :func:`trio.fail_after`. (:meth:`latest` answers without waiting.)
        """
        if not isinstance(symbol, str):
            return await self._get_events(event_type, symbol)
        last = self._router.latest(event_type.EVENT_TYPE, symbol)
        if last is not None:
            await trio.lowlevel.checkpoint()
            return last  # type: ignore[return-value]
        async with self.subscribe(event_type, [symbol], overflow=Overflow.LATEST) as rx:
            return await rx.receive()

    async def _get_events(self, event_type: type[E], symbols: Iterable[str]) -> dict[str, E]:
        wanted = list(dict.fromkeys(symbols))
        found: dict[str, E] = {}
        for name in wanted:
            last = self.latest(event_type, name)
            if last is not None:
                found[name] = last
        missing = [name for name in wanted if name not in found]
        if not missing:
            await trio.lowlevel.checkpoint()
        else:
            async with self.subscribe(event_type, missing, overflow=Overflow.LATEST) as rx:
                async for event in rx:
                    if event.event_symbol in missing:
                        found.setdefault(event.event_symbol, event)
                    if len(found) == len(wanted):
                        break
        return {name: found[name] for name in wanted}

    def latest(self, event_type: type[E], symbol: str) -> E | None:
        """The latest ``event_type`` event received for ``symbol``, or ``None`` if there is none.

        Never waits. Events are kept for symbols some handle is subscribed to (a symbol nobody
        subscribes to any more is forgotten).
        """
        check_event_type(event_type)
        return self._router.latest(event_type.EVENT_TYPE, symbol)  # type: ignore[return-value]
