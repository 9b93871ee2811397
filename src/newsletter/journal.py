"""The per-issue send journal: each batch's readers and every attempt recorded (and fsynced) before the
request goes out, its outcome after. Re-running a send reads it to continue where it stopped.

File: subscribers/sends/<slug>.jsonl, one JSON object per line:
  {"t": "run", ...}                          a send started
  {"t": "batch", "b": 7, "emails": [...]}    batch 7 is these readers (normalised addresses)
  {"t": "attempt", "b": 7, "n": 1}           a request for batch 7 is about to go out
  {"t": "retry", "b": 7, "status": 500}      it was answered without being accepted (will retry)
  {"t": "ok", "b": 7, "status": 202, "id"}   SendGrid accepted it
  {"t": "failed", "b": 7, "error": ...}      given up in this run; its readers are sent by the next run
  {"t": "replaced", "b": 7, "why": ...}      not sent; its readers went into new batches (a 413 split,
                                             or unsubscribes that arrived while waiting to retry)
  {"t": "doubt", "b": 7, "error": ...}       the request went out and no answer came: fate unknown
A batch whose last record is `attempt` or `doubt` is in doubt: never re-sent unless asked.

A record counts only when it is whole (it ends in a newline): a request leaves only after its `attempt`
record was written whole and fsynced, so a torn `attempt` (a full disk, a kill) means the request never left.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import SendError, StorageError
from .files import open_for_append, read_jsonl, write_all

if TYPE_CHECKING:
    from filelock import BaseFileLock

SENDS_DIR = "sends"


def journal_path(root: Path, slug: str) -> Path:
    """subscribers/sends/<slug>.jsonl."""
    return root / "subscribers" / SENDS_DIR / f"{slug}.jsonl"


@dataclass
class BatchState:
    """One batch as the journal tells it."""

    readers: int
    state: str  # defined | sent | failed | doubt
    emails: list[str] = field(default_factory=list)
    error: str = ""


@dataclass
class JournalState:
    """What earlier runs of this issue's send did."""

    sent: set[int] = field(default_factory=set)  # hash() of the address: compact for a million readers
    in_doubt: set[int] = field(default_factory=set)
    doubt_batches: dict[int, BatchState] = field(default_factory=dict)
    failed_batches: dict[int, BatchState] = field(default_factory=dict)
    sent_batches: int = 0
    next_batch: int = 1
    runs: int = 0
    torn: int = 0

    @property
    def in_doubt_readers(self) -> int:
        """Readers whose batch is in doubt and who have not been acknowledged since."""
        return len(self.in_doubt - self.sent)

    def doubt_batch_count(self) -> int:
        """In-doubt batches with at least one reader not acknowledged since."""
        return sum(1 for b in self.doubt_batches.values() if any(hash(e) not in self.sent for e in b.emails))


def read_records(path: Path) -> Iterator[dict[str, Any]]:
    """The journal's records; a torn last line (a kill mid-write) never counted and is skipped."""
    return read_jsonl(path)


def load_state(path: Path) -> JournalState:
    """Replay the journal, keeping readers' addresses only for batches that are not settled."""
    state = JournalState()
    open_batches: dict[int, BatchState] = {}  # defined or attempted, outcome not yet read
    for rec in read_records(path):
        kind = rec.get("t")
        if kind == "run":
            state.runs += 1
            continue
        b = int(rec.get("b", 0))
        state.next_batch = max(state.next_batch, b + 1)
        if kind == "batch":
            open_batches[b] = BatchState(readers=len(rec["emails"]), state="defined", emails=rec["emails"])
            continue
        batch = open_batches.get(b)
        if batch is None:
            continue
        if kind in ("attempt", "doubt"):
            batch.state, batch.error = "doubt", str(rec.get("error", "no answer recorded"))
        elif kind == "retry":
            batch.state = "defined"
        elif kind == "ok":
            # Settled: only the hashes are kept, so a million-reader journal stays small in memory.
            state.sent.update(hash(e) for e in batch.emails)
            state.sent_batches += 1
            del open_batches[b]
        elif kind == "replaced":
            del open_batches[b]
        elif kind == "failed":
            state.failed_batches[b] = BatchState(readers=batch.readers, state="failed",
                                                 error=str(rec.get("error", "")), emails=batch.emails)
            del open_batches[b]
    for b, batch in open_batches.items():
        if batch.state == "doubt":  # the request went out (or may have) and no answer was recorded
            state.in_doubt.update(hash(e) for e in batch.emails)
            state.doubt_batches[b] = batch
    # Readers of failed batches that a later run delivered are settled too.
    for b in [b for b, f in state.failed_batches.items() if all(hash(e) in state.sent for e in f.emails)]:
        del state.failed_batches[b]
    for f in state.failed_batches.values():
        f.emails = []
    return state


class Journal:
    """Appends records, each flushed and fsynced before the caller goes on."""

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
            os.close(self._fd)
            self._fd = None

    def write(self, *records: dict[str, Any]) -> None:
        """Append records whole and fsync them: when this returns they survive a crash. Raises StorageError
        when any byte could not be written or synced; the caller must then not do what the record announces."""
        data = b"".join(json.dumps(r, ensure_ascii=False, separators=(",", ":")).encode() + b"\n" for r in records)
        with self._lock:
            if self._fd is None:
                raise SendError("the journal is not open", path=self.path)
            try:
                if self._torn:
                    write_all(self._fd, b"\n")  # close the torn record: it stays unreadable, never merges
                    self._torn = False
                write_all(self._fd, data)
                os.fsync(self._fd)
            except OSError as exc:
                self._torn = True
                first = records[0] if records else {}
                what = f"the `{first.get('t', '?')}` record of batch {first.get('b', '?')}" if "b" in first else (
                    f"the `{first.get('t', '?')}` record")
                raise StorageError.from_os(exc, self.path, what) from None


def send_lock(root: Path, slug: str) -> BaseFileLock:
    """An exclusive lock per issue; flock is released by the kernel when a killed process dies."""
    from filelock import FileLock

    path = journal_path(root, slug).with_suffix(".lock")
    path.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(str(path), timeout=0)
