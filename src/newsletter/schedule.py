"""Scheduled sends (`send --at`) and taking them back: SendGrid's rules, journaled so the truth survives a crash.

SendGrid promises a cancel only when it comes 10 minutes or more before `send_at`, so `unschedule` refuses
closer than that, and `send --at` warns when the send is already too close to be taken back. The intent to
cancel is journaled (and fsynced) before SendGrid is asked; its answer after. A cancel whose answer was never
recorded leaves the batch as good as sent (no re-send can mail its readers twice) until `unschedule` is run
again, which asks SendGrid what it holds.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from .build import load
from .config import Config
from .errors import SendError, StorageError, TransportError
from .journal import Journal, JournalState, ScheduleInfo, journal_path, load_state, send_lock
from .sendgrid import transport_from_env

CANCEL_DEADLINE = dt.timedelta(minutes=10)  # SendGrid cancels only what is at least this far from going out
WARN_WITHIN = dt.timedelta(minutes=15)


def schedule_warning(at: dt.datetime, now: dt.datetime | None = None) -> str:
    """A warning for `send --at` too close to be cancelled later ("" when there is time)."""
    now = now or dt.datetime.now(dt.UTC)
    if at - now >= WARN_WITHIN:
        return ""
    return (f"warning: {at.isoformat(timespec='minutes')} is less than 15 minutes away: once it is within 10 "
            "minutes, SendGrid may already be sending and `newsletter unschedule` can no longer take it back")


def unschedule(root: Path, slug: str, now: dt.datetime | None = None) -> ScheduleInfo:
    """Cancel the issue's pending scheduled send at SendGrid, journaling the intent first and the answer after;
    its readers then count as not sent. Refused within 10 minutes of `send_at`."""
    from filelock import Timeout

    config, issue = load(root, slug)
    path = journal_path(root, issue.slug)
    try:
        with send_lock(root, issue.slug):
            state = load_state(path)
            pending = _pending(state, issue.slug)
            if pending.minutes_left(now) * 60 < CANCEL_DEADLINE.total_seconds():
                raise SendError(f"too late to cancel: SendGrid may already be sending; it goes out at "
                                f"{pending.send_at}", hint="a re-send is refused while that batch may still go out")
            _cancel(config, path, pending)
    except Timeout:
        raise SendError(f"a `newsletter send` of {issue.slug} is running",
                        hint="wait for it to finish, then unschedule") from None
    return pending


def _pending(state: JournalState, slug: str) -> ScheduleInfo:
    pending = state.pending_schedule()
    if pending is None:
        last = state.schedules[-1] if state.schedules else None
        why = (f"; the last one was cancelled at {last.cancelled_at}" if last and last.cancelled_at else
               f"; the last one went out at {last.send_at}" if last else "")
        raise SendError(f"nothing is scheduled for {slug}{why}")
    return pending


def _cancel(config: Config, path: Path, pending: ScheduleInfo) -> None:
    transport = transport_from_env(config.sendgrid.timeout)
    with Journal(path) as journal:
        unknown = pending.cancel_unknown  # asked before, answer never recorded: ask SendGrid what it holds
        journal.cancel_asked(pending.batch_id)  # StorageError here: SendGrid was not asked, nothing changed
        try:
            done = unknown and transport.scheduled_status(pending.batch_id) == "cancel"
            if not done:
                transport.cancel_scheduled(pending.batch_id)
        except TransportError as exc:
            journal.cancel_refused(pending.batch_id, str(exc))
            raise SendError(f"SendGrid did not cancel batch {pending.batch_id}: {exc}",
                            hint="the send is still scheduled; try again") from None
        try:
            journal.cancel(pending.batch_id)
        except StorageError as exc:
            exc.hint = ("SendGrid cancelled it, but that could not be recorded: run `newsletter unschedule` "
                        "again once there is room, to record it")
            raise
