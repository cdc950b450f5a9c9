"""The command line's tastytrade options (``stream --tastytrade``, ``serve --tastytrade``).

``stream --tastytrade`` signs in to tastytrade's API with ``TT_SECRET`` / ``TT_REFRESH`` (never
from a flag: a flag's value shows in the process list) and streams through
``open_dxlink(session)``. ``serve --tastytrade`` runs the tastytrade fake
(:func:`trio_dxlink.testing.open_tastytrade_server`) beside the local DXLink server and prints
the API addresses with the fake's credentials (made up for the run, so nothing of a real account
is printed).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import urllib.parse
from typing import TYPE_CHECKING

import trio

from ._tokens import may_carry_secret

if TYPE_CHECKING:
    from .tastytrade import TastytradeSession
    from .testing import Market, ServerConfig, TastytradeServer

__all__ = [
    "add_serve_options",
    "add_stream_options",
    "fake_banner",
    "serve_tastytrade_fake",
    "session_from_args",
    "stream_usage_problem",
]

_INSTALL = 'the tastytrade options need httpx: pip install "trio-dxlink[tastytrade]"'


def add_stream_options(stream: argparse.ArgumentParser) -> None:
    group = stream.add_argument_group(
        "tastytrade", "sign in with TT_SECRET (client secret) and TT_REFRESH (refresh token)"
    )
    group.add_argument(
        "--tastytrade", action="store_true", help="get the DXLink URL and token from tastytrade"
    )
    group.add_argument("--sandbox", action="store_true", help="tastytrade's sandbox environment")
    group.add_argument(
        "--api-url", help="another tastytrade API address (the fake of `serve --tastytrade`)"
    )


def add_serve_options(serve: argparse.ArgumentParser) -> None:
    group = serve.add_argument_group("tastytrade")
    group.add_argument(
        "--tastytrade", action="store_true", help="also run a fake tastytrade API (sign-in, quote"
        " tokens, option chains) whose quote tokens are for this server",
    )  # fmt: skip
    group.add_argument(
        "--api-port", type=int, default=0, help="the fake API's port (0: any free port)"
    )
    group.add_argument(
        "--not-entitled",
        action="store_true",
        help="fault: the login is not entitled to market data (no quote tokens)",
    )


def stream_usage_problem(args: argparse.Namespace) -> str | None:
    """What is wrong with ``stream``'s tastytrade options, if anything."""
    if not args.tastytrade:
        if args.sandbox or args.api_url is not None:
            return "--sandbox and --api-url need --tastytrade"
        return None
    if args.url is not None:
        return "--tastytrade gets the DXLink URL from tastytrade: leave out --url"
    if args.token is not None:
        return "--tastytrade gets the DXLink token from tastytrade: leave out --token"
    if args.api_url is not None:
        parts = urllib.parse.urlsplit(args.api_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            return f"--api-url must be an http:// or https:// URL, got {args.api_url!r}"
        if parts.scheme == "http" and not may_carry_secret(args.api_url):
            return (
                f"refusing to send tastytrade credentials in clear text to {parts.hostname!r}:"
                " an http:// --api-url is only allowed for loopback addresses; use https://"
            )
    missing = [name for name in ("TT_SECRET", "TT_REFRESH") if not os.environ.get(name)]
    if missing:
        return (
            f"{' and '.join(missing)} not set: export your OAuth application's client secret as"
            " TT_SECRET and a grant's refresh token as TT_REFRESH (from my.tastytrade.com)"
        )
    if importlib.util.find_spec("httpx") is None:
        return _INSTALL
    return None


def session_from_args(args: argparse.Namespace) -> TastytradeSession:
    """The (not yet entered) session ``stream --tastytrade`` signs in with."""
    from .tastytrade import TastytradeSession

    return TastytradeSession(sandbox=args.sandbox, base_url=args.api_url)


async def serve_tastytrade_fake(
    args: argparse.Namespace,
    config: ServerConfig,
    market: Market,
    *,
    task_status: trio.TaskStatus[TastytradeServer] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run the tastytrade fake and its DXLink server until cancelled (``nursery.start`` it)."""
    from .testing import open_tastytrade_server

    async with open_tastytrade_server(
        config=config, market=market, host=args.host, port=args.port, api_port=args.api_port
    ) as server:
        server.not_entitled = args.not_entitled
        task_status.started(server)
        await trio.sleep_forever()


def fake_banner(server: TastytradeServer) -> list[str]:
    """The lines ``serve --tastytrade`` prints after ``listening on ...``: the fake's API
    addresses and its credentials (made up for this run; not secrets)."""
    return [
        f"tastytrade API on {server.api_url}"
        f" (TT_SECRET={server.client_secret} TT_REFRESH={server.refresh_token})",
        f"tastytrade sandbox API on {server.sandbox_url}"
        f" (TT_SECRET={server.sandbox_client_secret} TT_REFRESH={server.sandbox_refresh_token})",
    ]
