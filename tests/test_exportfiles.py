"""exportfiles.py: export files found, opened and read within limits that make a hostile file cheap to refuse
(each refusal names the file and the limit, before the file is read whole), and every line decoded right."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import export_refusal
from hostile_files import MB, bomb_zip

from newsletter.errors import SubscriberError
from newsletter.exportfiles import MAX_LINES, Budget
from newsletter.exports import iter_rows, read_exports


def test_a_zip_is_judged_by_its_directory_before_anything_is_inflated(tmp_path: Path) -> None:
    # A directory that says 400 MB is refused even when the data behind it is one small line: nothing was read.
    path = bomb_zip(tmp_path / "export.zip", 1, declared=400 * MB)
    assert "expands" in export_refusal(path) and "400 MB" in export_refusal(path)


def test_the_declared_size_of_the_files_is_checked_before_reading(tmp_path: Path) -> None:
    big = tmp_path / "big.csv"
    with open(big, "wb") as fh:
        fh.truncate(2 << 30)  # sparse: 2 GB on paper, nothing on disk
    assert "2 GB of text to import, more than the limit of 1 GB" in export_refusal(big)


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
    assert "not a regular file" in export_refusal(fifo)


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
    assert "mixed.csv:3: this line mixes UTF-8 with another encoding" in export_refusal(path)


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
