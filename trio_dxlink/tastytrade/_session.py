""":class:`TastytradeSession`: OAuth2 sign-in to tastytrade's REST API, and quote tokens.

The session signs in with the refresh-token grant when its ``async with`` block is entered and
keeps the access token fresh: it is renewed :data:`ACCESS_REFRESH_MARGIN` seconds before it
expires (by ``trio.current_time()``), by one task at a time (a ``trio.Lock``), and a request
answered with 401 is retried once after a fresh sign-in. Requests carry the headers the API
asks for: a ``User-Agent`` always, ``Accept-Version`` on production only, and ``Authorization``
everywhere except on ``/oauth/token``.

It is a token source: ``open_dxlink(session)`` asks :meth:`TastytradeSession.get_token` for a
quote token before each connection and before the token lapses.

No secret (client secret, refresh token, access token, quote token) is logged, shown in a
repr or put in an exception message. httpx's errors become :class:`TastytradeError`.
"""

from __future__ import annotations

import logging
import os
import urllib.parse
from types import TracebackType
from typing import Any

import httpx
import orjson
import trio

from .. import __version__
from .._exceptions import TastytradeAuthenticationError, TastytradeError
from .._tastytrade_tokens import token_from_reply
from .._tokens import Token, may_carry_secret
from .._util import clip
from ._errors import api_error

__all__ = [
    "ACCESS_REFRESH_MARGIN",
    "API_VERSION",
    "PRODUCTION_URL",
    "SANDBOX_URL",
    "TastytradeSession",
    "quote_path",
]

log = logging.getLogger("trio_dxlink.tastytrade")

PRODUCTION_URL = "https://api.tastyworks.com"
SANDBOX_URL = "https://api.cert.tastyworks.com"
API_VERSION = "20251101"
"""The ``Accept-Version`` sent to production (never to the sandbox, which refuses it)."""
ACCESS_REFRESH_MARGIN = 60.0
"""Seconds before an access token expires when the session renews it."""
_DEFAULT_ACCESS_LIFETIME = 900.0


def quote_path(symbol: str) -> str:
    """``symbol`` as one URL path segment: ``/`` and spaces percent-encoded (``BRK/B`` →
    ``BRK%2FB``)."""
    return urllib.parse.quote(symbol, safe="")


class TastytradeSession:
    """A signed-in tastytrade API session; use it as ``async with TastytradeSession(...)``.

    Args:
        client_secret: the OAuth application's client secret (default: ``$TT_SECRET``).
        refresh_token: the grant's refresh token (default: ``$TT_REFRESH``).
        sandbox: use tastytrade's sandbox (``api.cert.tastyworks.com``) instead of production.
            The sandbox has no market data, so quote tokens need a production session.
        base_url: another API address (a local fake, say); ``sandbox`` still says which
            environment's rules (``Accept-Version``) apply.
        user_agent: the ``User-Agent`` header, ``name/version`` (the API requires one).

    Raises:
        TastytradeAuthenticationError: on entry, if no credentials were given or found; also
            when signing in is refused (see :meth:`get_token`).
    """

    def __init__(
        self,
        client_secret: str | None = None,
        refresh_token: str | None = None,
        *,
        sandbox: bool = False,
        base_url: str | None = None,
        user_agent: str = f"trio-dxlink/{__version__}",
    ) -> None:
        self._client_secret = client_secret or os.environ.get("TT_SECRET") or ""
        self._refresh_token = refresh_token or os.environ.get("TT_REFRESH") or ""
        self.sandbox = sandbox
        self.base_url = (base_url or (SANDBOX_URL if sandbox else PRODUCTION_URL)).rstrip("/")
        if not may_carry_secret(self.base_url):
            raise TastytradeError(
                f"refusing to send tastytrade credentials in clear text to {self.base_url!r}:"
                " an http:// base_url is only allowed for loopback addresses; use https://"
            )
        self.user_agent = user_agent
        self._client: httpx.AsyncClient | None = None
        self._access_token: str | None = None
        self._access_expires = -float("inf")  # trio.current_time() when it lapses
        self._lock = trio.Lock()
        self.sign_ins = 0
        """How many times the session has signed in (fetched an access token)."""

    def __repr__(self) -> str:
        where = "sandbox" if self.sandbox else "production"
        state = "signed in" if self._access_token else "signed out"
        return f"<TastytradeSession {where} {self.base_url} {state}>"

    async def __aenter__(self) -> TastytradeSession:
        if not self._client_secret or not self._refresh_token:
            missing = [
                name
                for name, value in (
                    ("client_secret (or TT_SECRET)", self._client_secret),
                    ("refresh_token (or TT_REFRESH)", self._refresh_token),
                )
                if not value
            ]
            raise TastytradeAuthenticationError(
                f"tastytrade credentials missing: {' and '.join(missing)}"
            )
        headers = {"User-Agent": self.user_agent, "Accept": "application/json"}
        if not self.sandbox:
            headers["Accept-Version"] = API_VERSION
        self._client = httpx.AsyncClient(base_url=self.base_url, headers=headers)
        try:
            async with self._lock:
                await self._sign_in()
        except BaseException:
            await self.aclose()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the HTTP connections and forget the access token (idempotent)."""
        client, self._client = self._client, None
        self._access_token = None
        if client is not None:
            with trio.CancelScope(shield=True), trio.move_on_after(2.0):
                await client.aclose()
        else:
            await trio.lowlevel.checkpoint()

    # --- the token source ---

    async def get_token(self) -> Token:
        """A fresh DXLink quote token and the ``dxlink-url`` to use it on.

        ``expires_at`` is the reply's ``expires-at`` (24 hours from issue when it is absent).

        Raises:
            TastytradeAuthenticationError: the login is not entitled to market data, the
                sandbox has none, or signing in was refused.
            TastytradeRateLimitError: too many requests.
            TastytradeError: any other failure (a server error, an unreachable API, ...).
        """
        data = await self.get_json("/api-quote-tokens")
        token = token_from_reply(data)
        log.debug("quote token received for %s", token.url)
        return token

    # --- requests ---

    async def get_json(self, path: str) -> dict[str, Any]:
        """GET ``path`` (already percent-encoded) and return the reply's ``data`` object.

        Signs in again first if the access token is about to lapse; a 401 reply is retried
        once after a fresh sign-in.
        """
        what = f"GET {path}"
        access = await self._access()
        response = await self._send("GET", path, what, access)
        if response.status_code == 401 and "json" in response.headers.get("content-type", ""):
            log.debug("%s: 401, signing in again and retrying once", what)
            async with self._lock:
                if self._access_token == access:  # nobody has renewed it meanwhile
                    await self._sign_in()
            response = await self._send("GET", path, what, await self._access())
        if response.status_code // 100 != 2:
            raise self._failure(response, what)
        reply = _json(response, what)
        data = reply.get("data")
        if not isinstance(data, dict) or not data:
            raise TastytradeError(f"tastytrade's reply to {what} has no data")
        return data

    async def _access(self) -> str:
        """A current access token, renewed first if it lapses within the margin."""
        if self._client is None:
            raise TastytradeError("the tastytrade session is not open: use `async with`")
        if trio.current_time() < self._access_expires - ACCESS_REFRESH_MARGIN:
            await trio.lowlevel.checkpoint()
            assert self._access_token is not None
            return self._access_token
        async with self._lock:
            if trio.current_time() >= self._access_expires - ACCESS_REFRESH_MARGIN:
                await self._sign_in()
        assert self._access_token is not None
        return self._access_token

    async def _sign_in(self) -> None:
        """POST /oauth/token (the caller holds the lock)."""
        what = "POST /oauth/token"
        body = {
            "grant_type": "refresh_token",
            "refresh_token": self._refresh_token,
            "client_secret": self._client_secret,
        }
        response = await self._send("POST", "/oauth/token", what, None, body)
        if response.status_code // 100 != 2:
            raise self._failure(response, what)
        reply = _json(response, what)
        access = reply.get("access_token")
        if not isinstance(access, str) or not access:
            raise TastytradeError(f"tastytrade's reply to {what} has no access_token")
        lifetime = reply.get("expires_in", _DEFAULT_ACCESS_LIFETIME)
        if not isinstance(lifetime, (int, float)) or isinstance(lifetime, bool):
            lifetime = _DEFAULT_ACCESS_LIFETIME
        refreshed = reply.get("refresh_token")
        if isinstance(refreshed, str) and refreshed:
            self._refresh_token = refreshed  # keep the newest, should the API ever rotate it
        self._access_token = access
        self._access_expires = trio.current_time() + float(lifetime)
        self.sign_ins += 1
        log.debug("signed in to tastytrade; the access token lasts %g s", lifetime)

    async def _send(
        self,
        method: str,
        path: str,
        what: str,
        access: str | None,
        body: dict[str, str] | None = None,
    ) -> httpx.Response:
        client = self._client
        if client is None:
            raise TastytradeError("the tastytrade session is not open: use `async with`")
        headers = {} if access is None else {"Authorization": f"Bearer {access}"}
        content = None
        if body is not None:
            headers["Content-Type"] = "application/json"
            content = orjson.dumps(body)
        try:
            response = await client.request(method, path, headers=headers, content=content)
        except httpx.HTTPError as exc:
            raise TastytradeError(
                f"could not reach tastytrade at {self.base_url} ({what}):"
                f" {type(exc).__name__}: {clip(str(exc), 160)}"
            ) from exc
        except httpx.InvalidURL as exc:
            raise TastytradeError(f"bad tastytrade URL {self.base_url!r}: {exc}") from exc
        log.debug("%s: HTTP %d", what, response.status_code)
        return response

    def _failure(self, response: httpx.Response, what: str) -> TastytradeError:
        return api_error(
            response.status_code,
            response.content,
            response.headers.get("content-type", ""),
            what=what,
            sandbox=self.sandbox,
        )


def _json(response: httpx.Response, what: str) -> dict[str, Any]:
    try:
        reply = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        reply = None
    if not isinstance(reply, dict):
        raise TastytradeError(
            f"tastytrade answered {what} with something other than a JSON object"
            f" ({response.headers.get('content-type', 'no content type')},"
            f" {len(response.content)} bytes)"
        )
    return reply
