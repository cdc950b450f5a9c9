"""The ``record`` and ``replay`` subcommands, run as real subprocesses against the embedded
local server (127.0.0.1)."""

from __future__ import annotations

import json
from pathlib import Path

from trio_dxlink import read_manifest

from .test_cli import run_cli


async def test_record_then_replay_prints_the_recorded_events(tmp_path: Path) -> None:
    path = tmp_path / "session.dxrec.zst"
    result = await run_cli("record", "Quote", "SPY", "AAPL", "-o", str(path), "--count", "10")
    assert result.returncode == 0, result.stderr
    assert b"events recorded to" in result.stderr
    assert path.read_bytes().startswith(b"\x28\xb5\x2f\xfd")  # .zst: compressed
    manifest = read_manifest(path)
    assert manifest["frames"] > 0

    replayed = await run_cli("replay", str(path))
    assert replayed.returncode == 0, replayed.stderr
    events = [json.loads(line) for line in replayed.stdout.decode().splitlines()]
    assert len(events) >= 10
    assert {e["eventType"] for e in events} == {"Quote"}
    assert {e["eventSymbol"] for e in events} == {"SPY", "AAPL"}


async def test_bad_record_and_replay_arguments(tmp_path: Path) -> None:
    result = await run_cli("record", "Quote", "SPY", "-o", str(tmp_path / "x"), "--count", "0")
    assert result.returncode == 2
    assert b"--count must be positive" in result.stderr
    result = await run_cli("replay", str(tmp_path / "missing.dxrec"))
    assert result.returncode == 1
    assert b"RecordingError: cannot open recording" in result.stderr


async def test_export_writes_one_parquet_file_per_event_type(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    path = tmp_path / "session.dxrec"
    result = await run_cli("record", "Quote", "SPY", "AAPL", "-o", str(path), "--count", "5")
    assert result.returncode == 0, result.stderr
    out = tmp_path / "parquet"
    exported = await run_cli("export", str(path), "--to", "parquet", str(out))
    assert exported.returncode == 0, exported.stderr
    assert sorted(p.name for p in out.iterdir()) == ["Quote.parquet"]
    assert b"Quote:" in exported.stdout
    table = pq.read_table(out / "Quote.parquet")
    assert table.num_rows >= 5
    assert table.column_names[:3] == ["ts_event", "ts_recv", "event_symbol"]
    assert set(table.column("event_symbol").to_pylist()) == {"SPY", "AAPL"}
    assert table.column("ts_recv").null_count == 0

    bad = await run_cli("export", str(path), "--to", "csv", str(out))
    assert bad.returncode == 2
