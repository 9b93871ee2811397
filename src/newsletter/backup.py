"""`newsletter backup` / `restore`: a consistent snapshot of subscribers/ (readers' data), and putting one back.

A backup is a gzipped tar of every file under subscribers/ but the lock files, the git-tracked README.md and
hidden files (an atomic write in progress), each member named `subscribers/<path>` and stored 0600.

Consistency: the snapshot is taken while holding every file lock the writers take (the list's, the ledger's,
the sign-ups', the events' and the push offset's): under them each file is opened and its size noted, then the
locks are let go and exactly those bytes are copied. The list and the push offset are only ever replaced
(os.replace), never written in place, and the logs only grow, so the bytes an open descriptor holds up to the
noted size are the file as it was under the locks: an unsubscribe is whole in the backup or absent, and the
locks are held for milliseconds, not for the compression. A send journal is the exception: a running send
holds its lock (`sends/<slug>.lock`) for the whole send, so a journal is copied up to its last whole record,
which is all its reader counts anyway (journal.py).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import shutil
import tarfile
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from .errors import NewsletterError, StorageError
from .files import LOCK_TIMEOUT, PRIVATE, file_lock

DATA_DIR = "subscribers"
BACKUPS_DIR = "backups"
TRACKED = frozenset({"README.md"})  # in git, not readers' data: never backed up, never replaced
_TAIL = 64 * 1024


class BackupError(NewsletterError):
    """A backup cannot be written, or a file cannot be restored."""


@dataclass(frozen=True)
class BackupResult:
    """What `backup` wrote."""

    path: Path
    files: int
    size: int  # bytes of the .tar.gz


@dataclass(frozen=True)
class RestoreResult:
    """What `restore` put back, and where what it replaced was kept."""

    files: int
    saved: BackupResult | None


@dataclass
class _Entry:
    name: str  # relative to subscribers/, with `/`
    fh: BinaryIO
    size: int
    mtime: float


def data_dir(root: Path) -> Path:
    """subscribers/: the list, the ledger, send journals, sign-ups, events, SendGrid offsets."""
    return root / DATA_DIR


def backups_dir(root: Path) -> Path:
    """backups/: where `backup` writes by default (git-ignored)."""
    return root / BACKUPS_DIR


def is_data_file(rel: Path) -> bool:
    """A file of subscribers/ that holds data: not a lock, not the tracked README, not a write in progress."""
    return (rel.suffix != ".lock" and str(rel) not in TRACKED
            and not any(part.startswith(".") for part in rel.parts))


def data_files(root: Path) -> list[Path]:
    """The data files under subscribers/, relative to it, sorted."""
    base = data_dir(root)
    if not base.is_dir():
        return []
    found = []
    for dirpath, dirnames, filenames in os.walk(base):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            rel = (Path(dirpath) / name).relative_to(base)
            if is_data_file(rel) and (Path(dirpath) / name).is_file() and not (Path(dirpath) / name).is_symlink():
                found.append(rel)
    return sorted(found)


def _locked_files(root: Path) -> list[Path]:
    """Every file of subscribers/ whose writers take its lock (files.file_lock), in the order taken here. The
    push offset's comes first: its holder waits on SendGrid, and nothing else may be held meanwhile (an
    unsubscribe would wait too). No writer holds one of these while taking an earlier one: no deadlock."""
    from .ledger import ledger_path
    from .signup import signups_path
    from .subscribers import list_path
    from .suppressions import push_state_path
    from .webhook import events_path

    return [push_state_path(root), list_path(root), ledger_path(root), signups_path(root), events_path(root)]


@contextlib.contextmanager
def _locked(root: Path, sends: Iterable[str] = ()) -> Iterator[None]:
    """Hold every writer's lock, and the send lock of each issue in `sends` (refused while one is sending)."""
    from filelock import Timeout

    from .journal import send_lock

    data_dir(root).mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        for path in _locked_files(root):
            try:
                stack.enter_context(file_lock(path, LOCK_TIMEOUT))
            except Timeout:
                raise BackupError(f"{path.name} is locked by another process for too long",
                                  path=path.parent, hint="try again in a minute") from None
        for slug in sorted(set(sends)):
            try:
                stack.enter_context(send_lock(root, slug))
            except Timeout:
                raise BackupError(f"a `newsletter send` of {slug} is running",
                                  hint="wait for it to finish, then restore") from None
        yield


def _whole_records(fh: BinaryIO, size: int) -> int:
    """The size of the file up to its last newline (a journal's last whole record)."""
    end = size
    while end > 0:
        start = max(0, end - _TAIL)
        chunk = os.pread(fh.fileno(), end - start, start)
        at = chunk.rfind(b"\n")
        if at >= 0:
            return start + at + 1
        end = start
    return 0


def _snapshot(root: Path) -> list[_Entry]:
    """Open every data file and note its size; the caller holds the locks. The caller closes the files."""
    from .journal import SENDS_DIR

    base = data_dir(root)
    entries: list[_Entry] = []
    try:
        for rel in data_files(root):
            fh = open(base / rel, "rb")  # noqa: SIM115 - closed by the caller, after copying
            entries.append(_Entry(rel.as_posix(), fh, 0, 0.0))
            info = os.fstat(fh.fileno())
            size = info.st_size
            if rel.parts[0] == SENDS_DIR and rel.suffix == ".jsonl":
                size = _whole_records(fh, size)  # its send may be running: whole records only
            entries[-1].size, entries[-1].mtime = size, info.st_mtime
    except OSError as exc:
        _close(entries)
        raise BackupError(f"cannot read {exc.filename}: {exc.strerror}") from None
    return entries


def _close(entries: list[_Entry]) -> None:
    for entry in entries:
        entry.fh.close()


def _write_tar(entries: list[_Entry], fileobj: BinaryIO) -> None:
    with tarfile.open(fileobj=fileobj, mode="w:gz", compresslevel=6) as tar:
        for entry in entries:
            info = tarfile.TarInfo(f"{DATA_DIR}/{entry.name}")
            info.size, info.mtime, info.mode = entry.size, int(entry.mtime), PRIVATE
            entry.fh.seek(0)
            tar.addfile(info, entry.fh)  # copies exactly `size` bytes: what was there under the locks


def default_backup_path(root: Path, now: dt.datetime | None = None) -> Path:
    """backups/<UTC time>.tar.gz, e.g. backups/20261201T213000Z.tar.gz."""
    now = now or dt.datetime.now(dt.UTC)
    return backups_dir(root) / f"{now.astimezone(dt.UTC):%Y%m%dT%H%M%SZ}.tar.gz"


def _install(tmp: Path, out: Path | None, root: Path, suffix: str) -> Path:
    """Put the finished temporary file in place: `out` is replaced; a default name is never overwritten."""
    if out is not None:
        os.replace(tmp, out)
        return out
    stem = default_backup_path(root).name.removesuffix(".tar.gz") + suffix
    for n in range(1, 1000):
        path = backups_dir(root) / (f"{stem}.tar.gz" if n == 1 else f"{stem}-{n}.tar.gz")
        try:
            os.link(tmp, path)  # fails when the name exists: two backups in one second keep both
        except FileExistsError:
            continue
        os.unlink(tmp)
        return path
    raise BackupError("too many backups with the same time", path=backups_dir(root))


def _write_backup(root: Path, entries: list[_Entry], out: Path | None, suffix: str = "") -> BackupResult:
    """Write the snapshot to a private temporary file, fsync it, then give it its name."""
    target_dir = out.parent if out is not None else backups_dir(root)
    try:
        target_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(prefix=".backup.", suffix=".tmp", dir=target_dir)  # 0600
    except OSError as exc:
        raise StorageError.from_os(exc, target_dir, "the backup") from None
    try:
        with os.fdopen(fd, "wb") as fh:
            _write_tar(entries, fh)  # type: ignore[arg-type]
            fh.flush()
            os.fsync(fh.fileno())
        path = _install(Path(tmp), out, root, suffix)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)  # the new name survives a power cut too
        finally:
            os.close(dir_fd)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise StorageError.from_os(exc, out or target_dir, "the backup") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return BackupResult(path, len(entries), path.stat().st_size)


def backup_subscribers(root: Path, out: Path | None = None) -> BackupResult:
    """Write a consistent snapshot of subscribers/ to `out` (default: backups/<UTC time>.tar.gz), mode 0600."""
    if not data_files(root):
        raise BackupError("subscribers/ holds no readers' data yet: nothing to back up", path=data_dir(root))
    with _locked(root):
        entries = _snapshot(root)
    try:
        return _write_backup(root, entries, out)
    finally:
        _close(entries)


# -- restore ---------------------------------------------------------------------------------------------------
def _open_backup(path: Path) -> tarfile.TarFile:
    try:
        return tarfile.open(path, "r:gz")
    except FileNotFoundError:
        raise BackupError("no such file", path=path) from None
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise BackupError(f"not a backup made by `newsletter backup` ({exc})", path=path) from None


def _checked_members(tar: tarfile.TarFile, path: Path, root: Path) -> dict[str, tarfile.TarInfo]:
    """The backup's data files by their path in subscribers/; refuses the whole archive when any member is an
    absolute path, climbs out with `..`, or is a link or a device (tarfile's `data` filter, and stricter)."""
    try:
        members = tar.getmembers()
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise BackupError(f"the backup is damaged ({exc})", path=path) from None
    files: dict[str, tarfile.TarInfo] = {}
    for member in members:
        if member.name.startswith(("/", "\\")):  # the data filter would quietly strip the slash: refuse instead
            raise BackupError(f"refused, nothing was restored: {member.name!r} is an absolute path", path=path)
        try:
            tarfile.data_filter(member, str(root))
        except tarfile.FilterError as exc:
            raise BackupError(f"refused, nothing was restored: {exc}", path=path) from None
        parts = PurePosixPath(member.name).parts
        if not (member.isfile() or member.isdir()):
            raise BackupError(f"refused, nothing was restored: {member.name!r} is a link or a device, not a file",
                              path=path)
        if parts[:1] != (DATA_DIR,) or ".." in parts:
            raise BackupError(f"refused, nothing was restored: {member.name!r} is not inside {DATA_DIR}/",
                              path=path)
        rel = PurePosixPath(*parts[1:]) if len(parts) > 1 else None
        if member.isfile() and rel is not None and is_data_file(Path(rel)):
            files[rel.as_posix()] = member
    if not files:
        raise BackupError(f"holds no files of {DATA_DIR}/: not a backup made by `newsletter backup`", path=path)
    return files


def _stage(tar: tarfile.TarFile, files: dict[str, tarfile.TarInfo], staging: Path, path: Path) -> None:
    """Every file of the backup read whole (and so checked) into `staging`, 0600 and fsynced."""
    for rel, member in files.items():
        target = staging / rel
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            source = tar.extractfile(member)
            assert source is not None  # a regular file, checked above
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE)
            with source, os.fdopen(fd, "wb") as out:
                shutil.copyfileobj(source, out)
                out.flush()
                os.fsync(out.fileno())
        except (tarfile.TarError, EOFError) as exc:
            raise BackupError(f"the backup is damaged ({exc}); nothing was restored", path=path) from None
        except OSError as exc:
            raise StorageError.from_os(exc, target, "a restored file") from None


def _put_in_place(base: Path, staging: Path, files: Iterable[str], replaced: Iterable[Path]) -> None:
    """Each restored file moved over the old one (os.replace: atomic per file); old files it lacks removed."""
    keep = set(files)
    touched = {base}
    try:
        for old in replaced:
            if old.as_posix() not in keep:
                (base / old).unlink()
                touched.add((base / old).parent)
        for name in sorted(keep):
            target = base / name
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(staging / name, target)
            touched.add(target.parent)
        for folder in touched:
            dir_fd = os.open(folder, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
    except OSError as exc:
        raise StorageError.from_os(exc, base, "the restored files") from None


def restore_subscribers(root: Path, path: Path, *, force: bool = False) -> RestoreResult:
    """Put a backup's files into subscribers/. Refused when it already holds data, unless `force`: what is
    there is then backed up first (backups/<time>-before-restore.tar.gz) and replaced. Stop `serve` first: it
    keeps the ledger it has read in memory."""
    from .journal import SENDS_DIR, sends_dir

    base = data_dir(root)
    with _open_backup(path) as tar:
        files = _checked_members(tar, path, root)
        slugs = {PurePosixPath(rel).stem for rel in files if rel.startswith(f"{SENDS_DIR}/")}
        slugs |= {p.stem for p in sends_dir(root).glob("*.jsonl")} if sends_dir(root).is_dir() else set()
        with _locked(root, sends=slugs):
            present = data_files(root)
            saved = None
            if present and not force:
                raise BackupError(f"{DATA_DIR}/ already holds readers' data ({len(present)} file(s)); nothing was "
                                  "restored", path=base,
                                  hint=f"`newsletter restore --force {path}` replaces it, keeping a backup of it first")
            if present:
                entries = _snapshot(root)
                try:
                    saved = _write_backup(root, entries, None, suffix="-before-restore")
                finally:
                    _close(entries)
            staging = Path(tempfile.mkdtemp(prefix=".restore-", dir=base))
            try:
                _stage(tar, files, staging, path)
                _put_in_place(base, staging, files, present)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
    return RestoreResult(len(files), saved)
