"""subscribers.py, through `newsletter subscribers ...`: imports of real export shapes, bad files, add/list/
count/export, a list that cannot be read named at its line, readers' files private whatever the umask."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from conftest import DATA, SEED_SLUG, Cli, record

EXPORTS = DATA / "exports"


def list_rows(project: Path) -> list[dict[str, str]]:
    with open(project / "subscribers" / "subscribers.csv", encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.mark.parametrize(
    ("name", "column", "expected"),
    [
        ("mailchimp.csv", "Email Address", {"ada@example.net": "Ada Lovelace", "GRACE@example.net": "Grace Hopper"}),
        ("substack.csv", "email", {"linus@example.net": "", "margaret@example.net": ""}),
        ("buttondown.tsv", "email", {"barbara@example.net": "", "edsger@example.net": ""}),
        ("kit.csv", "email_address", {"ken@example.net": "Ken", "dennis@example.net": "Dennis"}),
        ("excel-1252.csv", "Adresse e-mail", {"jose@example.net": "", "renee@example.net": ""}),
    ],
)
def test_import_export_formats(cli: Cli, project: Path, name: str, column: str, expected: dict) -> None:
    result = cli("subscribers", "import", str(EXPORTS / name))
    assert result.exit_code == 0, result.output
    assert f"addresses from column {column!r}" in result.output
    assert "\nadded 2\n" in result.output
    rows = list_rows(project)
    assert {r["email"]: r["name"] for r in rows} == expected


def test_mailchimp_keeps_other_columns_and_multiline_fields(cli: Cli, project: Path) -> None:
    cli("subscribers", "import", str(EXPORTS / "mailchimp.csv"))
    rows = list_rows(project)
    assert rows[0]["Address"] == "1 Analytical St\r\nLondon" or rows[0]["Address"] == "1 Analytical St\nLondon"
    assert rows[0]["TAGS"] == "a,b" and rows[1]["MEMBER_RATING"] == "5"


def test_windows_1252_is_decoded(cli: Cli, project: Path) -> None:
    result = cli("subscribers", "import", str(EXPORTS / "excel-1252.csv"))
    assert "windows-1252, semicolon-separated" in result.output
    assert list_rows(project)[0]["Ville"] == "Málaga"


def test_email_column_guessed_from_values(cli: Cli, project: Path) -> None:
    result = cli("subscribers", "import", str(EXPORTS / "no-header-name.csv"))
    assert result.exit_code == 0
    assert "addresses from column 'contact' (guessed from its values)" in result.output
    assert len(list_rows(project)) == 3


def test_dedupe_within_file_and_against_list(cli: Cli, project: Path, tmp_path: Path) -> None:
    cli("subscribers", "import", str(EXPORTS / "mailchimp.csv"))
    again = tmp_path / "again.csv"
    again.write_text("email,name\nADA@example.net,A\nnew@example.net,N\nNew@Example.net,N2\n")
    result = cli("subscribers", "import", str(again))
    assert "\nadded 1\n" in result.output
    assert "already present: 1" in result.output
    assert "duplicates:      1" in result.output
    assert [r["email"] for r in list_rows(project)] == ["ada@example.net", "GRACE@example.net", "new@example.net"]


def test_suppressed_addresses_are_not_readded(cli: Cli, project: Path, tmp_path: Path) -> None:
    cli("unsubscribe", "Ada@EXAMPLE.net", "--reason", "asked")
    cli("unsubscribe", "grace@example.net", "--event", "bounce")
    result = cli("subscribers", "import", str(EXPORTS / "mailchimp.csv"))
    assert result.exit_code == 0
    assert "kept out:        2 already suppressed in the ledger (bounce 1, unsubscribe 1)" in result.output
    assert not (project / "subscribers" / "subscribers.csv").exists()
    cli("resubscribe", "grace@example.net", "--note", "came back")
    result = cli("subscribers", "import", str(EXPORTS / "mailchimp.csv"))
    assert "\nadded 1\n" in result.output
    assert [r["email"] for r in list_rows(project)] == ["GRACE@example.net"]


def test_invalid_rows_reported_with_lines(cli: Cli, tmp_path: Path) -> None:
    f = tmp_path / "mixed.csv"
    f.write_text("email\nok@example.net\nnot-an-address\nalso@bad@x\n@nouser.net\n")
    result = cli("subscribers", "import", str(f))
    assert result.exit_code == 0
    assert "invalid:         3" in result.output
    assert "line 3: 'not-an-address'" in result.output and "line 5: '@nouser.net'" in result.output


def test_addresses_written_with_names_or_mailto(cli: Cli, project: Path, tmp_path: Path) -> None:
    f = tmp_path / "odd.csv"
    f.write_text('email\n"Ada Lovelace <ada@example.net>"\nmailto:bob@example.net\n')
    result = cli("subscribers", "import", str(f))
    assert "\nadded 2\n" in result.output
    assert [r["email"] for r in list_rows(project)] == ["ada@example.net", "bob@example.net"]


def test_ragged_rows(cli: Cli) -> None:
    result = cli("subscribers", "import", str(EXPORTS / "ragged.csv"))
    assert result.exit_code == 0, result.output
    assert "malformed rows:  1" in result.output and "line 3: 4 fields where the header has 2" in result.output
    assert "invalid:         1" in result.output  # `short` is not an address


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "the file is empty"),
        (b"   \n\n", "the file is empty"),
        (None, "binary file, not CSV"),
        (b"first,last,city\nA,B,C\n", "no email column found; columns: 'first', 'last', 'city'"),
        (b'email,name\n"unclosed@example.net,Ada\n', "nothing could be imported"),
        (b"email\nnope\nnada\n", "nothing could be imported"),
    ],
)
def test_bad_files_leave_the_list_untouched(cli: Cli, project: Path, tmp_path: Path, content, message) -> None:
    cli("subscribers", "add", "keep@example.net", "--name", "Keep")
    before = (project / "subscribers" / "subscribers.csv").read_bytes()
    f = EXPORTS / "binary.xlsx" if content is None else tmp_path / "bad.csv"
    if content is not None:
        f.write_bytes(content)
    result = cli("subscribers", "import", str(f))
    assert result.exit_code == 1, result.output
    assert message in result.output
    assert "Traceback" not in result.output
    assert (project / "subscribers" / "subscribers.csv").read_bytes() == before


def test_file_without_header_row(cli: Cli, project: Path, tmp_path: Path) -> None:
    f = tmp_path / "plain.csv"
    f.write_text("ada@example.net,Ada\nbob@example.net,Bob\n")
    result = cli("subscribers", "import", str(f))
    assert result.exit_code == 0
    assert "column 'column 1' (guessed from its values); the file has no header row" in result.output
    assert [r["email"] for r in list_rows(project)] == ["ada@example.net", "bob@example.net"]


def test_missing_file(cli: Cli, tmp_path: Path) -> None:
    result = cli("subscribers", "import", str(tmp_path / "nope.csv"))
    assert result.exit_code == 1 and "file not found" in result.output


def test_add_list_count_export(cli: Cli, project: Path, tmp_path: Path) -> None:
    assert cli("subscribers", "add", "ada@example.net", "--name", "Ada").exit_code == 0
    assert cli("subscribers", "add", "bob@example.net").exit_code == 0
    dup = cli("subscribers", "add", "ADA@example.net")
    assert dup.exit_code == 1 and "already on the list" in dup.output
    bad = cli("subscribers", "add", "nope")
    assert bad.exit_code == 1 and "not a valid address" in bad.output
    cli("unsubscribe", "BOB@example.net")
    carol = cli("subscribers", "add", "carol@example.net")
    assert carol.exit_code == 0 and "added carol@example.net" in carol.output
    cli("unsubscribe", "carol@example.net", "--event", "spamreport")
    assert cli("subscribers", "list").output.splitlines() == ["ada@example.net\tAda"]
    assert cli("subscribers", "list", "--suppressed").output.splitlines() == [
        "bob@example.net\tunsubscribe", "carol@example.net\tspamreport"]
    counted = cli("subscribers", "count").output
    assert "active:     1" in counted and "suppressed: 2 (spamreport 1, unsubscribe 1)" in counted
    assert "total:      3" in counted
    again = cli("subscribers", "add", "Bob@example.net")
    assert again.exit_code == 1 and "suppressed in the ledger" in again.output and "resubscribe" in again.output
    out = tmp_path / "export.csv"
    assert cli("subscribers", "export", str(out)).exit_code == 0
    assert out.read_text() == "email,name\nada@example.net,Ada\n"


def test_unsubscribe_rejects_non_addresses(cli: Cli, project: Path) -> None:
    result = cli("unsubscribe", "not an address")
    assert result.exit_code == 2
    assert not (project / "subscribers" / "unsubscribes.csv").exists()


def test_every_reader_of_the_ledger_refuses_an_unreadable_line(cli: Cli, project: Path, tmp_path: Path) -> None:
    from newsletter.ledger import HEADER, ledger_path

    cli("subscribers", "add", "ada@readers.net")
    cli("subscribers", "add", "bob@readers.net")
    path = ledger_path(project)
    text = HEADER + "\nada@readers.net,unsubscribe,2026-11-01T10:00:00Z,cli,\n"
    for broken in (text.encode("utf-16"), text.replace(",", ";").encode()):
        path.write_bytes(broken)
        out = tmp_path / "export.csv"
        for argv in (("subscribers", "count"), ("subscribers", "list"), ("subscribers", "list", "--suppressed"),
                     ("subscribers", "export", str(out))):
            result = cli(*argv)
            assert result.exit_code == 1, (argv, result.output)
            assert "unsubscribes.csv:1: cannot read the address on this line" in result.output, argv
        assert not out.exists()  # no export with the opted-out reader in it


def test_count_reconciles_with_the_old_tool(cli: Cli, project: Path, tmp_path: Path) -> None:
    export = tmp_path / "unsubscribed_members_export_4f1e2a.csv"
    export.write_text("Email Address,UNSUB_TIME\ngone1@readers.net,2024-01-01 10:00:00\n"
                      "gone2@readers.net,2024-02-01 10:00:00\nada@readers.net,2024-03-01 10:00:00\n")
    cli("subscribers", "add", "ada@readers.net")  # on the list before her opt-out arrives with the import
    cli("subscribers", "add", "bob@readers.net")
    assert cli("subscribers", "import", str(export)).exit_code == 0
    out = cli("subscribers", "count").output
    assert "active:     1" in out and "suppressed: 1 (unsubscribe 1)" in out
    assert "opted out, not on the list: 2" in out


def test_a_suppressed_address_is_not_imported(ready_project: Path, tmp_path: Path) -> None:
    from newsletter.ledger import ledger_path
    from newsletter.subscribers import import_exports, list_path

    root = ready_project
    record(ledger_path(root), "ada@readers.net", "spamreport")
    export = tmp_path / "export.csv"
    export.write_text("email,name\nADA@readers.net,Ada\nbob@readers.net,Bob\n")
    report = import_exports(root, [export])
    assert report.added == 1 and report.kept_out == {"spamreport": 1}
    assert "ada@" not in list_path(root).read_text()


@pytest.mark.parametrize(("content", "message", "line"), [
    (b"email,name\nada@readers.net,Ada\nbob@readers.net,Jos\xe9\n", "not UTF-8 text", 3),
    (b"email,name\nada@readers.net,Ada\nbob@readers.net,\"" + b"x" * 200_000 + b"\"\n", "a field is too long", 3),
])
@pytest.mark.parametrize("command", [("subscribers", "count"), ("subscribers", "list"),
                                     ("send", "--issue", SEED_SLUG, "--dry-run")])
def test_broken_bytes_in_the_list_name_the_line(ready_project: Path, monkeypatch, content: bytes, message: str,
                                                line: int, command: tuple[str, ...]) -> None:
    monkeypatch.setenv("NEWSLETTER_SECRET", "s3cret")
    (ready_project / "subscribers" / "subscribers.csv").write_bytes(content)
    result = Cli(ready_project)(*command, "--no-spam") if command[0] == "check" else Cli(ready_project)(*command)
    assert result.exit_code == 1, result.output
    assert f"subscribers.csv:{line}: {message}" in result.output
    assert ("re-save as UTF-8" if "UTF-8" in message else "the field is too long") in result.output
    assert "internal error" not in result.output


def test_files_holding_readers_data_are_private_whatever_the_umask(ready_project: Path) -> None:
    """The list, the ledger, a send journal and the events log: 0600 (or 0640), even under umask 022."""
    import os
    import stat

    from newsletter.journal import Journal, journal_path
    from newsletter.ledger import ledger_path, load_ledger
    from newsletter.subscribers import add_subscriber
    from newsletter.webhook import EventLog

    old = os.umask(0o022)
    try:
        add_subscriber(ready_project, "ada@readers.net")
        record(ledger_path(ready_project), "bob@readers.net", "unsubscribe")
        with Journal(journal_path(ready_project, "an-issue")) as j:
            j.run(readers=0, resend_in_doubt=False)
        EventLog(ready_project).record([{"email": "cy@readers.net", "event": "open", "sg_event_id": "x"}],
                                       load_ledger(ready_project))
    finally:
        os.umask(old)
    for p in (ready_project / "subscribers" / "subscribers.csv", ledger_path(ready_project),
              journal_path(ready_project, "an-issue"), ready_project / "subscribers" / "events.jsonl"):
        assert stat.S_IMODE(p.stat().st_mode) in (0o600, 0o640), (p, oct(p.stat().st_mode))
