"""The pre-send quality gate: every problem of an issue, its config and its rendered output."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .build import load
from .config import Config
from .errors import Level, NewsletterError, Problem
from .issue import Issue, local_name, missing_file, safe_file, unsafe_files
from .render import TOKEN_TAG, RenderedEmail, image_urls, render_issue

SUBJECT_MAX = 70
PREHEADER_MAX = 150
GENERIC_FONTS = {"serif", "sans-serif", "monospace", "cursive", "fantasy", "system-ui"}
# RFC 2606 / 6761 names that never reach a real reader.
_RESERVED = re.compile(
    r"(?<![\w-])(?:[\w-]+\.)*(?:example\.(?:com|net|org)|[\w-]+\.(?:example|test|invalid|localhost))(?![\w-])",
    re.IGNORECASE,
)
_PLACEHOLDER = re.compile(r"\bTODO\b")
_URL_ATTR = re.compile(r"""\b(?:href|src)\s*=\s*["']([^"']+)["']""", re.IGNORECASE)


def _walk(value: Any, keys: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], str]]:
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _walk(v, (*keys, str(k)))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _walk(v, (*keys, str(i)))
    elif isinstance(value, str):
        yield keys, value


def placeholder_problems(data: dict[str, Any], path: Path, line_of: Any) -> list[Problem]:
    """Values still holding `TODO` or a reserved example domain."""
    out = []
    for keys, value in _walk(data):
        dotted = ".".join(keys)
        if _PLACEHOLDER.search(value):
            out.append(Problem("error", f"`{dotted}` is still a placeholder ({value.strip()[:60]!r})",
                               path, line_of(*keys)))
        elif reserved := _RESERVED.search(value):
            out.append(Problem("error", f"`{dotted}` uses the reserved example domain `{reserved.group(0)}`: "
                               "put the real one", path, line_of(*keys)))
    return out


def _line_of(lines: list[str], needle: str) -> int | None:
    """The first line (1-based) holding `needle`."""
    return next((number for number, line in enumerate(lines, 1) if needle in line), None)


def _file_lines(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return []


def _relative_luminance(color: str) -> float:
    h = color.lstrip("#")
    if len(h) == 3:
        h = "".join(c * 2 for c in h)
    channels = [int(h[i:i + 2], 16) / 255 for i in (0, 2, 4)]
    lin = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]


def contrast_ratio(fg: str, bg: str) -> float:
    """WCAG 2 contrast ratio of two hex colours."""
    a, b = sorted((_relative_luminance(fg), _relative_luminance(bg)), reverse=True)
    return (a + 0.05) / (b + 0.05)


CONTRAST_PAIRS = [
    ("text", "content"), ("heading", "content"), ("accent", "content"), ("muted", "background"),
    ("button_text", "accent"), ("text", "cta_background"),
    ("dark_text", "dark_content"), ("dark_accent", "dark_content"), ("dark_muted", "dark_background"),
]


def check_issue(config: Config, issue: Issue, rendered: RenderedEmail, *, links: bool = False,
                spam: bool = True) -> list[Problem]:
    """Every error and warning for sending this issue (errors first, then warnings, then notes).

    `links` requests every link (network); `spam` scores the message with SpamAssassin when it is installed.
    """
    cfg_lines = _file_lines(config.path)  # read once: every link's origin is looked up in it
    body_lines = {link.url: link.line for link in rendered.body.links + rendered.body.images}
    problems = [
        *_placeholder_checks(config, issue),
        *_workshop_checks(config, issue),
        *_url_checks(config, issue, rendered, body_lines, cfg_lines),
        *_image_checks(config, issue, rendered),
        *_footer_checks(config, rendered),
        *_inbox_checks(issue),
        *_brand_checks(config),
        *css_problems(config, rendered),
        *accessibility_problems(rendered, config.root / "layouts"),
        *rendered.warnings,
    ]
    if spam:
        problems += spam_problems(config, rendered)
    if links:
        problems += link_problems(config, issue, rendered, body_lines)
    order = {Level.ERROR: 0, Level.WARNING: 1}
    problems.sort(key=lambda p: order.get(p.level, 2))
    return problems


_RESERVED_ADDRESS = re.compile(r"[\w.+-]+@" + _RESERVED.pattern.removeprefix(r"(?<![\w-])"), re.IGNORECASE)


def _placeholder_checks(config: Config, issue: Issue) -> list[Problem]:
    problems = placeholder_problems(config.doc.data, config.path, config.line)
    if issue.doc is not None:
        problems += placeholder_problems(issue.doc.data, issue.yaml_path, issue.doc.line)
    for number, source_line in enumerate(issue.body_md.splitlines(), 1):
        if _PLACEHOLDER.search(source_line):
            problems.append(Problem("error", "placeholder text `TODO` left in the essay", issue.body_path, number))
        for address in _RESERVED_ADDRESS.findall(source_line):
            problems.append(Problem("error", f"placeholder address `{address}` in the essay: write the real one",
                                    issue.body_path, number))
    return problems


def _code_lines(lines: list[str]) -> list[str]:
    """YAML lines without their comments."""
    return [re.sub(r"(^|\s)#.*$", "", line) for line in lines]


def _workshop_checks(config: Config, issue: Issue) -> list[Problem]:
    workshop = config.workshops.get(issue.workshop) if issue.workshop else None
    if workshop is not None and not workshop.register_url:
        return [Problem("error", f"workshop `{workshop.id}` is promoted but has no `register_url`",
                        config.path, config.line("workshops", workshop.id))]
    if not issue.workshop:
        return [Problem("warning", "no `workshop`: this issue has no call-to-action block", issue.yaml_path)]
    return []


def _url_checks(config: Config, issue: Issue, rendered: RenderedEmail, body_lines: dict[str, int],
                cfg_lines: list[str]) -> list[Problem]:
    """Links and images, found in the output so that layouts and config are covered too."""
    problems: list[Problem] = []
    seen: set[str] = set()
    urls = _URL_ATTR.findall(rendered.html) + re.findall(r"\((https?://[^)\s]+)\)", rendered.text)
    urls += [image.url for image in rendered.body.images]
    images = {i.url for i in rendered.body.images}
    for url in (u.strip() for u in urls):
        if url in seen or url.startswith(("mailto:", "#")) or TOKEN_TAG in url:
            if TOKEN_TAG in url and url not in seen and url.lower().startswith("http://"):
                problems.append(_http_link(url, config.path, config.line("base_url")))
            seen.add(url)
            continue
        seen.add(url)
        path, line = _origin(url, body_lines, issue, config, cfg_lines)
        scheme = urlsplit(url).scheme.lower()
        if not scheme:
            problems += _local_url_problems(issue, url, url in body_lines and url in images, path, line)
            continue
        if scheme == "http":
            problems.append(_http_link(url, path, line))
        elif scheme != "https":
            problems.append(Problem("warning", f"link with an unusual scheme: {url}", path, line))
        host = urlsplit(url).hostname or ""
        if _RESERVED.fullmatch(host) and (url in body_lines or _line_of(_code_lines(cfg_lines), host) is None):
            # hosts written in newsletter.yaml's values are already reported once, as placeholders; a comment
            # there exempts nothing, and a link in the essay is always the essay's to fix
            problems.append(Problem("error", f"link to the reserved example domain `{host}`: {url}", path, line))
    return problems


def _http_link(url: str, path: Path | str | None, line: int | None) -> Problem:
    """http:// is an error; to this very machine (a test or staging set-up) a warning, as no reader reaches it."""
    if (urlsplit(url).hostname or "") in ("localhost", "::1") or (urlsplit(url).hostname or "").startswith("127."):
        return Problem("warning", f"link to this machine, which readers cannot reach: {url}", path, line)
    return Problem("error", f"`http://` link: use https:// ({url})", path, line)


def _local_url_problems(issue: Issue, url: str, is_image: bool, path: Path | str | None,
                        line: int | None) -> list[Problem]:
    if not is_image:
        return [Problem("error", f"relative link `{url}`: links in email must be absolute https:// URLs", path, line)]
    inside = _inside(issue.dir, url)
    if inside is None:
        return [Problem("error", f"image `{url}` is outside issues/{issue.slug}/: put the image in the issue's "
                        "folder and write its name alone", path, line)]
    missing = missing_file(issue.dir, inside.name)  # a link or a device is not missing: _unsafe_files names it
    return [Problem("error", missing.message(), path, line)] if missing is not None else []


def _unsafe_files(issue: Issue) -> list[Problem]:
    """Links and other non-regular files in the issue folder: never read, rendered or published."""
    return [Problem("error", "a link or not a regular file: nothing in an issue folder is published unless it is a "
                    "plain file inside it (replace it with the file itself, or remove it)", p)
            for p in unsafe_files(issue.dir)]


def _image_checks(config: Config, issue: Issue, rendered: RenderedEmail) -> list[Problem]:
    problems = _unsafe_files(issue) + _unlinked_images(issue) + _heavy_images(config, issue, rendered)
    local_images = [i.url for i in rendered.body.images if not urlsplit(i.url).scheme]
    if local_images:
        problems.append(Problem("note", f"{len(local_images)} image(s) load from {config.archive_url}/{issue.slug}/: "
                                "publish `newsletter archive` there before sending (check --links tries them)",
                                issue.body_path))
    for image in rendered.body.images:
        if not image.text:
            hint = f"write ![what it shows]({image.url})"
            problems.append(Problem("error", f"image `{image.url}` has no alt text: {hint}",
                                    issue.body_path, image.line))
    for tag in re.findall(r"<img\b[^>]*>", rendered.html):
        if not re.search(r"\balt\s*=", tag):
            problems.append(Problem("error", f"an image in the layout has no alt attribute: {tag[:80]}",
                                    config.root / "layouts"))
    return problems


_SPACED_IMAGE = re.compile(r"!\[([^\]]*)\]\(([^()<>\n]*\s[^()<>\n]*)\)")


def _unlinked_images(issue: Issue) -> list[Problem]:
    """`![](IMG 2041.JPG)`: a space in the path makes Markdown print it as text, not show the image."""
    problems = []
    for number, source_line in enumerate(issue.body_md.splitlines(), 1):
        for m in _SPACED_IMAGE.finditer(source_line):
            target = m.group(2).strip()
            if not re.fullmatch(r"""\S+\s+("[^"]*"|'[^']*')""", target):  # not `![a](photo.jpg "a title")`
                problems.append(Problem("error", f"image path with a space is shown as text, not as an image: "
                                        f"write ![{m.group(1) or '…'}](<{target}>)", issue.body_path, number))
    return problems


def _heavy_images(config: Config, issue: Issue, rendered: RenderedEmail) -> list[Problem]:
    """Images still over 1 MB once published (re-encoded, at most 1200 px wide): slow on a phone."""
    from .images import HEAVY_BYTES, image_cache, publish

    problems = []
    for image in rendered.body.images:
        inside = _inside(issue.dir, image.url)
        source = safe_file(issue.dir, inside.name) if inside is not None else None
        if source is None or source.stat().st_size <= HEAVY_BYTES:
            continue  # re-encoding never makes an image larger than this
        try:
            published = image_cache(config.root, issue.slug) / source.name
            publish(source, published)
        except NewsletterError as exc:
            problems.append(Problem("error", str(exc.message), issue.body_path, image.line))
            continue
        size = published.stat().st_size
        if size > HEAVY_BYTES:
            problems.append(Problem("warning", f"image `{image.url}` is {size / 1048576:.1f} MB even after "
                                    "re-encoding: crop it or use a smaller one", issue.body_path, image.line))
    return problems


def _footer_checks(config: Config, rendered: RenderedEmail) -> list[Problem]:
    """The unsubscribe link and the postal address in both parts; the HTML's language."""
    import html as html_lib

    layouts = config.root / "layouts"
    problems: list[Problem] = []
    unsub = f"/unsubscribe/{TOKEN_TAG}"
    for part, content in (("HTML", rendered.html), ("text", rendered.text)):
        if unsub not in content:
            problems.append(Problem("error", f"no unsubscribe link in the {part} part (use {{{{ unsubscribe_url }}}})",
                                    layouts))
    address = config.postal_address.strip()
    if not address:
        problems.append(Problem("error", "no postal address: the law (CAN-SPAM) requires one in every email",
                                config.path, config.line("postal_address")))
    else:
        for part, content in (("HTML", html_lib.unescape(rendered.html)), ("text", rendered.text)):
            if address not in content:
                problems.append(Problem("error", f"the postal address is missing from the {part} part", layouts))
    if not re.search(r'<html[^>]*\blang="(?!und")[^"]+"', rendered.html):
        problems.append(Problem("error", "the HTML has no `lang` (screen readers need it)", layouts))
    return problems


def _inbox_checks(issue: Issue) -> list[Problem]:
    """What the inbox line shows: the subject and the preheader."""
    problems: list[Problem] = []
    if len(issue.subject) > SUBJECT_MAX:
        problems.append(Problem("warning", f"subject is {len(issue.subject)} characters: inboxes cut it after "
                                f"about {SUBJECT_MAX}", issue.yaml_path, _yaml_line(issue, "subject", "title")))
    if not issue.preheader:
        problems.append(Problem("warning", "no `preheader`: inboxes will show the first words of the email instead",
                                issue.yaml_path))
    elif len(issue.preheader) > PREHEADER_MAX:
        problems.append(Problem("warning", f"preheader is {len(issue.preheader)} characters: keep it under "
                                f"{PREHEADER_MAX}", issue.yaml_path, _yaml_line(issue, "preheader")))
    return problems


def _brand_checks(config: Config) -> list[Problem]:
    """Font stacks that end in a generic family; colour pairs with WCAG AA contrast."""
    problems: list[Problem] = []
    for key, stack in config.fonts.items():
        last = stack.split(",")[-1].strip().strip("'\"").lower()
        if last not in GENERIC_FONTS:
            problems.append(Problem("warning", f"font `{key}` should end in a generic family such as serif or "
                                    "sans-serif", config.path, config.line("brand", "fonts", key)))
    for fg, bg in CONTRAST_PAIRS:
        ratio = contrast_ratio(config.colors[fg], config.colors[bg])
        if ratio < 4.5:
            problems.append(Problem("error", f"colours `{fg}` on `{bg}` have contrast {ratio:.1f}:1; "
                                    "WCAG AA needs 4.5:1", config.path, config.line("brand", "colors", fg)))
    return problems


def css_problems(config: Config, rendered: RenderedEmail) -> list[Problem]:
    """The email's CSS parsed (every <style> block and inline style): each fault named with its layout."""
    from .css import css_faults, find_origin
    from .render import EMAIL_LAYOUT, layout_texts, layouts_dir

    faults = css_faults(rendered.html)
    if not faults:
        return []
    layouts = layout_texts(config, rendered)  # rendered only when there is something to place
    problems: list[Problem] = []
    seen: set[tuple[Path, int | None, str]] = set()
    for fault in faults:
        # Not in any layout's text: MJML wrote it from an attribute value, so the email layout is the best guess.
        path, line = find_origin(fault, layouts) or (layouts_dir(config.root) / EMAIL_LAYOUT, None)
        if (path, line, fault.message) not in seen:
            seen.add((path, line, fault.message))
            problems.append(Problem("error", fault.message, path, line))
    return problems


_FONT_SIZE = re.compile(r"font-size:\s*(\d+(?:\.\d+)?)px")


def accessibility_problems(rendered: RenderedEmail, layouts: Path) -> list[Problem]:
    """Text sizes, button heights (what a thumb and an older eye need)."""
    out: list[Problem] = []
    from collections import Counter

    sizes = Counter(float(n) for n in _FONT_SIZE.findall(rendered.html))
    visible = {n: c for n, c in sizes.items() if n > 1}  # 0/1 px: MJML's layout and the hidden preheader
    if visible:
        body_size = max(visible.items(), key=lambda kv: kv[1])[0]
        if body_size < 14:
            out.append(Problem("error", f"body text is {body_size:g}px: at least 14px (16px is best)", layouts))
        tiny = sorted(n for n in visible if n < 12)
        if tiny:
            out.append(Problem("error", f"text at {tiny[0]:g}px is too small to read: nothing under 12px", layouts))
    for style in re.findall(r'<a [^>]*style="([^"]*display:inline-block[^"]*)"', rendered.html):
        pad = re.search(r"padding:\s*(\d+)px(?:\s+(\d+)px)?(?:\s+(\d+)px)?", style)
        font = re.search(r"font-size:\s*(\d+)px", style)
        line = re.search(r"line-height:\s*(\d+)(%|px)", style)
        if not (pad and font):
            continue
        top = float(pad.group(1))
        bottom = float(pad.group(3)) if pad.group(3) else top
        size = float(font.group(1))
        height = size * 1.2
        if line:
            height = float(line.group(1)) * (size / 100 if line.group(2) == "%" else 1)
        if top + bottom + height < 44:
            out.append(Problem("error", f"a button is {top + bottom + height:.0f}px tall: at least 44px for a "
                               "thumb (raise inner-padding or font-size)", layouts))
    return out


def spam_problems(config: Config, rendered: RenderedEmail) -> list[Problem]:
    """SpamAssassin's score of the message as a reader receives it (error at 5, warning at 2)."""
    from .eml import build_scoring_eml
    from .spam import ERROR_AT, WARN_AT, cached, cached_score, spamassassin_available

    if not config.check_spam:
        return [Problem("note", "spam score skipped: `check: {spam: false}` in newsletter.yaml")]
    message = build_scoring_eml(config, rendered)
    cache = config.root / "build" / ".cache" / "spam"
    if not spamassassin_available() and not cached(message, cache):
        return [Problem("note", "spam score skipped: SpamAssassin is not installed (apt-get install spamassassin)")]
    try:
        result = cached_score(message, cache)
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
        return [Problem("warning", f"spam score unavailable: {exc}")]
    fired = ", ".join(f"{name} {points:+g}" for points, name, _ in result.rules if points) or "none with points"
    level = "error" if result.score >= ERROR_AT else "warning" if result.score >= WARN_AT else "note"
    score = round(result.score, 1) + 0.0  # no "-0.0"
    return [Problem(level, f"spam score {score:.1f} (SpamAssassin, error at {ERROR_AT:g}); rules: {fired}")]


def link_problems(config: Config, issue: Issue, rendered: RenderedEmail, body_lines: dict[str, int]) -> list[Problem]:
    """Every http(s) link requested; the broken ones reported with their status."""
    from .links import check_links, is_offline

    # Our own pages exist only once `serve`/`archive` run, but the images must be published before sending.
    own = (config.base_url, config.archive_url)
    images = set(image_urls(rendered.html))
    urls = [u for u in _URL_ATTR.findall(rendered.html) if urlsplit(u).scheme in ("http", "https")
            and TOKEN_TAG not in u and (u in images or not u.startswith(own))]
    results = check_links(urls)
    if is_offline(results):
        return [Problem("warning", "no network: links not checked")]
    out = []
    cfg_lines = _file_lines(config.path)
    for result in results:
        path, line = _origin(result.url, body_lines, issue, config, cfg_lines)
        if result.broken:
            what = f"HTTP {result.status}" if result.status else result.error
            kind = "image not published" if result.url in images else "broken link"
            out.append(Problem("error", f"{kind} ({what}): {result.url}", path, line))
        elif result.url in images and not result.content_type.startswith("image/"):
            out.append(Problem("error", f"not an image ({result.content_type or 'no type'}): {result.url}",
                               path, line))
    out.append(Problem("note", f"links: {len(set(urls))} checked, images included"))
    return out


def _yaml_line(issue: Issue, *keys: str) -> int | None:
    if issue.doc is None:
        return None
    for key in keys:
        if issue.doc.line(key):
            return issue.doc.line(key)
    return None


def _inside(folder: Path, url: str) -> Path | None:
    """The file a relative image URL names, when it stays inside `folder` (no `/etc/...`, no `../`)."""
    name = local_name(url)
    return folder / name if name is not None else None  # not resolved: a link is refused by safe_file, never followed


def _origin(url: str, body_lines: dict[str, int], issue: Issue, config: Config,
            cfg_lines: list[str]) -> tuple[Path, int | None]:
    if url in body_lines:
        return issue.body_path, body_lines[url]
    line = _line_of(cfg_lines, url)
    if line:
        return config.path, line
    return config.root / "layouts", None


def check_slug(root: Path, slug: str | None, *, links: bool = False, spam: bool = True,
               ) -> tuple[Config, Issue, RenderedEmail, list[Problem]]:
    """Load, render and check an issue (the newest when `slug` is None): what `check`, `send`'s pre-flight and
    `preview` all do."""
    config, issue = load(root, slug)
    rendered = render_issue(config, issue)
    return config, issue, rendered, check_issue(config, issue, rendered, links=links, spam=spam)
