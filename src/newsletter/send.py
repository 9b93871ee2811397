"""Dispatch: batching, last-moment suppression, retries, the journal, progress and the report; status."""

from __future__ import annotations

import datetime as dt
import random
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import LedgerError, SendError, StorageError, TransportError
from .journal import Journal, journal_path, load_state, send_lock
from .ledger import Ledger, load_ledger
from .message import MessageBuilder
from .pipeline import load
from .preflight import Prepared, eligible_readers
from .sendgrid import Accepted, SendGridTransport, error_messages

MAX_BACKOFF = 30.0
MAX_RATE_LIMIT_WAIT = 300.0


@dataclass
class Progress:
    """Reported after each batch."""

    readers_done: int
    readers_total: int
    batches_done: int
    batches_total: int
    message: str = ""


@dataclass
class SendReport:
    """The outcome of a run, plus what earlier runs left."""

    sent: int = 0
    sent_batches: int = 0
    suppressed: int = 0
    suppressed_late: int = 0
    already_sent: int = 0
    failed: int = 0
    failed_batches: int = 0
    in_doubt: int = 0
    in_doubt_batches: int = 0
    not_attempted: int = 0
    requests: int = 0
    bytes_sent: int = 0
    elapsed: float = 0.0
    errors: list[str] = field(default_factory=list)
    stopped: str = ""

    @property
    def ok(self) -> bool:
        """Every batch acknowledged and nothing left over."""
        return not (self.failed or self.in_doubt or self.not_attempted or self.stopped)


class Dispatcher:
    """Sends batches through a small pool; records each step in the journal; retries what may be retried."""

    def __init__(self, prepared: Prepared, transport: SendGridTransport | None,
                 progress: Callable[[Progress], None] | None = None, sleep: Callable[[float], None] = time.sleep):
        self.p = prepared
        self.transport = transport
        self.builder = MessageBuilder(prepared)
        self.progress = progress or (lambda _: None)
        self.sleep = sleep
        self.report = SendReport(suppressed=prepared.suppressed, already_sent=prepared.already_sent)
        self.ledger: Ledger = prepared.ledger or load_ledger(prepared.root)
        self.ledger.refresh()  # whatever was appended since the count
        self.ledger_lock = threading.Lock()
        self.report_lock = threading.Lock()
        self.stop = threading.Event()
        self.retries = prepared.config.sendgrid.retries
        self.backoff = prepared.config.sendgrid.backoff
        self.journal: Journal | None = None
        self.batches_done = 0
        self.readers_done = 0
        self.counts = {"readers": 0, "suppressed": 0, "sent": 0, "doubt": 0, "dups": 0}

    # -- one batch -----------------------------------------------------------------------------------
    def _fresh_readers(self, readers: list[tuple[str, str]]) -> list[tuple[str, str]]:
        # Re-read the ledger's new lines right before the batch goes out: a reader who unsubscribed a
        # second ago is not mailed.
        with self.ledger_lock:
            self.ledger.refresh()
            self.ledger.check_readable()  # a line nobody can read may be an opt-out: stop rather than guess
            keep = [r for r in readers if not self.ledger.is_suppressed(r[0])]
        if len(keep) != len(readers):
            with self.report_lock:
                self.report.suppressed_late += len(readers) - len(keep)
        return keep

    def _next_id(self) -> int:
        with self.report_lock:
            b = self.p.journal.next_batch
            self.p.journal.next_batch += 1
            return b

    def run_batch(self, readers: list[tuple[str, str]]) -> None:
        """Send one batch (splitting it on 413), recording everything; never raises TransportError. When the
        journal cannot be written (a full disk) or the ledger cannot be read, the run stops: a request whose
        `attempt` record is not whole never leaves."""
        if self.stop.is_set():
            with self.report_lock:
                self.report.not_attempted += len(readers)
            return
        flight = {"left": False, "b": 0}
        try:
            self._run_batch(readers, flight)
        except (StorageError, LedgerError) as exc:
            self.stop.set()
            with self.report_lock:
                self.report.stopped = self.report.stopped or str(exc)
                fate = ("its answer could not be recorded, so it is in doubt" if flight["left"]
                        else "not sent; a re-run sends it")
                self.report.errors.append(f"batch {flight['b'] or '-'} ({len(readers)} readers): {fate}: {exc}")
                if not flight["left"]:
                    self.report.failed += len(readers)
                    self.report.failed_batches += 1
            self._done(len(readers))

    def _run_batch(self, readers: list[tuple[str, str]], flight: dict[str, Any]) -> None:
        readers = self._fresh_readers(readers)
        if not readers:
            return
        body = self.builder.body(readers)
        b = flight["b"] = self._next_id()
        assert self.journal is not None
        self.journal.write({"t": "batch", "b": b, "emails": [e for e, _ in readers]})
        attempt, rate_waits = 0, 0
        while True:
            attempt += 1
            flight["left"] = False
            self.journal.write({"t": "attempt", "b": b, "n": attempt})  # whole and fsynced, or no request
            try:
                with self.report_lock:
                    self.report.requests += 1
                flight["left"] = True
                accepted = self._send(body)
            except TransportError as exc:
                action = self._classify(exc, attempt, rate_waits)
                if action == "doubt":
                    self.journal.write({"t": "doubt", "b": b, "error": str(exc)})
                    with self.report_lock:
                        self.report.in_doubt += len(readers)
                        self.report.in_doubt_batches += 1
                        self.report.errors.append(f"batch {b} ({len(readers)} readers) in doubt: {exc}")
                    self._done(len(readers))
                    return
                if action == "split" and len(readers) > 1:
                    self.journal.write({"t": "replaced", "b": b, "why": "413: split in two"})
                    half = len(readers) // 2
                    self.run_batch(readers[:half])
                    self.run_batch(readers[half:])
                    return
                if action in ("retry", "ratelimit") and not self.stop.is_set():
                    self.journal.write({"t": "retry", "b": b, "status": exc.status, "error": str(exc)})
                    if action == "ratelimit":
                        rate_waits += 1
                        delay = exc.retry_after if exc.retry_after is not None else self._delay(rate_waits)
                        self.sleep(min(delay + random.uniform(0, 0.25), MAX_RATE_LIMIT_WAIT))
                    else:
                        self.sleep(self._delay(attempt))
                    # A retry is a new dispatch: whoever unsubscribed while we waited is left out.
                    fresh = self._fresh_readers(readers)
                    if len(fresh) != len(readers):
                        self.journal.write({"t": "replaced", "b": b, "why": "unsubscribes while waiting to retry"})
                        if fresh:
                            self.run_batch(fresh)
                        return
                    continue
                self.journal.write({"t": "failed", "b": b, "status": exc.status, "error": str(exc)})
                with self.report_lock:
                    self.report.failed += len(readers)
                    self.report.failed_batches += 1
                    messages = error_messages(exc.body) if exc.status == 400 else []
                    if exc.status == 400:
                        self.report.errors.append(f"batch {b}: SendGrid refused the request (400):")
                        self.report.errors.extend(f"  {m}" for m in messages or [str(exc)])
                    elif exc.status in (401, 403):
                        self.report.errors.append(f"batch {b}: SendGrid refused the API key ({exc.status}): "
                                                  "check SENDGRID_API_KEY and its Mail Send permission")
                    else:
                        self.report.errors.append(f"batch {b} ({len(readers)} readers) failed: {exc}")
                if action == "stop":
                    self.report.stopped = self.report.stopped or str(exc)
                    self.stop.set()
                self._done(len(readers))
                return
            self.journal.write({"t": "ok", "b": b, "status": accepted.status, "id": accepted.message_id})
            with self.report_lock:
                self.report.sent += len(readers)
                self.report.sent_batches += 1
            self._done(len(readers))
            return

    def _send(self, body: dict[str, Any]) -> Accepted:
        if self.transport is None:  # dry run
            return Accepted(status=0, message_id="dry-run")
        return self.transport.send(body)

    def _classify(self, exc: TransportError, attempt: int, rate_waits: int) -> str:
        status = exc.status
        if status is None:
            if exc.sent:
                return "doubt"
            return "retry" if attempt <= self.retries else "give-up"
        if status == 413:
            return "split"
        if status == 429:
            return "ratelimit" if rate_waits < max(self.retries, 3) * 2 else "give-up"
        if status in (400, 401, 403):
            return "stop"
        if status >= 500:
            return "retry" if attempt <= self.retries else "give-up"
        return "stop"

    def _delay(self, attempt: int) -> float:
        # Exponential backoff with full jitter, bounded.
        return random.uniform(0, min(MAX_BACKOFF, self.backoff * 2 ** (attempt - 1))) + self.backoff / 2

    def _done(self, readers: int) -> None:
        with self.report_lock:
            self.batches_done += 1
            self.readers_done += readers
            self.progress(Progress(self.readers_done, self.p.readers, self.batches_done, self.p.batches))

    # -- the whole run -------------------------------------------------------------------------------
    def batches(self) -> Iterator[list[tuple[str, str]]]:
        """The eligible readers, streamed in batches."""
        batch: list[tuple[str, str]] = []
        size = self.p.batch_size
        for reader in eligible_readers(self.p.root, self.ledger, self.p.journal, self.p.options.resend_in_doubt,
                                       self.counts):
            batch.append(reader)
            if len(batch) == size:
                yield batch
                batch = []
        if batch:
            yield batch

    def run(self) -> SendReport:
        """Send every batch; returns the report (exit status is the caller's)."""
        start = time.perf_counter()
        workers = max(1, self.p.options.concurrency or self.p.config.sendgrid.concurrency)
        path = journal_path(self.p.root, self.p.issue.slug)
        with Journal(path) as journal:
            self.journal = journal
            journal.write({"t": "run", "at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                           "readers": self.p.readers, "resend_in_doubt": self.p.options.resend_in_doubt})
            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="send") as pool:
                pending: set[Future[None]] = set()
                try:
                    for batch in self.batches():
                        if self.stop.is_set():
                            with self.report_lock:
                                self.report.not_attempted += len(batch)
                            continue
                        # Bounded queue: a million readers never become a million payloads in memory.
                        while len(pending) >= workers * 2:
                            done, pending = wait(pending, return_when=FIRST_COMPLETED)
                            for f in done:
                                f.result()
                        pending.add(pool.submit(self.run_batch, batch))
                except KeyboardInterrupt:
                    self.stop.set()
                    self.report.stopped = "interrupted"
                for f in pending:
                    f.result()
        # Readers who unsubscribed after the summary was shown: skipped while streaming or at dispatch.
        late = self.counts["suppressed"] + self.report.suppressed_late - self.p.suppressed
        self.report.suppressed_late = max(late, 0)
        # What earlier runs left in doubt (and this run did not resend) still counts.
        state = load_state(path)
        self.report.in_doubt = state.in_doubt_readers
        self.report.in_doubt_batches = state.doubt_batch_count()
        self.report.elapsed = time.perf_counter() - start
        return self.report


def send_test_copies(prepared: Prepared, transport: SendGridTransport | None) -> SendReport:
    """--to: one request, one personalization per address, "[Test]" subject; not journaled."""
    start = time.perf_counter()
    builder = MessageBuilder(prepared)
    readers = []
    seen = set()
    for address in prepared.options.to:
        key = address.strip().lower()
        if key not in seen:
            seen.add(key)
            readers.append((key, ""))
    report = SendReport()
    body = builder.body(readers)
    if transport is not None:
        try:
            transport.send(body)
        except TransportError as exc:
            raise SendError(f"the test copy was not sent: {exc}") from None
    report.sent, report.sent_batches, report.requests = len(readers), 1, 1
    report.elapsed = time.perf_counter() - start
    return report


def dispatch(prepared: Prepared, progress: Callable[[Progress], None] | None = None) -> SendReport:
    """Send (or, with --dry-run, go through the motions); holds the per-issue lock throughout."""
    from filelock import Timeout

    transport = None if prepared.options.dry_run else SendGridTransport(
        prepared.api_key, timeout=prepared.config.sendgrid.timeout)
    if prepared.options.to:
        return send_test_copies(prepared, transport)
    if prepared.options.dry_run:
        return _dry_run(prepared)
    try:
        with send_lock(prepared.root, prepared.issue.slug):
            # Re-read the journal under the lock: another run may have finished since `prepare`.
            prepared.journal = load_state(journal_path(prepared.root, prepared.issue.slug))
            return Dispatcher(prepared, transport, progress).run()
    except Timeout:
        raise SendError(f"another `newsletter send` of {prepared.issue.slug} is running",
                        hint="wait for it to finish; two sends of one issue at once are refused") from None


def _dry_run(prepared: Prepared) -> SendReport:
    """Build every request body (so size and shape problems show) without journaling or sending."""
    import json

    start = time.perf_counter()
    builder = MessageBuilder(prepared)
    d = Dispatcher(prepared, None)
    report = SendReport(suppressed=prepared.suppressed, already_sent=prepared.already_sent)
    for batch in d.batches():
        body = builder.body(batch)
        report.bytes_sent += len(json.dumps(body, ensure_ascii=False).encode())
        report.sent += len(batch)
        report.sent_batches += 1
    report.in_doubt = prepared.journal.in_doubt_readers
    report.in_doubt_batches = prepared.journal.doubt_batch_count()
    report.elapsed = time.perf_counter() - start
    return report


@dataclass
class Status:
    """`newsletter status`: the journal against the current list."""

    slug: str
    runs: int
    sent: int
    sent_batches: int
    pending: int
    suppressed: int
    failed_batches: int
    failed_readers: int
    in_doubt_batches: int
    in_doubt_readers: int
    doubt_details: list[tuple[int, int, str]]


def send_status(root: Path, slug: str) -> Status:
    """What has been sent, what is pending, failed or in doubt."""
    config, issue = load(root, slug)
    del config
    state = load_state(journal_path(root, issue.slug))
    counts = {"readers": 0, "suppressed": 0, "sent": 0, "doubt": 0, "dups": 0}
    pending = sum(1 for _ in eligible_readers(root, load_ledger(root), state, False, counts))
    return Status(
        slug=issue.slug, runs=state.runs, sent=len(state.sent), sent_batches=state.sent_batches, pending=pending,
        suppressed=counts["suppressed"], failed_batches=len(state.failed_batches),
        failed_readers=sum(b.readers for b in state.failed_batches.values()),
        in_doubt_batches=state.doubt_batch_count(), in_doubt_readers=state.in_doubt_readers,
        doubt_details=[(b, s.readers, s.error) for b, s in sorted(state.doubt_batches.items())],
    )
