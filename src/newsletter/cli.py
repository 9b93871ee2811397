"""The `newsletter` command: options -> one library call -> echo. The only click importer."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from .errors import NewsletterError


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
        click.secho(f"error: {exc}", err=True, fg="red")
        ctx.exit(exc.exit_code)
    except (click.exceptions.Exit, click.ClickException, click.Abort, KeyboardInterrupt):
        raise
    except Exception as exc:  # noqa: BLE001 - the one place a bug becomes a short message
        if _debug_wanted(ctx):
            raise
        click.secho(f"internal error: {type(exc).__name__}: {exc}", err=True, fg="red")
        click.echo("  run again with --debug for the traceback, and report it", err=True)
        ctx.exit(1)


def command_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """--root and --debug on every subcommand, and the one place errors become messages."""

    @click.option("--root", "root", type=click.Path(file_okay=False, path_type=Path), default=None,
                  envvar="NEWSLETTER_ROOT", help="The newsletter's folder (default: the current directory).")
    @click.option("--debug", is_flag=True, help="Show tracebacks instead of short error messages.")
    @click.pass_context
    @functools.wraps(func)
    def wrapper(ctx: click.Context, root: Path | None, debug: bool, **kwargs: Any) -> Any:
        from .config import resolve_root

        return _run(ctx, func, resolve_root(root), **kwargs)

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--debug", is_flag=True, help="Show tracebacks instead of short error messages.")
@click.version_option(package_name="newsletter")
def main(debug: bool) -> None:
    """Turn weekly essays into responsive emails and deliver them through SendGrid.

    An issue is a folder issues/<slug>/ with issue.yaml and body.md; the publication is newsletter.yaml.
    Every command takes --root DIR (or NEWSLETTER_ROOT) to work on a newsletter elsewhere.
    """


def _echo_problem(problem: Any) -> None:
    color = "red" if problem.level == "error" else "yellow"
    click.secho(str(problem), fg=color, err=False)


@main.command()
@click.option("--issue", "slug", metavar="SLUG", help="The issue to render (default: the newest by date).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Write to DIR/<slug>/ instead of build/<slug>/.")
@command_options
def render(root: Path, slug: str | None, out_dir: Path | None) -> None:
    """Render an issue to email.html, email.txt and email.mjml.

    Per-reader parts (name, unsubscribe link) are shown for a sample reader.

    \b
    Example:
      newsletter render --issue micro-moments-of-connection --out build/
    """
    from .pipeline import build

    result = build(root, slug, out_dir.resolve() if out_dir else None)
    for key in ("html", "text", "mjml"):
        click.echo(f"wrote {_show(result.paths[key])}")
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
@click.option("--issue", "slug", metavar="SLUG", help="The issue to check (default: the newest by date).")
@command_options
def check(root: Path, slug: str | None) -> None:
    """Check an issue before sending: placeholders, links, images, unsubscribe, size, subject.

    Prints one line per problem (error: / warning:) and exits 1 when there is any error.

    \b
    Example:
      newsletter check --issue micro-moments-of-connection
    """
    from .check import check_issue
    from .pipeline import load
    from .render import render_issue

    config, issue = load(root, slug)
    problems = check_issue(config, issue, render_issue(config, issue))
    for problem in problems:
        _echo_problem(problem)
    errors = sum(p.level == "error" for p in problems)
    warnings = len(problems) - errors
    click.echo(f"{issue.slug}: {errors} error(s), {warnings} warning(s)")
    if errors:
        sys.exit(1)


@main.command()
@click.argument("title")
@click.option("--slug", help="Folder name (default: made from the title).")
@click.option("--date", "date_text", metavar="YYYY-MM-DD", help="Issue date (default: a week after the newest).")
@command_options
def new(root: Path, title: str, slug: str | None, date_text: str | None) -> None:
    """Start next week's issue: issues/<slug>/ with issue.yaml and body.md to fill in.

    \b
    Example:
      newsletter new "The Quiet Courage of Rest"
    """
    import datetime as dt

    from .bundle import create_issue
    from .config import load_config

    date = None
    if date_text:
        try:
            date = dt.date.fromisoformat(date_text)
        except ValueError:
            raise click.BadParameter(f"{date_text!r} is not a date written YYYY-MM-DD", param_hint="--date") from None
    folder = create_issue(root, title, load_config(root), slug=slug, date=date)
    click.echo(f"created {_show(folder / 'issue.yaml')}")
    click.echo(f"created {_show(folder / 'body.md')}")
    click.echo(f"write the essay in body.md, then: newsletter render --issue {folder.name}")


if __name__ == "__main__":  # pragma: no cover
    main()
