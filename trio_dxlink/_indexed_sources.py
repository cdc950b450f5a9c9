"""Every source of one indexed (event type, symbol): one assembler per source, pure, no I/O.

See :mod:`trio_dxlink._assembly` for the model; an order book is built on this.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Generic

from ._assembly import (
    DEFAULT_MAX_PENDING,
    AssemblyStats,
    E,
    IndexedAssembler,
    Overflow,
    Update,
    event_source,
    log,
)
from ._exceptions import LocalProtocolError
from .events import Event, IndexedEvent

__all__ = ["IndexedSources"]


class IndexedSources(Generic[E]):
    """Every source of one indexed ``(event_type, symbol)``: an :class:`IndexedAssembler` per
    source, made when the source is first seen (the order book's building block).

    Each source has its own snapshots and transactions (§6.7); updates name their source.
    At most ``max_sources`` sources are followed; events of further sources are skipped and
    counted as ``foreign``.

    Raises:
        LocalProtocolError: ``event_type`` is not an indexed type, or a limit is below 1.
    """

    def __init__(
        self,
        event_type: type[E],
        symbol: str,
        *,
        max_sources: int = 64,
        max_pending: int = DEFAULT_MAX_PENDING,
    ) -> None:
        if not (isinstance(event_type, type) and issubclass(event_type, IndexedEvent)):
            raise LocalProtocolError(f"{event_type!r} is not an indexed event type")
        if max_sources < 1 or max_pending < 1:
            raise LocalProtocolError("max_sources and max_pending must be at least 1")
        self.event_type = event_type
        self.symbol = symbol
        self.max_sources = max_sources
        self.max_pending = max_pending
        self._by_source: dict[str, IndexedAssembler[E]] = {}
        self._rejected = AssemblyStats()
        self._warned = False

    @property
    def stats(self) -> AssemblyStats:
        """The counters of every source's assembler, plus the events skipped before routing."""
        total = AssemblyStats()
        total.add(self._rejected)
        for assembler in self._by_source.values():
            total.add(assembler.stats)
        return total

    def sources(self) -> tuple[str, ...]:
        """The sources seen so far, in order of first appearance."""
        return tuple(self._by_source)

    def __getitem__(self, source: str) -> IndexedAssembler[E]:
        """The assembler of one source (``KeyError`` if it was never seen)."""
        return self._by_source[source]

    def connection_lost(self) -> None:
        """Tell every source's assembler (see :meth:`IndexedAssembler.connection_lost`)."""
        for assembler in self._by_source.values():
            assembler.connection_lost()

    def feed(self, events: Iterable[Event]) -> list[Update[E] | Overflow]:
        """Route events to their sources in wire order; return what became consistent."""
        out: list[Update[E] | Overflow] = []
        run: list[Event] = []
        target: IndexedAssembler[E] | None = None
        for event in events:
            assembler = self._route(event)
            if assembler is not target:
                if target is not None:
                    out.extend(target.feed(run))
                run = []
                target = assembler
            if assembler is not None:
                run.append(event)
        if target is not None:
            out.extend(target.feed(run))
        return out

    def _route(self, event: Event) -> IndexedAssembler[E] | None:
        if event.__class__ is not self.event_type or event.event_symbol != self.symbol:
            self._reject("an event of another collection was fed to %r", self)
            return None
        source = event_source(event)
        assembler = self._by_source.get(source)
        if assembler is None:
            if len(self._by_source) >= self.max_sources:
                self._reject("%r follows %d sources already", self, self.max_sources)
                return None
            assembler = IndexedAssembler(
                self.event_type, self.symbol, source, max_pending=self.max_pending
            )
            self._by_source[source] = assembler
        return assembler

    def _reject(self, message: str, *args: object) -> None:
        self._rejected.events += 1
        self._rejected.foreign += 1
        if not self._warned:
            self._warned = True
            log.warning(message + " (further ones are only counted)", *args)

    def __repr__(self) -> str:
        return f"<IndexedSources {self.event_type.__name__} {self.symbol!r}>"
