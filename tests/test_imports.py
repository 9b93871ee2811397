"""Imports from other tools keep their opt-outs: every platform's do-not-mail statuses reach the ledger."""

from __future__ import annotations

import csv
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import pytest
from conftest import DATA, Cli
from hostile_files import MB, bomb_zip, columns_csv, newlines_zip

from newsletter.ledger import Ledger, ledger_path

EXPORTS = DATA / "exports"


def list_emails(project: Path) -> set[str]:
    path = project / "subscribers" / "subscribers.csv"
    if not path.exists():
        return set()
    with open(path, encoding="utf-8", newline="") as fh:
        return {r["email"].lower() for r in csv.DictReader(fh)}


def ledger_rows(project: Path) -> dict[str, list[str]]:
    path = ledger_path(project)
    if not path.exists():
        return {}
    with open(path, encoding="utf-8", newline="") as fh:
        return {r[0]: r for r in list(csv.reader(fh))[1:]}


# platform, files, readers added, {address: (event, date or None)}, skipped addresses, summary
CASES = [
    ("mailchimp", ["mailchimp-2019"], {"mary@example.net", "jane@example.net"},
     {"leaver@example.net": ("unsubscribe", "2023-06-06T12:56:15Z"),
      "both@example.net": ("unsubscribe", "2023-07-01T07:00:00Z"),
      "gone@example.net": ("bounce", "2020-03-23T17:30:05Z"),
      "never@example.net": ("unsubscribe", None)}, set(),
     "added 2; suppressed 2 unsubscribed, 1 cleaned (bounced), 1 nonsubscribed (unsubscribed)"),
    ("mailchimp", ["mailchimp-audience-export.zip"], {"mary@example.net", "jane@example.net"},
     {"leaver@example.net": ("unsubscribe", "2023-06-06T12:56:15Z"), "gone@example.net": ("bounce", None),
      "both@example.net": ("unsubscribe", None), "never@example.net": ("unsubscribe", None)}, set(), None),
    ("substack", ["substack-email_list.micro-moments.csv"], {"linus@example.net", "margaret@example.net"},
     {"quiet@example.net": ("unsubscribe", None)}, {"x7f3k2@deletion-request.substack.com"},
     "added 2; suppressed 1 email disabled (unsubscribed); skipped 1 deletion requests (Substack placeholders)"),
    ("kit", ["kit-subscribers.csv"], {"ken@example.net"},
     {"dennis@example.net": ("unsubscribe", None), "bram@example.net": ("bounce", None),
      "cass@example.net": ("spamreport", None)}, {"ina@example.net"},
     "added 1; suppressed 1 cancelled (unsubscribed), 1 bounced, 1 complained (spam report); "
     "skipped 1 inactive (unconfirmed)"),
    ("buttondown", ["buttondown-subscribers.csv", "buttondown-2021.csv"],
     {"barbara@example.net", "edsger@example.net", "old@example.net", "chu@example.net", "ning@example.net",
      "pau@example.net", "gift@example.net", "trial@example.net", "unp@example.net", "due@example.net"},
     {"ursula@example.net": ("unsubscribe", "2024-09-01T08:30:00Z"), "ulf@example.net": ("bounce", None),
      "carl@example.net": ("spamreport", None), "rem@example.net": ("unsubscribe", None),
      "blok@example.net": ("invalid", None), "spam1@example.net": ("invalid", None),
      "mal@example.net": ("invalid", None), "dis@example.net": ("unsubscribe", None)}, {"una@example.net"}, None),
    ("beehiiv", ["beehiiv-subscribers.csv"], {"bee@example.net"},
     {"idle@example.net": ("unsubscribe", None), "bad@example.net": ("invalid", None),
      "sly@example.net": ("unsubscribe", "2024-03-13T11:33:53Z")},
     {"wait@example.net", "check@example.net", "ask@example.net"}, None),
    ("ghost", ["ghost-members.csv"], {"gina@example.net"}, {"gary@example.net": ("unsubscribe", None)}, set(), None),
    ("listmonk", ["listmonk-subscribers.csv"], {"lis@example.net"},
     {"blk@example.net": ("unsubscribe", None)}, set(), None),
    ("mailerlite", ["mailerlite-subscribers.csv"], {"mila@example.net"},
     {"mu@example.net": ("unsubscribe", "2024-08-08T08:08:08Z"), "mb@example.net": ("bounce", None),
      "mj@example.net": ("spamreport", None)}, {"mc@example.net"},
     "added 1; suppressed 1 unsubscribed, 1 bounced, 1 junk (spam report); skipped 1 unconfirmed"),
    ("sendy", ["sendy-subscribers.csv", "sendy-weekly-unsubscribed.csv", "sendy-weekly-marked-as-spam.csv"],
     {"sandy@example.net"},
     {"sam@example.net": ("unsubscribe", None), "sid@example.net": ("bounce", None),
      "sue@example.net": ("spamreport", None), "oldsam@example.net": ("unsubscribe", None),
      "oldsal@example.net": ("unsubscribe", None), "oldspa@example.net": ("spamreport", None)},
     {"syd@example.net"}, None),
]


@pytest.mark.parametrize(("platform", "files", "added", "opt_outs", "skipped", "summary"), CASES,
                         ids=[f"{c[0]}-{c[1][0]}" for c in CASES])
def test_each_platform_keeps_its_opt_outs(cli: Cli, project: Path, platform, files, added, opt_outs, skipped,
                                          summary) -> None:
    result = cli("subscribers", "import", *(str(EXPORTS / f) for f in files))
    assert result.exit_code == 0, result.output
    if summary:
        assert summary in result.output
    assert f"({platform}, " in result.output
    assert list_emails(project) == added
    rows = ledger_rows(project)
    assert set(rows) == set(opt_outs)  # unconfirmed and pending readers are not recorded
    for address, (event, date) in opt_outs.items():
        email, ev, at, source, _ = rows[address]
        assert (ev, source) == (event, f"import:{platform}"), rows[address]
        if date:
            assert at == date
    assert not (list_emails(project) & skipped)
    ledger = Ledger(ledger_path(project))
    assert all(ledger.is_suppressed(a) for a in opt_outs)
    assert not any(ledger.is_suppressed(a) for a in added)


def test_an_opt_out_in_any_file_beats_an_active_row_in_any_order(cli: Cli, project: Path, tmp_path: Path) -> None:
    active = tmp_path / "kit-active.csv"
    active.write_text("first_name,email_address,state\nLee,leaver@example.net,active\nGo,gone@example.net,active\n")
    unsub = EXPORTS / "mailchimp-2019" / "unsubscribed_members_export_4f1e2a.csv"
    cleaned = EXPORTS / "mailchimp-2019" / "cleaned_members_export_4f1e2a.csv"
    # opt-outs first, then the active file
    assert cli("subscribers", "import", str(unsub), str(cleaned)).exit_code == 0
    assert cli("subscribers", "import", str(active)).exit_code == 0
    assert list_emails(project) == set()
    # the other way round, in a fresh newsletter
    other = tmp_path / "other"
    shutil.copytree(project, other, ignore=shutil.ignore_patterns("subscribers"))
    (other / "subscribers").mkdir()
    cli2 = Cli(other)
    assert cli2("subscribers", "import", str(active)).exit_code == 0
    assert list_emails(other) == {"leaver@example.net", "gone@example.net"}
    assert cli2("subscribers", "import", str(unsub), str(cleaned)).exit_code == 0
    ledger = Ledger(ledger_path(other))
    assert ledger.is_suppressed("leaver@example.net") and ledger.event_of("gone@example.net") == "bounce"
    count = cli2("subscribers", "count").output
    assert "active:     0" in count
    # and in one import, either order
    for order in ((active, unsub), (unsub, active)):
        third = tmp_path / f"third-{order[0].stem}"
        shutil.copytree(project, third, ignore=shutil.ignore_patterns("subscribers"))
        (third / "subscribers").mkdir()
        assert Cli(third)("subscribers", "import", *map(str, order)).exit_code == 0
        assert list_emails(third) == {"gone@example.net"}
        assert Ledger(ledger_path(third)).is_suppressed("leaver@example.net")


def test_only_resubscribe_lifts_an_imported_opt_out(cli: Cli, project: Path) -> None:
    unsub = EXPORTS / "mailchimp-2019" / "unsubscribed_members_export_4f1e2a.csv"
    cli("subscribers", "import", str(unsub))
    assert cli("subscribers", "add", "leaver@example.net").exit_code == 1
    cli("resubscribe", "leaver@example.net", "--note", "asked to come back")
    # re-importing the old export (dated before the resubscribe) does not suppress them again
    again = cli("subscribers", "import", str(unsub))
    assert again.exit_code == 0
    assert not Ledger(ledger_path(project)).is_suppressed("leaver@example.net")


def test_the_zip_and_a_folder_are_imported(cli: Cli, project: Path, tmp_path: Path) -> None:
    result = cli("subscribers", "import", str(EXPORTS / "mailchimp-audience-export.zip"))
    assert result.exit_code == 0, result.output
    assert "mailchimp-audience-export.zip!unsubscribed_email_audience_export_9c2d7b.csv" in result.output
    assert list_emails(project) == {"mary@example.net", "jane@example.net"}
    folder = tmp_path / "downloads"
    folder.mkdir()
    shutil.copy(EXPORTS / "kit-subscribers.csv", folder)
    shutil.copy(EXPORTS / "ghost-members.csv", folder)
    result = cli("subscribers", "import", str(folder))
    assert result.exit_code == 0, result.output
    assert {"ken@example.net", "gina@example.net"} <= list_emails(project)
    assert Ledger(ledger_path(project)).is_suppressed("gary@example.net")


def test_unknown_status_values_refuse_the_import(cli: Cli, project: Path) -> None:
    result = cli("subscribers", "import", str(EXPORTS / "kit-subscribers.csv"), str(EXPORTS / "unknown-status.csv"))
    assert result.exit_code == 1
    assert "column 'status' (csv) has values this import does not understand: 'gold', 'vip'" in result.output
    assert "nothing was imported" in result.output
    assert list_emails(project) == set() and ledger_rows(project) == {}  # not even the good file


def test_dry_run_prints_the_summary_and_writes_nothing(cli: Cli, project: Path) -> None:
    result = cli("subscribers", "import", "--dry-run", str(EXPORTS / "kit-subscribers.csv"))
    assert result.exit_code == 0, result.output
    assert ("dry run, nothing written: added 1; suppressed 1 cancelled (unsubscribed), 1 bounced, "
            "1 complained (spam report); skipped 1 inactive (unconfirmed)") in result.output
    assert "3 opt-out(s) would be recorded" in result.output
    assert sorted(p.name for p in (project / "subscribers").iterdir()) == []


def test_remove_takes_readers_off_the_list_and_keeps_their_history(cli: Cli, project: Path) -> None:
    cli("subscribers", "import", str(EXPORTS / "kit-subscribers.csv"))
    cli("subscribers", "add", "ann@example.net")
    result = cli("subscribers", "remove", "KEN@example.net", "dennis@example.net", "nobody@example.net")
    assert result.exit_code == 0, result.output
    assert "removed ken@example.net" in result.output and "nobody@example.net is not on the list" in result.output
    assert list_emails(project) == {"ann@example.net"}
    assert Ledger(ledger_path(project)).event_of("dennis@example.net") == "unsubscribe"


def test_first_names_are_kept(cli: Cli, project: Path) -> None:
    cli("subscribers", "import", str(EXPORTS / "mailchimp-2019" / "subscribed_members_export_4f1e2a.csv"))
    with open(project / "subscribers" / "subscribers.csv", encoding="utf-8", newline="") as fh:
        rows = {r["email"]: r for r in csv.DictReader(fh)}
    assert rows["mary@example.net"]["first_name"] == "Mary-Kate"
    assert rows["mary@example.net"]["name"] == "Mary-Kate Olsen"


def test_a_renamed_mailchimp_export_keeps_its_opt_outs(cli: Cli, project: Path, tmp_path: Path) -> None:
    # README: UNSUB_TIME / CLEAN_TIME also count in a renamed file (the name no longer says the status).
    for i, name in enumerate(("unsubscribed", "cleaned", "subscribed")):
        shutil.copy(EXPORTS / "mailchimp-2019" / f"{name}_members_export_4f1e2a.csv", tmp_path / f"audience-{i}.csv")
    result = cli("subscribers", "import", *(str(tmp_path / f"audience-{i}.csv") for i in range(3)))
    assert result.exit_code == 0, result.output
    assert "opted out when 'UNSUB_TIME' has a date" in result.output
    rows = ledger_rows(project)
    assert rows["leaver@example.net"][1:4] == ["unsubscribe", "2023-06-06T12:56:15Z", "import:mailchimp"]
    assert rows["gone@example.net"][1:4] == ["bounce", "2020-03-23T17:30:05Z", "import:mailchimp"]
    assert list_emails(project) == {"mary@example.net", "jane@example.net"}


def test_a_date_in_unsubscribed_at_is_an_opt_out_without_a_status_column(cli: Cli, project: Path,
                                                                          tmp_path: Path) -> None:
    export = tmp_path / "readers.csv"
    export.write_text("email,created_at,unsubscribed_at\nstay@example.net,2023-01-01,\n"
                      "left@example.net,2023-01-01,2024-02-03 04:05:06\n")
    result = cli("subscribers", "import", str(export))
    assert result.exit_code == 0, result.output
    assert "(csv, utf-8, comma-separated)" in result.output and "added 1; suppressed 1 unsubscribed" in result.output
    assert list_emails(project) == {"stay@example.net"}
    assert ledger_rows(project)["left@example.net"][1:4] == ["unsubscribe", "2024-02-03T04:05:06Z", "import:csv"]


def test_an_opt_out_is_recorded_under_its_real_address_whatever_the_next_rows_encoding(
        cli: Cli, project: Path, tmp_path: Path) -> None:
    mixed = tmp_path / "mixed.csv"
    mixed.write_bytes(b"email,name,status\n" + "josé@example.net,José,unsubscribed\n".encode()
                      + "mueller@example.net,Müller,active\n".encode("cp1252"))
    other = tmp_path / "other.csv"
    other.write_text("email\njosé@example.net\n", encoding="utf-8")
    result = cli("subscribers", "import", str(mixed), str(other))
    assert result.exit_code == 0, result.output
    assert "(csv, utf-8, windows-1252 on 1 line(s), comma-separated)" in result.output
    assert ledger_rows(project)["josé@example.net"][1] == "unsubscribe"  # not `josã©@`: José stays out
    assert list_emails(project) == {"mueller@example.net"}
    with open(project / "subscribers" / "subscribers.csv", encoding="utf-8") as fh:
        assert "Müller" in fh.read()


def test_text_from_a_file_is_shown_escaped_never_sent_to_the_terminal(cli: Cli, project: Path,
                                                                        tmp_path: Path) -> None:
    osc = "\x1b]8;;https://evil.example\x07"  # a terminal hyperlink; \x1b]0;...\x07 would retitle the window
    archive = tmp_path / "export.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr(f"{osc}list.csv", f"email,name,{osc}city\nada@example.net,Ada{osc},Bristol\nnot{osc},Bo,x\n")
    result = cli("subscribers", "import", str(archive))
    assert result.exit_code == 0, result.output
    assert "export.zip!\\x1b]8;;https://evil.example\\x07list.csv (csv" in result.output
    assert "line 3: 'not\\x1b]8;;https://evil.example\\x07'" in result.output
    listing = cli("subscribers", "list")
    assert "ada@example.net\tAda\\x1b]8;;https://evil.example\\x07" in listing.output
    bad = tmp_path / "bad.zip"
    with zipfile.ZipFile(bad, "w") as z:
        z.writestr("\x1b]0;pwned\x07.csv", b"\x00\x01binary")
    refused = cli("subscribers", "import", str(bad))
    assert refused.exit_code == 1
    assert "bad.zip!\\x1b]0;pwned\\x07.csv: this is a binary file" in refused.output
    for output in (result.output, listing.output, refused.output):
        assert "\x1b" not in output and "\x07" not in output


# -- hostile files, in a real process: a refusal in seconds and under 200 MB ------------------------------------
def run_measured(argv: list[str]) -> tuple[int, str, float, float]:
    """Run a command; its exit code, output, CPU seconds and peak RSS in MB."""
    def limits() -> None:  # a regression fails fast instead of taking the machine's memory or time
        resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))
        resource.setrlimit(resource.RLIMIT_CPU, (30, 30))

    with tempfile.TemporaryFile() as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, preexec_fn=limits)
        # wait4 gives this child's own peak RSS; getrusage(RUSAGE_CHILDREN) is the largest of every child the test
        # process ever waited for (another test's server or browser would hide ours)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        return proc.returncode, out.read().decode(), usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


HOSTILE = [
    ("columns.csv", columns_csv, "columns.csv:1: more than 1,000 columns (the limit); nothing was imported"),
    ("newlines.zip", newlines_zip, "newlines.zip!list.csv: expands 1,028 times (19.9 KB to 20 MB), more than the "
                                   "limit of 100 for an export"),
    ("bomb.zip", bomb_zip, "bomb.zip!list.csv: expands 1,010 times (405.5 KB to 400 MB), more than the limit of 100"),
    ("newlines.csv", lambda p: (p.write_bytes(b"\n" * 20 * MB), p)[1],
     "newlines.csv: more than 5,000,000 lines to import (the limit)"),
]


@pytest.mark.parametrize(("name", "make", "message"), HOSTILE, ids=[h[0] for h in HOSTILE])
def test_hostile_files_are_refused_in_seconds_and_under_200_mb(project: Path, tmp_path: Path, name, make,
                                                                message) -> None:
    path = make(tmp_path / name)
    exe = str(Path(sys.executable).parent / "newsletter")
    code, output, cpu, rss_mb = run_measured([exe, "subscribers", "import", "--root", str(project), str(path)])
    assert code == 1, output
    lines = output.splitlines()
    assert len(lines) == 2 and lines[0].startswith(f"error: {path}") and lines[1].startswith("  hint: "), output
    assert message in lines[0]
    assert cpu < 5, f"{cpu:.1f} s of CPU"
    assert rss_mb < 200, f"{rss_mb:.0f} MB"
    assert list(project.joinpath("subscribers").iterdir()) == []
