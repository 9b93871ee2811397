"""files.py: atomic replacement, durable appends under a lock, torn lines, JSON-lines reading, the group commit.

The faults a library call cannot make (a disk that fills mid-write, whether an fsync happened) come from the
LD_PRELOAD shim (tests/shim/shortwrite.c) in a small child process. The child imports the very `newsletter`
package this test imported (PYTHONPATH), so under mutmut it runs the mutant too.
"""

from __future__ import annotations

import errno
import os
import threading
from pathlib import Path

import pytest
from conftest import shim_env, wait_for
from filelock import Timeout
from helpers import run_python

from newsletter.errors import StorageError
from newsletter.files import (
    LOCK_TIMEOUT,
    GroupCommit,
    Tail,
    append_durably,
    append_jsonl,
    atomic_path,
    atomic_writer,
    file_lock,
    open_for_append,
    read_jsonl,
    tail_jsonl,
    write_atomic,
)


def _mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


@pytest.fixture
def umask_027() -> object:
    old = os.umask(0o027)
    yield
    os.umask(old)


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


# -- atomic replacement ----------------------------------------------------------------------------------------
def test_write_atomic_replaces_whole_private_or_as_the_umask_says(tmp_path: Path, umask_027: object) -> None:
    target = tmp_path / "deep" / "er" / "list.csv"  # missing folders are made
    write_atomic(target, "email\nada@readers.net\n", private=True)
    assert target.read_text() == "email\nada@readers.net\n" and _mode(target) == 0o600
    page = tmp_path / "index.html"
    write_atomic(page, "<p>é\r\n</p>")  # text as given: UTF-8, no newline translation
    assert page.read_bytes() == "<p>é\r\n</p>".encode() and _mode(page) == 0o640  # 0o666 less the umask
    write_atomic(page, "v2")
    assert page.read_text() == "v2" and _mode(page) == 0o640 and _leftovers(tmp_path) == []


def test_a_writer_that_fails_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "state.json"
    target.write_text("old")
    with pytest.raises(ZeroDivisionError), atomic_writer(target) as fh:  # not an OSError: raised as it is
        fh.write("half of the new")
        fh.flush()
        1 / 0  # noqa: B018
    assert target.read_text() == "old" and _leftovers(tmp_path) == []
    with pytest.raises(StorageError) as caught, atomic_writer(target, what="the state") as fh:
        fh.write("new")
        raise OSError(errno.ENOSPC, "No space left on device")
    assert target.read_text() == "old" and _leftovers(tmp_path) == []
    assert caught.value.errno == errno.ENOSPC
    assert str(caught.value).startswith(f"disk full: could not record the state in {target}")


@pytest.mark.parametrize("writer", ["atomic_writer", "atomic_path"])
def test_a_folder_that_cannot_be_made_is_a_storage_error(tmp_path: Path, writer: str) -> None:
    (tmp_path / "blocker").write_text("a file where a folder should be")
    target = tmp_path / "blocker" / "out.txt"
    opener = atomic_writer if writer == "atomic_writer" else atomic_path
    with pytest.raises(StorageError) as caught, opener(target, what="the copy"):
        pytest.fail("the block must not run")
    assert "could not record the copy" in str(caught.value) and caught.value.path == target


def test_atomic_path_hands_a_name_then_replaces(tmp_path: Path, umask_027: object) -> None:
    target = tmp_path / "photo.jpg"
    target.write_bytes(b"old")
    with atomic_path(target, what="the photo") as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".photo.jpg.") and tmp.exists()
        tmp.write_bytes(b"new pixels")
        assert target.read_bytes() == b"old"  # nothing replaced before the block ends
    assert target.read_bytes() == b"new pixels" and _mode(target) == 0o640 and _leftovers(tmp_path) == []
    with atomic_path(tmp_path / "private.bin", private=True) as tmp:
        tmp.write_bytes(b"secret")
    assert _mode(tmp_path / "private.bin") == 0o600
    for failure in (OSError(errno.EIO, "I/O error"), KeyError("x")):
        with pytest.raises((StorageError, KeyError)) as caught, atomic_path(target, what="the photo") as tmp:
            tmp.write_bytes(b"torn")
            raise failure
        assert target.read_bytes() == b"new pixels" and _leftovers(tmp_path) == []
        if isinstance(failure, OSError):
            assert isinstance(caught.value, StorageError) and caught.value.errno == errno.EIO
            assert str(caught.value).startswith("I/O error: could not record the photo")
    with pytest.raises(StorageError), atomic_path(target) as tmp:  # the writer removed its file: said
        tmp.unlink()
    assert target.read_bytes() == b"new pixels"


# -- appends ---------------------------------------------------------------------------------------------------
def test_an_append_starts_on_a_fresh_line_and_writes_the_header_once(tmp_path: Path, umask_027: object) -> None:
    path = tmp_path / "sub" / "log.csv"
    fd = open_for_append(path, b"email,event\n")
    os.close(fd)
    assert path.read_bytes() == b"email,event\n" and _mode(path) == 0o600
    append_durably(path, b"a@x.net,unsubscribe\n", what="a line", header=b"email,event\n")
    assert path.read_bytes() == b"email,event\na@x.net,unsubscribe\n"  # no second header
    with open(path, "ab") as fh:
        fh.write(b"b@x.net,unsub")  # what a crash mid-write leaves
    append_durably(path, b"c@x.net,bounce\n", what="a line", header=b"email,event\n")
    assert path.read_bytes() == b"email,event\na@x.net,unsubscribe\nb@x.net,unsub\nc@x.net,bounce\n"
    empty = tmp_path / "empty.csv"
    empty.touch()
    append_durably(empty, b"row\n", what="a line", header=b"head\n")  # empty counts as new: the header first
    assert empty.read_bytes() == b"head\nrow\n"
    public = tmp_path / "public.log"
    os.close(open_for_append(public, private=False))
    assert _mode(public) == 0o640 and public.read_bytes() == b""  # no header asked: nothing written


def test_appends_take_the_files_lock(tmp_path: Path) -> None:
    path = tmp_path / "outbox.jsonl"
    lock = file_lock(path)
    assert lock.lock_file == f"{path}.lock" and lock.timeout == LOCK_TIMEOUT == 60
    with lock:
        with pytest.raises(Timeout):  # another lock object, even in this process, waits: here too long
            file_lock(path, timeout=0.05).acquire()
        with pytest.raises(Timeout):
            append_durably(path, b"x\n", what="a line", lock_timeout=0.05)
        assert not path.exists()  # nothing written without the lock
        append_jsonl(path, [{"held": "by the caller"}], what="a record", locked=True)
    assert list(read_jsonl(path)) == [{"held": "by the caller"}]
    append_jsonl(path, [{"after": 1}], what="a record")  # released: taken and released again
    assert file_lock(path, timeout=0.05).acquire() is not None


def test_an_append_that_cannot_be_made_is_a_storage_error(tmp_path: Path) -> None:
    folder = tmp_path / "signups.jsonl"
    folder.mkdir()  # a folder where the file should be
    with pytest.raises(StorageError) as caught:
        append_jsonl(folder, [{"t": "request"}], what="a sign-up")
    assert caught.value.errno == errno.EISDIR and caught.value.path == folder
    assert "could not record a sign-up" in str(caught.value)


def test_jsonl_records_are_compact_utf8_lines_and_none_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    append_jsonl(path, [], what="nothing")
    assert not path.exists()
    append_jsonl(path, [{"name": "José", "n": 1}, {"t": "x"}], what="two records")
    assert path.read_bytes() == '{"name":"José","n":1}\n{"t":"x"}\n'.encode()
    assert _mode(path) == 0o600


# -- reading ---------------------------------------------------------------------------------------------------
def test_read_jsonl_skips_what_is_not_a_whole_object(tmp_path: Path) -> None:
    path = tmp_path / "log.jsonl"
    assert list(read_jsonl(path)) == []  # no file yet
    path.write_bytes(b'{"a":1}\n[1,2]\n{"torn":\n{"b":2{"c":3}\n' + b"[" * 100_000 + b"\n"
                     + '{"é":"ü"}\n'.encode() + b'{"last":"torn')
    assert list(read_jsonl(path)) == [{"a": 1}, {"é": "ü"}]


def test_tail_jsonl_reads_whole_lines_from_an_offset(tmp_path: Path) -> None:
    path = tmp_path / "log.jsonl"
    assert tail_jsonl(path, 0) == Tail([], 0, False)
    assert tail_jsonl(path, 7) == Tail([], 0, True)  # gone: whoever follows it starts over
    path.write_bytes(b'{"a":1}\n"text"\nnot json\n{"b":2}\n{"c":')
    first = tail_jsonl(path, 0)
    assert first.records == [{"a": 1}, {"b": 2}] and not first.restarted
    assert first.offset == len(b'{"a":1}\n"text"\nnot json\n{"b":2}\n')  # the torn line is read once whole
    with open(path, "ab") as fh:
        fh.write(b'3}\n{"d":4}\n')
    second = tail_jsonl(path, first.offset)
    assert second == Tail([{"c": 3}, {"d": 4}], path.stat().st_size, False)
    assert tail_jsonl(path, second.offset) == Tail([], second.offset, False)  # nothing new
    path.write_bytes(b'{"new":1}\n')  # replaced by a shorter file (a restore)
    assert tail_jsonl(path, second.offset) == Tail([{"new": 1}], 10, True)


# -- the group commit ------------------------------------------------------------------------------------------
def test_a_group_commit_writes_what_queued_meanwhile_in_one_call(tmp_path: Path) -> None:
    calls: list[list[int]] = []
    first_started, release = threading.Event(), threading.Event()

    def write(items: list[int]) -> list[int]:
        calls.append(list(items))
        if len(calls) == 1:
            first_started.set()
            assert release.wait(10)
        return [i * 10 for i in items]

    group: GroupCommit[int, int] = GroupCommit(write)
    results: dict[int, list[int]] = {}

    def submit(n: int) -> None:
        results[n] = group.submit([n, n + 1])

    first = threading.Thread(target=submit, args=(0,))
    first.start()
    assert first_started.wait(10)
    others = [threading.Thread(target=submit, args=(n,)) for n in (10, 20, 30)]
    for t in others:
        t.start()
    wait_for(lambda: len(group._queue) == 3, what="three submissions queued behind the write in progress")
    release.set()
    for t in [first, *others]:
        t.join(10)
    assert calls[0] == [0, 1] and len(calls) == 2 and sorted(calls[1]) == [10, 11, 20, 21, 30, 31]
    assert results == {0: [0, 10], 10: [100, 110], 20: [200, 210], 30: [300, 310]}  # each its own results
    assert group.submit([7]) == [70]  # and the next write starts at once


def test_a_failed_group_write_reaches_every_waiter_and_the_next_write_goes_on(tmp_path: Path) -> None:
    calls: list[list[str]] = []
    started, release = threading.Event(), threading.Event()

    def write(items: list[str]) -> list[str]:
        calls.append(list(items))
        if len(calls) in (1, 3):  # these writes wait, so that others queue behind them
            started.set()
            assert release.wait(10)
        if len(calls) in (1, 4):
            raise StorageError("disk full: could not record a sign-up")
        return [s.upper() for s in items]

    group: GroupCommit[str, str] = GroupCommit(write)
    outcomes: dict[str, str] = {}

    def submit(s: str) -> None:
        try:
            outcomes[s] = ",".join(group.submit([s]))
        except StorageError as exc:
            outcomes[s] = str(exc)

    def round_of(first: str, *queued: str) -> None:
        started.clear()
        release.clear()
        threads = [threading.Thread(target=submit, args=(s,)) for s in (first, *queued)]
        threads[0].start()
        assert started.wait(10)
        for t in threads[1:]:
            t.start()
        wait_for(lambda: len(group._queue) == len(queued), what="the submissions queued")
        release.set()
        for t in threads:
            t.join(10)

    full = "disk full: could not record a sign-up"
    round_of("a", "b", "c")  # the write of "a" fails; "b" and "c", queued meanwhile, are written after it
    assert outcomes == {"a": full, "b": "B", "c": "C"} and [sorted(c) for c in calls] == [["a"], ["b", "c"]]
    round_of("x", "y", "z")  # the write of "x" succeeds; the batch of "y" and "z" fails: both hear it
    assert (outcomes["x"], outcomes["y"], outcomes["z"]) == ("X", full, full)
    assert group.submit(["q"]) == ["Q"] and len(calls) == 5  # nobody hangs, the next write goes on


# -- faults only the OS can make (the shim, in a child process) -------------------------------------------------
WRITES = """
from pathlib import Path
from newsletter.files import append_durably, append_jsonl, atomic_path, write_atomic
d = Path({folder!r})
append_durably(d / "ledger.csv", b"one\\n", what="a line", header=b"h\\n")
append_jsonl(d / "log.jsonl", [{{"a": 1}}], what="a record")
write_atomic(d / "state.json", "0123456789")
with atomic_path(d / "photo.bin") as tmp:
    tmp.write_bytes(b"12345")
"""


def test_every_write_is_fsynced_after_its_bytes(tmp_path: Path, short_write_shim: Path) -> None:
    traced, plain = tmp_path / "traced", tmp_path / "plain"
    traced.mkdir()
    plain.mkdir()
    trace = tmp_path / "trace"
    done = run_python(WRITES.format(folder=str(traced)), {**shim_env(short_write_shim, str(traced)),
                                                      "SHIM_TRACE": str(trace)})
    assert done.returncode == 0, done.stderr
    # the header and the line, then their fsync; each record; the temporary file's bytes, then its fsync
    assert trace.read_text().split("\n")[:-1] == ["w 2", "w 4", "s", "w 8", "s", "w 10", "s", "w 5", "s"]
    exec(WRITES.format(folder=str(plain)), {})  # the same writes in this process: the same bytes
    for name in ("ledger.csv", "log.jsonl", "state.json", "photo.bin"):
        assert (traced / name).read_bytes() == (plain / name).read_bytes(), name


TORN = """
import sys
from pathlib import Path
from newsletter.errors import StorageError
from newsletter.files import append_jsonl
try:
    append_jsonl(Path(sys.argv[1]), [{"n": 2, "who": "victim"}, {"n": 3}], what="two records")
except StorageError as exc:
    print(exc)
    sys.exit(3)
"""


def test_a_short_write_is_an_error_and_the_torn_line_is_closed_by_the_next_append(tmp_path: Path,
                                                                                 short_write_shim: Path) -> None:
    path = tmp_path / "outbox.jsonl"
    append_jsonl(path, [{"n": 1}], what="a record")
    start = tail_jsonl(path, 0)
    # The child's disk fills in the middle of the write: the kernel takes part of it and returns a short count.
    full = run_python(TORN.replace("sys.argv[1]", repr(str(path))), shim_env(short_write_shim, "outbox.jsonl",
                                                                          tear='"who":"vic'))
    assert full.returncode == 3, full.stdout + full.stderr
    assert full.stdout.startswith(f"disk full: could not record two records in {path}")
    assert path.read_bytes() == b'{"n":1}\n{"n":2,"who":"vic'  # what the disk took, and nothing after
    assert list(read_jsonl(path)) == [{"n": 1}] and tail_jsonl(path, start.offset) == Tail([], start.offset, False)
    append_jsonl(path, [{"n": 4}], what="a record")  # room again: a fresh line, the torn one closed and skipped
    assert path.read_bytes() == b'{"n":1}\n{"n":2,"who":"vic\n{"n":4}\n'
    assert list(read_jsonl(path)) == [{"n": 1}, {"n": 4}]
    assert tail_jsonl(path, start.offset).records == [{"n": 4}]
    plain = tmp_path / "plain" / "outbox.jsonl"  # with room on the disk (and so mutmut sees what this test runs)
    plain.parent.mkdir()
    exec(TORN.replace("sys.argv[1]", repr(str(plain))), {})
    assert list(read_jsonl(plain)) == [{"n": 2, "who": "victim"}, {"n": 3}]


def test_tail_jsonl_starts_over_from_any_offset_past_the_end(tmp_path: Path) -> None:
    path = tmp_path / "log.jsonl"
    assert tail_jsonl(path, 1) == Tail([], 0, True)
    path.write_bytes(b'{"a":1}\n')
    assert tail_jsonl(path, 9) == Tail([{"a": 1}], 8, True)  # one byte past the end is past the end


# -- what the tests above leave open (each kills mutants that survived them) -----------------------------------------
@pytest.fixture
def umask_022() -> object:
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_published_files_are_never_executable_and_folders_are_made_at_any_depth(tmp_path: Path,
                                                                               umask_022: object) -> None:
    page = tmp_path / "index.html"
    write_atomic(page, "<p>hi</p>")
    assert _mode(page) == 0o644  # 0o666 less the umask: nobody's execute bit, though the umask allows it
    public = tmp_path / "a" / "b" / "c" / "public.log"  # three missing folders
    os.close(open_for_append(public, private=False))
    assert public.exists() and _mode(public) == 0o644


def test_write_atomic_names_the_file_when_not_told_what_it_is(tmp_path: Path) -> None:
    (tmp_path / "blocker").write_text("a file where a folder should be")
    target = tmp_path / "blocker" / "out.txt"
    with pytest.raises(StorageError) as caught:
        write_atomic(target, "x")
    assert str(caught.value).endswith(f": could not record the file in {target}")


def test_a_disk_full_on_the_header_is_an_os_error_and_leaks_no_descriptor(tmp_path: Path) -> None:
    full = tmp_path / "ledger.csv"
    full.symlink_to("/dev/full")  # every write fails with ENOSPC
    before = len(os.listdir("/proc/self/fd"))
    with pytest.raises(OSError) as caught:
        open_for_append(full, b"email,event\n")
    assert caught.value.errno == errno.ENOSPC and len(os.listdir("/proc/self/fd")) == before
    with pytest.raises(StorageError) as failed:
        append_durably(full, b"row\n", what="a line", header=b"email,event\n")
    assert str(failed.value).startswith(f"disk full: could not record a line in {full}")


def test_the_lock_timeout_given_is_the_one_waited(tmp_path: Path) -> None:
    path = tmp_path / "outbox.jsonl"
    outcome: list[BaseException] = []

    def append() -> None:
        try:
            append_durably(path, b"x\n", what="a line", lock_timeout=0.05)
        except Timeout as exc:
            outcome.append(exc)

    with file_lock(path):
        waiter = threading.Thread(target=append)
        waiter.start()
        waiter.join(10)  # 0.05 s asked; the default would be a minute
        assert not waiter.is_alive() and len(outcome) == 1
    assert not path.exists()


def test_append_jsonl_takes_the_lock_unless_told_it_is_held(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    Path(f"{path}.lock").mkdir()  # a lock that cannot be taken: a writer that takes it fails
    with pytest.raises(StorageError, match="could not record a record"):
        append_jsonl(path, [{"n": 1}], what="a record")
    assert not path.exists()  # nothing written without the lock
    append_jsonl(path, [{"n": 2}], what="a record", locked=True)  # the caller holds it: not taken again
    assert list(read_jsonl(path)) == [{"n": 2}]


# write(2) may return 0 for a non-empty buffer (a FUSE file system does): a disk full in all but name. This shim
# makes every write to a file whose path holds ZERO_MATCH return 0, so that write_all's guard is exercised.
ZERO_WRITE_SHIM = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
ssize_t write(int fd, const void *buf, size_t count) {
    static ssize_t (*real)(int, const void *, size_t);
    const char *match = getenv("ZERO_MATCH");
    char link[64], path[4096];
    if (!real) real = (ssize_t (*)(int, const void *, size_t))dlsym(RTLD_NEXT, "write");
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, path, sizeof path - 1);
    if (match && n > 0) {
        path[n] = 0;
        if (strstr(path, match)) return 0;
    }
    return real(fd, buf, count);
}
"""

ZERO = """
import signal
from pathlib import Path
from newsletter.errors import StorageError
from newsletter.files import append_durably
signal.alarm(10)  # a write loop that takes 0 bytes as progress never ends: die instead
try:
    append_durably(Path({path!r}), b"row\\n", what="a line")
except StorageError as exc:
    print(exc.errno)
    print(exc)
"""


def test_a_write_that_takes_no_byte_is_a_full_disk(tmp_path: Path) -> None:
    import subprocess

    shim = tmp_path / "zerowrite.so"
    (tmp_path / "zerowrite.c").write_text(ZERO_WRITE_SHIM)
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(shim), str(tmp_path / "zerowrite.c"), "-ldl"], check=True)
    path = tmp_path / "ledger.csv"
    done = run_python(ZERO.format(path=str(path)), {"LD_PRELOAD": str(shim), "ZERO_MATCH": "ledger.csv"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [str(errno.ENOSPC), f"disk full: could not record a line in {path}",
                                        "  hint: free some space, then run the command again"]
    plain = tmp_path / "plain" / "ledger.csv"  # with a disk that takes the bytes (and so mutmut sees this test)
    exec(ZERO.format(path=str(plain)).replace("signal.alarm(10)", ""), {})
    assert plain.read_bytes() == b"row\n"
