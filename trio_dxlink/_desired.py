"""The feed's desired state: which wire subscriptions exist and who holds them (pure).

A wire subscription is one (channel, symbol, source) the server is asked for, where the channel
(:class:`~trio_dxlink._channel_key.ChannelKey`) is the event type with the subscription's field
list and aggregation period. Several
handles may hold the same one; it is added to the wire when its first holder arrives and
removed when its last holder leaves. Each holder may want history from its own ``from_time``:

* when a holder with a ``from_time`` arrives, the subscription is (re)sent with that time, so
  the server sends that holder its snapshot (the other holders see the snapshot too);
* a connection that starts afresh is told :meth:`DesiredState.replay`: every subscription with
  the *earliest* ``from_time`` its current holders want, so no holder's history is cut short
  by a newer holder, even one that has left since.

Nothing here knows about connections or trio; the feed sends what the methods return.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable

from ._channel_key import ChannelKey
from ._messages import SubscriptionEntry

__all__ = ["DesiredState", "WireKey"]

WireKey = tuple[ChannelKey, str, "str | None"]
"""(channel, symbol, source): the identity of one wire subscription."""


class DesiredState:
    """Counted wire subscriptions and each holder's ``from_time``."""

    def __init__(self) -> None:
        self._holders: dict[WireKey, dict[Hashable, int | None]] = {}

    def __len__(self) -> int:
        return len(self._holders)

    def add(
        self,
        holder: Hashable,
        channel: ChannelKey,
        symbols: Iterable[str],
        *,
        from_time: int | None = None,
        source: str | None = None,
    ) -> list[SubscriptionEntry]:
        """``holder`` wants these symbols; returns the entries to send as additions."""
        added = []
        for symbol in symbols:
            key = (channel, symbol, source)
            holders = self._holders.get(key)
            if holders is None:
                holders = self._holders[key] = {}
            elif holder in holders:
                continue
            first = not holders
            holders[holder] = from_time
            if first or from_time is not None:
                added.append(SubscriptionEntry(channel.event_type, symbol, from_time, source))
        return added

    def remove(
        self,
        holder: Hashable,
        channel: ChannelKey,
        symbols: Iterable[str],
        *,
        source: str | None = None,
    ) -> list[SubscriptionEntry]:
        """``holder`` no longer wants these symbols; returns the entries to send as removals."""
        removed = []
        for symbol in symbols:
            key = (channel, symbol, source)
            holders = self._holders.get(key)
            if holders is None or holder not in holders:
                continue
            del holders[holder]
            if not holders:
                del self._holders[key]
                removed.append(SubscriptionEntry(channel.event_type, symbol, None, source))
        return removed

    def holders(self) -> set[Hashable]:
        """Every holder of some wire subscription."""
        return {holder for holders in self._holders.values() for holder in holders}

    def keys(self) -> list[WireKey]:
        """Every wire subscription, oldest first."""
        return list(self._holders)

    def take(self, key: WireKey) -> dict[Hashable, int | None]:
        """Forget ``key`` and return its holders (their ``from_time``), to :meth:`put` them on
        another connection's state; the caller unsubscribes it."""
        return self._holders.pop(key)

    def put(self, key: WireKey, holders: dict[Hashable, int | None]) -> SubscriptionEntry:
        """Hold ``key`` for ``holders`` (from :meth:`take`); the entry to subscribe."""
        self._holders[key] = holders
        entry = self.entry(key)
        assert entry is not None
        return entry

    def entry(self, key: WireKey) -> SubscriptionEntry | None:
        """What a fresh connection asks for ``key``: the earliest ``from_time`` held."""
        holders = self._holders.get(key)
        if holders is None:
            return None
        times = [t for t in holders.values() if t is not None]
        return SubscriptionEntry(key[0].event_type, key[1], min(times) if times else None, key[2])

    def replay(self) -> dict[ChannelKey, list[SubscriptionEntry]]:
        """Every wire subscription, by channel, as a fresh connection should ask for it."""
        by_channel: dict[ChannelKey, list[SubscriptionEntry]] = {}
        for key in self._holders:
            entry = self.entry(key)
            assert entry is not None
            by_channel.setdefault(key[0], []).append(entry)
        return by_channel
