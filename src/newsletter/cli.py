"""The `newsletter` command: options -> one library call -> echo. The only click importer."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from .errors import NewsletterError, printable

if TYPE_CHECKING:
    import datetime as dt

    from .preflight import Prepared
    from .subscribers import ImportReport


def _debug_wanted(ctx: click.Context | None) -> bool:
    while ctx is not None:
        if ctx.params.get("debug"):
            return True
        ctx = ctx.parent
    return os.environ.get("NEWSLETTER_DEBUG", "") not in ("", "0")


def _run(ctx: click.Context, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call a command body; NewsletterError -> a plain message and exit 1, bugs -> one line (or --debug)."""
    try:
        return func(*args, **kwargs)
    except NewsletterError as exc:
        if _debug_wanted(ctx):
            raise
        if exc.path is not None:
            exc.path = _show(Path(exc.path))
        click.secho(f"error: {exc}", err=True, fg="red")
        ctx.exit(exc.exit_code)
    except (click.exceptions.Exit, click.ClickException, click.Abort, KeyboardInterrupt):
        raise
    except BrokenPipeError:
        # The reader of our output went away (`newsletter subscribers list | head`): stop quietly.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        ctx.exit(1)
    except Exception as exc:  # noqa: BLE001 - the one place a bug becomes a short message
        if _debug_wanted(ctx):
            raise
        click.secho(f"internal error: {type(exc).__name__}: {exc}", err=True, fg="red")
        click.echo("  run again with --debug for the traceback, and report it", err=True)
        ctx.exit(1)


def command_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """--root and --debug on every subcommand, and the one place errors become messages."""

    @click.option("--root", "root", type=click.Path(file_okay=False, path_type=Path), default=None,
                  help="The newsletter's folder (also NEWSLETTER_ROOT; default: the nearest folder holding "
                       "newsletter.yaml, from here upward).")
    @click.option("--debug", is_flag=True, help="Show tracebacks instead of short error messages.")
    @click.pass_context
    @functools.wraps(func)
    def wrapper(ctx: click.Context, root: Path | None, debug: bool, **kwargs: Any) -> Any:
        from .config import resolve_root

        parent = ctx.parent
        while root is None and parent is not None:  # `newsletter subscribers --root DIR import ...`
            root = parent.params.get("root")
            parent = parent.parent
        return _run(ctx, lambda: func(resolve_root(root), **kwargs))

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--debug", is_flag=True, help="Show tracebacks instead of short error messages.")
@click.option("--root", "root", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="The newsletter's folder (usually given after the command's name).")
@click.version_option(package_name="newsletter")
def main(debug: bool, root: Path | None) -> None:
    """Turn weekly essays into responsive emails and deliver them through SendGrid.

    An issue is a folder issues/<slug>/ with issue.yaml and body.md; the publication is newsletter.yaml.
    Every command takes --root DIR (or NEWSLETTER_ROOT) to work on a newsletter elsewhere.
    """


def _echo_problem(problem: Any) -> None:
    color = {"error": "red", "warning": "yellow"}.get(problem.level)
    if problem.path is not None:
        problem.path = _show(Path(problem.path))  # relative to where the writer stands, when inside it
    # errors, warnings and notes on stdout, in that order, then the tally: one stream, read top to bottom
    click.secho(str(problem), fg=color)


@main.command()
@click.option("--issue", "slug", metavar="SLUG",
              help="The issue to render (default: the one whose folder you are in, else the newest by date).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Write to DIR/<slug>/ instead of build/<slug>/.")
@click.option("--eml", is_flag=True, help="Also write email.eml, the complete message a mail client opens.")
@command_options
def render(root: Path, slug: str | None, out_dir: Path | None, eml: bool) -> None:
    """Render an issue to email.html, email.txt and email.mjml.

    Per-reader parts (name, unsubscribe link) are shown for a sample reader.

    \b
    Example:
      newsletter render --issue micro-moments-of-connection --out build/
    """
    from .build import build
    from .issue import chosen_slug

    result = build(root, chosen_slug(root, slug, Path.cwd()), out_dir.resolve() if out_dir else None, eml=eml)
    for path in result.paths.values():
        click.echo(f"wrote {_show(path)}")
    kb = result.html_bytes / 1024
    click.echo(f"HTML size: {kb:.1f} KB ({result.html_bytes} bytes; Gmail clips at 102 KB)")
    for problem in result.warnings:
        _echo_problem(problem)


def _show(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


@main.command()
@click.option("--issue", "slug", metavar="SLUG",
              help="The issue to check (default: the one whose folder you are in, else the newest by date).")
@click.option("--links", is_flag=True, help="Also request every link and report broken ones (needs the network).")
@click.option("--no-spam", is_flag=True, help="Skip the SpamAssassin score.")
@command_options
def check(root: Path, slug: str | None, links: bool, no_spam: bool) -> None:
    """Check an issue before sending: placeholders, links, images, unsubscribe, size, subject,
    accessibility (contrast, text size, buttons) and the spam score (where SpamAssassin is installed).

    Prints one line per problem (error: / warning: / note:) and exits 1 when there is any error.

    \b
    Example:
      newsletter check --issue micro-moments-of-connection
    """
    from .check import check_slug
    from .issue import chosen_slug

    _, issue, _, problems = check_slug(root, chosen_slug(root, slug, Path.cwd()), links=links, spam=not no_spam)
    for problem in problems:
        _echo_problem(problem)
    from .errors import Level

    errors = sum(p.level is Level.ERROR for p in problems)
    warnings = sum(p.level is Level.WARNING for p in problems)
    click.echo(f"{issue.slug}: {errors} error(s), {warnings} warning(s)")
    if errors:
        sys.exit(1)


@main.command()
@click.argument("title", required=False)
@click.option("--welcome", is_flag=True, help="Start the welcome email new readers get on confirming (issues/welcome).")
@click.option("--slug", help="Folder name (default: made from the title).")
@click.option("--date", "date_text", metavar="YYYY-MM-DD", help="Issue date (default: a week after the newest).")
@command_options
def new(root: Path, title: str | None, welcome: bool, slug: str | None, date_text: str | None) -> None:
    """Start next week's issue: issues/<slug>/ with issue.yaml and body.md to fill in (or, with --welcome,
    the welcome email each new reader gets when they confirm their sign-up).

    \b
    Examples:
      newsletter new "The Quiet Courage of Rest"
      newsletter new --welcome
    """
    import datetime as dt

    from .config import load_config
    from .issue import create_issue

    date = None
    if date_text:
        try:
            date = dt.date.fromisoformat(date_text)
        except ValueError:
            raise click.BadParameter(f"{date_text!r} is not a date written YYYY-MM-DD", param_hint="--date") from None
    if welcome:
        from .issue import create_welcome

        folder = create_welcome(root, load_config(root))
    elif not title:
        raise click.UsageError("give the new issue's TITLE (or --welcome for the welcome email)")
    else:
        folder = create_issue(root, title, load_config(root), slug=slug, date=date)
    click.echo(f"created {_show(folder / 'issue.yaml')}")
    click.echo(f"created {_show(folder / 'body.md')}")
    click.echo(f"write the essay in body.md, then: newsletter render --issue {folder.name}")


@main.group()
@click.option("--root", "root", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="The newsletter's folder (also accepted after the subcommand's name).")
def subscribers(root: Path | None) -> None:
    """Manage the list (subscribers/subscribers.csv) against the unsubscribe ledger.

    \b
    Examples:
      newsletter subscribers import ~/Downloads/mailchimp-export.csv
      newsletter subscribers add ada@example.net --name "Ada"
      newsletter subscribers count
      newsletter subscribers list --suppressed
      newsletter subscribers export readers.csv
    """


@subscribers.command("import")
@click.argument("files", metavar="FILE...", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--dry-run", is_flag=True, help="Read and count everything, write nothing.")
@command_options
def subscribers_import(root: Path, files: tuple[Path, ...], dry_run: bool) -> None:
    """Import other tools' exports: CSV files, a folder of them, or the export zip itself.

    Mailchimp, Substack, Kit, Buttondown, beehiiv, Ghost, listmonk, MailerLite, Sendy or any CSV with an email
    column. Each platform's do-not-mail statuses (unsubscribed, cleaned/bounced, complained, blocklisted...)
    go to the ledger (source import:<platform>) before any reader is added; unconfirmed and pending readers
    are skipped. An opt-out in any file beats an active row in another. The list is rewritten atomically.

    \b
    Examples:
      newsletter subscribers import ~/Downloads/mailchimp-audience-export.zip
      newsletter subscribers import email_list.micro-moments.csv --dry-run
    """
    from .subscribers import import_exports

    r = import_exports(root, list(files), dry_run=dry_run)
    for line in _import_lines(r):
        click.echo(printable(line))  # names, columns and values come from the files: shown, never obeyed
    if (failure := r.failure()) is not None:
        raise failure
    if r.ledger_new and not dry_run:
        _told_sendgrid(r.pushed, r.waiting)


def _import_lines(r: ImportReport) -> list[str]:
    """The import report, line by line."""
    lines = []
    for f in r.files:
        delim = {",": "comma", ";": "semicolon", "\t": "tab"}[f.delimiter]
        guessed = " (guessed from its values)" if f.email_column_guessed else ""
        if f.headerless:
            guessed += "; the file has no header row, so its first line was imported too"
        names = f"; names from {', '.join(repr(n) for n in f.name_columns)}" if f.name_columns else ""
        status = "; status from the file name" if f.status_from_name else \
            f"; status from {f.status_column!r}" if f.status_column else ""
        if f.date_columns:
            status += f"; opted out when {' or '.join(repr(c) for c in f.date_columns)} has a date"
        lines.append(f"read {f.rows} row(s) from {f.source} ({f.platform}, {f.encoding}, {delim}-separated); "
                     f"addresses from column {f.email_column!r}{guessed}{names}{status}")
    lines.append(("dry run, nothing written: " if r.dry_run else "") + r.summary)
    if r.suppressed:
        verb = "would be recorded" if r.dry_run else "recorded"
        lines.append(f"  ledger:          {r.ledger_new} opt-out(s) {verb}"
                     + (f", {r.ledger_known} already there" if r.ledger_known else ""))
    lines.append(f"  already present: {r.already_present}")
    lines.append(f"  duplicates:      {r.duplicates} (same address twice in the files)")
    if r.kept_out:
        by = ", ".join(f"{k} {v}" for k, v in sorted(r.kept_out.items()))
        lines.append(f"  kept out:        {sum(r.kept_out.values())} already suppressed in the ledger ({by}); only "
                     "`newsletter resubscribe` lifts a suppression")
    lines.append(f"  invalid:         {r.invalid.count}")
    lines.extend(f"    {_where(source, len(r.files))}line {line}: {value!r}: {reason}"
                 for source, line, value, reason in r.invalid.first)
    if r.invalid.count > len(r.invalid.first):
        lines.append(f"    ... and {r.invalid.count - len(r.invalid.first)} more")
    if r.malformed.count:
        lines.append(f"  malformed rows:  {r.malformed.count} (skipped)")
        lines.extend(f"    {_where(source, len(r.files))}line {line}: {what}"
                     for source, line, what in r.malformed.first)
    if r.empty:
        lines.append(f"  rows without an address: {r.empty}")
    return lines


def _where(source: str, files: int) -> str:
    return f"{source}: " if files > 1 else ""


@subscribers.command("add")
@click.argument("email")
@click.option("--name", default="", help="The reader's name, used in the greeting.")
@command_options
def subscribers_add(root: Path, email: str, name: str) -> None:
    """Add one reader to the list."""
    from .subscribers import add_subscriber

    click.echo(f"added {add_subscriber(root, email, name)}")


@subscribers.command("remove")
@click.argument("addresses", metavar="ADDR...", nargs=-1, required=True)
@command_options
def subscribers_remove(root: Path, addresses: tuple[str, ...]) -> None:
    """Take readers off the list. Their history in the ledger stays: an opt-out is never forgotten.

    \b
    Example:
      newsletter subscribers remove ada@example.net
    """
    from .subscribers import remove_subscribers

    removed, absent = remove_subscribers(root, addresses)
    for address in removed:
        click.echo(f"removed {address}")
    for address in absent:
        click.echo(f"{address} is not on the list")


@subscribers.command("pending")
@command_options
def subscribers_pending(root: Path) -> None:
    """List emails still waiting in the outbox (confirmations and welcomes `serve` could not send yet), then the
    sign-ups of the last 7 days that wait for their confirmation (older ones have expired)."""
    from .signup import waiting

    found = waiting(root)
    for m in found.mail:
        click.echo(f"{m.email}\t{m.kind} email waiting in the outbox since {m.since}")
    for p in found.signups:
        click.echo(f"{p.email}\tsigned up {p.at}" + (f"\tat {p.source}" if p.source else ""))
    click.echo(f"{len(found.mail)} email(s) waiting in the outbox, {len(found.signups)} sign-up(s) waiting for "
               "confirmation", err=True)


@subscribers.command("list")
@click.option("--suppressed", is_flag=True, help="List the suppressed addresses (with their latest event).")
@command_options
def subscribers_list(root: Path, suppressed: bool) -> None:
    """Print the active readers (or the suppressed ones), one per line."""
    from .subscribers import iter_listing

    for email, name, event in iter_listing(root, suppressed=suppressed):
        # names came from imported files: shown, never obeyed
        click.echo("\t".join(printable(x) for x in (email, name, event if suppressed else "") if x))


@subscribers.command("count")
@command_options
def subscribers_count(root: Path) -> None:
    """Count active, suppressed (by event) and total readers."""
    from .subscribers import count_subscribers

    c = count_subscribers(root)
    for problem in c.ledger_problems:
        click.secho(problem, fg="yellow", err=True)
    total_suppressed = sum(c.suppressed.values())
    click.echo(f"active:     {c.active}")
    detail = ", ".join(f"{k} {v}" for k, v in sorted(c.suppressed.items()))
    click.echo(f"suppressed: {total_suppressed}" + (f" ({detail})" if detail else ""))
    click.echo(f"total:      {c.total}" + (f" (and {c.duplicates} duplicate row(s) ignored)" if c.duplicates else ""))
    click.echo(f"opted out, not on the list: {c.opted_out_elsewhere}")
    from .signup import pending_signups

    click.echo(f"pending:    {len(pending_signups(root))} sign-up(s) waiting for confirmation")


@subscribers.command("export")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--all", "include_suppressed", is_flag=True, help="Include suppressed addresses too.")
@command_options
def subscribers_export(root: Path, file: Path, include_suppressed: bool) -> None:
    """Write the active readers, with every column, to FILE (CSV)."""
    from .subscribers import export_subscribers

    n = export_subscribers(root, file, include_suppressed=include_suppressed)
    click.echo(f"wrote {n} reader(s) to {file}")


def _told_sendgrid(pushed: int, waiting: str) -> None:
    if waiting:
        click.echo(f"SendGrid not told yet ({waiting}): `newsletter sync` pushes it", err=True)
    elif pushed:
        click.echo(f"SendGrid told: {pushed} address(es) on its suppression list updated", err=True)


def _ledger_append(root: Path, addresses: tuple[str, ...], event: str, detail: str) -> None:
    from .ledger import Kind, Outcome, ledger_path
    from .subscribers import record_ledger_events

    where = _show(ledger_path(root))
    kind = Kind(event)
    changes, recording = record_ledger_events(root, addresses, kind, detail=detail)
    for c in changes:
        address, previous = c.result.event.email, c.result.previous
        if c.result.outcome is not Outcome.RECORDED:
            click.echo(f"{address} is not suppressed; nothing recorded" if not kind.suppresses else
                       f"{address} is already suppressed (latest event: {previous}); nothing recorded")
        elif c.on_list:
            click.echo(f"{event}: {address} (recorded in {where})")
        elif kind.suppresses:
            click.echo(f"{event}: {address}: not on the list; recorded so it is never mailed")
        else:
            click.echo(f"{event}: {address}: recorded; not on the list yet: "
                       f"`newsletter subscribers add {address}` adds them")
    _told_sendgrid(recording.pushed, recording.waiting)


@main.command()
@click.argument("addresses", metavar="ADDR...", nargs=-1, required=True)
@click.option("--reason", default="", help="Why (kept in the ledger's detail column).")
@click.option("--event", type=click.Choice(["unsubscribe", "bounce", "spamreport", "invalid"]),
              default="unsubscribe", show_default=True, help="The kind of suppression.")
@command_options
def unsubscribe(root: Path, addresses: tuple[str, ...], reason: str, event: str) -> None:
    """Record that ADDR must never be mailed again (appended to subscribers/unsubscribes.csv).

    \b
    Example:
      newsletter unsubscribe ada@example.net --reason "asked by reply"
    """
    _ledger_append(root, addresses, event, reason)


@main.command()
@click.argument("addresses", metavar="ADDR...", nargs=-1, required=True)
@click.option("--note", default="", help="How they asked to come back (kept in the ledger).")
@command_options
def resubscribe(root: Path, addresses: tuple[str, ...], note: str) -> None:
    """Lift a suppression, when the reader asked to come back.

    \b
    Example:
      newsletter resubscribe ada@example.net --note "signed up again on the site"
    """
    _ledger_append(root, addresses, "resubscribe", note)
    click.echo("if SendGrid suppresses the address too (a bounce, or its own unsubscribe list), remove it there "
               "as well: SendGrid drops mail to its suppressed addresses", err=True)


@main.command()
@click.option("--issue", "slug", metavar="SLUG",
              help="The issue to send (default: the one whose folder you are in; required elsewhere).")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation (scripts, cron).")
@click.option("--dry-run", is_flag=True, help="Do everything but the network: check, count, build every request.")
@click.option("--to", "to", multiple=True, metavar="ADDR",
              help="Send a test copy to ADDR only (repeatable); subject prefixed [Test]; not journaled.")
@click.option("--at", "at_text", metavar="DATETIME",
              help="Schedule through SendGrid (send_at), e.g. 2026-12-01T07:53 local time; within 72 h.")
@click.option("--resend-in-doubt", is_flag=True,
              help="Also re-send batches whose fate is unknown (request sent, no answer recorded).")
@click.option("--include-new-readers", is_flag=True,
              help="After a finished send: mail the readers who joined since (a plain re-run mails nobody new).")
@click.option("--sandbox", is_flag=True, help="SendGrid sandbox mode: validated by SendGrid, delivered to no one.")
@click.option("--concurrency", type=click.IntRange(1, 16), help="Requests in flight (default from newsletter.yaml).")
@click.option("--no-sync", is_flag=True, help="Do not pull SendGrid's suppression lists into the ledger first.")
@command_options
def send(root: Path, slug: str | None, yes: bool, dry_run: bool, to: tuple[str, ...], at_text: str | None,
         resend_in_doubt: bool, include_new_readers: bool, sandbox: bool, concurrency: int | None,
         no_sync: bool) -> None:
    """Send an issue to every reader who has not unsubscribed, in batches through SendGrid.

    Safe to re-run: the send journal (subscribers/sends/<slug>.jsonl) makes a second run continue where
    the first stopped, and never re-send an acknowledged batch. Once a send has finished, a re-run mails nobody
    new: it says how many readers joined since, and --include-new-readers mails exactly them. Needs
    SENDGRID_API_KEY and NEWSLETTER_SECRET.

    \b
    Examples:
      newsletter send --issue micro-moments-of-connection --to me@my.domain
      newsletter send --issue micro-moments-of-connection --dry-run
      newsletter send --issue micro-moments-of-connection
    """
    import datetime as dt

    from .issue import required_slug
    from .preflight import SendOptions, parse_at, prepare
    from .send import dispatch

    slug = required_slug(root, slug, Path.cwd())
    at = parse_at(at_text) if at_text else None
    options = SendOptions(slug=slug, dry_run=dry_run, to=to, at=at, resend_in_doubt=resend_in_doubt,
                          sandbox=sandbox, concurrency=concurrency, sync=not no_sync,
                          include_new_readers=include_new_readers)
    p = prepare(root, options)
    for warning in p.warnings:
        click.secho(warning, fg="yellow", err=True)
    _print_summary(p, to, at)
    if p.nothing_to_send:
        click.echo(p.nothing_to_send)
    if dry_run:
        click.echo("dry run: nothing will be sent")
    elif not (yes or to or p.nothing_to_send):
        question = "Send now?" if at is None else \
            f"Schedule for {at.astimezone(dt.UTC).strftime('%a %-d %b %H:%M')} UTC?"
        try:
            confirmed = click.confirm(question, default=False)
        except click.Abort:  # no terminal to answer on (cron, a pipe)
            confirmed = False
            click.echo("", err=True)
        if not confirmed:
            click.echo("not sent (pass --yes to send without being asked)")
            sys.exit(1)
    report = dispatch(p, _progress_printer() if not (to or dry_run) else None)
    _print_report(report, dry_run=dry_run, test=bool(to), scheduled=at is not None)
    if not report.ok:
        sys.exit(1)


def _print_summary(p: Prepared, to: tuple[str, ...], at: dt.datetime | None) -> None:
    """What a send is about to do: the issue, who gets it, who does not and why."""
    t = p.tally
    click.echo(f"issue:      {p.issue.slug}")
    click.echo(f"subject:    {p.subject}")
    click.echo(f"from:       {p.config.sender.name} <{p.config.sender.email}>")
    if to:
        click.echo(f"test copy:  {', '.join(to)}")
    else:
        click.echo(f"readers:    {p.readers} (after suppression)")
        click.echo(f"suppressed: {t.suppressed}")
        if t.already_sent:
            click.echo(f"already sent earlier: {t.already_sent} (this run continues where the last stopped)")
        if t.in_doubt:
            click.echo(f"in doubt:   {t.in_doubt} reader(s) from an earlier run, not re-sent "
                       "(--resend-in-doubt to send them again)")
        click.echo(f"batches:    {p.batches} (up to {p.batch_size} readers each)")
    if at:
        click.echo(f"scheduled:  {at.isoformat(timespec='minutes')}")


def _progress_printer():  # type: ignore[no-untyped-def]
    """A progress bar on a terminal; a plain line every ~5% otherwise."""
    import threading
    import time

    lock = threading.Lock()
    start = time.perf_counter()
    tty = sys.stderr.isatty()
    state = {"last": -1}

    def show(event) -> None:  # type: ignore[no-untyped-def]
        with lock:
            elapsed = max(time.perf_counter() - start, 1e-6)
            rate = event.readers_done / elapsed
            left = max(event.readers_total - event.readers_done, 0)
            eta = left / rate if rate else 0
            if tty:
                width = 30
                frac = event.readers_done / event.readers_total if event.readers_total else 1
                bar = "#" * int(width * min(frac, 1)) + "-" * (width - int(width * min(frac, 1)))
                click.echo(f"\r[{bar}] {event.readers_done}/{event.readers_total} readers, batch "
                           f"{event.batches_done}/{event.batches_total}, {rate:,.0f}/s, ETA {eta:,.0f} s ",
                           nl=False, err=True)
                if event.readers_done >= event.readers_total:
                    click.echo("", err=True)
            else:
                step = max(1, event.batches_total // 20)
                if event.batches_done - state["last"] >= step or event.batches_done >= event.batches_total:
                    state["last"] = event.batches_done
                    click.echo(f"progress: {event.readers_done}/{event.readers_total} readers, batch "
                               f"{event.batches_done}/{event.batches_total}, {rate:,.0f} readers/s, "
                               f"ETA {eta:,.0f} s", err=True)

    return show


def _print_report(r, *, dry_run: bool, test: bool, scheduled: bool) -> None:  # type: ignore[no-untyped-def]
    for line in r.errors:
        click.secho(line, fg="red", err=True)
    if test:
        click.echo(f"test copy sent to {r.sent} address(es)")
        return
    verb = "would send" if dry_run else "scheduled" if scheduled else "sent"  # SendGrid holds a scheduled send
    rate = r.sent / r.elapsed if r.elapsed else 0
    click.echo(f"{verb}: {r.sent} reader(s) in {r.sent_batches} batch(es)")
    click.echo(f"suppressed: {r.suppressed + r.suppressed_late}"
               + (f" ({r.suppressed_late} unsubscribed during the send)" if r.suppressed_late else ""))
    click.echo(f"already sent earlier: {r.already_sent}")
    click.echo(f"failed: {r.failed} reader(s) in {r.failed_batches} batch(es)")
    click.echo(f"in doubt: {r.in_doubt} reader(s) in {r.in_doubt_batches} batch(es)")
    if r.not_attempted:
        click.echo(f"not attempted: {r.not_attempted} reader(s) (the send stopped)")
    click.echo(f"elapsed: {r.elapsed:.1f} s ({rate:,.0f} readers/s)")
    if r.failed or r.not_attempted:
        click.secho("some readers were not sent: fix the cause and run the same command again; "
                    "it continues where it stopped", fg="red", err=True)
    if r.in_doubt:
        click.secho(f"{r.in_doubt} reader(s) in doubt: the request went out but no answer was recorded, so "
                    "they may have received it. They are never re-sent unless you run again with "
                    "--resend-in-doubt", fg="yellow", err=True)
    if r.archive is not None:
        click.echo(f"archive: {_show(r.archive.out_dir)} rebuilt ({len(r.archive.issues)} issue(s))")
    for line in r.warnings:
        click.secho(line, fg="yellow", err=True)


@main.command()
@click.option("--issue", "slug", metavar="SLUG",
              help="The issue (default: the one whose folder you are in; required elsewhere).")
@click.option("--readers", "show_readers", is_flag=True, help="Also list who has it (the addresses SendGrid accepted).")
@command_options
def status(root: Path, slug: str | None, show_readers: bool) -> None:
    """Show an issue's send: sent, pending, failed, in doubt.

    \b
    Example:
      newsletter status --issue micro-moments-of-connection
    """
    from .issue import required_slug
    from .send import send_status

    s = send_status(root, required_slug(root, slug, Path.cwd()))
    click.echo(f"issue:      {s.slug} ({len(s.runs)} send run(s))")
    for run in s.runs:
        click.echo(f"  run:      started {run.started}" + (f", ended {run.ended}" if run.ended else
                                                           ", did not finish (killed or stopped)"))
    for sched in s.schedules:
        if sched.cancelled_at:
            click.echo(f"  cancelled at {sched.cancelled_at}: the send scheduled for {sched.send_at} (batch "
                       f"{sched.batch_id})")
        elif sched.cancel_unknown:
            click.echo(f"  scheduled for {sched.send_at} (batch {sched.batch_id}); a cancel was asked for at "
                       f"{sched.cancel_asked_at} and SendGrid's answer was not recorded: it may still go out "
                       f"(`newsletter unschedule --issue {s.slug}` asks again)")
        else:
            click.echo(f"  scheduled for {sched.send_at} (batch {sched.batch_id})"
                       + (f"; SendGrid refused to cancel it: {sched.cancel_refused}" if sched.cancel_refused else ""))
    if s.scheduled:
        click.echo(f"scheduled:  {s.scheduled} reader(s), held by SendGrid until the send time")
    click.echo(f"sent:       {s.sent - s.scheduled} reader(s)" + ("" if s.scheduled else
                                                              f" in {s.sent_batches} batch(es)"))
    click.echo(f"pending:    {s.pending} reader(s) not sent yet")
    click.echo(f"suppressed: {s.suppressed}")
    click.echo(f"failed:     {s.failed_readers} reader(s) in {s.failed_batches} batch(es) (a re-run sends them)")
    click.echo(f"in doubt:   {s.in_doubt_readers} reader(s) in {s.in_doubt_batches} batch(es)")
    for b, readers, error in s.doubt_details:
        click.echo(f"  batch {b}: {readers} reader(s): {error}")
    if show_readers:
        from .journal import iter_sent_addresses, journal_path

        click.echo("who has it:")
        for address in iter_sent_addresses(journal_path(root, s.slug)):
            click.echo(f"  {address}")
    if s.in_doubt_readers or s.failed_readers:
        sys.exit(1)


@main.command()
@command_options
def embed(root: Path) -> None:
    """Print the sign-up form as plain HTML for your own web site: it posts to <base_url>/subscribe, where
    `newsletter serve` answers, and works without JavaScript.

    \b
    Example:
      newsletter embed > signup-form.html
    """
    from .config import load_config
    from .web import signup_form

    config = load_config(root)
    click.echo(f"<!-- {config.name}: sign-up form (double opt-in: readers confirm by email) -->")
    click.echo(signup_form(config, action=f"{config.base_url}/subscribe"))


@main.command()
@click.option("--issue", "slug", metavar="SLUG",
              help="The issue whose scheduled send to cancel (default: the one whose folder you are in; "
                   "required elsewhere).")
@command_options
def unschedule(root: Path, slug: str | None) -> None:
    """Cancel a send scheduled with `send --at`, at SendGrid (its batch id). The issue can then be scheduled or
    sent again; the cancelled batches do not count as sent.

    \b
    Example:
      newsletter unschedule --issue micro-moments-of-connection
    """
    from .issue import required_slug
    from .schedule import unschedule as cancel

    slug = required_slug(root, slug, Path.cwd())
    schedule = cancel(root, slug)
    click.echo(f"cancelled the send scheduled for {schedule.send_at} (batch {schedule.batch_id}); "
               f"`newsletter send --issue {slug}` can schedule or send it again")


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8080, show_default=True, type=click.IntRange(1, 65535), help="Port.")
@command_options
def serve(root: Path, host: str, port: int) -> None:
    """Serve the unsubscribe pages (with RFC 8058 one-click) and SendGrid's Event Webhook.

    Run it behind an HTTPS reverse proxy that forwards <base_url> to it. Needs NEWSLETTER_SECRET (the same
    one `send` used) and, for the webhook, SENDGRID_WEBHOOK_PUBLIC_KEY.

    \b
    Example:
      newsletter serve --host 127.0.0.1 --port 8080
    """
    from .web import serve as run_server

    run_server(root, host, port, ready=lambda url: click.echo(f"serving on {url} (Ctrl-C to stop)", err=True))


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@command_options
def doctor(root: Path, as_json: bool) -> None:
    """Is this newsletter ready to send? Checks the sender's domain (SendGrid's authentication, DKIM, return
    path, DMARC, SPF), the reply-to domain's MX, <base_url>/healthz over HTTPS, SendGrid's Event Webhook and
    its signature, the API key's permissions, NEWSLETTER_SECRET, that git keeps subscribers/ out, and a
    backup younger than 7 days.

    One line per check: ✓ ok, ! warning, ✗ failure, with what to do. Exits 1 when any check fails. DNS
    questions go to NEWSLETTER_NAMESERVER (HOST:PORT) when it is set. Run it on the server.

    \b
    Examples:
      newsletter doctor
      newsletter doctor --json
    """
    import json

    from .doctor import Status, run_doctor

    report = run_doctor(root)
    if as_json:
        click.echo(json.dumps(report.as_dict(), indent=2, ensure_ascii=False))
    else:
        marks = {Status.OK: ("✓", "green"), Status.WARN: ("!", "yellow"), Status.FAIL: ("✗", "red")}
        for c in report.checks:
            mark, color = marks[c.status]
            click.secho(f"{mark} {c.check:<15}{c.detail}" + (f" → {c.fix}" if c.fix else ""), fg=color)
        failed = sum(c.status == Status.FAIL for c in report.checks)
        warned = sum(c.status == Status.WARN for c in report.checks)
        click.echo(f"{failed} failure(s), {warned} warning(s): " + (
            "fix the failures, then run `newsletter doctor` again" if failed else "ready to send"))
    if report.failed:
        sys.exit(1)


@main.command()
@click.option("--full", is_flag=True, help="Read the whole lists, not only what changed since the last sync.")
@click.option("--pending", "show_pending", is_flag=True, help="Only list what waits to be pushed to SendGrid.")
@command_options
def sync(root: Path, full: bool, show_pending: bool) -> None:
    """Push the opt-outs SendGrid has not heard of yet (unsubscribes and spam reports from the command line,
    the page, one-click and imports; resubscribes), then pull SendGrid's suppression lists (unsubscribes,
    groups, bounces, spam reports, invalid) into the ledger.

    \b
    Examples:
      newsletter sync
      newsletter sync --pending
    """
    from .sendgrid import SendGridTransport, api_key_from_env
    from .suppressions import sync as sync_lists
    from .suppressions import waiting

    todo = waiting(root)
    click.echo(f"waiting to reach SendGrid: {len(todo.add)} opt-out(s), {len(todo.remove)} lift(s)")
    if show_pending:
        for address in todo.add:
            click.echo(f"  suppress {address}")
        for address in todo.remove:
            click.echo(f"  lift     {address}")
        return
    report = sync_lists(root, SendGridTransport(api_key_from_env()), full=full)
    click.echo(f"pushed {report.pushed} address(es) to SendGrid's suppression list")
    for endpoint, fetched in report.fetched.items():
        click.echo(f"{endpoint}: {fetched} listed, {report.appended[endpoint]} new in the ledger")
    click.echo(f"appended {sum(report.appended.values())} event(s)")


@main.command()
@click.option("--issue", "slug", metavar="SLUG",
              help="One issue (default: the one whose folder you are in, else every sent issue, newest first).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts (a list without --issue).")
@command_options
def stats(root: Path, slug: str | None, as_json: bool) -> None:
    """What landed: delivery, human opens, clicks on the workshop, bounces, unsubscribes, spam reports and
    sign-ups since, from the send journal and SendGrid's events; with warnings (spam reports near Gmail's
    limit, hard bounces, tracking off).

    \b
    Examples:
      newsletter stats
      newsletter stats --issue micro-moments-of-connection --json
    """
    import json

    from .issue import chosen_slug
    from .report import issue_lines, table_lines
    from .stats import all_stats, issue_stats

    slug = chosen_slug(root, slug, Path.cwd())
    if slug is not None:
        one = issue_stats(root, slug)
        lines = [json.dumps(one.as_dict(), indent=2, ensure_ascii=False)] if as_json else issue_lines(one)
    else:
        issues = all_stats(root)
        lines = ([json.dumps([s.as_dict() for s in issues], indent=2, ensure_ascii=False)] if as_json
                 else table_lines(issues))
    for line in lines:
        click.echo(line)


@main.command()
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Where to write index.html (default: build/report).")
@command_options
def report(root: Path, out_dir: Path | None) -> None:
    """Write what landed as a page with charts (build/report/index.html): every sent issue's delivered,
    human opens and workshop clicks, the newest issue's first 72 hours, the list's growth week by week.

    It holds readers' behaviour: keep it private (`serve` does not publish it).

    \b
    Example:
      newsletter report --out build/report
    """
    from .report import write_report

    written = write_report(root, out_dir.resolve() if out_dir else None)
    click.echo(f"wrote {_show(written.path)} ({written.issues} issue(s)); it holds readers' behaviour: keep it "
               "private")


@main.command()
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Where to write the site (default: build/site).")
@command_options
def archive(root: Path, out_dir: Path | None) -> None:
    """Build the public web archive: an index of sent (or `public: true`) issues, a page each, an Atom feed.

    The emails' "View in your browser" link points at <archive_url>/<slug>/ (archive_url defaults to
    <base_url>/archive): publish the folder there.

    \b
    Example:
      newsletter archive --out build/site
    """
    from .archive import build_archive

    result = build_archive(root, (out_dir or root / "build" / "site").resolve())
    for slug in result.issues:
        click.echo(f"wrote {_show(result.out_dir / slug / 'index.html')}")
    click.echo(f"wrote {_show(result.out_dir / 'index.html')} ({len(result.issues)} issue(s))")
    click.echo(f"wrote {_show(result.feed)}")


@main.command()
@click.option("--out", "out_file", type=click.Path(dir_okay=False, path_type=Path),
              help="Where to write it (default: backups/<UTC time>.tar.gz).")
@command_options
def backup(root: Path, out_file: Path | None) -> None:
    """Back up subscribers/ (the list, the ledger, send journals, sign-ups, events) to a private .tar.gz.

    Safe while `serve` runs and readers unsubscribe: every file is copied as it was at one instant.

    \b
    Example:
      newsletter backup
    """
    from .backup import backup_subscribers

    result = backup_subscribers(root, out_file.resolve() if out_file else None)
    click.echo(f"wrote {_show(result.path)} ({result.files} file(s), {result.size / 1024:,.1f} KB)")


@main.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--force", is_flag=True, help="Replace what subscribers/ holds (backed up first).")
@command_options
def restore(root: Path, file: Path, force: bool) -> None:
    """Put a backup made by `newsletter backup` back into subscribers/.

    Refused when subscribers/ already holds readers' data, unless --force (which keeps a backup of it first).
    Stop `newsletter serve` while restoring, and start it again after.

    \b
    Example:
      newsletter restore backups/20261201T213000Z.tar.gz
    """
    from .backup import data_dir, restore_subscribers

    result = restore_subscribers(root, file.resolve(), force=force)
    if result.saved is not None:
        click.echo(f"kept what was there in {_show(result.saved.path)}")
    click.echo(f"restored {result.files} file(s) into {_show(data_dir(root))}")


@main.command()
@click.option("--issue", "slug", metavar="SLUG",
              help="The issue to preview (default: the one whose folder you are in, else the newest by date).")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535), help="Port (0: any free one).")
@click.option("--open", "open_browser", is_flag=True, help="Open the page in the default browser.")
@command_options
def preview(root: Path, slug: str | None, port: int, open_browser: bool) -> None:
    """Preview an issue in the browser: phone and desktop widths, dark mode, plain text, inbox line, check.

    The page updates by itself when you save body.md, issue.yaml, a layout or newsletter.yaml.

    \b
    Example:
      newsletter preview --open
    """
    from .issue import chosen_slug
    from .preview import run_preview

    run_preview(root, chosen_slug(root, slug, Path.cwd()), "127.0.0.1", port, open_browser=open_browser,
                ready=lambda url: click.echo(f"preview at {url} (Ctrl-C to stop)", err=True))


if __name__ == "__main__":  # pragma: no cover
    main()
