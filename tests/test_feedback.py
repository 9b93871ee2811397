"""Feedback that guides: stats before events arrive, status of each run and who has the issue, placeholders
in the essay, check's output in one stream."""

from __future__ import annotations

from pathlib import Path

from conftest import SEED_SLUG, Cli

from newsletter.journal import Journal, journal_path

ISSUE = Path("issues") / SEED_SLUG


def _sent(root: Path, emails: list[str], *, finished: bool = True) -> None:
    with Journal(journal_path(root, SEED_SLUG)) as j:
        j.run(readers=len(emails), resend_in_doubt=False)
        j.batch(1, emails)
        j.attempt(1, 1)
        j.ok(1, 202, "m1")
        if finished:
            j.end()


def test_stats_right_after_a_send_says_why_there_is_nothing_yet(ready_project: Path) -> None:
    _sent(ready_project, ["a@readers.net", "b@readers.net"])
    out = Cli(ready_project)("stats", "--issue", SEED_SLUG).output
    assert "sent                 2" in out
    assert ("no delivery events yet: is `newsletter serve` reachable at https://letters.micromoments.net/webhooks/"
            "sendgrid and the Event Webhook on? (see README)") in out
    assert "0.0%" not in out


def test_status_says_when_and_who(ready_project: Path) -> None:
    _sent(ready_project, ["a@readers.net", "b@readers.net"])
    (ready_project / "subscribers" / "subscribers.csv").write_text(
        "email\na@readers.net\nb@readers.net\nc@readers.net\n")
    out = Cli(ready_project)("status", "--issue", SEED_SLUG, "--readers").output
    assert "(1 send run(s))" in out and "run:      started 20" in out and ", ended 20" in out
    assert "sent:       2 reader(s)" in out and "pending:    1 reader(s)" in out
    assert out.split("who has it:\n")[1].split() == ["a@readers.net", "b@readers.net"]


def test_placeholders_in_the_essay_are_errors_whatever_newsletter_yaml_says(ready_project: Path) -> None:
    cfg = ready_project / "newsletter.yaml"
    cfg.write_text("# links like https://example.org/x are placeholders until filled in\n" + cfg.read_text())
    body = ready_project / ISSUE / "body.md"
    body.write_text(body.read_text() + "\n\nWrite to me@example.org or see [my page](https://example.org/me).\n")
    line = len(body.read_text().splitlines())
    out = Cli(ready_project)("check", "--no-spam").output
    assert f"body.md:{line}: placeholder address `me@example.org` in the essay" in out
    assert f"body.md:{line}: link to the reserved example domain `example.org`: https://example.org/me" in out


def test_new_issues_ship_no_placeholder_link(ready_project: Path) -> None:
    cli = Cli(ready_project)
    assert cli("new", "The Quiet Courage of Rest").exit_code == 0
    body = (ready_project / "issues" / "the-quiet-courage-of-rest" / "body.md").read_text()
    assert "example.org" not in body and "example.com" not in body


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
