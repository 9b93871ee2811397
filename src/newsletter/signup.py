"""Sign-up with double opt-in: the sign-up state (pending sign-ups, the rate limits) and confirming.

`subscribers/signups.jsonl` (append-only, 0600, one JSON object a line):
  {"t": "request", "id", "email", "at", "source", "ip", "first_name"}   a sign-up (the IP only as a keyed hash)
  {"t": "triaged", "id", "email", "at", "mail": "confirm"|"subscribed"|"limited"|"expired"}   what it led to
  {"t": "confirmed", "email", "at", "signed_up"}                        its link pressed: on the list
(`sent` and `welcomed` lines come from before the outbox: read, never written.)

A sign-up's reply never depends on the address: the request path checks the form and the per-IP limit, appends
the `request` line and answers. What depends on the address is decided afterwards, by `serve`'s outbox worker
(`triage`): already on the list and not suppressed (no email), over the per-mailbox limit (no email), or a
confirmation email queued in the outbox (outbox.py), which sends it. Confirming writes the consent to the ledger
first, then the list, then queues the welcome once.

`Signups` and `Roster` keep in memory what this needs (requests of the last days, confirmations, the rate-limit
windows, who is on the list) and follow the files' tails, so a sign-up never reads a whole file.
"""

from __future__ import annotations

import datetime as dt
import os
import secrets
import threading
import time
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from .config import Config
from .errors import StorageError, SubscriberError
from .files import GroupCommit, append_jsonl, file_lock, tail_jsonl
from .ledger import Event, Kind, Ledger, Outcome, Source
from .outbox import Mail, Outbox, welcome_missing
from .recipients import mailbox_key, normalize, validate
from .tokens import CONFIRM_DAYS, LinkState, keyed_hash, verify_confirm_token

SIGNUPS_NAME = "signups.jsonl"
_REQUEST, _TRIAGED, _CONFIRMED = "request", "triaged", "confirmed"
_SENT, _WELCOMED = "sent", "welcomed"  # written before the outbox existed
HOUR, DAY = 3600, 86400
_KEEP = (CONFIRM_DAYS + 1) * DAY  # requests older than this cannot be confirmed any more: forgotten
MAX_FIRST_NAME = 40


def signups_path(root: Path) -> Path:
    """subscribers/signups.jsonl."""
    return root / "subscribers" / SIGNUPS_NAME


def _iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Request:
    """What a sign-up form sent."""

    email: str
    first_name: str = ""
    source: str = ""  # the page it came from
    ip: str = ""
    honeypot: str = ""  # a field people never see; bots fill it


class SignupOutcome(StrEnum):
    """What a sign-up request did. The page is the same "check your inbox" for all but INVALID."""

    RECORDED = "recorded"  # pending: the outbox worker decides whether a confirmation goes out
    TRAP = "trap"  # the honeypot was filled: nothing recorded
    LIMITED = "limited"  # too many sign-ups from this IP this hour: nothing recorded
    INVALID = "invalid"  # the form must be corrected (see FormProblem)


class FormProblem(StrEnum):
    """What is wrong with the form, for the page to say."""

    ADDRESS = "address"
    NAME = "name"


@dataclass(frozen=True)
class SignupResult:
    """A sign-up's outcome, and the form's problem when INVALID."""

    outcome: SignupOutcome
    problem: FormProblem | None = None


class Triage(StrEnum):
    """What a recorded sign-up led to (decided by the outbox worker, never in the request)."""

    CONFIRM = "confirm"  # a confirmation email queued
    SUBSCRIBED = "subscribed"  # on the list and not suppressed: nothing to confirm
    LIMITED = "limited"  # enough confirmation emails went to this mailbox today
    EXPIRED = "expired"  # not triaged within the link's lifetime (serve was down for a week)


def plain_first_name(raw: str) -> str | None:
    """The first name as stored and greeted ("" when none), or None when it is not a plain name: letters,
    spaces, hyphens and apostrophes only, at most 40 characters. No URL, digit or `@` can ride in it."""
    name = " ".join(raw.split())
    if len(name) > MAX_FIRST_NAME or not all(c.isalpha() or c in " -'’" for c in name):
        return None
    return name


@dataclass
class _Window:
    """Times of events within the last `span` seconds, keyed by a record id (reading a line twice counts once)."""

    span: int
    times: dict[str, float] = field(default_factory=dict)

    def count(self, now: float) -> int:
        stale = [k for k, at in self.times.items() if now - at >= self.span]
        for k in stale:
            del self.times[k]
        return len(self.times)


class Signups:
    """The sign-up state in memory, following signups.jsonl's tail: requests of the last 8 days, confirmations,
    the rate-limit windows (per IP hash an hour, per mailbox a day) and the requests not triaged yet."""

    def __init__(self, root: Path, config: Config, secret: str) -> None:
        self.root, self.config, self.secret = root, config, secret
        self.path = signups_path(root)
        # Every append of this process goes through one group commit: concurrent sign-ups share an fsync.
        self._writer: GroupCommit[dict[str, Any], None] = GroupCommit(self._write)
        self._mutex = threading.RLock()
        self._offset = 0
        self._reset()
        self.refresh()

    def _reset(self) -> None:
        self._requests: dict[tuple[str, int], dict[str, Any]] = {}
        self._confirmed: set[tuple[str, int]] = set()
        self._confirmed_at: dict[str, int] = {}  # each address's latest confirmation
        self._welcomed: set[str] = set()
        self._triaged: dict[tuple[str, int], Triage] = {}
        self._untriaged: dict[str, dict[str, Any]] = {}
        self._by_ip: dict[str, _Window] = {}
        self._by_mailbox: dict[str, _Window] = {}
        self._pruned = 0.0

    # -- reading ------------------------------------------------------------------------------------------------
    def refresh(self) -> None:
        """Read what was appended since the last read."""
        with self._mutex:
            tail = tail_jsonl(self.path, self._offset)
            if tail.restarted:
                self._reset()
            now = time.time()
            for rec in tail.records:
                self._apply(rec, now)
            self._offset = tail.offset
            if now - self._pruned > HOUR:
                self._prune(now)

    def _prune(self, now: float) -> None:
        """Forget what no longer matters (a `serve` runs for months): requests and confirmations whose links have
        expired, and rate-limit windows that are empty."""
        self._pruned = now
        for key in [k for k in self._requests if now - k[1] >= _KEEP]:
            del self._requests[key]
            self._triaged.pop(key, None)
        self._confirmed = {c for c in self._confirmed if now - c[1] < _KEEP}
        self._confirmed_at = {e: at for e, at in self._confirmed_at.items() if now - at < _KEEP}
        for windows in (self._by_ip, self._by_mailbox):
            for empty in [k for k, w in windows.items() if not w.count(now)]:
                del windows[empty]

    def _apply(self, rec: dict[str, Any], now: float) -> None:
        kind, email = rec.get("t"), str(rec.get("email", ""))
        try:
            at = int(rec.get("at", 0))
        except (TypeError, ValueError):
            return
        if kind == _REQUEST:
            ident = str(rec.get("id") or f"{email}:{at}")
            self._by_ip.setdefault(str(rec.get("ip", "")), _Window(HOUR)).times[ident] = at
            if now - at < _KEEP:
                self._requests[(email, at)] = rec
                if rec.get("id"):  # lines without an id come from before triage: their email went out then
                    self._untriaged[ident] = rec
        elif kind == _TRIAGED:
            request = self._untriaged.pop(str(rec.get("id")), None)
            if request is not None:
                self._triaged[(email, int(request.get("at", 0)))] = Triage(rec.get("mail", Triage.CONFIRM))
            if rec.get("mail") == Triage.CONFIRM:
                self._by_mailbox.setdefault(mailbox_key(email), _Window(DAY)).times[str(rec.get("id"))] = at
        elif kind == _SENT:
            self._by_mailbox.setdefault(mailbox_key(email), _Window(DAY)).times[f"{email}:{at}"] = at
        elif kind == _CONFIRMED:
            self._confirmed.add((email, int(rec.get("signed_up", 0))))
            self._confirmed_at[email] = max(at, self._confirmed_at.get(email, 0))
        elif kind == _WELCOMED:
            self._welcomed.add(email)

    def _write(self, records: list[dict[str, Any]]) -> list[None]:
        append_jsonl(self.path, records, what="a sign-up" if len(records) == 1 else f"{len(records)} sign-up records")
        return [None] * len(records)

    def _append(self, records: list[dict[str, Any]]) -> None:
        self._writer.submit(records)
        self.refresh()

    # -- the request path ---------------------------------------------------------------------------------------
    def request(self, req: Request, now: float | None = None) -> SignupResult:
        """Record a sign-up: the same work whatever the address (its fate is decided later, by `triage`). Raises
        StorageError when it could not be recorded."""
        now = time.time() if now is None else now
        if req.honeypot.strip():
            return SignupResult(SignupOutcome.TRAP)
        try:
            email = normalize(validate(req.email))
        except ValueError:
            return SignupResult(SignupOutcome.INVALID, FormProblem.ADDRESS)
        first = plain_first_name(req.first_name)
        if first is None:
            return SignupResult(SignupOutcome.INVALID, FormProblem.NAME)
        ip, ident = keyed_hash(self.secret, req.ip or "-"), secrets.token_hex(8)
        record: dict[str, Any] = {"t": _REQUEST, "id": ident, "email": email, "at": int(now),
                  "source": req.source[:300], "ip": ip, "first_name": first}
        with self._mutex:
            self.refresh()
            window = self._by_ip.setdefault(ip, _Window(HOUR))
            if window.count(now) >= self.config.signup.per_ip_per_hour:
                return SignupResult(SignupOutcome.LIMITED)
            window.times[ident] = now  # counted now: concurrent requests from one IP see it
        try:
            self._writer.submit([record])  # the refresh of the next call reads it back
        except BaseException:
            with self._mutex:
                window.times.pop(ident, None)
            raise
        return SignupResult(SignupOutcome.RECORDED)

    # -- the outbox worker's side -------------------------------------------------------------------------------
    def triage(self, roster: Roster, ledger: Ledger, outbox: Outbox, now: float | None = None) -> list[Triage]:
        """Decide what each recorded sign-up leads to, and queue the confirmation emails: none for a reader on the
        list and not suppressed, none past `signup.per_address_per_day` to one mailbox (`+tags` and Gmail's dots
        count as one). Queued first, then recorded: after a crash in between, the outbox skips what it holds."""
        now = time.time() if now is None else now
        with self._mutex:
            self.refresh()
            todo = sorted(self._untriaged.values(), key=lambda r: int(r.get("at", 0)))
        if not todo:
            return []
        roster.refresh()
        ledger.refresh()
        with self._mutex:  # the windows are shared with the request threads' refreshes
            decisions, mails, records = self._decide(todo, roster, ledger, now)
        outbox.enqueue(mails)
        self._append(records)
        return decisions

    def _decide(self, todo: list[dict[str, Any]], roster: Roster, ledger: Ledger, now: float,
                ) -> tuple[list[Triage], list[Mail], list[dict[str, Any]]]:
        limit = self.config.signup.per_address_per_day
        decisions, mails, records = [], [], []
        for rec in todo:
            email, at = str(rec["email"]), int(rec.get("at", 0))
            window = self._by_mailbox.setdefault(mailbox_key(email), _Window(DAY))
            if now - at > CONFIRM_DAYS * DAY:
                decision = Triage.EXPIRED
            elif email in roster and not ledger.is_suppressed_key(email):
                decision = Triage.SUBSCRIBED
            elif window.count(now) - (str(rec["id"]) in window.times) >= limit:  # counted once, if tried before
                decision = Triage.LIMITED
            else:
                decision = Triage.CONFIRM
                window.times[str(rec["id"])] = now
                mails.append(Mail.confirmation(email, at, now))
            decisions.append(decision)
            records.append({"t": _TRIAGED, "id": rec["id"], "email": email, "at": int(now), "mail": str(decision)})
        return decisions, mails, records

    # -- confirming ---------------------------------------------------------------------------------------------
    def request_of(self, email: str, signed_up: int) -> dict[str, Any]:
        """The request a link confirms ({} when it is not known: older than 8 days, or the file was replaced)."""
        with self._mutex:
            return dict(self._requests.get((email, signed_up), {}))

    def was_confirmed(self, email: str, signed_up: int) -> bool:
        """Whether this sign-up was confirmed already."""
        with self._mutex:
            return (email, signed_up) in self._confirmed

    def welcomed_before_outbox(self, email: str) -> bool:
        """Whether a welcome went out to `email` before the outbox existed."""
        with self._mutex:
            return email in self._welcomed

    def record_confirmed(self, email: str, signed_up: int, now: float) -> None:
        """The link was pressed and the reader is on the list."""
        self._append([{"t": _CONFIRMED, "email": email, "at": int(now), "signed_up": signed_up}])

    def pending(self, now: float | None = None) -> list[Pending]:
        """Sign-ups of the last 7 days not confirmed since (nor found already subscribed), the latest per address."""
        now = time.time() if now is None else now
        latest: dict[str, tuple[int, dict[str, Any]]] = {}
        with self._mutex:
            for (email, at), rec in self._requests.items():
                if now - at > CONFIRM_DAYS * DAY or self._triaged.get((email, at)) is Triage.SUBSCRIBED:
                    continue
                if email not in latest or at > latest[email][0]:
                    latest[email] = (at, rec)
            confirmed = dict(self._confirmed_at)
        return [Pending(email, _iso(at), str(rec.get("source", ""))) for email, (at, rec) in sorted(latest.items())
                if confirmed.get(email, -1) < at]


@dataclass
class Pending:
    """A sign-up waiting for its confirmation."""

    email: str
    at: str
    source: str


def pending_signups(root: Path, now: float | None = None) -> list[Pending]:
    """Sign-ups of the last 7 days not confirmed yet (older ones are ignored: their links have expired)."""
    from .config import load_config

    return Signups(root, load_config(root), "").pending(now)


@dataclass
class Waiting:
    """What waits: emails in the outbox (SendGrid down, no key), and sign-ups not confirmed yet."""

    mail: list[Mail]
    signups: list[Pending]


def waiting(root: Path, now: float | None = None) -> Waiting:
    """`newsletter subscribers pending`: the outbox's waiting emails and the pending sign-ups."""
    from .outbox import waiting_mail

    return Waiting(waiting_mail(root), pending_signups(root, now))


class Roster:
    """Who is on the list (normalised addresses), in memory, following subscribers.csv: rows appended in place are
    read from the tail; a file replaced (the list is rewritten atomically) or edited is read again."""

    _EDGE = 256  # bytes before the read offset that must be unchanged for a tail read to be safe

    def __init__(self, root: Path) -> None:
        from .subscribers import list_path

        self.root, self.path = root, list_path(root)
        self._keys: set[str] = set()
        self._stamp: tuple[int, int, int, int] | None = None  # dev, inode, size, mtime of what was read
        self._edge = b""
        self._email_at = 0
        self.problem = ""  # why the list could not be read last time ("" when it could)

    def __contains__(self, key: object) -> bool:
        return key in self._keys

    def __len__(self) -> int:
        return len(self._keys)

    def refresh(self) -> None:
        """Follow the file. When it cannot be read, the last state is kept and `problem` says why: sign-ups are
        then decided without the newest rows (a reader on the list may get a confirmation, nobody is missed)."""
        try:
            self._refresh()
            self.problem = ""
        except SubscriberError as exc:
            self.problem = str(exc)

    def _refresh(self) -> None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            self._keys, self._stamp = set(), None
            return
        stamp = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        if stamp == self._stamp:
            return
        old = self._stamp
        if old is not None and old[:2] == stamp[:2] and stamp[2] > old[2] and self._read_tail(old[2], stamp[2]):
            self._stamp = stamp
            return
        self._reload(stamp)

    def _reload(self, stamp: tuple[int, int, int, int]) -> None:
        import csv

        from .exports import column_index
        from .subscribers import iter_subscribers

        self._keys = {normalize(e) for e, _, _ in iter_subscribers(self.root)}
        with open(self.path, encoding="utf-8-sig", errors="replace", newline="") as fh:
            self._email_at = column_index(next(csv.reader(fh), []), ("email",)) or 0
        self._stamp = stamp
        self._edge = self._bytes(max(0, stamp[2] - self._EDGE), stamp[2])

    def _bytes(self, start: int, end: int) -> bytes:
        with open(self.path, "rb") as fh:
            fh.seek(start)
            return fh.read(end - start)

    def _read_tail(self, start: int, end: int) -> bool:
        """Read rows appended after `start`; False when the file changed before it (then it is read again)."""
        import csv

        if self._bytes(max(0, start - len(self._edge)), start) != self._edge or not self._edge.endswith(b"\n"):
            return False
        data = self._bytes(start, end)
        whole = data[: data.rfind(b"\n") + 1]
        if len(whole) != len(data):
            return False  # a row still being written: read everything once it is whole
        for row in csv.reader(whole.decode("utf-8", "replace").splitlines()):
            if len(row) > self._email_at and row[self._email_at].strip():
                self._keys.add(normalize(row[self._email_at]))
        self._edge = (self._edge + data)[-self._EDGE:]
        return True


# -- confirming --------------------------------------------------------------------------------------------------
class ConfirmStatus(StrEnum):
    """What pressing the confirm button did."""

    CONFIRMED = "confirmed"  # consent recorded, on the list
    ALREADY = "already"  # this sign-up was confirmed before: nothing changed
    STALE = "stale"  # the sign-up is older than the reader's latest opt-out: an old link never lifts it
    PARTIAL = "partial"  # consent recorded, but the list could not be written: pressing again finishes it
    INVALID = "invalid"  # the link is malformed, tampered or signed with another key: nothing changed
    EXPIRED = "expired"  # the link is older than 7 days: nothing changed


class Welcome(StrEnum):
    """What a confirmation did about the welcome email."""

    QUEUED = "queued"  # in the outbox: the worker sends it
    SENT_BEFORE = "sent before"  # this reader was welcomed (or queued) once already
    NONE = "none"  # nothing to send (see Confirmed.note)
    NOT_YET = "not yet"  # not confirmed (yet): no welcome


@dataclass
class Confirmed:
    """A confirmation: the reader, what took effect, and what became of the welcome."""

    email: str
    status: ConfirmStatus = ConfirmStatus.CONFIRMED
    welcome: Welcome = Welcome.NOT_YET
    note: str = ""  # why no welcome, or why the list could not be written


def confirm(signups: Signups, outbox: Outbox, ledger: Ledger, token: str, now: float | None = None) -> Confirmed:
    """Confirm a sign-up, in an order that stays true at every step: the consent in the ledger first
    (`subscribe`: signed up when, confirmed when, from where; the ledger refuses it as STALE when the sign-up is
    older than the reader's latest opt-out), then the list (atomically, under its lock), then the record of the
    confirmation, then the welcome queued in the outbox, once per reader. Confirming twice changes nothing.
    Raises StorageError (or LedgerError) when the consent could not be written: then nothing was."""
    from .subscribers import add_confirmed

    now = time.time() if now is None else now
    link = verify_confirm_token(signups.secret, token, now)
    if link.state is not LinkState.VALID:
        return Confirmed("", ConfirmStatus.INVALID if link.state is LinkState.INVALID else ConfirmStatus.EXPIRED)
    email, signed_up = link.email, link.signed_up
    with file_lock(Path(str(signups.path) + ".confirm")):
        signups.refresh()
        if signups.was_confirmed(email, signed_up):
            ledger.refresh()
            if ledger.is_suppressed_key(email):  # confirmed, then an opt-out: it stands, the link is older than it
                return Confirmed(email, ConfirmStatus.STALE)
            # A welcome that could not be queued the first time is queued now; one queued before is not again.
            first = str(signups.request_of(email, signed_up).get("first_name", ""))
            return _welcome(signups, outbox, Confirmed(email, ConfirmStatus.ALREADY), first, now)
        request = signups.request_of(email, signed_up)
        first = str(request.get("first_name", ""))
        consent = Event(email, Kind.SUBSCRIBE, _iso(now), Source.SIGNUP,
                        f"at {request.get('source') or 'the sign-up page'}; confirmed {_iso(now)}; "
                        f"ip {request.get('ip', '?')}", signed_up=_iso(signed_up))
        if ledger.record([consent], what="a reader's consent").results[0].outcome is Outcome.STALE:
            return Confirmed(email, ConfirmStatus.STALE)
        try:
            add_confirmed(signups.root, email, first)
            signups.record_confirmed(email, signed_up, now)
        except (StorageError, SubscriberError, OSError) as exc:
            return Confirmed(email, ConfirmStatus.PARTIAL, note=str(exc))
        return _welcome(signups, outbox, Confirmed(email), first, now)


def _welcome(signups: Signups, outbox: Outbox, done: Confirmed, first: str, now: float) -> Confirmed:
    mail = Mail.welcome(done.email, first, now)
    if signups.welcomed_before_outbox(done.email) or outbox.holds(mail.id):
        done.welcome = Welcome.SENT_BEFORE
    elif why := welcome_missing(signups.root, signups.config):
        done.welcome, done.note = Welcome.NONE, why
    else:
        try:
            outbox.enqueue([mail])
        except (StorageError, OSError) as exc:  # the reader is confirmed all the same: the page says so
            done.welcome, done.note = Welcome.NONE, f"the welcome could not be queued ({exc}); pressing the link " \
                "again queues it"
            return done
        done.welcome = Welcome.QUEUED
    return done


def joined_since(root: Path, since: dt.datetime) -> int:
    """Readers who confirmed a sign-up since `since`."""
    from .ledger import iter_events, ledger_path

    return sum(1 for _, at in iter_events(ledger_path(root), Kind.SUBSCRIBE) if at is not None and at >= since)
