"""The email's own CSS: values checked before they go into it, font stacks, and its rules parsed (tinycss2)."""

from __future__ import annotations

import html as html_lib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

# What could end a declaration, a block, the <style> element or an HTML comment around it, or start an
# escape or an entity: a value holding one of these could rewrite the rules around it.
_FORBIDDEN = (
    (";", "`;` would end the declaration"),
    ("{", "`{` would open a block"),
    ("}", "`}` would end the block"),
    ("<", "`<` could close the <style> element"),
    ("\\", "a backslash starts a CSS escape"),
    ("/*", "`/*` would open a CSS comment"),
    ("-->", "`-->` would close the HTML comment around Outlook's styles"),
    ("&", "`&` would be read as an HTML entity inside an attribute"),
)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_BALANCED_QUOTES = re.compile(r"""(?:[^'"]|"[^"]*"|'[^']*')*""")
_STRING = re.compile(r"""("([^"]*)")|('[^']*')""")


class CssValueError(ValueError):
    """A value that cannot go into CSS as it is; the message says why."""


def _single_quoted(match: re.Match[str]) -> str:
    if match.group(3):
        return match.group(3)
    inner = match.group(2)
    if "'" in inner:
        raise CssValueError(f'the name "{inner}" holds an apostrophe: write it without one')
    return f"'{inner}'"


def css_value(value: object) -> str:
    """`value` checked for CSS and written with single quotes: the same CSS, and it can then stand both inside
    <style> (where entities are never decoded) and inside a double-quoted HTML attribute, unescaped.
    Raises CssValueError when it could end a declaration or a block."""
    text = str(value).strip()
    for needle, why in _FORBIDDEN:
        if needle in text:
            raise CssValueError(why)
    if _CONTROL.search(text):
        raise CssValueError("a line break or control character would end the declaration")
    if not _BALANCED_QUOTES.fullmatch(text):
        raise CssValueError("a quote is not closed")
    return _STRING.sub(_single_quoted, text)


# A family name without quotes: one or more CSS identifiers ("Times New Roman", serif).
# (`[^\W\d]` is a letter or `_` in any script: a range up to U+10FFFF would cost 30 ms to compile at every start)
_IDENT = r"-?[^\W\d][\w-]*"
_UNQUOTED_FAMILY = re.compile(rf"{_IDENT}(?:\s+{_IDENT})*")
_QUOTED_FAMILY = re.compile(r"""("[^"]+"|'[^']+')""")
_COMMA_OUTSIDE_QUOTES = re.compile(r""",(?=(?:[^'"]|"[^"]*"|'[^']*')*$)""")


def font_stack_problem(stack: str) -> str | None:
    """Why `stack` is not a CSS font stack (family names, quoted or not, between commas), or None."""
    try:
        css_value(stack)
    except CssValueError as exc:
        return str(exc)
    for family in (part.strip() for part in _COMMA_OUTSIDE_QUOTES.split(stack.strip())):
        if not family:
            return "a family name is missing between commas"
        if family in ('""', "''"):
            return "a family name in quotes is empty"
        if not (_QUOTED_FAMILY.fullmatch(family) or _UNQUOTED_FAMILY.fullmatch(family)):
            return f"`{family}` is not a family name: put quotes around a name that is not plain words"
    return None


# -- the rendered email's CSS ---------------------------------------------------------------------------------
_STYLE_BLOCK = re.compile(r"<style\b[^>]*>(.*?)</style\s*>", re.IGNORECASE | re.DOTALL)
_TAG = re.compile(r"<[A-Za-z][^<>]*>")
_STYLE_ATTR = re.compile(r"""\sstyle\s*=\s*(?:"([^"]*)"|'([^']*)')""", re.IGNORECASE)
_ENTITY = re.compile(r"&(?:#[0-9]+|#[xX][0-9a-fA-F]+|[A-Za-z][A-Za-z0-9]*);")
# Appended to what is parsed: when it does not come back as the last rule or declaration, the text ended
# inside an unclosed block, bracket or string (tinycss2 closes those silently at the end).
_END_RULE, _END_DECLARATION = "\n#nl-end{}", ";nl-end:0"
_BLOCK_AT_RULES = {"media", "supports", "document", "container", "layer"}


@dataclass(frozen=True)
class CssFault:
    """One problem in the rendered email's CSS. `snippet` is the text it is about and `context` the same with
    what surrounds it (the declarations either side, or its line): the text its layout is found by.
    `in_attribute`: found in a `style` attribute, where entities are decoded (so compare decoded text)."""

    message: str
    snippet: str
    in_attribute: bool
    context: str = ""


def css_faults(html: str) -> list[CssFault]:
    """Every <style> block and inline `style` attribute of `html` parsed: entities in <style>, parse errors,
    declarations without a value, text ending inside an open block."""
    faults: list[CssFault] = []
    for block in _STYLE_BLOCK.findall(html):
        entities = [CssFault(f"the HTML entity `{entity.group(0)}` inside <style>: mail clients never decode "
                             "entities there, so the declaration breaks (put values into CSS with `| css`)",
                             line.strip(), False)
                    for line in block.splitlines() if (entity := _ENTITY.search(line))]
        # An entity's `;` ends its declaration early: the parse errors that follow are its doing, not news.
        faults += entities or _stylesheet_faults(block)
    seen: set[str] = set()
    for tag in _TAG.findall(html):
        for double, single in _STYLE_ATTR.findall(tag):
            style = html_lib.unescape(double or single)
            if style not in seen:  # MJML repeats the same style on many elements: parse each once
                seen.add(style)
                faults += _attribute_faults(style)
    return faults


# Parsed once per process for each distinct text: every render of the same layouts repeats the same <style>
# blocks and style attributes (`serve` and `preview` check again and again, a test suite a hundred times).
@lru_cache(maxsize=64)
def _stylesheet_faults(text: str) -> tuple[CssFault, ...]:
    import tinycss2

    nodes = tinycss2.parse_stylesheet(text + _END_RULE, skip_comments=True, skip_whitespace=True)
    last = nodes[-1] if nodes else None
    faults = _rule_faults(text, nodes[:-1] if _is_end_rule(last) else nodes)
    if not _is_end_rule(last):
        faults.append(CssFault("a <style> block ends inside an unclosed `{`, bracket or string",
                               _tail(text), False))
    return tuple(faults)


def _is_end_rule(node: Any) -> bool:
    import tinycss2

    return getattr(node, "type", "") == "qualified-rule" and tinycss2.serialize(node.prelude).strip() == "#nl-end"


def _rule_faults(text: str, nodes: Iterable[Any]) -> list[CssFault]:
    import tinycss2

    faults: list[CssFault] = []
    for node in nodes:
        if node.type == "error":
            faults.append(_parse_fault(text, node, "<style>", False))
        elif node.type == "qualified-rule":
            faults += [_parse_fault(text, e, "<style>", False) for e in _token_errors(node.prelude)]
            faults += _declaration_faults(text, node.content, "<style>", False)
        elif node.type == "at-rule" and node.content is not None:
            if node.lower_at_keyword in _BLOCK_AT_RULES:
                faults += _rule_faults(text, tinycss2.parse_rule_list(node.content, skip_comments=True,
                                                                      skip_whitespace=True))
            else:  # @font-face, @page: declarations
                faults += _declaration_faults(text, node.content, "<style>", False)
    return faults


@lru_cache(maxsize=4096)
def _attribute_faults(style: str) -> tuple[CssFault, ...]:
    import tinycss2

    nodes = tinycss2.parse_blocks_contents(style + _END_DECLARATION, skip_comments=True, skip_whitespace=True)
    last: Any = nodes[-1] if nodes else None
    ended = getattr(last, "type", "") == "declaration" and last.lower_name == "nl-end"
    faults = _declaration_faults(style, nodes[:-1] if ended else nodes, "a style attribute", True, parsed=True)
    if not ended:
        faults.append(CssFault("a style attribute ends inside an unclosed bracket or string", _tail(style), True))
    return tuple(faults)


def _declaration_faults(text: str, content: Any, place: str, in_attribute: bool, *,
                        parsed: bool = False) -> list[CssFault]:
    import tinycss2

    nodes = content if parsed else tinycss2.parse_blocks_contents(content, skip_comments=True, skip_whitespace=True)
    faults: list[CssFault] = []
    for node in nodes:
        if node.type == "error":
            faults.append(_parse_fault(text, node, place, in_attribute))
        elif node.type == "declaration":
            faults += [_parse_fault(text, e, place, in_attribute) for e in _token_errors(node.value)]
            if not any(token.type not in ("whitespace", "comment") for token in node.value):
                snippet, context = _around(text, node.source_line, node.source_column, in_attribute)
                faults.append(CssFault(f"CSS in {place}: `{node.name}` has no value", snippet, in_attribute, context))
        elif node.type == "qualified-rule" and in_attribute:
            faults.append(CssFault("CSS in a style attribute holds a `{…}` block: only declarations belong there",
                                   tinycss2.serialize(node.prelude).strip(), True))
        elif node.type == "qualified-rule":  # a nested rule
            faults += _declaration_faults(text, node.content, place, in_attribute)
    return faults


def _token_errors(tokens: Iterable[Any]) -> Iterable[Any]:
    """Parse errors the tokenizer left among component values (bad strings and URLs, an unmatched `)`)."""
    for token in tokens:
        if token.type == "error":
            yield token
        for inner in ("arguments", "content"):
            nested = getattr(token, inner, None)
            if isinstance(nested, list):
                yield from _token_errors(nested)


def _parse_fault(text: str, error: Any, place: str, in_attribute: bool) -> CssFault:
    snippet, context = _around(text, error.source_line, error.source_column, in_attribute)
    return CssFault(f"CSS that does not parse in {place}: `{snippet}` (a declaration is `property: value;`)",
                    snippet, in_attribute, context)


def _around(text: str, line: int, column: int, in_attribute: bool) -> tuple[str, str]:
    """(the declaration at a line and column of `text`, that declaration with its surroundings): in an
    attribute the declarations either side, in a <style> block its line."""
    lines = text.split("\n")
    offset = min(sum(len(row) + 1 for row in lines[:line - 1]) + column - 1, len(text))
    start = max(text.rfind(mark, 0, offset) for mark in ";{}") + 1
    ends = [i for i in (text.find(mark, offset) for mark in ";{}") if i >= 0]
    end = min(ends, default=len(text))
    snippet = " ".join(text[start:end].split())
    row = " ".join(lines[min(line, len(lines)) - 1].split())
    if in_attribute:
        before = text.rfind(";", 0, max(start - 1, 0)) + 1
        after = text.find(";", end + 1)
        context = " ".join(text[before:after if after >= 0 else len(text)].split())
    else:
        context = row
    return (snippet or row)[:120], context


def _tail(text: str) -> str:
    return " ".join(text.split())[-60:]


# -- which layout a piece of CSS came from ---------------------------------------------------------------------
@dataclass(frozen=True)
class LayoutText:
    """A layout's source and what it renders to for this issue (Jinja2 output, before MJML)."""

    path: Path
    source: str
    rendered: str


def _flat(text: str, decode: bool) -> str:
    return " ".join((html_lib.unescape(text) if decode else text).split())


def find_origin(fault: CssFault, layouts: Sequence[LayoutText]) -> tuple[Path, int | None] | None:
    """The first layout whose rendered text holds the fault's snippet, and the line of its source it comes
    from when that can be told; None when no layout holds it."""
    # A few characters (`color`) are in every layout: only a snippet this long tells one layout from another.
    needles = [_flat(text, fault.in_attribute) for text in (fault.context, fault.snippet) if len(text) >= 8]
    for needle in needles:
        for layout in layouts:
            # A <style> block comes from <mj-style> (or a <style> the layout writes): the same text in an
            # attribute elsewhere is not where it came from.
            haystack = layout.rendered if fault.in_attribute else "\n".join(_MJ_STYLE.findall(layout.rendered))
            if needle in _flat(haystack, fault.in_attribute):
                return layout.path, _source_line(needle, layout, fault.in_attribute)
    return None


_MJ_STYLE = re.compile(r"<(?:mj-)?style\b[^>]*>(.*?)</(?:mj-)?style\s*>", re.IGNORECASE | re.DOTALL)
_JINJA = re.compile(r"(\{\{.*?\}\}|\{%.*?%\}|\{#.*?#\})")


def _source_line(needle: str, layout: LayoutText, decode: bool) -> int | None:
    """The source line the snippet is written on; else the one whose text, with each `{{ … }}` taken as a
    wildcard, renders to the output line holding it."""
    source_lines = layout.source.splitlines()
    for number, line in enumerate(source_lines, 1):
        if needle in _flat(line, decode):
            return number
    produced = next((line for line in layout.rendered.splitlines() if needle in _flat(line, decode)), None)
    if produced is None:
        return None
    for number, line in enumerate(source_lines, 1):
        parts = _JINJA.split(line.strip())
        literal = "".join(part for i, part in enumerate(parts) if i % 2 == 0)
        if "{{" not in line or not literal.strip():
            continue
        pattern = "".join(re.escape(part) if i % 2 == 0 else ".*?" for i, part in enumerate(parts))
        if re.fullmatch(pattern, produced.strip(), re.DOTALL):
            return number
    return None
