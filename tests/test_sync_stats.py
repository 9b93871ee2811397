"""`newsletter sync` against the fake's paginated suppression lists (`stats` is in test_stats.py)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from conftest import SEED_SLUG, Cli, record
from fake_sendgrid import API_KEY, FakeSendGrid

from newsletter.ledger import Ledger, ledger_path


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch):
    server = FakeSendGrid().start()
    monkeypatch.setenv("SENDGRID_API_URL", server.url)
    monkeypatch.setenv("SENDGRID_API_KEY", API_KEY)
    yield server
    server.stop()


def test_sync_pages_through_every_list_and_is_idempotent(ready_project: Path, fake: FakeSendGrid) -> None:
    now = int(time.time())
    fake.suppressions = {
        "/v3/suppression/unsubscribes": [{"email": f"U{i}@Readers.net", "created": now - 100} for i in range(1203)],
        "/v3/suppression/bounces": [{"email": "b@readers.net", "created": now, "reason": "550 no such user",
                                     "status": "5.1.1"}],
        "/v3/suppression/spam_reports": [{"email": "s@readers.net", "created": now, "ip": "10.0.0.1"}],
        "/v3/suppression/invalid_emails": [{"email": "i@readers.net", "created": now, "reason": "bad"}],
        "/v3/asm/suppressions": [{"email": "g@readers.net", "group_id": 7, "group_name": "Weekly",
                                  "created_at": now}],
    }
    record(ledger_path(ready_project), "u5@readers.net", "unsubscribe")  # already known
    cli = Cli(ready_project)
    result = cli("sync")
    assert result.exit_code == 0, result.output
    assert "suppression/unsubscribes: 1203 listed, 1202 new in the ledger" in result.output
    assert "appended 1206 event(s)" in result.output
    pages = [p for p in fake.list_requests if p.startswith("/v3/suppression/unsubscribes")]
    assert len(pages) == 3 and "offset=1000" in pages[2] and "limit=500" in pages[0]
    ledger = Ledger(ledger_path(ready_project))
    for address, event in [("u1202@readers.net", "unsubscribe"), ("b@readers.net", "bounce"),
                           ("s@readers.net", "spamreport"), ("i@readers.net", "invalid"),
                           ("g@readers.net", "unsubscribe")]:
        assert ledger.event_of(address) == event
    again = cli("sync", "--full")
    assert "appended 0 event(s)" in again.output
    lines = ledger_path(ready_project).read_text().splitlines()
    assert len(lines) == 1 + 1 + 1206


def test_sync_respects_a_later_resubscribe(ready_project: Path, fake: FakeSendGrid) -> None:
    now = int(time.time())
    record(ledger_path(ready_project), "back@readers.net", "unsubscribe")
    record(ledger_path(ready_project), "back@readers.net", "resubscribe")
    record(ledger_path(ready_project), "again@readers.net", "resubscribe")
    fake.suppressions = {"/v3/suppression/unsubscribes": [
        {"email": "back@readers.net", "created": now - 86400},  # listed before they came back
        {"email": "again@readers.net", "created": now + 60},  # unsubscribed again after resubscribing
    ]}
    assert Cli(ready_project)("sync").exit_code == 0
    ledger = Ledger(ledger_path(ready_project))
    assert not ledger.is_suppressed("back@readers.net")
    assert ledger.is_suppressed("again@readers.net")


def test_send_syncs_first_unless_told_not_to(ready_project: Path, fake: FakeSendGrid,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NEWSLETTER_SECRET", "s")
    (ready_project / "subscribers" / "subscribers.csv").write_text("email\na@readers.net\nb@readers.net\n")
    fake.suppressions = {"/v3/suppression/bounces": [{"email": "B@readers.net", "created": int(time.time())}]}
    result = Cli(ready_project)("send", "--issue", SEED_SLUG, "--yes")
    assert result.exit_code == 0, result.output
    assert set(fake.delivered) == {"a@readers.net"}
    # counted after the sync: suppressed before the send, not "unsubscribed during the send"
    assert "readers:    1 (after suppression)" in result.output and "suppressed: 1\n" in result.output


def test_a_real_send_counts_its_readers_after_the_sync(ready_project: Path, fake: FakeSendGrid) -> None:
    """A real `newsletter send` starts counting at once, in a child process; the sync then adds an opt-out to
    the ledger, and the readers are counted again against it."""
    import os
    import subprocess
    import sys

    (ready_project / "subscribers" / "subscribers.csv").write_text("email\na@readers.net\nb@readers.net\n")
    fake.suppressions = {"/v3/suppression/bounces": [{"email": "B@readers.net", "created": int(time.time())}]}
    result = subprocess.run([str(Path(sys.executable).parent / "newsletter"), "send", "--root", str(ready_project),
                             "--issue", SEED_SLUG, "--yes"], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "NEWSLETTER_SECRET": "s"})
    assert result.returncode == 0, result.stdout + result.stderr
    assert set(fake.delivered) == {"a@readers.net"}
    assert "readers:    1 (after suppression)" in result.stdout and "suppressed: 1\n" in result.stdout
