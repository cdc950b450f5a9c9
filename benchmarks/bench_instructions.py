"""CPU instructions and cache misses per delivered event, counted by valgrind's callgrind.

Wall-clock throughput on a shared machine moves by 2-3x from one minute to the next, so a hot-path
change of a few percent cannot be seen in ``bench_throughput.py`` unless the machine is quiet.
This benchmark counts instead: it runs ``bench_throughput.py``'s own client roles (the ceiling,
and trio_dxlink with ``async for``) under callgrind against the same ``blast_server.py``, turns
collection on after a warm-up, lets the client consume ``--events`` events, turns it off, and
prints per delivered event: instructions, first-level data cache misses and last-level misses.
The last level is simulated at ``--ll`` bytes (default 512 KiB: this machine's L2) so that the
misses that cost most here are the ones counted. Figures are deterministic to about 1 %.

An estimate of cycles, ``Ir + 12 x D1 misses + 35 x LL misses``, weighs misses roughly by their
latency; it is a way to compare two builds, not a prediction of wall time.

Usage: python benchmarks/bench_instructions.py [--events N] [--ll BYTES] [--roles ceiling,dxlink]
Needs valgrind (``apt-get install valgrind``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import bench_throughput as bt  # noqa: E402 (a sibling script)

LABELS = {"ceiling": "ceiling: receive + `orjson.loads`", "dxlink": "trio_dxlink, `async for q in rx`"}


def install_counting_window(events: int) -> None:
    """Make the child's measurement window turn callgrind's collection on and off."""

    async def measure(count: Any, args: Any, *, sleep: Any, **_: Any) -> dict[str, Any]:
        while count() < 100_000:  # warm-up: imports, first frames, caches
            await sleep(0.01)
        pid = str(os.getpid())
        # blocking on purpose: no event may be consumed while collection is being switched
        subprocess.run(["callgrind_control", "-i", "on", pid], capture_output=True, check=False)  # noqa: ASYNC221
        n0 = count()
        while count() < n0 + events:
            await sleep(0.005)
        n1 = count()
        subprocess.run(["callgrind_control", "-i", "off", pid], capture_output=True, check=False)  # noqa: ASYNC221
        print(json.dumps({"counted_events": n1 - n0}), file=sys.stderr)
        return {"rate": 0.0}

    bt.measure = measure


def totals(path: Path) -> dict[str, int]:
    names: list[str] = []
    for line in path.read_text().splitlines():
        if line.startswith("events:"):
            names = line.split()[1:]
        elif line.startswith("totals:"):
            return dict(zip(names, map(int, line.split()[1:]), strict=True))
    raise RuntimeError(f"no totals in {path}")


def run_role(role: str, url: str, server_pid: int, args: argparse.Namespace) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "callgrind.out"
        cmd = [
            "valgrind",
            "--tool=callgrind",
            "--instr-atstart=no",
            "--cache-sim=yes",
            f"--LL={args.ll},8,64",
            f"--callgrind-out-file={out}",
            sys.executable,
            __file__,
            "--child",
            role,
            "--events",
            str(args.events),
            "--url",
            url,
            "--server-pid",
            str(server_pid),
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=900)
        counted = [json.loads(x) for x in proc.stderr.splitlines() if x.startswith("{")]
        if proc.returncode != 0 or not counted:
            raise RuntimeError(f"{role} failed: {proc.stderr.strip().splitlines()[-1:]}")
        n = counted[-1]["counted_events"]
        t = totals(out)
    d1 = (t["D1mr"] + t["D1mw"]) / n
    ll = (t["DLmr"] + t["DLmw"]) / n
    ir = t["Ir"] / n
    return {"events": n, "ir": ir, "d1": d1, "ll": ll, "est": ir + 12 * d1 + 35 * ll}


def child(args: argparse.Namespace) -> None:
    install_counting_window(args.events)
    child_args = [
        "--child",
        args.child,
        "--url",
        args.url,
        "--server-pid",
        str(args.server_pid),
        "--seconds",
        "1",
        "--warmup",
        "0",
        "--symbols",
        "2000",
        "--receive-buffer",
        str(bt.BIG_READ),
        "--policy",
        "LOSSLESS",
        "--handles",
        "1",
        "--transport",
        "trio-websocket",
    ]
    bt.main(child_args)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--events", type=int, default=200_000, help="events counted per role")
    p.add_argument("--ll", type=int, default=512 * 1024, help="simulated last-level cache bytes")
    p.add_argument("--roles", default="ceiling,dxlink")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--url", help=argparse.SUPPRESS)
    p.add_argument("--server-pid", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args)
        return
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        sys.exit("needs valgrind (apt-get install valgrind)")
    results: dict[str, dict[str, float]] = {}
    with bt.server() as srv:
        for role in args.roles.split(","):
            results[role] = run_role(role, srv.url, srv.proc.pid, args)
    print(f"Per delivered event, {args.events:,} events per client, COMPACT Quote frames of 500")
    print(f"events for 2,000 symbols, last level simulated at {args.ll // 1024} KiB.\n")
    print("| client | instructions | D1 misses | LL misses | estimated cycles |")
    print("|---|---:|---:|---:|---:|")
    for role, r in results.items():
        print(
            f"| {LABELS.get(role, role)} | {r['ir']:,.0f} | {r['d1']:.1f} | {r['ll']:.1f} |"
            f" {r['est']:,.0f} |"
        )
    if "ceiling" in results and "dxlink" in results:
        share = results["ceiling"]["est"] / results["dxlink"]["est"]
        print(f"\nceiling / trio_dxlink, estimated cycles: {share:.0%}")


if __name__ == "__main__":
    main()
