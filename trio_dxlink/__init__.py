"""trio_dxlink: a trio-native client for dxFeed's DXLink WebSocket market-data protocol.

Quick start::

    import trio
    from trio_dxlink import open_dxlink, Quote

    async def main():
        async with open_dxlink("wss://example/dxlink", token="...") as feed:
            async with feed.subscribe(Quote, ["SPY", "AAPL"]) as rx:
                async for quote in rx:
                    print(quote.event_symbol, quote.bid_price, quote.ask_price)

    trio.run(main)
"""

import warnings
from typing import TYPE_CHECKING, Any, TypeAlias

from ._arguments import datetime_of
from ._assembly import SnapshotStatus, Update
from ._book import BookStatistics, BookView, OrderBook, PriceLevel
from ._bridge import BridgeStatistics, RedisBridge, run_bridge
from ._client import (
    NO_RECONNECT,
    DXLinkFeed,
    FeedState,
    FeedStatistics,
    ReconnectPolicy,
    Token,
    TokenSource,
)
from ._dom import DepthOfMarket, DomStatistics
from ._dom_channel import DomConfig, DomLevel, DomSnapshot
from ._exceptions import (
    AuthenticationError,
    CertificateError,
    ChannelError,
    ConnectError,
    ConnectionClosedError,
    DataGapError,
    DXLinkError,
    EventDeclarationError,
    GaveUpError,
    KeepaliveTimeoutError,
    LocalProtocolError,
    MalformedDataError,
    MessageTooBigError,
    PoolFullError,
    ProtocolError,
    RecordingError,
    RemoteProtocolError,
    ServerError,
    SlowConsumerError,
    SubscriptionClosedError,
    SubscriptionError,
    SubscriptionRefusedError,
    SymbolError,
)
from ._history import History, TimeSeries
from ._open import open_dxlink
from ._order_book import LiveOrderBook, OrderBookStatistics
from ._pool import DXLinkPool, PoolStatistics, open_dxlink_pool
from ._record import Recorder, RecorderStatistics, open_recorder
from ._recorded_events import RecordedEvents, iter_recorded_events
from ._recording import iter_records, read_manifest
from ._redis_feed import RedisFeed, RedisFeedStatistics, open_redis_feed
from ._replay import Replay, recorded_subscriptions
from ._subscription import Overflow, Subscription, SubscriptionStatistics
from ._transport import Connector, Transport, websocket_connector, websockets_connector
from .events import (
    EVENT_TYPES,
    AnalyticOrder,
    Candle,
    Event,
    EventFlag,
    Greeks,
    IndexedEvent,
    OptionSale,
    Order,
    Profile,
    Quote,
    Series,
    SpreadOrder,
    Summary,
    TheoPrice,
    TimeAndSale,
    TimeSeriesEvent,
    Trade,
    TradeETH,
    Underlying,
    event_class,
    event_type,
    sequence_from_index,
    time_from_index,
)
from .symbols import (
    CandleAlignment,
    CandlePeriod,
    CandlePrice,
    CandleSession,
    CandleSymbol,
    CandleType,
    normalize_candle_symbol,
)

__version__ = "0.1.0"

if TYPE_CHECKING:  # the deprecated names, for type checkers (at run time: __getattr__ below)
    from ._tokens import LegacyTokenSource

    QuoteToken: TypeAlias = Token
    QuoteTokenSource: TypeAlias = LegacyTokenSource

_DEPRECATED_NAMES = {"QuoteToken": "Token", "QuoteTokenSource": "TokenSource"}


def __getattr__(name: str) -> Any:
    """The names deprecated in 0.2: ``QuoteToken`` (now :class:`Token`) and
    ``QuoteTokenSource`` (now :class:`TokenSource`, whose method is ``get_token``)."""
    if name in _DEPRECATED_NAMES:
        new = _DEPRECATED_NAMES[name]
        warnings.warn(
            f"trio_dxlink.{name} is deprecated; use trio_dxlink.{new}",
            DeprecationWarning,
            stacklevel=2,
        )
        from . import _tokens

        return _tokens.Token if name == "QuoteToken" else _tokens.LegacyTokenSource
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "EVENT_TYPES",
    "NO_RECONNECT",
    "AnalyticOrder",
    "AuthenticationError",
    "BookStatistics",
    "BookView",
    "Candle",
    "CandleAlignment",
    "CandlePeriod",
    "CandlePrice",
    "CandleSession",
    "CandleSymbol",
    "CandleType",
    "ChannelError",
    "CertificateError",
    "ConnectError",
    "ConnectionClosedError",
    "Connector",
    "DataGapError",
    "DepthOfMarket",
    "DomConfig",
    "DomLevel",
    "DomSnapshot",
    "DomStatistics",
    "DXLinkError",
    "DXLinkFeed",
    "DXLinkPool",
    "Event",
    "EventDeclarationError",
    "RecordingError",
    "Recorder",
    "RecorderStatistics",
    "Replay",
    "iter_records",
    "iter_recorded_events",
    "RecordedEvents",
    "open_recorder",
    "read_manifest",
    "recorded_subscriptions",
    "EventFlag",
    "FeedState",
    "FeedStatistics",
    "GaveUpError",
    "Greeks",
    "IndexedEvent",
    "KeepaliveTimeoutError",
    "LiveOrderBook",
    "LocalProtocolError",
    "MalformedDataError",
    "MessageTooBigError",
    "PoolFullError",
    "PoolStatistics",
    "BridgeStatistics",
    "RedisBridge",
    "RedisFeed",
    "RedisFeedStatistics",
    "OptionSale",
    "Order",
    "OrderBook",
    "OrderBookStatistics",
    "Overflow",
    "PriceLevel",
    "Profile",
    "ProtocolError",
    "Quote",
    "ReconnectPolicy",
    "RemoteProtocolError",
    "Series",
    "ServerError",
    "SlowConsumerError",
    "SnapshotStatus",
    "SpreadOrder",
    "History",
    "Subscription",
    "SubscriptionRefusedError",
    "TimeSeries",
    "Update",
    "datetime_of",
    "SubscriptionClosedError",
    "SubscriptionError",
    "SubscriptionStatistics",
    "SymbolError",
    "Summary",
    "TheoPrice",
    "TimeAndSale",
    "TimeSeriesEvent",
    "Token",
    "TokenSource",
    "Trade",
    "TradeETH",
    "Transport",
    "Underlying",
    "__version__",
    "event_class",
    "event_type",
    "normalize_candle_symbol",
    "open_dxlink",
    "open_dxlink_pool",
    "open_redis_feed",
    "run_bridge",
    "sequence_from_index",
    "time_from_index",
    "websocket_connector",
    "websockets_connector",
]
