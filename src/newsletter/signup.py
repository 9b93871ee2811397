"""Sign-up with double opt-in: a pending request recorded durably, a confirmation email with a signed link
(7 days), and on confirmation the reader on the list, the consent in the ledger (`subscribe`) and the welcome
email, once.

`subscribers/signups.jsonl` (append-only, 0600) keeps each request, confirmation email, confirmation and
welcome; the rate limits are counted from it, so they hold across restarts. It stores the IP address only as a
keyed hash. Replies never say whether an address is on the list: the page's answer is the same for all.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from .config import Config
from .errors import HttpError, StorageError, TransportError
from .files import append_durably, file_lock, read_jsonl
from .ledger import Event, Kind, Ledger, Outcome, Source
from .recipients import normalize, validate
from .tokens import CONFIRM_DAYS, keyed_hash, make_confirm_token, verify_confirm_token

SIGNUPS_NAME = "signups.jsonl"
_REQUEST, _SENT, _CONFIRMED, _WELCOMED = "request", "sent", "confirmed", "welcomed"


class SignupError(HttpError):
    """A sign-up or confirmation that cannot go on; `status` is the HTTP answer."""


def signups_path(root: Path) -> Path:
    """subscribers/signups.jsonl."""
    return root / "subscribers" / SIGNUPS_NAME


def _records(root: Path) -> Iterator[dict[str, Any]]:
    return read_jsonl(signups_path(root))


def _append(root: Path, record: dict[str, Any], what: str) -> None:
    line = json.dumps(record, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"
    append_durably(signups_path(root), line, what=what)


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


def request_signup(root: Path, config: Config, secret: str, transport: Any, req: Request,
                   now: float | None = None) -> str:
    """Record a pending sign-up and send its confirmation email. Returns what happened ("sent", "trap",
    "limited", "subscribed"): the page shows the same answer whatever it is. Raises SignupError: 400 for an
    address that is not one, 503 when SendGrid could not take the confirmation (the sign-up stays pending)."""
    now = time.time() if now is None else now
    if req.honeypot.strip():
        return "trap"
    try:
        email = normalize(validate(req.email))
    except ValueError:
        raise SignupError("that does not look like an email address", 400) from None
    ip = keyed_hash(secret, req.ip or "-")
    requests_from_ip = confirmations = 0
    for rec in _records(root):
        at = float(rec.get("at", 0) or 0)
        if rec.get("t") == _REQUEST and rec.get("ip") == ip and now - at < 3600:
            requests_from_ip += 1
        elif rec.get("t") == _SENT and rec.get("email") == email and now - at < 86400:
            confirmations += 1
    if requests_from_ip >= config.signup.per_ip_per_hour:
        return "limited"
    if _on_list_and_active(root, email):
        return "subscribed"  # nothing to confirm; the answer does not say so
    first = " ".join(req.first_name.split())[:100]
    _append(root, {"t": _REQUEST, "email": email, "at": int(now), "source": req.source[:300], "ip": ip,
                   "first_name": first}, what=f"the sign-up of {email}")
    if confirmations >= config.signup.per_address_per_day:
        return "limited"
    _send_confirmation(config, secret, transport, email, first, int(now))
    _append(root, {"t": _SENT, "email": email, "at": int(now)}, what=f"the confirmation email to {email}")
    return "sent"


def _on_list_and_active(root: Path, email: str) -> bool:
    from .ledger import load_ledger
    from .subscribers import iter_subscribers

    if load_ledger(root).is_suppressed_key(email):
        return False
    return any(normalize(e) == email for e, _, _ in iter_subscribers(root))


def _send_confirmation(config: Config, secret: str, transport: Any, email: str, first: str, signed_up: int) -> None:
    from .render import render_layout

    if transport is None:
        raise SignupError("SENDGRID_API_KEY is not set: the confirmation email cannot be sent", 503)
    url = f"{config.base_url}/confirm/{make_confirm_token(secret, email, signed_up)}"
    html, text = render_layout(config, "confirm", {"confirm_url": url, "first_name": first})
    body = {
        "personalizations": [{"to": [{"email": email}]}],
        "from": {"email": config.sender.email, "name": config.sender.name} if config.sender.name
        else {"email": config.sender.email},
        "reply_to": {"email": config.reply_to},
        "subject": f"Confirm your subscription to {config.name}",
        "content": [{"type": "text/plain", "value": text}, {"type": "text/html", "value": html}],
        "custom_args": {"newsletter_kind": "confirm"},
        "tracking_settings": {"click_tracking": {"enable": False, "enable_text": False},
                              "open_tracking": {"enable": False}, "subscription_tracking": {"enable": False}},
    }
    try:
        transport.send(body)
    except TransportError as exc:
        raise SignupError(f"the confirmation email could not be sent: {exc}", 503) from None


class ConfirmStatus(StrEnum):
    """What pressing the confirm button did."""

    CONFIRMED = "confirmed"  # consent recorded, on the list
    ALREADY = "already"  # this sign-up was confirmed before: nothing changed
    STALE = "stale"  # the sign-up is older than the reader's latest opt-out: an old link never lifts it
    PARTIAL = "partial"  # consent recorded, but the list could not be written: pressing again finishes it


@dataclass
class Confirmed:
    """A confirmation: the reader, what took effect, and whether the welcome went out."""

    email: str
    status: ConfirmStatus = ConfirmStatus.CONFIRMED
    welcomed: bool = False
    welcome_note: str = ""  # why the welcome did not go out, or why its sending was not recorded

    @property
    def already(self) -> bool:
        """Confirmed before this press."""
        return self.status is ConfirmStatus.ALREADY


def confirm(root: Path, config: Config, secret: str, transport: Any, token: str, ledger: Ledger,
            now: float | None = None) -> Confirmed:
    """Confirm a sign-up, in an order that stays true at every step: the consent in the ledger first
    (`subscribe`: signed up when, confirmed when, from where; the ledger refuses it as STALE when the sign-up is
    older than the reader's latest opt-out), then the list (atomically, under its lock), then the welcome email,
    then the record that it went out. Confirming twice changes nothing. Raises SignupError(400) for an invalid
    or expired link, and StorageError when the consent could not be written (then nothing was)."""
    from .subscribers import add_confirmed

    now = time.time() if now is None else now
    found = verify_confirm_token(secret, token, now)
    if isinstance(found, str):
        raise SignupError("this link has expired: sign up again" if found == "expired"
                          else "this confirmation link is not valid", 400)
    email, signed_up = found
    with file_lock(Path(str(signups_path(root)) + ".confirm")):
        request, done, welcomed = _confirm_history(root, email, signed_up)
        if done:  # confirmed before; an opt-out since then stands: the link is older than it
            ledger.refresh()
            stale = ledger.is_suppressed_key(email)
            return Confirmed(email, ConfirmStatus.STALE if stale else ConfirmStatus.ALREADY, welcomed=welcomed)
        first = str(request.get("first_name", ""))
        consent = Event(email, Kind.SUBSCRIBE, _iso(now), Source.SIGNUP,
                        f"at {request.get('source') or 'the sign-up page'}; confirmed {_iso(now)}; "
                        f"ip {request.get('ip', '?')}", signed_up=_iso(signed_up))
        if ledger.record([consent], what=f"the consent of {email}").results[0].outcome is Outcome.STALE:
            return Confirmed(email, ConfirmStatus.STALE)
        try:
            add_confirmed(root, email, first)
            _append(root, {"t": _CONFIRMED, "email": email, "at": int(now), "signed_up": signed_up},
                    what=f"the confirmation of {email}")
        except (StorageError, OSError) as exc:
            return Confirmed(email, ConfirmStatus.PARTIAL, welcome_note=str(exc))
        result = Confirmed(email)
        if not welcomed:
            result.welcomed, result.welcome_note = _send_welcome(root, config, secret, transport, email, first)
            if result.welcomed:
                try:
                    _append(root, {"t": _WELCOMED, "email": email, "at": int(now)}, what=f"the welcome of {email}")
                except (StorageError, OSError) as exc:  # welcomed all the same: the reader is told so
                    result.welcome_note = f"the welcome went out but could not be recorded: {exc}"
        return result


def _confirm_history(root: Path, email: str, signed_up: int) -> tuple[dict[str, Any], bool, bool]:
    """The sign-up request this link confirms, whether it was confirmed already, whether a welcome went out."""
    request: dict[str, Any] = {}
    done = welcomed = False
    for rec in _records(root):
        if rec.get("email") != email:
            continue
        if rec.get("t") == _REQUEST and int(rec.get("at", 0)) == signed_up:
            request = rec
        elif rec.get("t") == _CONFIRMED and int(rec.get("signed_up", 0)) == signed_up:
            done = True
        elif rec.get("t") == _WELCOMED:
            welcomed = True
    return request, done, welcomed


def _send_welcome(root: Path, config: Config, secret: str, transport: Any, email: str, first: str) -> tuple[bool, str]:
    from .issue import WELCOME_SLUG, issues_dir, load_issue
    from .message import MessageBuilder
    from .render import render_issue

    if not (issues_dir(root) / WELCOME_SLUG / "issue.yaml").is_file():
        return False, "no welcome email yet: `newsletter new --welcome` starts one"
    issue = load_issue(root, WELCOME_SLUG, config)
    if not issue.welcome:
        return False, "issues/welcome/issue.yaml does not say `welcome: true`"
    if transport is None:
        return False, "SENDGRID_API_KEY is not set"
    rendered = render_issue(config, issue)
    body = MessageBuilder(config, rendered, secret=secret, slug=issue.slug, subject=rendered.subject).body(
        [(email, first, first)])
    try:
        transport.send(body)
    except TransportError as exc:
        return False, f"the welcome email could not be sent: {exc}"
    return True, ""


@dataclass
class Pending:
    """A sign-up waiting for its confirmation."""

    email: str
    at: str
    source: str


def pending_signups(root: Path, now: float | None = None) -> list[Pending]:
    """Sign-ups of the last 7 days not confirmed yet (older ones are ignored: their links have expired)."""
    now = time.time() if now is None else now
    latest: dict[str, dict[str, Any]] = {}
    for rec in _records(root):
        email = str(rec.get("email", ""))
        if rec.get("t") == _REQUEST:
            latest[email] = rec
        elif rec.get("t") == _CONFIRMED:
            latest.pop(email, None)
    return [Pending(e, _iso(float(r["at"])), str(r.get("source", ""))) for e, r in latest.items()
            if now - float(r.get("at", 0)) <= CONFIRM_DAYS * 86400]


def joined_since(root: Path, since: dt.datetime) -> int:
    """Readers who confirmed a sign-up since `since`."""
    from .ledger import iter_events, ledger_path

    return sum(1 for _, at in iter_events(ledger_path(root), Kind.SUBSCRIBE) if at is not None and at >= since)
