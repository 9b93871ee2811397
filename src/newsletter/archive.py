"""`newsletter archive`: a static web archive of the sent (or public) issues, and an Atom feed."""

from __future__ import annotations

import datetime as dt
import html
import os
import re
import stat
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from urllib.parse import urlsplit
from xml.sax.saxutils import escape as xml_escape

from .config import Config, load_config
from .errors import IssueError
from .files import write_atomic
from .images import publish_issue_images
from .issue import Issue, issues_dir, list_slugs, load_issue, unsafe_files
from .journal import journal_path, load_state
from .markdown import inline_html
from .render import brand_styles, fill, reader_substitutions, render_issue

_UNSUB_LINK = re.compile(r"<a\b[^>]*/unsubscribe/[^>]*>.*?</a>", re.S | re.I)


@dataclass
class ArchiveResult:
    """What `archive` wrote."""

    out_dir: Path
    issues: list[str]
    feed: Path


def archived_issues(root: Path, config: Config) -> list[Issue]:
    """Issues that went out (an acknowledged batch in their journal) or are marked `public`, newest first."""
    chosen = []
    for slug in list_slugs(root):
        issue = load_issue(root, slug, config)
        if issue.welcome:
            continue  # a private letter to each new reader, not an issue of the archive
        if issue.public or load_state(journal_path(root, slug)).sent_batches:
            chosen.append(issue)
    return sorted(chosen, key=lambda i: (i.date, i.slug), reverse=True)


def subscribe_url(config: Config) -> str:
    """The sign-up page `newsletter serve` answers."""
    return f"{config.base_url}/subscribe"


def web_page(config: Config, issue: Issue) -> str:
    """The issue as a web page: no greeting, no per-reader link or token, images relative to the page."""
    rendered = render_issue(config, issue, web=True)
    # `web` leaves out the greeting and the unsubscribe link; a layout that ignores it still publishes neither
    # a token nor a tag.
    page = _UNSUB_LINK.sub("", fill(rendered.html, reader_substitutions("", "")))
    accent = config.colors["accent"]
    # padded on the sides: on a phone the links would otherwise touch the screen's edge
    back = (f'<p style="max-width:600px;margin:16px auto;padding:0 16px;box-sizing:border-box;'
            f'font-family:{html.escape(config.fonts["body"])};font-size:16px;line-height:2;">'
            f'<a href="../" style="color:{accent};">&larr; All issues of '
            f"{html.escape(config.name)}</a> &middot; <a href=\"{html.escape(subscribe_url(config), quote=True)}\" "
            f'style="color:{accent};">Subscribe</a></p>')
    return re.sub(r"(<body\b[^>]*>)", lambda m: m.group(1) + back, page, count=1)


def _feed(config: Config, issues: list[Issue], feed_url: str) -> str:
    styles = brand_styles(config)
    updated = max((i.date for i in issues), default=dt.date.today())
    entries = []
    for issue in issues:
        page_url = f"{config.archive_url}/{issue.slug}/"
        body = inline_html(issue.body_md, styles, asset_base_url=page_url)
        when = f"{issue.date.isoformat()}T00:00:00Z"
        entries.append(
            "  <entry>\n"
            f"    <title>{xml_escape(issue.title)}</title>\n"
            f'    <link rel="alternate" type="text/html" href="{xml_escape(page_url)}"/>\n'
            f"    <id>{xml_escape(page_url)}</id>\n"
            f"    <published>{when}</published>\n"
            f"    <updated>{when}</updated>\n"
            + (f"    <summary>{xml_escape(issue.preheader)}</summary>\n" if issue.preheader else "")
            + f'    <content type="html">{xml_escape(body)}</content>\n'
            "  </entry>\n")
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n'
        f'<feed xmlns="http://www.w3.org/2005/Atom" xml:lang="{xml_escape(config.language)}">\n'
        f"  <title>{xml_escape(config.name)}</title>\n"
        f'  <link rel="self" type="application/atom+xml" href="{xml_escape(feed_url)}"/>\n'
        f'  <link rel="alternate" type="text/html" href="{xml_escape(config.archive_url)}/"/>\n'
        f"  <id>{xml_escape(config.archive_url)}/</id>\n"
        f"  <updated>{updated.isoformat()}T00:00:00Z</updated>\n"
        f"  <author><name>{xml_escape(config.sender.name or config.name)}</name></author>\n"
        + "".join(entries) + "</feed>\n")


def _index(config: Config, issues: list[Issue]) -> str:
    c, f = config.colors, config.fonts
    items = "\n".join(
        f'<li><time datetime="{i.date.isoformat()}">{i.date.day} {i.date:%B %Y}</time>'
        f'<a href="{html.escape(i.slug)}/">{html.escape(i.title)}</a>'
        + (f"<p>{html.escape(i.preheader)}</p>" if i.preheader else "") + "</li>"
        for i in issues) or "<li>No issues yet.</li>"
    return f"""<!doctype html>
<html lang="{html.escape(config.language)}"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(config.name)}: archive</title>
<link rel="alternate" type="application/atom+xml" title="{html.escape(config.name)}" href="feed.xml">
<style>
body {{ margin:0; background:{c['background']}; color:{c['text']}; font-family:{f['body']}; font-size:18px;
       line-height:1.6; }}
main {{ max-width:640px; margin:0 auto; padding:32px 20px; }}
h1 {{ font-family:{f['heading']}; color:{c['heading']}; }}
ul {{ list-style:none; padding:0; }} li {{ margin:0 0 24px; }}
time {{ display:block; font-size:15px; color:{c['muted']}; }}
a {{ color:{c['accent']}; font-size:21px; }} p {{ margin:4px 0 0; }}
</style></head>
<body><main><h1>{html.escape(config.name)}</h1>
<p><a href="{html.escape(subscribe_url(config), quote=True)}" style="font-size:16px">Subscribe</a> &middot;
<a href="feed.xml" style="font-size:16px">Atom feed</a></p>
<ul>
{items}
</ul></main></body></html>
"""


def build_archive(root: Path, out_dir: Path) -> ArchiveResult:
    """Write out_dir/index.html, out_dir/<slug>/index.html and out_dir/feed.xml for the sent or public issues,
    and the images of every issue at out_dir/<slug>/<name>: the URLs the emails load them from, so they must
    be published before the issue is sent, while its page stays private."""
    config = load_config(root)
    _refuse_unsafe_files(root)
    issues = archived_issues(root, config)
    for slug in list_slugs(root):
        publish_issue_images(root / "issues" / slug, out_dir / slug)
    for issue in issues:
        write_atomic(out_dir / issue.slug / "index.html", web_page(config, issue))
    write_atomic(out_dir / "index.html", _index(config, issues))
    feed = out_dir / "feed.xml"
    write_atomic(feed, _feed(config, issues, f"{config.archive_url}/feed.xml"))
    return ArchiveResult(out_dir, [i.slug for i in issues], feed)


def _refuse_unsafe_files(root: Path) -> None:
    """Nothing is published while an issue folder holds a link or anything but regular files: such a file (say
    `chart.svg -> ../../subscribers/subscribers.csv`) would publish what it points at."""
    found = [p for slug in list_slugs(root) for p in unsafe_files(issues_dir(root) / slug)]
    if found:
        names = ", ".join(str(p.relative_to(root)) for p in found[:5]) + (" ..." if len(found) > 5 else "")
        raise IssueError(f"a link or not a regular file in an issue folder: {names}; nothing was published",
                         path=found[0], hint="replace each link with the file itself, or remove it")


# -- the archive as `newsletter serve` hosts it ------------------------------------------------------------------
def site_dir(root: Path) -> Path:
    """build/site: where `archive` writes by default, and where `serve` answers the archive from."""
    return root / "build" / "site"


def hosted_path(config: Config) -> str | None:
    """The URL path `serve` answers the archive under ("/archive", "/letters/archive"), when archive_url lies
    under base_url; None when the archive is published elsewhere."""
    base, archive = urlsplit(config.base_url), urlsplit(config.archive_url)
    if (base.scheme, base.netloc.lower()) != (archive.scheme, archive.netloc.lower()):
        return None
    base_path, archive_path = base.path.rstrip("/"), archive.path.rstrip("/")
    if archive_path == base_path or archive_path.startswith(base_path + "/"):
        return archive_path
    return None


def publish_hosted_images(root: Path, config: Config, issue: Issue) -> bool:
    """Put the issue's images into build/site when `serve` hosts the archive, so they are there before `send`
    requests them (the page itself stays private until the issue is sent). False when hosted elsewhere."""
    if hosted_path(config) is None:
        return False
    publish_issue_images(issue.dir, site_dir(root) / issue.slug)
    return True


class Found(StrEnum):
    """What a path of the archive names."""

    FILE = "file"
    SLASH = "slash"  # a folder asked for without its trailing slash: its pages' relative links need one
    MISSING = "missing"


_PAGE_CACHE = "public, max-age=300"  # pages and the feed change when an issue goes out
_IMAGE_CACHE = "public, max-age=2592000"  # 30 days: an image's name is fixed once the email points at it
SITE_TYPES = {
    ".html": ("text/html; charset=utf-8", _PAGE_CACHE),
    ".xml": ("application/atom+xml; charset=utf-8", _PAGE_CACHE),  # feed.xml, the only XML `archive` writes
    ".jpg": ("image/jpeg", _IMAGE_CACHE), ".jpeg": ("image/jpeg", _IMAGE_CACHE),
    ".png": ("image/png", _IMAGE_CACHE), ".gif": ("image/gif", _IMAGE_CACHE),
    ".webp": ("image/webp", _IMAGE_CACHE), ".avif": ("image/avif", _IMAGE_CACHE),
    ".svg": ("image/svg+xml", _IMAGE_CACHE),
}


@dataclass(frozen=True)
class SiteFile:
    """The answer to a request for a path of the archive."""

    found: Found
    path: Path | None = None
    stat: os.stat_result | None = None
    content_type: str = ""
    cache_control: str = ""


def find_site_file(site: Path, rel: str) -> SiteFile:
    """The regular file `rel` ("/", "/<slug>/", "/feed.xml", ...) names under `site`: never a symbolic link, a
    path out of it, a hidden file (a write in progress) or a folder's listing; a folder is its index.html."""
    if rel == "":
        return SiteFile(Found.SLASH)
    parts = rel.split("/")
    if parts[0] != "":
        return SiteFile(Found.MISSING)  # "/archivefoo" is not under "/archive"
    parts = parts[1:]
    folder = parts[-1] == ""
    names = parts[:-1] if folder else parts
    if any(not n or n.startswith(".") or "\\" in n or "\0" in n for n in names):
        return SiteFile(Found.MISSING)  # "..", ".", "//", hidden files: refused before touching the disk
    path = site
    for name in [*names, "index.html"] if folder else names:
        path = path / name
        try:
            info = os.lstat(path)
        except (OSError, ValueError):
            return SiteFile(Found.MISSING)
        if stat.S_ISLNK(info.st_mode):
            return SiteFile(Found.MISSING)  # a link could lead anywhere, subscribers/ included
    if stat.S_ISDIR(info.st_mode) and not folder:
        return SiteFile(Found.SLASH)
    known = SITE_TYPES.get(path.suffix.lower())
    if not stat.S_ISREG(info.st_mode) or known is None:
        return SiteFile(Found.MISSING)
    return SiteFile(Found.FILE, path, info, *known)
