"""`newsletter check`: the pre-send gate, one line per problem, exit 1 on any error."""

from __future__ import annotations

from pathlib import Path

from conftest import SEED_SLUG, Cli

ISSUE = Path("issues") / SEED_SLUG


def test_seed_placeholders_are_errors(cli: Cli) -> None:
    result = cli("check", "--issue", SEED_SLUG)
    assert result.exit_code == 1
    out = result.output
    assert "newsletter.yaml:5: `base_url` uses the reserved example domain `letters.example.org`" in out
    assert "newsletter.yaml:6: `sender.email` uses the reserved example domain" in out
    assert "newsletter.yaml:8: `postal_address` is still a placeholder" in out
    assert "`workshops.from-trauma-to-triumph.register_url` uses the reserved example domain" in out
    assert all(line.startswith(("error:", "warning:", "note:", SEED_SLUG)) for line in out.splitlines())


def test_filled_config_passes(ready_project: Path) -> None:
    result = Cli(ready_project)("check")
    assert result.exit_code == 0, result.output
    assert "0 error(s)" in result.output


def _body(project: Path, text: str) -> None:
    (project / ISSUE / "body.md").write_text(text, encoding="utf-8")


def test_http_and_example_links_and_missing_alt(ready_project: Path) -> None:
    (ready_project / ISSUE / "pic.png").write_bytes(b"\x89PNG")
    _body(ready_project, "Read [this](http://micromoments.net/a).\n\nAnd [that](https://example.com/b).\n\n"
          "![](pic.png)\n\n![A view](missing.png)\n\n[rel](notes.html)\n")
    result = Cli(ready_project)("check")
    out = result.output
    assert result.exit_code == 1
    assert "body.md:1: `http://` link: use https:// (http://micromoments.net/a)" in out
    assert "body.md:3: link to the reserved example domain `example.com`" in out
    assert "body.md:5: image `pic.png` has no alt text" in out
    assert "body.md:7: image file `missing.png` not found" in out
    assert "body.md:9: relative link `notes.html`" in out


def test_a_wrong_case_image_name_is_an_error_naming_the_file(ready_project: Path) -> None:
    (ready_project / ISSUE / "IMG_4821.JPG").write_bytes(b"\xff\xd8\xff\xe0fake")
    _body(ready_project, "A line.\n\n![The hills at dawn](img_4821.jpg)\n")
    result = Cli(ready_project)("check")
    assert result.exit_code == 1
    errors = [line for line in result.output.splitlines() if "not found beside body.md" in line]
    assert errors == [f"error: {ready_project / ISSUE / 'body.md'}:3: image file `img_4821.jpg` not found beside "
                      "body.md: did you mean IMG_4821.JPG?"]  # once: render's warning is not repeated


def test_long_subject_and_missing_preheader_are_warnings(ready_project: Path) -> None:
    path = ready_project / ISSUE / "issue.yaml"
    text = path.read_text().replace("subject: Micro moments of connection", "subject: " + "x" * 80)
    text = "\n".join(line for line in text.splitlines() if not line.startswith("preheader"))
    path.write_text(text + "\n")
    result = Cli(ready_project)("check")
    assert result.exit_code == 0, result.output
    assert "warning:" in result.output and "subject is 80 characters" in result.output
    assert "no `preheader`" in result.output


def test_long_preheader_is_a_warning(ready_project: Path) -> None:
    path = ready_project / ISSUE / "issue.yaml"
    path.write_text(path.read_text().replace("preheader: The smallest", "preheader: " + "y" * 160 + " The"))
    result = Cli(ready_project)("check")
    assert "preheader is" in result.output and result.exit_code == 0


def test_layout_without_unsubscribe_or_address(ready_project: Path) -> None:
    footer = ready_project / "layouts" / "footer.mjml"
    footer.write_text(footer.read_text().replace('href="{{ unsubscribe_url }}"', 'href="{{ view_url }}"')
                      .replace("{{ newsletter.postal_address }}", ""))
    result = Cli(ready_project)("check")
    assert result.exit_code == 1
    assert "no unsubscribe link in the HTML part" in result.output
    assert "the postal address is missing from the HTML part" in result.output


def test_oversized_html_is_an_error(ready_project: Path) -> None:
    words = " ".join(f"word{i}" for i in range(2000))
    _body(ready_project, "\n\n".join([words] * 8))
    result = Cli(ready_project)("check")
    assert result.exit_code == 1
    assert "Gmail clips messages at 102 KB" in result.output


def test_mistyped_mjml_tag_is_caught(ready_project: Path) -> None:
    footer = ready_project / "layouts" / "footer.mjml"
    footer.write_text(footer.read_text().replace("<mj-text", "<mj-textt").replace("</mj-text>", "</mj-textt>"))
    result = Cli(ready_project)("check")
    assert result.exit_code == 1
    assert "unknown MJML tag `<mj-textt>`" in result.output


def test_mjml_python_traps_are_flagged(ready_project: Path) -> None:
    email = ready_project / "layouts" / "email.mjml"
    email.write_text(email.read_text().replace('<mj-section padding="0px" />', '<mj-section padding="0 24px" />')
                     .replace("<mj-all ", '<mj-body background-color="#000000" />\n      <mj-all ')
                     .replace("<mj-style>", '<mj-style inline="inline">'))
    result = Cli(ready_project)("check", "--no-spam")
    assert 'padding="0 24px": write 0px, not 0' in result.output
    assert "<mj-body> inside <mj-attributes> is ignored" in result.output
    assert '<mj-style inline="inline"> is not inlined' in result.output


def test_low_contrast_brand_colours(ready_project: Path) -> None:
    path = ready_project / "newsletter.yaml"
    path.write_text(path.read_text() + 'brand: {colors: {text: "#cccccc"}}\n')
    result = Cli(ready_project)("check")
    assert result.exit_code == 1
    assert "colours `text` on `content` have contrast" in result.output


def test_new_creates_next_weeks_bundle(cli: Cli, project: Path) -> None:
    result = cli("new", "The Quiet Courage of Rest")
    assert result.exit_code == 0, result.output
    folder = project / "issues" / "the-quiet-courage-of-rest"
    meta = (folder / "issue.yaml").read_text()
    assert 'title: "The Quiet Courage of Rest"' in meta
    assert "date: 2026-12-03" in meta  # a week after the seed
    assert "workshop: from-trauma-to-triumph" in meta
    assert (folder / "body.md").is_file()
    # the new issue renders, and check flags its TODOs
    assert cli("render", "--issue", "the-quiet-courage-of-rest").exit_code == 0
    checked = cli("check", "--issue", "the-quiet-courage-of-rest")
    assert checked.exit_code == 1 and "placeholder text `TODO` left in the essay" in checked.output
    again = cli("new", "The Quiet Courage of Rest")
    assert again.exit_code == 1 and "already exists" in again.output
