"""Writes that matter: atomic replacement, and appends fsynced under a file lock; JSON-lines reading.

Every write here either puts all its bytes on disk and fsyncs them, or raises `StorageError`: `os.write` may
write less than it was given (a full disk, a signal), and a short count is never taken for a success.
Files that hold readers' addresses are created private (0600); published files follow the umask.
"""

from __future__ import annotations

import errno
import json
import os
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, NamedTuple, TextIO, TypeVar

from .errors import StorageError

if TYPE_CHECKING:
    from filelock import BaseFileLock

T = TypeVar("T")
R = TypeVar("R")
PRIVATE = 0o600
LOCK_TIMEOUT = 60.0  # seconds any command waits for another holding a file's lock


def file_lock(path: Path, timeout: float = LOCK_TIMEOUT) -> BaseFileLock:
    """The lock every writer of `path` takes: `<path>.lock`, beside it. Locks of different file descriptions
    exclude each other even within one process, so threads are serialised too."""
    from filelock import FileLock

    return FileLock(str(path) + ".lock", timeout=timeout)


def _umask_mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def write_all(fd: int, data: bytes) -> None:
    """Write every byte of `data` to `fd`, looping over short writes; raises OSError when the disk takes none."""
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        if n <= 0:  # a write of 0 bytes would loop forever: the disk is full in all but name
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        view = view[n:]


@contextmanager
def atomic_path(path: Path, *, what: str = "the file", private: bool = False) -> Iterator[Path]:
    """A temporary path beside `path` for a writer that wants a file name (an image encoder): once the block
    ends, its content is fsynced and replaces `path` (0600 when `private`, else as the umask says)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        os.close(fd)
    except OSError as exc:
        raise StorageError.from_os(exc, path, what) from None
    try:
        yield Path(tmp)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fchmod(fd, PRIVATE if private else _umask_mode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise StorageError.from_os(exc, path, what) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def atomic_writer(path: Path, *, what: str = "the file", private: bool = False) -> Iterator[TextIO]:
    """A text file that replaces `path` only once complete and fsynced: a crash or a full disk never leaves
    half a file. `private` files are 0600; others follow the umask (mkstemp's 0600 would otherwise survive
    the rename and hide a published page from the web server)."""
    with atomic_path(path, what=what, private=private) as tmp, \
            open(tmp, "w", encoding="utf-8", newline="") as fh:  # closing flushes: a full disk raises there
        yield fh


def write_atomic(path: Path, data: str, *, what: str = "the file", private: bool = False) -> None:
    """Replace `path` with `data` atomically."""
    with atomic_writer(path, what=what, private=private) as fh:
        fh.write(data)


def open_for_append(path: Path, header: bytes = b"", *, private: bool = True) -> int:
    """An O_APPEND descriptor whose next write starts on a fresh line: a torn last line left by a crash or a
    full disk is closed first, and `header` is written when the file is new or empty. Raises OSError."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, PRIVATE if private else 0o644)
    try:
        size = os.fstat(fd).st_size
        if size == 0:
            if header:
                write_all(fd, header)
        elif os.pread(fd, 1, size - 1) != b"\n":
            write_all(fd, b"\n")
    except BaseException:
        os.close(fd)
        raise
    return fd


def append_durably(path: Path, data: bytes, *, what: str, header: bytes = b"", lock_timeout: float = LOCK_TIMEOUT,
                   locked: bool = False) -> None:
    """Append `data` under `<path>.lock` (already held by the caller when `locked`), then fsync (see
    open_for_append for torn lines and the header). Raises StorageError when any byte could not be written or
    synced, and filelock.Timeout."""
    from contextlib import nullcontext

    from filelock import Timeout

    try:
        with nullcontext() if locked else file_lock(path, lock_timeout):
            fd = open_for_append(path, header)
            try:
                write_all(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
    except Timeout:
        raise  # a TimeoutError (so an OSError) that means "busy", not "broken": the caller words it
    except OSError as exc:
        raise StorageError.from_os(exc, path, what) from None


def append_jsonl(path: Path, records: list[dict[str, Any]], *, what: str, locked: bool = False) -> None:
    """Append JSON objects, one a line, whole and fsynced (see append_durably): the one JSON-lines writer."""
    data = b"".join(json.dumps(r, ensure_ascii=False, separators=(",", ":")).encode("utf-8") + b"\n"
                    for r in records)
    if data:
        append_durably(path, data, what=what, locked=locked)


def read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    """The JSON objects of a JSON-lines file, streamed; a torn last line and unreadable lines are skipped."""
    try:
        fh = open(path, "rb")  # noqa: SIM115 - closed by the with below
    except FileNotFoundError:
        return
    with fh:
        for raw in fh:
            if not raw.endswith(b"\n"):
                break  # torn last line: it was never written (nor fsynced) whole
            try:
                record = json.loads(raw)
            except (ValueError, RecursionError):
                continue  # a torn record followed by a later one on the same line, or a hand edit
            if isinstance(record, dict):
                yield record



class Tail(NamedTuple):
    """What `tail_jsonl` read: the records, the offset after them, and whether it started over."""

    records: list[dict[str, Any]]
    offset: int
    restarted: bool  # the file was shorter than the offset (replaced, e.g. restored): read from the start


def tail_jsonl(path: Path, offset: int) -> Tail:
    """The JSON objects of the complete lines from byte `offset` on: how a process that keeps a JSON-lines file
    in memory follows what was appended (a torn last line is read once it is whole)."""
    try:
        with open(path, "rb") as fh:
            size = fh.seek(0, 2)
            start = offset if offset <= size else 0
            fh.seek(start)
            data = fh.read(size - start)
    except FileNotFoundError:
        return Tail([], 0, offset > 0)
    end = data.rfind(b"\n") + 1
    records = []
    for raw in data[:end].splitlines():
        try:
            record = json.loads(raw)
        except (ValueError, RecursionError):
            continue  # a torn record closed by a later append, or a hand edit
        if isinstance(record, dict):
            records.append(record)
    return Tail(records, start + end, start < offset)


class GroupCommit(Generic[T, R]):
    """Writes from concurrent threads made together (a group commit): whoever finds no write in progress writes
    every item queued so far in one call of `write` (one fsync); the others wait for it and get their own results.
    Under load, twenty appends cost one or two fsyncs instead of twenty in a row, and no thread of this process
    polls a file lock. `write` takes the items and returns one result per item, in order."""

    def __init__(self, write: Callable[[list[T]], list[R]]) -> None:
        self._write = write
        self._cond = threading.Condition()
        self._queue: list[tuple[int, list[T]]] = []
        self._issued = self._written = 0  # tickets handed out, and written (every ticket up to it is settled)
        self._writing = False
        self._settled: dict[int, list[R] | BaseException] = {}

    def submit(self, items: list[T]) -> list[R]:
        """Write `items` (with whatever else is queued); their results once written. Raises what `write` raised."""
        with self._cond:
            self._issued += 1
            ticket = self._issued
            self._queue.append((ticket, items))
            while self._writing and self._written < ticket:
                self._cond.wait()
            if self._written >= ticket:  # written by another thread
                return self._outcome(self._settled.pop(ticket))
            self._writing, batch, self._queue = True, self._queue, []
        settled: dict[int, list[R] | BaseException] = {}
        try:
            results = self._write([item for _, queued in batch for item in queued])
            at = 0
            for t, queued in batch:
                settled[t], at = results[at:at + len(queued)], at + len(queued)
        except BaseException as exc:  # noqa: BLE001 - every waiter gets it (a bug included), none hangs
            settled = {t: exc for t, _ in batch}
        with self._cond:
            self._writing, self._written = False, batch[-1][0]
            mine = settled.pop(ticket)
            self._settled.update(settled)
            self._cond.notify_all()
        return self._outcome(mine)

    @staticmethod
    def _outcome(settled: list[R] | BaseException) -> list[R]:
        if isinstance(settled, BaseException):
            raise settled
        return settled
