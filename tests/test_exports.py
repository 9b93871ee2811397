"""exports.py: rows made of an export's lines (called directly): hostile files refused naming the file and the limit,
what a real export needs passes."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest
from conftest import export_refusal, export_rows
from hostile_files import MB, bomb_zip, columns_csv, newlines_zip


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
    text = export_refusal(path)
    assert message in text, text
    assert text.startswith(str(tmp_path / name)) and len(text.splitlines()) == 2  # the message and a hint


def test_limits_count_what_a_real_export_needs(tmp_path: Path) -> None:
    # 1,000 columns, a 60 KB note and a zip that compresses 50 times all pass.
    wide = tmp_path / "wide.csv"
    wide.write_text("email," + ",".join(f"c{i}" for i in range(999)) + "\nada@example.net" + "," * 999 + "\n")
    note = tmp_path / "note.csv"
    note.write_text('email,note\nbob@example.net,"' + "x" * 60_000 + '"\n')
    archive = tmp_path / "export.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("list.csv", "email,name,city\n" + "".join(f"r{i}@example.net,Reader,Bristol\n" for i in range(9000)))
    assert len(export_rows(wide, note, archive)) == 9002


# -- decoding: every row right, or the file refused ----------------------------------------------------------


# -- vocabularies ----------------------------------------------------------------------------------------


# -- dates: a date in an opt-out column means opted out, with or without a status column ----------------------
