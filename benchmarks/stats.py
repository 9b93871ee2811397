"""`newsletter stats` over every sent issue: one pass over a 1,000,000-event log.

Run: .venv/bin/python benchmarks/stats.py [--events 1000000] [--issues 10] [--readers 10000] [--repeat 2]

The project has `--issues` issues sent to the same `--readers` readers (journals written by journal.Journal) and
an events log of `--events` events shaped like SendGrid's (delivered, opens by people and by Apple's proxy,
clicks with utm tags, bounces, deferrals, drops, unsubscribes, spam reports), about 350 bytes each.

The figure is printed with a floor measured in the same round on the same file: the time to read it and
json.loads each line (what the code did before). The machine is shared, so the ratio of CPU times is what
travels; wall times are shown too. Also shown: the floor with msgspec's untyped decoder, and the whole
`newsletter stats --json` process with its peak memory. Target: under 2 s for 1,000,000 events.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))

CTA = "https://micromoments.net/workshops/from-trauma-to-triumph"
LINE = ('{{"email":"{email}","timestamp":{ts},"smtp-id":"<{n:x}.{i}@ismtpd0001p1lon1.sendgrid.net>",'
        '"event":"{kind}","category":["newsletter"],"sg_event_id":"ZXZlbnQt{n:016d}",'
        '"sg_message_id":"14c5d75ce93.dfd.64b469.filterdrecv-5645d9c87f-{i}.0","newsletter_issue":"{slug}"{more}}}\n')
MORE = {
    "delivered": ',"response":"250 2.0.0 OK  1764140000 ok","tls":1,"ip":"168.245.1.1"',
    "human": ',"useragent":"Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X)","ip":"81.2.69.160",'
             '"sg_machine_open":false',
    "machine": ',"useragent":"Mozilla/5.0","ip":"17.58.1.1","sg_machine_open":true',
    "click": f',"url":"{CTA}?utm_source=newsletter&utm_medium=email","url_offset":{{"index":0,"type":"html"}},'
             '"useragent":"Mozilla/5.0","ip":"81.2.69.160"',
    "bounce": ',"type":"bounce","reason":"550 5.1.1 The email account does not exist","status":"5.1.1"',
    "blocked": ',"type":"blocked","reason":"452 4.2.2 The email account is over quota","status":"4.2.2"',
    "deferred": ',"response":"421 4.7.0 Try again later","attempt":"2"',
    "dropped": ',"reason":"Bounced Address","status":"5.0.0"',
    "spamreport": "",
    "unsubscribe": "",
}
KINDS = (["delivered"] * 40 + ["human"] * 30 + ["machine"] * 20 + ["click"] * 6
         + ["bounce", "blocked", "deferred", "dropped"])


def make_project(root: Path, issues: int, readers: int, events: int) -> Path:
    """newsletter.yaml and layouts from the repository, journals for `issues` sends, the events log."""
    from newsletter.journal import Journal, journal_path

    shutil.copy(REPO / "newsletter.yaml", root / "newsletter.yaml")
    shutil.copytree(REPO / "layouts", root / "layouts")
    (root / "subscribers" / "sends").mkdir(parents=True)
    emails = [f"reader{i}@mail{i % 977}.example.net" for i in range(readers)]
    slugs = [f"letter-{k:02d}" for k in range(issues)]
    for slug in slugs:
        with Journal(journal_path(root, slug)) as j:
            j.run(readers=readers, resend_in_doubt=False)
            for b, start in enumerate(range(0, readers, 1000), 1):
                j.batch(b, emails[start:start + 1000])
                j.attempt(b, 1)
                j.ok(b, 202, f"m{b}")
            j.end()
    rnd = random.Random(7)
    path = root / "subscribers" / "events.jsonl"
    with open(path, "w", encoding="utf-8") as fh:
        for n in range(events):
            i = rnd.randrange(readers)
            kind = rnd.choice(KINDS) if n % 500 else rnd.choice(["spamreport", "unsubscribe"])
            event = {"human": "open", "machine": "open", "blocked": "bounce"}.get(kind, kind)
            fh.write(LINE.format(email=emails[i], ts=1764140000 + n, n=n, i=i, kind=event, slug=slugs[n % issues],
                                 more=MORE[kind]))
    return path


Timing = tuple[float, float]  # (wall, CPU) seconds


def timed(func: Callable[[], object]) -> Timing:
    wall, cpu = time.perf_counter(), time.process_time()
    func()
    return time.perf_counter() - wall, time.process_time() - cpu


def floor_json(path: Path) -> Timing:
    def parse() -> None:
        with open(path, "rb") as fh:
            for line in fh:
                json.loads(line)

    return timed(parse)


def floor_msgspec(path: Path) -> Timing:
    import msgspec

    decoder = msgspec.json.Decoder()

    def parse() -> None:
        with open(path, "rb") as fh:
            for line in fh:
                decoder.decode(line)

    return timed(parse)


def in_process(root: Path) -> Timing:
    from newsletter.stats import all_stats

    return timed(lambda: all_stats(root))


def whole_process(root: Path) -> tuple[float, float, float]:
    """Wall and CPU seconds of `newsletter stats --json`, and its peak RSS in MB."""
    exe = str(Path(sys.executable).parent / "newsletter")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run([exe, "stats", "--root", str(root), "--json"], check=True, stdout=subprocess.DEVNULL)
    took = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return took, cpu, after.ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--issues", type=int, default=10)
    parser.add_argument("--readers", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=2, help="rounds of measurements")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t = time.perf_counter()
        path = make_project(root, args.issues, args.readers, args.events)
        print(f"made {args.events:,} events ({path.stat().st_size / 1e6:.0f} MB) for {args.issues} issues in "
              f"{time.perf_counter() - t:.1f} s")
        for _ in range(args.repeat):
            floor, floor2, figure = floor_json(path), floor_msgspec(path), in_process(root)
            wall, cpu, rss = whole_process(root)
            print(f"floor (read + json.loads each line): {floor[0]:.2f} s wall, {floor[1]:.2f} s CPU; with "
                  f"msgspec's untyped decoder {floor2[0]:.2f} s, {floor2[1]:.2f} s CPU")
            print(f"  stats over every issue, in process: {figure[0]:.2f} s wall, {figure[1]:.2f} s CPU = "
                  f"{figure[1] / floor[1]:.2f} x the json floor's CPU ({figure[1] / floor2[1]:.2f} x msgspec's)")
            print(f"  `newsletter stats --json`, whole process: {wall:.2f} s wall, {cpu:.2f} s CPU, peak RSS "
                  f"{rss:.0f} MB (target: under 2 s)")


if __name__ == "__main__":
    main()
