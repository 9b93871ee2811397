"""`newsletter render`: the seed issue in both parts, escaping, output files, golden render."""

from __future__ import annotations

import html
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from conftest import SEED_SLUG, Cli, seed_paragraphs

GOLDEN = Path(__file__).parent / "golden" / SEED_SLUG


class _Text(HTMLParser):
    """Visible text of an HTML document, one block per element boundary."""

    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []
        self.skip = 0

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag in ("style", "script", "title"):
            self.skip += 1
        self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("style", "script", "title"):
            self.skip -= 1
        self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self.skip:
            self.parts.append(data)


def html_blocks(document: str) -> list[str]:
    parser = _Text()
    parser.feed(document)
    return [" ".join(b.split()) for b in "".join(parser.parts).split("\n") if b.strip()]


def text_blocks(text: str) -> list[str]:
    return [" ".join(b.split()) for b in text.split("\n") if b.strip()]


def test_render_writes_the_three_files_and_reports_size(cli: Cli, project: Path) -> None:
    result = cli("render")
    assert result.exit_code == 0, result.output
    out = project / "build" / SEED_SLUG
    for name in ("email.html", "email.txt", "email.mjml"):
        assert (out / name).stat().st_size > 0
        assert name in result.output
    size = (out / "email.html").stat().st_size
    assert f"({size} bytes" in result.output
    assert "NEWSLETTER_SECRET is not set" in result.output


def test_out_option_and_explicit_issue(cli: Cli, tmp_path: Path) -> None:
    result = cli("render", "--issue", SEED_SLUG, "--out", str(tmp_path / "site"))
    assert result.exit_code == 0, result.output
    assert (tmp_path / "site" / SEED_SLUG / "email.html").is_file()


def test_every_seed_paragraph_appears_in_both_parts(cli: Cli, project: Path) -> None:
    assert cli("render").exit_code == 0
    out = project / "build" / SEED_SLUG
    htm = html_blocks((out / "email.html").read_text(encoding="utf-8"))
    txt = text_blocks((out / "email.txt").read_text(encoding="utf-8"))
    paragraphs = seed_paragraphs()
    assert len(paragraphs) == 18
    for paragraph in paragraphs:
        assert paragraph in htm, f"missing from HTML: {paragraph[:60]}"
        assert paragraph in txt, f"missing from text: {paragraph[:60]}"
    # the title is the email's heading
    assert re.search(r"<h1[^>]*>Micro Moments of Connection: The Heartbeat of Life</h1>",
                     (out / "email.html").read_text(encoding="utf-8"))


def test_workshop_pitch_is_in_the_cta_not_the_body(project: Path) -> None:
    from newsletter.build import load
    from newsletter.render import render_issue

    config, issue = load(project, SEED_SLUG)
    rendered = render_issue(config, issue)
    headline = "Triumph After Trauma: An Invitation to Heal and Grow"
    assert headline not in rendered.body.mjml and "Triumph After Trauma" not in rendered.body.text  # not the essay
    assert rendered.html.count(headline) == 1 and headline in rendered.text  # the CTA block, in both parts
    essay_end = rendered.body.text.split("\n\n")[-1][:30]
    assert rendered.html.index(headline) > rendered.html.index(essay_end)  # after the essay


def test_cta_button_links_to_the_registration_url(cli: Cli, project: Path) -> None:
    cli("render")
    out = project / "build" / SEED_SLUG
    page = (out / "email.html").read_text(encoding="utf-8")
    button = re.search(r'<a href="([^"]+)"[^>]*>\s*Reserve your place\s*</a>', page)
    assert button and button.group(1) == "https://example.org/workshops/from-trauma-to-triumph"
    text = (out / "email.txt").read_text(encoding="utf-8")
    assert "Reserve your place: https://example.org/workshops/from-trauma-to-triumph" in text
    assert "Betrayal, Forgiveness, and Redemption: A Path of Compassionate Self-Discovery" in text


def test_html_essentials(cli: Cli, project: Path) -> None:
    cli("render")
    page = (project / "build" / SEED_SLUG / "email.html").read_text(encoding="utf-8")
    assert '<html lang="en"' in page
    assert 'name="viewport"' in page
    assert "@media only screen and (min-width:480px)" in page
    assert '<meta name="color-scheme" content="light dark"' in page
    assert "prefers-color-scheme: dark" in page
    preheader = re.search(r'<div style="display:none;[^"]*">([^<]*)</div>', page)
    assert preheader and "heartbeat of life" in html.unescape(preheader.group(1))
    assert "font-size:16px" in page
    assert "<mj-" not in page and "{{" not in page and "%%" not in page
    assert "/unsubscribe/u1." in page
    sizes = {int(n) for n in re.findall(r"font-size:\s*(\d+)px", page)}
    assert all(n in (0, 1) or n >= 13 for n in sizes), sizes  # 0/1 px: MJML's layout and the hidden preheader
    assert len(page.encode()) < 102 * 1024


def test_text_part_reads_as_text(cli: Cli, project: Path) -> None:
    cli("render")
    text = (project / "build" / SEED_SLUG / "email.txt").read_text(encoding="utf-8")
    assert text.startswith("Micro Moments · 26 November 2026\n")
    assert "Micro Moments of Connection: The Heartbeat of Life\n=====" in text
    assert "Presence is the Key\n-------------------" in text
    assert re.search(r"Unsubscribe: https://letters\.example\.org/unsubscribe/u1\.\S+", text)
    assert "TODO: postal address" in text
    assert "<" not in text and "&amp;" not in text


def test_values_are_escaped_where_they_land(cli: Cli, project: Path) -> None:
    yaml_path = project / "issues" / SEED_SLUG / "issue.yaml"
    yaml_path.write_text(yaml_path.read_text().replace(
        'title: "Micro Moments of Connection: The Heartbeat of Life"', 'title: "Rest & <b>Repair</b>"'))
    body = project / "issues" / SEED_SLUG / "body.md"
    body.write_text("A <script>x</script> & [link](https://micromoments.net/?a=1&b=2).\n")
    result = cli("render")
    assert result.exit_code == 0, result.output
    out = project / "build" / SEED_SLUG
    page = (out / "email.html").read_text(encoding="utf-8")
    assert "Rest &amp; &lt;b&gt;Repair&lt;/b&gt;" in page
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert 'href="https://micromoments.net/?a=1&amp;b=2"' in page
    text = (out / "email.txt").read_text(encoding="utf-8")
    assert "Rest & <b>Repair</b>" in text
    assert "link (https://micromoments.net/?a=1&b=2)" in text


def test_markdown_features_become_email_safe_mjml(cli: Cli, project: Path) -> None:
    issue = project / "issues" / SEED_SLUG
    (issue / "photo.jpg").write_bytes(b"\xff\xd8\xff\xe0fake")
    (issue / "body.md").write_text(
        "## A heading\n\nSome *emphasis*, **strong** and a [link](https://micromoments.net/x).\n\n"
        "![Sunlight through trees](photo.jpg)\n\n---\n\n- one\n- two\n\n1. first\n2. second\n\n"
        "> a quoted line\n", encoding="utf-8")
    assert cli("render").exit_code == 0
    out = project / "build" / SEED_SLUG
    mjml = (out / "email.mjml").read_text(encoding="utf-8")
    assert ('<mj-image src="https://letters.example.org/archive/micro-moments-of-connection/photo.jpg" '
            'alt="Sunlight through trees"') in mjml
    assert "<mj-divider" in mjml
    assert '<blockquote style="' in mjml and '<ul style="' in mjml and '<ol style="' in mjml
    assert '<a href="https://micromoments.net/x" style="color:' in mjml
    text = (out / "email.txt").read_text(encoding="utf-8")
    assert "- one\n- two" in text and "1. first\n2. second" in text
    assert "> a quoted line" in text
    assert "link (https://micromoments.net/x)" in text
    assert "[Sunlight through trees]" in text


def test_author_signs_the_essay(cli: Cli, project: Path) -> None:
    meta = project / "issues" / SEED_SLUG / "issue.yaml"
    meta.write_text(meta.read_text() + "author: Maya Hart\n")
    assert cli("render").exit_code == 0
    out = project / "build" / SEED_SLUG
    assert "— Maya Hart</p>" in (out / "email.html").read_text()
    assert "all along.\n\n— Maya Hart\n" in (out / "email.txt").read_text()


def test_a_missing_image_is_a_warning_naming_the_file_meant(cli: Cli, project: Path) -> None:
    issue = project / "issues" / SEED_SLUG
    (issue / "IMG_4821.JPG").write_bytes(b"\xff\xd8\xff\xe0fake")
    (issue / "body.md").write_text("A line.\n\n![The hills at dawn](img_4821.jpg)\n\n![A cup](cup.png)\n",
                                   encoding="utf-8")
    result = cli("render")
    assert result.exit_code == 0, result.output  # rendered all the same: check is the gate
    warnings = [line for line in result.output.splitlines() if "not found beside body.md" in line]
    assert warnings == [
        f"warning: {issue / 'body.md'}:3: image file `img_4821.jpg` not found beside body.md: did you mean "
        "IMG_4821.JPG?",
        f"warning: {issue / 'body.md'}:5: image file `cup.png` not found beside body.md"]
    (issue / "body.md").write_text("![The hills at dawn](IMG_4821.JPG)\n", encoding="utf-8")
    assert "not found" not in cli("render").output


def test_the_welcome_email_has_no_date_line(cli: Cli, project: Path) -> None:
    assert cli("render", "--issue", "welcome").exit_code == 0
    out = project / "build" / "welcome"
    text = (out / "email.txt").read_text(encoding="utf-8")
    assert text.startswith("Micro Moments\n\n")  # not "Micro Moments · 26 November 2026"
    page = (out / "email.html").read_text(encoding="utf-8")
    assert html_blocks(page)[1] == "Micro Moments"  # the line above the title (after the hidden preheader)
    assert "November 2026" not in page and "November 2026" not in text
    cli("render")  # an issue of the week keeps its date line
    assert "Micro Moments · 26 November 2026" in html_blocks((project / "build" / SEED_SLUG / "email.html").read_text())


def test_newest_issue_by_date_is_the_default(cli: Cli, project: Path) -> None:
    older = project / "issues" / "an-older-essay"
    older.mkdir()
    (older / "issue.yaml").write_text("title: Older\ndate: 2020-01-01\nworkshop: from-trauma-to-triumph\n")
    (older / "body.md").write_text("Old words.\n")
    result = cli("render")
    assert f"build/{SEED_SLUG}" in result.output or SEED_SLUG in result.output
    assert not (project / "build" / "an-older-essay").exists()


def test_golden_render(cli: Cli, project: Path, request: pytest.FixtureRequest) -> None:
    """The reviewed render of the seed; mjml-python is pinned, so any change here is deliberate."""
    assert cli("render").exit_code == 0
    out = project / "build" / SEED_SLUG
    for name in ("email.mjml", "email.html", "email.txt"):
        produced = (out / name).read_text(encoding="utf-8")
        golden = GOLDEN / name
        if request.config.getoption("--update-golden"):
            golden.parent.mkdir(parents=True, exist_ok=True)
            golden.write_text(produced, encoding="utf-8")
        assert golden.exists(), "run pytest --update-golden once and review tests/golden/"
        assert produced == golden.read_text(encoding="utf-8"), f"{name} differs from tests/golden/"


def test_the_same_layouts_in_two_folders_compile_once_and_each_names_its_own_file(tmp_path: Path) -> None:
    """Compiled layouts are shared in memory by name and source; a runtime error still points at the layout
    of the folder being rendered, not at the folder that compiled it first."""
    from conftest import FILLED_CONFIG, new_project

    from newsletter.config import load_config
    from newsletter.errors import LayoutError
    from newsletter.issue import load_issue
    from newsletter.render import render_issue

    paths = []
    for name in ("first", "second"):
        root = new_project(tmp_path / name, FILLED_CONFIG)
        path = root / "layouts" / "email.mjml"
        text = path.read_text(encoding="utf-8").replace("{{ colors.accent | css }}", "{{ odd | css }}", 1)
        path.write_text(text.replace("<mjml ", "{% set odd = 'a{' %}<mjml ", 1), encoding="utf-8")
        config = load_config(root)
        with pytest.raises(LayoutError) as err:
            render_issue(config, load_issue(root, SEED_SLUG, config))
        paths.append((err.value.path, err.value.line))
    assert paths == [(tmp_path / "first" / "layouts" / "email.mjml", 16),
                     (tmp_path / "second" / "layouts" / "email.mjml", 16)]
