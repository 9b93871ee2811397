"""Render speed: in-process render of the seed issue, the whole `newsletter render` process against npm mjml on
the same MJML, and `newsletter --help` (the cost of starting the command line at all).

Run: .venv/bin/python benchmarks/render.py [--mjml PATH/TO/node_modules/.bin/mjml] [--runs N]
Processes run with bytecode caching on (PYTHONDONTWRITEBYTECODE removed), as an installed package does; each
figure is the median of N runs after one warm-up.
Targets: in-process render under 5 ms; the whole `newsletter render` process at most 0.25x the time npm `mjml`
takes to compile the produced email.mjml alone; `newsletter --help` under 150 ms.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SLUG = "micro-moments-of-connection"


def timed_runs(argv: list[str], runs: int, env: dict[str, str] | None = None) -> float:
    """Median wall time in ms of `runs` executions of argv (after one warm-up)."""
    subprocess.run(argv, check=True, capture_output=True, env=env)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(argv, check=True, capture_output=True, env=env)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mjml", help="npm mjml executable (default: `mjml` on PATH or ./node_modules/.bin)")
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()

    sys.path.insert(0, str(REPO / "src"))
    from newsletter.build import load
    from newsletter.render import render_issue

    config, issue = load(REPO, SLUG)
    render_issue(config, issue)  # warm the template cache
    samples = []
    for _ in range(200):
        start = time.perf_counter()
        config, issue = load(REPO, SLUG)
        render_issue(config, issue)
        samples.append((time.perf_counter() - start) * 1000)
    in_process = statistics.median(samples)
    print(f"in-process render (load + Markdown + Jinja2 + MJML), median of 200: {in_process:.2f} ms"
          f"  [target < 5 ms: {'ok' if in_process < 5 else 'MISSED'}]")

    exe = shutil.which("newsletter", path=str(Path(sys.executable).parent)) or "newsletter"
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(REPO / "src" / "newsletter")], check=True)
    with tempfile.TemporaryDirectory() as out:
        env = dict(os.environ, NEWSLETTER_ROOT=str(REPO))
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        helped = timed_runs([exe, "--help"], args.runs, env)
        print(f"`newsletter --help`, median of {args.runs}: {helped:.1f} ms"
              f"  [target < 150 ms: {'ok' if helped < 150 else 'MISSED'}]")
        process = timed_runs([exe, "render", "--out", out], args.runs, env)
        print(f"whole process `newsletter render`, median of {args.runs}: {process:.1f} ms")
        mjml_file = Path(out) / SLUG / "email.mjml"
        npm = (args.mjml or shutil.which("mjml")
               or shutil.which("mjml", path=str(REPO / ".ci" / "mjml" / "node_modules" / ".bin"))
               or shutil.which("mjml", path=str(REPO / "node_modules" / ".bin")))
        if not npm or not shutil.which("node"):
            print("npm mjml: not installed (`bash .ci/run` installs it into .ci/mjml; or pass --mjml PATH)")
            return
        version = subprocess.run([npm, "--version"], capture_output=True, text=True).stdout.split()
        reference = timed_runs([npm, str(mjml_file), "-s"], args.runs)
        ratio = process / reference
        print(f"npm mjml {' '.join(version)} compiling email.mjml alone, median of {args.runs}: {reference:.1f} ms")
        verdict = "ok" if ratio <= 0.25 else "MISSED"
        print(f"ratio newsletter render / npm mjml: {ratio:.2f}  [target <= 0.25: {verdict}]")


if __name__ == "__main__":
    main()
