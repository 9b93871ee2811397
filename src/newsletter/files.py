"""Writes that matter: atomic replacement, and appends fsynced under a file lock; JSON-lines reading."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def write_atomic(path: Path, data: str) -> None:
    """Write through a temp file and os.replace, so a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def append_durably(path: Path, data: bytes, *, header: bytes = b"", lock_timeout: float = 60.0) -> None:
    """Append `data` under `<path>.lock`, then fsync. A torn last line left by a crash is closed first, so
    the new lines start fresh; `header` is written first when the file is new or empty."""
    from filelock import FileLock

    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock", timeout=lock_timeout):
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            size = os.fstat(fd).st_size
            prefix = header
            if size:  # close a torn last line so ours start fresh
                prefix = b"" if os.pread(fd, 1, size - 1) == b"\n" else b"\n"
            os.write(fd, prefix + data)
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
