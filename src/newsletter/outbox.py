"""The outbox: emails to one reader that are not an issue (a sign-up's confirmation, the welcome), queued durably
and sent by a worker thread inside `serve` with retries and backoff, never inside a request: the reply to a
sign-up neither waits for SendGrid nor depends on it.

Format (subscribers/outbox.jsonl, append-only, 0600): one JSON object a line, appended whole and fsynced under
`outbox.jsonl.lock` (files.append_jsonl):
  {"t": "queued", "id", "kind": "confirm"|"welcome", "email", "at", "signed_up" (confirm), "first_name" (welcome)}
  {"t": "sent", "id", "at"}             SendGrid accepted it
  {"t": "dropped", "id", "at", "why"}   given up: its link expired, SendGrid refused the message itself (400/413),
                                        or there is no welcome email to send
An id is queued at most once, ever: a confirmation's id is its address and sign-up time, a welcome's its address
alone, so nobody is welcomed twice. An email waits while it has neither `sent` nor `dropped`; after a restart the
waiting ones go out. Delivery is at least once: a crash between SendGrid's acceptance and the `sent` record sends
that email again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from .config import API_KEY_ENV, Config, env_set
from .errors import NewsletterError, TransportError
from .files import append_jsonl, file_lock, tail_jsonl
from .tokens import CONFIRM_DAYS, make_confirm_token
from .worker import RetryingWorker

OUTBOX_NAME = "outbox.jsonl"
MAX_AGE = CONFIRM_DAYS * 86400  # a confirmation's link is dead by then; a welcome a week late is no welcome
_QUEUED, _SENT, _DROPPED = "queued", "sent", "dropped"
log = logging.getLogger("newsletter.outbox")


def outbox_path(root: Path) -> Path:
    """subscribers/outbox.jsonl."""
    return root / "subscribers" / OUTBOX_NAME


class Letter(StrEnum):
    """The emails the outbox sends."""

    CONFIRM = "confirm"  # the sign-up's confirmation: a button that confirms it
    WELCOME = "welcome"  # issues/welcome/, once, when a reader confirms


@dataclass(frozen=True)
class Mail:
    """One email in the outbox."""

    id: str
    kind: Letter
    email: str
    queued_at: int
    signed_up: int = 0  # a confirmation's sign-up time (its link is signed over it)
    first_name: str = ""  # a welcome's greeting

    @classmethod
    def confirmation(cls, email: str, signed_up: int, now: float) -> Mail:
        """The confirmation email of the sign-up of `email` at `signed_up`."""
        return cls(f"{Letter.CONFIRM}:{email}:{signed_up}", Letter.CONFIRM, email, int(now), signed_up=signed_up)

    @classmethod
    def welcome(cls, email: str, first_name: str, now: float) -> Mail:
        """The welcome email of a reader who confirmed (one per address, ever)."""
        return cls(f"{Letter.WELCOME}:{email}", Letter.WELCOME, email, int(now), first_name=first_name)

    @property
    def since(self) -> str:
        """When it was queued, as the ledger writes times."""
        from .ledger import iso

        return iso(self.queued_at)

    def expired(self, now: float) -> bool:
        """Too old to be worth sending."""
        born = self.signed_up if self.kind is Letter.CONFIRM else self.queued_at
        return now - born > MAX_AGE

    def record(self) -> dict[str, Any]:
        """The `queued` line."""
        extra: dict[str, Any] = {"signed_up": self.signed_up} if self.kind is Letter.CONFIRM else {
            "first_name": self.first_name}
        return {"t": _QUEUED, "id": self.id, "kind": str(self.kind), "email": self.email, "at": self.queued_at,
                **extra}


def _mail_of(rec: dict[str, Any]) -> Mail | None:
    try:
        return Mail(str(rec["id"]), Letter(rec["kind"]), str(rec["email"]), int(rec.get("at", 0)),
                    int(rec.get("signed_up", 0)), str(rec.get("first_name", "")))
    except (KeyError, ValueError, TypeError):
        return None  # a hand edit: nothing to send


class Fate(StrEnum):
    """How an email left the outbox."""

    SENT = "sent"
    DROPPED = "dropped"


class Outbox:
    """subscribers/outbox.jsonl in memory (what waits, and every id ever queued), following the file's tail."""

    def __init__(self, root: Path) -> None:
        self.path = outbox_path(root)
        self._offset = 0
        self._waiting: dict[str, Mail] = {}
        self._seen: set[str] = set()
        self._mutex = threading.RLock()
        self.refresh()

    def refresh(self) -> None:
        """Read what was appended since the last read (by this process or another)."""
        with self._mutex:
            tail = tail_jsonl(self.path, self._offset)
            if tail.restarted:
                self._waiting, self._seen = {}, set()
            for rec in tail.records:
                kind, ident = rec.get("t"), str(rec.get("id", ""))
                if kind == _QUEUED and ident not in self._seen and (mail := _mail_of(rec)) is not None:
                    self._seen.add(ident)
                    self._waiting[ident] = mail
                elif kind in (_SENT, _DROPPED):
                    self._seen.add(ident)
                    self._waiting.pop(ident, None)
            self._offset = tail.offset

    def enqueue(self, mails: list[Mail]) -> list[Mail]:
        """Queue the emails never queued before, durably (one fsynced append); returns those."""
        if not mails:
            return []
        with self._mutex, file_lock(self.path):
            self.refresh()
            new = [m for m in dict((m.id, m) for m in mails).values() if m.id not in self._seen]
            append_jsonl(self.path, [m.record() for m in new], what="an email for the outbox", locked=True)
            self.refresh()
        return new

    def settle(self, mails: list[Mail], fate: Fate, why: str = "", now: float | None = None) -> None:
        """Record that emails left the outbox (sent, or dropped and why), in one fsynced append."""
        at = int(time.time() if now is None else now)
        records: list[dict[str, Any]] = [{"t": str(fate), "id": m.id, "at": at, **({"why": why[:300]} if why else {})}
                                         for m in mails]
        with self._mutex:
            append_jsonl(self.path, records, what="the fate of emails in the outbox")
            self.refresh()

    def holds(self, ident: str) -> bool:
        """Whether this id was ever queued."""
        with self._mutex:
            return ident in self._seen

    def waiting(self) -> list[Mail]:
        """The emails not sent yet, oldest first."""
        with self._mutex:
            return sorted(self._waiting.values(), key=lambda m: m.queued_at)


def waiting_mail(root: Path) -> list[Mail]:
    """The emails still waiting in the outbox (`newsletter subscribers pending`)."""
    return Outbox(root).waiting()


# -- sending -----------------------------------------------------------------------------------------------------
class Result(StrEnum):
    """What one try to send an email did."""

    SENT = "sent"
    REFUSED = "refused"  # never worth another try: dropped
    RETRY = "retry"  # SendGrid down, no key, a layout that does not render: the email waits


@dataclass(frozen=True)
class Attempt:
    """One try: its result, and why when it was not sent."""

    result: Result
    why: str = ""


def sendgrid_from_env(config: Config) -> Any:
    """SendGrid, when SENDGRID_API_KEY is set; None otherwise (what waits then waits for the key)."""

    from .sendgrid import transport_from_env

    if not env_set(API_KEY_ENV):
        return None
    return transport_from_env(config.sendgrid.timeout, at_most=30.0)


def welcome_missing(root: Path, config: Config) -> str:
    """Why no welcome email can be sent ("" when issues/welcome/ is ready)."""
    from .issue import WELCOME_SLUG, issues_dir, load_issue

    if not (issues_dir(root) / WELCOME_SLUG / "issue.yaml").is_file():
        return "no welcome email yet: `newsletter new --welcome` starts one"
    if not load_issue(root, WELCOME_SLUG, config).welcome:
        return "issues/welcome/issue.yaml does not say `welcome: true`"
    return ""


CONFIRM_TAG = "-confirm_url-"  # each reader's link, filled in by SendGrid from the personalization


class Postman:
    """Builds the emails through message.py (the publication's sender, reply-to and tracking rules) and sends them:
    one request for many readers of the same email, each reader in their own personalization."""

    def __init__(self, root: Path, config: Config, secret: str, transport: Callable[[], Any] | None = None) -> None:
        self.root, self.config, self.secret = root, config, secret
        self.transport = transport or self._sendgrid
        self._client: Any = None

    def _sendgrid(self) -> Any:
        """SendGrid from the environment, made once (the key is looked for again while it is missing)."""
        if self._client is None:
            self._client = sendgrid_from_env(self.config)
        return self._client

    def __call__(self, mails: list[Mail]) -> Attempt:
        """Send these emails (all of one kind) in one request."""
        try:
            transport = self.transport()
            if transport is None:
                return Attempt(Result.RETRY, "SENDGRID_API_KEY is not set")
            if mails[0].kind is Letter.WELCOME and (why := welcome_missing(self.root, self.config)):
                return Attempt(Result.REFUSED, why)
            transport.send(self.confirmation(mails) if mails[0].kind is Letter.CONFIRM else self.welcome(mails))
        except TransportError as exc:
            # SendGrid refused the message itself: sending it again changes nothing. Anything else may pass later.
            return Attempt(Result.REFUSED if exc.status in (400, 413) else Result.RETRY, exc.message)
        except NewsletterError as exc:  # a layout or the welcome issue that does not render: the writer fixes it
            return Attempt(Result.RETRY, str(exc))
        return Attempt(Result.SENT)

    def confirmation(self, mails: list[Mail]) -> dict[str, Any]:
        """The confirmations' request body: layouts/confirm.mjml and .txt, each reader's signed link, nothing else."""
        from .message import one_off_body
        from .render import render_layout

        # first_name stays empty: writers' older layouts may still test it, and the form's text is never echoed.
        html, text = render_layout(self.config, "confirm", {"confirm_url": CONFIRM_TAG, "first_name": ""})
        links = [(m.email, {CONFIRM_TAG: f"{self.config.base_url}/confirm/"
                                         f"{make_confirm_token(self.secret, m.email, m.signed_up)}"}) for m in mails]
        return one_off_body(self.config, recipients=links, subject=f"Confirm your subscription to {self.config.name}",
                            html=html, text=text, kind=str(Letter.CONFIRM), bypass_unsubscribes=True)

    def welcome(self, mails: list[Mail]) -> dict[str, Any]:
        """The welcomes' request body: issues/welcome/ rendered as an issue, for these readers."""
        from .issue import WELCOME_SLUG, load_issue
        from .message import MessageBuilder
        from .render import render_issue

        rendered = render_issue(self.config, load_issue(self.root, WELCOME_SLUG, self.config))
        builder = MessageBuilder(self.config, rendered, secret=self.secret, slug=WELCOME_SLUG,
                                 subject=rendered.subject)
        return builder.body([(m.email, m.first_name, m.first_name) for m in mails])


@dataclass
class Round:
    """What one pass over the outbox did."""

    sent: int = 0
    dropped: int = 0
    waiting: int = 0
    why: str = ""  # why the emails still waiting did not go ("" when none waits)


def _batches(mails: list[Mail], size: int) -> list[list[Mail]]:
    """The emails by kind, oldest first, in requests of at most `size` readers."""
    out = []
    for kind in Letter:
        same = [m for m in mails if m.kind is kind]
        out += [same[i:i + size] for i in range(0, len(same), size)]
    return sorted(out, key=lambda b: b[0].queued_at)


def send_waiting(outbox: Outbox, deliver: Callable[[list[Mail]], Attempt], now: float | None = None,
                 size: int = 0) -> Round:
    """Send every waiting email, many readers a request (one fsync records their fate); stop at the first request
    that must wait (SendGrid down: the rest would fail the same way). A request SendGrid refuses is sent again
    reader by reader, so only the email it refuses is dropped. `size`: readers a request (default SendGrid's
    most, message.MAX_PER_REQUEST)."""
    from .message import MAX_PER_REQUEST

    now = time.time() if now is None else now
    done = Round()
    outbox.refresh()
    live = []
    for mail in outbox.waiting():
        if mail.expired(now):
            outbox.settle([mail], Fate.DROPPED, "too old: its link expired" if mail.kind is Letter.CONFIRM
                          else "not sent within 7 days", now)
            done.dropped += 1
        else:
            live.append(mail)
    todo = _batches(live, size or MAX_PER_REQUEST)
    while todo:
        batch = todo.pop(0)
        attempt = deliver(batch)
        if attempt.result is Result.RETRY:
            done.waiting, done.why = len(batch) + sum(len(b) for b in todo), attempt.why
            break
        if attempt.result is Result.REFUSED and len(batch) > 1:
            todo[:0] = [[m] for m in batch]
            continue
        outbox.settle(batch, Fate.SENT if attempt.result is Result.SENT else Fate.DROPPED, attempt.why, now)
        if attempt.result is Result.SENT:
            done.sent += len(batch)
        else:
            done.dropped += len(batch)
            log.warning("%d %s email(s) dropped: %s", len(batch), batch[0].kind, attempt.why)
    return done


class OutboxWorker(RetryingWorker):
    """The thread inside `serve` that empties the outbox: woken by each sign-up and confirmation (and every
    `poll` seconds), it takes new sign-ups in (`intake`), sends what waits, and while something must wait (SendGrid
    down) tries again after `retry` seconds, doubling up to `max_retry`."""

    name = "emails wait in the outbox"

    def __init__(self, outbox: Outbox, deliver: Callable[[list[Mail]], Attempt], *,
                 intake: Callable[[], Any] | None = None, retry: float = 5.0, max_retry: float = 300.0,
                 poll: float = 60.0) -> None:
        super().__init__(retry=retry, max_retry=max_retry, poll=poll)
        self.outbox, self.deliver, self.intake = outbox, deliver, intake

    def run_once(self) -> Round:
        """One pass: intake, then send what waits."""
        if self.intake is not None:
            self.intake()
        return send_waiting(self.outbox, self.deliver)

    def _round(self) -> str:
        try:
            done = self.run_once()
        except (NewsletterError, OSError) as exc:  # the outbox or the sign-ups cannot be written now
            done = Round(waiting=1, why=str(exc))
        return f"{done.waiting} waiting ({done.why})" if done.why else ""
