"""spam.py: SpamAssassin's score through `check`, remembered per message, and a private spamd that never outlives
the command that started it. SpamAssassin loads its rules for seconds of CPU: each score here is one that counts."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import SEED_SLUG, Cli, spam_on, wait_for

from newsletter.spam import _parse


def _spam_line(output: str) -> float:
    found = re.search(r"spam score (-?[\d.]+)", output)
    assert found, output
    return float(found.group(1))


SPAMMY_META = ('title: "FREE MONEY!!! ACT NOW"\nsubject: "FREE!!! Claim your CASH PRIZE now - 100% GUARANTEED!!!"\n'
               "preheader: Limited time offer\ndate: 2030-01-01\nworkshop: from-trauma-to-triumph\n")
SPAMMY_BODY = ("# CLICK HERE NOW!!!\n\nDear friend, you have been SELECTED to receive $1,000,000 USD. "
               "This is NOT spam. 100% FREE, no credit check, risk free, act now, limited time only!!! "
               "Viagra, cialis, cheap meds, "
               "lose weight fast, work from home and earn $$$ extra cash.\n\n"
               "[CLICK HERE TO CLAIM YOUR PRIZE](https://micromoments.net/claim) "
               "[UNSUBSCRIBE](https://micromoments.net/u) [100% FREE](https://micromoments.net/free)\n\n"
               "**ORDER NOW! ORDER NOW! ORDER NOW! MONEY BACK GUARANTEE!!!**\n")


def test_check_scores_the_seed_low_remembers_it_and_a_spammy_issue_scores_higher(
        ready_project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The seed scores low; `check` caches the verdict, so `send` of the same message (whatever the environment:
    another secret, no SpamAssassin on the PATH) finds it there; a spammy issue scores clearly higher."""
    from newsletter.build import load
    from newsletter.check import spam_problems
    from newsletter.render import render_issue

    assert shutil.which("spamassassin"), "apt-get install spamassassin"
    spam_on(ready_project)
    cli = Cli(ready_project)
    monkeypatch.setenv("NEWSLETTER_SECRET", "a-secret-that-check-did-not-see")
    seed = cli("check")
    assert seed.exit_code == 0, seed.output
    seed_score = _spam_line(seed.output)
    assert seed_score < 1.0
    cached = list((ready_project / "build" / ".cache" / "spam").glob("*.json"))
    assert len(cached) == 1
    with monkeypatch.context() as m:
        m.setenv("PATH", "/nonexistent")  # no spamassassin to run: the verdict must come from the cache
        config, issue = load(ready_project, SEED_SLUG)
        again = spam_problems(config, render_issue(config, issue))
    assert [str(p) for p in again] == [line for line in seed.output.splitlines() if "spam score" in line]
    assert "skipped" not in str(again[0])
    spammy = ready_project / "issues" / "spammy"
    spammy.mkdir()
    (spammy / "issue.yaml").write_text(SPAMMY_META)
    (spammy / "body.md").write_text(SPAMMY_BODY)
    spam = cli("check", "--issue", "spammy")
    assert _spam_line(spam.output) > seed_score + 1.0, spam.output


def test_the_report_gives_the_score_and_each_rule() -> None:
    report = (b"Spam detection software...\n\nContent analysis details:   (6.2 points, 5.0 required)\n\n"
              b" pts rule name              description\n---- ---------------------- ------------------\n"
              b" 2.5 FREE_MONEY             Lots of money if you reply\n"
              b"-0.1 DKIM_VALID             Message has at least one valid DKIM or DK signature,\n"
              b"                            from the author's domain\n"
              b" 3.8 LOTS_OF_MONEY          Huge... sums of money\n")
    verdict = _parse(report)
    assert verdict.score == 6.2
    assert verdict.rules == [(2.5, "FREE_MONEY", "Lots of money if you reply"),
                             (-0.1, "DKIM_VALID", "Message has at least one valid DKIM or DK signature, from the "
                              "author's domain"), (3.8, "LOTS_OF_MONEY", "Huge... sums of money")]
    with pytest.raises(RuntimeError, match="no score"):
        _parse(b"spamd: child not ready\n")


def test_a_killed_check_leaves_no_spamd_behind(ready_project: Path, tmp_path: Path) -> None:
    """`check` starts a private spamd to score the message; killed with -9 mid-score, it leaves no daemon
    running and no socket folder behind."""
    spam_on(ready_project)
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    proc = subprocess.Popen([str(Path(sys.executable).parent / "newsletter"), "check", "--root", str(ready_project)],
                            env={**os.environ, "TMPDIR": str(tmp)}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        folder = wait_for(lambda: next(tmp.glob("newsletter-spamd-*"), None), 30, "spamd's folder")
        wait_for(lambda: _processes_naming(str(folder)), 30, "spamd")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    wait_for(lambda: not _processes_naming(str(folder)) and not folder.exists(), 30, "spamd to stop")


def _processes_naming(text: str) -> list[str]:
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in args:
            found.append(args)
    return found
