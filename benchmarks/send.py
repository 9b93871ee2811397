"""Send speed and memory against a floor measured in the same run, with the same fake SendGrid.

Run: .venv/bin/python benchmarks/send.py --floor [--readers 100000 1000000] [--repeat N] [--latency 0.02]

The fake (tests/fake_sendgrid.py) runs in its own process with 20 ms latency per mail/send answer, validating one
body in 50 against SendGrid's schema. For each size the list has that many readers and the ledger suppresses 1%.

- floor: `floor_send` below, in this process: the least work any correct sender must do, written plainly in one
  function (read the list and the ledger; drop suppressed readers and duplicates; one HMAC-SHA256 unsubscribe
  token per reader; bodies of 1,000 personalizations, the shared part encoded once; one journal record written and
  fsynced per batch before its request leaves; 4 requests in flight over kept-alive connections).
- after check: the whole `newsletter send --yes` process (start-up, pre-send check, key check, sync, counting,
  sending), after `newsletter check` scored the message (as a writer does).
- cold: the same with nothing scored yet: SpamAssassin runs during the send.
Each is timed as wall time; the send's peak RSS is its own (`wait4` in a small launcher; in the cold run it includes
the SpamAssassin processes it started and reaped). With --repeat N the median of N runs of each is used, the
three kinds interleaved.
Child processes run with bytecode caching on (PYTHONDONTWRITEBYTECODE removed), as an installed package does.
Targets: after check <= 1.3x floor (100k and 1M); cold <= floor + 2 s (100k); peak RSS <= 150 MB at 1M and
<= 1.3x the 100k figure.
"""

from __future__ import annotations

import argparse
import base64
import csv
import hmac
import html
import http.client
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
SLUG = "micro-moments-of-connection"
CONFIG = (REPO / "tests" / "conftest.py").read_text().split('FILLED_CONFIG = """\\\n')[1].split('"""')[0]
CONFIG = CONFIG.replace("check:\n  spam: false\n", "")  # the real pre-send check, SpamAssassin included


def make_root(tmp: Path, readers: int, concurrency: int) -> Path:
    """A newsletter with `readers` readers on the list and 1% of them unsubscribed in the ledger."""
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


def shared_part(root: Path, subject_prefix: str = "") -> tuple[dict[str, Any], dict[str, str], list[str]]:
    """What the floor is given, as any sender would have it before its first reader: the rendered issue (the
    shared fields of the request), the greeting rule and the substitution tags the parts use."""
    sys.path.insert(0, str(REPO / "src"))
    from newsletter.build import load
    from newsletter.render import render_issue

    config, issue = load(root, SLUG)
    rendered = render_issue(config, issue)
    shared = {
        "from": {"email": config.sender.email, "name": config.sender.name},
        "subject": subject_prefix + rendered.subject,
        "content": [{"type": "text/plain", "value": rendered.text}, {"type": "text/html", "value": rendered.html}],
        "custom_args": {"newsletter_issue": SLUG},
        "tracking_settings": {"click_tracking": {"enable": False, "enable_text": False},
                              "open_tracking": {"enable": False}, "subscription_tracking": {"enable": False}},
        "reply_to": {"email": config.reply_to},
        "categories": list(config.sendgrid.categories),
    }
    rules = {"base_url": config.base_url, "greeting": issue.greeting, "fallback": issue.greeting_fallback}
    return shared, rules, sorted(rendered.tags)


def floor_send(root: Path, journal_path: Path, api_url: str, api_key: str, secret: str, shared: dict[str, Any],
               rules: dict[str, str], tags: list[str], concurrency: int = 4) -> int:
    """The least work any correct sender must do, plainly; returns how many readers SendGrid accepted."""
    import orjson

    # The ledger: an address is suppressed when its latest event is a suppressing one.
    latest: dict[str, str] = {}
    with open(root / "subscribers" / "unsubscribes.csv", encoding="utf-8", newline="") as fh:
        for row in csv.reader(fh):
            if len(row) == 5 and row[0] != "email":
                latest[row[0].strip().lower()] = row[1]
    suppressing = {"unsubscribe", "bounce", "spamreport", "invalid"}
    suppressed = {address for address, event in latest.items() if event in suppressing}

    key = secret.encode()
    head = orjson.dumps(shared)[:-1] + b',"personalizations":'  # the shared part, encoded once
    unsubscribe = rules["base_url"].rstrip("/") + "/unsubscribe/"
    url = urllib.parse.urlsplit(api_url)
    headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}
    local = threading.local()
    journal = os.open(journal_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    journal_lock = threading.Lock()
    accepted = 0

    def post(number: int, emails: list[str], body: bytes) -> None:
        nonlocal accepted
        with journal_lock:  # the record is on disk before the request leaves
            os.write(journal, orjson.dumps({"t": "attempt", "b": number, "emails": emails}) + b"\n")
            os.fsync(journal)
        conn = getattr(local, "conn", None)
        if conn is None:
            conn = local.conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
        conn.request("POST", "/v3/mail/send", body, headers)  # reconnects when the server closed it
        response = conn.getresponse()
        response.read()
        if response.status != 202:
            raise RuntimeError(f"batch {number}: {response.status}")
        with journal_lock:
            accepted += len(emails)

    def body_of(batch: list[tuple[str, str]]) -> bytes:
        personalizations = []
        for email, name in batch:
            mac = hmac.digest(key, b"unsubscribe:u1:" + email.encode(), "sha256")[:16]
            token = "u1.{}.{}".format(base64.urlsafe_b64encode(email.encode()).rstrip(b"=").decode(),
                                      base64.urlsafe_b64encode(mac).rstrip(b"=").decode())
            first = name.split()[0] if name else ""
            greeting = rules["greeting"].replace("{first_name}", first) if first else rules["fallback"]
            values = {"%%nl_unsub_token%%": token, "%%nl_greeting_text%%": greeting,
                      "%%nl_greeting_html%%": html.escape(greeting),
                      "%%nl_name_text%%": name or "friend", "%%nl_name_html%%": html.escape(name or "friend"),
                      "%%nl_first_text%%": first or name or "friend",
                      "%%nl_first_html%%": html.escape(first or name or "friend")}
            to = {"email": email, "name": name} if name else {"email": email}
            personalizations.append({
                "to": [to], "substitutions": {tag: values[tag] for tag in tags},
                "headers": {"List-Unsubscribe": f"<{unsubscribe}{token}>",
                            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"}})
        return head + orjson.dumps(personalizations) + b"}"

    seen: set[str] = set()
    batch: list[tuple[str, str]] = []
    number = 0
    pending: set[Future[None]] = set()
    with ThreadPoolExecutor(max_workers=concurrency) as pool, \
            open(root / "subscribers" / "subscribers.csv", encoding="utf-8", newline="") as fh:
        rows = csv.reader(fh)
        header = [h.strip().lower() for h in next(rows)]
        email_at, name_at = header.index("email"), header.index("name")
        for row in rows:
            email = row[email_at].strip().lower()
            if not email or email in seen or email in suppressed:
                continue
            seen.add(email)
            batch.append((email, row[name_at].strip()))
            if len(batch) == 1000:
                number += 1
                while len(pending) >= 2 * concurrency:  # a bounded queue: bodies do not pile up
                    done, pending = wait(pending, return_when=FIRST_COMPLETED)
                    for f in done:
                        f.result()
                pending.add(pool.submit(post, number, [e for e, _ in batch], body_of(batch)))
                batch = []
        if batch:
            number += 1
            pending.add(pool.submit(post, number, [e for e, _ in batch], body_of(batch)))
        for f in pending:
            f.result()
    os.close(journal)
    return accepted


def fake_stats(url: str) -> dict[str, int]:
    """What the fake has received so far."""
    with urllib.request.urlopen(f"{url}/_stats") as answer:
        return dict(json.load(answer))


# A process started from this one inherits its peak RSS (Linux keeps the high-water mark across exec), and this one
# has held a million-reader floor: the send is started from a small launcher instead, which reports the send's own
# peak RSS and CPU (its children's included: SpamAssassin's in a cold run).
LAUNCHER = """import json, os, sys, time
start = time.perf_counter()
pid = os.fork()
if pid == 0:
    os.execv(sys.argv[2], sys.argv[2:])
_, status, usage = os.wait4(pid, 0)
wall = time.perf_counter() - start
with open(sys.argv[1], "w") as fh:
    json.dump([os.waitstatus_to_exitcode(status), wall, usage.ru_maxrss * 1024, usage.ru_utime + usage.ru_stime], fh)
"""


def run_send(exe: str, root: Path, env: dict[str, str], url: str) -> tuple[float, float, int, int]:
    """The whole `newsletter send` process: (wall s, CPU s, peak RSS bytes, copies the fake received)."""
    before = fake_stats(url)
    report = root.parent / "send-usage.json"
    proc = subprocess.run([sys.executable, "-S", "-c", LAUNCHER, str(report), exe, "send", "--root", str(root),
                           "--issue", SLUG, "--yes"], capture_output=True, env=env, text=True)
    status, wall, rss, cpu = json.loads(report.read_text())
    if status != 0:
        print(proc.stdout + proc.stderr)
        raise SystemExit(f"send failed with status {status}")
    copies = fake_stats(url)["copies"] - before["copies"]
    return wall, cpu, rss, copies


def run_floor(root: Path, env: dict[str, str], url: str, secret: str) -> tuple[float, float, int]:
    """The floor, timed from its first read to its last answer: (wall s, CPU s, copies the fake received)."""
    shared, rules, tags = shared_part(root)
    journal = root / "subscribers" / "floor-journal.jsonl"
    journal.unlink(missing_ok=True)
    before = fake_stats(url)
    start, cpu = time.perf_counter(), time.process_time()
    accepted = floor_send(root, journal, url, env["SENDGRID_API_KEY"], secret, shared, rules, tags)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    copies = fake_stats(url)["copies"] - before["copies"]
    assert copies == accepted, (copies, accepted)
    return wall, cpu, copies


def cpu_of(pid: int) -> float:
    """CPU seconds a process has used so far (the fake's share of a run)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(n: int, args: argparse.Namespace, exe: str, env: dict[str, str], url: str,
            fake_pid: int) -> dict[str, list[float]]:
    """Every kind of run of one size, `args.repeat` times, interleaved (so a slow minute hits them all)."""
    results: dict[str, list[float]] = {k: [] for k in (
        "floor", "after check", "cold", "rss after check", "rss cold", "cpu floor", "cpu after check", "cpu cold",
        "fake cpu floor", "fake cpu after check", "fake cpu cold")}
    with tempfile.TemporaryDirectory() as tmp:
        pristine = make_root(Path(tmp) / "pristine", n, args.concurrency)
        for _ in range(args.repeat):
            for kind in ("floor", "after check", "cold") if args.floor else ("after check", "cold"):
                root = Path(tmp) / "run" / "letters"
                shutil.rmtree(root.parent, ignore_errors=True)
                shutil.copytree(pristine, root)
                if kind == "after check":
                    subprocess.run([exe, "check", "--root", str(root), "--issue", SLUG], env=env,
                                   capture_output=True, check=True)
                fake_cpu = cpu_of(fake_pid)
                if kind == "floor":
                    wall, cpu, copies = run_floor(root, env, url, env["NEWSLETTER_SECRET"])
                    results["floor"].append(wall)
                    results["cpu floor"].append(cpu)
                    results["fake cpu floor"].append(cpu_of(fake_pid) - fake_cpu)
                    expected = copies
                    continue
                wall, cpu, rss, copies = run_send(exe, root, env, url)
                results[f"fake cpu {kind}"].append(cpu_of(fake_pid) - fake_cpu)
                if args.floor:
                    assert copies == expected, f"send delivered {copies}, the floor {expected}"
                results[kind].append(wall)
                results[f"cpu {kind}"].append(cpu)
                results[f"rss {kind}"].append(rss / 1e6)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--readers", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--latency", type=float, default=0.02)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=1, help="runs of each kind; the median is printed")
    parser.add_argument("--floor", action="store_true", help="also run the floor and print send / floor")
    args = parser.parse_args()
    exe = str(Path(sys.executable).parent / "newsletter")
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(REPO / "src" / "newsletter")], check=True)
    fake = subprocess.Popen([sys.executable, str(REPO / "tests" / "fake_sendgrid.py"), "--latency",
                             str(args.latency), "--validate-every", "50"], stdout=subprocess.PIPE, text=True)
    rss_by_size: dict[int, float] = {}
    try:
        assert fake.stdout is not None
        line = fake.stdout.readline().split()
        env = dict(os.environ, **dict(kv.split("=", 1) for kv in line), NEWSLETTER_SECRET="bench-secret")
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        url = env["SENDGRID_API_URL"]
        for n in args.readers:
            r = measure(n, args, exe, env, url, fake.pid)
            med = {k: statistics.median(v) for k, v in r.items() if v}
            rss_by_size[n] = med["rss after check"]
            print(f"{n:>9,} readers ({n // 100:,} suppressed), median of {args.repeat}:")
            if args.floor:
                floor = med["floor"]
                print(f"  floor        {floor:6.2f} s                         CPU {med['cpu floor']:.1f} s "
                      f"(fake SendGrid: {med['fake cpu floor']:.1f} s)")
                print(f"  after check  {med['after check']:6.2f} s  send / floor = {med['after check'] / floor:.2f}"
                      f"  (target <= 1.3)   CPU {med['cpu after check']:.1f} s "
                      f"(fake SendGrid: {med['fake cpu after check']:.1f} s), peak RSS {med['rss after check']:.0f} MB")
                print(f"  cold         {med['cold']:6.2f} s  send / floor = {med['cold'] / floor:.2f}, "
                      f"send - floor = {med['cold'] - floor:+.2f} s  (target <= +2 s at 100k)   "
                      f"CPU {med['cpu cold']:.1f} s with SpamAssassin, peak RSS {med['rss cold']:.0f} MB (idem)")
            else:
                print(f"  after check  {med['after check']:6.2f} s, CPU {med['cpu after check']:.1f} s, "
                      f"peak RSS {med['rss after check']:.0f} MB")
                print(f"  cold         {med['cold']:6.2f} s, CPU {med['cpu cold']:.1f} s, "
                      f"peak RSS {med['rss cold']:.0f} MB")
        if len(rss_by_size) > 1:
            small, large = min(rss_by_size), max(rss_by_size)
            print(f"peak RSS after check: {rss_by_size[large]:.0f} MB at {large:,} / {rss_by_size[small]:.0f} MB at "
                  f"{small:,} = {rss_by_size[large] / rss_by_size[small]:.2f} (target <= 1.3, and <= 150 MB)")
    finally:
        fake.terminate()
        fake.wait()


if __name__ == "__main__":
    main()
