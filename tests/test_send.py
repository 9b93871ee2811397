"""send.py, through `newsletter send` against a real HTTP fake of SendGrid on 127.0.0.1: exactly once, crash-safe
(kill -9 and a full disk in real processes), resumable; how a failure is classified; `status`."""

from __future__ import annotations

import html
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import SECRET, SEED_SLUG, Cli, configure, readers, record, sent_journal, wait_for, write_list
from fake_sendgrid import API_KEY, FakeSendGrid
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from newsletter.errors import TransportError
from newsletter.journal import journal_path, send_lock
from newsletter.ledger import ledger_path
from newsletter.send import Action, backoff_delay, classify
from newsletter.tokens import verify_token


def recipients(fake: FakeSendGrid) -> list[str]:
    return [r["email"] for body in fake.requests for p in body["personalizations"] for r in p["to"]]


def test_exact_delivery_with_suppressions_in_mixed_case(sender: Cli, fake: FakeSendGrid) -> None:
    root = sender.root
    rows = readers(2500)
    rows += [("Reader7@READERS.net", "Dup Seven"), ("  reader8@readers.net ", "Dup Eight")]  # duplicates
    write_list(root, rows)
    suppressed = {3: "unsubscribe", 1500: "bounce", 2001: "spamreport", 2499: "invalid"}
    for i, event in suppressed.items():
        record(ledger_path(root), f"READER{i}@Readers.NET", event)
    record(ledger_path(root), "reader10@readers.net", "unsubscribe")
    record(ledger_path(root), "Reader10@readers.net", "resubscribe")
    result = sender("send", "--issue", SEED_SLUG, "--yes")
    assert result.exit_code == 0, result.output
    expected = {f"reader{i}@readers.net" for i in range(2500) if i not in suppressed}
    assert set(fake.delivered) == expected
    assert all(count == 1 for count in fake.delivered.values())
    assert "sent: 2496 reader(s) in 3 batch(es)" in result.output
    assert "suppressed: 4" in result.output and "in doubt: 0 reader(s)" in result.output
    assert "readers:    2496 (after suppression)" in result.output
    assert "progress: 2496/2496 readers, batch 3/3" in result.output  # plain lines when not a terminal
    for body in fake.requests:
        assert len(body["personalizations"]) <= 1000
        assert all(len(p["to"]) == 1 for p in body["personalizations"])
        emails = [p["to"][0]["email"] for p in body["personalizations"]]
        assert len(emails) == len(set(emails))
        assert [c["type"] for c in body["content"]] == ["text/plain", "text/html"]
        assert body["custom_args"] == {"newsletter_issue": SEED_SLUG}
        assert body["reply_to"] == {"email": "hello@micromoments.net"}
        assert body["tracking_settings"]["subscription_tracking"] == {"enable": False}


def test_invalid_addresses_in_the_list_are_skipped_and_reported(sender: Cli, fake: FakeSendGrid) -> None:
    write_list(sender.root, [("ok@readers.net", ""), ("not an address", ""), ("two@@readers.net", ""),
                             ("ümlaut@bücher.de", "")])
    result = sender("send", "--issue", SEED_SLUG, "--yes")
    assert result.exit_code == 0, result.output
    assert "2 address(es) in subscribers.csv are not valid and will be skipped" in result.output
    assert "'not an address'" in result.output
    assert set(fake.delivered) == {"ok@readers.net", "ümlaut@bücher.de"}


def test_each_reader_gets_their_own_link_in_body_and_headers(sender: Cli, fake: FakeSendGrid) -> None:
    write_list(sender.root, [("ada@readers.net", "Ada"), ("bob@readers.net", "")])
    assert sender("send", "--issue", SEED_SLUG, "--yes").exit_code == 0
    body = fake.requests[0]
    for p in body["personalizations"]:
        address = p["to"][0]["email"]
        header = p["headers"]["List-Unsubscribe"]
        assert header.startswith("<https://letters.micromoments.net/unsubscribe/") and header.endswith(">")
        assert p["headers"]["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        url = header[1:-1]
        assert verify_token(SECRET, url.rsplit("/", 1)[1]) == address
        # what SendGrid will do: fill the substitution tags in each part
        html_part, text_part = (c["value"] for c in reversed(body["content"]))
        for tag, value in p["substitutions"].items():
            html_part = html_part.replace(tag, value)
            text_part = text_part.replace(tag, value)
        assert f'href="{url}"' in html_part
        assert f"Unsubscribe: {url}" in text_part
        assert "%%" not in html_part and "%%" not in text_part
    greeting = {p["to"][0]["email"]: p["substitutions"]["%%nl_greeting_text%%"] for p in body["personalizations"]}
    assert greeting == {"ada@readers.net": "Dear Ada,", "bob@readers.net": "Hello,"}  # nobody reads "Dear ,"
    assert "%%nl_name_text%%" not in body["personalizations"][0]["substitutions"]  # unused tags do not travel


def test_awkward_names_are_escaped_per_part(sender: Cli, fake: FakeSendGrid) -> None:
    write_list(sender.root, [("odd@readers.net", 'Ann <b>&, "Jr"; PhD')])
    assert sender("send", "--issue", SEED_SLUG, "--yes").exit_code == 0
    p = fake.requests[0]["personalizations"][0]
    assert p["to"][0]["name"] == "Ann <b>& Jr PhD"
    subs = p["substitutions"]
    assert subs["%%nl_greeting_text%%"] == "Dear Ann,"
    (root := sender.root / "issues" / SEED_SLUG / "issue.yaml").write_text(
        root.read_text() + 'greeting: "Dear {name},"\n')
    fake.requests.clear()
    write_list(sender.root, [("odd2@readers.net", 'Ann <b>&, "Jr"; PhD')])
    assert sender("send", "--issue", SEED_SLUG, "--yes", "--include-new-readers").exit_code == 0
    subs = fake.requests[0]["personalizations"][0]["substitutions"]
    assert subs["%%nl_greeting_text%%"] == 'Dear Ann <b>&, "Jr"; PhD,'
    assert subs["%%nl_greeting_html%%"] == html.escape('Dear Ann <b>&, "Jr"; PhD,', quote=True)


@pytest.mark.parametrize(("name", "first", "greeting"), [
    ("Dr. Jane Doe, PhD", "", "Dear Jane,"), ('Mary-Kate "MK" Olsen, Jr.', "", "Dear Mary-Kate,"),
    ("Jane Doe", "Janey", "Dear Janey,"), ("", "", "Hello,"), ("  ", "", "Hello,")])
def test_greetings_by_first_name(sender: Cli, fake: FakeSendGrid, name: str, first: str, greeting: str) -> None:
    import csv

    with open(sender.root / "subscribers" / "subscribers.csv", "w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows([["email", "name", "first_name"], ["jd@readers.net", name, first]])
    assert sender("send", "--issue", SEED_SLUG, "--yes").exit_code == 0
    assert f"<p style=\"margin:0 0 18px 0;\">{greeting}</p>" in _as_delivered(fake.requests[0], "text/html")
    assert f"\n{greeting}\n" in _as_delivered(fake.requests[0], "text/plain")


def _as_delivered(body: dict, part: str, personalization: int = 0) -> str:
    """A content part with the personalization's substitutions filled in, as SendGrid does before delivery."""
    value = next(c["value"] for c in body["content"] if c["type"] == part)
    for tag, replacement in body["personalizations"][personalization]["substitutions"].items():
        value = value.replace(tag, replacement)
    return value


def test_the_delivered_html_greets_with_the_escaped_name(sender: Cli, fake: FakeSendGrid) -> None:
    name = 'Ann <b>&, "Jr"; PhD'
    yaml_path = sender.root / "issues" / SEED_SLUG / "issue.yaml"
    yaml_path.write_text(yaml_path.read_text() + 'greeting: "Dear {name},"\n')  # the whole name, awkward parts too
    write_list(sender.root, [("odd@readers.net", name)])
    assert sender("send", "--issue", SEED_SLUG, "--yes").exit_code == 0
    page = _as_delivered(fake.requests[0], "text/html")
    assert html.escape(name, quote=True) in page or html.escape(name, quote=False) in page
    assert "<b>&" not in page  # the raw (text part's) value would open a tag in every reader's inbox
    text = _as_delivered(fake.requests[0], "text/plain")
    assert name in text and "&lt;" not in text
    assert "%%" not in page and "%%" not in text  # every tag filled


def test_rerun_sends_nothing_twice(sender: Cli, fake: FakeSendGrid) -> None:
    write_list(sender.root, readers(1200))
    assert sender("send", "--issue", SEED_SLUG, "--yes").exit_code == 0
    write_list(sender.root, readers(1300))  # 100 new readers since
    quiet = sender("send", "--issue", SEED_SLUG, "--yes")  # the send finished: nobody new is mailed unasked
    assert quiet.exit_code == 0 and "100 reader(s) joined since" in quiet.output, quiet.output
    assert len(fake.delivered) == 1200
    second = sender("send", "--issue", SEED_SLUG, "--yes", "--include-new-readers")
    assert second.exit_code == 0, second.output
    assert "already sent earlier: 1200" in second.output
    assert len(fake.delivered) == 1300 and max(fake.delivered.values()) == 1
    third = sender("send", "--issue", SEED_SLUG)  # nothing left: no question asked, nothing sent
    assert third.exit_code == 0, third.output
    assert "nothing to send" in third.output and "Send now?" not in third.output
    assert sum(fake.delivered.values()) == 1300


def test_400_prints_sendgrids_errors_and_stops(sender: Cli, fake: FakeSendGrid) -> None:
    configure(sender.root, batch_size=10, concurrency=1)
    write_list(sender.root, readers(30))
    fake.plan = ["400"]
    result = sender("send", "--issue", SEED_SLUG, "--yes")
    assert result.exit_code == 1
    assert "from.email: The from email does not contain a valid address." in result.output
    assert len(fake.requests) == 1  # not retried, nothing after
    assert "failed: 10 reader(s) in 1 batch(es)" in result.output
    assert "not attempted: 20" in result.output
    again = sender("send", "--issue", SEED_SLUG, "--yes")  # the cause fixed: a re-run continues
    assert again.exit_code == 0 and len(fake.delivered) == 30


def test_401_mid_send_stops_with_a_key_message(sender: Cli, fake: FakeSendGrid) -> None:
    write_list(sender.root, readers(5))
    fake.plan = ["401"]
    result = sender("send", "--issue", SEED_SLUG, "--yes")
    assert result.exit_code == 1 and "check SENDGRID_API_KEY" in result.output
    assert len(fake.requests) == 1


def test_413_splits_the_batch(sender: Cli, fake: FakeSendGrid) -> None:
    write_list(sender.root, readers(10))
    fake.plan = ["413"]
    result = sender("send", "--issue", SEED_SLUG, "--yes")
    assert result.exit_code == 0, result.output
    assert [len(b["personalizations"]) for b in fake.requests] == [10, 5, 5]
    assert len(fake.delivered) == 10 and max(fake.delivered.values()) == 1


def test_429_waits_for_the_reset_then_retries(sender: Cli, fake: FakeSendGrid) -> None:
    write_list(sender.root, readers(10))
    fake.plan = ["429:3"]  # X-RateLimit-Reset is 2 to 3 s away (whole seconds)
    result = sender("send", "--issue", SEED_SLUG, "--yes")
    assert result.exit_code == 0, result.output
    assert fake.responses == [429, 202]
    gap = fake.times[1] - fake.times[0]  # measured at the server: the pre-flight does not count
    assert 1.9 <= gap < 4, gap  # the backoff alone (0.01 s here) would retry at once
    assert len(fake.delivered) == 10


def test_5xx_retried_with_backoff(sender: Cli, fake: FakeSendGrid) -> None:
    configure(sender.root, backoff=0.3)  # each wait is at least half of it, growing with jitter
    write_list(sender.root, readers(10))
    fake.plan = ["500", "503", "502"]
    result = sender("send", "--issue", SEED_SLUG, "--yes")
    assert result.exit_code == 0, result.output
    assert fake.responses == [500, 503, 502, 202]
    gaps = [b - a for a, b in zip(fake.times, fake.times[1:], strict=False)]
    assert all(g >= 0.15 for g in gaps), gaps
    assert len(fake.delivered) == 10


def test_5xx_exhausted_marks_failed_and_rerun_continues(sender: Cli, fake: FakeSendGrid) -> None:
    configure(sender.root, retries=2, batch_size=10, concurrency=1)
    write_list(sender.root, readers(20))
    fake.plan = ["500", "500", "500"]
    result = sender("send", "--issue", SEED_SLUG, "--yes")
    assert result.exit_code == 1
    assert "failed: 10 reader(s) in 1 batch(es)" in result.output
    assert "run the same command again" in result.output
    assert len(fake.delivered) == 10
    status = sender("status", "--issue", SEED_SLUG)
    assert "pending:    10" in status.output
    again = sender("send", "--issue", SEED_SLUG, "--yes")
    assert again.exit_code == 0 and "already sent earlier: 10" in again.output
    assert len(fake.delivered) == 20 and max(fake.delivered.values()) == 1


def test_dropped_after_acceptance_is_in_doubt_never_resent(sender: Cli, fake: FakeSendGrid) -> None:
    configure(sender.root, batch_size=10, concurrency=1)
    write_list(sender.root, readers(30))
    fake.plan = ["", "drop_after"]
    result = sender("send", "--issue", SEED_SLUG, "--yes")
    assert result.exit_code == 1
    assert "in doubt: 10 reader(s) in 1 batch(es)" in result.output
    assert "never re-sent unless you run again with --resend-in-doubt" in result.output
    assert sum(fake.delivered.values()) == 30
    again = sender("send", "--issue", SEED_SLUG, "--yes")
    assert again.exit_code == 1 and "in doubt: 10 reader(s)" in again.output
    assert len(fake.requests) == 3  # nothing re-sent
    status = sender("status", "--issue", SEED_SLUG)
    assert status.exit_code == 1 and "in doubt:   10 reader(s) in 1 batch(es)" in status.output
    assert max(fake.delivered.values()) == 1


def test_dropped_before_acceptance_resent_only_on_request(sender: Cli, fake: FakeSendGrid) -> None:
    configure(sender.root, batch_size=10, concurrency=1)
    write_list(sender.root, readers(20))
    fake.plan = ["drop_before"]
    first = sender("send", "--issue", SEED_SLUG, "--yes")
    assert first.exit_code == 1 and "in doubt: 10 reader(s)" in first.output
    assert len(fake.delivered) == 10
    resend = sender("send", "--issue", SEED_SLUG, "--yes", "--resend-in-doubt")
    assert resend.exit_code == 0, resend.output
    assert len(fake.delivered) == 20 and max(fake.delivered.values()) == 1
    assert sender("status", "--issue", SEED_SLUG).exit_code == 0


def test_timeout_after_sending_is_in_doubt(sender: Cli, fake: FakeSendGrid) -> None:
    configure(sender.root, timeout=1, concurrency=1)
    write_list(sender.root, readers(5))
    fake.plan = ["slow:2.5"]
    result = sender("send", "--issue", SEED_SLUG, "--yes")
    assert result.exit_code == 1 and "in doubt: 5 reader(s)" in result.output
    assert len(fake.requests) == 1


def test_unsubscribe_during_the_send_is_honoured(sender: Cli, fake: FakeSendGrid) -> None:
    configure(sender.root, batch_size=100, concurrency=1)
    write_list(sender.root, readers(500))
    late = [f"READER{i}@readers.NET" for i in range(300, 320)]

    def unsubscribe_some(server: FakeSendGrid, body: dict, index: int) -> None:
        if index == 0:
            # Without the key: this process records only (a push to the same fake would compete with the batch).
            env = {k: v for k, v in os.environ.items() if k != "SENDGRID_API_KEY"}
            cli = subprocess.run([str(Path(sys.executable).parent / "newsletter"), "unsubscribe", "--root",
                                  str(sender.root), *late], capture_output=True, env=env)
            assert cli.returncode == 0

    fake.on_request = unsubscribe_some
    result = sender("send", "--issue", SEED_SLUG, "--yes")
    assert result.exit_code == 0, result.output
    sent = set(recipients(fake))
    assert not sent & {a.lower() for a in late}
    assert len(sent) == 480
    assert "(20 unsubscribed during the send)" in result.output


def test_unsubscribe_while_waiting_to_retry_is_honoured(sender: Cli, fake: FakeSendGrid) -> None:
    configure(sender.root, batch_size=10, concurrency=1)
    write_list(sender.root, readers(10))
    fake.plan = ["500"]

    def unsubscribe_after_first(server: FakeSendGrid, body: dict, index: int) -> None:
        if index == 0:
            record(ledger_path(sender.root), "READER3@readers.net", "unsubscribe")

    fake.on_request = unsubscribe_after_first
    result = sender("send", "--issue", SEED_SLUG, "--yes")
    assert result.exit_code == 0, result.output
    assert fake.responses == [500, 202]
    assert "reader3@readers.net" not in fake.delivered and len(fake.delivered) == 9
    assert sender("status", "--issue", SEED_SLUG).exit_code == 0


def test_two_sends_of_one_issue_are_refused(sender: Cli, fake: FakeSendGrid) -> None:
    write_list(sender.root, readers(5))
    with send_lock(sender.root, SEED_SLUG):
        result = sender("send", "--issue", SEED_SLUG, "--yes")
    assert result.exit_code == 1 and "another `newsletter send`" in result.output
    assert not fake.requests


def test_dry_run_touches_no_network_and_no_journal(sender: Cli, fake: FakeSendGrid,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SENDGRID_API_KEY")
    write_list(sender.root, readers(1500))
    result = sender("send", "--issue", SEED_SLUG, "--dry-run")
    assert result.exit_code == 0, result.output
    assert "would send: 1500 reader(s) in 2 batch(es)" in result.output
    assert not fake.requests and not journal_path(sender.root, SEED_SLUG).exists()


def test_test_copy(sender: Cli, fake: FakeSendGrid) -> None:
    write_list(sender.root, readers(50))
    result = sender("send", "--issue", SEED_SLUG, "--to", "me@writer.net", "--to", "ME@writer.net")
    assert result.exit_code == 0, result.output
    assert recipients(fake) == ["me@writer.net"]
    assert fake.requests[0]["subject"] == "[Test] Micro moments of connection"
    assert not journal_path(sender.root, SEED_SLUG).exists()


def test_confirmation_prompt(sender: Cli, fake: FakeSendGrid) -> None:
    write_list(sender.root, readers(5))
    no = sender("send", "--issue", SEED_SLUG, input="n\n")
    assert no.exit_code == 1 and "Send now?" in no.output and not fake.requests
    nobody = sender("send", "--issue", SEED_SLUG)  # no terminal, no --yes: nothing goes out
    assert nobody.exit_code == 1 and "pass --yes" in nobody.output and not fake.requests
    yes = sender("send", "--issue", SEED_SLUG, input="y\n")
    assert yes.exit_code == 0 and len(fake.delivered) == 5


def test_scheduled_and_sandbox(sender: Cli, fake: FakeSendGrid) -> None:
    import datetime as dt

    write_list(sender.root, readers(3))
    at = (dt.datetime.now() + dt.timedelta(hours=5)).replace(microsecond=0)
    result = sender("send", "--issue", SEED_SLUG, "--yes", "--at", at.isoformat(), "--sandbox")
    assert result.exit_code == 0, result.output
    body = fake.requests[0]
    assert body["send_at"] == int(at.timestamp())
    assert body["mail_settings"] == {"sandbox_mode": {"enable": True}}
    past = sender("send", "--issue", SEED_SLUG, "--yes", "--at", "2020-01-01T10:00")
    assert past.exit_code == 1 and "in the past" in past.output


def _real_send(root: Path, *extra: str) -> subprocess.Popen[bytes]:
    """`newsletter send` as its own process (what kill -9 or an LD_PRELOAD shim needs)."""
    exe = str(Path(sys.executable).parent / "newsletter")
    return subprocess.Popen([exe, "send", "--root", str(root), "--issue", SEED_SLUG, "--yes", "--no-sync", *extra],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=os.environ.copy())


def _kill_after(proc: subprocess.Popen[bytes], fake: FakeSendGrid, requests: int) -> None:
    """kill -9 `proc` once the fake has received `requests` requests in all (or `proc` ended)."""
    wait_for(lambda: len(fake.requests) >= requests or proc.poll() is not None, 60, f"{requests} requests")
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)


def test_kill_9_mid_send_then_rerun(sender: Cli, fake: FakeSendGrid) -> None:
    """A real `newsletter send` process killed with two requests in flight (accepted by SendGrid, not yet
    answered); the re-run reports exactly those batches in doubt and never duplicates."""
    configure(sender.root, batch_size=250, concurrency=2, timeout=30)
    write_list(sender.root, readers(2000))
    fake.plan = ["", "", "", "slow:30", "slow:30"]
    _kill_after(_real_send(sender.root), fake, 5)
    assert len(fake.requests) >= 5
    fake.plan = []
    rerun = sender("send", "--issue", SEED_SLUG, "--yes", "--no-sync")
    assert rerun.exit_code == 1, rerun.output
    assert "in doubt: 500 reader(s) in 2 batch(es)" in rerun.output
    assert max(fake.delivered.values()) == 1
    assert len(fake.delivered) == 2000  # the in-flight requests had been accepted before the kill


@pytest.mark.parametrize("seed", [7])
def test_kills_at_random_instants_during_a_send(sender: Cli, fake: FakeSendGrid, seed: int) -> None:
    """kill -9 twice at random moments when requests are in flight (some hang accepted, some are dropped before
    acceptance); then a run to the end. Nobody gets two copies, and everyone not delivered is in a batch
    reported as in doubt."""
    import random

    from newsletter.journal import load_state

    configure(sender.root, batch_size=200, concurrency=3, timeout=30)
    rows = readers(2400)  # 12 batches: each kill finds some still to go
    write_list(sender.root, rows)
    fake.latency = 0.03
    rnd = random.Random(seed)
    for plan in (["", "slow:30", "", "drop_before", "slow:30"], ["slow:30", "", "slow:30"]):
        fake.plan = list(plan)
        _kill_after(_real_send(sender.root), fake, len(fake.requests) + rnd.randint(3, 6))
    fake.plan = []
    final = sender("send", "--issue", SEED_SLUG, "--yes", "--no-sync")
    assert final.exit_code == 1, final.output  # batches are in doubt
    assert max(fake.delivered.values()) == 1
    state = load_state(journal_path(sender.root, SEED_SLUG))
    doubt = {e for b in state.doubt_batches.values() for e in b.emails}
    assert doubt and set(fake.delivered) | doubt == {e for e, _ in rows}
    assert f"in doubt: {len(doubt)} reader(s)" in final.output


@settings(max_examples=8, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(st.tuples(st.integers(0, 60), st.sampled_from(["unsubscribe", "bounce", "spamreport", "invalid",
                                                               "resubscribe"]), st.booleans()), max_size=40))
@example([(1, "unsubscribe", True), (1, "resubscribe", False), (2, "bounce", False), (2, "resubscribe", True),
          (3, "resubscribe", False), (3, "spamreport", True), (4, "invalid", True), (5, "unsubscribe", False)])
def test_no_suppressed_address_is_ever_requested(tmp_path_factory, fake: FakeSendGrid, env: dict[str, str],
                                                 events) -> None:
    """Whatever the ledger says, in any case and order, the send requests exactly the readers it leaves
    unsuppressed (the latest event of each address wins). One fake for every example: forgotten in between."""
    from conftest import FILLED_CONFIG, new_project

    fake.reset()
    root = new_project(tmp_path_factory.mktemp("prop") / "letters", FILLED_CONFIG)
    configure(root, batch_size=7)
    write_list(root, [(f"R{i}@Readers.net" if i % 3 else f"r{i}@readers.net", "") for i in range(60)])
    latest: dict[str, str] = {}
    for i, event, upper in events:
        address = f"r{i}@readers.net"
        record(ledger_path(root), address.upper() if upper else address, event)
        latest[address] = event
    result = Cli(root)("send", "--issue", SEED_SLUG, "--yes", "--no-sync")
    assert result.exit_code == 0, result.output
    suppressed = {a for a, e in latest.items() if e != "resubscribe"}
    sent = set(recipients(fake))
    assert not sent & suppressed
    assert sent == {f"r{i}@readers.net" for i in range(60)} - suppressed


# -- a disk that fills up inside each kind of journal record ---------------------------------------------
# (record torn, the fake's answer to batch 2's first request)
TORN_RECORDS = {
    "batch": ('"t":"batch","b":2', ""),
    "attempt": ('"t":"attempt","b":2', ""),
    "ok": ('"t":"ok","b":2', ""),
    "retry": ('"t":"retry","b":2', "500"),
    "failed": ('"t":"failed","b":2', "400"),
    "doubt": ('"t":"doubt","b":2', "drop_after"),
    "replaced": ('"t":"replaced","b":2', "413"),
}


def _count(label: str, output: str) -> int:
    import re

    match = re.search(rf"^{label}: (\d+) reader", output, re.MULTILINE)
    assert match, output
    return int(match.group(1))


# One process for every kind's shimmed send: it imports the package once, then forks a send per kind (each with
# its own newsletter, fake and SHIM_TEAR), as seven `newsletter send` processes would run, for a seventh of the
# start-up. The shim is loaded into it (LD_PRELOAD), so into every fork; it never writes a journal itself.
FORKED_SENDS = """
import json, os, sys
import newsletter.cli
for module in ("archive", "build", "check", "counting", "eml", "images", "journal", "message", "preflight",
               "render", "send", "sendgrid", "subscribers"):
    __import__("newsletter." + module)
codes = []
for job in json.loads(sys.argv[1]):
    pid = os.fork()
    if pid == 0:
        os.environ.update(job["env"])
        for fd, path in ((1, job["out"]), (2, job["err"])):
            os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), fd)
        code = 0
        try:
            newsletter.cli.main(job["argv"], prog_name="newsletter")
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)
    codes.append(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
print(json.dumps(codes))
"""


@dataclass
class TornSend:
    """A send whose journal write was cut short: its newsletter, its fake, what it printed and its exit code."""

    root: Path
    fake: FakeSendGrid
    out: Path
    err: Path
    code: int = -1


@pytest.fixture(scope="module")
def torn_sends(short_write_shim: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, TornSend]]:
    """Each kind's send on a disk that fills up inside that record of batch 2, 12 readers in batches of 3."""
    from conftest import FILLED_CONFIG, new_project, shim_env

    base = tmp_path_factory.mktemp("torn")
    runs: dict[str, TornSend] = {}
    jobs = []
    try:
        for kind, (tear, answer) in TORN_RECORDS.items():
            root = new_project(base / kind, FILLED_CONFIG)
            configure(root, batch_size=3, concurrency=1, retries=2)
            write_list(root, readers(12))
            run = runs[kind] = TornSend(root, FakeSendGrid().start(), base / f"{kind}.out", base / f"{kind}.err")
            run.fake.plan = ["", answer]
            jobs.append({"argv": ["send", "--root", str(root), "--issue", SEED_SLUG, "--yes", "--no-sync"],
                         "env": {"SENDGRID_API_URL": run.fake.url, "SHIM_TEAR": tear},
                         "out": str(run.out), "err": str(run.err)})
        env = {**os.environ, **shim_env(short_write_shim, f"sends/{SEED_SLUG}.jsonl"), "SENDGRID_API_KEY": API_KEY,
               "NEWSLETTER_SECRET": SECRET}
        done = subprocess.run([sys.executable, "-c", FORKED_SENDS, json.dumps(jobs)], env=env, capture_output=True,
                              text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        for run, code in zip(runs.values(), json.loads(done.stdout), strict=True):
            run.code = code
        yield runs
    finally:
        for run in runs.values():
            run.fake.stop()  # fails if a body broke SendGrid's schema


@pytest.mark.parametrize("kind", list(TORN_RECORDS))
def test_a_short_journal_write_never_mails_anyone_twice(torn_sends: dict[str, TornSend],
                                                        monkeypatch: pytest.MonkeyPatch, kind: str) -> None:
    run = torn_sends[kind]
    fake, out, err = run.fake, run.out.read_text(), run.err.read_text()
    assert run.code == 1, out + err
    assert f"disk full: could not record the `{kind}` record of batch 2 in " in err, err
    assert "internal error" not in err and "Traceback" not in err
    assert len(fake.requests) <= 2  # the run stopped at the failed write
    if kind in ("batch", "attempt"):
        assert len(fake.requests) == 1  # batch 2's request never left
    fake.plan = []
    for name, value in {"SENDGRID_API_URL": fake.url, "SENDGRID_API_KEY": API_KEY,
                        "NEWSLETTER_SECRET": SECRET}.items():
        monkeypatch.setenv(name, value)
    rerun = Cli(run.root)("send", "--issue", SEED_SLUG, "--yes", "--no-sync")  # room again: no shim needed
    everyone = {e for e, _ in readers(12)}
    delivered = set(fake.delivered)
    assert max(fake.delivered.values()) == 1, fake.delivered  # nobody mailed twice
    in_doubt = _count("in doubt", rerun.output)
    assert len(everyone - delivered) <= in_doubt, rerun.output  # everyone not mailed is reported
    if kind in ("batch", "attempt"):
        assert rerun.exit_code == 0 and delivered == everyone and in_doubt == 0, rerun.output
    else:  # the answer (or the request's fate) could not be recorded: the batch is reported in doubt
        assert rerun.exit_code == 1 and in_doubt == 3, rerun.output
        assert "never re-sent unless you run again with --resend-in-doubt" in rerun.output


def test_each_request_leaves_after_its_attempt_record_is_whole_and_synced(sender: Cli, fake: FakeSendGrid,
                                                                           short_write_shim: Path,
                                                                           tmp_path: Path) -> None:
    """The order of the journal's writes and fsyncs (traced on its descriptor by the shim) against the moment
    each request reaches the fake: the journal's last record must be that batch's `attempt`, written whole
    and fsynced, before its request arrives."""
    from conftest import shim_env

    root = sender.root
    configure(root, batch_size=3, concurrency=1)
    write_list(root, readers(9))
    trace = tmp_path / "journal.trace"
    journal = journal_path(root, SEED_SLUG)
    problems: list[str] = []

    def check_order(server: FakeSendGrid, body: dict, index: int) -> None:
        ops = trace.read_text().split("\n")[:-1] if trace.exists() else []
        if not ops or ops[-1] != "s":
            problems.append(f"request {index}: the journal's last operation was {ops[-1:]!r}, not an fsync")
        data = journal.read_bytes()
        if not data.endswith(b"\n"):
            problems.append(f"request {index}: the journal ends in a partial record")
        records = [json.loads(line) for line in data.splitlines()]
        last = records[-1]
        if last.get("t") != "attempt":
            problems.append(f"request {index}: the last record is {last!r}, not the attempt")
            return
        emails = next(r["emails"] for r in records if r.get("t") == "batch" and r.get("b") == last["b"])
        sent_to = [p["to"][0]["email"] for p in body["personalizations"]]
        if emails != sent_to:
            problems.append(f"request {index}: the attempt's batch {emails} is not the request's {sent_to}")

    fake.on_request = check_order
    exe = str(Path(sys.executable).parent / "newsletter")
    env = {**os.environ, **shim_env(short_write_shim, f"sends/{SEED_SLUG}.jsonl"), "SHIM_TRACE": str(trace)}
    result = subprocess.run([exe, "send", "--root", str(root), "--issue", SEED_SLUG, "--yes", "--no-sync"],
                            capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert len(fake.requests) == 3 and problems == []


def test_a_413_split_mails_each_reader_once_and_journals_the_replacement(sender: Cli, fake: FakeSendGrid) -> None:
    configure(sender.root, batch_size=8, concurrency=1)
    write_list(sender.root, readers(8))
    fake.plan = ["413", "413"]
    assert sender("send", "--issue", SEED_SLUG, "--yes").exit_code == 0
    sizes = [len(b["personalizations"]) for b in fake.requests]
    assert sizes == [8, 4, 2, 2, 4]
    accepted = [p["to"][0]["email"] for b in fake.accepted for p in b["personalizations"]]
    assert sorted(accepted) == sorted(e for e, _ in readers(8))  # no overlap, nobody left out
    from newsletter.journal import load_state

    state = load_state(journal_path(sender.root, SEED_SLUG))
    assert state.sent_readers == 8 and state.in_doubt_readers == 0 and not state.failed_batches


def test_bodies_encoded_ahead_leave_out_a_reader_who_unsubscribed_since(sender: Cli, fake: FakeSendGrid) -> None:
    """A cold send encodes its first bodies while SpamAssassin scores: a reader who unsubscribes after that is
    still left out, since each batch is checked against the ledger right before it leaves."""
    from concurrent.futures import Future

    from newsletter.preflight import SendOptions, prepare
    from newsletter.send import dispatch

    configure(sender.root, batch_size=10, concurrency=1)
    write_list(sender.root, readers(30))
    prepared = prepare(sender.root, SendOptions(slug=SEED_SLUG, sync=False))
    prepared.prebuild(until=Future())  # a score that never comes: every batch is encoded ahead
    assert [len(r) for r, _ in prepared.prebuilt] == [10, 10, 10]
    record(ledger_path(sender.root), "Reader15@readers.net", "unsubscribe")
    report = dispatch(prepared)
    assert report.ok and report.sent == 29 and report.suppressed_late == 1
    assert sorted(len(b["personalizations"]) for b in fake.requests) == [9, 10, 10]
    assert "reader15@readers.net" not in recipients(fake) and len(set(recipients(fake))) == 29


@pytest.mark.parametrize(("status", "sent", "attempt", "rate_waits", "action"), [
    (None, True, 1, 0, Action.DOUBT),  # no answer after the request left
    (None, False, 1, 0, Action.RETRY),  # refused before it left
    (None, False, 4, 0, Action.GIVE_UP),
    (413, False, 1, 0, Action.SPLIT),
    (429, False, 1, 0, Action.RATE_LIMIT),
    (429, False, 1, 6, Action.GIVE_UP),
    (400, False, 1, 0, Action.STOP), (401, False, 1, 0, Action.STOP), (403, False, 1, 0, Action.STOP),
    (500, False, 1, 0, Action.RETRY), (503, False, 3, 0, Action.RETRY), (502, False, 4, 0, Action.GIVE_UP),
    (404, False, 1, 0, Action.STOP),
])
def test_classify(status, sent: bool, attempt: int, rate_waits: int, action: Action) -> None:
    assert classify(TransportError("x", status=status, sent=sent), attempt, rate_waits, retries=3) is action


def test_backoff_grows_and_never_vanishes() -> None:
    delays = [backoff_delay(a, 1.0) for a in (1, 2, 3, 4, 5, 6, 7, 8, 9, 10) for _ in range(20)]
    assert min(delays) >= 0.5 and max(delays) <= 30.5
    assert max(backoff_delay(6, 1.0) for _ in range(200)) > 8  # 2**5 = 32, capped at 30: it does grow


def test_status_says_when_and_who(ready_project: Path) -> None:
    sent_journal(ready_project, ["a@readers.net", "b@readers.net"])
    (ready_project / "subscribers" / "subscribers.csv").write_text(
        "email\na@readers.net\nb@readers.net\nc@readers.net\n")
    out = Cli(ready_project)("status", "--issue", SEED_SLUG, "--readers").output
    assert "(1 send run(s))" in out and "run:      started 20" in out and ", ended 20" in out
    assert "sent:       2 reader(s)" in out and "pending:    1 reader(s)" in out
    assert out.split("who has it:\n")[1].split() == ["a@readers.net", "b@readers.net"]
