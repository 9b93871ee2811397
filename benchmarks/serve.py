"""`serve` under load: sign-up and one-click latency while 20 clients post both, with a 100,000-reader list and a
300,000-line ledger, against the floor of the same run (a /healthz round trip under the same load).

Run: .venv/bin/python benchmarks/serve.py [--readers 100000] [--ledger 300000] [--clients 20] [--seconds 10]
`newsletter serve` runs as a real process; the fake SendGrid (tests/fake_sendgrid.py, 50 ms latency, checking one
body in 50 against the schema) runs in its own, so the outbox worker sends the confirmation emails and the pusher
tells SendGrid of the opt-outs while the clients post. Each client keeps one connection alive and cycles: a
sign-up (a new address, a pending one, a reader on the list, an unsubscribed one, from its own X-Forwarded-For
address), a one-click unsubscribe of a reader, a /healthz. The first second is a warm-up and is not counted.
Targets: sign-up and one-click under 50 ms median and under 250 ms p99.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))
CONFIG = (REPO / "tests" / "conftest.py").read_text().split('FILLED_CONFIG = """\\\n')[1].split('"""')[0]
SECRET = "bench-secret-0123456789abcdef0123456789"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def make_root(tmp: Path, readers: int, events: int) -> Path:
    """A newsletter folder with a list of `readers` and a ledger of `events` lines, already pushed to SendGrid."""
    root = tmp / "letters"
    (root / "subscribers").mkdir(parents=True)
    shutil.copytree(REPO / "issues", root / "issues")
    shutil.copytree(REPO / "layouts", root / "layouts")
    (root / "newsletter.yaml").write_text(CONFIG)
    rows = "".join(f"reader{i}@readers.net,Reader {i}\n" for i in range(readers))
    (root / "subscribers" / "subscribers.csv").write_text("email,name\n" + rows)
    lines = "".join(f"gone{i}@readers.net,unsubscribe,2026-11-25T10:00:00Z,cli,\n" for i in range(events))
    ledger = root / "subscribers" / "unsubscribes.csv"
    ledger.write_text("email,event,at,source,detail\n" + lines)
    (root / "subscribers" / "sendgrid-push.json").write_text(json.dumps({"offset": ledger.stat().st_size}))
    return root


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Client(threading.Thread):
    """One reader's browser or mail client: a kept-alive connection, sign-up, one-click, /healthz in turn."""

    def __init__(self, n: int, port: int, stop: threading.Event, counting: threading.Event) -> None:
        super().__init__(daemon=True)
        self.n, self.port, self.stop, self.counting = n, port, stop, counting
        self.times: dict[str, list[float]] = {"sign-up": [], "one-click": [], "healthz": []}
        self.errors: list[str] = []

    def run(self) -> None:
        from newsletter.tokens import make_token

        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        i = 0
        while not self.stop.is_set():
            i += 1
            who = [f"new.{self.n}.{i}@readers.net", f"pending.{self.n}@readers.net",
                   f"reader{(self.n * 7919 + i) % 100_000}@readers.net", f"gone{self.n * 13 + i}@readers.net"][i % 4]
            form = urllib.parse.urlencode({"email": who, "first_name": "Ada"}).encode()
            self._time(conn, "sign-up", "POST", "/subscribe", form,
                       {**FORM, "X-Forwarded-For": f"10.{self.n}.{i // 250 % 250}.{i % 250}"})
            token = make_token(SECRET, f"reader{(self.n * 104729 + i * 31) % 100_000}@readers.net")
            self._time(conn, "one-click", "POST", f"/unsubscribe/{token}", b"List-Unsubscribe=One-Click", FORM)
            self._time(conn, "healthz", "GET", "/healthz", b"", {})
        conn.close()

    def _time(self, conn: http.client.HTTPConnection, kind: str, method: str, path: str, body: bytes,
              headers: dict[str, str]) -> None:
        start = time.perf_counter()
        try:
            conn.request(method, path, body=body or None, headers=headers)
            response = conn.getresponse()
            response.read()
        except (OSError, http.client.HTTPException) as exc:
            self.errors.append(f"{kind}: {exc!r}")
            conn.close()
            return
        if response.status != 200:
            self.errors.append(f"{kind}: {response.status}")
        if self.counting.is_set():
            self.times[kind].append(time.perf_counter() - start)


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--readers", type=int, default=100_000)
    parser.add_argument("--ledger", type=int, default=300_000)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--log", type=Path, help="keep serve's log here (one line per request, its time in ms)")
    args = parser.parse_args()
    exe = str(Path(sys.executable).parent / "newsletter")
    fake = subprocess.Popen([sys.executable, str(REPO / "tests" / "fake_sendgrid.py"), "--latency", "0.05",
                             "--validate-every", "50"], stdout=subprocess.PIPE, text=True)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            assert fake.stdout is not None
            env = dict(os.environ, **dict(kv.split("=", 1) for kv in fake.stdout.readline().split()),
                       NEWSLETTER_SECRET=SECRET)
            root = make_root(Path(tmp), args.readers, args.ledger)
            port = free_port()
            log = open(Path(tmp) / "serve.log", "wb")  # noqa: SIM115 - closed below
            serve = subprocess.Popen([exe, "serve", "--root", str(root), "--port", str(port)], env=env,
                                     stdout=log, stderr=subprocess.STDOUT)
            try:
                run(args, port, serve.pid)
            finally:
                serve.terminate()
                serve.wait()
                log.close()
                if args.log:
                    shutil.copy(Path(tmp) / "serve.log", args.log)
        finally:
            fake.terminate()
            fake.wait()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run(args: argparse.Namespace, port: int, pid: int) -> None:
    start = time.monotonic()
    while True:
        try:
            http.client.HTTPConnection("127.0.0.1", port, timeout=5).request("GET", "/healthz")
            break
        except OSError:
            if time.monotonic() - start > 60:
                raise SystemExit("serve did not start") from None
            time.sleep(0.05)
    print(f"serve answered after {time.monotonic() - start:.1f} s ({args.readers:,} readers, "
          f"{args.ledger:,} ledger lines)")
    stop, counting = threading.Event(), threading.Event()
    clients = [Client(n, port, stop, counting) for n in range(args.clients)]
    for c in clients:
        c.start()
    time.sleep(1.0)  # warm-up: connections opened, the list and ledger in memory
    counting.set()
    cpu = cpu_seconds(pid)
    time.sleep(args.seconds)
    cpu = cpu_seconds(pid) - cpu
    stop.set()
    for c in clients:
        c.join()
    errors = [e for c in clients for e in c.errors]
    floor = statistics.median(t for c in clients for t in c.times["healthz"])
    served = sum(len(t) for c in clients for t in c.times.values())
    print(f"{args.clients} clients for {args.seconds:g} s; errors: {len(errors)} {errors[:3]}; serve used "
          f"{cpu:.1f} s of CPU, {cpu / max(served, 1) * 1000:.2f} ms a request")
    for kind in ("sign-up", "one-click", "healthz"):
        times = [t for c in clients for t in c.times[kind]]
        median, p99 = statistics.median(times), percentile(times, 0.99)
        print(f"{kind:>10}: {len(times):6} requests, median {median * 1000:6.1f} ms, p99 {p99 * 1000:6.1f} ms, "
              f"median / floor {median / floor:4.2f}")
    print("targets: sign-up and one-click median < 50 ms, p99 < 250 ms (floor: /healthz under the same load)")


if __name__ == "__main__":
    main()
