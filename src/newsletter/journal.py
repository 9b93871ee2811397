"""The per-issue send journal: each batch's readers and every attempt recorded (and fsynced) before the
request goes out, its outcome after. Re-running a send reads it to continue where it stopped.

File: subscribers/sends/<slug>.jsonl, one JSON object per line:
  {"t": "run", "at", "readers", ...}         a send started
  {"t": "end", "at"}                         ... and ended (a killed run has none)
  {"t": "batch", "b": 7, "emails": [...]}    batch 7 is these readers (normalised addresses)
  {"t": "attempt", "b": 7, "n": 1}           a request for batch 7 is about to go out
  {"t": "retry", "b": 7, "status": 500}      it was answered without being accepted (will retry)
  {"t": "ok", "b": 7, "status": 202, "id"}   SendGrid accepted it
  {"t": "failed", "b": 7, "error": ...}      given up in this run; its readers are sent by the next run
  {"t": "replaced", "b": 7, "why": ...}      not sent; its readers went into new batches (a 413 split,
                                             or unsubscribes that arrived while waiting to retry)
  {"t": "doubt", "b": 7, "error": ...}       the request went out and no answer came: fate unknown
  {"t": "schedule", "batch_id", "send_at"}   the batches that follow are SendGrid-scheduled under this batch id
  {"t": "cancel_asked", "batch_id", "at"}    SendGrid is about to be asked to cancel it (written first: a crash
                                             after SendGrid cancelled never leaves "scheduled" unexplained)
  {"t": "cancel_refused", "batch_id", "error"}  ... and SendGrid refused: it is still scheduled
  {"t": "cancel", "batch_id", "at"}          ... and SendGrid cancelled: their readers count as not sent
A batch whose last record is `attempt` or `doubt` is in doubt: never re-sent unless asked.

A record counts only when it is whole (it ends in a newline): a request leaves only after its `attempt`
record was written whole and fsynced, so a torn `attempt` (a full disk, a kill) means the request never left.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from .errors import SendError, StorageError
from .files import open_for_append, read_jsonl, write_all
from .recipients import normalize

if TYPE_CHECKING:
    from filelock import BaseFileLock

SENDS_DIR = "sends"
# The record types: spelled here and nowhere else.
_RUN, _END, _BATCH, _ATTEMPT, _OK, _RETRY, _FAILED, _REPLACED, _DOUBT = (
    "run", "end", "batch", "attempt", "ok", "retry", "failed", "replaced", "doubt")
_SCHEDULE, _CANCEL_ASKED, _CANCEL_REFUSED, _CANCEL = "schedule", "cancel_asked", "cancel_refused", "cancel"


def journal_path(root: Path, slug: str) -> Path:
    """subscribers/sends/<slug>.jsonl."""
    return root / "subscribers" / SENDS_DIR / f"{slug}.jsonl"


def sends_dir(root: Path) -> Path:
    """subscribers/sends/: one journal per issue."""
    return root / "subscribers" / SENDS_DIR


class BatchFate(StrEnum):
    """Where a batch stands, as the journal tells it."""

    DEFINED = "defined"  # its readers are named; no request has left (or one was answered without acceptance)
    DOUBT = "doubt"  # a request left and no answer was recorded: its readers may have the issue
    FAILED = "failed"  # given up by a run; a re-run sends its readers


@dataclass
class BatchState:
    """One batch as the journal tells it."""

    readers: int
    state: BatchFate
    emails: list[str] = field(default_factory=list)
    error: str = ""
    schedule: str = ""  # the SendGrid batch id it was scheduled under, if any


@dataclass
class ScheduleInfo:
    """A send scheduled through SendGrid (`send --at`): its batch id, when it goes out, and a cancel."""

    batch_id: str
    send_at: str
    cancelled_at: str = ""
    cancel_asked_at: str = ""  # a cancel was asked for and SendGrid's answer is not recorded (when not refused)
    cancel_refused: str = ""  # SendGrid's refusal of the last cancel asked for

    @property
    def cancel_unknown(self) -> bool:
        """A cancel was asked for and its answer was never recorded: SendGrid may or may not have cancelled."""
        return bool(self.cancel_asked_at) and not self.cancelled_at and not self.cancel_refused

    def minutes_left(self, now: dt.datetime | None = None) -> float:
        """Minutes until SendGrid sends it (negative once it has)."""
        try:
            send_at = dt.datetime.fromisoformat(self.send_at)
        except ValueError:
            return -1.0
        return (send_at - (now or dt.datetime.now(dt.UTC))).total_seconds() / 60

    def pending(self, now: dt.datetime | None = None) -> bool:
        """Not cancelled and not gone out yet."""
        if self.cancelled_at:
            return False
        try:
            return dt.datetime.fromisoformat(self.send_at) > (now or dt.datetime.now(dt.UTC))
        except ValueError:
            return False


@dataclass
class RunInfo:
    """One `send` run: when it started and ended (empty when it was killed) and how many readers it meant."""

    started: str
    ended: str = ""
    readers: int = 0
    schedule: str = ""  # the SendGrid batch id it was scheduled under, if it was


@dataclass
class JournalState:
    """What earlier runs of this issue's send did."""

    sent: set[int] = field(default_factory=set)  # hash() of the address: compact for a million readers
    doubt: set[int] = field(default_factory=set)
    doubt_batches: dict[int, BatchState] = field(default_factory=dict)
    failed_batches: dict[int, BatchState] = field(default_factory=dict)
    sent_batches: int = 0
    next_batch: int = 1
    run_list: list[RunInfo] = field(default_factory=list)
    schedules: list[ScheduleInfo] = field(default_factory=list)
    scheduled_readers: dict[str, int] = field(default_factory=dict)  # batch id -> readers SendGrid holds for it

    def waiting_readers(self) -> int:
        """Readers handed to SendGrid for a scheduled send that has not gone out yet (counted as sent)."""
        return sum(self.scheduled_readers.get(s.batch_id, 0) for s in self.schedules if s.pending())

    def pending_schedule(self) -> ScheduleInfo | None:
        """The scheduled send that can still be cancelled, if any."""
        return next((s for s in reversed(self.schedules) if s.pending()), None)

    def is_sent(self, address: str) -> bool:
        """Whether SendGrid accepted a request that held this reader."""
        return self.is_sent_key(normalize(address))

    def in_doubt(self, address: str) -> bool:
        """Whether this reader is in a batch whose fate is unknown (and was not acknowledged since)."""
        return self.in_doubt_key(normalize(address))

    def is_sent_key(self, key: str) -> bool:
        """is_sent for an address already normalised."""
        return hash(key) in self.sent

    def in_doubt_key(self, key: str) -> bool:
        """in_doubt for an address already normalised."""
        h = hash(key)
        return h in self.doubt and h not in self.sent

    def runs(self) -> list[RunInfo]:
        """Every run, oldest first."""
        return list(self.run_list)

    def finished_run(self) -> RunInfo | None:
        """The last run, when it ended and left nobody failed or in doubt (and was not a cancelled schedule): the
        issue went out. A re-run then mails nobody new unless asked to; any other run is continued instead."""
        last = self.run_list[-1] if self.run_list else None
        if last is None or not last.ended or self.failed_batches or self.doubt_batches:
            return None
        cancelled = {s.batch_id for s in self.schedules if s.cancelled_at}
        return None if last.schedule in cancelled else last

    def first_sent_at(self) -> dt.datetime | None:
        """When the first run started (None before any)."""
        for run in self.run_list:
            with contextlib.suppress(ValueError):
                return dt.datetime.fromisoformat(run.started)
        return None

    @property
    def sent_readers(self) -> int:
        """Readers acknowledged by SendGrid."""
        return len(self.sent)

    @property
    def in_doubt_readers(self) -> int:
        """Readers whose batch is in doubt and who have not been acknowledged since."""
        return len(self.doubt - self.sent)

    def doubt_batch_count(self) -> int:
        """In-doubt batches with at least one reader not acknowledged since."""
        return sum(1 for b in self.doubt_batches.values() if any(hash(e) not in self.sent for e in b.emails))


def read_records(path: Path) -> Iterator[dict[str, Any]]:
    """The journal's records; a torn last line (a kill mid-write) never counted and is skipped."""
    return read_jsonl(path)


def first_run_at(path: Path) -> dt.datetime | None:
    """When the first send of this journal started, reading no further than its first record."""
    for rec in read_records(path):
        if rec.get("t") == _RUN:
            with contextlib.suppress(KeyError, ValueError):
                return dt.datetime.fromisoformat(str(rec["at"]))
            return None
    return None


def iter_sent_addresses(path: Path) -> Iterator[str]:
    """The readers SendGrid accepted this issue for, in the order it did, streamed."""
    batches: dict[int, list[str]] = {}
    for rec in read_records(path):
        kind = rec.get("t")
        if kind == _BATCH:
            batches[int(rec.get("b", 0))] = [str(e) for e in rec.get("emails", [])]
        elif kind == _OK:
            yield from batches.pop(int(rec.get("b", 0)), [])
        elif kind in (_REPLACED, _FAILED):
            batches.pop(int(rec.get("b", 0)), None)


def load_state(path: Path) -> JournalState:
    """Replay the journal, keeping readers' addresses only for batches that are not settled."""
    state = JournalState()
    open_batches: dict[int, BatchState] = {}  # defined or attempted, outcome not yet read
    scheduled: dict[str, tuple[set[int], int]] = {}  # batch id -> (readers accepted, batches) until cancelled
    schedule = ""  # the batch id of the run being replayed, when it was scheduled
    for rec in read_records(path):
        kind = rec.get("t")
        if kind in (_RUN, _END, _SCHEDULE, _CANCEL_ASKED, _CANCEL_REFUSED, _CANCEL):
            schedule = _apply_run(state, scheduled, open_batches, kind, rec, schedule)
            continue
        try:
            b = int(rec.get("b", 0))
        except (TypeError, ValueError):
            continue
        state.next_batch = max(state.next_batch, b + 1)
        if kind == _BATCH:
            emails = [str(e) for e in rec.get("emails", [])]
            open_batches[b] = BatchState(readers=len(emails), state=BatchFate.DEFINED, emails=emails,
                                         schedule=schedule)
            continue
        batch = open_batches.get(b)
        if batch is not None:
            _apply(state, open_batches, b, batch, kind, rec, scheduled)
    for batch_id, (accepted, batches) in scheduled.items():  # scheduled and not cancelled: as good as sent
        state.sent |= accepted
        state.sent_batches += batches
        state.scheduled_readers[batch_id] = len(accepted)
    for b, batch in open_batches.items():
        if batch.state is BatchFate.DOUBT:  # the request went out (or may have) and no answer was recorded
            state.doubt.update(hash(e) for e in batch.emails)
            state.doubt_batches[b] = batch
    # Readers of failed batches that a later run delivered are settled too.
    for b in [b for b, f in state.failed_batches.items() if all(hash(e) in state.sent for e in f.emails)]:
        del state.failed_batches[b]
    for f in state.failed_batches.values():
        f.emails = []
    return state


def _apply_run(state: JournalState, scheduled: dict[str, tuple[set[int], int]], open_batches: dict[int, BatchState],
               kind: Any, rec: dict[str, Any], schedule: str) -> str:
    """A run, end, schedule or cancel record; returns the schedule the following batches belong to."""
    if kind == _RUN:
        state.run_list.append(RunInfo(str(rec.get("at", "")), readers=int(rec.get("readers", 0) or 0),
                                      schedule=str(rec.get("batch_id") or "")))
        return str(rec.get("batch_id") or "")
    if kind == _END:
        if state.run_list:
            state.run_list[-1].ended = str(rec.get("at", ""))
        return schedule
    batch_id = str(rec.get("batch_id") or "")
    if kind == _SCHEDULE:
        state.schedules.append(ScheduleInfo(batch_id, str(rec.get("send_at", ""))))
        scheduled.setdefault(batch_id, (set(), 0))
        return batch_id
    if kind in (_CANCEL_ASKED, _CANCEL_REFUSED):
        # Until SendGrid's cancel is recorded, the batch may still go out: its readers stay as good as sent.
        for info in state.schedules:
            if info.batch_id == batch_id and kind == _CANCEL_ASKED:
                info.cancel_asked_at, info.cancel_refused = str(rec.get("at", "")), ""
            elif info.batch_id == batch_id:
                info.cancel_refused = str(rec.get("error", "")) or "refused"
        return schedule
    if not batch_id:
        # A cancel naming no batch (only a hand-edited journal has one) cancels nothing: read as a cancel of the
        # unscheduled batches ("" is their schedule) it would forget readers in doubt, who could be mailed twice.
        return schedule
    # A cancel: SendGrid discards the batch's mail, so its readers were not sent, nor are they in doubt.
    for info in state.schedules:
        if info.batch_id == batch_id:
            info.cancelled_at = str(rec.get("at", ""))
    scheduled.pop(batch_id, None)
    for b in [b for b, batch in open_batches.items() if batch.schedule == batch_id]:
        del open_batches[b]
    return "" if schedule == batch_id else schedule


def _apply(state: JournalState, open_batches: dict[int, BatchState], b: int, batch: BatchState, kind: Any,
           rec: dict[str, Any], scheduled: dict[str, tuple[set[int], int]]) -> None:
    """One outcome record of an open batch."""
    if kind in (_ATTEMPT, _DOUBT):
        batch.state, batch.error = BatchFate.DOUBT, str(rec.get("error", "no answer recorded"))
    elif kind == _RETRY:
        batch.state = BatchFate.DEFINED
    elif kind == _OK:
        # Settled: only the hashes are kept, so a million-reader journal stays small in memory.
        if batch.schedule in scheduled:
            accepted, count = scheduled[batch.schedule]
            accepted.update(hash(e) for e in batch.emails)
            scheduled[batch.schedule] = (accepted, count + 1)
        else:
            state.sent.update(hash(e) for e in batch.emails)
            state.sent_batches += 1
        del open_batches[b]
    elif kind == _REPLACED:
        del open_batches[b]
    elif kind == _FAILED:
        state.failed_batches[b] = BatchState(readers=batch.readers, state=BatchFate.FAILED,
                                             error=str(rec.get("error", "")), emails=batch.emails)
        del open_batches[b]


class Journal:
    """Appends records, each written whole and fsynced before the caller goes on; one method per record."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._torn = False  # a write failed part-way: the next record must start on a fresh line

    def __enter__(self) -> Journal:
        # One descriptor for the whole run (the per-issue send lock keeps other writers out).
        try:
            self._fd = open_for_append(self.path)
        except OSError as exc:
            raise StorageError.from_os(exc, self.path, "the start of this send") from None
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):  # the outcomes written since the last sync
                os.fsync(self._fd)
            os.close(self._fd)
            self._fd = None

    def sync(self) -> None:
        """fsync what was written since the last synced record (the outcomes); raises StorageError."""
        with self._lock:
            fd = self._fd
        if fd is None:
            return
        try:
            os.fsync(fd)
        except OSError as exc:
            raise StorageError.from_os(exc, self.path, "the outcomes of this send") from None

    # -- the records ------------------------------------------------------------------------------------
    def run(self, readers: int, resend_in_doubt: bool, batch_id: str = "") -> None:
        """A send starts (scheduled under SendGrid's `batch_id` when given)."""
        record: dict[str, Any] = {"t": _RUN, "at": _now(), "readers": readers, "resend_in_doubt": resend_in_doubt}
        if batch_id:
            record["batch_id"] = batch_id
        self._write(record)

    def schedule(self, batch_id: str, send_at: dt.datetime) -> None:
        """The requests that follow are scheduled for `send_at` under SendGrid's `batch_id`."""
        self._write({"t": _SCHEDULE, "batch_id": batch_id, "send_at": send_at.astimezone(dt.UTC).isoformat(),
                     "at": _now()})

    def cancel_asked(self, batch_id: str) -> None:
        """SendGrid is about to be asked to cancel a scheduled batch (written, and fsynced, before it is)."""
        self._write({"t": _CANCEL_ASKED, "batch_id": batch_id, "at": _now()})

    def cancel_refused(self, batch_id: str, error: str) -> None:
        """SendGrid refused to cancel: the batch is still scheduled."""
        self._write({"t": _CANCEL_REFUSED, "batch_id": batch_id, "error": error[:300], "at": _now()})

    def cancel(self, batch_id: str) -> None:
        """SendGrid accepted the cancel of a scheduled batch."""
        self._write({"t": _CANCEL, "batch_id": batch_id, "at": _now()})

    def end(self) -> None:
        """A send ends (killed runs have none)."""
        self._write({"t": _END, "at": _now()})

    def batch(self, b: int, emails: list[str]) -> None:
        """Batch `b` is these readers (normalised addresses); synced with its `attempt` record."""
        self._write({"t": _BATCH, "b": b, "emails": emails}, sync=False)

    def attempt(self, b: int, n: int) -> None:
        """A request for batch `b` is about to leave: it must not leave unless this returned."""
        self._write({"t": _ATTEMPT, "b": b, "n": n})

    def ok(self, b: int, status: int, message_id: str) -> None:
        """SendGrid accepted batch `b`."""
        self._write({"t": _OK, "b": b, "status": status, "id": message_id}, sync=False)

    def retry(self, b: int, status: int | None, error: str) -> None:
        """Batch `b` was answered without being accepted; it will be tried again."""
        self._write({"t": _RETRY, "b": b, "status": status, "error": error}, sync=False)

    def failed(self, b: int, status: int | None, error: str) -> None:
        """Batch `b` is given up in this run; the next run sends its readers."""
        self._write({"t": _FAILED, "b": b, "status": status, "error": error}, sync=False)

    def replaced(self, b: int, why: str) -> None:
        """Batch `b` was not sent; its readers went into new batches."""
        self._write({"t": _REPLACED, "b": b, "why": why}, sync=False)

    def doubt(self, b: int, error: str) -> None:
        """A request for batch `b` left and no answer came."""
        self._write({"t": _DOUBT, "b": b, "error": error}, sync=False)

    def _write(self, record: dict[str, Any], *, sync: bool = True) -> None:
        """Append a record whole (and fsync the file): when this returns it survives a crash. Raises StorageError
        when any byte could not be written or synced; the caller must then not do what the record announces.

        Only the records that must be on disk before something happens are synced: `attempt` (before its
        request leaves; the batch's reader list goes with it), `run` and `end`. An outcome (`ok`, `retry`...)
        is synced with the next of those: lost to a power cut, it leaves its batch in doubt, never re-sent.
        One fsync per batch instead of three keeps a million-reader send from waiting on the disk."""
        # orjson writes what json.dumps(ensure_ascii=False, separators=(",", ":")) would, ten times faster: a
        # batch record holds a thousand addresses.
        data = orjson.dumps(record) + b"\n"
        try:
            with self._lock:
                if self._fd is None:
                    raise SendError("the journal is not open", path=self.path)
                fd = self._fd
                if self._torn:
                    write_all(fd, b"\n")  # close the torn record: it stays unreadable, never merges
                    self._torn = False
                try:
                    write_all(fd, data)
                except OSError:
                    self._torn = True
                    raise
            if sync:
                # Outside the lock: other workers may append meanwhile; this fsync covers at least our record.
                os.fsync(fd)
        except OSError as exc:
            what = f"the `{record['t']}` record of batch {record['b']}" if "b" in record else (
                f"the `{record['t']}` record")
            raise StorageError.from_os(exc, self.path, what) from None


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def send_lock(root: Path, slug: str) -> BaseFileLock:
    """An exclusive lock per issue; flock is released by the kernel when a killed process dies."""
    from filelock import FileLock

    path = journal_path(root, slug).with_suffix(".lock")
    path.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(str(path), timeout=0)
