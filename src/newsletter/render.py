"""Issue + layouts -> RenderedEmail (MJML, HTML, text); the only jinja2 and mjml importer."""

from __future__ import annotations

import html as html_lib
import re
import traceback
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from types import CodeType
from typing import Any, ClassVar

import jinja2
import jinja2.bccache
from markupsafe import Markup

from . import markdown
from .config import Config
from .css import CssValueError, LayoutText, css_value
from .errors import IssueError, LayoutError, Problem
from .issue import Issue
from .recipients import first_name_of

LAYOUTS_DIR = "layouts"
EMAIL_LAYOUT = "email.mjml"
TEXT_LAYOUT = "email.txt"
STANDALONE_LAYOUTS = (EMAIL_LAYOUT, "confirm.mjml")

# Per-reader values are SendGrid substitution tags in the rendered parts: the issue is rendered once and
# each reader's copy differs only by these. The name has one tag per part, so each part gets its own escaping.
NAME_HTML_TAG = "%%nl_name_html%%"
NAME_TEXT_TAG = "%%nl_name_text%%"
FIRST_HTML_TAG = "%%nl_first_html%%"
FIRST_TEXT_TAG = "%%nl_first_text%%"
GREETING_HTML_TAG = "%%nl_greeting_html%%"
GREETING_TEXT_TAG = "%%nl_greeting_text%%"
TOKEN_TAG = "%%nl_unsub_token%%"
ALL_TAGS = (NAME_HTML_TAG, NAME_TEXT_TAG, FIRST_HTML_TAG, FIRST_TEXT_TAG, GREETING_HTML_TAG, GREETING_TEXT_TAG,
            TOKEN_TAG)
ALL_TAGS_SET = frozenset(ALL_TAGS)
DEFAULT_READER_NAME = "friend"
_PREHEADER_COLOR = re.compile(r'(<div style="display:none;font-size:1px;color:)#ffffff;')
SAMPLE_READER = {"email": "reader@example.net", "name": "Ada"}


@dataclass
class RenderedEmail:
    """One issue rendered for every reader: parts still carry the per-reader substitution tags."""

    issue: Issue
    subject: str
    preheader: str
    mjml: str
    html: str
    text: str
    body: markdown.Body
    warnings: list[Problem] = field(default_factory=list)

    @property
    def tags(self) -> frozenset[str]:
        """The substitution tags the parts use: only these travel with each reader."""
        return frozenset(t for t in ALL_TAGS if t in self.html or t in self.text)


def layouts_dir(root: Path) -> Path:
    """Where the writer's Jinja2 + MJML layouts are."""
    return root / LAYOUTS_DIR


def css_filter(value: object) -> Markup:
    """`{{ value | css }}`: the one way a layout puts a value into CSS (<mj-style>, <mj-attributes>, `style`).
    HTML escaping is wrong inside <style>, where entities are never decoded: the value is checked for CSS
    instead and written with single quotes, which stand both there and inside a double-quoted attribute."""
    try:
        return Markup(css_value(value))
    except CssValueError as exc:
        raise jinja2.TemplateRuntimeError(f"`| css` refused {str(value)!r}: {exc}") from None


@lru_cache(maxsize=8)
def _environment(folder: str) -> jinja2.Environment:
    # Cached per folder so repeated renders (benchmark, preview) reuse compiled templates;
    # auto_reload (the default) still picks up a layout the writer saves.
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(folder),
        # select_autoescape matches the final suffix only: .mjml must be listed, .txt stays raw.
        autoescape=jinja2.select_autoescape(enabled_extensions=("html", "htm", "xml", "mjml"),
                                            default_for_string=False, default=False),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        bytecode_cache=_bytecode_cache(Path(folder).parent / "build" / ".cache" / "jinja"),
    )
    env.filters["css"] = css_filter
    return env


def _bytecode_cache(folder: Path) -> jinja2.BytecodeCache | None:
    """Compiled layouts kept between runs in `folder`, and in memory for the process. None where the folder
    cannot be made."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    return _LayoutCache(str(folder))


class _Bucket(jinja2.bccache.Bucket):
    def __init__(self, environment: jinja2.Environment, key: str, checksum: str, layout: tuple[str, str]) -> None:
        super().__init__(environment, key, checksum)
        self.layout = layout  # (name, checksum of the source): what the compiled code depends on


class _LayoutCache(jinja2.FileSystemBytecodeCache):
    """Compiling the layouts is most of a `newsletter render` after Python's own start-up. Their code is kept in
    build/.cache/jinja between runs and, for the process, in memory by layout name and source (an edit compiles
    anew), so the same layouts in another folder (`serve` and `preview` over several roots, a test suite) compile
    once; the code is re-pointed at each folder's file so a layout's runtime error still names its own file."""

    _compiled: ClassVar[dict[tuple[str, str], CodeType]] = {}
    _KEEP = 64  # layouts' versions kept in memory: a writer saving a layout all afternoon does not grow it

    def get_bucket(self, environment: jinja2.Environment, name: str, filename: str | None,
                   source: str) -> jinja2.bccache.Bucket:
        checksum = self.get_source_checksum(source)
        bucket = _Bucket(environment, self.get_cache_key(name, filename), checksum, (name, checksum))
        code = self._compiled.get(bucket.layout)
        if code is not None:
            bucket.code = _refile(code, filename) if filename else code
        else:
            self.load_bytecode(bucket)
            self._remember(bucket)
        return bucket

    def set_bucket(self, bucket: jinja2.bccache.Bucket) -> None:
        self._remember(bucket)
        super().set_bucket(bucket)

    def _remember(self, bucket: jinja2.bccache.Bucket) -> None:
        if isinstance(bucket, _Bucket) and bucket.code is not None:
            if len(self._compiled) >= self._KEEP:
                self._compiled.clear()
            self._compiled[bucket.layout] = bucket.code


def _refile(code: CodeType, filename: str) -> CodeType:
    """`code` (and the functions inside it: blocks, macros) as if compiled from `filename`."""
    consts = tuple(_refile(c, filename) if isinstance(c, CodeType) else c for c in code.co_consts)
    return code.replace(co_filename=filename, co_consts=consts)


def fill(text: str, values: dict[str, str]) -> str:
    """Replace substitution tags the way SendGrid does for each reader."""
    for tag, value in values.items():
        text = text.replace(tag, value)
    return text


def greeting_for(template: str, name: str, first_name: str, fallback: str) -> str:
    """The greeting line for one reader: `template` with {name} and {first_name} filled in, or `fallback` when a
    value it needs is unknown, so nobody reads "Dear ,"."""
    needs_name, needs_first = "{name}" in template, "{first_name}" in template
    if (needs_name and not name) or (needs_first and not first_name):
        return fallback
    if needs_name:
        template = template.replace("{name}", name)
    return template.replace("{first_name}", first_name) if needs_first else template


_NEEDS_ESCAPE = re.compile(r"[&<>\"']")


def _escape(value: str) -> str:
    return html_lib.escape(value, quote=True) if _NEEDS_ESCAPE.search(value) else value


def reader_substitutions(name: str, token: str, first_name: str = "", *, greeting: str = "",
                         fallback: str = "", used: frozenset[str] | None = None) -> dict[str, str]:
    """The substitution values of one reader, each escaped for the part it lands in (only the `used` tags).
    This runs once per reader of a million-reader send: only what the parts use is worked out."""
    if used is None:
        used = ALL_TAGS_SET
    name = " ".join(name.split()) if name else ""
    values = {TOKEN_TAG: token} if TOKEN_TAG in used else {}
    first = ""
    if FIRST_TEXT_TAG in used or FIRST_HTML_TAG in used or "{first_name}" in greeting:
        first = " ".join(first_name.split()) if first_name else first_name_of(name)
    if GREETING_TEXT_TAG in used or GREETING_HTML_TAG in used:
        line = greeting_for(greeting, name, first, fallback) if greeting else ""
        values[GREETING_TEXT_TAG] = line
        values[GREETING_HTML_TAG] = _escape(line)
    shown_name = name or DEFAULT_READER_NAME
    if NAME_TEXT_TAG in used or NAME_HTML_TAG in used:
        values[NAME_TEXT_TAG] = shown_name
        values[NAME_HTML_TAG] = _escape(shown_name)
    if FIRST_TEXT_TAG in used or FIRST_HTML_TAG in used:
        values[FIRST_TEXT_TAG] = first or shown_name
        values[FIRST_HTML_TAG] = _escape(first or shown_name)
    return values if len(values) == len(used) else {tag: v for tag, v in values.items() if tag in used}


def brand_styles(config: Config) -> markdown.Styles:
    """The colours and fonts that inline styles are made from, checked for CSS as the layouts' `| css` does."""
    c = {key: css_value(value) for key, value in config.colors.items()}
    return markdown.Styles(text=c["text"], heading=c["heading"], accent=c["accent"], muted=c["muted"],
                           heading_font=css_value(config.fonts["heading"]), body_font=css_value(config.fonts["body"]))


def view_url(config: Config, issue: Issue) -> str:
    """The web copy of the issue ("view in browser"), in the archive."""
    return f"{config.archive_url}/{issue.slug}/"


def _context(config: Config, issue: Issue, body: markdown.Body, for_text: bool, web: bool = False) -> dict[str, Any]:
    styles = brand_styles(config)
    workshop = config.workshops.get(issue.workshop) if issue.workshop else None
    next_workshop = config.workshops.get(workshop.next) if workshop and workshop.next else None
    name_tag = NAME_TEXT_TAG if for_text else NAME_HTML_TAG
    first_tag = FIRST_TEXT_TAG if for_text else FIRST_HTML_TAG
    greeting = (GREETING_TEXT_TAG if for_text else GREETING_HTML_TAG) if issue.greeting else ""
    pitch_text = pitch_html = ""
    if workshop and workshop.pitch:
        pitch_text = markdown.text_of(workshop.pitch)
        pitch_html = Markup(markdown.inline_html(workshop.pitch, styles))
    details = [d for d in (workshop.date, workshop.format, workshop.location, workshop.price)] if workshop else []
    return {
        "newsletter": config,
        "issue": issue,
        "title": issue.title,
        "subject": issue.subject,
        "preheader": issue.preheader,
        "date": issue.date,
        # empty for the welcome email: it reaches each reader on the day they join, not on the date it was written
        "date_display": "" if issue.welcome else f"{issue.date.day} {issue.date:%B %Y}",
        "body": body.text if for_text else Markup(body.mjml),
        "greeting": greeting,
        "reader": {"name": name_tag, "first_name": first_tag},
        "workshop": workshop,
        "workshop_pitch": pitch_text if for_text else pitch_html,
        "workshop_details": [d for d in details if d],
        "next_workshop": next_workshop,
        "colors": config.colors,
        "fonts": config.fonts,
        "unsubscribe_url": f"{config.base_url}/unsubscribe/{TOKEN_TAG}",
        "view_url": view_url(config, issue),
        # True for the public web copy (archive): layouts leave out the greeting and per-reader links
        "web": web,
    }


def _layout_frame(exc: BaseException, folder: Path) -> tuple[Path | None, int | None]:
    """The layout file and line a Jinja2 runtime error came from (Jinja2 rewrites tracebacks to point there)."""
    for frame in reversed(traceback.extract_tb(exc.__traceback__)):
        if frame.filename and Path(frame.filename).parent == folder:
            return Path(frame.filename), frame.lineno
    return None, None


def _render_template(env: jinja2.Environment, folder: Path, name: str, context: dict[str, Any]) -> str:
    try:
        return env.get_template(name).render(context)
    except jinja2.TemplateNotFound as exc:
        raise LayoutError(f"layout `{exc.name}` not found", path=folder,
                          hint=f"layouts/ needs {EMAIL_LAYOUT} and {TEXT_LAYOUT}") from None
    except jinja2.TemplateSyntaxError as exc:
        raise LayoutError(f"template syntax error: {exc.message}", path=exc.filename or folder / name,
                          line=exc.lineno) from None
    except jinja2.UndefinedError as exc:
        path, line = _layout_frame(exc, folder)
        missing = re.search(r"'([^']+)' (?:is undefined|has no attribute '([^']+)')", str(exc))
        what = str(exc)
        if missing and missing.group(2):
            owner = re.sub(r"^(?:[\w.]+\.)?(\w+) object$", r"\1", missing.group(1))
            what = f"`{missing.group(2)}` is not a field of `{owner}`"
        elif missing:
            what = f"`{missing.group(1)}` is not a template variable"
        raise LayoutError(f"{what} ({exc})", path=path or folder / name, line=line,
                          hint="variables: newsletter, issue, title, subject, preheader, body, greeting, reader, "
                          "workshop, workshop_pitch, workshop_details, next_workshop, colors, fonts, "
                          "unsubscribe_url, view_url, web") from None
    except jinja2.TemplateError as exc:
        path, line = _layout_frame(exc, folder)
        raise LayoutError(f"layout error: {exc}", path=path or folder / name, line=line) from None


def _compile(mjml_text: str) -> str:
    from mjml import mjml2html

    return str(mjml2html(mjml_text, disable_comments=True))


def _blame_layout(env: jinja2.Environment, folder: Path, context: dict[str, Any], error: str) -> LayoutError:
    """Find which layout broke the MJML: each partial is compiled on its own."""
    for name in sorted(env.list_templates(extensions=["mjml"])):
        if name in STANDALONE_LAYOUTS:
            continue  # whole documents, not partials of the email
        try:
            fragment = _render_template(env, folder, name, context)
        except LayoutError:
            continue
        wrappers = ("<mjml><mj-body>{}</mj-body></mjml>",
                    "<mjml><mj-body><mj-section><mj-column>{}</mj-column></mj-section></mj-body></mjml>")
        failures = 0
        for wrapper in wrappers:
            try:
                _compile(wrapper.format(fragment))
            except ValueError:
                failures += 1
        if failures == len(wrappers):
            return LayoutError(f"the MJML from this layout does not parse: {error}", path=folder / name,
                               hint="check that every tag is closed and spelled as MJML spells it")
    return LayoutError(f"the MJML does not parse: {error}", path=folder / EMAIL_LAYOUT,
                       hint="check that every tag is closed and spelled as MJML spells it")


def _included_layouts(env: jinja2.Environment, name: str, seen: set[str]) -> list[str]:
    """The layouts `name` includes, innermost first (each once)."""
    from jinja2 import meta

    assert env.loader is not None
    source, _, _ = env.loader.get_source(env, name)
    out: list[str] = []
    for child in meta.find_referenced_templates(env.parse(source)):
        if child and child not in seen:
            seen.add(child)
            out += [*_included_layouts(env, child, seen), child]
    return out


def layout_texts(config: Config, rendered: RenderedEmail) -> list[LayoutText]:
    """Each layout of the email with what it renders to for this issue, the included ones first (the most
    specific), email.mjml last: what `check` searches to tell which layout a piece of the output came from."""
    folder = layouts_dir(config.root)
    env = _environment(str(folder))
    context = _context(config, rendered.issue, rendered.body, for_text=False)
    out = []
    for name in _included_layouts(env, EMAIL_LAYOUT, {EMAIL_LAYOUT}):
        try:
            text = _render_template(env, folder, name, context)
            source = (folder / name).read_text(encoding="utf-8")
        except (LayoutError, OSError, UnicodeDecodeError):
            continue  # it rendered inside email.mjml; on its own it is only a better guess
        out.append(LayoutText(folder / name, source, text))
    source = (folder / EMAIL_LAYOUT).read_text(encoding="utf-8")
    return [*out, LayoutText(folder / EMAIL_LAYOUT, source, rendered.mjml)]


def render_issue(config: Config, issue: Issue, *, web: bool = False) -> RenderedEmail:
    """Render an issue once for all readers (parts carry the per-reader substitution tags).

    `web` renders the public copy for the archive: no greeting, no unsubscribe link, images relative.
    """
    folder = layouts_dir(config.root)
    if not folder.is_dir():
        raise LayoutError("no layouts/ folder", path=folder, hint=f"it holds {EMAIL_LAYOUT} and {TEXT_LAYOUT}")
    env = _environment(str(folder))
    body = markdown.convert(issue.body_md, brand_styles(config), "" if web else view_url(config, issue),
                          image_size=lambda src: _shown_size(issue.dir, src))
    html_context = _context(config, issue, body, for_text=False, web=web)
    mjml_text = _render_template(env, folder, EMAIL_LAYOUT, html_context)
    try:
        html = _compile(mjml_text)
    except ValueError as exc:
        # The essay's own HTML is produced by markdown-it and always well formed, so a layout is at fault.
        raise _blame_layout(env, folder, html_context, str(exc)) from None
    # MJML hides the preheader in white text; SpamAssassin scores white-on-light as hidden text
    # (HTML_FONT_LOW_CONTRAST). It stays invisible (display:none, opacity 0) in the text colour.
    html = _PREHEADER_COLOR.sub(rf"\g<1>{config.colors['text']};", html, count=1)
    html = _with_heights(html, body.sizes)
    text = _render_template(env, folder, TEXT_LAYOUT, _context(config, issue, body, for_text=True, web=web))
    text = re.sub(r"\n{3,}", "\n\n", text).strip() + "\n"
    rendered = RenderedEmail(issue=issue, subject=issue.subject, preheader=issue.preheader, mjml=mjml_text,
                             html=html, text=text, body=body)
    rendered.warnings = output_warnings(rendered, folder)
    return rendered


_IMG_SRC = re.compile(r'<img\b[^>]*\bsrc="([^"]+)"')


def image_urls(html: str) -> list[str]:
    """The `src` of every <img> in an HTML part, unescaped, in order."""
    return [html_lib.unescape(u) for u in _IMG_SRC.findall(html)]


def _shown_size(folder: Path, src: str) -> tuple[int, int] | None:
    """The size an image beside the essay is shown at, or None (missing, unreadable, outside the folder:
    `check` reports those)."""
    from urllib.parse import unquote

    from .images import published_size
    from .issue import safe_file

    path = safe_file(folder, unquote(src))
    if path is None:
        return None
    try:
        return published_size(path).display
    except IssueError:
        return None


_IMG = re.compile(r"<img\b[^>]*>")


def _with_heights(html: str, sizes: dict[str, tuple[int, int]]) -> str:
    """MJML writes `height="auto"` on its images: give the ones whose size is known their height in pixels, as
    Outlook and slow-loading clients need it to reserve the space (the CSS keeps `height:auto`)."""
    if not sizes:
        return html

    def fix(match: re.Match[str]) -> str:
        tag = match.group(0)
        src = re.search(r'\bsrc="([^"]*)"', tag)
        size = sizes.get(html_lib.unescape(src.group(1))) if src else None
        if size is None:
            return tag
        if 'height="auto"' in tag:
            return tag.replace('height="auto"', f'height="{size[1]}"', 1)
        return tag if re.search(r"\bheight=", tag) else tag.replace("<img", f'<img height="{size[1]}"', 1)

    return _IMG.sub(fix, html)


def output_warnings(rendered: RenderedEmail, where: Path) -> list[Problem]:
    """Problems visible in the output itself (what mjml-python lets through silently); `where`: layouts/."""
    out: list[Problem] = []
    leftover = re.search(r"<mj-[a-z-]+", rendered.html)
    if leftover:
        out.append(Problem("error", f"unknown MJML tag `{leftover.group(0)}>` copied into the HTML (a typo?)", where))
    # mjml-python's silent differences from MJML (MJML-NOTES): say so instead of rendering differently.
    for attrs in re.findall(r'\b(?:padding|inner-padding)="([^"]*)"', rendered.mjml):
        if any(token == "0" for token in attrs.split()):
            out.append(Problem("warning", f'padding="{attrs}": write 0px, not 0 (a bare 0 breaks the column '
                               "width in Outlook with mjml-python)", where))
            break
    if re.search(r"<mj-attributes>(?:(?!</mj-attributes>).)*<mj-body\b", rendered.mjml, re.S):
        out.append(Problem("warning", "<mj-body> inside <mj-attributes> is ignored by mjml-python: set "
                           "background-color on <mj-body> itself", where))
    if re.search(r'<mj-style[^>]*\binline="inline"', rendered.mjml):
        out.append(Problem("warning", '<mj-style inline="inline"> is not inlined by mjml-python: the rules stay '
                           "in <style>, which some clients drop", where))
    for marker in ("{{", "{%"):
        for part, content in (("HTML", rendered.html), ("text", rendered.text)):
            if marker in content:
                out.append(Problem("error", f"leftover `{marker}` in the {part} part", where))
    size = len(rendered.html.encode("utf-8"))
    if size >= 102 * 1024:
        out.append(Problem("error", f"HTML is {size / 1024:.1f} KB: Gmail clips messages at 102 KB"))
    elif size >= 80 * 1024:
        out.append(Problem("warning", f"HTML is {size / 1024:.1f} KB: close to Gmail's 102 KB clip"))
    return out


def missing_images(issue: Issue, body: markdown.Body) -> list[Problem]:
    """A warning for each image the essay shows that is not beside body.md (with the file it probably means:
    `did you mean IMG_4821.JPG?`). `render` prints them; `check` makes them errors."""
    from .issue import local_name, missing_file

    out = []
    for image in body.images:
        name = local_name(image.url)
        missing = missing_file(issue.dir, name) if name is not None else None  # outside the folder: check says so
        if missing is not None:
            out.append(Problem("warning", missing.message(), issue.body_path, image.line))
    return out


def personalize_sample(rendered: RenderedEmail) -> tuple[str, str, str]:
    """(mjml, html, text) for the sample reader that previews show, signed with NEWSLETTER_SECRET when set
    (else the development key)."""
    from .tokens import make_token, secret_from_env

    secret, _ = secret_from_env(required=False)
    return personalize(rendered, name=SAMPLE_READER["name"], token=make_token(secret, SAMPLE_READER["email"]))


def personalize(rendered: RenderedEmail, *, name: str, token: str, first_name: str = "") -> tuple[str, str, str]:
    """(mjml, html, text) as one reader sees them: the substitution tags filled, escaped per part."""
    issue = rendered.issue
    values = reader_substitutions(name, token, first_name, greeting=issue.greeting, fallback=issue.greeting_fallback)
    return fill(rendered.mjml, values), fill(rendered.html, values), fill(rendered.text, values)


def render_layout(config: Config, name: str, context: dict[str, Any]) -> tuple[str, str]:
    """(html, text) of a writer's layout pair outside the issue (layouts/<name>.mjml and .txt), with the
    publication, its colours and fonts in the context: the sign-up confirmation email."""
    folder = layouts_dir(config.root)
    env = _environment(str(folder))
    values = {"newsletter": config, "colors": config.colors, "fonts": config.fonts, **context}
    mjml_text = _render_template(env, folder, f"{name}.mjml", values)
    try:
        html = _compile(mjml_text)
    except ValueError as exc:
        raise LayoutError(f"layouts/{name}.mjml does not compile: {exc}", path=folder / f"{name}.mjml") from None
    text = _render_template(env, folder, f"{name}.txt", values)
    return html, re.sub(r"\n{3,}", "\n\n", text).strip() + "\n"
