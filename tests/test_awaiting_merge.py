"""Tests moved out of the theme files (test_units.py, test_sync_stats.py) whose home is a file another helper
(`mutants`) was editing when they moved: test_tokens.py, test_ledger.py, test_suppressions.py. Move each into its
file once both branches are merged, then delete this one."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from conftest import Cli, record
from fake_sendgrid import FakeSendGrid

from newsletter.ledger import Ledger, ledger_path


def test_tokens_compare_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    import hmac

    from newsletter import tokens

    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a, b):  # type: ignore[no-untyped-def]
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(tokens.hmac, "compare_digest", spy)
    token = tokens.make_token("k", "ada@readers.net")
    assert tokens.verify_token("k", token) == "ada@readers.net"
    assert tokens.verify_token("other", token) is None
    assert len(calls) == 2  # both verdicts came from compare_digest, never ==


def test_the_torn_line_rule(tmp_path: Path) -> None:
    from newsletter.ledger import HEADER, Ledger

    path = tmp_path / "unsubscribes.csv"
    path.write_text(HEADER + "\nada@readers.net,resubscribe,2026-01-01T00:00:00Z,cli,\nada@readers.net,unsub")
    ledger = Ledger(path)
    assert ledger.is_suppressed("ada@readers.net")  # a torn last line naming an address suppresses it
    with open(path, "a") as fh:
        fh.write("scribe,2026-01-02T00:00:00Z,cli,\n")  # the write completes: still suppressed, now for good
    ledger.refresh()
    assert ledger.is_suppressed("ada@readers.net") and ledger.event_of("ada@readers.net") == "unsubscribe"


def test_sync_pages_through_every_list_and_is_idempotent(ready_project: Path, fake: FakeSendGrid,
                                                          env: dict[str, str]) -> None:
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


def test_sync_respects_a_later_resubscribe(ready_project: Path, fake: FakeSendGrid, env: dict[str, str]) -> None:
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
