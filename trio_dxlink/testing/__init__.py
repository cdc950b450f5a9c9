"""A real DXLink server on loopback, with a simulated market, for testing DXLink clients.

Run your client against it::

    from trio_dxlink.testing import ServerConfig, open_dxlink_server

    async with open_dxlink_server(config=ServerConfig(token="secret", simulate=False)) as server:
        ...  # connect to server.url; server.publish(Quote("SPY", bid_price=1.0, ...))
        await server.wait_for(lambda: ("Quote", "SPY") in server.subscriptions())

See :mod:`trio_dxlink.testing._server` for exactly how it behaves.
:func:`open_tastytrade_server` runs a stand-in for tastytrade's REST API (sign-in, quote tokens,
option chains) beside one (:mod:`trio_dxlink.testing._tastytrade_fake`).
"""

from ._market import SIMULATED_TYPES, Market, OptionSymbol, candle_period_ms, parse_option_symbol
from ._playback import play_recording
from ._server import (
    DXLinkServer,
    ServerChannel,
    ServerConfig,
    ServerConnection,
    open_dxlink_server,
    serve_dxlink,
)
from ._tastytrade_fake import RecordedRequest, TastytradeServer, open_tastytrade_server

__all__ = [
    "DXLinkServer",
    "Market",
    "OptionSymbol",
    "RecordedRequest",
    "SIMULATED_TYPES",
    "ServerChannel",
    "ServerConfig",
    "ServerConnection",
    "TastytradeServer",
    "candle_period_ms",
    "open_dxlink_server",
    "open_tastytrade_server",
    "parse_option_symbol",
    "play_recording",
    "serve_dxlink",
]
