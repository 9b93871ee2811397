"""Send speed and memory: 100,000 and 1,000,000 synthetic readers against the fake SendGrid with 20 ms latency.

Run: .venv/bin/python benchmarks/send.py [--readers 100000 1000000] [--latency 0.02]
The fake runs in its own process (validating one body in 50 against the schema); `newsletter send` runs as a
real process, pre-send check with SpamAssassin included, whose peak RSS is measured. Each size is sent twice
into fresh folders: "cold" (nothing scored yet) and "after check" (`newsletter check` ran first, as a writer
does, so the spam score is cached). Prints wall time, CPU, requests, bytes per reader and peak RSS.
Targets: 100k readers in <= 3 s after a check and <= 5 s cold, peak RSS <= 150 MB; 1M in <= 25 s, memory flat.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SLUG = "micro-moments-of-connection"
CONFIG = (REPO / "tests" / "conftest.py").read_text().split('FILLED_CONFIG = """\\\n')[1].split('"""')[0]
CONFIG = CONFIG.replace("check:\n  spam: false\n", "")  # the real pre-send check, SpamAssassin included


def make_root(tmp: Path, readers: int, concurrency: int) -> Path:
    root = tmp / "letters"
    (root / "subscribers").mkdir(parents=True)
    shutil.copytree(REPO / "issues", root / "issues")
    shutil.copytree(REPO / "layouts", root / "layouts")
    (root / "newsletter.yaml").write_text(CONFIG + f"sendgrid:\n  concurrency: {concurrency}\n")
    with open(root / "subscribers" / "subscribers.csv", "w", encoding="utf-8") as fh:
        fh.write("email,name\n")
        for i in range(readers):
            fh.write(f"reader.{i}@mail{i % 997}.readers.net,Reader {i}\n")
    with open(root / "subscribers" / "unsubscribes.csv", "w", encoding="utf-8") as fh:
        fh.write("email,event,at,source,detail\n")
        for i in range(0, readers, 100):  # 1% suppressed
            fh.write(f"READER.{i}@mail{i % 997}.readers.net,unsubscribe,2026-11-25T10:00:00Z,bench,\n")
    return root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--readers", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--latency", type=float, default=0.02)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=1, help="runs of each; the fastest is printed")
    args = parser.parse_args()
    exe = str(Path(sys.executable).parent / "newsletter")
    fake = subprocess.Popen([sys.executable, str(REPO / "tests" / "fake_sendgrid.py"), "--latency",
                             str(args.latency), "--validate-every", "50"], stdout=subprocess.PIPE, text=True)
    try:
        assert fake.stdout is not None
        line = fake.stdout.readline().split()
        env = dict(os.environ, **dict(kv.split("=", 1) for kv in line), NEWSLETTER_SECRET="bench-secret")
        url = env["SENDGRID_API_URL"]
        for n, mode in [(n, mode) for n in args.readers for mode in ("cold", "after check")
                        for _ in range(args.repeat)]:
            before = json.load(urllib.request.urlopen(f"{url}/_stats"))
            with tempfile.TemporaryDirectory() as tmp:
                root = make_root(Path(tmp), n, args.concurrency)
                if mode == "after check":
                    subprocess.run([exe, "check", "--root", str(root), "--issue", SLUG], env=env,
                                   capture_output=True, check=True)
                start = time.perf_counter()
                proc = subprocess.Popen([exe, "send", "--root", str(root), "--issue", SLUG, "--yes"],
                                        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, text=True)
                _, status, usage = os.wait4(proc.pid, 0)
                wall = time.perf_counter() - start
                out = proc.stdout.read() if proc.stdout else ""
                if status != 0:
                    print(out)
                    raise SystemExit(f"send failed with status {status}")
            after = json.load(urllib.request.urlopen(f"{url}/_stats"))
            requests = after["requests"] - before["requests"]
            delivered = after["copies"] - before["copies"]
            size = after["bytes"] - before["bytes"]
            body_shared = 2 * (REPO / "tests" / "golden" / SLUG / "email.html").stat().st_size  # approx, per request
            per_reader = (size - requests * body_shared) / max(delivered, 1)
            print(f"{n:>9,} readers, {mode:>11}: {wall:6.2f} s wall, {delivered:,} delivered, {requests} requests, "
                  f"{size / 1e6:.0f} MB sent, ~{per_reader:.0f} bytes per reader (beyond the shared content), "
                  f"peak RSS {usage.ru_maxrss / 1024:.0f} MB, CPU {usage.ru_utime + usage.ru_stime:.1f} s, "
                  f"schema failures {after['schema_failures'] - before['schema_failures']}")
    finally:
        fake.terminate()
        fake.wait()
    print("targets: 100k <= 3 s after check, <= 5 s cold, peak RSS <= 150 MB; 1M <= 25 s, memory flat in N")


if __name__ == "__main__":
    main()
