"""Scheduled sends can be taken back, and opt-outs reach SendGrid so it drops mail already handed to it."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from conftest import SECRET, SEED_SLUG, Cli, configure, readers, record, wait_for, write_list
from fake_sendgrid import FakeSendGrid

from newsletter.journal import journal_path, load_state


def _at(hours: float = 2) -> str:
    return (dt.datetime.now().astimezone() + dt.timedelta(hours=hours)).isoformat(timespec="minutes")


def test_a_scheduled_send_has_a_batch_id_and_an_unsubscribe_reaches_sendgrid(sender: Cli, fake: FakeSendGrid) -> None:
    from starlette.testclient import TestClient

    from newsletter.tokens import make_token
    from newsletter.web import create_app

    write_list(sender.root, readers(3))
    result = sender("send", "--issue", SEED_SLUG, "--yes", "--no-sync", "--at", _at())
    assert result.exit_code == 0, result.output
    assert len(fake.batch_ids) == 1
    batch_id = fake.batch_ids[0]
    assert fake.accepted and all(b["batch_id"] == batch_id and "send_at" in b for b in fake.accepted)
    assert not fake.delivered  # SendGrid holds it until send_at
    status = sender("status", "--issue", SEED_SLUG).output
    assert "scheduled for 20" in status and f"(batch {batch_id})" in status
    # a reader unsubscribes through our page before send_at; serve's pusher (the app's lifespan) tells SendGrid
    with TestClient(create_app(sender.root)) as client:
        answer = client.post(f"/unsubscribe/{make_token(SECRET, 'reader1@readers.net')}",
                             content=b"List-Unsubscribe=One-Click",
                             headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert answer.status_code == 200
        wait_for(lambda: "reader1@readers.net" in fake.global_suppressions, what="the opt-out to reach SendGrid")
    assert fake.global_suppressions == {"reader1@readers.net"}
    fake.deliver_scheduled()  # send_at comes: SendGrid drops the suppressed reader
    assert dict(fake.delivered) == {"reader0@readers.net": 1, "reader2@readers.net": 1}


def test_schedule_unschedule_and_send_again(sender: Cli, fake: FakeSendGrid) -> None:
    write_list(sender.root, readers(4))
    assert sender("send", "--issue", SEED_SLUG, "--yes", "--no-sync", "--at", _at()).exit_code == 0
    again = sender("send", "--issue", SEED_SLUG, "--yes", "--no-sync", "--at", _at(3))
    assert again.exit_code == 1 and "already scheduled for" in again.output and "newsletter unschedule" in again.output
    assert len(fake.batch_ids) == 1
    batch_id = fake.batch_ids[0]
    cancelled = sender("unschedule", "--issue", SEED_SLUG)
    assert cancelled.exit_code == 0, cancelled.output
    assert "cancelled the send scheduled for" in cancelled.output and batch_id in cancelled.output
    assert fake.scheduled_sends == {batch_id: "cancel"}
    state = load_state(journal_path(sender.root, SEED_SLUG))
    assert state.sent_readers == 0 and state.pending_schedule() is None  # cancelled batches do not count
    assert "cancelled at" in sender("status", "--issue", SEED_SLUG).output
    assert sender("unschedule", "--issue", SEED_SLUG).exit_code == 1  # nothing scheduled any more
    now = sender("send", "--issue", SEED_SLUG, "--yes", "--no-sync")
    assert now.exit_code == 0, now.output
    fake.deliver_scheduled()  # the cancelled batch is discarded at send_at
    assert dict(fake.delivered) == {e: 1 for e, _ in readers(4)}


def test_command_line_opt_outs_reach_sendgrid_and_resubscribe_lifts_them(sender: Cli, fake: FakeSendGrid) -> None:
    write_list(sender.root, readers(2))
    out = sender("unsubscribe", "reader0@readers.net")
    assert "SendGrid told: 1 address(es)" in out.output
    assert fake.global_suppressions == {"reader0@readers.net"}
    sender("resubscribe", "reader0@readers.net")
    assert fake.global_suppressions == set()
    assert fake.suppression_requests[-1][0] == "DELETE"
    configure(sender.root, asm_group_id=42)  # with an unsubscribe group, the group's list
    sender("unsubscribe", "reader1@readers.net", "--event", "spamreport")
    assert fake.group_suppressions == {"42": {"reader1@readers.net"}}
    bounce = sender("unsubscribe", "reader0@readers.net", "--event", "bounce")  # SendGrid has its own bounces
    assert "SendGrid told" not in bounce.output and fake.group_suppressions == {"42": {"reader1@readers.net"}}


def test_what_cannot_be_pushed_waits_for_sync(sender: Cli, fake: FakeSendGrid,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SENDGRID_API_KEY")
    out = sender("unsubscribe", "a@readers.net", "b@readers.net")
    assert out.exit_code == 0 and "SendGrid not told yet (SENDGRID_API_KEY is not set)" in out.output
    from newsletter.ledger import ledger_path

    record(ledger_path(sender.root), "c@readers.net", "unsubscribe", source="sendgrid")  # webhook
    pending = sender("sync", "--pending")
    assert "waiting to reach SendGrid: 2 opt-out(s), 0 lift(s)" in pending.output
    assert "suppress a@readers.net" in pending.output and "c@readers.net" not in pending.output
    monkeypatch.setenv("SENDGRID_API_KEY", "SG.test-key.for-the-fake")
    synced = sender("sync")
    assert synced.exit_code == 0, synced.output
    assert "pushed 2 address(es)" in synced.output
    assert fake.global_suppressions == {"a@readers.net", "b@readers.net"}  # not c: it came from SendGrid
    assert "waiting to reach SendGrid: 0 opt-out(s)" in sender("sync", "--pending").output


def test_imported_opt_outs_are_pushed_in_batches_of_1000(sender: Cli, fake: FakeSendGrid, tmp_path: Path) -> None:
    export = tmp_path / "unsubscribed_members_export_1a.csv"
    export.write_text("Email Address,UNSUB_TIME\n" + "".join(f"gone{i}@readers.net,2024-01-01 00:00:00\n"
                                                             for i in range(2500)))
    result = sender("subscribers", "import", str(export))
    assert result.exit_code == 0, result.output
    posts = [b for m, p, b in fake.suppression_requests if m == "POST"]
    assert [len(b["recipient_emails"]) for b in posts] == [1000, 1000, 500]
    assert len(fake.global_suppressions) == 2500


# -- a cancel SendGrid may no longer honour is refused; the truth survives a refusal and a full disk ------------
def test_too_close_to_cancel_warns_at_scheduling_and_refuses_to_unschedule(sender: Cli, fake: FakeSendGrid) -> None:
    write_list(sender.root, readers(3))
    soon = sender("send", "--issue", SEED_SLUG, "--yes", "--no-sync", "--at", _at(hours=3 / 60))
    assert soon.exit_code == 0, soon.output
    assert "less than 15 minutes away" in soon.output and "can no longer take it back" in soon.output
    late = sender("unschedule", "--issue", SEED_SLUG)
    assert late.exit_code == 1
    assert "too late to cancel: SendGrid may already be sending; it goes out at 20" in late.output
    assert fake.scheduled_sends == {}  # SendGrid was not asked
    again = sender("send", "--issue", SEED_SLUG, "--yes", "--no-sync")  # no second copy while it may go out
    assert again.exit_code == 0 and "nothing to send" in again.output
    assert len(fake.accepted) == 1


def test_a_refused_cancel_leaves_the_send_scheduled(sender: Cli, fake: FakeSendGrid) -> None:
    write_list(sender.root, readers(3))
    assert sender("send", "--issue", SEED_SLUG, "--yes", "--no-sync", "--at", _at()).exit_code == 0
    fake.scheduled_sends[fake.batch_ids[0]] = "pause"  # SendGrid then answers 400 to a cancel
    refused = sender("unschedule", "--issue", SEED_SLUG)
    assert refused.exit_code == 1 and f"SendGrid did not cancel batch {fake.batch_ids[0]}" in refused.output
    status = sender("status", "--issue", SEED_SLUG).output
    assert "SendGrid refused to cancel it" in status and "cancelled at" not in status
    assert load_state(journal_path(sender.root, SEED_SLUG)).sent_readers == 3  # as good as sent: never re-sent
    assert "nothing to send" in sender("send", "--issue", SEED_SLUG, "--yes", "--no-sync").output


def test_a_cancel_sendgrid_took_but_the_disk_could_not_record_is_found_again(
        sender: Cli, fake: FakeSendGrid, short_write_shim: Path) -> None:
    import os
    import subprocess
    import sys

    from conftest import shim_env

    write_list(sender.root, readers(3))
    assert sender("send", "--issue", SEED_SLUG, "--yes", "--no-sync", "--at", _at()).exit_code == 0
    exe = str(Path(sys.executable).parent / "newsletter")
    argv = [exe, "unschedule", "--root", str(sender.root), "--issue", SEED_SLUG]
    full = subprocess.run(argv, capture_output=True, text=True, timeout=60,
                          env={**os.environ, **shim_env(short_write_shim, "sends/", tear='"t":"cancel","')})
    assert full.returncode == 1, full.stdout + full.stderr
    assert "disk full" in full.stderr and "SendGrid cancelled it, but that could not be recorded" in full.stderr
    assert fake.scheduled_sends == {fake.batch_ids[0]: "cancel"}
    status = sender("status", "--issue", SEED_SLUG).output
    assert "a cancel was asked for at" in status and "SendGrid's answer was not recorded" in status
    # while its fate is unknown it is as good as sent: never twice
    assert "nothing to send" in sender("send", "--issue", SEED_SLUG, "--yes", "--no-sync").output
    again = sender("unschedule", "--issue", SEED_SLUG)  # asks SendGrid what it holds, and records it
    assert again.exit_code == 0, again.output
    assert "cancelled at" in sender("status", "--issue", SEED_SLUG).output
    assert load_state(journal_path(sender.root, SEED_SLUG)).sent_readers == 0


def test_scheduling_asks_and_reports_in_its_own_words(sender: Cli, fake: FakeSendGrid) -> None:
    write_list(sender.root, readers(3))
    when = dt.datetime.now(dt.UTC) + dt.timedelta(hours=2)
    result = sender("send", "--issue", SEED_SLUG, "--no-sync", "--at", when.isoformat(timespec="minutes"),
                    input="y\n")
    assert result.exit_code == 0, result.output
    assert f"Schedule for {when.strftime('%a %-d %b %H:%M')} UTC? [y/N]" in result.output
    assert "scheduled: 3 reader(s)" in result.output and "\nsent:" not in result.output
    status = sender("status", "--issue", SEED_SLUG).output
    assert "scheduled:  3 reader(s), held by SendGrid until the send time" in status
    assert "sent:       0 reader(s)" in status


def test_a_finished_send_is_not_quietly_sent_to_new_readers(sender: Cli, fake: FakeSendGrid) -> None:
    write_list(sender.root, readers(3))
    assert sender("send", "--issue", SEED_SLUG, "--yes", "--no-sync").exit_code == 0
    write_list(sender.root, readers(5))  # two readers joined since
    again = sender("send", "--issue", SEED_SLUG, "--yes", "--no-sync")
    assert again.exit_code == 0, again.output
    assert f"nothing to send: {SEED_SLUG} went out on 20" in again.output
    assert "2 reader(s) joined since: `--include-new-readers` sends it to exactly them" in again.output
    assert sum(fake.delivered.values()) == 3
    new = sender("send", "--issue", SEED_SLUG, "--yes", "--no-sync", "--include-new-readers")
    assert new.exit_code == 0 and "sent: 2 reader(s)" in new.output, new.output
    assert dict(fake.delivered) == {e: 1 for e, _ in readers(5)}
