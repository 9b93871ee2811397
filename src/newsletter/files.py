"""Writes that matter: atomic replacement, and appends fsynced under a file lock; JSON-lines reading."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO


@contextmanager
def atomic_writer(path: Path) -> Iterator[TextIO]:
    """A text file that replaces `path` only once complete and fsynced: a crash never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_atomic(path: Path, data: str) -> None:
    """Replace `path` with `data` atomically."""
    with atomic_writer(path) as fh:
        fh.write(data)


def open_for_append(path: Path, header: bytes = b"") -> int:
    """An O_APPEND descriptor whose next write starts on a fresh line: a torn last line left by a crash is
    closed first, and `header` is written when the file is new or empty."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        size = os.fstat(fd).st_size
        if size == 0:
            if header:
                os.write(fd, header)
        elif os.pread(fd, 1, size - 1) != b"\n":
            os.write(fd, b"\n")
    except BaseException:
        os.close(fd)
        raise
    return fd


def append_durably(path: Path, data: bytes, *, header: bytes = b"", lock_timeout: float = 60.0) -> None:
    """Append `data` under `<path>.lock`, then fsync (see open_for_append for torn lines and the header)."""
    from filelock import FileLock

    with FileLock(str(path) + ".lock", timeout=lock_timeout):
        fd = open_for_append(path, header)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)


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
            except ValueError:
                continue
            if isinstance(record, dict):
                yield record
