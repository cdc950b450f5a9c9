"""A local stand-in for tastytrade's REST API, beside a local DXLink server.

``async with open_tastytrade_server() as tt:`` runs, on 127.0.0.1:

* a **production** API at :attr:`TastytradeServer.api_url` and a **sandbox** API at
  :attr:`TastytradeServer.sandbox_url`, each with its own credentials (a client secret and the
  refresh token of a grant), real HTTP/1.1 over h11;
* a DXLink server (:attr:`TastytradeServer.dxlink`, simulating its market) that accepts the
  quote tokens the API hands out.

Routes (see the tastytrade reference, §7 "what a faithful fake must do"):

* every route needs a ``User-Agent`` (absent or empty: 401 with an nginx HTML page; with
  ``strict_user_agent``, one without ``/`` too);
* ``POST /oauth/token``: JSON body, ``grant_type=refresh_token``, the right refresh token and
  client secret (``client_id`` checked only if sent); a request carrying ``Authorization`` is
  refused. Answers ``{"access_token", "token_type", "expires_in"}`` with no ``data`` wrapper;
  a bad refresh token gets 400 ``invalid_grant``, a bad secret 401 ``invalid_grant``;
* every other route needs ``Authorization: Bearer <access token>`` that has not expired
  (:attr:`TastytradeServer.clock`, ``trio.current_time`` by default): else 401 ``unauthorized``;
* ``Accept-Version``: versions in ``removed_versions`` get 406; the sandbox answers 404 to any;
* ``GET /api-quote-tokens``: the DXLink token and URL, ``level`` ``api`` (``demo`` in the
  sandbox), ``issued-at``/``expires-at`` ``quote_token_lifetime`` apart (omitted when it is
  ``None``). ``not_entitled`` → 403 ``quote_streamer.customer_not_found_error``; the sandbox
  has no market data (404) unless ``sandbox_market_data`` is set;
* ``GET /option-chains/{symbol}/nested`` and ``GET /futures-option-chains/{code}/nested``,
  routed on the raw path (``BRK%2FB`` is one segment), generated from the market;
  symbols in ``unlisted`` (or not symbol-shaped) get 404;
* JSON replies are ``{"data": ..., "context": <path>}`` with an ``X-Request-Id``.

Faults: :meth:`TastytradeServer.fail_next` (429 without rate-limit headers, 500, a non-JSON
body, an empty ``data``), :meth:`fail_sign_ins` (``invalid_request``), :meth:`revoke_grant`,
:meth:`expire_access_tokens`. Every request is logged in :attr:`TastytradeServer.requests`.
"""

from __future__ import annotations

import functools
import itertools
import logging
import re
import secrets
import time
import urllib.parse
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import attrs
import h11
import orjson
import trio

from .._expirations import new_york_today
from .._util import unwrap_group
from ._market import Market
from ._server import DXLinkServer, ServerConfig, open_dxlink_server
from ._tastytrade_chains import equity_chain, futures_chain

__all__ = ["RecordedRequest", "TastytradeServer", "open_tastytrade_server"]

log = logging.getLogger("trio_dxlink.testing.tastytrade")

_NGINX_401 = (
    b"<html>\r\n<head><title>401 Authorization Required</title></head>\r\n<body>\r\n"
    b"<center><h1>401 Authorization Required</h1></center>\r\n<hr><center>nginx</center>\r\n"
    b"</body>\r\n</html>\r\n"
)
_SYMBOL = re.compile(r"^[A-Z][A-Z0-9]{0,5}(/[A-Z]{1,2})?$")
_FUTURES_CODE = re.compile(r"^[A-Z0-9]{1,4}$")
_MAX_BODY = 1 << 16


@attrs.frozen
class RecordedRequest:
    """One request the fake received (headers with lower-case names)."""

    environment: str  # "production" or "sandbox"
    method: str
    raw_path: str
    headers: dict[str, str] = attrs.field(repr=False)
    body: bytes = attrs.field(repr=False)


@attrs.frozen
class _Reply:
    status: int
    body: bytes
    content_type: str = "application/json"


@attrs.frozen
class _Fault:
    status: int
    path: str | None
    kind: str  # "error", "not-json", "empty-data"


@attrs.define(eq=False)
class _Environment:
    name: str
    client_secret: str = attrs.field(repr=False)
    refresh_token: str = attrs.field(repr=False)
    client_id: str
    revoked: bool = False
    url: str = ""


class TastytradeServer:
    """The running fake (made by :func:`open_tastytrade_server`). Switches may be flipped at
    any time; they apply to the next request.

    Attributes:
        api_url / sandbox_url: the production and sandbox API base URLs.
        dxlink: the DXLink server the quote tokens are for (``dxlink.url``).
        market: the simulated market chains and streams are made from.
        client_secret, refresh_token: production credentials (``sandbox_client_secret`` and
            ``sandbox_refresh_token`` for the sandbox); ``client_id`` likewise.
        quote_token: the DXLink token handed out.
        access_token_lifetime: seconds an access token lasts (``expires_in``; 900).
        quote_token_lifetime: seconds between ``issued-at`` and ``expires-at`` (``None``:
            neither is sent).
        not_entitled: answer quote-token requests with ``customer_not_found_error``.
        sandbox_market_data: let the sandbox hand out (``demo``) quote tokens.
        strict_user_agent: refuse a User-Agent without ``/``.
        reject_authorization_on_sign_in: refuse ``/oauth/token`` requests with an
            ``Authorization`` header (on by default, as tastytrade does).
        removed_versions: ``Accept-Version`` values answered with 406.
        futures_streamer_symbols: include ``futures[].streamer-symbol`` in futures chains.
        unlisted: symbols with no option chain (404).
        requests: every request received, in order.
        sign_ins: successful ``/oauth/token`` requests; ``quote_tokens_issued`` likewise.
    """

    def __init__(self, dxlink: DXLinkServer, clock: Callable[[], float]) -> None:
        self.dxlink = dxlink
        self.market = dxlink.market
        self.clock = clock
        self.quote_token = dxlink.config.token or ""
        self._production = _Environment(
            "production", secrets.token_hex(16), secrets.token_urlsafe(32), secrets.token_hex(8)
        )
        self._sandbox = _Environment(
            "sandbox", secrets.token_hex(16), secrets.token_urlsafe(32), secrets.token_hex(8)
        )
        self.access_token_lifetime = 900.0
        self.quote_token_lifetime: float | None = 24 * 3600.0
        self.not_entitled = False
        self.sandbox_market_data = False
        self.strict_user_agent = False
        self.reject_authorization_on_sign_in = True
        self.removed_versions: set[str] = {"20230101"}
        self.futures_streamer_symbols = True
        self.unlisted: set[str] = {"NOPE"}
        self.requests: list[RecordedRequest] = []
        self.sign_ins = 0
        self.quote_tokens_issued = 0
        self._access: dict[str, tuple[str, float]] = {}  # token → (environment, expires)
        self._faults: list[_Fault] = []
        self._failing_sign_ins = 0
        self._ids = itertools.count(1)

    def __repr__(self) -> str:
        return f"<TastytradeServer {self.api_url} sandbox {self.sandbox_url} {self.dxlink.url}>"

    @property
    def api_url(self) -> str:
        return self._production.url

    @property
    def sandbox_url(self) -> str:
        return self._sandbox.url

    @property
    def dxlink_url(self) -> str:
        return self.dxlink.url

    @property
    def client_secret(self) -> str:
        return self._production.client_secret

    @property
    def refresh_token(self) -> str:
        return self._production.refresh_token

    @property
    def client_id(self) -> str:
        return self._production.client_id

    @property
    def sandbox_client_secret(self) -> str:
        return self._sandbox.client_secret

    @property
    def sandbox_refresh_token(self) -> str:
        return self._sandbox.refresh_token

    # --- switches ---

    def revoke_grant(self, *, sandbox: bool = False) -> None:
        """Revoke the grant: its refresh token gets ``invalid_grant`` from now on."""
        (self._sandbox if sandbox else self._production).revoked = True

    def expire_access_tokens(self) -> None:
        """Every access token issued so far stops working now (their holders get 401)."""
        self._access.clear()

    def fail_next(
        self, status: int, count: int = 1, *, path: str | None = None, kind: str = "error"
    ) -> None:
        """Answer the next ``count`` requests (to ``path`` only, if given; the User-Agent and
        credential checks come first) with ``status``: an error envelope (``kind="error"``;
        429 with no rate-limit headers, 500 ``internal_server_error``, ...), an HTML page
        (``"not-json"``), or, with a 2xx status, ``{"data": {}}`` (``"empty-data"``)."""
        if kind not in ("error", "not-json", "empty-data"):
            raise ValueError(f"unknown fault kind {kind!r}")
        self._faults.extend(_Fault(status, path, kind) for _ in range(count))

    def fail_sign_ins(self, count: int = 1) -> None:
        """The next ``count`` sign-ins get 400 ``invalid_request`` "User is not a TastyTrade
        customer" (as the sandbox has answered, for a while, near the market's open)."""
        self._failing_sign_ins += count

    # --- handling ---

    def _handle(self, env: _Environment, method: str, target: str, headers: dict[str, str],
                body: bytes) -> _Reply:  # fmt: skip
        self.requests.append(RecordedRequest(env.name, method, target, headers, body))
        agent = headers.get("user-agent", "")
        if not agent.strip() or (self.strict_user_agent and "/" not in agent):
            return _Reply(401, _NGINX_401, "text/html")
        path = target.split("?", 1)[0]
        version = headers.get("accept-version")
        if version is not None and env is self._sandbox:
            return _error(404, "not_found", "Not Found")
        if version is not None and version in self.removed_versions:
            return _Reply(406, _dumps({"error": {"code": 406, "message": _VERSION_GONE}}))
        if path == "/oauth/token" and method == "POST":
            return self._fault(path) or self._sign_in(env, headers, body)
        if not self._authorized(env, headers):
            return _error(401, "unauthorized", "Unauthorized. Unique customer support id: 0")
        fault = self._fault(path)
        if fault is not None:
            return fault
        if method != "GET":
            return _error(404, "not_found", f"No route for {method}")
        return self._route(env, path)

    def _fault(self, path: str) -> _Reply | None:
        for index, fault in enumerate(self._faults):
            if fault.path is None or fault.path == path:
                del self._faults[index]
                if fault.kind == "not-json":
                    return _Reply(fault.status, b"<html>oops</html>", "text/html")
                if fault.kind == "empty-data":
                    return _Reply(fault.status, _dumps({"data": {}, "context": path}))
                if fault.status >= 500:
                    return _error(fault.status, "internal_server_error", "Internal Server Error")
                if fault.status == 429:
                    return _error(429, "too_many_requests", "Too many requests")
                return _error(fault.status, "fault", "Injected fault")
        return None

    def _sign_in(self, env: _Environment, headers: dict[str, str], body: bytes) -> _Reply:
        if self.reject_authorization_on_sign_in and "authorization" in headers:
            return _oauth_error(400, "invalid_request", "Illegal header: Authorization")
        try:
            form: Any = orjson.loads(body)
        except orjson.JSONDecodeError:
            form = None
        if not isinstance(form, dict) or form.get("grant_type") != "refresh_token":
            return _oauth_error(400, "invalid_request", "Expected a refresh_token grant")
        if self._failing_sign_ins:
            self._failing_sign_ins -= 1
            return _oauth_error(400, "invalid_request", "User is not a TastyTrade customer")
        if env.revoked or not _same(form.get("refresh_token"), env.refresh_token):
            return _oauth_error(400, "invalid_grant", "Invalid JWT")
        if not _same(form.get("client_secret"), env.client_secret) or (
            "client_id" in form and not _same(form["client_id"], env.client_id)
        ):
            return _oauth_error(401, "invalid_grant", "Invalid client credentials")
        access = secrets.token_urlsafe(24)
        self._access[access] = (env.name, self.clock() + self.access_token_lifetime)
        self.sign_ins += 1
        reply = {
            "access_token": access,
            "token_type": "Bearer",
            "expires_in": self.access_token_lifetime,
        }
        return _Reply(200, _dumps(reply))

    def _authorized(self, env: _Environment, headers: dict[str, str]) -> bool:
        scheme, _, token = headers.get("authorization", "").partition(" ")
        known = self._access.get(token) if scheme == "Bearer" else None
        return known is not None and known[0] == env.name and self.clock() < known[1]

    def _route(self, env: _Environment, path: str) -> _Reply:
        parts = path.split("/")  # the raw path: an encoded "/" stays inside its segment
        if path == "/api-quote-tokens":
            return self._quote_token(env, path)
        today = new_york_today(self.market.clock())
        if len(parts) == 4 and parts[1] == "option-chains" and parts[3] == "nested":
            symbol = urllib.parse.unquote(parts[2])
            if not _SYMBOL.match(symbol) or symbol in self.unlisted:
                return _error(404, "record_not_found", f"No option chain for {symbol}")
            return _data(equity_chain(self.market, symbol, today), path)
        if len(parts) == 4 and parts[1] == "futures-option-chains" and parts[3] == "nested":
            code = urllib.parse.unquote(parts[2]).removeprefix("/")
            if not _FUTURES_CODE.match(code) or code in self.unlisted:
                return _error(404, "record_not_found", f"No futures option chain for {code}")
            chain = futures_chain(
                self.market, code, today, streamer_symbols=self.futures_streamer_symbols
            )
            return _data(chain, path)
        return _error(404, "not_found", "Not Found")

    def _quote_token(self, env: _Environment, path: str) -> _Reply:
        if self.not_entitled:
            return _error(403, "quote_streamer.customer_not_found_error", _NOT_A_CUSTOMER)
        if env is self._sandbox and not self.sandbox_market_data:
            return _error(404, "not_found", "Market data is not available in the sandbox")
        data: dict[str, Any] = {
            "token": self.quote_token,
            "dxlink-url": self.dxlink.url,
            "level": "demo" if env is self._sandbox else "api",
        }
        if self.quote_token_lifetime is not None:
            now = self.market.clock()
            data["issued-at"] = _timestamp(now)
            data["expires-at"] = _timestamp(now + self.quote_token_lifetime)
        self.quote_tokens_issued += 1
        return _data(data, path)

    # --- HTTP ---

    async def _serve_connection(self, env: _Environment, stream: trio.SocketStream) -> None:
        async with stream:
            connection = h11.Connection(h11.SERVER, max_incomplete_event_size=_MAX_BODY)
            try:
                while await self._exchange(env, connection, stream):
                    connection.start_next_cycle()
            except (h11.ProtocolError, trio.BrokenResourceError, trio.ClosedResourceError):
                pass  # a client that broke HTTP or hung up: drop the connection

    async def _exchange(
        self, env: _Environment, connection: h11.Connection, stream: trio.SocketStream
    ) -> bool:
        """Read one request and answer it; whether the connection may carry another."""
        request: h11.Request | None = None
        body = bytearray()
        while True:
            event = connection.next_event()
            if event is h11.NEED_DATA:
                connection.receive_data(await stream.receive_some(_MAX_BODY))
            elif isinstance(event, h11.Request):
                request = event
            elif isinstance(event, h11.Data):
                body += event.data
                if len(body) > _MAX_BODY:
                    raise h11.RemoteProtocolError("body too large")
            elif isinstance(event, h11.EndOfMessage):
                break
            else:  # ConnectionClosed, or PAUSED after a hang-up
                return False
        assert request is not None
        headers = {
            name.decode().lower(): value.decode("latin-1") for name, value in request.headers
        }
        target = request.target.decode("latin-1")
        method = request.method.decode()
        try:
            reply = self._handle(env, method, target, headers, bytes(body))
        except Exception:  # a bug of the fake: answer like a real server would, and say so
            log.exception("fake tastytrade API: %s %s failed", method, target.split("?")[0])
            reply = _error(500, "internal_error", "The fake tastytrade API failed (see its log).")
        log.debug("%s %s %s -> %d", env.name, method, target.split("?")[0], reply.status)
        response_headers = [
            ("Content-Type", reply.content_type),
            ("Content-Length", str(len(reply.body))),
            ("Server", "nginx"),
            ("X-Request-Id", f"{next(self._ids):032x}"),
        ]
        await stream.send_all(
            connection.send(h11.Response(status_code=reply.status, headers=response_headers)) or b""
        )
        await stream.send_all(connection.send(h11.Data(data=reply.body)) or b"")
        await stream.send_all(connection.send(h11.EndOfMessage()) or b"")
        return connection.our_state is h11.DONE and connection.their_state is h11.DONE

    async def _listen(
        self, env: _Environment, host: str, port: int, task_status: trio.TaskStatus[None]
    ) -> None:
        listeners = await trio.open_tcp_listeners(port, host=host)
        port = listeners[0].socket.getsockname()[1]
        env.url = f"http://{host}:{port}"
        async with trio.open_nursery() as nursery:
            handler = functools.partial(self._serve_connection, env)
            await nursery.start(trio.serve_listeners, handler, listeners)
            task_status.started()


_VERSION_GONE = "The requested version is not supported."
_NOT_A_CUSTOMER = "You must be a customer to access a quote stream."


def _dumps(value: object) -> bytes:
    return orjson.dumps(value)


def _data(data: object, path: str) -> _Reply:
    return _Reply(200, _dumps({"data": data, "context": path}))


def _error(status: int, code: str, message: str) -> _Reply:
    return _Reply(status, _dumps({"error": {"code": code, "message": message}}))


def _oauth_error(status: int, code: str, description: str) -> _Reply:
    return _Reply(status, _dumps({"error_code": code, "error_description": description}))


def _same(given: object, expected: str) -> bool:
    return isinstance(given, str) and secrets.compare_digest(given.encode(), expected.encode())


def _timestamp(epoch: float) -> str:
    text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(epoch))
    return f"{text}.{int(epoch % 1 * 1000):03d}+00:00"


@asynccontextmanager
async def open_tastytrade_server(
    *,
    config: ServerConfig | None = None,
    market: Market | None = None,
    clock: Callable[[], float] = trio.current_time,
    host: str = "127.0.0.1",
    port: int = 0,
    api_port: int = 0,
) -> AsyncIterator[TastytradeServer]:
    """Run the tastytrade fake (production and sandbox APIs) beside a local DXLink server.

    Args:
        config: the DXLink server's configuration (default: simulating its market). Its
            ``token`` is the quote token handed out; a random one if it has none.
        market: the market both serve (default: a fresh :class:`Market`).
        clock: when access tokens expire (default ``trio.current_time``, so ``MockClock``
            drives it).
        host: the address all three listen on.
        port: the DXLink server's port; ``api_port`` the production API's (0: a free port;
            the sandbox API always takes a free one).

    Yields the :class:`TastytradeServer`; everything stops when the block ends.
    """
    config = config if config is not None else ServerConfig(simulate=True)
    if config.token is None:
        config = attrs.evolve(config, token=secrets.token_urlsafe(24))
    async with open_dxlink_server(host=host, port=port, config=config, market=market) as dxlink:
        server = TastytradeServer(dxlink, clock)
        with unwrap_group():
            async with trio.open_nursery() as nursery:
                await nursery.start(server._listen, server._production, host, api_port)
                await nursery.start(server._listen, server._sandbox, host, 0)
                log.info(
                    "tastytrade fake: production %s, sandbox %s, DXLink %s",
                    server.api_url,
                    server.sandbox_url,
                    dxlink.url,
                )
                try:
                    yield server
                finally:
                    nursery.cancel_scope.cancel()
