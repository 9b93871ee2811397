"""signup.py: the sign-up state (requests, limits per IP and per mailbox, triage), the list in memory, and
confirming; called as a library, against real files."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from conftest import SECRET, SEED_SLUG, Cli, record, write_list

from newsletter.config import load_config
from newsletter.ledger import Kind, Ledger, ledger_path
from newsletter.outbox import Letter, Outbox
from newsletter.recipients import mailbox_key
from newsletter.signup import (
    ConfirmStatus,
    FormProblem,
    Request,
    Roster,
    SignupOutcome,
    Signups,
    Triage,
    Welcome,
    confirm,
    pending_signups,
    plain_first_name,
    signups_path,
)
from newsletter.subscribers import list_path
from newsletter.tokens import LinkState, make_confirm_token, verify_confirm_token

NOW = 1_800_000_000.0


def _limits(root: Path, per_address: int = 3, per_ip: int = 20) -> None:
    path = root / "newsletter.yaml"
    path.write_text(path.read_text() + f"signup:\n  per_address_per_day: {per_address}\n"
                    f"  per_ip_per_hour: {per_ip}\n")


def _desk(root: Path) -> tuple[Signups, Outbox, Ledger, Roster]:
    return (Signups(root, load_config(root), SECRET), Outbox(root), Ledger(ledger_path(root)), Roster(root))


def _lines(root: Path) -> list[dict]:
    path = signups_path(root)
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_a_request_is_one_line_whatever_the_address(ready_project: Path) -> None:
    write_list(ready_project, [("old@readers.net", "Old"), ("gone@readers.net", "Gone")])
    record(ledger_path(ready_project), "gone@readers.net", "unsubscribe")
    signups, *_ = _desk(ready_project)
    for i, who in enumerate(("fresh@readers.net", "old@readers.net", "gone@readers.net", "fresh@readers.net")):
        result = signups.request(Request(who, ip="10.0.0.1"), now=NOW + i)
        assert result.outcome is SignupOutcome.RECORDED and result.problem is None
    lines = _lines(ready_project)
    assert [r["t"] for r in lines] == ["request"] * 4  # the request path decides nothing about the address
    assert "10.0.0.1" not in signups_path(ready_project).read_text()  # only a keyed hash of the IP
    assert signups_path(ready_project).stat().st_mode & 0o777 == 0o600


def test_the_form_is_checked_and_the_honeypot_writes_nothing(ready_project: Path) -> None:
    signups, *_ = _desk(ready_project)
    assert signups.request(Request("bot@readers.net", honeypot="https://spam.example")).outcome is SignupOutcome.TRAP
    assert signups.request(Request("not an address")).problem is FormProblem.ADDRESS
    for name in ("Your bank account is locked. Verify now at https://evil.example/login", "Nora2", "nora@x.net",
                 "A" * 41, "evil.example"):
        assert signups.request(Request("ok@readers.net", first_name=name)).problem is FormProblem.NAME, name
    assert _lines(ready_project) == []
    for name, kept in (("  Anne-Marie  ", "Anne-Marie"), ("O'Neil", "O'Neil"), ("José  Luis", "José Luis"), ("", "")):
        assert plain_first_name(name) == kept


def test_the_per_ip_limit_is_an_hour_and_holds_across_a_restart(ready_project: Path) -> None:
    _limits(ready_project, per_ip=2)
    signups, *_ = _desk(ready_project)
    outcomes = [signups.request(Request(f"r{i}@readers.net", ip="10.1.1.1"), now=NOW + i).outcome for i in range(3)]
    assert outcomes == [SignupOutcome.RECORDED, SignupOutcome.RECORDED, SignupOutcome.LIMITED]
    assert signups.request(Request("x@readers.net", ip="10.9.9.9"), now=NOW).outcome is SignupOutcome.RECORDED
    # the same process an hour less a second later: the window the first request opened still counts both
    assert signups.request(Request("z@readers.net", ip="10.1.1.1"), now=NOW + 3599).outcome is SignupOutcome.LIMITED
    again, *_ = _desk(ready_project)  # a restart: the windows are read back from the file
    assert again.request(Request("y@readers.net", ip="10.1.1.1"), now=NOW + 120).outcome is SignupOutcome.LIMITED
    assert again.request(Request("y@readers.net", ip="10.1.1.1"), now=NOW + 3599).outcome is SignupOutcome.LIMITED
    assert again.request(Request("y@readers.net", ip="10.1.1.1"), now=NOW + 3601).outcome is SignupOutcome.RECORDED


def test_mailbox_key_is_for_limits_only() -> None:
    assert mailbox_key("Ada+News@Readers.net") == "ada@readers.net"
    assert mailbox_key("a.d.a+x@googlemail.com") == mailbox_key("ADA@gmail.com") == "ada@gmail.com"
    assert mailbox_key("a.da@readers.net") == "a.da@readers.net"  # dots count everywhere but at Gmail
    assert mailbox_key("+@readers.net") == "+@readers.net"


def test_triage_confirms_new_and_unsubscribed_but_not_subscribed(ready_project: Path) -> None:
    write_list(ready_project, [("old@readers.net", "Old"), ("gone@readers.net", "Gone")])
    record(ledger_path(ready_project), "gone@readers.net", "unsubscribe")
    signups, outbox, ledger, roster = _desk(ready_project)
    for who in ("fresh@readers.net", "old@readers.net", "gone@readers.net"):
        signups.request(Request(who), now=NOW)
    assert signups.triage(roster, ledger, outbox, now=NOW) == [Triage.CONFIRM, Triage.SUBSCRIBED, Triage.CONFIRM]
    assert sorted(m.email for m in outbox.waiting()) == ["fresh@readers.net", "gone@readers.net"]
    assert all(m.kind is Letter.CONFIRM and m.signed_up == int(NOW) for m in outbox.waiting())
    assert signups.triage(roster, ledger, outbox, now=NOW + 1) == []  # each sign-up is triaged once
    assert [p.email for p in pending_signups(ready_project, now=NOW)] == ["fresh@readers.net", "gone@readers.net"]


def test_the_per_mailbox_limit_counts_tags_and_gmail_dots_as_one(ready_project: Path) -> None:
    _limits(ready_project, per_address=2)
    signups, outbox, ledger, roster = _desk(ready_project)
    for i, who in enumerate(("victim+1@gmail.com", "vic.tim+2@googlemail.com", "VICTIM@gmail.com",
                             "victim@readers.net")):
        signups.request(Request(who), now=NOW + i)
    assert signups.triage(roster, ledger, outbox, now=NOW + 5) == [Triage.CONFIRM, Triage.CONFIRM, Triage.LIMITED,
                                                                   Triage.CONFIRM]
    # identity is untouched: each confirmation goes to the address as typed
    assert sorted(m.email for m in outbox.waiting()) == ["vic.tim+2@googlemail.com", "victim+1@gmail.com",
                                                         "victim@readers.net"]
    later, *_ = _desk(ready_project)  # counted from the file: a restart changes nothing
    later.request(Request("victim+3@gmail.com"), now=NOW + 3600)
    assert later.triage(roster, ledger, outbox, now=NOW + 3600) == [Triage.LIMITED]
    later.request(Request("victim+4@gmail.com"), now=NOW + 86400 + 10)
    assert later.triage(roster, ledger, outbox, now=NOW + 86400 + 10) == [Triage.CONFIRM]


def test_a_crash_between_queueing_and_recording_the_triage_sends_nothing_twice(ready_project: Path) -> None:
    signups, outbox, ledger, roster = _desk(ready_project)
    signups.request(Request("once@readers.net"), now=NOW)
    signups.triage(roster, ledger, outbox, now=NOW)
    path = signups_path(ready_project)
    path.write_text("".join(line + "\n" for line in path.read_text().splitlines() if '"triaged"' not in line))
    again, outbox2, *_ = _desk(ready_project)  # restarted as if the triage line had never been written
    assert again.triage(roster, ledger, outbox2, now=NOW + 1) == [Triage.CONFIRM]
    assert [m.email for m in Outbox(ready_project).waiting()] == ["once@readers.net"]


def test_the_roster_follows_the_list(ready_project: Path) -> None:
    roster = Roster(ready_project)
    roster.refresh()
    assert len(roster) == 0
    write_list(ready_project, [("Ada@Readers.net", "Ada")])
    roster.refresh()
    assert "ada@readers.net" in roster
    with open(list_path(ready_project), "a", encoding="utf-8") as fh:  # appended in place: the tail is read
        fh.write('bo@readers.net,"Bo, the second"\n')
    roster.refresh()
    assert "bo@readers.net" in roster and len(roster) == 2
    write_list(ready_project, [("cy@readers.net", "Cy")])  # replaced: read again
    roster.refresh()
    assert "cy@readers.net" in roster and "ada@readers.net" not in roster and roster.problem == ""
    list_path(ready_project).write_bytes("email\ncy@readers.net\nd\xe9@readers.net\n".encode("latin-1"))
    roster.refresh()  # not UTF-8: the last state stays, and the problem is said
    assert "cy@readers.net" in roster and "not UTF-8" in roster.problem


def _signed_up(root: Path, email: str, at: float, first: str = "") -> str:
    signups, outbox, ledger, roster = _desk(root)
    signups.request(Request(email, first_name=first), now=at)
    signups.triage(roster, ledger, outbox, now=at)
    return make_confirm_token(SECRET, email, int(at))


def test_confirming_records_consent_then_the_list_then_one_welcome(ready_project: Path) -> None:
    token = _signed_up(ready_project, "nora@readers.net", NOW, first="Nora")
    signups, outbox, ledger, _ = _desk(ready_project)
    done = confirm(signups, outbox, ledger, token, now=NOW + 60)
    assert (done.status, done.welcome, done.email) == (ConfirmStatus.CONFIRMED, Welcome.QUEUED, "nora@readers.net")
    assert "nora@readers.net,Nora" in list_path(ready_project).read_text()
    consent = [line for line in ledger_path(ready_project).read_text().splitlines() if ",subscribe," in line]
    assert len(consent) == 1 and ",signup," in consent[0] and "signed up 2027-01-15T08:00:00Z" in consent[0]
    welcome = [m for m in outbox.waiting() if m.kind is Letter.WELCOME]
    assert [(m.email, m.first_name) for m in welcome] == [("nora@readers.net", "Nora")]
    again = confirm(signups, outbox, ledger, token, now=NOW + 120)
    assert again.status is ConfirmStatus.ALREADY
    record(ledger_path(ready_project), "nora@readers.net", "unsubscribe", at="2027-01-16T00:00:00Z")
    # the same link pressed after she left: older than her opt-out, it changes nothing
    assert confirm(signups, outbox, ledger, token, now=NOW + 86400 + 60).status is ConfirmStatus.STALE
    assert Ledger(ledger_path(ready_project)).is_suppressed("nora@readers.net")
    # she signs up again and confirms: on the list again, never a second welcome
    token2 = _signed_up(ready_project, "nora@readers.net", NOW + 2 * 86400)
    signups, outbox, ledger, _ = _desk(ready_project)
    done = confirm(signups, outbox, ledger, token2, now=NOW + 2 * 86400 + 60)
    assert (done.status, done.welcome) == (ConfirmStatus.CONFIRMED, Welcome.SENT_BEFORE)
    assert not Ledger(ledger_path(ready_project)).is_suppressed("nora@readers.net")
    assert len([m for m in outbox.waiting() if m.kind is Letter.WELCOME]) == 1


def test_a_reader_welcomed_before_the_outbox_is_never_welcomed_again(ready_project: Path) -> None:
    token = _signed_up(ready_project, "early@readers.net", NOW + 86400, first="Early")
    with open(signups_path(ready_project), "a", encoding="utf-8") as fh:  # what the code before the outbox wrote
        fh.write(json.dumps({"t": "welcomed", "email": "early@readers.net", "at": int(NOW)}) + "\n")
    signups, outbox, ledger, _ = _desk(ready_project)
    done = confirm(signups, outbox, ledger, token, now=NOW + 86400 + 60)
    assert (done.status, done.welcome) == (ConfirmStatus.CONFIRMED, Welcome.SENT_BEFORE)
    assert [m.kind for m in outbox.waiting()] == [Letter.CONFIRM]  # her sign-up's confirmation, and no welcome
    assert "early@readers.net,Early" in list_path(ready_project).read_text()


def test_an_old_link_never_lifts_a_later_opt_out_and_bad_links_are_typed(ready_project: Path) -> None:
    token = _signed_up(ready_project, "late@readers.net", NOW)
    record(ledger_path(ready_project), "late@readers.net", "unsubscribe", at="2027-01-15T09:00:00Z")
    signups, outbox, ledger, _ = _desk(ready_project)
    assert confirm(signups, outbox, ledger, token, now=NOW + 7200).status is ConfirmStatus.STALE
    assert Ledger(ledger_path(ready_project)).event_of("late@readers.net") is Kind.UNSUBSCRIBE
    assert confirm(signups, outbox, ledger, token, now=NOW + 8 * 86400).status is ConfirmStatus.EXPIRED
    assert confirm(signups, outbox, ledger, token[:-2], now=NOW).status is ConfirmStatus.INVALID
    assert not list_path(ready_project).exists()
    assert verify_confirm_token(SECRET, token, NOW).state is LinkState.VALID
    assert verify_confirm_token("other-secret", token, NOW).state is LinkState.INVALID
    assert verify_confirm_token(SECRET, "c1.x.y.z", NOW).state is LinkState.INVALID


def test_without_a_welcome_issue_confirming_still_works(ready_project: Path) -> None:
    import shutil

    shutil.rmtree(ready_project / "issues" / "welcome")
    token = _signed_up(ready_project, "plain@readers.net", NOW)
    signups, outbox, ledger, _ = _desk(ready_project)
    done = confirm(signups, outbox, ledger, token, now=NOW + 1)
    assert done.status is ConfirmStatus.CONFIRMED and done.welcome is Welcome.NONE and "new --welcome" in done.note
    assert [m.kind for m in outbox.waiting()] == [Letter.CONFIRM]


@pytest.mark.parametrize("when", ["now", "expired"])
def test_pending_lists_what_waits(ready_project: Path, when: str) -> None:
    now = time.time()
    at = now if when == "now" else now - 8 * 86400
    _signed_up(ready_project, "patient@readers.net", at)
    result = Cli(ready_project)("subscribers", "pending")
    assert result.exit_code == 0
    if when == "now":
        assert "patient@readers.net\tconfirm email waiting in the outbox since" in result.output
        assert "patient@readers.net\tsigned up" in result.output
        assert "1 email(s) waiting in the outbox, 1 sign-up(s) waiting for confirmation" in result.output
    else:
        assert "0 sign-up(s) waiting" in result.output


def test_the_welcome_issue_is_never_sent_to_the_list(ready_project: Path, monkeypatch) -> None:
    monkeypatch.setenv("NEWSLETTER_SECRET", "s")
    cli = Cli(ready_project)
    result = cli("send", "--issue", "welcome", "--dry-run")
    assert result.exit_code == 1 and "is the welcome email" in result.output
    assert cli("render").output.startswith(f"wrote build/{SEED_SLUG}/") or SEED_SLUG in cli("render").output
    assert cli("check", "--issue", "welcome", "--no-spam").exit_code == 0
    site = ready_project / "site"
    (ready_project / "issues" / "welcome" / "issue.yaml").write_text(
        (ready_project / "issues" / "welcome" / "issue.yaml").read_text() + "public: true\n")
    assert cli("archive", "--out", str(site)).exit_code == 0
    assert not (site / "welcome" / "index.html").exists() and "welcome" not in (site / "index.html").read_text()


def test_embed_prints_a_plain_form(ready_project: Path) -> None:
    out = Cli(ready_project)("embed").output
    assert '<form method="post" action="https://letters.micromoments.net/subscribe"' in out
    assert 'name="email"' in out and 'name="website"' in out and "<script" not in out


def test_new_welcome_scaffolds_it(project: Path) -> None:
    import shutil

    shutil.rmtree(project / "issues" / "welcome")
    result = Cli(project)("new", "--welcome")
    assert result.exit_code == 0, result.output
    assert "welcome: true" in (project / "issues" / "welcome" / "issue.yaml").read_text()
    assert Cli(project)("new", "--welcome").exit_code == 1  # it exists now


def test_concurrent_sign_ups_share_writes_and_the_ip_limit_holds(ready_project: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    _limits(ready_project, per_ip=5)
    signups, *_ = _desk(ready_project)
    with ThreadPoolExecutor(max_workers=20) as pool:
        outcomes = list(pool.map(lambda i: signups.request(Request(f"c{i}@readers.net", ip="10.3.3.3")).outcome,
                                 range(20)))
    assert outcomes.count(SignupOutcome.RECORDED) == 5 and outcomes.count(SignupOutcome.LIMITED) == 15
    assert sorted(r["email"] for r in _lines(ready_project)) == sorted(
        f"c{i}@readers.net" for i, o in enumerate(outcomes) if o is SignupOutcome.RECORDED)


def test_a_failed_write_reaches_every_waiting_sign_up(ready_project: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from newsletter.errors import StorageError

    signups, *_ = _desk(ready_project)
    lock = Path(f"{signups_path(ready_project)}.lock")
    lock.mkdir()  # its lock cannot be taken: every caller must hear it, none may hang

    def attempt(i: int) -> str:
        try:
            signups.request(Request(f"f{i}@readers.net", ip=f"10.0.0.{i}"))
        except StorageError as exc:
            return str(exc)
        return "recorded"

    with ThreadPoolExecutor(max_workers=10) as pool:
        answers = list(pool.map(attempt, range(10)))
    assert all("could not record" in a for a in answers), answers
    lock.rmdir()  # the IP windows were not charged for what was not recorded
    assert signups.request(Request("f0@readers.net", ip="10.0.0.0")).outcome is SignupOutcome.RECORDED


# -- a full disk at each step of a confirmation: the page says what took effect -------------------------------
@pytest.mark.parametrize("full_under", ["unsubscribes.csv", "outbox.jsonl"])
def test_a_confirmation_on_a_full_disk_says_what_took_effect(ready_project: Path, tmp_path: Path,
                                                            short_write_shim: Path, full_under: str) -> None:
    from conftest import shim_env
    from helpers import PREFIX, start_server, stop_server
    from helpers import SECRET as SERVE_SECRET

    full = tmp_path / "disk-is-full"
    full.touch()
    srv = start_server(ready_project, tmp_path, shim_env(short_write_shim, full_under, full_file=full))
    token = make_confirm_token(SERVE_SECRET, "ada@readers.net", int(time.time()))
    try:
        status, page = srv.request("POST", f"{PREFIX}/confirm/{token}")
        on_list = list_path(ready_project).exists() and "ada@readers.net" in list_path(ready_project).read_text()
        ledger = ledger_path(ready_project)
        consent = ledger.exists() and ",subscribe," in ledger.read_text()
        if full_under == "unsubscribes.csv":  # the consent could not be written: nothing was, and it says so
            assert status == 503 and "nothing was recorded" in page, page
            assert not on_list and not consent
        else:  # confirmed and on the list; only the welcome could not be queued yet
            assert status == 200 and "You are subscribed" in page, page
            assert on_list and consent
        full.unlink()  # room again: pressing the button again finishes what was left
        status, page = srv.request("POST", f"{PREFIX}/confirm/{token}")
        assert status == 200 and "subscribed" in page, page
        assert "ada@readers.net" in list_path(ready_project).read_text()
        from newsletter.files import read_jsonl

        queued = [r for r in read_jsonl(ready_project / "subscribers" / "outbox.jsonl") if r.get("t") == "queued"]
        assert [r["id"] for r in queued] == ["welcome:ada@readers.net"]  # queued once, now (a torn try is no record)
    finally:
        stop_server(srv)
