"""The pytest plugin: the README's test file, run with a plain ``pytest`` in a fresh project
directory, using only the plugin's fixtures (found through the ``pytest11`` entry point)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from trio_dxlink import DXLinkFeed, FeedState, Quote
from trio_dxlink.testing import DXLinkServer, ServerConfig

README = Path(__file__).resolve().parent.parent / "README.md"


def readme_block(language: str, first_line: str) -> str:
    """The README's ```language block whose first line is ``first_line``."""
    for match in re.finditer(rf"```{language}\n(.*?)```", README.read_text(), re.S):
        if match.group(1).startswith(first_line):
            return match.group(1)
    raise AssertionError(f"no ```{language} block starting {first_line!r} in the README")


def run_pytest(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_readme_test_file_passes_with_plain_pytest(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text(readme_block("toml", "[tool.pytest.ini_options]"))
    (tmp_path / "test_strategy.py").write_text(readme_block("python", "# test_strategy.py"))
    result = run_pytest(tmp_path, "-q")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout


def test_a_failing_user_test_fails(tmp_path: Path) -> None:
    # the plugin's fixtures really run the test: a wrong expectation is reported
    (tmp_path / "pyproject.toml").write_text(readme_block("toml", "[tool.pytest.ini_options]"))
    wrong = readme_block("python", "# test_strategy.py").replace(
        "quote.ask_price == 1.1", "quote.ask_price == 2.2"
    )
    (tmp_path / "test_strategy.py").write_text(wrong)
    result = run_pytest(tmp_path, "-q")
    assert result.returncode == 1
    assert "1 failed" in result.stdout


def test_the_config_fixture_can_be_overridden(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text(readme_block("toml", "[tool.pytest.ini_options]"))
    (tmp_path / "conftest.py").write_text(
        "import pytest\n"
        "from trio_dxlink.testing import ServerConfig\n\n"
        "@pytest.fixture\n"
        "def dxlink_server_config():\n"
        "    return ServerConfig(token='sesame', simulate=False)\n"
    )
    (tmp_path / "test_token.py").write_text(
        "async def test_token(dxlink_server, dxlink_feed, autojump_clock):\n"
        "    assert dxlink_server.config.token == 'sesame'\n"
        "    assert dxlink_server.live[0].authorized\n"
        "    import trio\n"
        "    await trio.sleep(7200)  # two virtual hours of keepalives\n"
        "    assert dxlink_feed.statistics().reconnects == 0\n"
    )
    result = run_pytest(tmp_path, "-q")
    assert result.returncode == 0, result.stdout + result.stderr


# The plugin is loaded in this suite too (it is installed): its fixtures work here as well.


@pytest.fixture
def dxlink_server_config() -> ServerConfig:
    return ServerConfig(simulate=False, token="secret")


async def test_the_fixtures_in_this_suite(
    dxlink_server: DXLinkServer, dxlink_feed: DXLinkFeed
) -> None:
    assert dxlink_feed.state is FeedState.CONNECTED
    assert dxlink_server.live[0].authorized
    async with dxlink_feed.subscribe(Quote, ["SPY"]) as rx:
        await dxlink_server.wait_for(lambda: ("Quote", "SPY") in dxlink_server.subscriptions())
        dxlink_server.publish(Quote("SPY", bid_price=3.0))
        assert (await rx.receive()).bid_price == 3.0
