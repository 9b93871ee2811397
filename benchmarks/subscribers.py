"""Subscriber-list speed: import of 100,000 rows; load of a 1,000,000-event ledger and lookups.

Run: .venv/bin/python benchmarks/subscribers.py [--rows 100000] [--events 1000000]
Each phase runs in its own process so its peak memory (max RSS) is its own.
Targets: import 100k in under 5 s; ledger load of 1M in under 2 s and under 200 MB.
"""

from __future__ import annotations

import argparse
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))


def make_export(path: Path, rows: int) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        fh.write("Email Address,First Name,Last Name,MEMBER_RATING,OPTIN_TIME\n")
        for i in range(rows):
            fh.write(f"Reader.{i}@Mail{i % 977}.example.net,Reader,Number {i},{i % 5},2024-01-01 10:00:00\n")


def make_ledger(path: Path, events: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    kinds = ["unsubscribe", "bounce", "spamreport", "invalid", "resubscribe"]
    rnd = random.Random(1)
    with open(path, "w", encoding="utf-8") as fh:
        fh.write("email,event,at,source,detail\n")
        for i in range(events):
            fh.write(f"reader.{i}@mail{i % 977}.example.net,{rnd.choice(kinds)},2026-11-25T10:00:00Z,sendgrid,\n")


def phase(name: str, root: Path, n: int) -> None:
    if name == "import":
        from newsletter.subscribers import import_exports

        start = time.perf_counter()
        report = import_exports(root, [root / "export.csv"])
        took = time.perf_counter() - start
        assert report.added == n, report
        print(f"import {n:,} rows: {took:.2f} s ({took / n * 1e6:.1f} us/row)", end="")
    else:
        from newsletter.ledger import load_ledger

        start = time.perf_counter()
        ledger = load_ledger(root)
        took = time.perf_counter() - start
        t2 = time.perf_counter()
        hits = sum(ledger.is_suppressed(f"Reader.{i}@Mail{i % 977}.example.net") for i in range(n))
        lookup = (time.perf_counter() - t2) / n * 1e9
        print(f"ledger load {n:,} events: {took:.2f} s; lookup {lookup:.0f} ns each ({hits:,} suppressed)", end="")
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"; peak RSS {peak_mb:.0f} MB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--phase", choices=["import", "ledger"], help=argparse.SUPPRESS)
    parser.add_argument("--root", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        phase(args.phase, args.root, args.rows if args.phase == "import" else args.events)
        return
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make_export(root / "export.csv", args.rows)
        subprocess.run([sys.executable, __file__, "--phase", "import", "--root", tmp, "--rows", str(args.rows)],
                       check=True)
        (root / "subscribers" / "subscribers.csv").unlink()
        make_ledger(root / "subscribers" / "unsubscribes.csv", args.events)
        subprocess.run([sys.executable, __file__, "--phase", "ledger", "--root", tmp, "--events", str(args.events)],
                       check=True)
    print("targets: import 100k < 5 s; ledger 1M load < 2 s and < 200 MB")


if __name__ == "__main__":
    main()
