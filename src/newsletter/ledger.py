"""The opt-out model: the append-only ledger, the one rule that says who may be mailed, and what must follow a
write (SendGrid's suppression lists made to agree with it).

Format (subscribers/unsubscribes.csv): header `email,event,at,source,detail`, one event per physical line,
appended whole and fsynced under `<file>.lock`. Nothing else in the package spells this format.

The rule. An address's state is its latest event by `at` (ties: file order). `unsubscribe`, `bounce`,
`spamreport` and `invalid` suppress; `resubscribe` (the reader asked to come back) lifts; `subscribe` (a
confirmed double opt-in, its detail starting `signed up <when>`) lifts only when the sign-up it confirms was
asked for after the latest suppressing event: an older confirmation link never lifts. A line that cannot be
read but still names an address (a torn write, a hand edit) suppresses that address, as of the latest time
before it; a line whose address cannot be read at all (the file re-saved as UTF-16 or with `;`) makes the
ledger *unreadable*, and every reader of it refuses (`check_readable`).

Writers go through `Ledger.record` only: under the lock it reads what others appended, writes only the events
that change something (a second unsubscribe writes nothing), fsyncs, then follows the write: SendGrid's
suppression lists are told (see `suppressions.py`; the queue is the ledger itself beyond a pushed offset, so what
cannot be pushed now waits, durably, for the next push).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from .errors import LedgerError, Problem
from .files import LOCK_TIMEOUT, append_durably, file_lock
from .recipients import is_plausible, normalize

LEDGER_NAME = "unsubscribes.csv"
HEADER = "email,event,at,source,detail"
_CHUNK = 1 << 20


class Kind(StrEnum):
    """The ledger's event vocabulary."""

    UNSUBSCRIBE = "unsubscribe"
    BOUNCE = "bounce"
    SPAMREPORT = "spamreport"
    INVALID = "invalid"
    RESUBSCRIBE = "resubscribe"
    SUBSCRIBE = "subscribe"
    UNREADABLE = "unreadable"  # never written: a line that names an address but cannot be read

    @property
    def suppresses(self) -> bool:
        """Whether this event forbids mail (every event but the two that lift)."""
        return self not in (Kind.RESUBSCRIBE, Kind.SUBSCRIBE)

    @property
    def opt_out(self) -> bool:
        """The reader's own choice not to be mailed: what SendGrid's unsubscribe lists must hold."""
        return self in (Kind.UNSUBSCRIBE, Kind.SPAMREPORT)


WRITTEN = tuple(k for k in Kind if k is not Kind.UNREADABLE)
_BY_NAME = {k.value: k for k in WRITTEN}
_KINDS = list(Kind)
_CODE = {k: i for i, k in enumerate(_KINDS)}


class Source(StrEnum):
    """Who recorded an event (an import's source is `import:<platform>`: see `imported_from`)."""

    CLI = "cli"
    PAGE = "page"
    ONE_CLICK = "one-click"
    SIGNUP = "signup"
    SENDGRID = "sendgrid"
    IMPORT = "import"


def imported_from(platform: str) -> str:
    """The source of opt-outs found in another tool's export."""
    return f"{Source.IMPORT}:{platform}"


def ledger_path(root: Path) -> Path:
    """subscribers/unsubscribes.csv under the newsletter root."""
    return root / "subscribers" / LEDGER_NAME


def now_iso() -> str:
    """The current UTC time as the ledger writes it."""
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def iso(when: float | dt.datetime) -> str:
    """A time (unix seconds or an aware datetime) as the ledger writes it."""
    if not isinstance(when, dt.datetime):
        when = dt.datetime.fromtimestamp(when, dt.UTC)
    return when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Event:
    """One ledger line. `at` empty means now (filled by `record`); `signed_up` is a `subscribe`'s sign-up time,
    written at the head of its detail."""

    email: str
    event: Kind
    at: str = ""
    source: str = Source.CLI
    detail: str = ""
    signed_up: str = ""

    def __post_init__(self) -> None:
        kind = _BY_NAME.get(str(self.event))
        if kind is None:
            raise LedgerError(f"unknown ledger event `{self.event}` (known: {', '.join(WRITTEN)})")
        object.__setattr__(self, "event", kind)

    def row(self) -> list[str]:
        """The CSV fields, one event per physical line."""
        detail = _clean(self.detail)
        if self.event is Kind.SUBSCRIBE:
            detail = f"signed up {self.signed_up or self.at}" + (f"; {detail}" if detail else "")
        return [self.email, self.event.value, self.at, _clean(str(self.source)), detail]


def _clean(value: str) -> str:
    # One event per physical line: that is what makes tailing and torn-line recovery simple.
    return " ".join(str(value).split())


_SIGNED_UP = re.compile(r"signed up (\S+?)(?=[;,\s]|$)")
_EPOCH = dt.datetime(1970, 1, 1)


def _seconds(at: str) -> int | None:
    """Unix seconds of a ledger time (`2026-12-01T07:53:00Z`, or any ISO 8601), None when it is not one."""
    try:
        when = dt.datetime.fromisoformat(at)
    except ValueError:
        return None
    if when.tzinfo is not None:
        when = when.astimezone(dt.UTC).replace(tzinfo=None)
    return int((when - _EPOCH).total_seconds())


def canonical_time(at: str) -> str:
    """An ISO 8601 time as the ledger writes it; "" when it is not one."""
    secs = _seconds(at.strip()) if at else None
    return "" if secs is None else iso(secs)


# Each address's state, packed into ints: a million-event ledger must load in about a second and fit in
# memory. The latest suppressing event is `(seconds << 35) | (line << 4) | from_sendgrid << 3 | kind`; ordering
# these ints orders events by time, then file order. A lift is `(position << 35) | signed_up_seconds`, where position is
# `(seconds << 31) | line` and signed_up 0 means "lifts whatever came before" (a resubscribe).
_LINE_BITS, _KIND_BITS, _SIGNED_BITS = 31, 4, 35
_FROM_SENDGRID = 8  # the flag bit in the low bits of a suppression
_SIGNED_MASK = (1 << _SIGNED_BITS) - 1


def _lift_applies(lifts: int | list[int] | None, supp: int) -> bool:
    """Whether a lift came after the latest suppressing event `supp` and may lift it."""
    if lifts is None:
        return False
    position, at = supp >> _KIND_BITS, supp >> (_LINE_BITS + _KIND_BITS)
    for lift in lifts if isinstance(lifts, list) else (lifts,):
        signed = lift & _SIGNED_MASK
        if lift >> _SIGNED_BITS > position and (signed == 0 or signed > at):
            return True
    return False


class Outcome(StrEnum):
    """What recording one event did."""

    RECORDED = "recorded"  # written
    UNCHANGED = "unchanged"  # not written: the ledger already says so (or says something newer)
    STALE = "stale"  # not written: confirms a sign-up asked for before the reader's latest opt-out


@dataclass(frozen=True)
class Recorded:
    """One event's outcome, and the address's latest event before it (None: the ledger never named it)."""

    event: Event
    outcome: Outcome
    previous: Kind | None


@dataclass
class Recording:
    """What `record` did: each event's outcome, and whether SendGrid has been told."""

    results: list[Recorded] = field(default_factory=list)
    pushed: int = 0  # addresses SendGrid was told about
    waiting: str = ""  # why SendGrid has not been told yet ("" when it has, or nothing had to be told)

    @property
    def written(self) -> list[Event]:
        """The events appended."""
        return [r.event for r in self.results if r.outcome is Outcome.RECORDED]


Follower = Callable[["Ledger"], tuple[int, str]]


class Ledger:
    """The ledger read into memory (each address's state), refreshable by tailing the file, and its one writer."""

    def __init__(self, path: Path, *, follow: Follower | None = None, lock_timeout: float = LOCK_TIMEOUT) -> None:
        self.path = path
        self.lock_timeout = lock_timeout  # seconds `record` waits for another writer before it gives up
        self.follow = follow  # what must follow a write (suppressions.py): pushes, returns (pushed, why waiting)
        self._supp: dict[str, int] = {}
        self._lifts: dict[str, int | list[int]] = {}
        self._tail: set[str] = set()  # addresses named by an incomplete last line
        self._max = 0  # the latest time read: a line without a readable time sorts there
        self._last_at, self._last_secs = "", 0
        self.problems: list[Problem] = []
        self.unreadable: list[Problem] = []  # lines whose address cannot be read: nobody can tell whom they name
        self._reported: set[int] = set()
        self.offset = 0  # bytes of complete lines read
        self._line = 0
        self._mutex = threading.RLock()  # `serve` shares one ledger between threads: one reader of the tail
        self.refresh()

    @property
    def root(self) -> Path:
        """The newsletter folder this ledger belongs to."""
        return self.path.parent.parent

    # -- reading --------------------------------------------------------------------------------------------
    def refresh(self) -> int:
        """Read lines appended since the last read; returns how many complete lines were read."""
        with self._mutex:
            return self._refresh()

    def _refresh(self) -> int:
        try:
            fh = open(self.path, "rb")  # noqa: SIM115 - closed below; binary so offsets are exact
        except FileNotFoundError:
            return 0
        except OSError as exc:
            raise LedgerError(f"cannot read the ledger: {exc.strerror}", path=self.path) from None
        read = 0
        tail = b""
        with fh:
            fh.seek(self.offset)
            # Chunked, so a million-event ledger never sits in memory as one string.
            while chunk := fh.read(_CHUNK):
                data = tail + chunk
                end = data.rfind(b"\n") + 1  # only complete lines advance the offset
                if not end:
                    tail = data
                    continue
                read += self._apply(data[:end])
                self.offset += end
                tail = data[end:]
        self._torn_tail(tail)
        return read

    def _torn_tail(self, tail: bytes) -> None:
        self._tail = set()
        if not tail.strip():
            return
        # A torn (or still being written) last line: suppress what it names, re-read it once it is whole.
        email = normalize(tail.decode("utf-8", errors="replace").split(",")[0].lstrip("\ufeff").strip('"'))
        if is_plausible(email):
            self._tail.add(email)
        if self._line + 1 not in self._reported:
            self._reported.add(self._line + 1)
            self.problems.append(Problem(
                "warning", f"torn last line (a write was interrupted): {email or '?'} counted as suppressed",
                self.path, self._line + 1))

    def _apply(self, block: bytes) -> int:
        text = block.decode("utf-8", errors="replace")
        if "\r" in text:  # CRLF, as a spreadsheet saves it: handled once per block, not per line
            text = text.replace("\r\n", "\n")
        lines = text.split("\n")
        lines.pop()  # the block ends in a newline
        if self._line == 0 and lines and lines[0].startswith("\ufeff"):  # a byte-order mark, ditto
            lines[0] = lines[0][1:]
        number = self._line
        kinds, norm, add = _BY_NAME, normalize, self._add  # bound once: a million iterations
        for raw in lines:
            number += 1
            parts = raw.split(",") if '"' not in raw else _csv_fields(raw)
            if len(parts) == 5 and (kind := kinds.get(parts[1])) is not None and "\ufffd" not in parts[0]:
                at = self._secs(parts[2])
                signed = at
                if kind is Kind.SUBSCRIBE and (m := _SIGNED_UP.match(parts[4])):
                    signed = self._secs(m.group(1))
                add(norm(parts[0]), kind, at, number, signed, parts[3] == Source.SENDGRID)
            elif number == 1 and raw.strip().lower().startswith("email,"):
                continue
            elif raw.strip():
                self._unreadable(parts, number, raw)
        self._line = number
        return len(lines)

    def _secs(self, at: str) -> int:
        if at == self._last_at:  # consecutive lines often share their second (a batch, an import)
            return self._last_secs
        secs = _seconds(at)
        if secs is None or secs <= 0:
            return self._max  # a hand-edited time: as late as what came before it
        self._last_at, self._last_secs = at, secs
        return secs

    def _add(self, key: str, kind: Kind, at: int, line: int, signed: int, from_sendgrid: bool = False) -> None:
        if at > self._max:
            self._max = at
        if kind.suppresses:
            packed = (((at << _LINE_BITS) | line) << _KIND_BITS) | _CODE[kind]
            if from_sendgrid:
                packed |= _FROM_SENDGRID
            old = self._supp.get(key)
            if old is None or packed > old:
                self._supp[key] = packed
            return
        lift = (((at << _LINE_BITS) | line) << _SIGNED_BITS) | (0 if kind is Kind.RESUBSCRIBE else max(signed, 1))
        old_lifts = self._lifts.get(key)
        if old_lifts is None:
            self._lifts[key] = lift
        elif isinstance(old_lifts, list):
            old_lifts.append(lift)
        else:
            self._lifts[key] = [old_lifts, lift]

    def _unreadable(self, parts: list[str], number: int, raw: str) -> None:
        email = normalize(parts[0].strip('"')) if parts else ""
        if is_plausible(email):
            self._add(email, Kind.UNREADABLE, self._max, number, 0)  # its latest event, and it suppresses
            message, level = f"unreadable line, counted as suppressing {email}: {raw[:60]!r}", "warning"
        elif _torn_write(raw):
            # What a write cut short by a full disk or a crash leaves, closed by the next append: the command
            # that wrote it failed and said so, so it names nobody who was promised anything.
            message, level = f"the remains of an interrupted write: {raw[:60]!r}", "warning"
        else:
            message, level = f"cannot read the address on this line: {raw[:60]!r}", "error"
        if number in self._reported:  # said already, while it was a torn last line
            return
        problem = Problem(level, message, self.path, number)
        (self.unreadable if level == "error" else self.problems).append(problem)

    def check_readable(self, consequence: str = "") -> None:
        """Raise LedgerError naming the first line whose address cannot be read: nobody can tell whom it
        suppresses, so no count, list, export or send can be trusted (`consequence` says what was not done)."""
        if not self.unreadable:
            return
        first = self.unreadable[0]
        more = f" (and {len(self.unreadable) - 1} more line(s))" if len(self.unreadable) > 1 else ""
        raise LedgerError(
            f"{first.message}{more}: the ledger is not UTF-8 comma-separated CSV, so nobody can tell whom it "
            "suppresses" + (f"; {consequence}" if consequence else ""), path=self.path, line=first.line,
            hint="re-save it as CSV UTF-8 with commas, header `email,event,at,source,detail` (or restore it "
                 "from a backup), then check it with `newsletter subscribers count`")

    # -- the rule -------------------------------------------------------------------------------------------
    def is_suppressed(self, email: str) -> bool:
        """Whether mail to `email` (any case, any surrounding space, any Unicode form) is forbidden."""
        return self.is_suppressed_key(normalize(email))

    def is_suppressed_key(self, key: str) -> bool:
        """is_suppressed for an address already normalised (the hot path of a million-reader send)."""
        supp = self._supp.get(key)
        if supp is None:
            return key in self._tail
        return key in self._tail or not _lift_applies(self._lifts.get(key), supp)

    def event_of(self, email: str) -> Kind | None:
        """What decides the address's state: its latest suppressing event when suppressed, else its latest lift
        (None when the ledger never named it)."""
        key = normalize(email)
        if key in self._tail:
            return Kind.UNREADABLE
        supp = self._supp.get(key)
        if supp is not None and self.is_suppressed_key(key):
            return _KINDS[supp & (_FROM_SENDGRID - 1)]
        lifts = self._lifts.get(key)
        if lifts is None:
            return None
        latest = max(lifts) if isinstance(lifts, list) else lifts
        return Kind.RESUBSCRIBE if latest & _SIGNED_MASK == 0 else Kind.SUBSCRIBE

    def told_by_sendgrid(self, email: str) -> bool:
        """Whether the suppression that decides the address's state came from SendGrid (its lists hold it)."""
        supp = self._supp.get(normalize(email))
        return supp is not None and bool(supp & _FROM_SENDGRID)

    def addresses(self) -> Iterator[str]:
        """Every address the ledger names."""
        yield from self._supp
        yield from (k for k in self._lifts if k not in self._supp)
        yield from (k for k in self._tail if k not in self._supp and k not in self._lifts)

    # -- the one writer -------------------------------------------------------------------------------------
    def record(self, events: Iterable[Event], *, what: str = "") -> Recording:
        """Append the events that change something, whole and fsynced under the ledger's lock, then follow the
        write (SendGrid told, or the reason it waits). A suppression of a suppressed address, a lift of one that
        is not, an opt-out older than the reader's return write nothing (UNCHANGED); a confirmation of a sign-up
        older than the latest opt-out writes nothing (STALE). Raises LedgerError for a non-address or a lock
        held too long, and StorageError when the lines could not be written whole (nothing is then claimed)."""
        from filelock import Timeout

        todo = [_completed(e) for e in events]
        try:
            with self._mutex, file_lock(self.path, self.lock_timeout):
                self.refresh()
                results = self._decide(todo)
                written = [r.event for r in results if r.outcome is Outcome.RECORDED]
                if written:
                    rows = io.StringIO()
                    csv.writer(rows, lineterminator="\n").writerows(e.row() for e in written)
                    append_durably(self.path, rows.getvalue().encode("utf-8"), header=(HEADER + "\n").encode(),
                                   locked=True, what=what or _describe(written))
                    self.refresh()
        except Timeout:
            raise LedgerError("the ledger is locked by another process for too long", path=self.path,
                              hint=f"if no newsletter command is running, delete {self.path}.lock") from None
        recording = Recording(results)
        if written and self.follow is not None:
            recording.pushed, recording.waiting = self.follow(self)
        return recording

    def preview(self, events: Iterable[Event]) -> list[Recorded]:
        """What `record` would do with these events, writing nothing (a dry run)."""
        with self._mutex:
            self.refresh()
            return self._decide([_completed(e) for e in events])

    def _decide(self, events: list[Event]) -> list[Recorded]:
        """Each event's outcome against the state as it will be: earlier events of the batch count, and a torn
        last line counts as the suppression it becomes once the append closes it. The state is left as read
        (the refresh after the append reads what was written)."""
        keys = {e.email for e in events} | self._tail
        saved = {k: self._get(k) for k in keys}
        tail, line, latest = self._tail, self._line, self._max
        try:
            if tail:
                line += 1
                for key in tail:
                    self._add(key, Kind.UNREADABLE, self._max, line, 0)
                self._tail = set()
            results = []
            for e in events:
                before_state = self._get(e.email)
                previous, before = self.event_of(e.email), self.is_suppressed_key(e.email)
                at = self._secs(e.at)
                self._add(e.email, e.event, at, line + 1, self._secs(e.signed_up) if e.signed_up else at,
                          e.source == Source.SENDGRID)
                outcome = _outcome(e.event, before, self.is_suppressed_key(e.email))
                if outcome is Outcome.RECORDED:
                    line += 1
                else:
                    self._set(e.email, *before_state)
                results.append(Recorded(e, outcome, previous))
            return results
        finally:
            self._tail, self._max = tail, latest
            for key, state in saved.items():
                self._set(key, *state)

    def _get(self, key: str) -> tuple[int | None, int | list[int] | None]:
        lifts = self._lifts.get(key)
        return self._supp.get(key), list(lifts) if isinstance(lifts, list) else lifts

    def _set(self, key: str, supp: int | None, lifts: int | list[int] | None) -> None:
        if supp is None:
            self._supp.pop(key, None)
        else:
            self._supp[key] = supp
        if lifts is None:
            self._lifts.pop(key, None)
        else:
            self._lifts[key] = lifts

    # -- what SendGrid must be told -------------------------------------------------------------------------
    def touched_since(self, offset: int) -> tuple[list[str], int]:
        """The addresses named by complete lines from byte `offset` on, and the offset after them. An offset past
        the end (the ledger was replaced, e.g. restored from a backup) starts again from the beginning. Only lines
        this ledger has read count: a line appended since (by another process) would be judged on a state
        without it, so it waits for the next push, which reads it first."""
        try:
            with open(self.path, "rb") as fh:
                size = fh.seek(0, 2)
                start = offset if offset <= size else 0
                fh.seek(start)
                data = fh.read(max(0, self.offset - start))
        except FileNotFoundError:
            return [], 0
        complete = data[: data.rfind(b"\n") + 1]  # a torn last line is told once it is whole
        touched: dict[str, None] = {}
        for raw in complete.decode("utf-8", "replace").splitlines():
            first = raw.split(",", 1)[0] if '"' not in raw else (_csv_fields(raw) or [""])[0]
            key = normalize(first.lstrip("\ufeff"))
            if is_plausible(key):
                touched[key] = None
        return list(touched), start + len(complete)


def _csv_fields(raw: str) -> list[str]:
    """The fields of one quoted line; none when csv cannot parse it (a stray carriage return outside quotes, a
    field over csv's size limit): such a line names nobody anyone can be sure of."""
    try:
        return next(csv.reader([raw]))
    except csv.Error:
        return []


def _outcome(kind: Kind, before: bool, after: bool) -> Outcome:
    if kind is Kind.SUBSCRIBE:
        return Outcome.STALE if before and after else Outcome.RECORDED  # consent is worth keeping when active
    if kind.suppresses:
        return Outcome.RECORDED if after and not before else Outcome.UNCHANGED
    return Outcome.RECORDED if before and not after else Outcome.UNCHANGED


def _completed(e: Event) -> Event:
    """The event as it will be written: a plausible normalised address, a canonical time (now when none)."""
    email = normalize(e.email)
    if not is_plausible(email):
        raise LedgerError(f"not an address: {e.email!r}")
    at = canonical_time(e.at) or now_iso()
    signed = canonical_time(e.signed_up) if e.signed_up else ""
    return Event(email, e.event, at, e.source, e.detail, signed)


def _describe(events: list[Event]) -> str:
    first = events[0]
    return f"the {first.event} of {first.email}" if len(events) == 1 else f"{len(events)} ledger events"


def iter_events(path: Path, kind: Kind | None = None) -> Iterator[tuple[Event, dt.datetime | None]]:
    """Readable events of the ledger in file order (of one kind, if given), each with its time parsed. Raises
    LedgerError at a line whose address cannot be read (see `check_readable`): a count built on such a ledger
    would be wrong."""
    try:
        fh = open(path, encoding="utf-8", errors="replace", newline="\n")  # noqa: SIM115 - closed below
    except FileNotFoundError:
        return
    with fh:
        for number, line in enumerate(fh, 1):  # a line is a record, as the writers' own reader has it
            raw = line.rstrip("\r\n")
            row = raw.split(",") if '"' not in raw else _csv_fields(raw)
            parsed = _BY_NAME.get(row[1]) if len(row) == 5 else None
            email = normalize(row[0].lstrip("\ufeff")) if row else ""
            if parsed is None or not is_plausible(email):
                unparsed = not row and raw.strip()  # quotes csv cannot parse: nobody can be sure whom it names
                if number > 1 and (unparsed or (row and not is_plausible(email) and not _torn_write(",".join(row)))):
                    raise LedgerError(f"cannot read the address on this line: {raw[:60]!r}: the ledger is "
                                      "not UTF-8 comma-separated CSV", path=path, line=number,
                                      hint="re-save it as CSV UTF-8 with commas (or restore it from a backup)")
                continue
            if kind and parsed != kind:
                continue
            secs = _seconds(row[2])
            at = dt.datetime.fromtimestamp(secs, dt.UTC) if secs is not None else None
            signed = ""
            if parsed is Kind.SUBSCRIBE and (m := _SIGNED_UP.match(row[4])):
                signed = m.group(1)
            yield Event(email, parsed, row[2], row[3], row[4], signed), at


_TORN = re.compile(r'^[^\s,;"\x00\ufffd]*(,[a-z]*(,[0-9T:Z-]*)?)?$')


def _torn_write(raw: str) -> bool:
    """A line that is the start of a well-formed one: part of an address, maybe the start of an event and time.
    A line re-saved with `;` or tabs, in UTF-16 (NULs) or another encoding (U+FFFD) is not."""
    return bool(_TORN.match(raw))


def load_ledger(root: Path, *, strict: bool = True, follow: Follower | None = None) -> Ledger:
    """The ledger of the newsletter at `root` (empty when the file does not exist yet). `strict` (every reader
    but the writers' own tail reads) refuses a ledger with a line whose address cannot be read."""
    ledger = Ledger(ledger_path(root), follow=follow)
    if strict:
        ledger.check_readable()
    return ledger
