"""tastytrade: sign in, get DXLink quote tokens, read option chains (``pip install
"trio-dxlink[tastytrade]"``).

::

    from trio_dxlink import Greeks, open_dxlink
    from trio_dxlink.tastytrade import (
        TastytradeSession, get_option_chain, monthly_expiration, nearest_strikes,
    )

    async with TastytradeSession() as session:  # TT_SECRET / TT_REFRESH
        chain = await get_option_chain(session, "SPY")
        contracts = nearest_strikes(chain[monthly_expiration(chain)], 500, count=2)
        async with (
            open_dxlink(session) as feed,
            feed.subscribe(Greeks, [c.streamer_symbol for c in contracts]) as greeks,
        ):
            async for event in greeks:
                print(event)

tastytrade's own SDK session (``tastytrade.Session``) works with ``open_dxlink`` too.
"""

from .._exceptions import TastytradeAuthenticationError, TastytradeError, TastytradeRateLimitError
from ._chains import (
    OptionContract,
    get_future_option_chain,
    get_option_chain,
    monthly_expiration,
    nearest_strikes,
    tasty_monthly,
    third_friday,
)
from ._session import API_VERSION, PRODUCTION_URL, SANDBOX_URL, TastytradeSession

__all__ = [
    "API_VERSION",
    "PRODUCTION_URL",
    "SANDBOX_URL",
    "OptionContract",
    "TastytradeAuthenticationError",
    "TastytradeError",
    "TastytradeRateLimitError",
    "TastytradeSession",
    "get_future_option_chain",
    "get_option_chain",
    "monthly_expiration",
    "nearest_strikes",
    "tasty_monthly",
    "third_friday",
]
