"""Pre-flight of a send: check passes, secrets present, the key works, readers counted; who is eligible."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any
from urllib.parse import unquote

from .config import API_KEY_ENV, SECRET_ENV, Config, env_set, env_value, load_config
from .errors import Level, Problem, SendError, TransportError, UsageError
from .issue import Issue, load_issue
from .journal import JournalState, journal_path, load_state
from .ledger import Ledger
from .recipients import Eligibility, Reader, is_plausible, normalize
from .schedule import schedule_warning

if TYPE_CHECKING:  # render, check and message bring Jinja2, MJML and Markdown: imported once needed (and
    # a cold send starts SpamAssassin before it imports the rest)
    from concurrent.futures import Future

    from .counting import Count
    from .message import MessageBuilder
    from .render import RenderedEmail
    from .sendgrid import SendGridTransport

SCHEDULE_LIMIT = dt.timedelta(hours=72)
PREBUILT_BYTES = 48_000_000  # request bodies encoded while SpamAssassin scores, at most


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
    include_new_readers: bool = False  # after a finished send: mail the readers who joined since

    def __post_init__(self) -> None:
        bad = [a for a in self.to if not is_plausible(normalize(a))]
        if bad:
            raise UsageError(f"--to {bad[0]!r} is not an address")


@dataclass(kw_only=True)
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
    journal: JournalState
    tally: Eligibility = field(default_factory=Eligibility)
    warnings: list[str] = field(default_factory=list)
    ledger: Ledger | None = None  # as read for the count; dispatch tails it rather than reading it again
    spool: IO[str] | None = None  # the eligible readers, `address<TAB>name<TAB>first name` a line
    # The first batches of the spool with their request bodies, encoded while SpamAssassin was scoring.
    prebuilt: list[tuple[list[Reader], bytes]] = field(default_factory=list)
    # Readers who joined since this issue's send finished: held back unless --include-new-readers.
    held_back: int = 0
    finished_at: str = ""

    def readers_from_spool(self) -> Iterator[Reader]:
        """The eligible readers as counted (beyond the prebuilt batches), less those another run sent since (the
        journal is re-read under the send lock). Suppression is checked again right before each batch leaves."""
        assert self.spool is not None
        if self.nobody_sent:
            for line in self.spool:
                key, name, first = line[:-1].split("\t")
                yield key, name, first
            return
        yield from self.unsent(line[:-1].split("\t") for line in self.spool)  # type: ignore[misc]

    @property
    def nobody_sent(self) -> bool:
        """Whether the journal names nobody to skip: a first run (or earlier runs sent nobody)."""
        return not self.journal.sent and (self.options.resend_in_doubt or not self.journal.doubt)

    def unsent(self, readers: Iterator[Reader] | list[Reader]) -> Iterator[Reader]:
        """`readers` less those the journal says were sent, or are in doubt (unless they are to be re-sent)."""
        journal, resend = self.journal, self.options.resend_in_doubt
        for key, name, first in readers:
            if not journal.is_sent_key(key) and (resend or not journal.in_doubt_key(key)):
                yield key, name, first

    def prebuild(self, until: Future[Any]) -> None:
        """Encode the first batches' request bodies until `until` is done (SpamAssassin scoring), within
        PREBUILT_BYTES: the work a cold send waits on anyway. Dispatch checks each one's readers again (ledger,
        journal) and builds it anew if any of them changed."""
        if self.spool is None or self.options.at is not None or self.options.dry_run:
            return
        builder, size, used = self.builder(), self.batch_size, 0
        while not until.done() and used < PREBUILT_BYTES:
            batch = [tuple(line[:-1].split("\t")) for _, line in zip(range(size), self.spool, strict=False)]
            if not batch:
                return
            readers: list[Reader] = batch  # type: ignore[assignment]
            body = builder.encoded(readers)
            self.prebuilt.append((readers, body))
            used += len(body)

    @property
    def readers(self) -> int:
        """Eligible now: not suppressed, not already sent, not in doubt (the test copies' count with --to)."""
        return len(self.options.to) if self.options.to else self.tally.readers

    @property
    def batch_size(self) -> int:
        """Readers per request."""
        from .message import MAX_PER_REQUEST

        return min(self.config.sendgrid.batch_size, MAX_PER_REQUEST)

    @property
    def batches(self) -> int:
        """Requests this run will make (before any split)."""
        return -(-self.readers // self.batch_size)

    def builder(self, batch_id: str = "") -> MessageBuilder:
        """The request builder for this send (scheduled under SendGrid's `batch_id` when given)."""
        from .message import MessageBuilder

        return MessageBuilder(self.config, self.rendered, secret=self.secret, slug=self.issue.slug,
                              subject=self.subject, sandbox=self.options.sandbox, send_at=self.options.at,
                              batch_id=batch_id)

    @property
    def nothing_to_send(self) -> str:
        """Why this run has nobody to send to ("" when it has someone)."""
        if self.options.to or self.readers:
            return ""
        if self.held_back:
            return (f"nothing to send: {self.issue.slug} went out on {self.finished_at[:10]} (that send finished); "
                    f"{self.held_back} reader(s) joined since: `--include-new-readers` sends it to exactly them")
        t = self.tally
        if t.already_sent or t.suppressed or t.in_doubt:
            return "nothing to send: every reader on the list has been sent this issue, is suppressed, or is in doubt"
        return "nothing to send: subscribers/subscribers.csv has no readers"


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
    """Pre-flight: secrets present, the key works, check passes; count readers. Sends nothing.

    The slow parts overlap. The list is read against the ledger and the journal in a child process from the
    start (read again if SendGrid's suppressions, pulled in meanwhile, changed the ledger). SpamAssassin (seconds,
    unless `check` already scored this very message): when the issue changed since the last score, spamd starts
    at once and loads its rules while the issue is rendered and checked, and the first request bodies are
    encoded while it scores."""
    from .counting import Count
    from .spam import stop_daemon

    config = load_config(root)
    issue = load_issue(root, options.slug, config)
    if issue.welcome and not options.to:
        raise SendError(f"{issue.slug} is the welcome email (`welcome: true`): each new reader gets it when they "
                        "confirm their sign-up, so it is never sent to the list",
                        hint=f"to see it in your inbox: newsletter send --issue {issue.slug} --to you@your.address")
    journal = load_state(journal_path(root, issue.slug))
    count = None if options.to else Count(root, journal, resend_in_doubt=options.resend_in_doubt)
    try:
        _start_spam_early(config, issue)
        prepared = _checked_and_counted(root, options, config, issue, journal, count)
        if options.at is not None and (late := schedule_warning(options.at)):
            prepared.warnings.append(late)
        return prepared
    finally:
        if count is not None:
            count.abandon()  # the send was refused before the count was needed
        stop_daemon()  # it scored, or the score was cached after all, or the send was refused


def _start_spam_early(config: Config, issue: Issue) -> None:
    from .spam import scored_since, start_daemon

    cache = config.root / "build" / ".cache" / "spam"
    if config.check_spam and not scored_since(cache, [issue.dir, config.root / "layouts", config.path]):
        start_daemon()


def _checked_and_counted(root: Path, options: SendOptions, config: Config, issue: Issue, journal: JournalState,
                         count: Count | None) -> Prepared:
    from concurrent.futures import ThreadPoolExecutor

    from .check import check_issue, spam_problems
    from .render import render_issue
    from .sendgrid import api_key_from_env
    from .tokens import secret_from_env

    _require_secrets(options)
    secret, _ = secret_from_env(required=True)
    api_key = "" if options.dry_run else api_key_from_env()
    warnings = [] if options.dry_run else _check_key(root, config, api_key, options)
    if count is not None:
        count.again_if_changed()  # the sync may have added opt-outs to the ledger: the count must see them
    rendered = render_issue(config, issue)
    _refuse_check_errors(check_issue(config, issue, rendered, spam=False), issue.slug)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="spam") as pool:
        spam = pool.submit(spam_problems, config, rendered)
        warnings[:0] = [] if options.dry_run else _check_images(root, config, rendered, test=bool(options.to))
        prepared = Prepared(root=root, config=config, issue=issue, rendered=rendered, options=options,
                            secret=secret, api_key=api_key, journal=journal, warnings=warnings,
                            subject=f"[Test] {rendered.subject}" if options.to else rendered.subject)
        if count is not None:
            _counted(prepared, count)
        prepared.prebuild(until=spam)
        _refuse_check_errors(spam.result(), issue.slug)
    return prepared


def _refuse_check_errors(problems: list[Problem], slug: str) -> None:
    errors = [p for p in problems if p.level == Level.ERROR]
    if errors:
        listed = "\n".join(f"  {p}" for p in errors[:8]) + (f"\n  ... and {len(errors) - 8} more" if len(errors) > 8
                                                             else "")
        raise SendError(f"`newsletter check` found {len(errors)} error(s); nothing was sent:\n{listed}",
                        hint=f"fix them, then run `newsletter check --issue {slug}`")


def _counted(prepared: Prepared, count: Count) -> None:
    """The count's spool, tally and ledger into `prepared`, with what the ledger and the list warn about."""
    prepared.spool, prepared.tally = count.finish()
    prepared.ledger = count.ledger
    done = prepared.journal.finished_run()
    if done is not None and prepared.tally.readers and not prepared.options.include_new_readers:
        # A finished send is not quietly sent again to whoever joined since: the writer decides.
        import io

        prepared.held_back, prepared.finished_at = prepared.tally.readers, done.ended or done.started
        prepared.tally.readers = 0
        if prepared.spool is not None:
            prepared.spool.close()
        prepared.spool = io.StringIO("")
    prepared.warnings[:0] = [str(p) for p in count.ledger.problems]
    t = prepared.tally
    if t.invalid:
        shown = ", ".join(repr(e) for e in t.invalid_examples)
        prepared.warnings.append(f"warning: {t.invalid} address(es) in subscribers.csv are not valid and "
                                 f"will be skipped ({shown}); fix or remove them")


def _require_secrets(options: SendOptions) -> None:
    missing = [name for name, ok in ((API_KEY_ENV, options.dry_run or api_key_present()),
                                      (SECRET_ENV, secret_present())) if not ok]
    if missing:
        raise SendError(f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} not set: "
                        + "; ".join({API_KEY_ENV: "the API key sends the mail",
                                     SECRET_ENV: "the secret signs every reader's unsubscribe link"}[m]
                                    for m in missing),
                        hint="export " + " and ".join(f"{m}=..." for m in missing))


def _check_images(root: Path, config: Config, rendered: RenderedEmail, *, test: bool) -> list[str]:
    """Each image of the essay, requested once where the email loads it (HEAD, then GET): readers must not get
    a broken-image icon. Refuses the send when one is not there as an image; a test copy only warns."""
    from .archive import publish_hosted_images
    from .links import check_links
    from .render import image_urls, view_url

    # When `serve` hosts the archive, the images go into build/site first: `serve` on this machine has them.
    hosted = publish_hosted_images(root, config, rendered.issue)
    prefix = view_url(config, rendered.issue)
    urls = sorted({u for u in image_urls(rendered.html) if u.startswith(prefix)})
    problems = []
    for r in check_links(urls, timeout=config.sendgrid.timeout):
        if r.broken or not r.content_type.startswith("image/"):
            name = unquote(r.url[len(prefix):])
            problems.append(f"issues/{rendered.issue.slug}/{name} is not published at {r.url}: run "
                            f"`newsletter archive` and upload build/site")
    if problems and not test:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        hint = (f"`newsletter serve` answers {prefix} from build/site on the machine it runs on: send from there "
                "(README: Going live)" if hosted else f"the images load from {prefix}: publish the archive there first")
        raise SendError(problems[0] + more + "; nothing was sent", hint=hint)
    return [f"warning: {p}" for p in problems]


def _check_key(root: Path, config: Config, api_key: str, options: SendOptions) -> list[str]:
    """The key works and may send (GET /v3/scopes); then SendGrid's suppressions are pulled in. Warnings."""
    from .sendgrid import SendGridTransport

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
    warning = ""
    if options.sync and not options.to:
        warning = _sync_before_send(root, transport, scopes)
    if not scopes_known:
        warning = "warning: GET /v3/scopes is not available here: the key's permissions were not checked"
    return [warning] if warning else []


def _sync_before_send(root: Path, transport: SendGridTransport, scopes: list[str]) -> str:
    """Push the opt-outs SendGrid has not heard of, then pull its suppressions into the ledger; a failure is a
    warning (this send re-reads the ledger before every batch, and SendGrid enforces its own lists)."""
    from .suppressions import sync

    if not any(s.startswith("suppression") or s.startswith("asm") for s in scopes):
        return "warning: the API key cannot read suppressions; skipped `newsletter sync` (use --no-sync to silence)"
    try:
        sync(root, transport)
    except TransportError as exc:
        return f"warning: `newsletter sync` failed, sending with the local ledger only: {exc}"
    return ""


def api_key_present() -> bool:
    """SENDGRID_API_KEY is set."""
    return env_set(API_KEY_ENV)


def secret_present() -> bool:
    """NEWSLETTER_SECRET is set."""
    return bool(env_value(SECRET_ENV))
