"""Pre-flight of a send: check passes, secrets present, the key works, readers counted; who is eligible."""

from __future__ import annotations

import datetime as dt
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from .bundle import Issue
from .check import check_issue
from .config import Config
from .errors import SendError, TransportError
from .journal import JournalState, journal_path, load_state
from .ledger import Ledger, load_ledger
from .message import MAX_PER_REQUEST
from .pipeline import load
from .render import RenderedEmail, render_issue
from .sendgrid import SendGridTransport, api_key_from_env
from .subscribers import iter_unique_subscribers
from .tokens import secret_from_env

SCHEDULE_LIMIT = dt.timedelta(hours=72)


@dataclass
class SendOptions:
    """What the writer asked for."""

    slug: str
    dry_run: bool = False
    to: tuple[str, ...] = ()
    at: dt.datetime | None = None
    resend_in_doubt: bool = False
    sandbox: bool = False
    concurrency: int | None = None
    sync: bool = True


@dataclass
class Prepared:
    """Everything checked and counted before anything goes out."""

    root: Path
    config: Config
    issue: Issue
    rendered: RenderedEmail
    options: SendOptions
    secret: str
    api_key: str
    subject: str
    readers: int  # eligible now: not suppressed, not already sent, not in doubt
    suppressed: int
    already_sent: int
    in_doubt_skipped: int
    duplicates: int
    journal: JournalState
    warnings: list[str] = field(default_factory=list)
    ledger: Ledger | None = None  # as read for the count; dispatch tails it rather than reading it again

    @property
    def batch_size(self) -> int:
        """Readers per request."""
        return min(self.config.sendgrid.batch_size, MAX_PER_REQUEST)

    @property
    def batches(self) -> int:
        """Requests this run will make (before any split)."""
        return -(-self.readers // self.batch_size)


def parse_at(text: str, now: dt.datetime | None = None) -> dt.datetime:
    """--at: an ISO date-time (local time unless it has an offset), within SendGrid's 72 hours."""
    try:
        when = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise SendError(f"--at {text!r} is not a date and time such as 2026-12-01T07:53") from None
    if when.tzinfo is None:
        when = when.astimezone()  # the writer's local time
    now = now or dt.datetime.now(dt.UTC)
    if when <= now:
        raise SendError(f"--at {text} is in the past", hint="omit --at to send now")
    if when - now > SCHEDULE_LIMIT:
        raise SendError(f"--at {text} is more than 72 hours ahead: SendGrid cannot schedule that far")
    return when


def prepare(root: Path, options: SendOptions) -> Prepared:
    """Pre-flight: check passes, secrets present, the key works; count readers. Sends nothing."""
    config, issue = load(root, options.slug)
    rendered = render_issue(config, issue)
    problems = check_issue(config, issue, rendered)
    errors = [p for p in problems if p.level == "error"]
    if errors:
        listed = "\n".join(f"  {p}" for p in errors[:8]) + (f"\n  ... and {len(errors) - 8} more" if len(errors) > 8
                                                             else "")
        raise SendError(f"`newsletter check` found {len(errors)} error(s); nothing was sent:\n{listed}",
                        hint=f"fix them, then run `newsletter check --issue {issue.slug}`")
    missing = [name for name, ok in (("SENDGRID_API_KEY", options.dry_run or api_key_present()),
                                      ("NEWSLETTER_SECRET", secret_present())) if not ok]
    if missing:
        raise SendError(f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} not set: "
                        + "; ".join({"SENDGRID_API_KEY": "the API key sends the mail",
                                     "NEWSLETTER_SECRET": "the secret signs every reader's unsubscribe link"}[m]
                                    for m in missing),
                        hint="export " + " and ".join(f"{m}=..." for m in missing))
    secret, _ = secret_from_env(required=True)
    api_key = "" if options.dry_run else api_key_from_env()
    sync_warning = ""
    if not options.dry_run:
        transport = SendGridTransport(api_key, timeout=config.sendgrid.timeout)
        scopes_known = True
        try:
            scopes = transport.scopes()
        except TransportError as exc:
            if exc.status in (401, 403):
                raise SendError("SendGrid refused the API key (SENDGRID_API_KEY): " + str(exc),
                                hint="check the key in SendGrid (Settings > API Keys); it may be revoked") from None
            if exc.status not in (404, 405):
                raise SendError(f"cannot check the API key: {exc}") from None
            # An endpoint that does not list scopes (a proxy, an API stand-in): mail/send itself answers
            # 401/403 for a bad key, which stops the send before a second request.
            scopes, scopes_known = ["mail.send"], False
        if "mail.send" not in scopes:
            raise SendError("the API key lacks the `mail.send` permission",
                            hint="give the key Mail Send access in SendGrid (Settings > API Keys)")
        if options.sync and not options.to:
            sync_warning = _sync_before_send(root, transport, scopes)
        if not scopes_known:
            sync_warning = "warning: GET /v3/scopes is not available here: the key's permissions were not checked"
    journal = load_state(journal_path(root, issue.slug))
    subject = rendered.subject
    if options.to:
        return Prepared(root, config, issue, rendered, options, secret, api_key, f"[Test] {subject}",
                        len(options.to), 0, 0, 0, 0, journal)
    ledger = load_ledger(root)
    ledger.check_readable()
    counts = {"readers": 0, "suppressed": 0, "sent": 0, "doubt": 0, "dups": 0}
    invalid: list[str] = []
    for _ in eligible_readers(root, ledger, journal, options.resend_in_doubt, counts, invalid):
        counts["readers"] += 1
    prepared = Prepared(root, config, issue, rendered, options, secret, api_key, subject, counts["readers"],
                        counts["suppressed"], counts["sent"], counts["doubt"], counts["dups"], journal)
    prepared.ledger = ledger
    prepared.warnings = [str(p) for p in ledger.problems] + ([sync_warning] if sync_warning else [])
    if counts.get("invalid"):
        shown = ", ".join(repr(e) for e in invalid)
        prepared.warnings.append(f"warning: {counts['invalid']} address(es) in subscribers.csv are not valid and "
                                 f"will be skipped ({shown}); fix or remove them")
    return prepared


def _sync_before_send(root: Path, transport: SendGridTransport, scopes: list[str]) -> str:
    """Pull SendGrid's suppressions into the ledger; a failure is a warning (SendGrid enforces its own)."""
    from .sync import sync_suppressions

    if not any(s.startswith("suppression") or s.startswith("asm") for s in scopes):
        return "warning: the API key cannot read suppressions; skipped `newsletter sync` (use --no-sync to silence)"
    try:
        sync_suppressions(root, transport)
    except TransportError as exc:
        return f"warning: `newsletter sync` failed, sending with the local ledger only: {exc}"
    return ""


def api_key_present() -> bool:
    """SENDGRID_API_KEY is set."""
    return bool(os.environ.get("SENDGRID_API_KEY", "").strip())


def secret_present() -> bool:
    """NEWSLETTER_SECRET is set."""
    return bool(os.environ.get("NEWSLETTER_SECRET", ""))


# Cheap enough for a million readers (email-validator costs 20 us each); the list was validated on import.
_PLAUSIBLE = re.compile(r'^[^@\s<>(),;:"\[\]\\]+@(?:[\w-]+\.)+[\w-]{2,}$')



def eligible_readers(root: Path, ledger: Ledger, journal: JournalState, resend_in_doubt: bool,
                     counts: dict[str, int], invalid_examples: list[str] | None = None) -> Iterator[tuple[str, str]]:
    """(address, name) of each reader to send to now, streamed; counts what was skipped and why."""
    sent, doubt = journal.sent, journal.in_doubt
    counts.setdefault("invalid", 0)
    for key, email, name in iter_unique_subscribers(root, counts):
        h = hash(key)
        if ledger.is_suppressed(key):
            counts["suppressed"] += 1
        elif len(key) > 320 or not _PLAUSIBLE.match(key):
            # One malformed address makes SendGrid refuse the whole request (400): leave it out, say so.
            counts["invalid"] += 1
            if invalid_examples is not None and len(invalid_examples) < 5:
                invalid_examples.append(email)
        elif h in sent:
            counts["sent"] += 1
        elif h in doubt and not resend_in_doubt:
            counts["doubt"] += 1
        else:
            yield key, name


# Cheap enough for a million readers (email-validator costs 20 us each); the list was validated on import.
