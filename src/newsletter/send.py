"""Dispatch: batching, last-moment suppression, retries, the journal, progress and the report; status."""

from __future__ import annotations

import random
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import LedgerError, NewsletterError, SendError, StorageError, TransportError
from .journal import Journal, RunInfo, ScheduleInfo, journal_path, load_state, send_lock
from .ledger import Ledger, load_ledger
from .preflight import Prepared
from .recipients import Eligibility, Reader, eligible, unique

if TYPE_CHECKING:  # imported where used: a cold send starts SpamAssassin before it imports the rest
    from concurrent.futures import Future, ThreadPoolExecutor

    from .sendgrid import Accepted, SendGridTransport

if TYPE_CHECKING:
    from .archive import ArchiveResult

MAX_BACKOFF = 30.0
SWITCH_INTERVAL = 0.0005
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
    warnings: list[str] = field(default_factory=list)  # what went wrong after the send, which still succeeded
    archive: ArchiveResult | None = None  # the archive rebuilt after a complete send

    @property
    def ok(self) -> bool:
        """Every batch acknowledged and nothing left over."""
        return not (self.failed or self.in_doubt or self.not_attempted or self.stopped)


class Action(StrEnum):
    """What to do about a request that SendGrid did not accept."""

    DOUBT = "doubt"  # the request may have been delivered: record it, never resend on our own
    SPLIT = "split"  # 413: too large, send it in two halves
    RETRY = "retry"  # 5xx or a connection that failed before the request left: back off, try again
    RATE_LIMIT = "ratelimit"  # 429: wait for X-RateLimit-Reset, try again
    STOP = "stop"  # 400/401/403: every later request would be refused too
    GIVE_UP = "give-up"  # retries exhausted: this batch failed, the run goes on


def classify(exc: TransportError, attempt: int, rate_waits: int, retries: int) -> Action:
    """The action for a failed request: the `attempt`-th of its batch, after `rate_waits` waits for a 429."""
    status = exc.status
    if status is None:
        if exc.sent:
            return Action.DOUBT
        return Action.RETRY if attempt <= retries else Action.GIVE_UP
    if status == 413:
        return Action.SPLIT
    if status == 429:
        return Action.RATE_LIMIT if rate_waits < max(retries, 3) * 2 else Action.GIVE_UP
    if status in (400, 401, 403):
        return Action.STOP
    if status >= 500:
        return Action.RETRY if attempt <= retries else Action.GIVE_UP
    return Action.STOP


def backoff_delay(attempt: int, backoff: float) -> float:
    """Exponential backoff with full jitter, bounded; never less than half of `backoff`."""
    return random.uniform(0, min(MAX_BACKOFF, backoff * 2 ** (attempt - 1))) + backoff / 2


@dataclass
class _Flight:
    """One batch's progress, for the report when the journal cannot be written."""

    b: int = 0
    left: bool = False  # a request may have reached SendGrid since the last whole `attempt` record


class Dispatcher:
    """Sends batches through a small pool; records each step in the journal; retries what may be retried."""

    def __init__(self, prepared: Prepared, transport: SendGridTransport | None,
                 progress: Callable[[Progress], None] | None = None, sleep: Callable[[float], None] = time.sleep,
                 batch_id: str = ""):
        self.p = prepared
        self.transport = transport
        self.batch_id = batch_id  # SendGrid's, for a scheduled send
        self.builder = prepared.builder(batch_id)
        self.progress = progress or (lambda _: None)
        self.sleep = sleep
        self.report = SendReport(suppressed=prepared.tally.suppressed, already_sent=prepared.tally.already_sent)
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
        self.tally = Eligibility()

    # -- one batch -----------------------------------------------------------------------------------
    def _fresh_readers(self, readers: list[Reader]) -> list[Reader]:
        # Re-read the ledger's new lines right before the batch goes out: a reader who unsubscribed a
        # second ago is not mailed.
        with self.ledger_lock:
            self.ledger.refresh()
            self.ledger.check_readable()  # a line nobody can read may be an opt-out: stop rather than guess
            suppressed = self.ledger.is_suppressed_key  # the readers' addresses are normalised already
            keep = [r for r in readers if not suppressed(r[0])]
        if len(keep) != len(readers):
            with self.report_lock:
                self.report.suppressed_late += len(readers) - len(keep)
        return keep

    def _next_id(self) -> int:
        with self.report_lock:
            b = self.p.journal.next_batch
            self.p.journal.next_batch += 1
            return b

    def run_batch(self, readers: list[Reader], body: bytes | None = None) -> None:
        """Send one batch (splitting it on 413), recording everything; never raises TransportError. When the
        journal cannot be written (a full disk) or the ledger cannot be read, the run stops: a request whose
        `attempt` record is not whole never leaves. `body` is the batch's request encoded beforehand, used when
        nobody in it unsubscribed since."""
        if self.stop.is_set():
            with self.report_lock:
                self.report.not_attempted += len(readers)
            return
        flight = _Flight()
        try:
            self._run_batch(readers, flight, body)
        except (StorageError, LedgerError) as exc:
            self.stop.set()
            with self.report_lock:
                self.report.stopped = self.report.stopped or str(exc)
                fate = ("its answer could not be recorded, so it is in doubt" if flight.left
                        else "not sent; a re-run sends it")
                self.report.errors.append(f"batch {flight.b or '-'} ({len(readers)} readers): {fate}: {exc}")
                if not flight.left:
                    self.report.failed += len(readers)
                    self.report.failed_batches += 1
                else:
                    self.report.in_doubt += len(readers)
                    self.report.in_doubt_batches += 1
            self._done(len(readers))

    def _run_batch(self, readers: list[Reader], flight: _Flight, body: bytes | None) -> None:
        fresh = self._fresh_readers(readers)
        if not fresh:
            return
        if body is None or len(fresh) != len(readers):
            body = self.builder.encoded(fresh)
        readers = fresh
        b = flight.b = self._next_id()
        assert self.journal is not None
        self.journal.batch(b, [r[0] for r in readers])
        attempt, rate_waits = 0, 0
        while True:
            attempt += 1
            flight.left = False
            self.journal.attempt(b, attempt)  # whole and fsynced, or no request
            try:
                with self.report_lock:
                    self.report.requests += 1
                flight.left = True
                accepted = self._send(body)
            except TransportError as exc:
                action = classify(exc, attempt, rate_waits, self.retries)
                if action in (Action.RETRY, Action.RATE_LIMIT) and not self.stop.is_set():
                    rate_waits += action is Action.RATE_LIMIT
                    if self._wait_to_retry(b, readers, exc, action, attempt, rate_waits):
                        continue
                    return
                self._not_accepted(b, readers, exc, action)
                return
            self.journal.ok(b, accepted.status, accepted.message_id)
            with self.report_lock:
                self.report.sent += len(readers)
                self.report.sent_batches += 1
            self._done(len(readers))
            return

    def _wait_to_retry(self, b: int, readers: list[Reader], exc: TransportError, action: Action,
                       attempt: int, rate_waits: int) -> bool:
        """Record the retry and wait; False when the batch was replaced by one without late unsubscribers."""
        assert self.journal is not None
        self.journal.retry(b, exc.status, str(exc))
        if action is Action.RATE_LIMIT:
            delay = exc.retry_after if exc.retry_after is not None else backoff_delay(rate_waits, self.backoff)
            self.sleep(min(delay + random.uniform(0, 0.25), MAX_RATE_LIMIT_WAIT))
        else:
            self.sleep(backoff_delay(attempt, self.backoff))
        # A retry is a new dispatch: whoever unsubscribed while we waited is left out.
        fresh = self._fresh_readers(readers)
        if len(fresh) == len(readers):
            return True
        self.journal.replaced(b, "unsubscribes while waiting to retry")
        if fresh:
            self.run_batch(fresh)
        return False

    def _not_accepted(self, b: int, readers: list[Reader], exc: TransportError, action: Action) -> None:
        """A request that will not be retried: in doubt, split in two, or failed (stopping the run if need be)."""
        assert self.journal is not None
        if action is Action.SPLIT and len(readers) > 1:
            self.journal.replaced(b, "413: split in two")
            half = len(readers) // 2
            self.run_batch(readers[:half])
            self.run_batch(readers[half:])
            return
        if action is Action.DOUBT:
            self.journal.doubt(b, str(exc))
            with self.report_lock:
                self.report.in_doubt += len(readers)
                self.report.in_doubt_batches += 1
                self.report.errors.append(f"batch {b} ({len(readers)} readers) in doubt: {exc}")
            self._done(len(readers))
            return
        self.journal.failed(b, exc.status, str(exc))
        with self.report_lock:
            self.report.failed += len(readers)
            self.report.failed_batches += 1
            self.report.errors.extend(_failure_lines(b, len(readers), exc))
        if action is Action.STOP:
            self.report.stopped = self.report.stopped or str(exc)
            self.stop.set()
        self._done(len(readers))

    def _send(self, body: bytes) -> Accepted:
        from .sendgrid import Accepted

        if self.transport is None:  # dry run
            return Accepted(status=0, message_id="dry-run")
        return self.transport.send_encoded(body)

    def _done(self, readers: int) -> None:
        with self.report_lock:
            self.batches_done += 1
            self.readers_done += readers
            self.progress(Progress(self.readers_done, self.p.readers, self.batches_done, self.p.batches))

    # -- the whole run -------------------------------------------------------------------------------
    def batches(self) -> Iterator[tuple[list[Reader], bytes | None]]:
        """The eligible readers, streamed in batches, each with its request body when it was encoded already."""
        while self.p.prebuilt:  # handed over one by one: a body sent is a body freed
            ready, body = self.p.prebuilt.pop(0)
            if self.p.nobody_sent:
                yield ready, body
            else:  # another run sent some of them since they were counted
                unsent = list(self.p.unsent(ready))
                if unsent:
                    yield unsent, body if len(unsent) == len(ready) else None
        batch: list[Reader] = []
        size = self.p.batch_size
        from .subscribers import iter_subscribers

        root = self.p.root
        stream = self.p.readers_from_spool() if self.p.spool is not None else eligible(
            iter_subscribers(root), self.ledger, self.p.journal, resend_in_doubt=self.p.options.resend_in_doubt,
            tally=self.tally, reread=lambda: iter_subscribers(root))
        for reader in stream:
            batch.append(reader)
            if len(batch) == size:
                yield batch, None
                batch = []
        if batch:
            yield batch, None

    def run(self) -> SendReport:
        """Send every batch; returns the report (exit status is the caller's)."""
        start = time.perf_counter()
        workers = max(1, self.p.options.concurrency or self.p.config.sendgrid.concurrency)
        path = journal_path(self.p.root, self.p.issue.slug)
        with Journal(path) as journal:
            self.journal = journal
            if self.batch_id and self.p.options.at is not None:
                journal.schedule(self.batch_id, self.p.options.at)
            journal.run(self.p.readers, self.p.options.resend_in_doubt, self.batch_id)
            from concurrent.futures import ThreadPoolExecutor

            # The workers do a little Python between long waits on SendGrid, while the feeder encodes bodies: a
            # short switch interval hands them the interpreter lock sooner (0.5 ms, not 5: measured, a 100,000
            # reader send is about 20% faster).
            interval = sys.getswitchinterval()
            sys.setswitchinterval(SWITCH_INTERVAL)
            try:
                with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="send") as pool:
                    self._feed(pool, workers)
            finally:
                sys.setswitchinterval(interval)
            try:
                if not self.report.stopped:
                    journal.end()  # synced, and with it every outcome written before
                else:
                    journal.sync()
            except StorageError as exc:
                # The outcomes may not be on disk: the next run would report their batches in doubt. Say so.
                self.report.stopped = self.report.stopped or str(exc)
                self.report.errors.append(str(exc))
        if self.p.spool is None:
            # Readers who unsubscribed after the summary was shown: skipped while streaming or at dispatch.
            late = self.tally.suppressed + self.report.suppressed_late - self.p.tally.suppressed
            self.report.suppressed_late = max(late, 0)
        if self.p.journal.doubt:
            # What earlier runs left in doubt (and this run did not resend) still counts: replay the journal.
            # Without earlier doubt the run's own count is the whole truth, and a million-reader journal is not
            # read back into memory.
            state = load_state(path)
            self.report.in_doubt = state.in_doubt_readers
            self.report.in_doubt_batches = state.doubt_batch_count()
        self.report.elapsed = time.perf_counter() - start
        return self.report

    def _feed(self, pool: ThreadPoolExecutor, workers: int) -> None:
        from concurrent.futures import FIRST_COMPLETED, wait

        pending: set[Future[None]] = set()
        try:
            for batch, body in self.batches():
                if self.stop.is_set():
                    with self.report_lock:
                        self.report.not_attempted += len(batch)
                    continue
                if body is None:
                    # Encoded here while the workers wait on SendGrid, so that a worker only checks the batch
                    # against the ledger (encoding it again if someone unsubscribed since), journals and posts.
                    body = self.builder.encoded(batch)
                # Bounded queue: a million readers never become a million payloads in memory.
                while len(pending) >= workers * 2:
                    done, pending = wait(pending, return_when=FIRST_COMPLETED)
                    for f in done:
                        f.result()
                pending.add(pool.submit(self.run_batch, batch, body))
        except KeyboardInterrupt:
            self.stop.set()
            self.report.stopped = "interrupted"
        for f in pending:
            f.result()


def _failure_lines(b: int, readers: int, exc: TransportError) -> list[str]:
    from .sendgrid import error_messages

    if exc.status == 400:
        return [f"batch {b}: SendGrid refused the request (400):"] + [
            f"  {m}" for m in error_messages(exc.body) or [str(exc)]]
    if exc.status in (401, 403):
        return [f"batch {b}: SendGrid refused the API key ({exc.status}): "
                "check SENDGRID_API_KEY and its Mail Send permission"]
    return [f"batch {b} ({readers} readers) failed: {exc}"]


def send_test_copies(prepared: Prepared, transport: SendGridTransport | None) -> SendReport:
    """--to: one request, one personalization per address, "[Test]" subject; not journaled."""
    start = time.perf_counter()
    builder = prepared.builder()
    readers = [(key, "", "") for key, *_ in unique([(a, "", "") for a in prepared.options.to])]
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

    from .sendgrid import SendGridTransport

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
            batch_id = _new_schedule(prepared, transport) if prepared.options.at is not None else ""
            _freeze_the_heap()
            report = Dispatcher(prepared, transport, progress, batch_id=batch_id).run()
    except Timeout:
        raise SendError(f"another `newsletter send` of {prepared.issue.slug} is running",
                        hint="wait for it to finish; two sends of one issue at once are refused") from None
    if report.ok:
        _rebuild_archive(prepared, report)
    return report


def _rebuild_archive(prepared: Prepared, report: SendReport) -> None:
    """The archive (build/site) rebuilt, so the issue just sent appears there without another step. A failure
    is a warning: the mail went out, and `newsletter archive` can be run again."""
    from .archive import build_archive, site_dir

    try:
        report.archive = build_archive(prepared.root, site_dir(prepared.root))
    except (NewsletterError, OSError) as exc:
        report.warnings.append(f"warning: the archive was not rebuilt ({exc}); run `newsletter archive`")


def _freeze_the_heap() -> None:
    """When the send has its process to itself (the command line: no other thread), what exists before it (the
    modules, the templates, the rendered issue: some 36,000 objects) is collected once and then frozen: every
    full garbage collection, during a long send and the few at exit, costs ~30 ms less (0.13 s a run, measured).
    Not in a process that runs other threads (a test runner, a server): what they drop later would never be
    collected."""
    import gc

    if threading.active_count() == 1:
        gc.collect()
        gc.freeze()


def _new_schedule(prepared: Prepared, transport: SendGridTransport | None) -> str:
    """A SendGrid batch id for a scheduled send; refused while another schedule of the issue is pending."""
    pending = prepared.journal.pending_schedule()
    if pending is not None:
        raise SendError(f"{prepared.issue.slug} is already scheduled for {pending.send_at} "
                        f"(batch {pending.batch_id})",
                        hint=f"`newsletter unschedule --issue {prepared.issue.slug}` first, then schedule it again")
    assert transport is not None
    try:
        return transport.create_batch()
    except TransportError as exc:
        raise SendError(f"cannot create a batch id for the scheduled send, nothing was sent: {exc}") from None


def _dry_run(prepared: Prepared) -> SendReport:
    """Build every request body (so size and shape problems show) without journaling or sending."""
    start = time.perf_counter()
    builder = prepared.builder()
    d = Dispatcher(prepared, None)
    report = SendReport(suppressed=prepared.tally.suppressed, already_sent=prepared.tally.already_sent)
    for batch, _ in d.batches():
        report.bytes_sent += len(builder.encoded(batch))
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
    runs: list[RunInfo]
    schedules: list[ScheduleInfo]
    sent: int
    scheduled: int  # of `sent`: held by SendGrid for a scheduled send that has not gone out yet
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
    from .build import load
    from .subscribers import iter_subscribers

    _, issue = load(root, slug)
    state = load_state(journal_path(root, issue.slug))
    tally = Eligibility()
    pending = sum(1 for _ in eligible(iter_subscribers(root), load_ledger(root), state, resend_in_doubt=False,
                                      tally=tally, reread=lambda: iter_subscribers(root)))
    return Status(
        slug=issue.slug, runs=state.runs(), schedules=state.schedules, sent=state.sent_readers,
        scheduled=state.waiting_readers(),
        sent_batches=state.sent_batches, pending=pending, suppressed=tally.suppressed,
        failed_batches=len(state.failed_batches),
        failed_readers=sum(b.readers for b in state.failed_batches.values()),
        in_doubt_batches=state.doubt_batch_count(), in_doubt_readers=state.in_doubt_readers,
        doubt_details=[(b, s.readers, s.error) for b, s in sorted(state.doubt_batches.items())],
    )
