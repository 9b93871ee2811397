"""errors.py, and the one place in cli.py that turns them into a message and an exit code: bad input gets one clear
message naming the file (and line), exit 1, never a traceback; text from files is shown escaped."""

from __future__ import annotations

from pathlib import Path

from conftest import SEED_SLUG, Cli

from newsletter.errors import printable

ISSUE = Path("issues") / SEED_SLUG


def run_error(cli: Cli, *args: str) -> str:
    result = cli(*args)
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    return result.output


def write(project: Path, rel: Path | str, text: str) -> None:
    (project / rel).write_text(text, encoding="utf-8")


def test_malformed_issue_yaml_names_file_and_line(cli: Cli, project: Path) -> None:
    write(project, ISSUE / "issue.yaml", 'title: "ok"\ndate: 2026-11-26\nsubject: [unclosed\n')
    out = run_error(cli, "render")
    assert "issue.yaml:" in out and "malformed YAML" in out
    assert "issue.yaml:4" in out or "issue.yaml:3" in out


def test_issue_yaml_that_is_not_a_mapping(cli: Cli, project: Path) -> None:
    write(project, ISSUE / "issue.yaml", "- just\n- a list\n")
    out = run_error(cli, "render")
    assert "issue.yaml:1: expected a mapping" in out and "found a list" in out


def test_unknown_key_suggests_the_close_match(cli: Cli, project: Path) -> None:
    write(project, ISSUE / "issue.yaml", "title: T\ndate: 2026-11-26\nsubjcet: oops\n")
    out = run_error(cli, "render")
    assert "issue.yaml:3: unknown key `subjcet` (did you mean `subject`?)" in out


def test_no_title(cli: Cli, project: Path) -> None:
    write(project, ISSUE / "issue.yaml", "subject: S\ndate: 2026-11-26\n")
    out = run_error(cli, "render")
    assert "issue.yaml" in out and "no `title`" in out


def test_missing_body(cli: Cli, project: Path) -> None:
    (project / ISSUE / "body.md").unlink()
    out = run_error(cli, "render")
    assert "body.md" in out and "missing body.md" in out


def test_unknown_workshop_id(cli: Cli, project: Path) -> None:
    path = project / ISSUE / "issue.yaml"
    path.write_text(path.read_text().replace("workshop: from-trauma-to-triumph", "workshop: from-trauma"))
    out = run_error(cli, "render")
    assert "issue.yaml:5: unknown workshop `from-trauma` (did you mean `from-trauma-to-triumph`?)" in out


def test_unknown_slug_lists_the_issues(cli: Cli) -> None:
    out = run_error(cli, "render", "--issue", "no-such-essay")
    assert "unknown issue `no-such-essay`" in out and SEED_SLUG in out


def test_bad_date(cli: Cli, project: Path) -> None:
    path = project / ISSUE / "issue.yaml"
    path.write_text(path.read_text().replace("date: 2026-11-26", "date: next tuesday"))
    out = run_error(cli, "render")
    assert "issue.yaml:4: `date` must be a date written YYYY-MM-DD" in out


def test_malformed_newsletter_yaml(cli: Cli, project: Path) -> None:
    write(project, "newsletter.yaml", "name: x\n  bad: indentation\n")
    out = run_error(cli, "render")
    assert "newsletter.yaml:" in out and "malformed YAML" in out


def test_newsletter_yaml_not_a_mapping(cli: Cli, project: Path) -> None:
    write(project, "newsletter.yaml", "just a sentence\n")
    out = run_error(cli, "check")
    assert "newsletter.yaml:1: expected a mapping" in out


def test_newsletter_yaml_reports_every_problem_at_once(cli: Cli, project: Path) -> None:
    path = project / "newsletter.yaml"
    text = path.read_text().replace("language: en", "langauge: en").replace("base_url: https://", "base_url: ftp://")
    path.write_text(text + "brand: {colors: {accent: purple}}\n")
    out = run_error(cli, "render")
    assert "3 problems" in out
    assert "newsletter.yaml:4: unknown key `langauge` (did you mean `language`?)" in out
    assert "newsletter.yaml:5: `base_url` must be a full URL" in out
    assert "colour `accent` must be a hex colour" in out


def test_no_newsletter_yaml(cli: Cli, project: Path) -> None:
    (project / "newsletter.yaml").unlink()
    result = cli("render")
    assert result.exit_code == 2, result.output  # a usage error: the command was run on the wrong folder
    assert f"no newsletter.yaml in {project}" in result.output and "--root" in result.output
    assert not (project / "build").exists()


def test_broken_layout_is_named(cli: Cli, project: Path) -> None:
    path = project / "layouts" / "cta.mjml"
    path.write_text(path.read_text().replace("</mj-column>", "", 1))
    out = run_error(cli, "render")
    assert "layouts/cta.mjml" in out and "does not parse" in out


def test_broken_main_layout_is_named(cli: Cli, project: Path) -> None:
    path = project / "layouts" / "email.mjml"
    path.write_text(path.read_text().replace("</mj-head>", "", 1))
    out = run_error(cli, "render")
    assert "layouts/email.mjml" in out and "does not parse" in out


def test_undefined_template_variable_is_named(cli: Cli, project: Path) -> None:
    path = project / "layouts" / "footer.mjml"
    path.write_text(path.read_text().replace("{{ newsletter.postal_address }}", "{{ postal_adress }}"))
    out = run_error(cli, "render")
    assert "layouts/footer.mjml:" in out and "`postal_adress` is not a template variable" in out


def test_template_syntax_error_is_named_with_line(cli: Cli, project: Path) -> None:
    path = project / "layouts" / "email.txt"
    path.write_text(path.read_text() + "{% if %}\n")
    out = run_error(cli, "render")
    assert "layouts/email.txt:" in out and "template syntax error" in out


def test_impossible_date_names_the_line(cli: Cli, project: Path) -> None:
    path = project / ISSUE / "issue.yaml"
    path.write_text(path.read_text().replace("date: 2026-11-26", "date: 2026-02-30"))
    out = run_error(cli, "render")
    assert "issue.yaml:4: invalid value: day is out of range for month" in out


def test_unknown_field_of_a_template_object(cli: Cli, project: Path) -> None:
    path = project / "layouts" / "cta.mjml"
    path.write_text(path.read_text().replace("{{ workshop.headline }}", "{{ workshop.hedline }}"))
    out = run_error(cli, "render")
    assert "layouts/cta.mjml:" in out and "`hedline` is not a field of `Workshop`" in out


def test_printable_shows_control_characters_instead_of_sending_them() -> None:
    osc = "list\x1b]8;;https://evil.example\x07click\x1b]8;;\x07\u202egnp.csv"
    assert printable(osc) == "list\\x1b]8;;https://evil.example\\x07click\\x1b]8;;\\x07\\u202egnp.csv"
    assert printable("two\nlines\x9b", lines=True) == "two\nlines\\x9b"
    assert printable("José Müller, 東京") == "José Müller, 東京"
