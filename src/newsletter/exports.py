"""Other tools' exports as rows: each CSV's delimiter, header, email and name columns, and every row with
its status, whatever the file's encoding (exportfiles.py reads the lines, platforms.py says what a status means).

Every file is read twice. `read_exports` scans them all first (the limits, the header, the platform, the
status values: an unknown one refuses the import), so no row is used before every file passed; `iter_rows`
then streams one file's reader rows one at a time, so memory follows the readers kept, never a file's size.
Besides exportfiles.py's limits: 1,000 columns and 64 KB in a field. Nothing here writes.
"""

from __future__ import annotations

import csv
import itertools
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Generic, TypeVar

from .errors import SubscriberError
from .exportfiles import MAX_COLUMNS, Budget, Lines, Source, columns_error, find_sources, reading, size_text
from .platforms import Platform, Status, StatusReader, column_index
from .recipients import is_plausible, normalize

# Column names used by the tools writers leave: Mailchimp, Substack, Buttondown, Kit/ConvertKit, Ghost...
EMAIL_COLUMNS = ("email", "email address", "e-mail", "email_address", "emailaddress", "e-mail address",
                 "subscriber email", "subscriber", "mail")
NAME_COLUMNS = ("name", "full name", "full_name", "fullname", "display name", "subscriber name")
FIRST_COLUMNS = ("first name", "first_name", "firstname", "fname", "given name")
LAST_COLUMNS = ("last name", "last_name", "lastname", "lname", "surname", "family name")
MAX_FIELD = 64 * 1024  # characters in one cell: a longer cell is a broken file, not a reader
GUESS_ROWS = 200  # rows looked at to guess an unnamed email column
MAX_INVALID = 100_000  # invalid addresses that, past half the rows read, make a file "not a list of readers"
SHOW_FIRST = 5

T = TypeVar("T")


@dataclass
class Examples(Generic[T]):
    """How many of something, and the first few: all a report shows, so a million bad rows cost five."""

    count: int = 0
    first: list[T] = field(default_factory=list)

    def add(self, item: T) -> None:
        """Count one more; keep it when it is among the first few."""
        self.count += 1
        if len(self.first) < SHOW_FIRST:
            self.first.append(item)


@dataclass(slots=True)
class ExportRow:
    """One reader row of an export."""

    line: int
    address: str
    name: str
    first_name: str
    cells: list[str]
    status: Status
    at: str  # the opt-out's time from the export (ISO 8601, UTC), or ""


@dataclass
class _Layout:
    """Where a file keeps what a row needs: the address, the names, the other columns, the status."""

    status: StatusReader
    email_at: int = 0
    name_at: int | None = None
    first_at: int | None = None
    last_at: int | None = None
    extra: list[tuple[int, str]] = field(default_factory=list)

    @staticmethod
    def cell(row: list[str], i: int | None) -> str:
        """A cell with its spacing collapsed ("" when the row has no such column)."""
        return " ".join(row[i].split()) if i is not None and i < len(row) else ""


@dataclass
class ExportFile:
    """One export file: what the scan found (pass one), and the counts of the rows streamed (pass two)."""

    source: str  # what the writer calls it: a path, or zip!member
    origin: Source
    platform: Platform = Platform.CSV
    encoding: str = "utf-8"
    delimiter: str = ","
    header: list[str] = field(default_factory=list)
    email_column: str = ""
    email_column_guessed: bool = False
    headerless: bool = False
    name_columns: list[str] = field(default_factory=list)
    status_column: str = ""  # the column statuses come from ("" when none)
    status_from_name: bool = False  # the file's name says the status (Mailchimp, older Sendy)
    date_columns: list[str] = field(default_factory=list)  # columns whose date means opted out
    rows: int = 0  # reader rows streamed
    malformed: Examples[tuple[int, str]] = field(default_factory=Examples)  # (line, what is wrong)
    empty: int = 0  # rows without an address
    layout: _Layout | None = field(default=None, repr=False)

    def extra_columns(self) -> list[tuple[int, str]]:
        """(index, name) of the columns the list keeps besides the address and names."""
        assert self.layout is not None
        return self.layout.extra


def read_exports(paths: list[Path], budget: Budget | None = None) -> list[ExportFile]:
    """Find and scan every export file (pass one): files as given, the CSVs in a zip or a folder. Raises
    SubscriberError for a file over a limit, not a readable CSV, without an email column, or with status
    values this import does not understand: nothing of any file is used then."""
    budget = budget or Budget()
    return [_scan(source, budget) for source in find_sources(paths, budget.max_bytes)]


def _field_error(source: str, line: int) -> SubscriberError:
    return SubscriberError(f"a field longer than {size_text(MAX_FIELD)} (the limit); nothing was imported", path=source,
                           line=line, hint="an unclosed quote near this line is the usual cause: fix or remove it")


def _delimiter(text: str) -> str:
    counts = {d: text.count(d) for d in (",", ";", "\t")}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] else ","


def _records(lines: Lines, source: str) -> Iterator[tuple[int, list[str]]]:
    """(line, cells) of each row that is not blank, the header first, held to the column and field limits."""
    first = next(iter(lines), None)
    if first is None:
        raise SubscriberError("the file is empty", path=source)
    lines.delimiter = _delimiter(first)
    reader = csv.reader(itertools.chain([first], lines), delimiter=lines.delimiter)
    try:
        for row in reader:
            chars, lines.chars = lines.chars, 0
            if len(row) > MAX_COLUMNS:
                raise columns_error(source, lines.number)
            if chars > MAX_FIELD and max(map(len, row), default=0) > MAX_FIELD:
                raise _field_error(source, lines.number)
            if (row and row[0].strip()) or any(cell.strip() for cell in row):  # the first cell, mostly
                yield lines.number, row
    except csv.Error as exc:
        if "field larger than field limit" in str(exc):
            raise _field_error(source, lines.number) from None
        raise SubscriberError(f"malformed CSV: {exc}", path=source, line=lines.number,
                              hint="an unclosed quote is the usual cause") from None


def _looks_like_address(value: str) -> bool:
    return is_plausible(normalize(value))


def _scan(source: Source, budget: Budget) -> ExportFile:
    """Pass one over a file: the limits, the header, the platform and every status value (checked)."""
    out = ExportFile(source=source.name, origin=source)
    with reading(source, budget) as lines:
        records = _records(lines, source.name)
        first = next(records, None)
        if first is None:
            raise SubscriberError("the file is empty", path=source.name)
        header = [h.strip().lstrip("\ufeff") for h in first[1]]
        out.headerless = any(_looks_like_address(h) for h in header)  # no header row: a reader already
        name = source.name.rsplit("!", 1)[-1].rsplit("/", 1)[-1]
        status = StatusReader(source.name, name, header, headerless=out.headerless)
        guess = out.headerless or (column_index(header, EMAIL_COLUMNS) is None
                                   and not any("mail" in h.lower() for h in header))
        scores: Counter[int] = Counter()
        sampled = width = 0
        for _, row in itertools.chain([first], records) if out.headerless else records:
            status.see(row)
            width = max(width, len(row))
            if guess and sampled < GUESS_ROWS:
                sampled += 1
                scores.update(i for i, v in enumerate(row) if _looks_like_address(v))
        status.check()
        out.encoding, out.delimiter = lines.encoding, lines.delimiter
    out.header = [f"column {i + 1}" for i in range(width)] if out.headerless else header
    out.layout = _layout(out, status, scores, sampled)
    return out


def _layout(out: ExportFile, status: StatusReader, scores: Counter[int], sampled: int) -> _Layout:
    header = out.header
    email_at = column_index(header, EMAIL_COLUMNS)
    if email_at is None:
        email_at = next((i for i, h in enumerate(header) if "mail" in h.lower()), None)
    if email_at is None:
        # No telling header: the column whose values mostly look like addresses.
        if scores and scores.most_common(1)[0][1] >= max(1, sampled // 2):
            email_at = scores.most_common(1)[0][0]
            out.email_column_guessed = True
        else:
            shown = ", ".join(repr(h) for h in header[:20]) + (", ..." if len(header) > 20 else "")
            raise SubscriberError(f"no email column found; columns: {shown or '(none)'}", path=out.source, line=1,
                                  hint="name the column `email` (or `Email Address`) and import again")
    out.email_column = header[email_at]
    layout = _Layout(status, email_at, column_index(header, NAME_COLUMNS), column_index(header, FIRST_COLUMNS),
                     column_index(header, LAST_COLUMNS))
    named = [i for i in (layout.name_at, layout.first_at, layout.last_at) if i is not None]
    out.name_columns = [header[i] for i in named]
    used = {email_at, *named}
    layout.extra = [] if out.headerless else [(i, h) for i, h in enumerate(header) if i not in used and h]
    out.platform, out.status_column = status.platform, status.column_name
    out.status_from_name = status.named is not None
    out.date_columns = [header[i] for i, _ in status.dates]
    return layout


def iter_rows(f: ExportFile) -> Iterator[ExportRow]:
    """The reader rows of a scanned file, streamed one at a time (pass two). Rows without an address and
    malformed rows are counted on `f` instead."""
    layout = f.layout
    assert layout is not None, "scan the file first (read_exports)"
    f.rows, f.empty, f.malformed = 0, 0, Examples()
    width, cell = len(f.header), layout.cell
    with reading(f.origin, Budget()) as lines:
        records = _records(lines, f.source)
        if not f.headerless:
            next(records, None)
        for line, row in records:
            if len(row) <= layout.email_at:
                f.malformed.add((line, f"{len(row)} field(s) where the header has {width}"))
                continue
            if len(row) > width and any(c.strip() for c in row[width:]):
                f.malformed.add((line, f"{len(row)} fields where the header has {width}"))
                continue
            raw = row[layout.email_at].strip()
            if not raw:
                f.empty += 1
                continue
            name = cell(row, layout.name_at) or " ".join(f"{cell(row, layout.first_at)} "
                                                         f"{cell(row, layout.last_at)}".split())
            status, at = layout.status.status(row, raw)
            f.rows += 1
            yield ExportRow(line, raw, name, cell(row, layout.first_at), row, status, at)
