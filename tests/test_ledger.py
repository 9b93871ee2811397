"""The ledger: append-only, fsynced under a lock, torn lines tolerated, latest event wins."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import Cli, record
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from newsletter.ledger import HEADER, Event, Kind, Ledger, Outcome, iter_events, ledger_path, load_ledger


def test_first_append_writes_the_header(project: Path) -> None:
    path = ledger_path(project)
    record(path, " Ada@Example.NET ", "unsubscribe", "cli", "asked, politely\nby mail")
    lines = path.read_text().splitlines()
    assert lines[0] == HEADER
    email, event, at, source, detail = lines[1].split(",", 4)
    assert (email, event, source) == ("ada@example.net", "unsubscribe", "cli")
    assert at.endswith("Z") and detail == '"asked, politely by mail"'
    assert Path(f"{path}.lock").exists()  # the writers' lock is beside the ledger: `<file>.lock`


def test_latest_event_wins_case_insensitively(project: Path) -> None:
    path = ledger_path(project)
    record(path, "ada@example.net", "bounce")
    record(path, "ADA@example.net", "resubscribe")
    record(path, "bob@example.net", "spamreport")
    ledger = Ledger(path)
    assert not ledger.is_suppressed("  Ada@Example.Net")
    assert ledger.is_suppressed("BOB@EXAMPLE.NET ")
    assert not ledger.is_suppressed("carol@example.net")


def test_torn_last_line_suppresses_and_next_append_starts_fresh(project: Path, cli: Cli) -> None:
    path = ledger_path(project)
    record(path, "ada@example.net", "resubscribe")
    with open(path, "ab") as fh:
        fh.write(b"torn@example.net,unsubsc")  # a crash mid-write
    ledger = Ledger(path)
    assert ledger.is_suppressed("TORN@example.net")
    assert len(ledger.problems) == 1 and "torn last line" in ledger.problems[0].message
    assert cli("unsubscribe", "next@example.net").exit_code == 0
    lines = path.read_text().splitlines()
    assert lines[-2] == "torn@example.net,unsubsc"
    assert lines[-1].startswith("next@example.net,unsubscribe,")
    counted = cli("subscribers", "count")
    assert "unreadable line, counted as suppressing torn@example.net" in counted.output
    again = Ledger(path)
    assert again.is_suppressed("torn@example.net") and again.is_suppressed("next@example.net")
    assert not again.is_suppressed("ada@example.net")
    assert any("unreadable line" in p.message for p in again.problems)


def test_refresh_reads_only_new_lines(project: Path) -> None:
    path = ledger_path(project)
    record(path, "a@example.net", "unsubscribe")
    ledger = Ledger(path)
    assert not ledger.is_suppressed("b@example.net")
    record(path, "b@example.net", "unsubscribe")
    assert ledger.refresh() == 1
    assert ledger.is_suppressed("b@example.net")
    assert ledger.refresh() == 0


def test_missing_ledger_is_empty(project: Path) -> None:
    ledger = Ledger(ledger_path(project))
    assert not ledger.is_suppressed("a@example.net") and not ledger.problems
    assert ledger.refresh() == 0 and ledger.touched_since(0) == ([], 0)  # a push then starts at the first byte


WRITER = """
import sys
from pathlib import Path
from newsletter.ledger import Event, Ledger
path, start, count = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
ledger = Ledger(path)
for i in range(start, start + count):
    ledger.record([Event(f"reader{i}@example.net", "unsubscribe", "", "test", "x" * 300)])
"""


@pytest.mark.process
def test_concurrent_writers_never_interleave(project: Path) -> None:
    path = ledger_path(project)
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(i * 300), "300"]) for i in range(3)]
    assert all(p.wait(timeout=120) == 0 for p in procs)
    lines = path.read_text().splitlines()
    assert lines[0] == HEADER and len(lines) == 1 + 3 * 300
    ledger = Ledger(path)
    assert not ledger.problems
    assert all(ledger.is_suppressed(f"reader{i}@example.net") for i in range(900))


@pytest.mark.process
def test_concurrent_cli_unsubscribes_after_a_torn_line(project: Path) -> None:
    path = ledger_path(project)
    path.parent.mkdir(exist_ok=True)
    path.write_bytes((HEADER + "\nhalf@example.net,unsub").encode())
    exe = str(Path(sys.executable).parent / "newsletter")
    procs = [subprocess.Popen([exe, "unsubscribe", "--root", str(project), f"c{i}@example.net"],
                              stdout=subprocess.DEVNULL) for i in range(4)]
    assert all(p.wait(timeout=120) == 0 for p in procs)
    ledger = Ledger(path)
    assert all(ledger.is_suppressed(f"C{i}@example.net") for i in range(4))
    assert ledger.is_suppressed("half@example.net")
    assert sum(1 for line in path.read_text().splitlines() if ",unsubscribe," in line) == 4


case_variants = st.text(alphabet="abcdefxyz", min_size=1, max_size=8).flatmap(
    lambda local: st.tuples(st.just(local), st.lists(st.booleans(), min_size=len(local) + 11,
                                                      max_size=len(local) + 11)))


def _variant(address: str, flips: list[bool]) -> str:
    return "".join(c.upper() if f else c for c, f in zip(address, flips, strict=False)) + address[len(flips):]


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None)
@given(case_variants, st.sampled_from(["unsubscribe", "bounce", "spamreport", "invalid"]),
       st.text(" \t", max_size=2))
def test_suppressed_in_any_case_is_never_active(tmp_path_factory, data, event, pad) -> None:
    local, flips = data
    address = f"{local}@example.net"
    root = tmp_path_factory.mktemp("ledger")
    path = root / "subscribers" / "unsubscribes.csv"
    Ledger(path).record([Event(pad + _variant(address, flips) + pad, event)])
    ledger = Ledger(path)
    for variant in (address, address.upper(), _variant(address, flips[::-1]), f" {address.title()} "):
        assert ledger.is_suppressed(variant)


# -- read strictly: an unreadable address makes send refuse -----------------------------------------------
def _ledger_text(*rows: str) -> str:
    return HEADER + "\n" + "".join(r + "\n" for r in rows)


def test_utf16_or_semicolons_make_send_refuse(ready_project: Path, monkeypatch) -> None:
    monkeypatch.setenv("NEWSLETTER_SECRET", "s3cret")
    cli = Cli(ready_project)
    cli("subscribers", "add", "ada@readers.net")
    cli("subscribers", "add", "bob@readers.net")
    path = ledger_path(ready_project)
    text = _ledger_text("ada@readers.net,unsubscribe,2026-11-01T10:00:00Z,cli,")
    for data, line in ((text.encode("utf-16"), 1), (text.replace(",", ";").encode(), 1),
                       (text.encode() + b"bob@readers.net\x00;unsub\n", 3)):
        path.write_bytes(data)
        result = cli("send", "--issue", "micro-moments-of-connection", "--dry-run")
        assert result.exit_code == 1, result.output
        assert f"unsubscribes.csv:{line}: cannot read the address on this line" in result.output
        assert "re-save it as CSV UTF-8 with commas" in result.output and "nothing was sent" in result.output
        assert "would send" not in result.output


def test_bom_crlf_and_a_torn_last_line_are_fine(ready_project: Path, monkeypatch) -> None:
    monkeypatch.setenv("NEWSLETTER_SECRET", "s3cret")
    cli = Cli(ready_project)
    for who in ("ada", "bob", "cy"):
        cli("subscribers", "add", f"{who}@readers.net")
    path = ledger_path(ready_project)
    path.write_bytes(b"\xef\xbb\xbf" + _ledger_text("ada@readers.net,unsubscribe,2026-11-01T10:00:00Z,cli,")
                     .replace("\n", "\r\n").encode() + b"bob@readers.net,unsubscr")
    ledger = Ledger(path)
    assert not ledger.unreadable
    assert ledger.is_suppressed("ada@readers.net") and ledger.is_suppressed("bob@readers.net")
    result = cli("send", "--issue", "micro-moments-of-connection", "--dry-run")
    assert result.exit_code == 0, result.output
    assert "would send: 1 reader(s)" in result.output


def test_remains_of_a_short_write_do_not_block_sending(project: Path) -> None:
    path = ledger_path(project)
    path.write_text(_ledger_text("victim@rea", "ada@readers.net,unsubscribe,2026-11-01T10:00:00Z,cli,"))
    ledger = Ledger(path)
    assert not ledger.unreadable and ledger.is_suppressed("ada@readers.net")
    assert any("interrupted write" in p.message for p in ledger.problems)


def test_a_line_that_becomes_unreadable_mid_send_stops_the_send(project: Path) -> None:
    path = ledger_path(project)
    record(path, "ada@readers.net", "unsubscribe")
    ledger = Ledger(path)
    with open(path, "ab") as fh:
        fh.write(b"b\x00o\x00b\x00@\x00\n")
    ledger.refresh()
    import pytest

    from newsletter.errors import LedgerError

    with pytest.raises(LedgerError, match="unsubscribes.csv"):
        ledger.check_readable()


# -- a full disk: the command says so and exits 1 ---------------------------------------------------------
@pytest.mark.process
def test_unsubscribe_on_a_full_disk_fails_then_succeeds_with_room(project: Path, short_write_shim: Path) -> None:
    import os

    from conftest import shim_env

    exe = str(Path(sys.executable).parent / "newsletter")
    record(ledger_path(project), "first@readers.net", "unsubscribe")
    argv = [exe, "unsubscribe", "--root", str(project), "victim@readers.net"]
    full = subprocess.run(argv, capture_output=True, text=True, timeout=60,
                          env={**os.environ, **shim_env(short_write_shim, "unsubscribes.csv", tear="victim@rea")})
    assert full.returncode == 1, full.stdout + full.stderr
    assert "disk full: could not record the unsubscribe of victim@readers.net in " in full.stderr
    assert "subscribers/unsubscribes.csv" in full.stderr and "recorded in" not in full.stdout
    assert ledger_path(project).read_bytes().endswith(b"\nvictim@rea")  # what the disk took
    ok = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr
    lines = ledger_path(project).read_text().splitlines()
    assert lines[-2] == "victim@rea" and lines[-1].startswith("victim@readers.net,unsubscribe,")  # a fresh line
    ledger = Ledger(ledger_path(project))
    assert ledger.is_suppressed("victim@readers.net") and not ledger.unreadable


# -- the folder is found like git finds its repository -------------------------------------------------------
def test_commands_outside_a_newsletter_refuse_and_create_nothing(tmp_path: Path, monkeypatch) -> None:
    from click.testing import CliRunner

    from newsletter.cli import main

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    stray = next((p / "newsletter.yaml" for p in elsewhere.parents if (p / "newsletter.yaml").exists()), None)
    if stray is not None:  # the machine's temp folder is inside a newsletter: nothing here is "outside" one
        pytest.skip(f"{stray} makes every temporary folder part of a newsletter")
    monkeypatch.chdir(elsewhere)
    for argv in (["unsubscribe", "ada@readers.net"], ["subscribers", "add", "ada@readers.net"],
                 ["subscribers", "count"], ["render"], ["resubscribe", "ada@readers.net"]):
        result = CliRunner().invoke(main, argv)
        assert result.exit_code == 2, (argv, result.output)
        assert "no newsletter.yaml here or in any parent folder: run this in your newsletter's folder or pass " \
               "--root" in result.output
    assert list(elsewhere.iterdir()) == []


def test_commands_find_the_newsletter_from_a_subfolder(project: Path, monkeypatch) -> None:
    from click.testing import CliRunner

    from newsletter.cli import main

    monkeypatch.chdir(project / "issues" / "micro-moments-of-connection")
    result = CliRunner().invoke(main, ["unsubscribe", "ada@readers.net"])
    assert result.exit_code == 0, result.output
    assert Ledger(ledger_path(project)).is_suppressed("ada@readers.net")
    assert not (project / "issues" / "micro-moments-of-connection" / "subscribers").exists()


def test_repeats_and_unknown_addresses_get_a_note(cli: Cli, project: Path) -> None:
    cli("subscribers", "add", "ada@readers.net")
    first = cli("unsubscribe", "Ada@Readers.net")
    assert first.output.startswith("unsubscribe: ada@readers.net (recorded in ")
    again = cli("unsubscribe", "ada@readers.net")
    assert again.exit_code == 0 and "already suppressed (latest event: unsubscribe); nothing recorded" in again.output
    stranger = cli("unsubscribe", "stranger@readers.net")
    assert "stranger@readers.net: not on the list; recorded so it is never mailed" in stranger.output
    back = cli("resubscribe", "bob@readers.net")
    assert back.exit_code == 0 and "bob@readers.net is not suppressed; nothing recorded" in back.output
    assert [line.split(",")[:2] for line in ledger_path(project).read_text().splitlines()[1:]] == [
        ["ada@readers.net", "unsubscribe"], ["stranger@readers.net", "unsubscribe"]]


def test_export_neutralises_formulas(cli: Cli, project: Path, tmp_path: Path) -> None:
    (project / "subscribers" / "subscribers.csv").write_text(
        "email,name,note\nada@readers.net,=HYPERLINK(\"http://x\"),+1\nbob@readers.net,@SUM(A1),-2\n"
        "cy@readers.net,Plain,ok\n")
    out = tmp_path / "out.csv"
    assert cli("subscribers", "export", str(out)).exit_code == 0
    import csv

    rows = list(csv.reader(out.open()))
    assert rows[1] == ["ada@readers.net", "'=HYPERLINK(\"http://x\")", "'+1"]
    assert rows[2] == ["bob@readers.net", "'@SUM(A1)", "'-2"]
    assert rows[3] == ["cy@readers.net", "Plain", "ok"]


# -- the rule: latest event by time, ties by file order; an old confirmation never lifts ------------------
def test_an_event_dated_before_a_return_does_not_suppress_again(project: Path) -> None:
    path = ledger_path(project)
    record(path, "ada@readers.net", "unsubscribe", at="2026-03-01T10:00:00Z")
    record(path, "ada@readers.net", "resubscribe", at="2026-06-01T10:00:00Z")
    old = Ledger(path).record([Event("ada@readers.net", "bounce", "2026-04-01T10:00:00Z", "import:mailchimp")])
    assert old.results[0].outcome == "unchanged" and not old.written  # older than her return: nothing to say
    assert not Ledger(path).is_suppressed("ada@readers.net")
    newer = Ledger(path).record([Event("ada@readers.net", "bounce", "2026-07-01T10:00:00Z", "import:mailchimp")])
    assert newer.results[0].outcome == "recorded" and Ledger(path).is_suppressed("ada@readers.net")


def test_an_old_confirmation_link_never_lifts_an_opt_out(project: Path) -> None:
    path = ledger_path(project)
    record(path, "ada@readers.net", "unsubscribe", at="2026-11-20T10:00:00Z")
    before = path.read_bytes()
    stale = Ledger(path).record([Event("ada@readers.net", "subscribe", "2026-11-25T10:00:00Z", "signup",
                                       signed_up="2026-11-19T09:00:00Z")])
    assert stale.results[0].outcome == "stale" and path.read_bytes() == before
    assert Ledger(path).is_suppressed("ada@readers.net")
    fresh = Ledger(path).record([Event("ada@readers.net", "subscribe", "2026-11-25T10:00:00Z", "signup",
                                       signed_up="2026-11-21T09:00:00Z")])
    assert fresh.results[0].outcome == "recorded" and not Ledger(path).is_suppressed("ada@readers.net")
    assert path.read_text().splitlines()[-1].split(",")[4].startswith("signed up 2026-11-21T09:00:00Z")


def test_recording_twice_writes_once(project: Path) -> None:
    path = ledger_path(project)
    ledger = Ledger(path)
    kinds = [r.outcome for r in ledger.record([Event("ada@readers.net", "unsubscribe"),
                                               Event("ADA@readers.net", "spamreport"),
                                               Event("bob@readers.net", "resubscribe")]).results]
    assert kinds == ["recorded", "unchanged", "unchanged"]
    assert len(path.read_text().splitlines()) == 2


def test_an_nfd_spelling_is_the_same_reader(cli: Cli, project: Path) -> None:
    import unicodedata

    cli("subscribers", "add", "josé@readers.net")
    nfd = unicodedata.normalize("NFD", "JOSÉ@readers.net")
    result = cli("unsubscribe", nfd)
    assert result.exit_code == 0 and "unsubscribe: josé@readers.net (recorded in" in result.output
    assert "not on the list" not in result.output
    assert Ledger(ledger_path(project)).is_suppressed("josé@readers.net")
    assert "active:     0" in cli("subscribers", "count").output


_TIMES = st.sampled_from(["2026-01-01T00:00:00Z", "2026-01-01T00:00:01Z", "2026-02-01T00:00:00Z",
                          "2026-03-01T12:00:00Z"])
_EVENTS = st.lists(st.tuples(st.sampled_from(["a@readers.net", "b@readers.net"]),
                             st.sampled_from(["unsubscribe", "bounce", "resubscribe", "subscribe"]), _TIMES, _TIMES),
                   max_size=12)


@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None)
@given(_EVENTS, st.integers(0, 12))
def test_the_state_read_back_equals_a_fold_of_the_lines_in_time_order(tmp_path_factory, events, split) -> None:
    from test_optout_model import oracle

    path = tmp_path_factory.mktemp("ledger") / "subscribers" / "unsubscribes.csv"
    path.parent.mkdir()
    lines = [f"{e},{k},{at},cli,{'signed up ' + signed if k == 'subscribe' else ''}\n"
             for e, k, at, signed in events]
    path.write_text(HEADER + "\n" + "".join(lines[:split]))
    ledger = Ledger(path)  # part read at once, the rest by tailing: both must agree with the fold
    with open(path, "a") as fh:
        fh.write("".join(lines[split:]))
    ledger.refresh()
    expected = oracle(path)
    for who in ("a@readers.net", "b@readers.net"):
        assert ledger.is_suppressed(who) == expected.get(who, (False,))[0], (who, lines)
        assert Ledger(path).is_suppressed(who) == expected.get(who, (False,))[0]


# -- reading every event (counts, `stats`), previews, what SendGrid must be told -----------------------------------
def test_iter_events_reads_each_readable_event_with_its_time(project: Path) -> None:
    import datetime as dt

    from newsletter.errors import LedgerError
    from newsletter.ledger import Kind, iter_events

    path = ledger_path(project)
    assert list(iter_events(path)) == []  # no ledger yet
    path.parent.mkdir(exist_ok=True)
    path.write_text("\ufeff" + HEADER + "\n"
                    "Ada@Readers.net,unsubscribe,2026-01-02T03:04:05Z,cli,asked\n"
                    "bob@readers.net,subscribe,2026-01-03T00:00:00+01:00,signup,"
                    "\"signed up 2026-01-01T00:00:00Z; at x\"\n"
                    "cy@readers.net,bounce,yesterday,sendgrid,\n"
                    "dan@readers.net,frobnicate,2026-01-04T00:00:00Z,cli,\n"  # an event nobody writes: skipped
                    "eve@readers.net,unsub\n")  # the remains of an interrupted write: skipped
    events = list(iter_events(path))
    assert [(e.email, e.event, e.at, e.source, e.detail, e.signed_up) for e, _ in events] == [
        ("ada@readers.net", Kind.UNSUBSCRIBE, "2026-01-02T03:04:05Z", "cli", "asked", ""),
        ("bob@readers.net", Kind.SUBSCRIBE, "2026-01-03T00:00:00+01:00", "signup",
         "signed up 2026-01-01T00:00:00Z; at x", "2026-01-01T00:00:00Z"),
        ("cy@readers.net", Kind.BOUNCE, "yesterday", "sendgrid", "", "")]
    assert [at for _, at in events] == [dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC),
                                        dt.datetime(2026, 1, 2, 23, 0, tzinfo=dt.UTC), None]
    assert [e.email for e, _ in iter_events(path, Kind.SUBSCRIBE)] == ["bob@readers.net"]
    with open(path, "a", encoding="utf-8") as fh:
        fh.write("ada;unsubscribe;2026-01-05\n")
    with pytest.raises(LedgerError) as caught:
        list(iter_events(path))
    assert caught.value.line == 7 and "cannot read the address on this line: 'ada;unsubscribe;2026-01-05'" in str(
        caught.value) and caught.value.path == path


def test_preview_says_what_record_would_do_and_writes_nothing(project: Path) -> None:
    from newsletter.ledger import Kind, Outcome

    path = ledger_path(project)
    record(path, "ada@readers.net", "unsubscribe", at="2026-01-01T00:00:00Z")
    ledger = Ledger(path)
    before = path.read_bytes()
    preview = ledger.preview([Event("ADA@readers.net", "resubscribe"), Event("bob@readers.net", "bounce"),
                              Event("bob@readers.net", "unsubscribe")])
    assert [(r.event.email, r.outcome, r.previous) for r in preview] == [
        ("ada@readers.net", Outcome.RECORDED, Kind.UNSUBSCRIBE), ("bob@readers.net", Outcome.RECORDED, None),
        ("bob@readers.net", Outcome.UNCHANGED, Kind.BOUNCE)]
    assert path.read_bytes() == before and ledger.is_suppressed("ada@readers.net")
    assert not ledger.is_suppressed("bob@readers.net")  # the state is left as read


def test_addresses_and_what_was_touched_since_an_offset(project: Path) -> None:
    path = ledger_path(project)
    record(path, "ada@readers.net", "unsubscribe")
    record(path, "bob@readers.net", "bounce")
    ledger = Ledger(path)
    offset = ledger.offset
    assert ledger.touched_since(0) == (["ada@readers.net", "bob@readers.net"], offset)
    added = ('"Cy@Readers.net",bounce,2026-01-01T00:00:00Z,cli,\nnot an address,x,y,z,w\n'
             "eve@readers.net,resubscribe,2026-01-01T00:00:00Z,cli,\n")
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(added + "ada@readers.net,unsub")
    ledger.refresh()
    assert list(ledger.addresses()) == ["ada@readers.net", "bob@readers.net", "cy@readers.net", "eve@readers.net"]
    touched, end = ledger.touched_since(offset)
    assert touched == ["cy@readers.net", "eve@readers.net"] and end == offset + len(added)
    assert ledger.touched_since(10**9) == (["ada@readers.net", "bob@readers.net", "cy@readers.net",
                                            "eve@readers.net"], end)  # replaced: from the start
    torn_only = Ledger(path.parent / "other.csv")
    torn_only.path.write_text(HEADER + "\ndan@readers.net,unsubscr")
    torn_only.refresh()
    assert list(torn_only.addresses()) == ["dan@readers.net"] and torn_only.touched_since(0)[0] == []


def test_events_are_checked_and_written_as_the_format_says(project: Path) -> None:
    import datetime as dt

    from newsletter.errors import LedgerError
    from newsletter.ledger import Kind, canonical_time, imported_from, iso

    with pytest.raises(LedgerError, match=r"^unknown ledger event `frobnicate` \(known: unsubscribe, bounce, "
                                          r"spamreport, invalid, resubscribe, subscribe\)$"):
        Event("ada@readers.net", "frobnicate")
    assert Event("a@r.net", Kind.SUBSCRIBE, "2026-01-02T00:00:00Z", "signup", "at the  page\n",
                 "2026-01-01T00:00:00Z").row() == ["a@r.net", "subscribe", "2026-01-02T00:00:00Z", "signup",
                                                   "signed up 2026-01-01T00:00:00Z; at the page"]
    assert Event("a@r.net", "subscribe", "2026-01-02T00:00:00Z").row()[4] == "signed up 2026-01-02T00:00:00Z"
    assert Event("a@r.net", "bounce", "t", "import: x\ny").row() == ["a@r.net", "bounce", "t", "import: x y", ""]
    assert imported_from("mailchimp") == "import:mailchimp"
    assert iso(0) == "1970-01-01T00:00:00Z"
    assert iso(dt.datetime(2026, 1, 1, 9, tzinfo=dt.timezone(dt.timedelta(hours=9)))) == "2026-01-01T00:00:00Z"
    assert canonical_time(" 2026-01-01T09:00:00+09:00 ") == "2026-01-01T00:00:00Z"
    assert canonical_time("2026-01-01 10:00") == "2026-01-01T10:00:00Z" and canonical_time("soon") == ""
    assert canonical_time("") == ""
    ledger = Ledger(ledger_path(project))
    with pytest.raises(LedgerError, match="^not an address: 'ada at readers'$"):
        ledger.record([Event("ada at readers", "unsubscribe")])
    assert not ledger_path(project).exists()


def test_the_follower_runs_after_a_write_and_only_then(project: Path) -> None:
    from newsletter.ledger import Kind

    calls: list[int] = []

    def follow(ledger: Ledger) -> tuple[int, str]:
        calls.append(ledger.offset)
        return 3, "SendGrid is down"

    ledger = Ledger(ledger_path(project), follow=follow)
    first = ledger.record([Event("ada@readers.net", Kind.UNSUBSCRIBE)])
    assert (first.pushed, first.waiting, calls) == (3, "SendGrid is down", [ledger_path(project).stat().st_size])
    again = ledger.record([Event("ada@readers.net", Kind.BOUNCE)])  # already suppressed: nothing written
    assert (again.pushed, again.waiting, len(calls)) == (0, "", 1) and again.written == []


def test_what_decides_an_address_and_who_told_it(project: Path) -> None:
    from newsletter.ledger import Kind, Source

    path = ledger_path(project)
    path.parent.mkdir(exist_ok=True)
    path.write_bytes((HEADER + "\r\n"
                      "ada@readers.net,bounce,2026-01-01T00:00:00Z,sendgrid,\r\n"
                      "bob@readers.net,unsubscribe,2026-01-01T00:00:00Z,cli,\r\n"
                      "bob@readers.net,resubscribe,2026-01-02T00:00:00Z,cli,\r\n"
                      "cy@readers.net,unsubscribe,2026-01-01T00:00:00Z,cli,\r\n"
                      "cy@readers.net,subscribe,2026-01-02T00:00:00Z,signup,signed up 2026-01-01T12:00:00Z\r\n"
                      "dan@readers.net,spamreport,0000-00-00,cli,\r\n"  # a hand-edited time: as late as the line before
                      "eve@readers.net,subscribe,2026-01-03T00:00:00Z,signup,\r\n"
                      "fay@readers.net,unsub").encode())
    ledger = Ledger(path)
    assert ledger.offset == len(path.read_bytes()) - len(b"fay@readers.net,unsub")
    assert [(ledger.event_of(e), ledger.is_suppressed(e), ledger.told_by_sendgrid(e)) for e in (
        "ada@readers.net", "bob@readers.net", "cy@readers.net", "dan@readers.net", "eve@readers.net",
        "fay@readers.net", "gus@readers.net")] == [
        (Kind.BOUNCE, True, True), (Kind.RESUBSCRIBE, False, False), (Kind.SUBSCRIBE, False, False),
        (Kind.SPAMREPORT, True, False), (Kind.SUBSCRIBE, False, False), (Kind.UNREADABLE, True, False),
        (None, False, False)]
    # dan's spam report sorts at the latest time read before it: a resubscribe dated after that lifts it
    lifted = ledger.record([Event("dan@readers.net", "resubscribe", "2026-01-02T00:00:01Z", Source.CLI)])
    assert lifted.results[0].outcome == "recorded" and not Ledger(path).is_suppressed("dan@readers.net")


def test_unreadable_lines_are_reported_once_each_and_refuse_whole(project: Path) -> None:
    from newsletter.errors import LedgerError

    path = ledger_path(project)
    path.parent.mkdir(exist_ok=True)
    long_garbage = "x;" * 40
    path.write_bytes(("\ufeff" + HEADER + "\n"
                      '"Ada@Readers.net",unsubscribe,2026-01-01T00:00:00Z,"cli","a, quoted, detail"\n'
                      "bob@rea\n"  # the remains of an interrupted write
                      "cy@readers.net,teleported,2026-01-01T00:00:00Z,cli,\n"  # names cy: suppresses her
                      f"{long_garbage}\n"
                      "d\ufffdn@readers.net,resubscribe,2026-01-02T00:00:00Z,cli,\n"
                      "eve;unsubscribe;2026-01-03\n").encode())
    ledger = Ledger(path)
    ledger.refresh()
    assert ledger.is_suppressed("ada@readers.net") and ledger.is_suppressed("cy@readers.net")
    assert [(p.level, p.line, p.message) for p in ledger.problems] == [
        ("warning", 3, "the remains of an interrupted write: 'bob@rea'"),
        ("warning", 4, "unreadable line, counted as suppressing cy@readers.net: "
                       "'cy@readers.net,teleported,2026-01-01T00:00:00Z,cli,'")]
    assert [(p.line, p.path) for p in ledger.unreadable] == [(5, path), (6, path), (7, path)]
    assert ledger.unreadable[0].message == f"cannot read the address on this line: {long_garbage[:60]!r}"
    with pytest.raises(LedgerError) as caught:
        ledger.check_readable("nothing was sent")
    error = caught.value
    assert error.message == (f"cannot read the address on this line: {long_garbage[:60]!r} (and 2 more line(s)): "
                             "the ledger is not UTF-8 comma-separated CSV, so nobody can tell whom it suppresses; "
                             "nothing was sent")
    assert (error.path, error.line) == (path, 5)
    assert error.hint == ("re-save it as CSV UTF-8 with commas, header `email,event,at,source,detail` (or restore "
                          "it from a backup), then check it with `newsletter subscribers count`")
    path.write_text(HEADER + "\nada;unsubscribe\n")
    with pytest.raises(LedgerError) as one:
        Ledger(path).check_readable()
    assert one.value.message == ("cannot read the address on this line: 'ada;unsubscribe': the ledger is not UTF-8 "
                                 "comma-separated CSV, so nobody can tell whom it suppresses")  # no "more", no "; …"
    path.write_text(HEADER + "\nada;unsubscribe\nbob;bounce\n")
    with pytest.raises(LedgerError) as two:
        Ledger(path).check_readable()
    assert "'ada;unsubscribe' (and 1 more line(s)): the ledger" in two.value.message
    with pytest.raises(LedgerError) as loaded:
        load_ledger(project)  # every reader but the writers' own refuses it
    assert loaded.value.line == 2
    assert load_ledger(project, strict=False).unreadable  # the writers read on: a torn line is not theirs to judge


def test_a_torn_first_line_with_a_bom_quotes_or_bad_bytes_still_names_its_reader(project: Path) -> None:
    path = ledger_path(project)
    path.parent.mkdir(exist_ok=True)
    path.write_bytes('\ufeff"Ada@Readers.net",unsu'.encode())
    ledger = Ledger(path)
    assert ledger.is_suppressed("ada@readers.net") and ledger.offset == 0
    assert [(p.line, p.message) for p in ledger.problems] == [
        (1, "torn last line (a write was interrupted): ada@readers.net counted as suppressed")]
    ledger.refresh()
    assert len(ledger.problems) == 1  # said once
    path.write_bytes(HEADER.encode() + b"\n\xff\xfe,uns")
    torn = Ledger(path)
    assert [(p.line, p.message) for p in torn.problems] == [
        (2, "torn last line (a write was interrupted): \ufffd\ufffd counted as suppressed")]
    path.write_bytes(HEADER.encode() + b"\n,")
    assert Ledger(path).problems[0].message == "torn last line (a write was interrupted): ? counted as suppressed"


def test_a_large_ledger_is_read_in_chunks_and_lines_end_in_a_bare_newline(project: Path) -> None:
    from newsletter.errors import LedgerError

    path = ledger_path(project)
    record(path, "first@readers.net", "unsubscribe")
    assert path.read_bytes().endswith(b",cli,\n") and b"\r" not in path.read_bytes()
    lines = "".join(f"r{i}@readers.net,bounce,2026-01-01T00:00:00Z,sendgrid,{'x' * 60}\n" for i in range(14000))
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(lines)  # more than a megabyte: several chunks
    ledger = Ledger(path)
    assert ledger.offset == path.stat().st_size and ledger.is_suppressed("r13999@readers.net")
    fresh = Ledger(path.parent / "later.csv")
    fresh.path.write_text(HEADER + "\n")
    fresh.refresh()
    fresh.path.write_text(HEADER + "\n" + lines)
    assert fresh.refresh() == 14000
    folder = Ledger(path.parent / "folder.csv")
    folder.path.mkdir()
    with pytest.raises(LedgerError) as caught:
        folder.refresh()
    assert caught.value.message == "cannot read the ledger: Is a directory" and caught.value.path == folder.path


def test_times_are_utc_whatever_the_local_zone(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import datetime as dt
    import time

    from newsletter.ledger import canonical_time

    monkeypatch.setenv("TZ", "Asia/Tokyo")
    time.tzset()
    try:
        assert canonical_time("2026-01-01T09:00:00+09:00") == "2026-01-01T00:00:00Z"
        record(ledger_path(project), "ada@readers.net", "unsubscribe", at="2026-01-01T10:00:00+01:00")
        assert ",2026-01-01T09:00:00Z," in ledger_path(project).read_text()
        record(ledger_path(project), "bob@readers.net", "unsubscribe")  # no time given: now, in UTC
        written = ledger_path(project).read_text().splitlines()[-1].split(",")[2]
        now = dt.datetime.now(dt.UTC)
        written_at = dt.datetime.strptime(written, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)
        assert abs(written_at - now) < dt.timedelta(minutes=5)
    finally:
        monkeypatch.undo()
        time.tzset()


def test_the_latest_of_several_lifts_decides_what_lifted(project: Path) -> None:
    from newsletter.ledger import Kind

    path = ledger_path(project)
    path.parent.mkdir(exist_ok=True)
    path.write_text(HEADER + "\n"
                    "ada@readers.net,unsubscribe,2026-01-01T00:00:00Z,cli,\n"
                    "ada@readers.net,subscribe,2026-01-03T00:00:00Z,signup,signed up 2026-01-02T00:00:00Z\n"
                    "ada@readers.net,resubscribe,2026-01-02T00:00:00Z,cli,\n"
                    "bob@readers.net,unsubscribe,2026-01-01T00:00:00Z,cli,\n"
                    "bob@readers.net,resubscribe,2026-01-02T00:00:00Z,cli,\n"
                    "bob@readers.net,subscribe,2026-01-01T12:00:00Z,signup,signed up 2026-01-01T06:00:00Z\n")
    ledger = Ledger(path)
    assert ledger.event_of("ada@readers.net") is Kind.SUBSCRIBE and not ledger.is_suppressed("ada@readers.net")
    assert ledger.event_of("bob@readers.net") is Kind.RESUBSCRIBE and not ledger.is_suppressed("bob@readers.net")


def test_iter_events_without_a_header_with_a_bom_and_bad_bytes(project: Path) -> None:
    from newsletter.errors import LedgerError
    from newsletter.ledger import iter_events

    path = ledger_path(project)
    path.parent.mkdir(exist_ok=True)
    path.write_bytes("\ufeffada@readers.net,unsubscribe,2026-01-01T00:00:00Z,cli,".encode() + b"caf\xe9\n")
    [(event, _)] = list(iter_events(path))
    assert (event.email, event.detail) == ("ada@readers.net", "caf\ufffd")  # an undecodable byte is not fatal
    path.write_text(HEADER + "\n" + "ada;unsubscribe;2026-01-05;" + "x" * 80 + "\n")
    with pytest.raises(LedgerError) as caught:
        list(iter_events(path))
    assert caught.value.line == 2
    assert caught.value.message == ("cannot read the address on this line: "
                                    f"{('ada;unsubscribe;2026-01-05;' + 'x' * 80)[:60]!r}: "
                                    "the ledger is not UTF-8 comma-separated CSV")
    assert caught.value.hint == "re-save it as CSV UTF-8 with commas (or restore it from a backup)"


def test_a_long_unreadable_line_is_quoted_in_sixty_characters(project: Path) -> None:
    path = ledger_path(project)
    path.parent.mkdir(exist_ok=True)
    raw = "cy@readers.net,teleported,2026-01-01T00:00:00Z,cli," + "y" * 40
    path.write_text(HEADER + "\n" + raw + "\n" + "b" * 70 + "\n")
    problems = Ledger(path).problems
    assert [p.message for p in problems] == [
        f"unreadable line, counted as suppressing cy@readers.net: {raw[:60]!r}",
        f"the remains of an interrupted write: {'b' * 60!r}"]


def test_touched_since_one_byte_past_the_end_starts_over(project: Path) -> None:
    path = ledger_path(project)
    record(path, "ada@readers.net", "unsubscribe")
    ledger = Ledger(path)
    size = path.stat().st_size
    assert ledger.touched_since(size) == ([], size)
    assert ledger.touched_since(size + 1) == (["ada@readers.net"], size)


def test_the_torn_line_rule(tmp_path: Path) -> None:
    path = tmp_path / "unsubscribes.csv"
    path.write_text(HEADER + "\nada@readers.net,resubscribe,2026-01-01T00:00:00Z,cli,\nada@readers.net,unsub")
    ledger = Ledger(path)
    assert ledger.is_suppressed("ada@readers.net")  # a torn last line naming an address suppresses it
    with open(path, "a") as fh:
        fh.write("scribe,2026-01-02T00:00:00Z,cli,\n")  # the write completes: still suppressed, now for good
    ledger.refresh()
    assert ledger.is_suppressed("ada@readers.net") and ledger.event_of("ada@readers.net") == "unsubscribe"


# -- promises that mutation testing found unpinned (ticket 19 item 8) ----------------------------------------------
T1, T2, T3 = "2026-01-01T00:00:00Z", "2026-01-02T00:00:00Z", "2026-01-03T00:00:00Z"


def _ledger(tmp_path: Path, text: str | bytes) -> Path:
    path = ledger_path(tmp_path)
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return path


def test_a_bom_before_the_header_is_dropped_once(tmp_path: Path) -> None:
    path = _ledger(tmp_path, "\ufeff" + HEADER + "\n")
    ledger = Ledger(path)  # a header-only ledger, as a spreadsheet saves it
    assert not ledger.problems and not ledger.unreadable and list(ledger.addresses()) == []
    path.write_text("\ufeff" + HEADER + f"\nada@readers.net,unsubscribe,{T1},cli,\n")
    assert list(Ledger(path).addresses()) == ["ada@readers.net"]


def test_crlf_endings_and_a_stray_carriage_return_read_as_plain_lines(tmp_path: Path) -> None:
    path = _ledger(tmp_path, (HEADER + "\r\n"
                              "bob@rea\r\n"  # the remains of an interrupted write, closed by a CRLF append
                              f"cy@readers.net,teleported,{T1},cli,\r\n"
                              f"dan@readers.net,unsubscribe,{T1},cli,a\rb\r\n"
                              f"eve@readers.net,bounce,{T1},sendgrid,\r\n"))
    ledger = Ledger(path)
    assert not ledger.unreadable  # nothing here makes the ledger unreadable
    assert [(p.level, p.line, p.message) for p in ledger.problems] == [
        ("warning", 2, "the remains of an interrupted write: 'bob@rea'"),
        ("warning", 3, "unreadable line, counted as suppressing cy@readers.net: "
                       f"'cy@readers.net,teleported,{T1},cli,'")]
    assert [(ledger.is_suppressed(e), ledger.told_by_sendgrid(e)) for e in (
        "cy@readers.net", "dan@readers.net", "eve@readers.net")] == [(True, False), (True, False), (True, True)]


def test_a_line_longer_than_a_read_chunk_is_read_whole(tmp_path: Path) -> None:
    path = _ledger(tmp_path, f"ada@readers.net,unsubscribe,{T1},cli,{'x' * (1 << 20)}\n"  # no newline in a chunk
                             f"bob@readers.net,bounce,{T1},cli,\n")
    ledger = Ledger(path)
    assert ledger.offset == path.stat().st_size and not ledger.problems
    assert ledger.event_of("ada@readers.net") is Kind.UNSUBSCRIBE and ledger.is_suppressed("bob@readers.net")
    assert ledger.touched_since(0) == (["ada@readers.net", "bob@readers.net"], ledger.offset)


def test_an_address_starting_with_x_or_stray_quotes_is_still_named(tmp_path: Path) -> None:
    path = _ledger(tmp_path, HEADER + f'\nXavier@readers.net,teleported,{T1},cli,\ncy@readers.net",bogus,{T1}\n'
                                      "Xena@readers.net,unsu")
    ledger = Ledger(path)
    assert not ledger.unreadable
    assert [ledger.is_suppressed(e) for e in ("xavier@readers.net", "cy@readers.net", "xena@readers.net")] == [
        True, True, True]
    assert sorted(ledger.addresses()) == ["cy@readers.net", "xavier@readers.net", "xena@readers.net"]
    torn = ledger.problems[-1]
    assert (torn.message, torn.path, torn.line) == (
        "torn last line (a write was interrupted): xena@readers.net counted as suppressed", path, 4)


def test_the_epoch_itself_is_no_time_but_a_second_later_is_one(tmp_path: Path) -> None:
    # A zero time (what an export writes for "unknown") sorts as late as the line before it, like any
    # unreadable time; 1970-01-01T00:00:01Z is a real, very old time.
    path = _ledger(tmp_path, HEADER + f"\nbob@readers.net,bounce,{T3},cli,\n"
                                      "ada@readers.net,resubscribe,2000-01-01T00:00:00Z,cli,\n"
                                      "ada@readers.net,unsubscribe,1970-01-01T00:00:01Z,cli,\n"
                                      f"cy@readers.net,resubscribe,{T2},cli,\n"
                                      "cy@readers.net,unsubscribe,1970-01-01T00:00:00Z,cli,\n")
    ledger = Ledger(path)
    assert not ledger.is_suppressed("ada@readers.net") and ledger.is_suppressed("cy@readers.net")


def test_a_torn_last_line_counts_as_its_suppression_when_deciding(tmp_path: Path) -> None:
    path = _ledger(tmp_path, HEADER + f"\nada@readers.net,unsubscribe,{T1},cli,\n"
                                      f"ada@readers.net,resubscribe,{T1},cli,\n"  # same second: file order decides
                                      "bob@readers.net,uns")
    preview = Ledger(path).preview([Event("ada@readers.net", "unsubscribe", T1),
                                    Event("bob@readers.net", "unsubscribe"), Event("bob@readers.net", "resubscribe")])
    assert [(r.outcome, r.previous) for r in preview] == [
        (Outcome.RECORDED, Kind.RESUBSCRIBE),  # written after her return, in the same second: it counts
        (Outcome.UNCHANGED, Kind.UNREADABLE), (Outcome.RECORDED, Kind.UNREADABLE)]


def test_each_event_of_a_batch_is_judged_on_the_state_the_earlier_ones_leave(tmp_path: Path) -> None:
    path = _ledger(tmp_path, HEADER + f"\ncarol@readers.net,bounce,{T1},cli,\n"
                                      f"eve@readers.net,unsubscribe,{T3},cli,\n"
                                      f"ada@readers.net,unsubscribe,{T2},cli,\n"
                                      f"ada@readers.net,resubscribe,{T2},cli,\n")  # her return is the last line
    ledger = Ledger(path)
    later = "2026-01-05T00:00:00Z"
    batch = ledger.preview([Event("bob@readers.net", "bounce", later), Event("cy@readers.net", "bounce", later),
                            Event("ada@readers.net", "unsubscribe", T2),  # after her return in file order
                            Event("ada@readers.net", "bounce", "2026-01-06T00:00:00Z"),  # already suppressed
                            Event("ada@readers.net", "resubscribe", "2026-01-07T00:00:00Z")])
    assert [(r.outcome, r.previous) for r in batch] == [
        (Outcome.RECORDED, None), (Outcome.RECORDED, None), (Outcome.RECORDED, Kind.RESUBSCRIBE),
        (Outcome.UNCHANGED, Kind.UNSUBSCRIBE), (Outcome.RECORDED, Kind.UNSUBSCRIBE)]
    # A confirmation given no sign-up time was signed up when it is recorded: after eve's opt-out, so it lifts.
    joined = ledger.record([Event("eve@readers.net", "subscribe", "2026-01-04T00:00:00Z", "signup")])
    assert joined.results[0].outcome is Outcome.RECORDED
    assert path.read_text().splitlines()[-1] == (
        "eve@readers.net,subscribe,2026-01-04T00:00:00Z,signup,signed up 2026-01-04T00:00:00Z")


def test_a_preview_leaves_every_return_as_it_was(tmp_path: Path) -> None:
    path = _ledger(tmp_path, HEADER + f"\nada@readers.net,unsubscribe,{T1},cli,\n"
                                      f"ada@readers.net,resubscribe,{T2},cli,\n"
                                      f"ada@readers.net,unsubscribe,{T3},cli,\n"
                                      "ada@readers.net,resubscribe,2026-01-04T00:00:00Z,cli,\n")
    ledger = Ledger(path)
    dry = ledger.preview([Event("ada@readers.net", "resubscribe", "2026-01-10T00:00:00Z")])
    assert dry[0].outcome is Outcome.UNCHANGED and not ledger.is_suppressed("ada@readers.net")
    # the previewed return was never written: an opt-out dated before it still counts
    opt_out = ledger.record([Event("ada@readers.net", "unsubscribe", "2026-01-05T00:00:00Z")])
    assert opt_out.results[0].outcome is Outcome.RECORDED and ledger.is_suppressed("ada@readers.net")


def test_what_sendgrid_must_be_told_of_a_replaced_ledger(tmp_path: Path) -> None:
    path = _ledger(tmp_path, "\ufeffXavier@readers.net,unsubscribe,2026-01-01T00:00:00Z,cli,".encode() + b"caf\xe9\n"
                   + f"ada@readers.net,bounce,{T1},cli,\n".encode())  # no header, a BOM, a byte that is not UTF-8
    ledger = Ledger(path)
    everyone = ["xavier@readers.net", "ada@readers.net"]
    assert ledger.touched_since(0) == (everyone, ledger.offset)
    assert ledger.touched_since(10**9) == (everyone, ledger.offset)  # past the end: replaced, told again from byte 0
    whole = HEADER + f"\nbob@readers.net,bounce,{T1},cli,\n"
    path.write_text(whole + "cy@readers.net,unsu")  # restored from a backup that ends in a torn line
    assert ledger.touched_since(0) == (["bob@readers.net"], len(whole))  # cy is told once her line is whole


def test_iter_events_refuses_exactly_the_lines_the_ledger_refuses(tmp_path: Path) -> None:
    from newsletter.errors import LedgerError

    path = _ledger(tmp_path, HEADER + f"\nXavier@readers.net,unsubscribe,{T1},cli,\n\n"
                                      ",unsub,2026-01-0\n")  # a blank line; what a torn write can leave
    assert [e.email for e, _ in iter_events(path)] == ["xavier@readers.net"] and not Ledger(path).unreadable
    with open(path, "a") as fh:
        fh.write("not an address,x,y\n")
    with pytest.raises(LedgerError) as caught:
        list(iter_events(path))
    assert caught.value.message == ("cannot read the address on this line: 'not an address,x,y': the ledger is not "
                                    "UTF-8 comma-separated CSV") and caught.value.line == 5
    assert [p.line for p in Ledger(path).unreadable] == [5]


def test_a_write_that_fails_says_what_was_not_recorded(tmp_path: Path) -> None:
    import resource
    import signal

    from newsletter.errors import StorageError

    path = ledger_path(tmp_path)
    record(path, "zed@readers.net", "unsubscribe")
    size = path.stat().st_size
    ada, bob = Event("ada@readers.net", "unsubscribe"), Event("bob@readers.net", "bounce")
    messages = []
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a file-size limit: writes fail with EFBIG
    limits = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (size, limits[1]))
    try:
        for attempt in (lambda: Ledger(path).record([ada]), lambda: Ledger(path).record([ada, bob]),
                        lambda: Ledger(path).record([ada], what="Ada's click")):
            with pytest.raises(StorageError) as caught:
                attempt()
            messages.append(caught.value.message)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limits)
        signal.signal(signal.SIGXFSZ, handler)
    assert messages == ["File too large: could not record the unsubscribe of ada@readers.net",
                        "File too large: could not record 2 ledger events",
                        "File too large: could not record Ada's click"]
    assert path.stat().st_size == size and not Ledger(path).is_suppressed("ada@readers.net")


def test_a_line_csv_cannot_parse_makes_the_ledger_unreadable_not_a_crash(tmp_path: Path) -> None:
    from newsletter.errors import LedgerError

    # A stray carriage return outside quotes, or a quoted field over csv's 128 KiB limit: csv raises on both
    stray = f'ada@readers.net,unsubscribe,{T1},cli,a\rb,"c"'
    huge = f'bob@readers.net,bounce,{T1},cli,"{"x" * (1 << 18)}"'
    path = _ledger(tmp_path, HEADER + f"\ncy@readers.net,bounce,{T1},cli,\n{stray}\n{huge}\n")
    ledger = Ledger(path)
    assert [(p.line, p.message) for p in ledger.unreadable] == [
        (3, f"cannot read the address on this line: {stray[:60]!r}"),
        (4, f"cannot read the address on this line: {huge[:60]!r}")]
    with pytest.raises(LedgerError):
        ledger.check_readable()
    touched, end = ledger.touched_since(0)  # what SendGrid must be told: read past it, not stopped by it
    assert end == path.stat().st_size and "bob@readers.net" not in touched
    for name, bad in (("stray", stray), ("huge", huge)):  # the strict readers (count, export, stats) refuse it
        (tmp_path / name).mkdir()
        one = _ledger(tmp_path / name, HEADER + f"\ncy@readers.net,bounce,{T1},cli,\n{bad}\n")
        with pytest.raises(LedgerError) as err:
            list(iter_events(one))
        assert err.value.line == 3 and "cannot read the address on this line" in err.value.message


def test_iter_events_keeps_each_detail_as_written(tmp_path: Path) -> None:
    """Only the line's end is taken off (a trailing space, tab or letter is the writer's), and a line without
    quotes is split at its commas whatever else it holds (a bare carriage return inside a detail)."""
    path = _ledger(tmp_path, HEADER + f"\nada@readers.net,unsubscribe,{T1},cli,moved away \t\r\n"
                                      f"bob@readers.net,bounce,{T1},sendgrid,550\r5.1.1\n"
                                      f"cy@readers.net,unsubscribe,{T1},cli,see ticket X\r\n")
    assert [(e.email, e.detail) for e, _ in iter_events(path)] == [
        ("ada@readers.net", "moved away \t"), ("bob@readers.net", "550\r5.1.1"), ("cy@readers.net", "see ticket X")]


def test_a_lock_held_too_long_is_an_error_naming_the_lock_and_nothing_is_written(tmp_path: Path) -> None:
    from newsletter.errors import LedgerError
    from newsletter.files import file_lock

    path = _ledger(tmp_path, HEADER + "\n")
    # Another writer holds the lock (its own file description: it excludes us even in this process).
    started = time.monotonic()
    with file_lock(path), pytest.raises(LedgerError) as err:
        Ledger(path, lock_timeout=0.05).record([Event("ada@readers.net", "unsubscribe")])
    assert time.monotonic() - started < 10  # the wait asked for, not the default minute
    assert err.value.message == "the ledger is locked by another process for too long"
    assert err.value.path == path and err.value.hint == f"if no newsletter command is running, delete {path}.lock"
    assert path.read_text() == HEADER + "\n"
    assert len(Ledger(path, lock_timeout=0.05).record([Event("ada@readers.net", "unsubscribe")]).written) == 1
