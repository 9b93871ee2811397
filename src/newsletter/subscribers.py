"""The subscriber list: read (streaming), import from other tools' exports, add, export, count."""

from __future__ import annotations

import csv
import io
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import SubscriberError
from .files import atomic_writer
from .ledger import Ledger, load_ledger
from .tokens import normalize_email

if TYPE_CHECKING:
    from filelock import BaseFileLock

LIST_NAME = "subscribers.csv"
# Column names used by the tools writers leave: Mailchimp, Substack, Buttondown, Kit/ConvertKit, Ghost...
EMAIL_COLUMNS = ("email", "email address", "e-mail", "email_address", "emailaddress", "e-mail address",
                 "subscriber email", "subscriber", "mail")
NAME_COLUMNS = ("name", "full name", "full_name", "fullname", "display name", "subscriber name")
FIRST_COLUMNS = ("first name", "first_name", "firstname", "fname", "given name")
LAST_COLUMNS = ("last name", "last_name", "lastname", "lname", "surname", "family name")
LOOKS_LIKE_EMAIL = re.compile(r"^\s*[^@\s,;]+@[^@\s,;]+\.[^@\s,;]+\s*$")
SHOW_FIRST = 5


def list_path(root: Path) -> Path:
    """subscribers/subscribers.csv under the newsletter root."""
    return root / "subscribers" / LIST_NAME


@dataclass
class Subscriber:
    """One row of the list: the address, the name, and any other columns as they were."""

    email: str
    name: str = ""
    extra: dict[str, str] = field(default_factory=dict)


def _column_index(header: list[str], names: tuple[str, ...]) -> int | None:
    lowered = [h.strip().lower().lstrip("\ufeff") for h in header]
    for name in names:
        if name in lowered:
            return lowered.index(name)
    return None


def iter_subscribers(root: Path) -> Iterator[tuple[str, str]]:
    """(email, name) of every row of the list, streamed; rows without an address are skipped."""
    path = list_path(root)
    try:
        fh = open(path, encoding="utf-8-sig", newline="")  # noqa: SIM115 - closed in finally
    except FileNotFoundError:
        return
    with fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None:
            return
        email_at = _column_index(header, ("email",))
        if email_at is None:
            raise SubscriberError(f"no `email` column (columns: {', '.join(header)})", path=path, line=1)
        name_at = _column_index(header, ("name",))
        for row in reader:
            if len(row) > email_at and row[email_at].strip():
                name = row[name_at] if name_at is not None and len(row) > name_at else ""
                yield row[email_at].strip(), name.strip()


def read_list(root: Path) -> tuple[list[str], list[list[str]]]:
    """The whole list as (header, rows): for rewriting it."""
    path = list_path(root)
    if not path.exists():
        return ["email", "name"], []
    with open(path, encoding="utf-8-sig", newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader, ["email", "name"])
        if _column_index(header, ("email",)) is None:
            raise SubscriberError(f"no `email` column (columns: {', '.join(header)})", path=path, line=1)
        return header, [row for row in reader if any(cell.strip() for cell in row)]


def write_list(path: Path, header: list[str], rows: Iterator[list[str]] | list[list[str]]) -> None:
    """Rewrite the list atomically (temp file, fsync, os.replace)."""
    with atomic_writer(path) as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def _lock(root: Path) -> BaseFileLock:
    from filelock import FileLock

    return FileLock(str(list_path(root)) + ".lock", timeout=60)


def _bare_address(raw: str) -> str:
    """`Ada <ada@x.net>` and `mailto:ada@x.net` (as some exports write them) -> `ada@x.net`."""
    raw = raw.strip()
    if raw.lower().startswith("mailto:"):
        raw = raw[7:].split("?", 1)[0]
    if raw.endswith(">") and "<" in raw:
        raw = raw[raw.rindex("<") + 1:-1]
    return raw.strip()


def validate_address(raw: str) -> str:
    """The normalised address, or raises ValueError with the reason (syntax only, no DNS)."""
    from email_validator import EmailNotValidError, validate_email

    try:
        return str(validate_email(_bare_address(raw), check_deliverability=False).normalized)
    except EmailNotValidError as exc:
        raise ValueError(str(exc)) from None


@dataclass
class ImportReport:
    """What an import did, for the writer."""

    source: Path
    encoding: str = "utf-8"
    delimiter: str = ","
    email_column: str = ""
    email_column_guessed: bool = False
    headerless: bool = False
    name_columns: list[str] = field(default_factory=list)
    rows: int = 0
    added: int = 0
    already_present: int = 0
    duplicates: int = 0
    suppressed: int = 0
    suppressed_by: Counter[str] = field(default_factory=Counter)
    invalid: list[tuple[int, str, str]] = field(default_factory=list)  # (line, value, reason)
    malformed: list[tuple[int, str]] = field(default_factory=list)  # (line, what is wrong)
    empty: int = 0


def _decode(data: bytes, path: Path) -> tuple[str, str]:
    if not data.strip():
        raise SubscriberError("the file is empty", path=path)
    if b"\x00" in data[:8192]:
        if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
            try:
                return data.decode("utf-16"), "utf-16"
            except UnicodeDecodeError:
                pass
        raise SubscriberError("this is a binary file, not CSV", path=path,
                              hint="export the list as CSV (comma, semicolon or tab separated)")
    try:
        return data.decode("utf-8-sig"), "utf-8"
    except UnicodeDecodeError:
        # Excel on Windows writes cp1252; bytes it leaves undefined are kept as replacement characters
        return data.decode("cp1252", errors="replace"), "windows-1252"


def _delimiter(text: str) -> str:
    first = text.split("\n", 1)[0]
    counts = {d: first.count(d) for d in (",", ";", "\t")}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] else ","


def import_file(root: Path, source: Path) -> ImportReport:
    """Merge an export into the list; the list is rewritten atomically and only when something is added."""
    try:
        data = source.read_bytes()
    except FileNotFoundError:
        raise SubscriberError("file not found", path=source) from None
    except IsADirectoryError:
        raise SubscriberError("this is a folder, not a CSV file", path=source) from None
    except OSError as exc:
        raise SubscriberError(f"cannot read: {exc.strerror}", path=source) from None
    text, encoding = _decode(data, source)
    report = ImportReport(source=source, encoding=encoding, delimiter=_delimiter(text))
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=report.delimiter)
    try:
        header = next(reader)
    except (StopIteration, csv.Error) as exc:
        raise SubscriberError(f"cannot read a header row: {exc}", path=source, line=1) from None
    header = [h.strip().lstrip("\ufeff") for h in header]
    try:
        records = [(reader.line_num, row) for row in reader]
    except csv.Error as exc:
        raise SubscriberError(f"malformed CSV: {exc}", path=source, line=reader.line_num,
                              hint="an unclosed quote is the usual cause") from None

    if any(LOOKS_LIKE_EMAIL.match(h) for h in header):
        # No header row: the first line is a reader too.
        records.insert(0, (1, header))
        header = [f"column {i + 1}" for i in range(max(len(r) for _, r in records))]
        report.headerless = True
    email_at = _column_index(header, EMAIL_COLUMNS)
    if email_at is None:
        email_at = next((i for i, h in enumerate(header) if "mail" in h.lower()), None)
    if email_at is None:
        # No telling header: the column whose values mostly look like addresses.
        sample = records[:200]
        scores = Counter(i for _, row in sample for i, v in enumerate(row) if LOOKS_LIKE_EMAIL.match(v))
        if scores and scores.most_common(1)[0][1] >= max(1, len(sample) // 2):
            email_at = scores.most_common(1)[0][0]
            report.email_column_guessed = True
        else:
            raise SubscriberError(
                f"no email column found; columns: {', '.join(repr(h) for h in header) or '(none)'}",
                path=source, line=1, hint="name the column `email` (or `Email Address`) and import again")
    report.email_column = header[email_at] if email_at < len(header) else f"column {email_at + 1}"
    name_at = _column_index(header, NAME_COLUMNS)
    first_at = _column_index(header, FIRST_COLUMNS)
    last_at = _column_index(header, LAST_COLUMNS)
    report.name_columns = [header[i] for i in (name_at, first_at, last_at) if i is not None]

    ledger: Ledger = load_ledger(root)
    with _lock(root):
        list_header, list_rows = read_list(root)
        list_email_at = _column_index(list_header, ("email",)) or 0
        list_name_at = _column_index(list_header, ("name",))
        if list_name_at is None:
            list_header.append("name")
            list_name_at = len(list_header) - 1
        present = {normalize_email(r[list_email_at]) for r in list_rows if len(r) > list_email_at}
        # Other columns of the export are kept: append the ones the list lacks.
        used = {email_at, name_at, first_at, last_at}
        extra_cols = [(i, h) for i, h in enumerate(header) if i not in used and h]
        known = {h.lower(): j for j, h in enumerate(list_header)}
        for _, h in extra_cols:
            if h.lower() not in known:
                known[h.lower()] = len(list_header)
                list_header.append(h)
        width = len(list_header)
        seen: set[str] = set()
        new_rows: list[list[str]] = []
        for line, row in records:
            if not any(cell.strip() for cell in row):
                continue
            report.rows += 1
            extra_cells = row[len(header):]
            if len(row) < len(header) and len(row) <= email_at:
                report.malformed.append((line, f"{len(row)} field(s) where the header has {len(header)}"))
                continue
            if len(row) > len(header) and any(c.strip() for c in extra_cells):
                report.malformed.append((line, f"{len(row)} fields where the header has {len(header)}"))
                continue
            raw = row[email_at].strip()
            if not raw:
                report.empty += 1
                continue
            try:
                address = validate_address(raw)
            except ValueError as exc:
                report.invalid.append((line, raw, str(exc)))
                continue
            key = normalize_email(address)
            if key in seen:
                report.duplicates += 1
                continue
            seen.add(key)
            if key in present:
                report.already_present += 1
                continue
            if ledger.is_suppressed(key):
                report.suppressed += 1
                report.suppressed_by[ledger.event_of(key) or "?"] += 1
                continue
            name = _name(row, name_at, first_at, last_at)
            out = [""] * width
            out[list_email_at] = address
            out[list_name_at] = name
            for i, h in extra_cols:
                if i < len(row):
                    out[known[h.lower()]] = row[i].strip()
            new_rows.append(out)
        report.added = len(new_rows)
        if new_rows:
            padded = [r + [""] * (width - len(r)) for r in list_rows]
            write_list(list_path(root), list_header, padded + new_rows)
    return report


def _name(row: list[str], name_at: int | None, first_at: int | None, last_at: int | None) -> str:
    def cell(i: int | None) -> str:
        return row[i].strip() if i is not None and i < len(row) else ""

    return " ".join(cell(name_at).split()) or " ".join(f"{cell(first_at)} {cell(last_at)}".split())


def add_subscriber(root: Path, email: str, name: str = "") -> str:
    """Add one address; refuses an invalid, present or suppressed one. Returns the stored address."""
    try:
        address = validate_address(email)
    except ValueError as exc:
        raise SubscriberError(f"not a valid address: {email!r} ({exc})") from None
    key = normalize_email(address)
    ledger = load_ledger(root)
    if ledger.is_suppressed(key):
        raise SubscriberError(
            f"{address} is suppressed in the ledger (latest event: {ledger.event_of(key)})",
            hint=f"only they can ask to come back: then `newsletter resubscribe {address}`")
    with _lock(root):
        header, rows = read_list(root)
        email_at = _column_index(header, ("email",)) or 0
        if any(normalize_email(r[email_at]) == key for r in rows if len(r) > email_at):
            raise SubscriberError(f"{address} is already on the list", path=list_path(root))
        name_at = _column_index(header, ("name",))
        if name_at is None:
            header.append("name")
            name_at = len(header) - 1
        row = [""] * len(header)
        row[email_at], row[name_at] = address, " ".join(name.split())
        write_list(list_path(root), header, [r + [""] * (len(header) - len(r)) for r in rows] + [row])
    return address


@dataclass
class ListCounts:
    """Active, suppressed (by event) and total addresses of the list."""

    total: int
    active: int
    suppressed: Counter[str]
    duplicates: int
    ledger_problems: list[str] = field(default_factory=list)


def iter_unique_subscribers(root: Path, counts: dict[str, int] | None = None) -> Iterator[tuple[str, str, str]]:
    """(key, email, name) of each reader once: `key` is the address trimmed and lower-cased; a later row with
    the same key is skipped and counted in counts["dups"]. Memory: one hash per reader."""
    seen: set[int] = set()
    for email, name in iter_subscribers(root):
        key = email.strip().lower()
        h = hash(key)  # str caches its hash: callers hashing `key` again pay nothing
        if h in seen:
            if counts is not None:
                counts["dups"] = counts.get("dups", 0) + 1
            continue
        seen.add(h)
        yield key, email, name


def count_subscribers(root: Path) -> ListCounts:
    """Count the list against the ledger."""
    ledger = load_ledger(root)
    counts = {"dups": 0}
    total = active = 0
    suppressed: Counter[str] = Counter()
    for key, _, _ in iter_unique_subscribers(root, counts):
        total += 1
        if ledger.is_suppressed(key):
            suppressed[ledger.event_of(key) or "?"] += 1
        else:
            active += 1
    return ListCounts(total=total, active=active, suppressed=suppressed, duplicates=counts["dups"],
                      ledger_problems=[str(p) for p in ledger.problems])


def iter_listing(root: Path, *, suppressed: bool) -> Iterator[tuple[str, str, str]]:
    """(email, name, latest event) of active readers, or of suppressed ones."""
    ledger = load_ledger(root)
    for key, email, name in iter_unique_subscribers(root):
        if ledger.is_suppressed(key) == suppressed:
            yield email, name, ledger.event_of(key) or ""


def export_subscribers(root: Path, target: Path, *, include_suppressed: bool = False) -> int:
    """Write the active readers (all columns) to `target` atomically; returns how many rows."""
    header, rows = read_list(root)
    email_at = _column_index(header, ("email",)) or 0
    ledger = load_ledger(root)
    keep = [r for r in rows if len(r) > email_at and (include_suppressed or not ledger.is_suppressed(r[email_at]))]
    write_list(target, header, keep)
    return len(keep)
