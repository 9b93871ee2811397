"""The export files themselves: found (files, zips, folders), opened and read line by line within limits that
make a hostile file cheap to refuse, each line decoded right. exports.py makes rows of these lines.

The limits, each refused with one message naming the file and the limit: 1 MB in a row (counted as lines
arrive, before the CSV parser sees them), 5,000,000 lines and 1 GB of text in one import, 1,000 files. A zip is
checked from its directory before anything is inflated (member count, directory size, total size, compression
method, each member's ratio: at most 100 to 1), then counted as it streams.
"""

from __future__ import annotations

import io
import re
import stat
import struct
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from .errors import SubscriberError

EXPORT_SUFFIXES = (".csv", ".tsv", ".txt")
MAX_COLUMNS = 1000  # a list of readers has a few dozen
MAX_ROW = 1024 * 1024  # characters in one row, counted as lines arrive: the parser never holds a bigger one
MAX_LINES = 5_000_000  # lines in one import: a large newsletter's whole history, and seconds to refuse more
MAX_BYTES = 1 << 30  # bytes of text (uncompressed) in one import
MAX_FILES = 1000  # files in a zip, or to import at once
MAX_RATIO = 100  # how many times a zip member may expand: CSV rarely passes 20, a zip bomb reaches 1,000
RATIO_GRACE = 1 << 20  # members under 1 MB may expand any amount: a little text of blank cells compresses well
MAX_DIRECTORY = 1 << 20  # bytes of a zip's central directory
SNIFF = 8192  # bytes looked at to tell a binary or UTF-16 file


def size_text(n: int) -> str:
    """`408.3 KB`, `400 MB`: a size as messages say it."""
    for unit, scale in (("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10)):
        if n >= scale:
            return f"{round(n / scale, 1):g} {unit}"
    return f"{n} bytes"


@dataclass(frozen=True)
class Source:
    """One export file to read: a file, or a member of a zip (named `zip!member`)."""

    name: str
    path: Path
    member: int | None = None  # its place in the zip's directory
    size: int = 0  # as the file system or the zip's directory says (never trusted alone)

    @contextmanager
    def open(self) -> Iterator[IO[bytes]]:
        """The file's bytes, streamed (a zip member is inflated as it is read)."""
        with open(self.path, "rb") as fh:
            if self.member is None:
                yield fh
                return
            with zipfile.ZipFile(fh) as archive:
                infos = archive.infolist()
                if self.member >= len(infos):
                    raise SubscriberError("the zip changed while it was being imported; nothing was imported",
                                          path=self.path, hint="import it again")
                with archive.open(infos[self.member]) as member:
                    yield member


@dataclass
class Budget:
    """What one import may read, across its files: bytes of text (uncompressed) and lines; and what is left."""

    max_bytes: int = MAX_BYTES
    max_lines: int = MAX_LINES
    bytes: int = field(init=False)
    lines: int = field(init=False)

    def __post_init__(self) -> None:
        self.bytes, self.lines = self.max_bytes, self.max_lines


def find_sources(paths: list[Path], max_bytes: int = MAX_BYTES) -> list[Source]:
    """Every export file to read: files as given, the CSVs inside a zip, the CSVs and zips in a folder. A
    zip's directory is checked before anything is inflated."""
    sources: list[Source] = []
    for path in paths:
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.suffix.lower() in (*EXPORT_SUFFIXES, ".zip")
                           and p.is_file())
            if not found:
                raise SubscriberError("no .csv, .tsv or .zip files in this folder", path=path)
            sources.extend(find_sources(found, max_bytes))
        else:
            sources.extend(_file_sources(path))
        if len(sources) > MAX_FILES:
            raise SubscriberError(f"more than {MAX_FILES:,} files to import at once (the limit)", path=path,
                                  hint="import them in smaller groups")
    total = sum(s.size for s in sources)
    if total > max_bytes:
        raise SubscriberError(f"{size_text(total)} of text to import, more than the limit of {size_text(max_bytes)}; "
                              "nothing was imported", path=", ".join(str(p) for p in paths),
                              hint="split the export, or import its files one at a time")
    return sources


def _file_sources(path: Path) -> list[Source]:
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):  # a pipe cannot be read twice, and a device never ends
            raise SubscriberError("not a regular file", path=path, hint="save the export to a file and import that")
        with open(path, "rb") as fh:
            if fh.read(4) in (b"PK\x03\x04", b"PK\x05\x06"):
                return _zip_sources(path, fh, info.st_size)
    except FileNotFoundError:
        raise SubscriberError("file not found", path=path) from None
    except OSError as exc:
        raise SubscriberError(f"cannot read: {exc.strerror or exc}", path=path) from None
    return [Source(str(path), path, None, info.st_size)]


def _zip_sources(path: Path, fh: IO[bytes], size: int) -> list[Source]:
    spreadsheet = SubscriberError("this is a binary file, not CSV (a spreadsheet workbook)", path=path,
                                  hint="save or export the list as CSV (comma, semicolon or tab separated)")
    _check_directory(path, fh, size)
    try:
        archive = zipfile.ZipFile(fh)
    except (zipfile.BadZipFile, EOFError):
        if path.suffix.lower() != ".zip":
            raise spreadsheet from None
        raise SubscriberError("a damaged zip file", path=path, hint="download the export again") from None
    with archive:
        infos = archive.infolist()
    names = [m.filename for m in infos]
    if "[Content_Types].xml" in names or any(n.startswith(("xl/", "word/")) for n in names):
        raise spreadsheet  # .xlsx and .ods are zips too
    members = [(i, m) for i, m in enumerate(infos) if not m.is_dir() and not m.filename.startswith("__MACOSX/")
               and m.filename.lower().endswith(EXPORT_SUFFIXES)]
    if not members:
        raise SubscriberError("no CSV files inside this zip", path=path)
    for _, m in members:
        _check_member(f"{path}!{m.filename}", m)
    return [Source(f"{path}!{m.filename}", path, i, m.file_size) for i, m in members]


def _check_directory(path: Path, fh: IO[bytes], size: int) -> None:
    """Refuse a zip whose directory is too big to read, before zipfile reads it into memory."""
    fh.seek(max(0, size - 22 - 0xFFFF))  # the end record: 22 bytes and a comment of up to 64 KB
    tail = fh.read()
    end = tail.rfind(b"PK\x05\x06")
    if end >= 0 and len(tail) - end >= 22:
        entries, directory = struct.unpack("<HI", tail[end + 10:end + 16])
        if entries > MAX_FILES or directory > MAX_DIRECTORY:
            raise SubscriberError(f"the zip lists {entries:,} files in a {size_text(directory)} directory, more than "
                                  f"an export holds (the limit is {MAX_FILES:,} files); nothing was imported",
                                  path=path, hint="import the CSV files themselves")
    fh.seek(0)


def _check_member(name: str, m: zipfile.ZipInfo) -> None:
    """What the directory says of one member, before any of it is inflated."""
    if m.flag_bits & 0x1:
        raise SubscriberError("the file is password-protected; nothing was imported", path=name,
                              hint="unzip it and import the CSV")
    if m.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        # bzip2 and lzma inflate a whole block at once: only deflate can be read in bounded steps
        raise SubscriberError(f"compressed with a method this import does not read (zip method {m.compress_type}); "
                              "nothing was imported", path=name, hint="unzip it and import the CSV")
    if m.file_size > RATIO_GRACE and m.file_size > MAX_RATIO * max(m.compress_size, 1):
        raise SubscriberError(
            f"expands {m.file_size // max(m.compress_size, 1):,} times ({size_text(m.compress_size)} to "
            f"{size_text(m.file_size)}), more than the limit of {MAX_RATIO} for an export: a zip bomb, not a list; "
            "nothing was imported", path=name, hint="download the export again from the tool that made it")


class _Counted(io.RawIOBase):
    """A byte stream held to the import's budget, whatever a zip's directory said."""

    def __init__(self, inner: IO[bytes], source: str, budget: Budget) -> None:
        super().__init__()
        self.inner, self.source, self.budget = inner, source, budget

    def readable(self) -> bool:
        """Yes: it is read from."""
        return True

    def readinto(self, buffer: Any) -> int:
        """Read into `buffer`, counting; refuses once the import has read its limit of text."""
        data = self.inner.read(len(buffer))
        self.budget.bytes -= len(data)
        if self.budget.bytes < 0:
            limit = size_text(self.budget.max_bytes)
            raise SubscriberError(f"more than {limit} of text to import (the limit); nothing was imported",
                                  path=self.source, hint="split the export and import it in parts")
        buffer[:len(data)] = data
        return len(data)


# A line that is not UTF-8 but holds a well-formed UTF-8 letter (é, ü, ł, Greek, Cyrillic; any 3- or 4-byte
# sequence) mixes two encodings: windows-1252 text almost never has Ã, Ä or Å before punctuation.
_UTF8_LETTER = re.compile(rb"[\xc3-\xc5\xce-\xd1][\x80-\xbf]|[\xe0-\xef][\x80-\xbf]{2}|[\xf0-\xf4][\x80-\xbf]{3}")
_BLANK = frozenset({"\n", "\r\n", "\r"})


class Lines:
    """A byte stream's physical lines as text, each decoded right and held to the limits. UTF-8 first; a
    line that is not UTF-8 is windows-1252 (latin-1 for the five bytes it leaves undefined); a line that
    mixes both is refused, naming it. Blank lines between rows are counted here, never parsed."""

    def __init__(self, stream: IO[bytes], source: str, budget: Budget) -> None:
        buffered = io.BufferedReader(_Counted(stream, source, budget), 1 << 16)
        head = buffered.peek(SNIFF)[:SNIFF]
        self.utf16 = head[:2] in (b"\xff\xfe", b"\xfe\xff")
        if b"\x00" in head and not self.utf16:
            raise SubscriberError("this is a binary file, not CSV", path=source,
                                  hint="export the list as CSV (comma, semicolon or tab separated)")
        # latin-1 maps each byte to one character: lines split on \n, \r\n or \r, then decoded one by one
        self.text = io.TextIOWrapper(buffered, encoding="utf-16" if self.utf16 else "latin-1", newline="")
        self.source, self.budget = source, budget
        self.delimiter = ","
        self.number = 0  # physical lines read
        self.chars = 0  # characters of the row being read: the parser's caller resets it after each row
        self.legacy = 0  # lines read as windows-1252
        self.unicode = 0  # lines read as UTF-8 that are not plain ASCII
        self._iterator = self._read()

    def __iter__(self) -> Iterator[str]:
        return self._iterator

    def _read(self) -> Iterator[str]:
        # The hot loop of an import: locals, not attributes, for what every line touches.
        readline, source, utf16 = self.text.readline, self.source, self.utf16
        number, last = 0, self.budget.lines
        try:
            while True:
                try:
                    line = readline(MAX_ROW + 1)
                except UnicodeDecodeError:
                    raise SubscriberError("not valid UTF-16 text", path=source, line=number + 1,
                                          hint="re-save the file as UTF-8 (\"CSV UTF-8\" in Excel)") from None
                if not line:
                    return
                number += 1
                if number > last:
                    raise SubscriberError(f"more than {self.budget.max_lines:,} lines to import (the limit); "
                                          "nothing was imported", path=source,
                                          hint="split the export and import it in parts")
                if self.chars == 0 and line in _BLANK:
                    continue  # between rows, a blank line is nothing: it never reaches the parser
                self.number = number
                self.chars += len(line)
                if self.chars > MAX_ROW:
                    raise _too_long(source, number, line)
                if number == 1 and not utf16:
                    line = line.removeprefix("\xef\xbb\xbf")  # the UTF-8 byte order mark, read as latin-1
                yield line if utf16 or line.isascii() else self._decode(line)
        finally:
            self.budget.lines -= number

    def _decode(self, line: str) -> str:
        raw = line.encode("latin-1")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            pass
        else:
            self.unicode += 1
            return text
        if _UTF8_LETTER.search(raw):
            raise SubscriberError("this line mixes UTF-8 with another encoding, so its address cannot be read "
                                  "right; nothing was imported", path=self.source, line=self.number,
                                  hint="re-save the file as UTF-8 (\"CSV UTF-8\" in Excel or Numbers)")
        self.legacy += 1
        try:
            return raw.decode("cp1252")  # Excel on Windows
        except UnicodeDecodeError:
            return line  # latin-1: windows-1252 leaves five bytes undefined

    @property
    def encoding(self) -> str:
        """How the file was decoded, for the report."""
        if self.utf16:
            return "utf-16"
        if self.legacy and self.unicode:
            return f"utf-8, windows-1252 on {self.legacy:,} line(s)"
        return "windows-1252" if self.legacy else "utf-8"


def _too_long(source: str, line: int, text: str) -> SubscriberError:
    delimiter = max((",", ";", "\t"), key=text.count)
    if text.count(delimiter) >= MAX_COLUMNS:
        return columns_error(source, line)
    return SubscriberError(f"a row longer than {size_text(MAX_ROW)} (the limit); nothing was imported", path=source,
                           line=line, hint="an unclosed quote is the usual cause: fix or remove it")


def columns_error(source: str, line: int) -> SubscriberError:
    """The refusal of a row with more columns than the limit."""
    return SubscriberError(f"more than {MAX_COLUMNS:,} columns (the limit); nothing was imported", path=source,
                           line=line, hint="a list of readers has a few dozen: export the list alone")


@contextmanager
def reading(source: Source, budget: Budget) -> Iterator[Lines]:
    """The lines of one source; a damaged zip or an unreadable file becomes one SubscriberError."""
    try:
        with source.open() as stream:
            yield Lines(stream, source.name, budget)
    except (zipfile.BadZipFile, zlib.error, EOFError):
        # zipfile stops at the size the directory declares and checks the CRC there: a lie ends here
        raise SubscriberError("a damaged zip file: its data does not match its directory; nothing was imported",
                              path=source.name, hint="download the export again") from None
    except OSError as exc:
        raise SubscriberError(f"cannot read: {exc.strerror or exc}", path=source.name) from None
