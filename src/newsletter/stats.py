"""What landed: delivery and engagement of a sent issue, from the send journal and SendGrid's events log."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .ledger import Kind, iter_events, ledger_path
from .webhook import events_path, read_events


@dataclass
class Stats:
    """Engagement of one issue."""

    slug: str
    sent: int
    delivered: int
    bounced: int
    opens: int
    clicks: int
    unsubscribes: int
    spamreports: int
    top_links: list[tuple[str, int]]
    events: int = 0  # SendGrid events received for this issue
    joined_since: int | None = None  # confirmed sign-ups since its first send

    @property
    def waiting_for_events(self) -> bool:
        """Sent, and SendGrid has told us nothing yet: the webhook may not be reaching `serve`."""
        return bool(self.sent) and not self.events

    def rate(self, count: int) -> float:
        """count / sent, 0 when nothing was sent."""
        return count / self.sent if self.sent else 0.0

    def as_dict(self) -> dict[str, Any]:
        """For --json."""
        out: dict[str, Any] = {"issue": self.slug, "sent": self.sent}
        for key in ("delivered", "bounced", "opens", "clicks", "unsubscribes", "spamreports"):
            out[key] = {"count": getattr(self, key), "rate": round(self.rate(getattr(self, key)), 4)}
        out["top_links"] = [{"url": u, "unique_clicks": n} for u, n in self.top_links]
        return out


def _own_unsubscribes(root: Path, slug: str) -> set[str]:
    """Unsubscribes through our own page or one-click POST (the link does not name the issue): those that
    came after this issue's first send and before the next issue's are counted for this one."""
    from .journal import first_run_at, journal_path, sends_dir

    start = first_run_at(journal_path(root, slug))
    if start is None:
        return set()
    later = [t for p in sends_dir(root).glob("*.jsonl") if p.stem != slug and (t := first_run_at(p)) and t > start]
    end = min(later, default=None)
    return {e.email for e, at in iter_events(ledger_path(root), Kind.UNSUBSCRIBE)
            if e.source in ("page", "one-click") and at is not None and at >= start and (end is None or at < end)}


def _joined(root: Path, since: dt.datetime | None) -> int | None:
    from .signup import joined_since

    return None if since is None else joined_since(root, since)


def issue_stats(root: Path, slug: str) -> Stats:
    """Count the events SendGrid attributed to this issue (custom arg `newsletter_issue`), against the readers
    the journal says SendGrid accepted."""
    from .journal import journal_path, load_state

    state = load_state(journal_path(root, slug))
    sent = state.sent_readers
    buckets: dict[str, set[str]] = {k: set() for k in ("delivered", "bounce", "open", "click", "unsub", "spam")}
    links: dict[str, set[str]] = {}
    events = 0
    for e in read_events(events_path(root)):
        if e.get("newsletter_issue") != slug:
            continue
        events += 1
        email = str(e.get("email") or "").lower()
        kind = e.get("event")
        if kind == "delivered":
            buckets["delivered"].add(email)
        elif kind == "bounce" and e.get("type") != "blocked":
            buckets["bounce"].add(email)
        elif kind == "open":
            buckets["open"].add(email)
        elif kind == "click":
            buckets["click"].add(email)
            if e.get("url"):
                links.setdefault(str(e["url"]), set()).add(email)
        elif kind in ("unsubscribe", "group_unsubscribe"):
            buckets["unsub"].add(email)
        elif kind == "spamreport":
            buckets["spam"].add(email)
    buckets["unsub"] |= _own_unsubscribes(root, slug)
    top = sorted(((u, len(s)) for u, s in links.items()), key=lambda x: (-x[1], x[0]))[:10]
    return Stats(slug, sent, len(buckets["delivered"]), len(buckets["bounce"]), len(buckets["open"]),
                 len(buckets["click"]), len(buckets["unsub"]), len(buckets["spam"]), top, events,
                 _joined(root, state.first_sent_at()))
