"""trio_dxlink.tastytrade against the tastytrade fake: real HTTP and WebSockets on 127.0.0.1."""

from __future__ import annotations

import datetime
import logging
import traceback
from collections.abc import AsyncIterator
from decimal import Decimal

import pytest
import trio
import trio.testing

from trio_dxlink import AuthenticationError, Greeks, Quote, open_dxlink
from trio_dxlink._messages import Auth
from trio_dxlink._tokens import FixedToken, fetch_token
from trio_dxlink.tastytrade import (
    API_VERSION,
    TastytradeAuthenticationError,
    TastytradeError,
    TastytradeRateLimitError,
    TastytradeSession,
    get_future_option_chain,
    get_option_chain,
    monthly_expiration,
    nearest_strikes,
    tasty_monthly,
    third_friday,
)
from trio_dxlink.testing import TastytradeServer, open_tastytrade_server

pytest.importorskip("httpx")


@pytest.fixture
async def tt() -> AsyncIterator[TastytradeServer]:
    async with open_tastytrade_server() as server:
        yield server


def session_for(tt: TastytradeServer, **kwargs: object) -> TastytradeSession:
    return TastytradeSession(tt.client_secret, tt.refresh_token, base_url=tt.api_url, **kwargs)  # type: ignore[arg-type]


# --- sign-in and headers ---


async def test_sign_in_sends_the_headers_the_api_asks_for(tt: TastytradeServer) -> None:
    async with session_for(tt, user_agent="my-app/1.0") as session:
        token = await session.get_token()
    assert token.url == tt.dxlink_url
    assert token.token == tt.quote_token
    sign_in, quote = tt.requests
    assert (sign_in.method, sign_in.raw_path) == ("POST", "/oauth/token")
    assert "authorization" not in sign_in.headers
    assert sign_in.headers["user-agent"] == "my-app/1.0"
    assert sign_in.headers["accept-version"] == API_VERSION  # production: every request
    assert quote.headers["authorization"].startswith("Bearer ")
    assert quote.headers["accept-version"] == API_VERSION


async def test_sandbox_gets_no_accept_version(tt: TastytradeServer) -> None:
    tt.sandbox_market_data = True
    async with TastytradeSession(
        tt.sandbox_client_secret, tt.sandbox_refresh_token, sandbox=True, base_url=tt.sandbox_url
    ) as session:
        await session.get_token()
    assert tt.requests
    assert all("accept-version" not in r.headers for r in tt.requests)
    assert {r.environment for r in tt.requests} == {"sandbox"}


async def test_credentials_come_from_the_environment(
    tt: TastytradeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TT_SECRET", tt.client_secret)
    monkeypatch.setenv("TT_REFRESH", tt.refresh_token)
    async with TastytradeSession(base_url=tt.api_url) as session:
        assert "signed in" in repr(session)
    monkeypatch.delenv("TT_SECRET")
    with pytest.raises(TastytradeAuthenticationError, match="TT_SECRET"):
        async with TastytradeSession(base_url=tt.api_url):
            pass


async def test_access_token_is_renewed_ahead_of_expiry(
    tt: TastytradeServer, autojump_clock: trio.testing.MockClock
) -> None:
    async with session_for(tt) as session:
        await trio.sleep(tt.access_token_lifetime - 30)  # inside the 60 s margin
        await session.get_token()
        assert session.sign_ins == 2
    # signed in again before asking, not after a 401
    assert [r.raw_path for r in tt.requests] == [
        "/oauth/token",
        "/oauth/token",
        "/api-quote-tokens",
    ]


async def test_a_401_is_retried_once_after_a_fresh_sign_in(tt: TastytradeServer) -> None:
    async with session_for(tt) as session:
        tt.expire_access_tokens()
        token = await session.get_token()
        assert token.token == tt.quote_token
        assert session.sign_ins == 2
        assert [r.raw_path for r in tt.requests] == [
            "/oauth/token",
            "/api-quote-tokens",
            "/oauth/token",
            "/api-quote-tokens",
        ]


async def test_one_refresh_at_a_time(
    tt: TastytradeServer, autojump_clock: trio.testing.MockClock
) -> None:
    async with session_for(tt) as session:
        await trio.sleep(tt.access_token_lifetime + 1)  # expired for everyone
        async with trio.open_nursery() as nursery:
            for _ in range(5):
                nursery.start_soon(session.get_token)
        assert session.sign_ins == 2
        assert tt.quote_tokens_issued == 5


# --- errors ---


async def test_wrong_secret(tt: TastytradeServer) -> None:
    with pytest.raises(TastytradeAuthenticationError, match="client secret") as info:
        async with TastytradeSession("nope", tt.refresh_token, base_url=tt.api_url):
            pass
    assert info.value.status_code == 401
    assert isinstance(info.value, AuthenticationError)


async def test_revoked_grant(tt: TastytradeServer) -> None:
    tt.revoke_grant()
    with pytest.raises(TastytradeAuthenticationError, match="new grant") as info:
        async with session_for(tt):
            pass
    assert info.value.code == "invalid_grant"


async def test_production_credentials_fail_in_the_sandbox(tt: TastytradeServer) -> None:
    with pytest.raises(TastytradeAuthenticationError, match="this environment"):
        async with TastytradeSession(
            tt.client_secret, tt.refresh_token, sandbox=True, base_url=tt.sandbox_url
        ):
            pass


async def test_not_entitled_to_market_data(tt: TastytradeServer) -> None:
    tt.not_entitled = True
    async with session_for(tt) as session:
        with pytest.raises(TastytradeAuthenticationError, match="not entitled") as info:
            await session.get_token()
    assert info.value.code == "quote_streamer.customer_not_found_error"


async def test_sandbox_without_market_data(tt: TastytradeServer) -> None:
    async with TastytradeSession(
        tt.sandbox_client_secret, tt.sandbox_refresh_token, sandbox=True, base_url=tt.sandbox_url
    ) as session:
        with pytest.raises(TastytradeAuthenticationError, match="sandbox has no market data"):
            await session.get_token()


async def test_rate_limited(tt: TastytradeServer) -> None:
    async with session_for(tt) as session:
        tt.fail_next(429)
        with pytest.raises(TastytradeRateLimitError, match="429") as info:
            await session.get_token()
    assert info.value.status_code == 429


@pytest.mark.parametrize("kind", ["error", "not-json"])
async def test_server_error(tt: TastytradeServer, kind: str) -> None:
    async with session_for(tt) as session:
        tt.fail_next(500, kind=kind)
        with pytest.raises(TastytradeError, match=r"server error.*try again later"):
            await session.get_token()


async def test_empty_data(tt: TastytradeServer) -> None:
    async with session_for(tt) as session:
        tt.fail_next(200, kind="empty-data")
        with pytest.raises(TastytradeError, match="no data"):
            await session.get_token()


async def test_transient_not_a_customer_at_sign_in(tt: TastytradeServer) -> None:
    tt.fail_sign_ins(1)
    with pytest.raises(TastytradeError, match="try again") as info:
        async with session_for(tt):
            pass
    assert not isinstance(info.value, AuthenticationError)
    async with session_for(tt):
        pass  # the next sign-in works


async def test_missing_user_agent(tt: TastytradeServer) -> None:
    with pytest.raises(TastytradeAuthenticationError, match="User-Agent"):
        async with session_for(tt, user_agent=""):
            pass


async def test_unreachable_api_is_a_tastytrade_error() -> None:
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    port = listener.socket.getsockname()[1]
    await listener.aclose()
    with pytest.raises(TastytradeError, match="could not reach"):
        async with TastytradeSession("s", "r", base_url=f"http://127.0.0.1:{port}"):
            pass


async def test_a_failing_session_ends_open_dxlink(tt: TastytradeServer) -> None:
    tt.not_entitled = True
    async with session_for(tt) as session:
        with pytest.raises(TastytradeAuthenticationError, match="not entitled"):
            async with open_dxlink(session):
                pass


# --- the feed ---


async def test_quote_token_is_renewed_on_a_live_connection(
    tt: TastytradeServer, autojump_clock: trio.testing.MockClock
) -> None:
    tt.quote_token_lifetime = 400.0
    async with (
        session_for(tt) as session,
        open_dxlink(session, keepalive_timeout=1e6, token_refresh_margin=300) as feed,
        feed.subscribe(Quote, ["SPY"]) as quotes,
    ):
        await quotes.receive()
        await tt.dxlink.wait_for(lambda: tt.quote_tokens_issued >= 2)
        connection = tt.dxlink.live[0]
        await tt.dxlink.wait_for(
            lambda: (
                sum(isinstance(m, Auth) for c, m in tt.dxlink.received if c == connection.id) >= 2
            )
        )
        await quotes.receive()  # still streaming, on the same connection
        assert feed.statistics().reconnects == 0
        assert len(tt.dxlink.connections) == 1


def test_no_token_over_ws_to_a_remote_host() -> None:
    async def fetch(url: str) -> str:
        return (await fetch_token(FixedToken(url, "tok"))).url

    with pytest.raises(AuthenticationError, match="clear text"):
        trio.run(fetch, "ws://example.com/realtime")
    for url in ("ws://127.0.0.1:1", "ws://[::1]:1", "ws://localhost:1", "wss://example.com"):
        assert trio.run(fetch, url) == url


async def test_open_dxlink_refuses_a_clear_text_remote_url() -> None:
    with pytest.raises(AuthenticationError, match="use wss://"):
        async with open_dxlink("ws://192.0.2.1:9/realtime", token="tok"):
            pass


# --- option chains ---


async def test_spy_chain_shape(tt: TastytradeServer) -> None:
    async with session_for(tt) as session:
        chain = await get_option_chain(session, "SPY")
    assert chain
    assert list(chain) == sorted(chain)
    for day, contracts in chain.items():
        assert all(c.expiration == day for c in contracts)
        assert {c.option_type for c in contracts} == {"C", "P"}
        for c in contracts:
            assert isinstance(c.strike_price, Decimal)
            assert c.root_symbol == c.underlying_symbol == "SPY"
            assert len(c.symbol) == 21
            assert c.symbol.startswith("SPY   ")
            assert c.streamer_symbol.startswith(f".SPY{day:%y%m%d}{c.option_type}")
            assert c.settlement_type == "PM"
            assert c.shares_per_contract == 100
    assert tt.requests[-1].raw_path == "/option-chains/SPY/nested"


async def test_spx_chain_has_both_roots(tt: TastytradeServer) -> None:
    async with session_for(tt) as session:
        chain = await get_option_chain(session, "SPX")
    roots = {c.root_symbol for contracts in chain.values() for c in contracts}
    assert roots == {"SPX", "SPXW"}
    shared = [d for d, cs in chain.items() if {c.root_symbol for c in cs} == {"SPX", "SPXW"}]
    assert shared
    contracts = chain[shared[0]]
    assert {c.settlement_type for c in contracts if c.root_symbol == "SPX"} == {"AM"}
    assert all(c.streamer_symbol.startswith(".SPXW") for c in contracts if c.root_symbol == "SPXW")
    assert all(c.underlying_symbol == "SPX" for c in contracts)


async def test_future_option_chain(tt: TastytradeServer) -> None:
    async with session_for(tt) as session:
        chain = await get_future_option_chain(session, "/ES")
    assert tt.requests[-1].raw_path == "/futures-option-chains/ES/nested"
    contracts = [c for cs in chain.values() for c in cs]
    assert contracts
    for c in contracts:
        assert c.root_symbol == "/ES"
        assert c.underlying_symbol.startswith("/ES")
        assert c.symbol.startswith("./ES")
        assert c.streamer_symbol.startswith("./")
        assert c.streamer_symbol.endswith(":XCME")
        assert c.option_root_symbol
        assert c.stops_trading_at is not None


async def test_symbols_are_percent_encoded(tt: TastytradeServer) -> None:
    async with session_for(tt) as session:
        chain = await get_option_chain(session, "BRK/B")
        with pytest.raises(TastytradeError, match="404") as info:
            await get_option_chain(session, "NOPE")
    assert tt.requests[-2].raw_path == "/option-chains/BRK%2FB/nested"
    assert {c.underlying_symbol for cs in chain.values() for c in cs} == {"BRK/B"}
    assert info.value.status_code == 404


async def test_greeks_stream_for_a_chains_streamer_symbols(tt: TastytradeServer) -> None:
    async with session_for(tt) as session:
        chain = await get_option_chain(session, "SPX")
        day = monthly_expiration(chain)
        atm = nearest_strikes(chain[day], tt.market.mid("SPX"), count=1)
        wanted = {c.streamer_symbol: c for c in atm}
        assert len(wanted) == 4  # a call and a put of each root
        seen: dict[str, Greeks] = {}
        async with open_dxlink(session) as feed, feed.subscribe(Greeks, wanted) as greeks:
            with trio.fail_after(10):
                async for event in greeks:
                    seen[event.event_symbol] = event
                    if len(seen) == len(wanted):
                        break
    for symbol, event in seen.items():
        delta = event.delta
        assert delta is not None
        if wanted[symbol].option_type == "C":
            assert 0.2 < delta < 0.8  # at the money, priced from SPX (SPXW too)
        else:
            assert -0.8 < delta < -0.2


# --- expirations ---


def test_tasty_monthly_and_third_friday() -> None:
    assert tasty_monthly(datetime.date(2025, 1, 2)) == datetime.date(2025, 2, 21)
    assert tasty_monthly(datetime.date(2025, 11, 20)) == datetime.date(2026, 1, 16)
    assert third_friday(2025, 4) == datetime.date(2025, 4, 17)  # Good Friday
    assert third_friday(2026, 6) == datetime.date(2026, 6, 18)  # Juneteenth
    assert third_friday(2025, 3) == datetime.date(2025, 3, 21)


async def test_monthly_expiration_and_nearest_strikes(tt: TastytradeServer) -> None:
    async with session_for(tt) as session:
        chain = await get_option_chain(session, "SPY")
    day = monthly_expiration(chain)
    assert day == tasty_monthly()
    assert all(c.expiration_type == "Regular" for c in chain[day])
    price = tt.market.mid("SPY")
    two = nearest_strikes(chain[day], price, count=2)
    strikes = sorted({c.strike_price for c in two})
    others = {c.strike_price for c in chain[day]} - set(strikes)
    worst = max(abs(s - Decimal(str(price))) for s in strikes)
    assert len(two) == 4
    assert all(abs(s - Decimal(str(price))) >= worst for s in others)
    with pytest.raises(ValueError, match="no expirations"):
        monthly_expiration({})


# --- secrets ---


async def test_no_secret_reaches_logs_reprs_or_errors(
    tt: TastytradeServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    texts: list[str] = []

    def keep(exc: BaseException) -> None:
        texts.extend([str(exc), repr(exc), "".join(traceback.format_exception(exc))])

    try:
        async with TastytradeSession(tt.client_secret + "x", tt.refresh_token, base_url=tt.api_url):
            pass
    except TastytradeError as exc:
        keep(exc)
    tt.not_entitled = True
    async with session_for(tt) as session:
        texts.append(repr(session))
        try:
            await session.get_token()
        except TastytradeError as exc:
            keep(exc)
        tt.not_entitled = False
        token = await session.get_token()
        texts.append(repr(token))
        async with open_dxlink(session) as feed, feed.subscribe(Quote, ["SPY"]) as quotes:
            await quotes.receive()
            texts.append(repr(feed))
        texts.append(repr(session))
    texts.append(repr(tt))
    texts.extend(repr(r) for r in tt.requests)
    access = {
        r.headers["authorization"].removeprefix("Bearer ")
        for r in tt.requests
        if "authorization" in r.headers
    }
    secrets = {tt.client_secret, tt.refresh_token, tt.quote_token, *access}
    assert len(secrets) >= 4
    haystack = "\n".join([*texts, caplog.text])
    assert "signed in" in haystack
    assert "not entitled" in haystack
    for secret in secrets:
        assert secret not in haystack


def test_credentials_are_never_sent_in_clear_text_off_the_machine() -> None:
    with pytest.raises(TastytradeError, match="clear text"):
        TastytradeSession("client-secret", "refresh-token", base_url="http://api.example.com")
    # loopback may be plain http (the fake), anything else must be https
    assert TastytradeSession("s", "r", base_url="http://127.0.0.1:1").base_url.startswith("http:")
    assert TastytradeSession("s", "r", base_url="https://api.example.com").base_url
