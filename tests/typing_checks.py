"""Static typing checks, run by ``mypy --strict tests/typing_checks.py`` in CI (never executed).

``assert_type`` fails the type check if the inferred type differs.
"""

from __future__ import annotations

import trio
from typing_extensions import assert_type

import trio_dxlink
from trio_dxlink import (
    Candle,
    DXLinkFeed,
    Event,
    Quote,
    Subscription,
    Token,
    TokenSource,
    event_class,
    open_dxlink,
)
from trio_dxlink.events import event_type


async def subscription_types(feed: DXLinkFeed) -> None:
    async with feed.subscribe(Quote, ["SPY"]) as rx:
        assert_type(rx, Subscription[Quote])
        async for quote in rx:
            assert_type(quote, Quote)
            assert_type(quote.bid_price, float)
        assert_type(await rx.receive(), Quote)
        assert_type(await rx.receive_batch(), list[Quote])
        async for batch in rx.batches():
            assert_type(batch, list[Quote])
    async with feed.subscribe(Candle, ["AAPL{=5m}"], from_time=0) as candles:
        async for candle in candles:
            assert_type(candle.close, float)
            assert_type(candle.snapshot_end, bool)
    assert_type(await feed.get_event(Quote, "SPY"), Quote)


async def handles_are_receive_channels(feed: DXLinkFeed) -> None:
    async with feed.subscribe(Quote, ["SPY"]) as rx:
        channel: trio.abc.ReceiveChannel[Quote] = rx
        assert_type(await channel.receive(), Quote)
        assert_type(rx.receive_nowait(), Quote)


class _Tokens:
    async def get_token(self) -> Token:
        return Token("t", "wss://example/dxlink", expires_at=None)


class _OldTokens:
    async def get_quote_token(self) -> tuple[str, str]:
        return ("t", "wss://example/dxlink")


async def token_sources() -> None:
    source: TokenSource = _Tokens()
    async with open_dxlink(source) as feed:
        assert_type(feed, DXLinkFeed)
    async with open_dxlink(_OldTokens()) as feed:  # deprecated, still accepted
        assert_type(feed, DXLinkFeed)
    old: trio_dxlink.QuoteToken = Token("t", "wss://example/dxlink")
    assert_type(old.token, str)


@event_type("Message")
class Message(Event):
    event_symbol: str
    event_time: int = 0
    attachment: str | None = None


async def declared_event_types(feed: DXLinkFeed) -> None:
    message = Message("NEWS", attachment="hi")
    assert_type(message.attachment, str | None)
    async with feed.subscribe(Message, ["NEWS"]) as rx:
        assert_type(await rx.receive(), Message)
    assert_type(event_class("Message"), type[Event])
