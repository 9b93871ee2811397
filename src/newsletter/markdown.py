"""Markdown (CommonMark) -> email-safe MJML blocks with inline styles, and -> readable plain text."""

from __future__ import annotations

import html
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urljoin, urlsplit

from markdown_it import MarkdownIt
from markdown_it.token import Token

# Raw HTML in the essay would reach mjml-python unchecked (it raises on malformed HTML): treat it as text.
_MD = MarkdownIt("commonmark", {"html": False})


@dataclass(frozen=True)
class Link:
    """A link or image found in the Markdown, with its line in the source."""

    url: str
    text: str
    line: int


@dataclass
class Body:
    """The essay converted for both parts, plus what `check` needs to inspect."""

    mjml: str
    text: str
    links: list[Link] = field(default_factory=list)
    images: list[Link] = field(default_factory=list)
    sizes: dict[str, tuple[int, int]] = field(default_factory=dict)  # image URL -> (width, height) shown


@dataclass(frozen=True)
class Styles:
    """The brand values the inline styles are built from."""

    text: str
    heading: str
    accent: str
    muted: str
    heading_font: str
    body_font: str

    def css(self) -> dict[str, str]:
        """Inline style per tag; email clients drop <style> often enough that every element carries its own."""
        h = f"font-family:{self.heading_font};color:{self.heading};line-height:1.3;font-weight:bold;"
        return {
            "p": "margin:0 0 18px 0;",
            "h1": h + "font-size:26px;margin:32px 0 12px 0;",
            "h2": h + "font-size:22px;margin:32px 0 12px 0;",
            "h3": h + "font-size:19px;margin:28px 0 10px 0;",
            "h4": h + "font-size:17px;margin:24px 0 8px 0;",
            "h5": h + "font-size:16px;margin:24px 0 8px 0;",
            "h6": h + "font-size:16px;margin:24px 0 8px 0;",
            "a": f"color:{self.accent};text-decoration:underline;",
            "blockquote": f"margin:0 0 18px 0;padding:0 0 0 16px;border-left:3px solid {self.accent};"
            "font-style:italic;",
            "ul": "margin:0 0 18px 0;padding:0 0 0 24px;",
            "ol": "margin:0 0 18px 0;padding:0 0 0 24px;",
            "li": "margin:0 0 8px 0;",
            "pre": "margin:0 0 18px 0;padding:12px;background-color:#f2f2f2;color:#2b2b2b;font-size:14px;"
            "white-space:pre-wrap;word-break:break-word;",
            "code": "font-family:Menlo,Consolas,'Courier New',monospace;font-size:15px;",
            "img": "max-width:100%;height:auto;border:0;",
        }


_TAG_OF = {
    "paragraph_open": "p", "blockquote_open": "blockquote", "bullet_list_open": "ul",
    "ordered_list_open": "ol", "list_item_open": "li", "link_open": "a", "code_block": "pre",
    "fence": "pre", "code_inline": "code", "image": "img",
}


def _is_absolute(url: str) -> bool:
    return bool(urlsplit(url).scheme)


def _standalone_image(inline: Token) -> tuple[Token, str] | None:
    """The image (and its link target) when a paragraph holds nothing else."""
    kids = [t for t in inline.children or [] if not (t.type == "text" and not t.content.strip())]
    if len(kids) == 1 and kids[0].type == "image":
        return kids[0], ""
    if len(kids) == 3 and kids[0].type == "link_open" and kids[1].type == "image" and kids[2].type == "link_close":
        return kids[1], str(kids[0].attrGet("href") or "")
    return None


def _alt(image: Token) -> str:
    return "".join(c.content for c in image.children or [] if c.type in {"text", "code_inline"}).strip()


def convert(markdown: str, styles: Styles, asset_base_url: str,
            image_size: Callable[[str], tuple[int, int] | None] | None = None) -> Body:
    """Convert the essay; relative image paths become absolute URLs under `asset_base_url` (kept relative
    when it is empty: the web archive serves the images beside the page). `image_size(src)` gives a local
    image's shown size, for its width and height attributes."""
    tokens = _MD.parse(markdown)
    css = styles.css()
    links: list[Link] = []
    images: list[Link] = []
    sizes: dict[str, tuple[int, int]] = {}
    base = asset_base_url.rstrip("/") + "/"

    # First pass: record links and images with their lines, make image URLs absolute, add inline styles.
    for tok in tokens:
        line = (tok.map[0] + 1) if tok.map else 0
        if tok.type in _TAG_OF:
            tok.attrSet("style", css[_TAG_OF[tok.type]])
        if tok.type == "heading_open":
            tok.attrSet("style", css[tok.tag])
        if tok.type != "inline":
            continue
        offset = 0
        for child in tok.children or []:
            if child.type in {"softbreak", "hardbreak"}:
                offset += 1
            elif child.type == "link_open":
                child.attrSet("style", css["a"])
                href = str(child.attrGet("href") or "")
                links.append(Link(href, "", line + offset))
            elif child.type == "image":
                src = str(child.attrGet("src") or "")
                size = image_size(src) if image_size and src and not _is_absolute(src) else None
                if src and not _is_absolute(src) and asset_base_url:
                    child.attrSet("src", urljoin(base, src))
                if size:
                    sizes[str(child.attrGet("src"))] = size
                    child.attrSet("width", str(size[0]))
                    child.attrSet("height", str(size[1]))
                child.attrSet("style", css["img"])
                images.append(Link(src, _alt(child), line + offset))
            elif child.type == "code_inline":
                child.attrSet("style", css["code"])

    return Body(mjml=_to_mjml(tokens, styles), text=to_text(tokens), links=links, images=images, sizes=sizes)


def inline_html(markdown: str, styles: Styles, asset_base_url: str = "") -> str:
    """Markdown rendered to styled HTML (a workshop pitch; the essay in the Atom feed)."""
    tokens = _MD.parse(markdown)
    css = styles.css()
    for tok in tokens:
        if tok.type in _TAG_OF:
            tok.attrSet("style", css[_TAG_OF[tok.type]])
        if tok.type == "heading_open":
            tok.attrSet("style", css[tok.tag])
        for child in tok.children or []:
            if child.type == "link_open":
                child.attrSet("style", css["a"])
            elif child.type == "image":
                src = str(child.attrGet("src") or "")
                if src and not _is_absolute(src) and asset_base_url:
                    child.attrSet("src", urljoin(asset_base_url.rstrip("/") + "/", src))
                child.attrSet("style", css["img"])
    return str(_MD.renderer.render(tokens, _MD.options, {})).strip()


def text_of(markdown: str) -> str:
    """Plain text of a short Markdown text (a workshop pitch)."""
    return to_text(_MD.parse(markdown))


def _to_mjml(tokens: list[Token], styles: Styles) -> str:
    out: list[str] = []
    pending: list[Token] = []  # consecutive text blocks share one mj-text (fewer table rows, smaller HTML)

    def flush() -> None:
        if pending:
            rendered = str(_MD.renderer.render(pending, _MD.options, {})).strip()
            out.append(f'<mj-text css-class="nl-text">\n{rendered}\n</mj-text>')
            pending.clear()

    i = 0
    while i < len(tokens):
        tok = tokens[i]
        if tok.type == "hr":
            flush()
            out.append(f'<mj-divider border-width="1px" border-color="{styles.muted}" padding="16px 24px" />')
            i += 1
            continue
        if tok.type == "paragraph_open" and tokens[i + 1].type == "inline":
            found = _standalone_image(tokens[i + 1])
            if found:
                flush()
                image, href = found
                attrs = {
                    "src": str(image.attrGet("src") or ""),
                    "alt": _alt(image),
                    "padding": "8px 24px 24px 24px",
                    "fluid-on-mobile": "true",
                }
                if image.attrGet("width"):  # never stretched past its own width (MJML fills the column)
                    attrs["width"] = f"{image.attrGet('width')}px"
                if image.attrGet("title"):
                    attrs["title"] = str(image.attrGet("title"))
                if href:
                    attrs["href"] = href
                joined = " ".join(f'{k}="{html.escape(v, quote=True)}"' for k, v in attrs.items())
                out.append(f"<mj-image {joined} />")
                i += 3
                continue
        # a whole top-level block, from its opening token to the matching close
        j = i
        if tok.nesting == 1:
            depth = 0
            while True:
                depth += tokens[j].nesting
                j += 1
                if depth == 0:
                    break
        else:
            j = i + 1
        pending.extend(tokens[i:j])
        i = j
    flush()
    return "\n".join(out)


def _inline_text(tok: Token) -> str:
    parts: list[str] = []
    hrefs: list[tuple[str, int]] = []
    for child in tok.children or []:
        t = child.type
        if t in {"text", "code_inline", "html_inline"}:
            parts.append(child.content)
        elif t == "softbreak":
            parts.append(" ")
        elif t == "hardbreak":
            parts.append("\n")
        elif t == "link_open":
            hrefs.append((str(child.attrGet("href") or ""), len(parts)))
        elif t == "link_close" and hrefs:
            href, start = hrefs.pop()
            label = "".join(parts[start:])
            if href and label.strip() != href and label.strip() != href.removeprefix("mailto:"):
                parts.append(f" ({href})")
        elif t == "image":
            alt = _alt(child)
            parts.append(f"[{alt}]" if alt else "[image]")
    return "".join(parts)


def to_text(tokens: list[Token]) -> str:
    """Plain text for the text/plain part: paragraphs unwrapped, links as `text (url)`."""
    blocks: list[tuple[str | None, bool]] = []  # (text, inside a list): list lines join with a single newline
    prefix: list[str] = []  # "> " per open block quote
    lists: list[list[int | None]] = []  # per open list: the next number (None for bullets)
    item_marker: str | None = None
    heading = False
    for tok in tokens:
        t = tok.type
        if t == "blockquote_open":
            prefix.append("> ")
        elif t == "blockquote_close":
            prefix.pop()
        elif t == "heading_open":
            heading = True
        elif t in {"bullet_list_open", "ordered_list_open"}:
            if not lists:
                blocks.append((None, False))  # a new list does not run on from the previous one
            lists.append([None] if t == "bullet_list_open" else [int(tok.attrGet("start") or 1)])
        elif t in {"bullet_list_close", "ordered_list_close"}:
            lists.pop()
        elif t == "list_item_open":
            counter = lists[-1]
            if counter[0] is None:
                item_marker = "- "
            else:
                item_marker = f"{counter[0]}. "
                counter[0] += 1
        elif t == "inline":
            text = _inline_text(tok)
            if lists:
                indent = "   " * (len(lists) - 1)
                marker = item_marker if item_marker is not None else "  "
                text = indent + marker + text.replace("\n", "\n" + indent + "  ")
                item_marker = None
            if heading:
                text += "\n" + "-" * min(len(text), 72)
                heading = False
            lead = "".join(prefix)
            blocks.append(("\n".join(lead + line for line in text.split("\n")), bool(lists)))
        elif t in {"code_block", "fence"}:
            lead = "".join(prefix)
            code = tok.content.rstrip("\n").split("\n")
            blocks.append(("\n".join(lead + "    " + line for line in code), False))
        elif t == "hr":
            blocks.append(("* * *", False))
    out: list[str] = []
    previous_in_list = False
    for block, in_list in blocks:
        if block is None:
            previous_in_list = False
            continue
        if out and in_list and previous_in_list:
            out[-1] += "\n" + block
        else:
            out.append(block)
        previous_in_list = in_list
    return "\n\n".join(out)
