"""tastytrade's own SDK ``Session`` (13.x) against the tastytrade fake, through ``open_dxlink``."""

from __future__ import annotations

import pytest
import trio

from trio_dxlink import Quote, open_dxlink
from trio_dxlink.testing import open_tastytrade_server

tastytrade = pytest.importorskip("tastytrade")


async def test_open_dxlink_takes_the_sdks_session() -> None:
    async with open_tastytrade_server() as tt:
        session = tastytrade.Session(tt.client_secret, tt.refresh_token)
        session._client.base_url = tt.api_url  # the SDK has no base_url parameter
        async with (
            session,
            open_dxlink(session) as feed,
            feed.subscribe(Quote, ["SPY", "AAPL"]) as quotes,
        ):
            with trio.fail_after(10):
                event = await quotes.receive()
            assert event.event_symbol in {"SPY", "AAPL"}
        assert tt.sign_ins == 1
        assert tt.quote_tokens_issued == 1
        sign_in = tt.requests[0]
        assert sign_in.raw_path == "/oauth/token"
        assert "authorization" not in sign_in.headers


async def test_the_sdks_failures_end_open_dxlink() -> None:
    async with open_tastytrade_server() as tt:
        tt.not_entitled = True
        session = tastytrade.Session(tt.client_secret, tt.refresh_token)
        session._client.base_url = tt.api_url
        async with session:
            with pytest.raises(Exception, match="customer_not_found") as info:
                async with open_dxlink(session):
                    pass
    from trio_dxlink import DXLinkError

    assert isinstance(info.value, DXLinkError)
