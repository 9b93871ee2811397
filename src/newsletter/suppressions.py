"""SendGrid's suppression lists kept in agreement with the ledger: push, pull, and `newsletter sync` (both).

Push. SendGrid mirrors the ledger's *state*; it never replays its events. For every address a ledger line
named since the pushed offset (`subscribers/sendgrid-push.json`), the push computes the address's current
state from the whole ledger, SendGrid's own events included, and makes SendGrid agree: an address suppressed by
the reader's own opt-out (unsubscribe, spam report) that SendGrid did not report itself is added to the
unsubscribe group (`sendgrid.asm_group_id`) or, without one, to the global unsubscribes; an address that is
not suppressed is removed there (and from the global list). An address the ledger suppresses is never
removed, whoever recorded what. The queue is the ledger itself: what could not be pushed (no key, the API
down) stays beyond the offset until the next push.

Pull. SendGrid's lists (unsubscribes, groups, bounces, spam reports, invalid) are recorded in the ledger with
the time SendGrid listed them, so the ledger's rule decides: a listing older than the reader's return changes
nothing.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import NewsletterError, TransportError
from .files import file_lock, write_atomic
from .ledger import Event, Kind, Ledger, Source, iso, load_ledger
from .recipients import is_plausible, normalize
from .worker import RetryingWorker

PUSH_STATE_NAME = "sendgrid-push.json"
PULL_STATE_NAME = "sync.json"
PER_REQUEST = 1000  # addresses per suppression request
PAGE = 500  # SendGrid's maximum `limit` for the suppression lists
PUSH_TIMEOUT = 10.0  # seconds the push after a command waits for SendGrid at most: what is not told waits
LISTS = {  # endpoint -> ledger event
    "suppression/unsubscribes": Kind.UNSUBSCRIBE,
    "suppression/bounces": Kind.BOUNCE,
    "suppression/spam_reports": Kind.SPAMREPORT,
    "suppression/invalid_emails": Kind.INVALID,
    "asm/suppressions": Kind.UNSUBSCRIBE,  # unsubscribe-group suppressions, every group
}


def push_state_path(root: Path) -> Path:
    """subscribers/sendgrid-push.json: how far into the ledger SendGrid has been told."""
    return root / "subscribers" / PUSH_STATE_NAME


def pull_state_path(root: Path) -> Path:
    """subscribers/sync.json: when SendGrid's lists were last read."""
    return root / "subscribers" / PULL_STATE_NAME


def _read_state(path: Path, key: str) -> int:
    try:
        return int(json.loads(path.read_text(encoding="utf-8")).get(key, 0))
    except (OSError, ValueError, AttributeError, TypeError):
        return 0


# -- push ----------------------------------------------------------------------------------------------------
@dataclass
class Plan:
    """What SendGrid must be told: addresses to suppress and to lift, and the ledger offset that ends it."""

    add: list[str] = field(default_factory=list)
    remove: list[str] = field(default_factory=list)
    end: int = 0

    def __len__(self) -> int:
        return len(self.add) + len(self.remove)


def plan(ledger: Ledger) -> Plan:
    """The current state of every address touched since the pushed offset, as SendGrid must hold it."""
    touched, end = ledger.touched_since(_read_state(push_state_path(ledger.root), "offset"))
    out = Plan(end=end)
    for key in touched:
        if not ledger.is_suppressed_key(key):
            out.remove.append(key)
        elif (kind := ledger.event_of(key)) is not None and kind.opt_out and not ledger.told_by_sendgrid(key):
            out.add.append(key)
        # Suppressed for another reason (a bounce, an invalid address), or by SendGrid's own lists: it holds those.
    return out


def push(ledger: Ledger, transport: Any, group_id: int | None) -> int:
    """Make SendGrid agree with the ledger for every address touched since the last push; returns how many
    addresses. Raises TransportError: the offset then stays, and the next push tells it all again (telling
    twice is harmless)."""
    with file_lock(push_state_path(ledger.root)):
        ledger.refresh()
        todo = plan(ledger)
        for i in range(0, len(todo.add), PER_REQUEST):
            transport.add_suppressions(todo.add[i:i + PER_REQUEST], group_id)
        for email in todo.remove:
            transport.remove_suppression(email, group_id)
            if group_id is not None:  # an opt-out SendGrid recorded globally (its own link) lifts there too
                transport.remove_suppression(email, None)
        if todo.end != _read_state(push_state_path(ledger.root), "offset"):
            write_atomic(push_state_path(ledger.root), json.dumps({"offset": todo.end}) + "\n",
                         what="how far SendGrid was told")
        return len(todo)


def _transport(root: Path) -> tuple[Any, int | None]:
    from .config import load_config
    from .sendgrid import transport_from_env

    config = load_config(root)
    # `sendgrid.timeout` bounds every request to SendGrid; a command's push is bounded shorter still.
    return (transport_from_env(config.sendgrid.timeout, at_most=PUSH_TIMEOUT),
            config.sendgrid.asm_group_id)


def push_now(ledger: Ledger) -> tuple[int, str]:
    """What follows a write on the command line: push at once when SENDGRID_API_KEY is set. Returns (addresses
    pushed, why something waits: "" when nothing does). Never raises: what is not pushed waits, durably."""
    from .config import API_KEY_ENV, env_set

    if not env_set(API_KEY_ENV):
        return 0, f"{API_KEY_ENV} is not set" if len(plan(ledger)) else ""
    try:
        transport, group = _transport(ledger.root)
        return push(ledger, transport, group), ""
    except (TransportError, NewsletterError, OSError) as exc:
        return 0, str(exc)


def open_ledger(root: Path, *, strict: bool = True) -> Ledger:
    """The ledger for a command that writes to it: each record is followed by a push to SendGrid."""
    return load_ledger(root, strict=strict, follow=push_now)


class BackgroundPusher(RetryingWorker):
    """What follows a write inside `serve`: a thread pushes after each nudge, outside the request, and retries
    with backoff while something waits (SendGrid down), so an opt-out reaches SendGrid without a `sync`."""

    name = "opt-outs not pushed to SendGrid yet"

    def __init__(self, ledger: Ledger, *, retry: float = 30.0, max_retry: float = 900.0) -> None:
        super().__init__(retry=retry, max_retry=max_retry)
        self.ledger = ledger
        self.pushed = 0

    def follow(self, ledger: Ledger) -> tuple[int, str]:
        """The Ledger follower: wake the thread; the request does not wait for SendGrid."""
        self.nudge()
        return 0, ""

    def _round(self) -> str:
        pushed, why = push_now(self.ledger)
        self.pushed += pushed
        return why


# -- pull ----------------------------------------------------------------------------------------------------
@dataclass
class SyncReport:
    """What a sync pushed, and what it found and recorded per list."""

    pushed: int = 0
    fetched: dict[str, int] = field(default_factory=dict)
    appended: dict[str, int] = field(default_factory=dict)
    since: int = 0


def _created(item: dict[str, Any]) -> int:
    value = item.get("created", item.get("created_at", 0))
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def _pages(transport: Any, endpoint: str, since: int) -> Any:
    """Each page of one list (`/v3/asm/suppressions` has no pages)."""
    paginated = endpoint.startswith("suppression/")
    offset = 0
    while True:
        params: dict[str, Any] = {"limit": PAGE, "offset": offset} if paginated else {}
        if since and paginated:
            params["start_time"] = since - 300  # overlap: lists are eventually consistent
        page = transport.get_json(f"/v3/{endpoint}", params)
        if not isinstance(page, list):
            raise TransportError(f"GET /v3/{endpoint} answered something that is not a list")
        yield page
        if not paginated or len(page) < PAGE:
            return
        offset += PAGE


def pull(ledger: Ledger, transport: Any, *, full: bool = False, report: SyncReport | None = None) -> SyncReport:
    """Read SendGrid's lists (page by page, since the last pull unless `full`) into the ledger; idempotent."""
    root = ledger.root
    since = 0 if full else _read_state(pull_state_path(root), "last_sync")
    started = int(time.time())
    report = report or SyncReport()
    report.since = since
    for endpoint, kind in LISTS.items():
        events: list[Event] = []
        fetched = 0
        for page in _pages(transport, endpoint, since):
            fetched += len(page)
            for item in page:
                email = normalize(str(item.get("email") or ""))
                if not is_plausible(email):
                    continue
                detail = str(item.get("reason") or item.get("group_name") or "")[:200]
                # An undated listing counts as old: it never outweighs a reader's later return.
                events.append(Event(email, kind, iso(_created(item) or 1), Source.SENDGRID,
                                    f"{endpoint}: {detail}".strip(": ")))
        recording = ledger.record(events, what=f"suppression(s) from SendGrid's {endpoint}")
        report.fetched[endpoint] = fetched
        report.appended[endpoint] = len(recording.written)
    write_atomic(pull_state_path(root), json.dumps({"last_sync": started}) + "\n", what="the time of this sync")
    return report


def sync(root: Path, transport: Any, *, full: bool = False) -> SyncReport:
    """Push what SendGrid has not heard of, then pull its lists: what `newsletter sync` and every send's
    pre-flight do, so no send starts with opt-outs SendGrid does not know."""
    from .config import load_config

    ledger = load_ledger(root)  # followed by the explicit push below, not after each pulled list
    report = SyncReport(pushed=push(ledger, transport, load_config(root).sendgrid.asm_group_id))
    pull(ledger, transport, full=full, report=report)
    push(ledger, transport, load_config(root).sendgrid.asm_group_id)
    return report


def waiting(root: Path) -> Plan:
    """What waits to reach SendGrid (`newsletter sync --pending`)."""
    return plan(load_ledger(root))
