"""Every ```python block of README.md and docs/*.md runs here, against the local server.

One test per block, named ``FILE:LINE`` (the line of its opening fence), so a new block is
picked up without touching this file. Each block runs in a fresh namespace inside its own
``trio.run``:

* Fragments may use the names in ``LiveDocs.names`` (``server``, ``url``, ``token``, ``feed``,
  ``rx``, ``symbols``, ``http``, ``store``, ``handle``, ``resync``): a simulating local server on
  127.0.0.1 that requires ``token``, an open feed and Quote handle on it, and stand-ins for what
  is user code in the docs (not for a block run on a MockClock: see below).
* Imports, functions and classes of the *earlier* blocks of the same file are defined first, so
  a block can use what the text defined before it (``Quote``, ``widest_spread``, a pytest
  fixture from a ``# conftest.py`` block).
* Top-level ``await``/``async with``/``async for`` are allowed; a top-level ``trio.run(f, *a)``
  becomes ``await f(*a)``. ``async def main(...)`` and ``test_*`` functions the block defines
  but does not call are called, their parameters taken from the namespace by name (a fixture is
  entered as pytest would; ``autojump_clock`` runs the block on a ``MockClock``).
* A ``test_*`` function may take the pytest plugin's fixtures (``dxlink_server``,
  ``dxlink_feed``, ``dxlink_server_config``, ``dxlink_market``), entered as pytest would (once
  per test, shared by the fixtures that depend on them); a block's own fixture of the same name
  overrides the plugin's, as a ``conftest.py`` would.
* Every block is bounded by ``BOUND`` seconds (a ``test_*`` function must finish in it). A block
  that is still running then, or still looping ``GRACE`` seconds after its handles delivered
  their first events, is ended there and passes if those handles delivered events. Raising fails.
* Connections to any host but 127.0.0.1 fail the block, so nothing reaches the network.
* A block that uses ``trio_dxlink.tastytrade`` (it or an earlier block of its file imports it)
  runs beside the tastytrade fake (``open_tastytrade_server``), with ``TT_SECRET`` /
  ``TT_REFRESH`` set to the fake's credentials and tastytrade's production and sandbox
  addresses (``trio_dxlink.tastytrade.PRODUCTION_URL``, ``SANDBOX_URL``) pointed at it, so the
  examples are written exactly as against a real account. The fake is ``tt`` in the namespace.
* A block that uses ``redis_url`` runs beside a real ``redis-server`` on 127.0.0.1
  (``tests/redis_server.py``) and is skipped, loudly, where there is none.

To make a new block pass: fix the block if it is wrong. If it needs a name that is user code in
the docs (like ``handle``), add a stand-in to ``LiveDocs.names`` (for a TLS example, say, a
``ctx`` from a trustme CA and a local server behind TLS). Only a block that cannot run at all
gets ``<!-- docs-test: skip REASON -->`` on the line before its fence.
"""

from __future__ import annotations

import ast
import gc
import inspect
import itertools
import re
import tempfile
import warnings
from collections.abc import Callable, Iterator
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
import trio.testing

from trio_dxlink import (
    DXLinkFeed,
    IndexedEvent,
    Quote,
    Subscription,
    event_class,
    open_dxlink,
    pytest_plugin,
)
from trio_dxlink.testing import (
    SIMULATED_TYPES,
    DXLinkServer,
    Market,
    ServerConfig,
    open_dxlink_server,
    open_tastytrade_server,
)

from .redis_server import RedisServer, running_redis

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

BOUND = 2.0  # seconds a block may run (virtual seconds on a MockClock: VIRTUAL_BOUND)
VIRTUAL_BOUND = 600.0
GRACE = 0.25  # how long a loop keeps running after its first events, before it is ended
TICK = 0.02  # the local server's simulated update interval, and the publisher's
TOKEN = "docs-token"  # what the local server requires
QUOTE_TOKENS_URL = "https://api.tastyworks.com/api-quote-tokens"

FENCE = re.compile(r"^(?P<indent>\s*)```python\s*$")
CLOSE = re.compile(r"^\s*```\s*$")
SKIP = re.compile(r"^\s*<!--\s*docs-test:\s*skip\b(?P<reason>.*?)-->\s*$")


# --- finding the blocks -----------------------------------------------------------------------


@attrs.frozen
class Block:
    path: Path
    line: int  # 1-based line of the opening fence
    source: str
    skip: str | None  # the reason given in a skip marker

    @property
    def name(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"

    def parse(self) -> ast.Module:
        tree = ast.parse(self.source, filename=str(self.path))
        ast.increment_lineno(tree, self.line)  # tracebacks point at the Markdown file
        return tree


def find_blocks(path: Path) -> list[Block]:
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks = []
    i = 0
    while i < len(lines):
        fence = FENCE.match(lines[i])
        if not fence:
            i += 1
            continue
        start, indent = i, len(fence["indent"])
        i += 1
        body = []
        while i < len(lines) and not CLOSE.match(lines[i]):
            body.append(lines[i][indent:])
            i += 1
        before = next((text for text in reversed(lines[:start]) if text.strip()), "")
        marker = SKIP.match(before)
        reason = marker["reason"].strip() if marker else None
        assert reason != "", f"{path.name}:{start + 1}: a docs-test skip marker needs a reason"
        blocks.append(Block(path, start + 1, "\n".join(body) + "\n", reason))
        i += 1
    return blocks


BLOCKS = [block for path in DOCS for block in find_blocks(path)]


def params() -> Iterator[Any]:
    for block in BLOCKS:
        marks = [pytest.mark.skip(reason=block.skip)] if block.skip else []
        yield pytest.param(block, id=block.name, marks=marks)


def test_the_docs_have_python_blocks() -> None:
    # The parser must keep finding the blocks (a changed fence style would silently drop them).
    counts = {path.name: sum(b.path == path for b in BLOCKS) for path in DOCS}
    assert counts["README.md"] >= 2
    assert counts["testing.md"] >= 8
    assert counts["usage.md"] >= 16
    assert counts["tastytrade.md"] >= 6
    assert counts["tastytrade-streamer.md"] >= 3
    assert counts["tutorial.md"] >= 6
    assert counts["cookbook.md"] >= 6


# --- preparing a block ------------------------------------------------------------------------


class _TrioRunToAwait(ast.NodeTransformer):
    """Top-level ``trio.run(f, *args)`` becomes ``await f(*args)`` (we are inside a run)."""

    def visit_Expr(self, node: ast.Expr) -> ast.AST:
        call = node.value
        if (
            isinstance(call, ast.Call)
            and ast.unparse(call.func) == "trio.run"
            and call.args
            and not call.keywords
        ):
            inner = ast.Call(func=call.args[0], args=call.args[1:], keywords=[])
            return ast.fix_missing_locations(ast.copy_location(ast.Expr(ast.Await(inner)), node))
        return node


DEFINITIONS = (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)


def prelude(block: Block) -> ast.Module:
    """Imports, functions and classes of the earlier runnable blocks of the same file."""
    body: list[ast.stmt] = []
    for earlier in BLOCKS:
        if earlier.path != block.path or earlier.line >= block.line or earlier.skip:
            continue
        body.extend(node for node in earlier.parse().body if isinstance(node, DEFINITIONS))
    return ast.Module(body=body, type_ignores=[])


def entry_points(tree: ast.Module) -> list[ast.FunctionDef | ast.AsyncFunctionDef]:
    """``main`` and ``test_*`` functions the block defines but does not call itself."""
    called = {
        node.id
        for statement in tree.body
        if not isinstance(statement, DEFINITIONS)
        for node in ast.walk(statement)
        if isinstance(node, ast.Name)
    }
    return [
        node
        for node in tree.body
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        and (node.name == "main" or node.name.startswith("test"))
        and node.name not in called
    ]


def _args(arguments: ast.arguments) -> list[ast.arg]:
    return [*arguments.posonlyargs, *arguments.args, *arguments.kwonlyargs]


# --- the live environment ---------------------------------------------------------------------


@attrs.define
class _Response:
    data: dict[str, Any]

    def raise_for_status(self) -> None:
        pass

    def json(self) -> dict[str, Any]:
        return self.data


@attrs.define
class FakeTastytrade:
    """Stands in for an HTTP client logged in to tastytrade. It makes no network calls: the
    quote-token endpoint answers with the local server's URL and token."""

    url: str
    token: str

    async def get(self, address: str) -> _Response:
        await trio.lowlevel.checkpoint()
        assert address == QUOTE_TOKENS_URL, f"the http stand-in only knows {QUOTE_TOKENS_URL}"
        data = {"token": self.token, "dxlink-url": self.url, "level": "api"}
        return _Response({"data": data, "context": "/api-quote-tokens"})


@attrs.define
class Recorder:
    """Stands in for user code (``handle(event)``, ``resync()``, ``store.write_many(batch)``)."""

    calls: list[tuple[Any, ...]] = attrs.field(factory=list)

    def __call__(self, *args: Any) -> None:
        self.calls.append(args)

    def write_many(self, batch: list[Any]) -> None:
        self.calls.append((batch,))


BAD_QUOTES = '{"type":"FEED_DATA","channel":%d,"data":["Quote",["SPY",1.0]]}'  # a ragged row


async def publish_extras(server: DXLinkServer) -> None:
    """Every TICK, publish made-up events for what the simulated market does not serve (Order,
    ...); every fifth, send each Quote channel a malformed frame (see "Bad data" in usage.md)."""
    for tick in itertools.count(1):
        await trio.sleep(TICK)
        keys: set[tuple[str, str, str | None]] = set()
        for conn in server.live:
            for cid, channel in conn.channels.items():
                keys.update(channel.subscriptions)
                if tick % 5 == 0 and any(k[0] == "Quote" for k in channel.subscriptions):
                    server.send_raw(conn.id, BAD_QUOTES % cid)
        for kind, symbol, source in sorted(keys, key=str):
            if kind in SIMULATED_TYPES or symbol == "*":
                continue
            cls = event_class(kind)
            fields: dict[str, Any] = {"source": source} if source else {}
            if issubclass(cls, IndexedEvent):
                fields["index"] = tick
            server.publish(cls(symbol, **fields))


class LiveDocs:
    """A local server (simulating a market, requiring ``TOKEN``), a feed and a handle on it."""

    def __init__(
        self,
        nursery: trio.Nursery,
        server: DXLinkServer,
        feed: DXLinkFeed,
        rx: Subscription[Quote],
    ) -> None:
        self.nursery = nursery
        self.server = server
        self.names: dict[str, Any] = {
            "server": server,
            "url": server.url,
            "token": TOKEN,
            "feed": feed,
            "rx": rx,
            "symbols": ["SPY", "AAPL", "QQQ"],
            "http": FakeTastytrade(server.url, TOKEN),
            "store": Recorder(),
            "handle": Recorder(),
            "resync": Recorder(),
        }

    @classmethod
    async def open(cls, stack: AsyncExitStack) -> LiveDocs:
        config = ServerConfig(simulate=True, token=TOKEN, update_interval=TICK)
        server = await stack.enter_async_context(
            open_dxlink_server(config=config, market=Market(seed=7))
        )
        feed = await stack.enter_async_context(open_dxlink(server.url, token=TOKEN))
        rx = await stack.enter_async_context(feed.subscribe(Quote, ["SPY", "AAPL"]))
        nursery = await stack.enter_async_context(trio.open_nursery())
        stack.callback(nursery.cancel_scope.cancel)  # runs before the nursery exits
        nursery.start_soon(publish_extras, server)
        return cls(nursery, server, feed, rx)


def mentions_tastytrade(block: Block) -> bool:
    """Whether ``block``, or an earlier runnable block of its file, uses trio_dxlink.tastytrade."""
    return any(
        "trio_dxlink.tastytrade" in earlier.source
        for earlier in BLOCKS
        if earlier.path == block.path and earlier.line <= block.line and not earlier.skip
    )


async def open_tastytrade_fake(stack: AsyncExitStack, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The tastytrade fake, standing in for production and the sandbox (see the module doc)."""
    from trio_dxlink.tastytrade import _session

    config = ServerConfig(simulate=True, update_interval=TICK)
    tt = await stack.enter_async_context(
        open_tastytrade_server(config=config, market=Market(seed=7))
    )
    monkeypatch.setenv("TT_SECRET", tt.client_secret)
    monkeypatch.setenv("TT_REFRESH", tt.refresh_token)
    monkeypatch.setattr(_session, "PRODUCTION_URL", tt.api_url)
    monkeypatch.setattr(_session, "SANDBOX_URL", tt.sandbox_url)
    return tt


# --- running a block --------------------------------------------------------------------------


@contextmanager
def redis_for_docs() -> Iterator[RedisServer]:
    """A real redis-server on 127.0.0.1 (``redis_url`` in a block's namespace), skipping the
    block loudly where there is none."""
    pytest.importorskip("coredis")
    with tempfile.TemporaryDirectory() as directory, running_redis(Path(directory)) as redis:
        yield redis
    with warnings.catch_warnings():  # coredis' leak: see tests/test_bridge.py
        warnings.filterwarnings("ignore", "Unclosed <MemoryObject", ResourceWarning)
        gc.collect()


async def call_with_fixtures(function: Callable[..., Any], namespace: dict[str, Any]) -> None:
    """Call ``function`` with its parameters taken from ``namespace`` by name, as pytest would."""
    async with AsyncExitStack() as stack:
        result = function(**await fixture_values(stack, function, namespace, {}))
        if inspect.isawaitable(result):
            await result


async def fixture_values(
    stack: AsyncExitStack,
    function: Callable[..., Any],
    namespace: dict[str, Any],
    entered: dict[str, Any],
) -> dict[str, Any]:
    """``function``'s arguments from ``namespace``. A pytest fixture there (a decorated function,
    so it has a ``__wrapped__``) is entered in ``stack`` once (``entered`` keeps its value for
    the other fixtures that take it), and its value is passed."""
    kwargs = {}
    for name, parameter in inspect.signature(function).parameters.items():
        if name not in namespace:
            assert parameter.default is not parameter.empty, (
                f"{function.__name__}() needs {name!r}, which the docs harness does not provide"
            )
            continue
        value = namespace[name]
        if name in entered:
            value = entered[name]
        elif callable(value) and inspect.unwrap(value) is not value:
            fixture = inspect.unwrap(value)
            args = await fixture_values(stack, fixture, namespace, entered)
            if inspect.isasyncgenfunction(fixture):
                value = await stack.enter_async_context(asynccontextmanager(fixture)(**args))
            elif inspect.isgeneratorfunction(fixture):
                value = stack.enter_context(contextmanager(fixture)(**args))
            else:
                value = fixture(**args)
                if inspect.isawaitable(value):
                    value = await value
            entered[name] = value
        kwargs[name] = value
    return kwargs


async def run_block(
    block: Block, handles: list[Subscription[Any]], clock: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    tree = _TrioRunToAwait().visit(block.parse())
    code = compile(tree, str(block.path), "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    entries = [node.name for node in entry_points(tree)]
    namespace: dict[str, Any] = {"__name__": "docs_block"}
    if clock is not None:
        namespace["autojump_clock"] = clock
    namespace.update({name: getattr(pytest_plugin, name) for name in pytest_plugin.__all__})
    async with AsyncExitStack() as stack:
        live = None
        if clock is None:  # (on a MockClock the simulating server would spin the clock)
            live = await LiveDocs.open(stack)
            namespace.update(live.names)
        if mentions_tastytrade(block):
            namespace["tt"] = await open_tastytrade_fake(stack, monkeypatch)
        if "redis_url" in block.source:
            namespace["redis_url"] = stack.enter_context(redis_for_docs()).url
        exec(compile(prelude(block), str(block.path), "exec"), namespace)

        def delivered() -> int:
            return sum(handle.statistics().delivered for handle in handles)

        bound = VIRTUAL_BOUND if clock is not None else BOUND
        running: str | None = "the block"
        with trio.move_on_after(bound) as window:
            if live is not None and not any(e.startswith("test") for e in entries):
                live.nursery.start_soon(end_after_data, live.server, delivered, window)
            if code.co_flags & inspect.CO_COROUTINE:
                await eval(code, namespace)
            else:
                exec(code, namespace)
            for name in entries:
                running = f"{name}()"
                await call_with_fixtures(namespace[name], namespace)
            running = None
        if window.cancelled_caught:
            assert running is not None
            assert not running.startswith("test"), f"{running} did not finish in {bound} s"
            assert delivered(), f"{running} ran for {bound} s and received no events"


async def end_after_data(server: DXLinkServer, delivered: Callable[[], int], window: Any) -> None:
    """End the block's run window GRACE seconds after its handles delivered their first events.

    ``wait_for`` looks again whenever the server sends a frame, as it does every TICK here.
    """
    await server.wait_for(lambda: delivered() > 0)
    await trio.sleep(GRACE)
    window.cancel()


@pytest.mark.parametrize("block", list(params()))
def test_doc_block(block: Block, monkeypatch: pytest.MonkeyPatch) -> None:
    # Only 127.0.0.1: every client connection (trio-websocket, websockets) goes through here.
    open_tcp_stream = trio.open_tcp_stream

    async def loopback_only(host: Any, port: int, **kwargs: Any) -> trio.SocketStream:
        assert host == "127.0.0.1", f"a docs block tried to connect to {host}:{port}"
        return await open_tcp_stream(host, port, **kwargs)

    monkeypatch.setattr(trio, "open_tcp_stream", loopback_only)

    # Every handle the block opens, to tell a loop that received data from one that did not.
    handles: list[Subscription[Any]] = []
    subscribe = DXLinkFeed.subscribe

    def tracked(self: DXLinkFeed, *args: Any, **kwargs: Any) -> Subscription[Any]:
        handle = subscribe(self, *args, **kwargs)
        handles.append(handle)
        return handle

    monkeypatch.setattr(DXLinkFeed, "subscribe", tracked)

    tree = block.parse()
    wants_clock = any(
        arg.arg == "autojump_clock" for f in entry_points(tree) for arg in _args(f.args)
    )
    clock = trio.testing.MockClock(autojump_threshold=0) if wants_clock else None
    trio.run(run_block, block, handles, clock, monkeypatch, clock=clock)
