"""issues/<slug>/ -> Issue: metadata from issue.yaml, the essay from body.md, images beside them."""

from __future__ import annotations

import datetime as dt
import difflib
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import Config, unknown_workshop_message
from .errors import IssueError, UsageError
from .yamlfile import Problems, YamlDoc, describe, load_yaml, unknown_key_message

ISSUES_DIR = "issues"
ISSUE_KEYS = {"title", "subject", "preheader", "date", "workshop", "public", "greeting", "greeting_fallback",
              "author", "welcome"}
WELCOME_SLUG = "welcome"
DEFAULT_GREETING = "Dear {first_name},"
DEFAULT_GREETING_FALLBACK = "Hello,"


@dataclass(frozen=True)
class Issue:
    """One newsletter issue, ready to render."""

    slug: str
    dir: Path
    title: str
    subject: str
    preheader: str
    date: dt.date
    workshop: str
    body_md: str
    public: bool = False  # listed in the web archive before (or without) being sent
    welcome: bool = False  # the welcome email each new reader gets on confirming: never sent to the list
    greeting: str = DEFAULT_GREETING  # {first_name} and {name} are the reader's
    greeting_fallback: str = DEFAULT_GREETING_FALLBACK  # when the reader's name (or first name) is unknown
    author: str = ""
    doc: YamlDoc | None = field(default=None, repr=False, compare=False)

    @property
    def yaml_path(self) -> Path:
        """issue.yaml of this issue."""
        return self.dir / "issue.yaml"

    @property
    def body_path(self) -> Path:
        """body.md of this issue."""
        return self.dir / "body.md"


def safe_file(folder: Path, name: str) -> Path | None:
    """The file `name` of an issue folder when it may be read, rendered or published: a plain name (no `/`,
    no `..`), a regular file, not a link, inside the folder. None otherwise: a link such as
    `chart.svg -> ../../subscribers/subscribers.csv` would publish every reader's address."""
    if not name or "/" in name or "\\" in name or name in (".", "..") or "\x00" in name:
        return None
    path = folder / name
    try:
        if path.is_symlink() or not path.is_file():
            return None
        return path if path.resolve().parent == folder.resolve() else None
    except OSError:
        return None


def unsafe_files(folder: Path) -> list[Path]:
    """What in an issue folder must never be read or published: links, and anything not a regular file."""
    try:
        entries = sorted(folder.iterdir())
    except OSError:
        return []
    return [p for p in entries if safe_file(folder, p.name) is None and not p.name.startswith(".")]


def issue_files(folder: Path) -> list[Path]:
    """The regular files of an issue folder (its images among them), links and the like left out."""
    try:
        entries = sorted(folder.iterdir())
    except OSError:
        return []
    return [p for p in entries if safe_file(folder, p.name) is not None]


def _refuse_links(folder: Path) -> None:
    """An issue is read only from a plain folder, and its issue.yaml and body.md only when they are plain files
    inside it."""
    if folder.is_symlink():
        raise IssueError("the issue folder is a link: an issue is read only from a plain folder", path=folder,
                         hint="replace the link with the folder itself")
    for name in ("issue.yaml", "body.md"):
        if ((folder / name).exists() or (folder / name).is_symlink()) and safe_file(folder, name) is None:
            raise IssueError("a link or not a regular file: an issue's files are read only when they are "
                             "plain files inside its folder", path=folder / name,
                             hint="replace the link with the file itself")


def issues_dir(root: Path) -> Path:
    """The folder that holds one sub-folder per issue."""
    return root / ISSUES_DIR


def issue_here(root: Path, cwd: Path) -> str | None:
    """The slug of the issue whose folder `cwd` is in (issues/<slug>/ or any folder below it), else None."""
    try:
        inside = cwd.resolve().relative_to(issues_dir(root).resolve())
    except (ValueError, OSError):
        return None
    if not inside.parts or inside.parts[0].startswith("."):
        return None
    folder = issues_dir(root) / inside.parts[0]
    # a linked folder is no issue (load_issue refuses it); the current directory never resolves into one anyway
    return folder.name if folder.is_dir() and not folder.is_symlink() else None


def chosen_slug(root: Path, slug: str | None, cwd: Path) -> str | None:
    """The issue a command works on: `--issue` when given, else the one whose folder `cwd` is in; None leaves the
    choice to the command (`render`, `check`, `preview` then take the newest by date)."""
    return slug or issue_here(root, cwd)


def required_slug(root: Path, slug: str | None, cwd: Path) -> str:
    """The issue a command that must be told (`send`, `status`, `unschedule`, `stats`) works on: `--issue` when
    given, else the one whose folder `cwd` is in. Never the newest by date: those commands mail or report on
    readers, so elsewhere a missing `--issue` is a usage error (exit 2)."""
    chosen = chosen_slug(root, slug, cwd)
    if chosen is None:
        slugs = list_slugs(root)
        raise UsageError("which issue? pass --issue SLUG, or run the command inside the issue's folder "
                         "(issues/<slug>/)", hint=f"issues here: {', '.join(slugs)}" if slugs else "")
    return chosen


@dataclass(frozen=True)
class MissingFile:
    """A file an issue names that is not in its folder, with the file it probably means."""

    name: str
    did_you_mean: str | None = None

    def message(self) -> str:
        """'image file `img_4821.jpg` not found beside body.md: did you mean IMG_4821.JPG?'"""
        text = f"image file `{self.name}` not found beside body.md"
        return text + (f": did you mean {self.did_you_mean}?" if self.did_you_mean else "")


def local_name(url: str) -> str | None:
    """The file name a relative image URL in body.md names (`IMG_4821.JPG`, `my%20photo.jpg`), or None when it
    does not name a file alone in the issue folder (`/etc/...`, `../`, `photos/a.jpg`, a full URL)."""
    from urllib.parse import unquote, urlsplit

    if urlsplit(url).scheme:
        return None
    name = unquote(url.split("?", 1)[0].split("#", 1)[0])
    if not name or "/" in name or "\\" in name or "\x00" in name or name in (".", ".."):
        return None
    return name


def missing_file(folder: Path, name: str) -> MissingFile | None:
    """None when `name` is, letter for letter, a file of the issue folder, or something there that is not a plain
    file (`check` names those on their own); else a MissingFile. The exact name counts, as the web server the
    archive is published on tells `IMG_4821.JPG` from `img_4821.jpg` even where this disk does not."""
    files = [p.name for p in issue_files(folder)]
    if name in files or name in {p.name for p in unsafe_files(folder)}:
        return None
    candidates = [f for f in files if f not in ("issue.yaml", "body.md")]  # never what an image meant
    same = [f for f in candidates if f.casefold() == name.casefold()]
    close = same or difflib.get_close_matches(name, candidates, n=1, cutoff=0.8)
    return MissingFile(name, close[0] if close else None)


def list_slugs(root: Path) -> list[str]:
    """Slugs of every folder in issues/ that has an issue.yaml, sorted."""
    base = issues_dir(root)
    if not base.is_dir():
        return []
    # a folder that is a link is not an issue: it could lead anywhere on the disk
    return sorted(d.name for d in base.iterdir() if not d.is_symlink() and (d / "issue.yaml").is_file())


def _parse_date(value: Any, doc: YamlDoc) -> dt.date:
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    if isinstance(value, str):
        try:
            return dt.date.fromisoformat(value.strip())
        except ValueError:
            pass
    raise IssueError(f"`date` must be a date written YYYY-MM-DD, got {value!r}", path=doc.path,
                     line=doc.line("date"))


def _issue_folder(root: Path, slug: str) -> Path:
    """issues/<slug>/ when it is a plain folder holding issue.yaml (and no links); IssueError naming the close
    matches else."""
    slugs = list_slugs(root)
    folder = issues_dir(root) / slug
    _refuse_links(folder)
    if "/" in slug or "\\" in slug or slug.startswith(".") or not (folder / "issue.yaml").is_file():
        if folder.is_dir():
            raise IssueError("no issue.yaml in this issue folder", path=folder,
                             hint="every issue needs issue.yaml (title, date, ...) and body.md")
        close = difflib.get_close_matches(slug, slugs, n=1)
        hint = f"did you mean `{close[0]}`? " if close else ""
        hint += f"issues here: {', '.join(slugs)}" if slugs else "create one with `newsletter new \"Title\"`"
        raise IssueError(f"unknown issue `{slug}`", path=issues_dir(root), hint=hint)
    return folder


def load_issue(root: Path, slug: str, config: Config | None = None) -> Issue:
    """Read issues/<slug>/; raises IssueError listing every problem of issue.yaml and body.md together."""
    folder = _issue_folder(root, slug)
    doc = load_yaml(folder / "issue.yaml", IssueError)
    problems = Problems(doc)
    fields = _issue_fields(doc, problems, config)
    body = _read_body(folder / "body.md", problems)
    problems.raise_if_any(IssueError)
    return Issue(slug=slug, dir=folder, body_md=body, doc=doc, **fields)


def _issue_fields(doc: YamlDoc, problems: Problems, config: Config | None) -> dict[str, Any]:
    """Issue's fields from issue.yaml; each problem goes to `problems` (the field keeps a default)."""
    data = doc.data
    for key in data:
        if str(key) not in ISSUE_KEYS:
            problems.add((str(key),), unknown_key_message(str(key), ISSUE_KEYS))

    def text(key: str, default: str = "") -> str:
        value = data.get(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            problems.add((key,), f"`{key}` must be text, not a {describe(value)}")
            return default
        return " ".join(str(value).split())

    def flag(key: str) -> bool:
        value = data.get(key, False)
        if not isinstance(value, bool):
            problems.add((key,), f"`{key}` must be true or false, got {value!r}")
        return value is True

    title = text("title")
    if not title and isinstance(data.get("title"), str | None):  # a list or the like is reported by text()
        problems.add(("title",), "no `title`: every issue needs one (it is the email's heading)",
                     hint='add a line such as `title: "My essay"`')
    date = dt.date.min
    if "date" not in data:
        problems.add((), "no `date` (YYYY-MM-DD): it orders the issues", hint="add a line such as `date: 2026-12-03`")
    else:
        try:
            date = _parse_date(data["date"], doc)
        except IssueError as exc:
            problems.add(("date",), exc.message)
    workshop = text("workshop")
    if workshop and config is not None and workshop not in config.workshops:
        problems.add(("workshop",), unknown_workshop_message(workshop, config.workshops))
    return {"title": title, "subject": text("subject") or title, "preheader": text("preheader"), "date": date,
            "workshop": workshop, "public": flag("public"), "welcome": flag("welcome"),
            "greeting": text("greeting", DEFAULT_GREETING), "author": text("author"),
            "greeting_fallback": text("greeting_fallback", DEFAULT_GREETING_FALLBACK)}


def _read_body(path: Path, problems: Problems) -> str:
    """body.md's text (a byte-order mark dropped); a missing, undecodable or empty file goes to `problems`."""
    try:
        body = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        problems.add_at(path, "missing body.md: the essay goes there, in Markdown")
        return ""
    except UnicodeDecodeError as exc:
        problems.add_at(path, f"not UTF-8 text (byte {exc.start})", hint="save the file as UTF-8")
        return ""
    if not body.strip():
        problems.add_at(path, "body.md is empty")
    return body.lstrip("\ufeff")


def newest_slug(root: Path) -> str:
    """The slug of the issue with the latest date (ties: the last slug)."""
    slugs = list_slugs(root)
    if not slugs:
        raise IssueError("no issues yet", path=issues_dir(root), hint='create one with `newsletter new "Title"`')
    dated = []
    for slug in slugs:
        doc = load_yaml(issues_dir(root) / slug / "issue.yaml", IssueError)
        if doc.data.get("welcome") is True:
            continue  # the welcome email is not an issue of the week
        dated.append((_parse_date(doc.data.get("date", "0001-01-01"), doc), slug))
    if not dated:
        raise IssueError("no issues yet", path=issues_dir(root), hint='create one with `newsletter new "Title"`')
    return max(dated)[1]


def slugify(title: str) -> str:
    """'Micro Moments: Life’s Heartbeat' -> 'micro-moments-lifes-heartbeat'."""
    text = unicodedata.normalize("NFKD", title).encode("ascii", "ignore").decode()
    text = re.sub(r"['’]", "", text.lower())
    return re.sub(r"[^a-z0-9]+", "-", text).strip("-")[:80].rstrip("-")


def create_welcome(root: Path, config: Config) -> Path:
    """Write issues/welcome/ (issue.yaml with `welcome: true`, body.md): the email new readers get on confirming."""
    folder = issues_dir(root) / WELCOME_SLUG
    if folder.exists():
        raise IssueError("the welcome email already exists", path=folder, hint="edit its body.md")
    workshop = next(iter(config.workshops), "")
    folder.mkdir(parents=True)
    (folder / "issue.yaml").write_text(
        f"title: Welcome to {config.name}\n"
        f"subject: Welcome to {config.name}\n"
        "preheader: TODO one sentence that shows after the subject in the inbox\n"
        f"date: {dt.date.today().isoformat()}\n"
        "welcome: true  # sent to each new reader when they confirm; never to the list\n"
        + (f"workshop: {workshop}\n" if workshop else ""),
        encoding="utf-8",
    )
    (folder / "body.md").write_text(
        "TODO: thank the reader for joining, say what comes each week and when, and link a favourite issue.\n",
        encoding="utf-8",
    )
    return folder


def create_issue(root: Path, title: str, config: Config, *, slug: str | None = None,
                 date: dt.date | None = None) -> Path:
    """Write issues/<slug>/issue.yaml and body.md for next week's essay; returns the folder."""
    title = " ".join(title.split())
    if not title:
        raise IssueError("the title is empty", hint='newsletter new "Title of the essay"')
    slug = slug or slugify(title)
    if not slug or not re.fullmatch(r"[a-z0-9][a-z0-9-]*", slug):
        raise IssueError(f"cannot make a folder name from {title!r}", hint="pass --slug my-essay")
    folder = issues_dir(root) / slug
    if folder.exists():
        raise IssueError("this issue already exists", path=folder, hint="choose another title or pass --slug")
    workshop = ""
    last_date = None
    if list_slugs(root):
        latest = load_issue(root, newest_slug(root))
        workshop, last_date = latest.workshop, latest.date
    if date is None:
        today = dt.date.today()
        date = max(today, last_date + dt.timedelta(days=7)) if last_date else today
    if not workshop and config.workshops:
        workshop = next(iter(config.workshops))
    folder.mkdir(parents=True)
    quoted = title.replace("\\", "\\\\").replace('"', '\\"')
    (folder / "issue.yaml").write_text(
        f'title: "{quoted}"\n'
        f'subject: "{quoted}"\n'
        "preheader: TODO one sentence that shows after the subject in the inbox\n"
        f"date: {date.isoformat()}\n"
        + (f"workshop: {workshop}\n" if workshop else "# workshop: an id from newsletter.yaml\n"),
        encoding="utf-8",
    )
    (folder / "body.md").write_text(
        "TODO: the first paragraph of the essay.\n\n## A subheading\n\nMore paragraphs, separated by a blank line."
        " *Emphasis*, **strong**, links (`[the words](https://your.site/page)`) and images"
        " (`![what it shows](photo.jpg)`, the file beside this one) all work.\n",
        encoding="utf-8",
    )
    return folder
