"""The subscriber list: read (streaming), import from other tools' exports, add, export, count."""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import SubscriberError, UsageError
from .exports import MAX_INVALID, SHOW_FIRST, Examples, ExportFile, ExportRow, iter_rows, read_exports
from .files import atomic_writer, file_lock
from .ledger import (
    Event,
    Kind,
    Ledger,
    Outcome,
    Recorded,
    Recording,
    Source,
    imported_from,
    load_ledger,
    now_iso,
)
from .platforms import StatusKind, column_index
from .recipients import Eligibility, bare, is_plausible, normalize, unique, validate

if TYPE_CHECKING:
    from filelock import BaseFileLock

LIST_NAME = "subscribers.csv"


def list_path(root: Path) -> Path:
    """subscribers/subscribers.csv under the newsletter root."""
    return root / "subscribers" / LIST_NAME


def _rows(path: Path) -> Iterator[list[str]]:
    """The list's CSV rows, streamed; a file that is not UTF-8, or a field that runs away (an unclosed quote),
    becomes one SubscriberError naming the line and what to do, never a decoding traceback."""
    try:
        fh = open(path, encoding="utf-8-sig", newline="")  # noqa: SIM115 - closed by the with below
    except FileNotFoundError:
        return
    with fh:
        reader = csv.reader(fh)
        try:
            yield from reader
        except UnicodeDecodeError:
            raise SubscriberError("not UTF-8 text", path=path, line=_first_undecodable_line(path),
                                  hint="re-save as UTF-8 (\"CSV UTF-8\" in Excel or Numbers)") from None
        except csv.Error as exc:
            too_long = "field larger than field limit" in str(exc)
            raise SubscriberError(
                "a field is too long (over 128 KB)" if too_long else f"malformed CSV: {exc}", path=path,
                line=reader.line_num,
                hint="the field is too long: an unclosed quote near this line is the usual cause; fix or remove it"
                if too_long else "an unclosed quote is the usual cause") from None


def _first_undecodable_line(path: Path) -> int:
    with open(path, "rb") as fh:
        for number, raw in enumerate(fh, 1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError:
                return number
    return 1


def _header(rows: Iterator[list[str]], path: Path) -> list[str] | None:
    header = next(rows, None)
    if header is not None and column_index(header, ("email",)) is None:
        raise SubscriberError(f"no `email` column (columns: {', '.join(header)})", path=path, line=1)
    return header


def iter_subscribers(root: Path) -> Iterator[tuple[str, str, str]]:
    """(email, name, first name) of every row of the list, streamed; rows without an address are skipped.
    The first name is the `first_name` column's ("" without one: the greeting takes it from the name)."""
    path = list_path(root)
    rows = _rows(path)
    header = _header(rows, path)
    if header is None:
        return
    email_at = column_index(header, ("email",)) or 0
    name_at = column_index(header, ("name",))
    first_at = column_index(header, ("first_name", "first name"))
    for row in rows:
        if len(row) > email_at and row[email_at].strip():
            name = row[name_at].strip() if name_at is not None and len(row) > name_at else ""
            first = row[first_at].strip() if first_at is not None and len(row) > first_at else ""
            yield row[email_at].strip(), name, first


def read_list(root: Path) -> tuple[list[str], list[list[str]]]:
    """The whole list as (header, rows): for rewriting it."""
    path = list_path(root)
    rows = _rows(path)
    header = _header(rows, path)
    if header is None:
        return ["email", "name"], []
    return header, [row for row in rows if any(cell.strip() for cell in row)]


def write_list(path: Path, header: list[str], rows: Iterator[list[str]] | list[list[str]], *,
               private: bool = True) -> None:
    """Rewrite the list atomically (temp file, fsync, os.replace); created 0600: it holds readers' addresses."""
    with atomic_writer(path, what="the subscriber list", private=private) as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def _lock(root: Path) -> BaseFileLock:
    return file_lock(list_path(root))


@dataclass
class ImportReport:
    """What an import did (or, with --dry-run, would do), for the writer."""

    files: list[ExportFile] = field(default_factory=list)
    dry_run: bool = False
    rows: int = 0
    added: int = 0
    already_present: int = 0
    duplicates: int = 0
    suppressed: Counter[str] = field(default_factory=Counter)  # do-not-mail rows, by the platform's status
    skipped: Counter[str] = field(default_factory=Counter)  # unconfirmed, pending... (not added, not recorded)
    kept_out: Counter[str] = field(default_factory=Counter)  # active rows the ledger already suppresses, by event
    ledger_new: int = 0
    ledger_known: int = 0  # opt-outs the ledger already held (or older than the reader's return)
    pushed: int = 0  # addresses SendGrid was told about
    waiting: str = ""  # why SendGrid has not been told yet
    invalid: Examples[tuple[str, int, str, str]] = field(default_factory=Examples)  # (file, line, value, reason)
    malformed: Examples[tuple[str, int, str]] = field(default_factory=Examples)  # (file, line, what is wrong)
    empty: int = 0

    @property
    def summary(self) -> str:
        """`added 20; suppressed 10 unsubscribed, 10 cleaned (bounced); skipped 3 unconfirmed`."""
        parts = [f"added {self.added}"]
        if self.suppressed:
            parts.append("suppressed " + ", ".join(f"{n} {label}" for label, n in self.suppressed.most_common()))
        if self.skipped:
            parts.append("skipped " + ", ".join(f"{n} {label}" for label, n in self.skipped.most_common()))
        return "; ".join(parts)

    def failure(self) -> SubscriberError | None:
        """The error that ends this import with exit 1, if any: nothing in the files could be used (no reader,
        no opt-out, nothing already there). The report is printed first, so its lines say why."""
        if self.added or self.already_present or self.suppressed or self.skipped or self.kept_out:
            return None
        names = ", ".join(sorted({f.source.split("!", 1)[0] for f in self.files}))
        return SubscriberError("nothing could be imported; the list is unchanged", path=names or None)


@dataclass(slots=True)
class _OptOut:
    event: Kind
    at: str
    platform: str
    label: str
    source: str


def import_exports(root: Path, paths: list[Path], *, dry_run: bool = False) -> ImportReport:
    """Merge exports (files, a zip, a folder) into the list and the ledger.

    Every file is read and checked before anything is written. Opt-outs go to the ledger first (source
    `import:<platform>`, the export's date where it has one), so none of those readers can be mailed by the
    time the list grows; an opt-out in any file beats an active row in another, whatever the order. The list
    is then rewritten atomically with the new active readers. `dry_run` writes nothing."""
    report = ImportReport(dry_run=dry_run, files=read_exports(paths))
    active, opt_outs = _sort_rows(report)
    ledger = _record_opt_outs(root, report, opt_outs)
    _add_readers(root, report, active, opt_outs, ledger)
    return report


def _address(row: ExportRow, source: str, invalid: Examples[tuple[str, int, str, str]]) -> str | None:
    """The row's address as the list keeps it, or None (counted as invalid). A value that is not even
    plausible costs a regex, not email-validator: a file of a million junk lines stays cheap; only the few
    examples the report shows are asked why."""
    if len(invalid.first) >= SHOW_FIRST and not is_plausible(normalize(bare(row.address))):
        invalid.count += 1
        return None
    try:
        return validate(row.address)
    except ValueError as exc:
        invalid.add((source, row.line, row.address, str(exc)))
        return None


Active = dict[str, tuple[str, ExportRow, ExportFile]]


def _sort_rows(report: ImportReport) -> tuple[Active, dict[str, _OptOut]]:
    """Every row of every file, streamed, into readers to add and opt-outs; the rest is counted (skipped,
    invalid, ...). Only the rows kept stay in memory."""
    active: Active = {}
    opt_outs: dict[str, _OptOut] = {}
    skipped: set[str] = set()  # an active row elsewhere wins over an unconfirmed one
    for f in report.files:
        for row in iter_rows(f):
            report.rows += 1
            address = _address(row, f.source, report.invalid)
            if address is None:
                if report.invalid.count > MAX_INVALID and report.invalid.count * 2 > report.rows:
                    raise SubscriberError(f"{report.invalid.count:,} of the {report.rows:,} rows read so far have no "
                                          "valid address: this is not a list of readers; nothing was imported",
                                          path=f.source, hint="check that the file is the list the tool exported")
                continue
            key = normalize(address)
            kind = row.status.kind
            if kind is StatusKind.SUPPRESS:
                assert row.status.event is not None  # an opt-out always names its ledger event
                report.suppressed[row.status.label] += 1
                opt_outs.setdefault(key, _OptOut(row.status.event, row.at, f.platform, row.status.label, f.source))
            elif key in (skipped if kind is StatusKind.SKIP else active):
                report.duplicates += 1
            elif kind is StatusKind.SKIP:
                report.skipped[row.status.label] += 1
                skipped.add(key)
            else:
                active[key] = (address, row, f)
        for line, what in f.malformed.first:
            report.malformed.add((f.source, line, what))
        report.malformed.count += f.malformed.count - len(f.malformed.first)
        report.empty += f.empty
    return active, opt_outs


def _record_opt_outs(root: Path, report: ImportReport, opt_outs: dict[str, _OptOut]) -> Ledger:
    """Record the opt-outs through the ledger, dated from the export (one older than the reader's return to us
    changes nothing); returns the ledger as it now reads. A dry run only asks what would be written."""
    from .suppressions import open_ledger

    ledger = load_ledger(root) if report.dry_run else open_ledger(root)
    events = [Event(key, Kind(o.event), o.at, imported_from(o.platform),
                    f"{o.label} in {Path(o.source.rsplit('!', 1)[-1]).name}") for key, o in opt_outs.items()]
    if report.dry_run:
        results = ledger.preview(events)
    else:
        recording = ledger.record(events, what=f"{len(events)} opt-out(s) from the import")
        results, report.pushed, report.waiting = recording.results, recording.pushed, recording.waiting
    report.ledger_new = sum(r.outcome is Outcome.RECORDED for r in results)
    report.ledger_known = len(results) - report.ledger_new
    return ledger


def _add_readers(root: Path, report: ImportReport, active: Active, opt_outs: dict[str, _OptOut],
                 ledger: Ledger) -> None:
    """Add the active readers who are new and not suppressed; the list is rewritten atomically once."""
    with nullcontext() if report.dry_run else _lock(root):  # a dry run leaves not even a lock file behind
        header, rows = read_list(root)
        email_at = column_index(header, ("email",)) or 0
        present = {normalize(r[email_at]) for r in rows if len(r) > email_at}
        columns = {h.lower(): j for j, h in enumerate(header)}

        def column(name: str) -> int:
            if name.lower() not in columns:
                columns[name.lower()] = len(header)
                header.append(name)
            return columns[name.lower()]

        new_rows: list[dict[int, str]] = []
        plans: dict[int, list[tuple[int, int]]] = {}  # per file: (list column, file column) of its other columns
        for key, (address, row, f) in active.items():
            if key in present:
                report.already_present += 1
            elif key in opt_outs:
                continue
            elif ledger.is_suppressed(key):
                report.kept_out[ledger.event_of(key) or "?"] += 1
            else:
                cells = {column("email"): address, column("name"): row.name}
                if row.first_name:
                    cells[column("first_name")] = row.first_name
                plan = plans.get(id(f))
                if plan is None:
                    plan = plans[id(f)] = [(column(h), i) for i, h in f.extra_columns()]
                width = len(row.cells)
                cells.update((j, row.cells[i].strip()) for j, i in plan if i < width)
                new_rows.append(cells)
        report.added = len(new_rows)
        if new_rows and not report.dry_run:
            width = len(header)
            out = [r + [""] * (width - len(r)) for r in rows] + [[c.get(i, "") for i in range(width)] for c in new_rows]
            write_list(list_path(root), header, out)


def add_subscriber(root: Path, email: str, name: str = "") -> str:
    """Add one address; refuses an invalid, present or suppressed one. Returns the stored address."""
    try:
        address = validate(email)
    except ValueError as exc:
        raise SubscriberError(f"not a valid address: {email!r} ({exc})") from None
    key = normalize(address)
    ledger = load_ledger(root)
    if ledger.is_suppressed(key):
        raise SubscriberError(
            f"{address} is suppressed in the ledger (latest event: {ledger.event_of(key)})",
            hint=f"only they can ask to come back: then `newsletter resubscribe {address}`")
    if not _append_reader(root, address, {"name": " ".join(name.split())}):
        raise SubscriberError(f"{address} is already on the list", path=list_path(root))
    return address


def add_confirmed(root: Path, email: str, first_name: str = "") -> bool:
    """Put a reader who confirmed their sign-up on the list (atomically, under the list's lock); False when
    they are on it already. Suppression is the ledger's business: the caller records the consent there."""
    return _append_reader(root, email, {"name": first_name, "first_name": first_name})


def _append_reader(root: Path, address: str, cells: dict[str, str]) -> bool:
    """Add one row under the list's lock, rewriting it atomically; False (nothing written) when present."""
    key = normalize(address)
    with _lock(root):
        header, rows = read_list(root)
        email_at = column_index(header, ("email",)) or 0
        if any(normalize(r[email_at]) == key for r in rows if len(r) > email_at):
            return False
        for column in cells:
            if column_index(header, (column,)) is None:
                header.append(column)
        row = [""] * len(header)
        row[email_at] = address
        for column, value in cells.items():
            row[column_index(header, (column,)) or 0] = value
        write_list(list_path(root), header, [r + [""] * (len(header) - len(r)) for r in rows] + [row])
    return True


@dataclass
class ListCounts:
    """Active, suppressed (by event) and total addresses of the list."""

    total: int
    active: int
    suppressed: Counter[str]
    duplicates: int
    ledger_problems: list[str] = field(default_factory=list)
    opted_out_elsewhere: int = 0  # suppressed in the ledger, not on the list


def count_subscribers(root: Path) -> ListCounts:
    """Count the list against the ledger."""
    ledger = load_ledger(root)
    tally = Eligibility()
    total = active = 0
    suppressed: Counter[str] = Counter()
    listed: set[int] = set()  # hashes: a million readers cost a few megabytes
    for key, *_ in unique(iter_subscribers(root), tally):
        total += 1
        listed.add(hash(key))
        if ledger.is_suppressed(key):
            suppressed[ledger.event_of(key) or "?"] += 1
        else:
            active += 1
    # Opt-outs of addresses not on the list (an old tool's unsubscribed readers): what reconciles with its counts.
    elsewhere = sum(1 for k in ledger.addresses() if hash(k) not in listed and ledger.is_suppressed_key(k))
    return ListCounts(total=total, active=active, suppressed=suppressed, duplicates=tally.duplicates,
                      ledger_problems=[str(p) for p in ledger.problems], opted_out_elsewhere=elsewhere)


def iter_listing(root: Path, *, suppressed: bool) -> Iterator[tuple[str, str, str]]:
    """(email, name, latest event) of active readers, or of suppressed ones."""
    ledger = load_ledger(root)
    for key, email, name, _ in unique(iter_subscribers(root)):
        if ledger.is_suppressed(key) == suppressed:
            yield email, name, ledger.event_of(key) or ""


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _neutralise(cell: str) -> str:
    # OWASP's advice against CSV injection: a spreadsheet must not run a cell that starts like a formula.
    return "'" + cell if cell.startswith(_FORMULA_START) else cell


def export_subscribers(root: Path, target: Path, *, include_suppressed: bool = False) -> int:
    """Write the active readers (all columns) to `target` atomically; returns how many rows. Cells that a
    spreadsheet would run as a formula get a leading `'`."""
    header, rows = read_list(root)
    email_at = column_index(header, ("email",)) or 0
    ledger = load_ledger(root)
    keep = [[_neutralise(c) for c in r] for r in rows
            if len(r) > email_at and (include_suppressed or not ledger.is_suppressed(r[email_at]))]
    write_list(target, [_neutralise(h) for h in header], keep)
    return len(keep)


@dataclass(frozen=True)
class LedgerChange:
    """What `unsubscribe`/`resubscribe` did for one address: the ledger's outcome, and whether it is on the list."""

    result: Recorded
    on_list: bool


def record_ledger_events(root: Path, addresses: Iterable[str], event: Kind, *, detail: str = "",
                         source: str = Source.CLI) -> tuple[list[LedgerChange], Recording]:
    """Record `event` for each address through the ledger (which writes only what changes something, then tells
    SendGrid). Raises UsageError for a non-address (before anything is written) and StorageError when the line
    could not be written whole."""
    from .suppressions import open_ledger

    keys: list[str] = []
    for raw in addresses:
        key = normalize(bare(raw))
        if not is_plausible(key):
            raise UsageError(f"not an address: {raw!r}")
        if key not in keys:
            keys.append(key)
    wanted = set(keys)
    on_list = {k for k, *_ in unique(iter_subscribers(root)) if k in wanted}
    at = now_iso()
    recording = open_ledger(root, strict=False).record([Event(k, event, at, source, detail) for k in keys])
    return [LedgerChange(r, r.event.email in on_list) for r in recording.results], recording


def remove_subscribers(root: Path, addresses: Iterable[str]) -> tuple[list[str], list[str]]:
    """Take readers off the list (their ledger history stays); returns (removed, not on the list)."""
    keys = {normalize(bare(a)) for a in addresses}
    with _lock(root):
        header, rows = read_list(root)
        email_at = column_index(header, ("email",)) or 0
        keep, removed = [], []
        for row in rows:
            key = normalize(row[email_at]) if len(row) > email_at else ""
            if key in keys:
                removed.append(key)
            else:
                keep.append(row)
        if removed:
            write_list(list_path(root), header, keep)
    found = set(removed)
    return sorted(found), sorted(keys - found)
