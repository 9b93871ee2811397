"""check.py: `newsletter check`, the pre-send gate: one line per problem in one stream, errors first, exit 1 on any
error."""

from __future__ import annotations

from pathlib import Path

import pytest
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


def test_placeholders_in_the_essay_are_errors_whatever_newsletter_yaml_says(ready_project: Path) -> None:
    cfg = ready_project / "newsletter.yaml"
    cfg.write_text("# links like https://example.org/x are placeholders until filled in\n" + cfg.read_text())
    body = ready_project / ISSUE / "body.md"
    body.write_text(body.read_text() + "\n\nWrite to me@example.org or see [my page](https://example.org/me).\n")
    line = len(body.read_text().splitlines())
    out = Cli(ready_project)("check", "--no-spam").output
    assert f"body.md:{line}: placeholder address `me@example.org` in the essay" in out
    assert f"body.md:{line}: link to the reserved example domain `example.org`: https://example.org/me" in out


def test_check_output_is_one_stream_in_order(ready_project: Path) -> None:
    from click.testing import CliRunner
    from PIL import Image

    from newsletter.cli import main

    Image.new("RGB", (40, 30)).save(ready_project / ISSUE / "dot.png")
    body = ready_project / ISSUE / "body.md"
    body.write_text(body.read_text() + "\n\nSee [this](http://insecure.readers.net/).\n\n![a dot](dot.png)\n")
    result = CliRunner().invoke(main, ["check", "--root", str(ready_project), "--no-spam"])
    lines = result.stdout.splitlines()
    assert lines[-1] == f"{SEED_SLUG}: 1 error(s), 0 warning(s)"
    levels = [line.split(":")[0] for line in lines[:-1]]
    assert levels == sorted(levels, key=["error", "warning", "note"].index)
    assert "error" in levels and "note" in levels
    assert result.stderr == ""


@pytest.mark.parametrize("src", ["../../../../etc/passwd", "/etc/shadow", "../../newsletter.yaml",
                                 "sub/../../other-issue.png"])
def test_images_outside_the_issue_folder_are_errors(ready_project: Path, src: str) -> None:
    body = ready_project / ISSUE / "body.md"
    body.write_text(body.read_text() + f"\n\n![a picture]({src})\n", encoding="utf-8")
    line = len(body.read_text().splitlines())
    result = Cli(ready_project)("check", "--no-spam")
    assert result.exit_code == 1, result.output
    assert f"body.md:{line}: image `{src}` is outside issues/{SEED_SLUG}/" in result.output


def test_an_image_beside_the_essay_is_fine(ready_project: Path) -> None:
    (ready_project / ISSUE / "dawn.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 32)
    body = ready_project / ISSUE / "body.md"
    body.write_text(body.read_text() + "\n\n![the sun rising over the hills](dawn.png)\n", encoding="utf-8")
    result = Cli(ready_project)("check", "--no-spam")
    assert "outside" not in result.output and "not found" not in result.output, result.output
