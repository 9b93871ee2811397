"""preflight.py: what a send checks before anything goes out (secrets, the key and its permissions, `check`'s
errors and the spam verdict, SendGrid's suppressions pulled first), through `newsletter send` in process."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import pytest
from conftest import SEED_SLUG, Cli, readers, spam_on, write_list
from fake_sendgrid import FakeSendGrid

from newsletter.journal import journal_path


def test_bad_key_refused_in_preflight(sender: Cli, fake: FakeSendGrid, monkeypatch: pytest.MonkeyPatch) -> None:
    write_list(sender.root, readers(5))
    monkeypatch.setenv("SENDGRID_API_KEY", "SG.wrong")
    result = sender("send", "--issue", SEED_SLUG, "--yes")
    assert result.exit_code == 1 and "SendGrid refused the API key" in result.output
    assert not fake.requests


def test_key_without_mail_send_scope(sender: Cli, fake: FakeSendGrid) -> None:
    write_list(sender.root, readers(5))
    fake.scopes = ["suppression.read"]
    result = sender("send", "--issue", SEED_SLUG, "--yes")
    assert result.exit_code == 1 and "lacks the `mail.send` permission" in result.output
    assert fake.requests == [] and not fake.delivered  # nothing was sent
    assert not journal_path(sender.root, SEED_SLUG).exists()


def test_api_without_a_scopes_endpoint_still_sends(sender: Cli, fake: FakeSendGrid) -> None:
    write_list(sender.root, readers(5))
    fake.scopes_endpoint = False
    result = sender("send", "--issue", SEED_SLUG, "--yes")
    assert result.exit_code == 0, result.output
    assert "the key's permissions were not checked" in result.output
    assert len(fake.delivered) == 5


def test_preflight_refuses_check_errors_and_missing_secrets(cli: Cli, env: dict, fake: FakeSendGrid,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    write_list(cli.root, readers(5))
    result = cli("send", "--issue", SEED_SLUG, "--yes")
    assert result.exit_code == 1 and "`newsletter check` found" in result.output and "nothing was sent" in result.output
    assert not fake.requests
    (cli.root / "newsletter.yaml").write_text(
        (Path(__file__).parent / "conftest.py").read_text().split('FILLED_CONFIG = """\\\n')[1].split('"""')[0])
    monkeypatch.delenv("SENDGRID_API_KEY")
    monkeypatch.delenv("NEWSLETTER_SECRET")
    result = cli("send", "--issue", SEED_SLUG, "--yes")
    assert result.exit_code == 1 and "SENDGRID_API_KEY and NEWSLETTER_SECRET are not set" in result.output


def test_send_pulls_sendgrids_suppressions_first_and_counts_after(ready_project: Path, fake: FakeSendGrid,
                                                                  env: dict[str, str]) -> None:
    (ready_project / "subscribers" / "subscribers.csv").write_text("email\na@readers.net\nb@readers.net\n")
    fake.suppressions = {"/v3/suppression/bounces": [{"email": "B@readers.net", "created": int(time.time())}]}
    result = Cli(ready_project)("send", "--issue", SEED_SLUG, "--yes")
    assert result.exit_code == 0, result.output
    assert set(fake.delivered) == {"a@readers.net"}
    # counted after the sync: suppressed before the send, not "unsubscribed during the send"
    assert "readers:    1 (after suppression)" in result.output and "suppressed: 1\n" in result.output
def test_send_refuses_a_message_that_scores_as_spam(ready_project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spam_on(ready_project)
    monkeypatch.setenv("NEWSLETTER_SECRET", "s")
    cache = ready_project / "build" / ".cache" / "spam"
    from newsletter.build import load
    from newsletter.eml import build_scoring_eml
    from newsletter.render import render_issue

    config, issue = load(ready_project, SEED_SLUG)
    key = hashlib.sha256(build_scoring_eml(config, render_issue(config, issue))).hexdigest()
    cache.mkdir(parents=True)  # a verdict as SpamAssassin would give a spammy message
    (cache / f"{key}.json").write_text(json.dumps({"score": 7.5, "rules": [[7.5, "TEST_RULE", "a test"]]}))
    result = Cli(ready_project)("send", "--issue", SEED_SLUG, "--dry-run")
    assert result.exit_code == 1
    assert "spam score 7.5 (SpamAssassin, error at 5); rules: TEST_RULE +7.5" in result.output
    assert "nothing was sent" in result.output


