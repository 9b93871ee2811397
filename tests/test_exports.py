"""exportfiles.py, exports.py, platforms.py called directly: limits on real zips and CSVs, decoding, statuses."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest
from hostile_files import MB, bomb_zip, columns_csv, newlines_zip

from newsletter.errors import SubscriberError, printable
from newsletter.exportfiles import MAX_LINES, Budget
from newsletter.exports import ExportRow, iter_rows, read_exports
from newsletter.ledger import Kind
from newsletter.platforms import VOCABULARY, Platform, StatusKind


def rows_of(*paths: Path) -> list[ExportRow]:
    return [row for f in read_exports(list(paths)) for row in iter_rows(f)]


def statuses(path: Path) -> dict[str, tuple[StatusKind, Kind | None, str]]:
    """address -> (kind, ledger event, time) of every row of one file."""
    return {r.address: (r.status.kind, r.status.event, r.at) for r in rows_of(path)}


def refusal(*paths: Path) -> str:
    with pytest.raises(SubscriberError) as caught:
        rows_of(*paths)
    return str(caught.value)


# -- limits: each refusal names the file and the limit, and comes before the file is read whole ------------
def _many_members(path: Path) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        for i in range(1001):
            z.writestr(f"part{i}.csv", "email\n")
    return path


def _bzip2(path: Path) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_BZIP2) as z:
        z.writestr("list.csv", "email\nada@example.net\n")
    return path


def _write(content: bytes) -> object:
    return lambda path: (path.write_bytes(content), path)[1]


HOSTILE = [
    ("columns.csv", columns_csv, "columns.csv:1: more than 1,000 columns (the limit)"),
    ("wide.csv", _write(b"email," + b",".join(b"c%d" % i for i in range(1000)) + b"\n"),
     "wide.csv:1: more than 1,000 columns (the limit)"),
    ("newlines.zip", newlines_zip, "newlines.zip!list.csv: expands 1,028 times (19.9 KB to 20 MB), more than the "
                                   "limit of 100"),
    ("bomb.zip", bomb_zip, "bomb.zip!list.csv: expands 1,010 times (405.5 KB to 400 MB), more than the limit of 100"),
    ("liar.zip", lambda p: bomb_zip(p, 3, declared=1000),
     "liar.zip!list.csv: a damaged zip file: its data does not match its directory"),
    ("members.zip", _many_members, "members.zip: the zip lists 1,001 files"),
    ("bzip2.zip", _bzip2, "bzip2.zip!list.csv: compressed with a method this import does not read (zip method 12)"),
    ("field.csv", _write(b'email,note\nada@example.net,"' + b"x\n" * 40_000 + b'"\n'),
     "field.csv:40002: a field longer than 64 KB (the limit)"),
    ("quote.csv", _write(b'email,note\nada@example.net,"' + b"x" * (2 * MB) + b"\n"),
     "quote.csv:2: a row longer than 1 MB (the limit)"),
    ("cells.csv", _write(b'email,note\nada@example.net,' + b'"\n",' * 600_000 + b"\n"),
     "a row longer than 1 MB (the limit)"),  # a row of quoted line breaks: a million columns over many lines
]


@pytest.mark.parametrize(("name", "make", "message"), HOSTILE, ids=[h[0] for h in HOSTILE])
def test_hostile_files_are_refused_naming_the_file_and_the_limit(tmp_path: Path, name, make, message) -> None:
    path = make(tmp_path / name)
    text = refusal(path)
    assert message in text, text
    assert text.startswith(str(tmp_path / name)) and len(text.splitlines()) == 2  # the message and a hint


def test_a_zip_is_judged_by_its_directory_before_anything_is_inflated(tmp_path: Path) -> None:
    # A directory that says 400 MB is refused even when the data behind it is one small line: nothing was read.
    path = bomb_zip(tmp_path / "export.zip", 1, declared=400 * MB)
    assert "expands" in refusal(path) and "400 MB" in refusal(path)


def test_the_declared_size_of_the_files_is_checked_before_reading(tmp_path: Path) -> None:
    big = tmp_path / "big.csv"
    with open(big, "wb") as fh:
        fh.truncate(2 << 30)  # sparse: 2 GB on paper, nothing on disk
    assert "2 GB of text to import, more than the limit of 1 GB" in refusal(big)


def test_more_lines_than_the_limit_is_refused(tmp_path: Path) -> None:
    # The limit is 5,000,000 lines (about 2 s to reach, see test_imports); counted across the files of an import.
    first, second = tmp_path / "first.csv", tmp_path / "second.csv"
    first.write_bytes(b"email\nada@example.net\n" + b"\n" * 600)
    second.write_bytes(b"email\n" + b"bob@example.net\n" * 400)
    assert len(read_exports([first], Budget(max_lines=1000))) == 1
    with pytest.raises(SubscriberError) as caught:
        read_exports([first, second], Budget(max_lines=1000))
    assert "second.csv: more than 1,000 lines to import (the limit); nothing was imported" in str(caught.value)
    assert MAX_LINES == 5_000_000


def test_more_text_than_the_limit_is_refused_as_it_streams(tmp_path: Path) -> None:
    # The declared sizes pass (a file that grows while it is read, a zip directory that lies): the count stops it.
    path = tmp_path / "list.csv"
    path.write_bytes(b"email\n" + b"ada@example.net\n" * 100_000)
    budget = Budget(max_bytes=1 << 30)
    budget.bytes = 100_000
    with pytest.raises(SubscriberError) as caught:
        read_exports([path], budget)
    assert "list.csv: more than 1 GB of text to import (the limit)" in str(caught.value)


def test_a_pipe_is_refused_not_waited_on(tmp_path: Path) -> None:
    import os

    fifo = tmp_path / "list.csv"
    os.mkfifo(fifo)
    assert "not a regular file" in refusal(fifo)


def test_limits_count_what_a_real_export_needs(tmp_path: Path) -> None:
    # 1,000 columns, a 60 KB note and a zip that compresses 50 times all pass.
    wide = tmp_path / "wide.csv"
    wide.write_text("email," + ",".join(f"c{i}" for i in range(999)) + "\nada@example.net" + "," * 999 + "\n")
    note = tmp_path / "note.csv"
    note.write_text('email,note\nbob@example.net,"' + "x" * 60_000 + '"\n')
    archive = tmp_path / "export.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("list.csv", "email,name,city\n" + "".join(f"r{i}@example.net,Reader,Bristol\n" for i in range(9000)))
    assert len(rows_of(wide, note, archive)) == 9002


# -- decoding: every row right, or the file refused ----------------------------------------------------------
def test_each_row_is_decoded_in_its_own_encoding(tmp_path: Path) -> None:
    path = tmp_path / "mixed.csv"
    path.write_bytes(b"email,name,status\n" + "josé@example.net,José,unsubscribed\n".encode()
                     + "mueller@example.net,Müller,active\n".encode("cp1252"))
    (f,) = read_exports([path])
    rows = {r.address: r for r in iter_rows(f)}
    assert f.encoding == "utf-8, windows-1252 on 1 line(s)"
    assert rows["josé@example.net"].status.event == "unsubscribe"  # never `josã©@`
    assert rows["mueller@example.net"].name == "Müller"


def test_a_line_that_mixes_encodings_is_refused_by_number(tmp_path: Path) -> None:
    path = tmp_path / "mixed.csv"
    path.write_bytes(b"email,name\nada@example.net,Ada\n" + "josé@example.net,".encode()
                     + "Müller\n".encode("cp1252"))
    assert "mixed.csv:3: this line mixes UTF-8 with another encoding" in refusal(path)


@pytest.mark.parametrize(("data", "encoding"), [
    ("email,name\nrenee@example.net,Renée\n".encode("cp1252"), "windows-1252"),
    ("\ufeffemail,name\nrenee@example.net,Renée\n".encode("utf-8"), "utf-8"),
    ("email,name\r\nrenee@example.net,Renée\r\n".encode("utf-16"), "utf-16"),
    ("email,name\rrenee@example.net,Renée\r".encode(), "utf-8"),  # old Mac line ends
])
def test_whole_file_encodings(tmp_path: Path, data: bytes, encoding: str) -> None:
    path = tmp_path / "list.csv"
    path.write_bytes(data)
    (f,) = read_exports([path])
    assert f.encoding == encoding and [(r.address, r.name) for r in iter_rows(f)] == [("renee@example.net", "Renée")]


# -- vocabularies ----------------------------------------------------------------------------------------
BUTTONDOWN = {
    "regular": None, "premium": None, "churning": None, "churned": None, "past_due": None, "paused": None,
    "gifted": None, "trialed": None, "unpaid": None, "unactivated": "skip", "unsubscribed": "unsubscribe",
    "removed": "unsubscribe", "disabled": "unsubscribe", "undeliverable": "bounce", "complained": "spamreport",
    "blocked": "invalid", "spammy": "invalid", "malformed": "invalid",
}


def test_every_buttondown_type_has_a_meaning(tmp_path: Path) -> None:
    path = tmp_path / "buttondown.csv"
    path.write_text("email,subscriber_type,churn_date\n" + "".join(
        f"{t}@example.net,{t},{'2025-01-01' if t == 'churned' else ''}\n" for t in BUTTONDOWN))
    (f,) = read_exports([path])
    assert f.platform is Platform.BUTTONDOWN
    got = {r.address.split("@")[0]: r.status for r in iter_rows(f)}
    for word, meaning in BUTTONDOWN.items():
        status = got[word]
        expected = (StatusKind.ACTIVE if meaning is None else StatusKind.SKIP if meaning == "skip"
                    else StatusKind.SUPPRESS)
        assert status.kind is expected, word  # a churned reader still gets the free letters: churn_date is no opt-out
        assert status.event is (Kind(meaning) if expected is StatusKind.SUPPRESS else None), word


def test_buttondown_newer_exports_call_the_type_type(tmp_path: Path) -> None:
    path = tmp_path / "subscribers.csv"
    path.write_text("email_address,type,churn_date,undeliverability_date\na@example.net,churned,2025-01-01,\n"
                    "b@example.net,regular,,2025-02-02T10:00:00Z\n")
    (f,) = read_exports([path])
    assert (f.platform, f.status_column) == (Platform.BUTTONDOWN, "type")
    got = {r.address: (r.status.kind, r.status.event, r.at) for r in iter_rows(f)}
    assert got == {"a@example.net": (StatusKind.ACTIVE, None, ""),
                   "b@example.net": (StatusKind.SUPPRESS, Kind.BOUNCE, "2025-02-02T10:00:00Z")}


def test_vocabularies_are_enums_not_strings() -> None:
    assert all(isinstance(s.kind, StatusKind) for words in VOCABULARY.values() for s in words.values())
    assert all(isinstance(s.event, Kind) and s.event.suppresses for words in VOCABULARY.values()
               for s in words.values() if s.kind is StatusKind.SUPPRESS)


def test_an_unknown_status_value_refuses(tmp_path: Path) -> None:
    path = tmp_path / "buttondown.csv"
    path.write_text("email,subscriber_type\na@example.net,regular\nb@example.net,lapsed\n")
    text = refusal(path)
    assert "column 'subscriber_type' (buttondown) has values this import does not understand: 'lapsed'" in text


def test_a_column_of_many_values_is_not_a_status(tmp_path: Path) -> None:
    path = tmp_path / "list.csv"
    path.write_text("email,status\n" + "".join(f"r{i}@example.net,note {i}\n" for i in range(300)))
    assert "column 'status' (csv) has more than 200 different values" in refusal(path)


# -- dates: a date in an opt-out column means opted out, with or without a status column ----------------------
@pytest.mark.parametrize(("header", "cell", "event", "at"), [
    ("unsubscribed_at", "2024-05-06 07:08:09", "unsubscribe", "2024-05-06T07:08:09Z"),
    ("unsubscribe_date", "2024-05-06", "unsubscribe", "2024-05-06T00:00:00Z"),
    ("Unsubscribed", "yes", "unsubscribe", ""),
    ("unsubscribed", "1715000000", "unsubscribe", "2024-05-06T12:53:20Z"),
    ("UNSUB_TIME", "2024-05-06 07:08:09", "unsubscribe", "2024-05-06T07:08:09Z"),
    ("CLEAN_TIME", "2024-05-06 07:08:09 UTC", "bounce", "2024-05-06T07:08:09Z"),
    ("bounced_at", "2024-05-06T07:08:09+02:00", "bounce", "2024-05-06T05:08:09Z"),
    ("complained_at", "06/05/2024", "spamreport", ""),  # a date it cannot read is still a date: opted out
])
def test_a_date_in_an_opt_out_column_means_opted_out(tmp_path: Path, header, cell, event, at) -> None:
    path = tmp_path / "list.csv"
    path.write_text(f"email,created_at,{header}\nleft@example.net,2023-01-01,{cell}\nstays@example.net,2023-01-01,\n"
                    f"also@example.net,2023-01-01,0000-00-00 00:00:00\nno@example.net,2023-01-01,false\n")
    got = statuses(path)
    assert got.pop("left@example.net") == (StatusKind.SUPPRESS, event, at)
    assert set(got.values()) == {(StatusKind.ACTIVE, None, "")}


def test_a_date_beats_an_active_or_pending_status(tmp_path: Path) -> None:
    path = tmp_path / "list.csv"
    path.write_text("email,status,unsubscribed_at\na@example.net,active,2024-01-01\nb@example.net,pending,2024-01-02\n"
                    "c@example.net,bounced,2024-01-03\n")
    assert statuses(path) == {"a@example.net": (StatusKind.SUPPRESS, "unsubscribe", "2024-01-01T00:00:00Z"),
                              "b@example.net": (StatusKind.SUPPRESS, "unsubscribe", "2024-01-02T00:00:00Z"),
                              "c@example.net": (StatusKind.SUPPRESS, "bounce", "2024-01-03T00:00:00Z")}


def test_a_renamed_mailchimp_file_keeps_its_unsub_and_clean_times(tmp_path: Path) -> None:
    # README promises it: the file name no longer says the status, UNSUB_TIME / CLEAN_TIME still do.
    path = tmp_path / "audience (1).csv"
    path.write_text("Email Address,First Name,MEMBER_RATING,UNSUB_TIME,CLEAN_TIME,LEID\n"
                    "left@example.net,Lee,2,2023-06-06 12:56:15,,1\ngone@example.net,Go,1,,2020-03-23 17:30:05,2\n"
                    "here@example.net,Here,4,,,3\n")
    (f,) = read_exports([path])
    assert f.platform is Platform.MAILCHIMP and f.date_columns == ["UNSUB_TIME", "CLEAN_TIME"]
    assert {r.address: (r.status.kind, r.status.event, r.at) for r in iter_rows(f)} == {
        "left@example.net": (StatusKind.SUPPRESS, "unsubscribe", "2023-06-06T12:56:15Z"),
        "gone@example.net": (StatusKind.SUPPRESS, "bounce", "2020-03-23T17:30:05Z"),
        "here@example.net": (StatusKind.ACTIVE, None, "")}


def test_printable_shows_control_characters_instead_of_sending_them() -> None:
    osc = "list\x1b]8;;https://evil.example\x07click\x1b]8;;\x07\u202egnp.csv"
    assert printable(osc) == "list\\x1b]8;;https://evil.example\\x07click\\x1b]8;;\\x07\\u202egnp.csv"
    assert printable("two\nlines\x9b", lines=True) == "two\nlines\\x9b"
    assert printable("José Müller, 東京") == "José Müller, 東京"
