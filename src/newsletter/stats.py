"""What landed: each sent issue's delivery and engagement, from the send journal (who was sent it, when), the
events log (what SendGrid saw; one pass for every issue) and the ledger (our own unsubscribe page, sign-ups)."""

from __future__ import annotations

import contextlib
import datetime as dt
import gc
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import msgspec

from .config import Config, load_config
from .errors import NewsletterError
from .journal import JournalState, load_state, sends_dir
from .ledger import Kind, iter_events, ledger_path
from .recipients import normalize
from .webhook import SOFT_BOUNCE_TYPES, events_path, scan_events

TIMELINE_HOURS = 72
GROWTH_WEEKS = 26
SPAM_WARN, SPAM_GMAIL = 0.001, 0.003  # Gmail: stay under 0.1 %, never reach 0.3 %
HARD_BOUNCE_WARN = 0.02
OWN_UNSUBSCRIBE_SOURCES = ("page", "one-click")  # our own link does not name the issue: the send windows do
# Parameters that tag a link for analytics without changing the page: clicks on one link count together.
_TRACKING_PARAM = re.compile(r"^(utm_\w*|fbclid|gclid|dclid|msclkid|mc_cid|mc_eid|_hsenc|_hsmi|mkt_tok|yclid)$",
                             re.IGNORECASE)


class LinkRole(StrEnum):
    """What a link in an issue is for, when it is one we single out."""

    WORKSHOP = "workshop"  # the promoted workshop's register URL: the CTA
    NEXT_WORKSHOP = "next_workshop"  # the "coming next" workshop, when the CTA block links it
    UNSUBSCRIBE = "unsubscribe"  # every reader's own link, folded into one; not counted as a click


@dataclass(frozen=True)
class Count:
    """A count of unique readers and its rate; both None when it cannot be known (tracking off, no base)."""

    count: int | None
    rate: float | None

    def as_dict(self) -> dict[str, Any]:
        """{"count", "rate"}."""
        return {"count": self.count, "rate": self.rate}


@dataclass(frozen=True)
class Cta:
    """The issue's workshop: its register URL and the unique readers who clicked it."""

    workshop: str
    url: str
    unique_clicks: int | None
    rate: float | None

    def as_dict(self) -> dict[str, Any]:
        """{"workshop", "url", "unique_clicks", "rate"}."""
        return {"workshop": self.workshop, "url": self.url, "unique_clicks": self.unique_clicks, "rate": self.rate}


@dataclass(frozen=True)
class Link:
    """One link of the issue (tracking parameters removed) and the unique readers who clicked it."""

    url: str
    unique_clicks: int
    role: LinkRole | None = None

    def as_dict(self) -> dict[str, Any]:
        """{"url", "unique_clicks", "role"}."""
        return {"url": self.url, "unique_clicks": self.unique_clicks, "role": self.role and str(self.role)}


@dataclass(frozen=True)
class Bounces:
    """Hard bounces, soft ones (blocked, expired, or deferred and never delivered), drops by SendGrid's reason."""

    hard: Count
    soft: Count
    dropped: dict[str, int]

    def as_dict(self) -> dict[str, Any]:
        """{"hard", "soft", "dropped"}."""
        return {"hard": self.hard.as_dict(), "soft": self.soft.as_dict(), "dropped": dict(self.dropped)}


@dataclass
class IssueStats:
    """What one sent issue did. Rates: delivered and bounces of those sent; the rest of those delivered."""

    slug: str
    title: str
    sent_at: dt.datetime | None  # when its first send started
    sent: int
    delivered: Count
    opens: Count  # readers who opened it, Apple Mail Privacy Protection's machine opens left out
    machine_opens: Count
    clicks: Count  # readers who clicked any link but the unsubscribe link
    cta: Cta | None
    links: list[Link]
    bounces: Bounces
    unsubscribes: Count
    spamreports: Count
    warnings: list[str]
    joined_since: int | None
    heard: bool = False  # SendGrid has reported at least one event about this issue

    def as_dict(self) -> dict[str, Any]:
        """For --json: exactly the documented keys."""
        return {
            "issue": self.slug, "sent": self.sent, "delivered": self.delivered.as_dict(),
            "opens": self.opens.as_dict(), "machine_opens": self.machine_opens.as_dict(),
            "clicks": self.clicks.as_dict(), "cta": self.cta.as_dict() if self.cta else None,
            "links": [link.as_dict() for link in self.links], "bounces": self.bounces.as_dict(),
            "unsubscribes": self.unsubscribes.as_dict(), "spamreports": self.spamreports.as_dict(),
            "warnings": list(self.warnings), "joined_since": self.joined_since,
        }


@dataclass(frozen=True)
class Timeline:
    """Unique human opens and clicks, counted up hour by hour over an issue's first hours (index = hour)."""

    slug: str
    opens: list[int]
    clicks: list[int]


@dataclass(frozen=True)
class Week:
    """The list's movement in one week (from Monday): confirmed sign-ups, and readers who left."""

    start: dt.date
    joined: int
    left: int


@dataclass
class Landed:
    """Everything `stats` and `report` show: every sent issue (newest first), the newest one's first hours,
    and the list's growth week by week."""

    issues: list[IssueStats]
    timeline: Timeline | None = None
    growth: list[Week] = field(default_factory=list)


def percent(rate: float | None) -> str:
    """A rate as people read it: `40.0 %`, `0.35 %` below 1 %, `–` when it is not known."""
    if rate is None:
        return "–"
    return f"{rate * 100:.2f} %" if 0 < rate < 0.01 else f"{rate * 100:.1f} %"


def link_key(url: str) -> str:
    """A clicked URL without its tracking parameters (utm_*, ...) and fragment."""
    parts = urlsplit(url.strip())
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if not _TRACKING_PARAM.match(k)]
    return urlunsplit((parts.scheme.lower(), parts.netloc.lower(), parts.path or "/", urlencode(query), ""))


def same_page(a: str, b: str) -> bool:
    """Whether two URLs name the same page: scheme, host and path compared, query and fragment ignored."""
    pa, pb = urlsplit(a.strip()), urlsplit(b.strip())
    return ((pa.scheme.lower(), pa.hostname, pa.port, pa.path.rstrip("/"))
            == (pb.scheme.lower(), pb.hostname, pb.port, pb.path.rstrip("/")))


# -- the one pass over the events log --------------------------------------------------------------------------
class _Fields(msgspec.Struct, gc=False):
    """The fields of a logged event that stats read; the decoder skips the rest."""

    email: str = ""
    event: str = ""
    newsletter_issue: str | None = None
    url: str | None = None
    sg_machine_open: bool = False
    type: str | None = None
    reason: str | None = None


class _Timed(_Fields, gc=False):
    """... and when it happened, for the report's hour-by-hour chart (a million floats are not free)."""

    timestamp: float | None = None


class _Tally:
    """One issue's events as logged: raw addresses per kind, before they are checked against the journal."""

    def __init__(self, timeline: bool) -> None:
        self.delivered: set[str] = set()
        self.opens: set[str] = set()
        self.machine: set[str] = set()
        self.clicks: dict[str, set[str]] = {}  # URL as clicked -> readers
        self.hard: set[str] = set()
        self.soft: set[str] = set()
        self.deferred: set[str] = set()
        self.dropped: dict[str, set[str]] = {}
        self.unsubscribes: set[str] = set()
        self.spamreports: set[str] = set()
        self.timeline = timeline
        self.first_open: dict[str, float] = {}
        self.click_times: list[tuple[str, str, float]] = []

    def add(self, e: _Fields) -> None:
        """One event of this issue (deliveries and most opens are counted inline by the caller)."""
        kind = e.event
        if kind == "open":
            (self.machine if e.sg_machine_open else self.opens).add(e.email)
            if self.timeline and not e.sg_machine_open and isinstance(e, _Timed) and e.timestamp is not None:
                self.first_open[e.email] = min(e.timestamp, self.first_open.get(e.email, e.timestamp))
        elif kind == "click":
            self.clicks.setdefault(e.url or "", set()).add(e.email)
            if self.timeline and isinstance(e, _Timed) and e.timestamp is not None:
                self.click_times.append((e.email, e.url or "", e.timestamp))
        elif kind == "bounce":
            (self.soft if e.type in SOFT_BOUNCE_TYPES else self.hard).add(e.email)
        elif kind == "deferred":
            self.deferred.add(e.email)
        elif kind == "dropped":
            self.dropped.setdefault(" ".join((e.reason or "no reason given").split()), set()).add(e.email)
        elif kind in ("unsubscribe", "group_unsubscribe"):
            self.unsubscribes.add(e.email)
        elif kind == "spamreport":
            self.spamreports.add(e.email)


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """A million short-lived event objects: the cyclic collector has nothing to find in them, only time to lose."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def _tally_events(path: Path, slugs: set[str], timeline_for: str | None) -> dict[str, _Tally]:
    """Read the events log once, counting the events of the issues in `slugs` (the hot loop of `stats`)."""
    tallies: dict[str, _Tally] = {}
    with _gc_paused():
        for e in scan_events(path, _Timed if timeline_for else _Fields):
            tally = tallies.get(e.newsletter_issue)  # type: ignore[arg-type]
            if tally is None:
                slug = e.newsletter_issue
                if slug is None or slug not in slugs:
                    continue
                tally = tallies[slug] = _Tally(slug == timeline_for)
            kind = e.event
            if kind == "delivered":  # deliveries and opens are most of the log: counted inline
                tally.delivered.add(e.email)
            elif kind == "open" and not tally.timeline:
                (tally.machine if e.sg_machine_open else tally.opens).add(e.email)
            else:
                tally.add(e)
    return tallies


# -- the ledger, the journals, the issues ----------------------------------------------------------------------
@dataclass
class _LedgerFacts:
    """What the ledger adds, read once: our own unsubscribes and confirmed sign-ups, with their times."""

    unsubscribes: list[tuple[dt.datetime, str]] = field(default_factory=list)  # page and one-click
    joined: list[tuple[dt.datetime, str]] = field(default_factory=list)
    left: list[tuple[dt.datetime, str]] = field(default_factory=list)  # suppressions of readers, not imports


def _ledger_facts(root: Path) -> _LedgerFacts:
    facts = _LedgerFacts()
    for e, at in iter_events(ledger_path(root)):
        if at is None:
            continue
        at = at if at.tzinfo else at.replace(tzinfo=dt.UTC)
        if e.event is Kind.SUBSCRIBE:
            facts.joined.append((at, e.email))
        elif e.event.suppresses and not e.source.startswith("import:"):
            facts.left.append((at, e.email))
            if e.event is Kind.UNSUBSCRIBE and e.source in OWN_UNSUBSCRIBE_SOURCES:
                facts.unsubscribes.append((at, e.email))
    return facts


@dataclass
class _Sent:
    """One issue the journal says went out."""

    slug: str
    state: JournalState
    start: dt.datetime | None
    end: dt.datetime | None = None  # the next issue's first send: our own unsubscribes before it count here


def _sent_issues(root: Path, only: str | None) -> list[_Sent]:
    """Issues with readers SendGrid accepted (or `only`, sent or not), newest first. Each send window runs from
    an issue's first send to the next issue's, whichever journals say so."""
    from .journal import first_run_at, journal_path

    paths = sorted(sends_dir(root).glob("*.jsonl")) if sends_dir(root).is_dir() else []
    starts = sorted((t if t.tzinfo else t.replace(tzinfo=dt.UTC), p.stem)
                    for p in paths if (t := first_run_at(p)) is not None)
    out = []
    for i, (start, slug) in enumerate(starts):
        if only is not None and slug != only:
            continue
        state = load_state(journal_path(root, slug))
        if state.sent_readers or slug == only:
            out.append(_Sent(slug, state, start, starts[i + 1][0] if i + 1 < len(starts) else None))
    if only is not None and not out:
        out.append(_Sent(only, JournalState(), None))
    return out[::-1]


def _title(root: Path, config: Config, slug: str) -> tuple[str, str]:
    """The issue's title and workshop id; the slug alone when its folder is gone or broken."""
    from .issue import load_issue

    try:
        issue = load_issue(root, slug, config)
    except NewsletterError:
        return slug, ""
    return issue.title, issue.workshop


# -- from tallies to figures -----------------------------------------------------------------------------------
_UNKNOWN = Count(None, None)


def _count(n: int, base: int) -> Count:
    return Count(n, round(n / base, 4) if base else None)


class _SentReaders:
    """Logged addresses -> the readers the journal says were sent the issue (a test copy's reader is not). Each
    distinct logged spelling is normalised and looked up once; sets are then intersected in C."""

    def __init__(self, state: JournalState, tally: _Tally) -> None:
        logged = set().union(tally.delivered, tally.opens, tally.machine, tally.hard, tally.soft, tally.deferred,
                             tally.unsubscribes, tally.spamreports, *tally.clicks.values(), *tally.dropped.values(),
                             tally.first_open, (email for email, _, _ in tally.click_times))
        self.key: dict[str, str] = {}
        for raw in logged:
            key = normalize(raw)
            if state.is_sent_key(key):
                self.key[raw] = key
        self.logged = set(self.key)
        self.as_sent = all(raw == key for raw, key in self.key.items())  # SendGrid echoes what we sent

    def __call__(self, raw: set[str]) -> set[str]:
        hits = raw & self.logged
        return hits if self.as_sent else {self.key[a] for a in hits}


def _links(tally: _Tally, readers_of: _SentReaders, config: Config, workshop_id: str,
           ) -> tuple[list[Link], set[str], set[str]]:
    """Every link with its unique clicks, the readers who clicked any but the unsubscribe link, and those who
    clicked the workshop's."""
    workshop = config.workshops.get(workshop_id)
    upcoming = config.workshops.get(workshop.next) if workshop and workshop.next else None
    unsubscribe, folded = link_key(f"{config.base_url}/unsubscribe/"), f"{config.base_url}/unsubscribe/…"
    grouped: dict[str, set[str]] = {}
    for url, raw in tally.clicks.items():
        key = link_key(url)
        key = folded if key.startswith(unsubscribe) else key  # each reader's own link: one entry, no token shown
        grouped.setdefault(key, set()).update(readers_of(raw))
    links, clickers, cta = [], set(), set()
    for url, readers in grouped.items():
        role = None
        if url == folded:
            role = LinkRole.UNSUBSCRIBE
        elif workshop and workshop.register_url and same_page(url, workshop.register_url):
            role = LinkRole.WORKSHOP
            cta |= readers
        elif upcoming and upcoming.register_url and same_page(url, upcoming.register_url):
            role = LinkRole.NEXT_WORKSHOP
        if role is not LinkRole.UNSUBSCRIBE:
            clickers |= readers
        if readers:
            links.append(Link(url, len(readers), role))
    links.sort(key=lambda link: (-link.unique_clicks, link.url))
    return links, clickers, cta


def _finish(item: _Sent, logged: _Tally | None, root: Path, config: Config, facts: _LedgerFacts) -> IssueStats:
    """One issue's figures from its tally (None: no event yet), its journal and the ledger."""
    heard, tally = logged is not None, logged or _Tally(False)
    state = item.state
    readers = _SentReaders(state, tally)
    title, workshop_id = _title(root, config, item.slug)
    delivered = readers(tally.delivered)
    hard = readers(tally.hard)
    soft = readers(tally.soft) | (readers(tally.deferred) - delivered - hard)
    own = {email for at, email in facts.unsubscribes if item.start is not None and at >= item.start
           and (item.end is None or at < item.end) and state.is_sent_key(email)}
    sent, base = state.sent_readers, len(delivered)
    # Tracking off when this issue went out shows as no event of the kind at all; `None` then, not 0 %.
    opens_off = not config.sendgrid.open_tracking and not (tally.opens or tally.machine)
    clicks_off = not config.sendgrid.click_tracking and not tally.clicks
    links, clickers, cta_readers = _links(tally, readers, config, workshop_id)
    workshop = config.workshops.get(workshop_id)
    cta = None
    if workshop is not None:
        cta_count = _UNKNOWN if clicks_off else _count(len(cta_readers), base)
        cta = Cta(workshop.title, workshop.register_url, cta_count.count, cta_count.rate)
    dropped = {reason: n for reason, raw in sorted(tally.dropped.items()) if (n := len(readers(raw)))}
    stats = IssueStats(
        item.slug, title, item.start, sent, delivered=_count(base, sent),
        opens=_UNKNOWN if opens_off else _count(len(readers(tally.opens)), base),
        machine_opens=_UNKNOWN if opens_off else _count(len(readers(tally.machine)), base),
        clicks=_UNKNOWN if clicks_off else _count(len(clickers), base), cta=cta, links=[] if clicks_off else links,
        bounces=Bounces(_count(len(hard), sent), _count(len(soft), sent), dropped),
        unsubscribes=_count(len(readers(tally.unsubscribes) | own), base),
        spamreports=_count(len(readers(tally.spamreports)), base), warnings=[],
        joined_since=None if item.start is None else len({e for at, e in facts.joined if at >= item.start}),
        heard=heard)
    stats.warnings = _warnings(stats, config, opens_off=opens_off, clicks_off=clicks_off)
    return stats


def _warnings(s: IssueStats, config: Config, *, opens_off: bool, clicks_off: bool) -> list[str]:
    """Plain sentences about what needs the writer's attention."""
    if not s.sent:
        return [f"not sent yet: `newsletter send --issue {s.slug}` sends it"]
    out = []
    delivered = s.delivered.count or 0
    if not s.heard:
        out.append(f"no delivery events yet: is `newsletter serve` reachable at {config.base_url}/webhooks/sendgrid"
                   " and the Event Webhook on? (see README)")
    elif not delivered:
        out.append("no `delivered` events: the rates of opens, clicks and spam reports cannot be known; tick "
                   "Delivered in SendGrid's Event Webhook (see README)")
    spam = (s.spamreports.count or 0) / delivered if delivered else 0.0
    if spam >= SPAM_GMAIL:
        out.append(f"spam reports {percent(spam)} of delivered: above Gmail's 0.3 % limit, so Gmail may refuse "
                   "or spam-folder your mail; send only to readers who asked for it, and keep the unsubscribe "
                   "link plain to see")
    elif spam >= SPAM_WARN:
        out.append(f"spam reports {percent(spam)} of delivered: Gmail asks senders to stay under 0.1 % (and "
                   "blocks at 0.3 %)")
    hard = (s.bounces.hard.count or 0) / s.sent if s.sent else 0.0
    if hard > HARD_BOUNCE_WARN:
        out.append(f"hard bounces {percent(hard)} of sent: above 2 %, which mailbox providers read as an old or "
                   "bought list; the bounced addresses are suppressed already, check where the others came from")
    if opens_off:
        out.append("open tracking is off (`sendgrid: {open_tracking: true}` in newsletter.yaml turns it on): "
                   "opens are not counted")
    if clicks_off:
        out.append("click tracking is off (`sendgrid: {click_tracking: true}` in newsletter.yaml turns it on): "
                   "clicks, the workshop's included, are not counted")
    return out


def _firsts(pairs: Iterator[tuple[str, float]], readers: _SentReaders) -> dict[str, float]:
    """Each sent reader's earliest time among (logged address, time) pairs."""
    out: dict[str, float] = {}
    for raw, ts in pairs:
        key = readers.key.get(raw)
        if key is not None:
            out[key] = min(ts, out.get(key, ts))
    return out


def _timeline(item: _Sent, tally: _Tally, config: Config) -> Timeline:
    """Unique human opens and clicks (the unsubscribe link left out) counted up hour by hour."""
    assert item.start is not None
    start = item.start.timestamp()
    unsubscribe = link_key(f"{config.base_url}/unsubscribe/")
    clicks = ((email, ts) for email, url, ts in tally.click_times if not link_key(url).startswith(unsubscribe))

    def cumulative(firsts: dict[str, float]) -> list[int]:
        per_hour = [0] * (TIMELINE_HOURS + 1)
        for ts in firsts.values():
            hour = max(0, -int((start - ts) // 3600))  # the hour it falls in, counted up to its end
            if hour <= TIMELINE_HOURS:
                per_hour[hour] += 1
        total, out = 0, []
        for n in per_hour:
            total += n
            out.append(total)
        return out

    readers = _SentReaders(item.state, tally)
    return Timeline(item.slug, cumulative(_firsts(iter(tally.first_open.items()), readers)),
                    cumulative(_firsts(clicks, readers)))


def _growth(facts: _LedgerFacts, today: dt.date) -> list[Week]:
    """Readers who joined and who left per week (each counted once a week), from the first week with either (at
    most GROWTH_WEEKS weeks back) to this one."""
    dates = [at.date() for at, _ in facts.joined + facts.left]
    if not dates:
        return []
    this_week = today - dt.timedelta(days=today.weekday())
    first = max(min(dates) - dt.timedelta(days=min(dates).weekday()),
                this_week - dt.timedelta(weeks=GROWTH_WEEKS - 1))
    weeks: dict[dt.date, tuple[set[str], set[str]]] = {
        first + dt.timedelta(weeks=i): (set(), set()) for i in range((this_week - first).days // 7 + 1)}
    for which, events in ((0, facts.joined), (1, facts.left)):
        for at, email in events:
            monday = at.date() - dt.timedelta(days=at.weekday())
            if monday in weeks:
                weeks[monday][which].add(email)
    return [Week(start, len(joined), len(left)) for start, (joined, left) in weeks.items()]


# -- what callers use ------------------------------------------------------------------------------------------
def landed(root: Path, *, only: str | None = None, charts: bool = False) -> Landed:
    """Every sent issue's figures, newest first (or only the issue `only`), from one pass over the events log;
    with `charts`, also the newest issue's first 72 hours and the list's weekly growth, for `report`."""
    config = load_config(root)
    if only is not None and ("/" in only or "\\" in only or only.startswith(".")
                             or not (sends_dir(root) / f"{only}.jsonl").is_file()):
        from .issue import load_issue

        load_issue(root, only, config)  # an unknown slug is refused by name (with a "did you mean")
    sent = _sent_issues(root, only)
    facts = _ledger_facts(root)
    newest = sent[0] if charts and sent and sent[0].start is not None else None
    tallies = _tally_events(events_path(root), {s.slug for s in sent}, newest.slug if newest else None)
    issues = [_finish(s, tallies.get(s.slug), root, config, facts) for s in sent]
    timeline = _timeline(newest, tallies.get(newest.slug) or _Tally(True), config) if newest else None
    return Landed(issues, timeline, _growth(facts, dt.datetime.now(dt.UTC).date()) if charts else [])


def issue_stats(root: Path, slug: str) -> IssueStats:
    """One issue's figures (sent 0 when it has not gone out)."""
    return landed(root, only=slug).issues[0]


def all_stats(root: Path) -> list[IssueStats]:
    """Every sent issue's figures, newest first."""
    return landed(root).issues
