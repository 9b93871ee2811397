"""`newsletter sync`: SendGrid's suppression lists (paginated, since the last sync) into the ledger."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import TransportError
from .files import write_atomic
from .ledger import LIFTING, Event, append_events, iter_events, ledger_path, load_ledger
from .recipients import is_plausible, normalize

STATE_NAME = "sync.json"
PAGE = 500  # SendGrid's maximum `limit` for the suppression lists
LISTS = {  # endpoint -> ledger event
    "suppression/unsubscribes": "unsubscribe",
    "suppression/bounces": "bounce",
    "suppression/spam_reports": "spamreport",
    "suppression/invalid_emails": "invalid",
    "asm/suppressions": "unsubscribe",  # unsubscribe-group suppressions, every group
}


@dataclass
class SyncReport:
    """What a sync found and appended, per list."""

    fetched: dict[str, int] = field(default_factory=dict)
    appended: dict[str, int] = field(default_factory=dict)
    since: int = 0


def state_path(root: Path) -> Path:
    """subscribers/sync.json: when the last sync ran."""
    return root / "subscribers" / STATE_NAME


def _created(item: dict[str, Any]) -> int:
    value = item.get("created", item.get("created_at", 0))
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def _resubscribe_times(root: Path) -> dict[str, int]:
    """When each address last resubscribed or confirmed a sign-up (unix seconds): a SendGrid listing older
    than that is stale."""
    times: dict[str, int] = {}
    for e, at in iter_events(ledger_path(root)):
        if e.event in LIFTING and at:
            times[e.email] = int(at.timestamp())
    return times


def sync_suppressions(root: Path, transport: Any, *, full: bool = False) -> SyncReport:
    """Fetch every list page by page and append what the ledger lacks; idempotent."""
    path = state_path(root)
    since = 0
    if path.exists() and not full:
        try:
            since = int(json.loads(path.read_text()).get("last_sync", 0))
        except (ValueError, AttributeError):
            since = 0
    started = int(time.time())
    report = SyncReport(since=since)
    ledger = load_ledger(root)
    resubscribed = _resubscribe_times(root)
    added: dict[str, str] = {}  # what this sync appends, until the ledger file says it
    for endpoint, event in LISTS.items():
        new: list[Event] = []
        offset = fetched = 0
        while True:
            paginated = endpoint.startswith("suppression/")  # /v3/asm/suppressions has no pages
            params: dict[str, Any] = {"limit": PAGE, "offset": offset} if paginated else {}
            if since and paginated:
                params["start_time"] = since - 300  # overlap: lists are eventually consistent
            page = transport.get_json(f"/v3/{endpoint}", params)
            if not isinstance(page, list):
                raise TransportError(f"GET /v3/{endpoint} answered something that is not a list")
            fetched += len(page)
            for item in page:
                email = normalize(str(item.get("email") or ""))
                if not is_plausible(email):
                    continue
                latest = added.get(email) or ledger.event_of(email)
                if latest is not None and latest not in LIFTING:
                    continue  # already suppressed: nothing to add
                if latest in LIFTING and _created(item) <= resubscribed.get(email, 0):
                    continue  # they came back after SendGrid listed them: our ledger's word stands
                detail = str(item.get("reason") or item.get("group_name") or "")[:200]
                new.append(Event(email, event, source="sendgrid", detail=f"{endpoint}: {detail}".strip(": ")))
                added[email] = event  # a later list (or page) naming it again adds nothing
            if not paginated or len(page) < PAGE:
                break
            offset += PAGE
        if new:
            append_events(ledger_path(root), new, what=f"{len(new)} suppression(s) from SendGrid")
        report.fetched[endpoint] = fetched
        report.appended[endpoint] = len(new)
    write_atomic(path, json.dumps({"last_sync": started}) + "\n", what="the time of this sync")
    return report
