"""The email's own CSS: brand values reach <style> unescaped, font stacks, and `check` parsing the CSS."""

from __future__ import annotations

import html as html_lib
import json
import re
from pathlib import Path

import pytest
import tinycss2
from conftest import FILLED_CONFIG, SEED_SLUG, Cli

from newsletter.build import load
from newsletter.config import load_config
from newsletter.css import css_faults
from newsletter.errors import ConfigError, LayoutError
from newsletter.render import render_issue, render_layout

PLAYFAIR = """brand:
  fonts:
    heading: '"Playfair Display", Georgia, serif'
    body: "'Times New Roman', serif"
"""


def _with_brand(root: Path, brand: str) -> None:
    (root / "newsletter.yaml").write_text(FILLED_CONFIG + brand, encoding="utf-8")


def _style_blocks(html: str) -> list[str]:
    return re.findall(r"<style\b[^>]*>(.*?)</style>", html, re.S)


def _inline_styles(html: str) -> list[str]:
    return [html_lib.unescape(s) for tag in re.findall(r"<[a-zA-Z][^<>]*>", html)
            for s in re.findall(r'\sstyle="([^"]*)"', tag)]


def _parse_errors(nodes: list) -> list:
    """Every tinycss2 ParseError at any depth of a rule list, a rule's declarations or a value."""
    found = []
    for node in nodes:
        if node.type == "error":
            found.append(node)
        elif node.type == "qualified-rule":
            found += _parse_errors(node.prelude)
            found += _parse_errors(tinycss2.parse_blocks_contents(node.content, skip_comments=True))
        elif node.type == "at-rule" and node.content is not None:
            found += _parse_errors(tinycss2.parse_rule_list(node.content, skip_comments=True))
        elif node.type == "declaration":
            found += _parse_errors(node.value)
        elif node.type in ("function", "() block", "[] block", "{} block"):
            found += _parse_errors(getattr(node, "arguments", None) or node.content)
    return found


@pytest.mark.parametrize("brand", ["", PLAYFAIR], ids=["seed", "quoted-families"])
def test_the_rendered_css_has_no_entity_and_parses(ready_project: Path, brand: str) -> None:
    _with_brand(ready_project, brand)
    config, issue = load(ready_project, SEED_SLUG)
    html = render_issue(config, issue).html
    blocks, inline = _style_blocks(html), _inline_styles(html)
    assert len(blocks) >= 5 and len(inline) > 50
    for block in blocks:
        assert not re.search(r"&#?\w+;", block), block
        assert _parse_errors(tinycss2.parse_stylesheet(block, skip_comments=True)) == [], block
    for style in set(inline):
        assert _parse_errors(tinycss2.parse_blocks_contents(style, skip_comments=True)) == [], style
    heading = next(b for b in blocks if ".nl-text h1" in b)
    if brand:
        # quotes stay quotes (single, the same CSS), in <style> and in attributes alike
        assert "font-family: 'Playfair Display', Georgia, serif; }" in heading
        assert "font-family:'Playfair Display', Georgia, serif;" in html  # the essay's h1 and h2
        assert "font-family:'Times New Roman', serif;" in html  # the body text, from <mj-attributes>
    else:
        assert "font-family: Georgia, 'Times New Roman', Times, serif; }" in heading
    assert css_faults(html) == []


def test_check_passes_with_quoted_families(ready_project: Path) -> None:
    _with_brand(ready_project, PLAYFAIR)
    result = Cli(ready_project)("check")
    assert result.exit_code == 0, result.output
    assert "CSS" not in result.output


def test_the_confirmation_email_css_parses(ready_project: Path) -> None:
    _with_brand(ready_project, PLAYFAIR)
    html, _ = render_layout(load_config(ready_project), "confirm", {"confirm_url": "https://x.net/c", "first_name": ""})
    assert "font-family:'Playfair Display', Georgia, serif;" in html
    assert css_faults(html) == []


@pytest.mark.parametrize(("layout", "old", "new", "expected"), [
    # a declaration broken in <mj-style>
    ("email.mjml", "font-family: {{ fonts.heading | css }};", "font-family {{ fonts.heading | css }};",
     "layouts/email.mjml:27: CSS that does not parse in <style>: `font-family Georgia, 'Times New Roman'"),
    # ... in an inline style of the email, of the workshop block, a value left out in the footer
    ("email.mjml", "font-size:28px;", "font-size 28px;",
     "layouts/email.mjml:50: CSS that does not parse in a style attribute: `font-size 28px`"),
    ("cta.mjml", "letter-spacing:1px;", "letter-spacing 1px;",
     "layouts/cta.mjml:7: CSS that does not parse in a style attribute: `letter-spacing 1px`"),
    ("footer.mjml", "color:{{ colors.muted | css }};text", "color:;text",
     "layouts/footer.mjml:7: CSS in a style attribute: `color` has no value"),
    # a brand value put into <mj-style> without `| css`: Jinja's HTML escaping breaks it there
    ("email.mjml", "{{ fonts.heading | css }}; }", "{{ fonts.heading }}; }",
     "layouts/email.mjml:27: the HTML entity `&#39;` inside <style>"),
    # a rule left open
    ("email.mjml", "supported-color-schemes: light dark; }", "supported-color-schemes: light dark;",
     "layouts/email.mjml: a <style> block ends inside an unclosed `{`"),
])
def test_a_broken_layout_fails_check_naming_it(ready_project: Path, layout: str, old: str, new: str,
                                               expected: str) -> None:
    path = ready_project / "layouts" / layout
    text = path.read_text(encoding="utf-8")
    assert old in text
    path.write_text(text.replace(old, new, 1), encoding="utf-8")
    result = Cli(ready_project)("check")
    assert result.exit_code == 1
    assert f"error: {ready_project}/{expected}" in result.output, result.output


@pytest.mark.parametrize("value", ["red; x: y", "a{", "a}", "</style>", "\\41", "a\nb", "a /* b", "a & b",
                                   '"open'])
def test_the_css_filter_refuses_what_could_end_a_declaration(ready_project: Path, value: str) -> None:
    path = ready_project / "layouts" / "email.mjml"
    text = path.read_text(encoding="utf-8").replace("{{ colors.accent | css }}", "{{ odd | css }}", 1)
    path.write_text(text.replace("<mjml ", "{% set odd = " + repr(value) + " %}<mjml ", 1), encoding="utf-8")
    config, issue = load(ready_project, SEED_SLUG)
    with pytest.raises(LayoutError) as err:
        render_issue(config, issue)
    assert err.value.path == path and err.value.line == 16
    assert "`| css` refused" in err.value.message


@pytest.mark.parametrize(("stack", "why"), [
    ('"Playfair Display, serif', "a quote is not closed"),
    ("Georgia; color: red", "`;` would end the declaration"),
    ("Georgia,, serif", "a family name is missing between commas"),
    ("12px Georgia, serif", "`12px Georgia` is not a family name"),
    ("Georgia, serif /* x */", "`/*` would open a CSS comment"),
])
def test_malformed_font_stacks_are_refused_at_their_line(tmp_path: Path, stack: str, why: str) -> None:
    # json.dumps writes a YAML double-quoted scalar
    text = FILLED_CONFIG + f"brand:\n  fonts:\n    body: Georgia, serif\n    heading: {json.dumps(stack)}\n"
    (tmp_path / "newsletter.yaml").write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_config(tmp_path)
    assert err.value.line == len(text.splitlines())
    assert err.value.message.startswith(f"font `heading` is not a CSS font stack ({why}")


def test_every_malformed_stack_is_reported_with_the_other_problems(tmp_path: Path) -> None:
    text = FILLED_CONFIG.replace("reply_to: hello@micromoments.net", "reply_to: hello") + (
        "brand:\n  fonts:\n    heading: '\"Playfair Display'\n    body: Georgia,, serif\n")
    (tmp_path / "newsletter.yaml").write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_config(tmp_path)
    lines = str(err.value).splitlines()
    heading = len(FILLED_CONFIG.splitlines()) + 3
    assert lines[0] == "3 problems:"
    assert any(line.endswith(f"newsletter.yaml:{heading}: font `heading` is not a CSS font stack (a quote is not "
                             "closed): '\"Playfair Display'; write family names between commas, e.g. "
                             "'\"Playfair Display\", Georgia, serif'") for line in lines), lines
    assert any(f"newsletter.yaml:{heading + 1}: font `body` is not a CSS font stack (a family name is missing" in line
               for line in lines), lines


@pytest.mark.parametrize(("html", "message"), [
    ('<style>a { color: red </style>', "a <style> block ends inside an unclosed `{`"),
    ('<style>a { color: red; }}</style>', "CSS that does not parse in <style>"),
    ('<style>a { color: ; }</style>', "`color` has no value"),
    ('<p style="color: red; b { x: y }">', "holds a `{…}` block"),
    ('<p style="width: calc(1px">', "a style attribute ends inside an unclosed bracket"),
    ('<p style="background: url(a b)">', "CSS that does not parse in a style attribute: `background: url(a b)`"),
])
def test_css_faults_of_small_documents(html: str, message: str) -> None:
    faults = css_faults(html)
    assert faults and message in faults[0].message, faults
