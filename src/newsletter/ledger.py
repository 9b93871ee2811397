"""The append-only unsubscribe ledger: the single source of truth for who must never be mailed again.

Format (subscribers/unsubscribes.csv): header `email,event,at,source,detail`, one event per physical line.
An address is suppressed when its latest event is a suppressing one (`unsubscribe`, `bounce`, `spamreport`,
`invalid`); `resubscribe` and `subscribe` (a confirmed double opt-in) lift it. A line that cannot be read but
still names an address (a torn write, a hand edit) suppresses that address; a line whose address cannot be
read at all (the file re-saved as UTF-16 or with `;`) makes the ledger *unreadable*, and `send` refuses.
Writers append under a file lock and fsync.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from .errors import LedgerError, Problem
from .files import append_durably
from .recipients import is_plausible, normalize

LEDGER_NAME = "unsubscribes.csv"
HEADER = "email,event,at,source,detail"
SUPPRESSING = ("unsubscribe", "bounce", "spamreport", "invalid")
LIFTING = ("resubscribe", "subscribe")
EVENTS = SUPPRESSING + LIFTING
UNREADABLE = "unreadable"  # the pseudo-event of a line that cannot be read: suppressing
_EVENT = {e: e for e in EVENTS}  # interned event names: a million rows share six strings
_LIFTING = frozenset(LIFTING)
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


def append_events(path: Path, events: Iterable[Event], what: str = "") -> int:
    """Append events under the ledger's lock, written whole and fsynced; returns how many were written.
    Raises StorageError (naming `what` and the file) when they could not all be written."""
    from filelock import Timeout

    rows = io.StringIO()
    writer = csv.writer(rows, lineterminator="\n")
    count = 0
    first: Event | None = None
    for e in events:
        first = first or e
        if e.event not in EVENTS:
            raise LedgerError(f"unknown ledger event `{e.event}` (known: {', '.join(EVENTS)})")
        email = normalize(e.email)
        if not is_plausible(email):
            raise LedgerError(f"not an address: {e.email!r}")
        writer.writerow([email, e.event, e.at or now_iso(), _clean(e.source), _clean(e.detail)])
        count += 1
    if not count or first is None:
        return 0
    what = what or (f"the {first.event} of {normalize(first.email)}" if count == 1
                    else f"{count} ledger events")
    try:
        append_durably(path, rows.getvalue().encode("utf-8"), header=(HEADER + "\n").encode(),
                       lock_timeout=LOCK_TIMEOUT, what=what)
    except Timeout:
        raise LedgerError("the ledger is locked by another process for too long", path=path,
                          hint=f"if no newsletter command is running, delete {path}.lock") from None
    return count


def append_event(path: Path, email: str, event: str, source: str = "cli", detail: str = "") -> Event:
    """Append one event; returns it."""
    e = Event(email=normalize(email), event=event, at=now_iso(), source=source, detail=detail)
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
        # Lines whose address cannot be read at all: nobody can tell whom they suppress, so `send` refuses.
        self.unreadable: list[Problem] = []
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
            email = normalize(parts[0].strip('"').lstrip("\ufeff"))
            if email and "@" in email:
                self._tail_emails.add(email)
            if self._line + 1 not in self._reported:
                self._reported.add(self._line + 1)
                self.problems.append(Problem(
                    "warning", f"torn last line (a write was interrupted): {email or '?'} counted as suppressed",
                    self.path, self._line + 1))
        return read

    def _apply(self, block: bytes) -> int:
        text = block.decode("utf-8", errors="replace")
        if "\r" in text:  # CRLF, as a spreadsheet saves it: handled once per block, not per line
            text = text.replace("\r\n", "\n")
        lines = text.split("\n")
        lines.pop()  # the block ends in a newline
        if self._line == 0 and lines and lines[0].startswith("\ufeff"):  # a byte-order mark, ditto
            lines[0] = lines[0][1:]
        latest = self.latest
        number = self._line
        events = _EVENT
        norm = normalize  # bound once: this loop runs a million times for a large ledger
        for raw in lines:
            number += 1
            parts = raw.split(",") if '"' not in raw else next(csv.reader([raw]), [])
            if len(parts) == 5 and parts[1] in events and "\ufffd" not in parts[0]:
                latest[norm(parts[0])] = events[parts[1]]
            elif number == 1 and raw.strip().lower().startswith("email,"):
                continue
            elif raw.strip():
                self._unreadable(parts, number, raw)
        self._line = number
        return len(lines)

    def _unreadable(self, parts: list[str], number: int, raw: str) -> None:
        email = normalize(parts[0].strip('"')) if parts else ""
        if number in self._reported:
            return
        self._reported.add(number)
        if is_plausible(email):
            self.latest[email] = UNREADABLE  # it is this address's latest event, and it suppresses
            self.problems.append(Problem("warning", f"unreadable line, counted as suppressing {email}: "
                                         f"{raw[:60]!r}", self.path, number))
        elif _torn_write(raw):
            # What a write cut short by a full disk or a crash leaves, closed by the next append: the command
            # that wrote it failed and said so, so it names nobody who was promised anything.
            self.problems.append(Problem("warning", f"the remains of an interrupted write: {raw[:60]!r}",
                                         self.path, number))
        else:
            self.unreadable.append(Problem("error", f"cannot read the address on this line: {raw[:60]!r}",
                                           self.path, number))

    def check_readable(self) -> None:
        """Raise LedgerError naming the first line whose address cannot be read: mailing with such a ledger
        could mail someone it suppresses."""
        if not self.unreadable:
            return
        first = self.unreadable[0]
        more = f" (and {len(self.unreadable) - 1} more line(s))" if len(self.unreadable) > 1 else ""
        raise LedgerError(
            f"{first.message}{more}: the ledger is not UTF-8 comma-separated CSV, so nobody can tell whom it "
            "suppresses; nothing was sent", path=self.path, line=first.line,
            hint="re-save it as CSV UTF-8 with commas, header `email,event,at,source,detail` (or restore it "
                 "from a backup), then check it with `newsletter subscribers count`")

    def is_suppressed(self, email: str) -> bool:
        """Whether mail to `email` (any case, any surrounding space) is forbidden."""
        return self.is_suppressed_key(normalize(email))

    def is_suppressed_key(self, key: str) -> bool:
        """is_suppressed for an address already normalised (the hot path of a million-reader send)."""
        event = self.latest.get(key)
        return (event is not None and event not in _LIFTING) or key in self._tail_emails

    def event_of(self, email: str) -> str | None:
        """The latest event of an address (None when the ledger never named it)."""
        key = normalize(email)
        if key in self._tail_emails:
            return UNREADABLE
        return self.latest.get(key)

    def suppressed_counts(self) -> Counter[str]:
        """How many addresses are suppressed, by their latest event."""
        counts: Counter[str] = Counter(e for e in self.latest.values() if e not in _LIFTING)
        counts[UNREADABLE] += sum(1 for e in self._tail_emails if self.latest.get(e, "resubscribe") in _LIFTING)
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
            yield Event(normalize(row[0]), row[1], row[2], row[3], row[4]), at


_TORN = re.compile(r'^[^\s,;"\x00\ufffd]*(,[a-z]*(,[0-9T:Z-]*)?)?$')


def _torn_write(raw: str) -> bool:
    """A line that is the start of a well-formed one: part of an address, maybe the start of an event and time.
    A line re-saved with `;` or tabs, in UTF-16 (NULs) or another encoding (U+FFFD) is not."""
    return bool(_TORN.match(raw))


def load_ledger(root: Path) -> Ledger:
    """The ledger of the newsletter at `root` (empty when the file does not exist yet)."""
    return Ledger(ledger_path(root))
