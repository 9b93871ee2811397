"""The append-only unsubscribe ledger: the single source of truth for who must never be mailed again.

Format (subscribers/unsubscribes.csv): header `email,event,at,source,detail`, one event per physical line.
An address is suppressed when its latest event is anything but `resubscribe`; a line that cannot be read
(a torn write, a hand edit) suppresses the address it names. Writers append under a file lock and fsync.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from .errors import LedgerError, Problem
from .files import append_durably
from .tokens import normalize_email

LEDGER_NAME = "unsubscribes.csv"
HEADER = "email,event,at,source,detail"
EVENTS = ("unsubscribe", "bounce", "spamreport", "invalid", "resubscribe")
UNREADABLE = "unreadable"  # the pseudo-event of a line that cannot be read: suppressing
_EVENT = {e: e for e in EVENTS}  # interned event names: a million rows share five strings
LOCK_TIMEOUT = 60.0
_CHUNK = 1 << 20


def ledger_path(root: Path) -> Path:
    """subscribers/unsubscribes.csv under the newsletter root."""
    return root / "subscribers" / LEDGER_NAME


@dataclass(frozen=True)
class Event:
    """One ledger line."""

    email: str
    event: str
    at: str = ""
    source: str = ""
    detail: str = ""


def now_iso() -> str:
    """The current UTC time as the ledger writes it."""
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _clean(value: str) -> str:
    # One event per physical line: that is what makes tailing and torn-line recovery simple.
    return " ".join(str(value).split())


def append_events(path: Path, events: Iterable[Event]) -> int:
    """Append events under the ledger's lock, flushed and fsynced; returns how many were written."""
    from filelock import Timeout

    rows = io.StringIO()
    writer = csv.writer(rows, lineterminator="\n")
    count = 0
    for e in events:
        if e.event not in EVENTS:
            raise LedgerError(f"unknown ledger event `{e.event}` (known: {', '.join(EVENTS)})")
        email = normalize_email(e.email)
        if not email or "\n" in email:
            raise LedgerError(f"not an address: {e.email!r}")
        writer.writerow([email, e.event, e.at or now_iso(), _clean(e.source), _clean(e.detail)])
        count += 1
    if not count:
        return 0
    try:
        append_durably(path, rows.getvalue().encode("utf-8"), header=(HEADER + "\n").encode(),
                       lock_timeout=LOCK_TIMEOUT)
    except Timeout:
        raise LedgerError("the ledger is locked by another process for too long", path=path,
                          hint=f"if no newsletter command is running, delete {path}.lock") from None
    except OSError as exc:
        raise LedgerError(f"cannot append to the ledger: {exc.strerror}", path=path) from None
    return count


def append_event(path: Path, email: str, event: str, source: str = "cli", detail: str = "") -> Event:
    """Append one event; returns it."""
    e = Event(email=normalize_email(email), event=event, at=now_iso(), source=source, detail=detail)
    append_events(path, [e])
    return e


class Ledger:
    """The ledger read into memory: latest event per address, refreshable by tailing the file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.latest: dict[str, str] = {}
        self.problems: list[Problem] = []
        self._offset = 0
        self._line = 0
        self._tail_emails: set[str] = set()  # addresses named by an incomplete last line
        self._reported: set[int] = set()
        self.refresh()

    def refresh(self) -> int:
        """Read lines appended since the last read; returns how many complete lines were read."""
        try:
            fh = open(self.path, "rb")  # noqa: SIM115 - closed below; binary so offsets are exact
        except FileNotFoundError:
            return 0
        except OSError as exc:
            raise LedgerError(f"cannot read the ledger: {exc.strerror}", path=self.path) from None
        read = 0
        tail = b""
        with fh:
            fh.seek(self._offset)
            # Chunked, so a million-event ledger never sits in memory as one string.
            while chunk := fh.read(_CHUNK):
                data = tail + chunk
                end = data.rfind(b"\n") + 1  # only complete lines advance the offset
                if not end:
                    tail = data
                    continue
                read += self._apply(data[:end])
                self._offset += end
                tail = data[end:]
        self._tail_emails = set()
        if tail.strip():
            # A torn (or still being written) last line: suppress what it names, re-read it next time.
            parts = tail.decode("utf-8", errors="replace").split(",")
            email = normalize_email(parts[0].strip('"'))
            if email:
                self._tail_emails.add(email)
            if self._line + 1 not in self._reported:
                self._reported.add(self._line + 1)
                self.problems.append(Problem(
                    "warning", f"torn last line (a write was interrupted): {email or '?'} counted as suppressed",
                    self.path, self._line + 1))
        return read

    def _apply(self, block: bytes) -> int:
        lines = block.decode("utf-8", errors="replace").split("\n")
        lines.pop()  # the block ends in a newline
        latest = self.latest
        number = self._line
        events = _EVENT
        for raw in lines:
            number += 1
            parts = raw.split(",") if '"' not in raw else next(csv.reader([raw]), [])
            if len(parts) == 5 and parts[1] in events:
                latest[parts[0].strip().lower()] = events[parts[1]]
            elif number == 1 and raw.strip().lower().startswith("email,"):
                continue
            elif raw.strip():
                self._unreadable(parts, number, raw)
        self._line = number
        return len(lines)

    def _unreadable(self, parts: list[str], number: int, raw: str) -> None:
        email = normalize_email(parts[0].strip('"')) if parts else ""
        if email:
            self.latest[email] = UNREADABLE  # it is this address's latest event, and it suppresses
        if number not in self._reported:
            self._reported.add(number)
            self.problems.append(Problem("warning", f"unreadable line, counted as suppressing {email or '?'}: "
                                         f"{raw[:60]!r}", self.path, number))

    def is_suppressed(self, email: str) -> bool:
        """Whether mail to `email` (any case, any surrounding space) is forbidden."""
        key = email.strip().lower()
        event = self.latest.get(key)
        return (event is not None and event != "resubscribe") or key in self._tail_emails

    def event_of(self, email: str) -> str | None:
        """The latest event of an address (None when the ledger never named it)."""
        key = normalize_email(email)
        if key in self._tail_emails:
            return UNREADABLE
        return self.latest.get(key)

    def suppressed_counts(self) -> Counter[str]:
        """How many addresses are suppressed, by their latest event."""
        counts: Counter[str] = Counter(e for e in self.latest.values() if e != "resubscribe")
        counts[UNREADABLE] += sum(1 for e in self._tail_emails if self.latest.get(e, "resubscribe") == "resubscribe")
        return +counts


def iter_events(path: Path, kind: str | None = None) -> Iterator[tuple[Event, dt.datetime | None]]:
    """Readable events of the ledger in order (of one kind, if given), each with its time parsed."""
    try:
        fh = open(path, encoding="utf-8", errors="replace", newline="")  # noqa: SIM115 - closed below
    except FileNotFoundError:
        return
    with fh:
        for row in csv.reader(fh):
            if len(row) != 5 or row[1] not in _EVENT or (kind and row[1] != kind):
                continue
            try:
                at: dt.datetime | None = dt.datetime.fromisoformat(row[2])
            except ValueError:
                at = None
            yield Event(row[0].strip().lower(), row[1], row[2], row[3], row[4]), at


def load_ledger(root: Path) -> Ledger:
    """The ledger of the newsletter at `root` (empty when the file does not exist yet)."""
    return Ledger(ledger_path(root))
