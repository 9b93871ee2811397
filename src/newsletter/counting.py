"""Counting who gets an issue before a send: the list read against the ledger and the journal, the eligible
readers written to a private spool (`address<TAB>name<TAB>first name` a line) that the dispatch streams.

A send counts in a forked child while it renders and checks the issue: the list pass is most of the preparation
of a large send, and the second core idles meanwhile. A process running other threads counts in place (a child
forked from it could inherit a lock one of them holds), as does one without fork.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import signal
import tempfile
import threading
from pathlib import Path
from typing import IO

from .files import write_all
from .journal import JournalState
from .ledger import ledger_path, load_ledger
from .recipients import Eligibility, eligible
from .subscribers import iter_subscribers, list_path


class Count:
    """A count under way: `finish` waits for it and gives the spool (at its start) and the tally."""

    def __init__(self, root: Path, journal: JournalState, *, resend_in_doubt: bool) -> None:
        # A first run looks nobody up in the journal.
        sent = journal if journal.sent or (journal.doubt and not resend_in_doubt) else None
        self._args = (root, sent, resend_in_doubt)
        self._pid, self._pipe = 0, -1
        self._start()

    def _start(self) -> None:
        root = self._args[0]
        self._ledger_size = _size(ledger_path(root))  # before reading it: a line appended meanwhile shows
        self.ledger = load_ledger(root, strict=False)
        self.ledger.check_readable("nothing was sent")  # an unreadable line may be an opt-out: refuse first
        self.spool: IO[str] = tempfile.TemporaryFile(mode="w+", encoding="utf-8", newline="\n")  # noqa: SIM115 - 0600, deleted when closed
        self.tally = Eligibility()
        if hasattr(os, "fork") and threading.active_count() == 1:
            self._fork()
        else:
            self._count(self.spool)

    def again_if_changed(self) -> None:
        """Count again if the ledger changed since the count read it (`newsletter sync`, an unsubscribe)."""
        if _size(ledger_path(self._args[0])) != self._ledger_size:
            self.abandon()
            self.spool.close()
            self._start()

    def _count(self, out: IO[str]) -> None:
        root, journal, resend = self._args
        lines: list[str] = []
        add = lines.append
        for key, name, first in eligible(iter_subscribers(root), self.ledger, journal, resend_in_doubt=resend,
                                         tally=self.tally, reread=lambda: iter_subscribers(root),
                                         expected=_count_lines(list_path(root))):
            if "\t" in name or "\n" in name or "\r" in name:
                name = " ".join(name.split())
            if first and ("\t" in first or "\n" in first or "\r" in first):
                first = " ".join(first.split())
            add(f"{key}\t{name}\t{first}\n")
            if len(lines) == 4096:  # a write per line costs more than the line (a read-write text file)
                out.write("".join(lines))
                lines.clear()
        out.write("".join(lines))
        out.flush()

    def _fork(self) -> None:
        readable, writable = os.pipe()
        pid = os.fork()
        if pid:
            os.close(writable)
            self._pid, self._pipe = pid, readable
            return
        try:  # the child: count into the spool (the same open file), send the tally back, leave at once
            os.close(readable)
            report: tuple[str, object]
            try:
                with os.fdopen(os.dup(self.spool.fileno()), "w", encoding="utf-8", newline="\n") as out:
                    self._count(out)
                report = ("ok", self.tally)
            except BaseException as exc:  # noqa: BLE001 - carried to the parent, which raises it
                report = ("error", exc)
            try:
                data = pickle.dumps(report)
            except Exception:  # noqa: BLE001 - an error that cannot travel is described instead
                data = pickle.dumps(("error", RuntimeError(f"counting the readers failed: {report[1]!r}")))
            write_all(writable, data)
        finally:
            os._exit(0)  # no clean-up of the parent's state: its buffers, its spamd, its files are its own

    def finish(self) -> tuple[IO[str], Eligibility]:
        """The spool, read from its start, and the tally; raises what the count raised (a list that cannot be
        read, say)."""
        if self._pid:
            chunks = []
            while chunk := os.read(self._pipe, 1 << 16):
                chunks.append(chunk)
            self._reap()
            kind, value = pickle.loads(b"".join(chunks)) if chunks else ("error", RuntimeError(
                "counting the readers stopped without a word (killed?)"))
            if kind != "ok":
                raise value  # type: ignore[misc]
            self.tally = value  # type: ignore[assignment]
        self.spool.seek(0)
        return self.spool, self.tally

    def abandon(self) -> None:
        """Stop a count whose send was refused meanwhile."""
        if self._pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._pid, signal.SIGKILL)
            self._reap()

    def _reap(self) -> None:
        os.close(self._pipe)
        os.waitpid(self._pid, 0)
        self._pid, self._pipe = 0, -1


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return -1


def _count_lines(path: Path) -> int:
    """About how many readers the list holds (its lines), read at disk speed: sizes the de-duplication table."""
    try:
        with open(path, "rb") as fh:
            return sum(chunk.count(b"\n") for chunk in iter(lambda: fh.read(1 << 20), b""))
    except OSError:
        return 0
