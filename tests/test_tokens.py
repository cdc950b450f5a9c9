"""Token sources: the ``get_token`` protocol, and the deprecated names before 0.2."""

from __future__ import annotations

import importlib
import warnings

import pytest
import trio

import trio_dxlink
from trio_dxlink import Quote, Token, TokenSource, open_dxlink
from trio_dxlink.testing import DXLinkServer

from .conftest import Session, until


def test_a_session_with_get_token_is_a_token_source() -> None:
    assert isinstance(Session("ws://127.0.0.1:1", ["secret"]), TokenSource)


@pytest.mark.parametrize(("old", "new"), [("QuoteToken", "Token"), ("QuoteTokenSource", None)])
def test_the_old_names_import_with_a_deprecation_warning(old: str, new: str | None) -> None:
    with pytest.warns(DeprecationWarning, match=f"trio_dxlink.{old} is deprecated"):
        value = getattr(trio_dxlink, old)
    if new is not None:
        assert value is getattr(trio_dxlink, new)
    else:  # the old protocol: an object with get_quote_token
        assert isinstance(LegacySession("ws://127.0.0.1:1"), value)
        assert not isinstance(Session("ws://127.0.0.1:1", ["secret"]), value)
    with pytest.warns(DeprecationWarning, match="is deprecated"):
        exec(f"from trio_dxlink import {old}", {})


def test_an_unknown_name_is_still_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="NoSuchName"):
        trio_dxlink.NoSuchName  # noqa: B018
    assert "Token" in importlib.import_module("trio_dxlink").__all__
    assert "QuoteToken" not in trio_dxlink.__all__


class LegacySession:
    """A token source written for trio_dxlink 0.1: only ``get_quote_token``."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.calls = 0

    async def get_quote_token(self) -> Token:
        await trio.lowlevel.checkpoint()
        self.calls += 1
        return Token("secret", self.url)


async def test_a_source_with_only_get_quote_token_still_works_and_warns(
    token_server: DXLinkServer,
) -> None:
    session = LegacySession(token_server.url)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        async with (
            open_dxlink(session) as feed,
            feed.subscribe(Quote, ["SPY"]) as rx,
        ):
            await until(token_server, lambda: ("Quote", "SPY") in token_server.subscriptions())
            token_server.publish(Quote("SPY", bid_price=2.5))
            with trio.fail_after(5):
                assert (await rx.receive()).bid_price == 2.5
    assert [w.category for w in record] == [DeprecationWarning]
    assert "LegacySession.get_quote_token() is deprecated" in str(record[0].message)
    assert session.calls == 1
    assert record[0].filename == __file__  # the warning points at the caller's open_dxlink


async def test_a_source_with_both_methods_is_asked_with_get_token(
    token_server: DXLinkServer,
) -> None:
    class Both(Session):
        async def get_quote_token(self) -> Token:
            raise AssertionError("the deprecated method must not be called")

    session = Both(token_server.url, ["secret"])
    async with open_dxlink(session) as feed:  # warnings are errors: none may be raised
        assert feed.statistics().state.value == "connected"
    assert session.calls == 1
