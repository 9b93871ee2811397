"""issues/<slug>/ -> Issue (issue.py): what of an issue folder may be read, rendered or published; the issue you
are in; files an essay names that are missing; every problem of issue.yaml at once; `newsletter new`."""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from conftest import SEED_SLUG, Cli

from newsletter.cli import main
from newsletter.config import load_config
from newsletter.errors import IssueError, UsageError
from newsletter.images import publish_issue_images
from newsletter.issue import (
    MissingFile,
    chosen_slug,
    create_issue,
    issue_files,
    issue_here,
    list_slugs,
    load_issue,
    local_name,
    missing_file,
    required_slug,
    safe_file,
    unsafe_files,
)


def _folder(project: Path) -> Path:
    return project / "issues" / SEED_SLUG


def test_a_link_to_the_subscriber_list_is_never_published(cli: Cli, project: Path, tmp_path: Path) -> None:
    (project / "subscribers" / "subscribers.csv").write_text("email,name\nada@readers.net,Ada\n")
    folder = _folder(project)
    os.symlink("../../subscribers/subscribers.csv", folder / "chart.svg")
    os.symlink("/etc/passwd", folder / "photo.jpg")
    os.mkfifo(folder / "pipe.png")
    assert {p.name for p in unsafe_files(folder)} == {"chart.svg", "photo.jpg", "pipe.png"}
    assert "chart.svg" not in {p.name for p in issue_files(folder)}
    assert safe_file(folder, "chart.svg") is None and safe_file(folder, "../issue.yaml") is None
    assert safe_file(folder, "body.md") == folder / "body.md"
    result = cli("check", "--issue", SEED_SLUG)
    assert result.exit_code == 1
    for name in ("chart.svg", "photo.jpg", "pipe.png"):
        assert f"issues/{SEED_SLUG}/{name}: a link or not a regular file" in result.output, result.output
    out = tmp_path / "published"
    publish_issue_images(folder, out)
    assert not out.exists() or not any(out.iterdir())
    site = tmp_path / "site"
    archived = cli("archive", "--out", str(site))
    assert archived.exit_code == 1
    assert f"a link or not a regular file in an issue folder: issues/{SEED_SLUG}/chart.svg" in archived.output
    assert "nothing was published" in archived.output and not site.exists()
    (folder / "chart.svg").unlink()
    (folder / "photo.jpg").unlink()
    (folder / "pipe.png").unlink()
    (folder / "diagram.svg").write_text('<svg xmlns="http://www.w3.org/2000/svg"/>')
    assert cli("archive", "--out", str(site)).exit_code == 0
    assert (site / SEED_SLUG / "diagram.svg").read_text().startswith("<svg")


def test_linked_issue_files_and_folders_are_refused(project: Path) -> None:
    folder = _folder(project)
    body = folder / "body.md"
    real = project / "elsewhere.md"
    real.write_text(body.read_text())
    body.unlink()
    os.symlink(real, body)
    with pytest.raises(IssueError, match="a link or not a regular file"):
        load_issue(project, SEED_SLUG)
    os.symlink(folder, project / "issues" / "linked-issue")
    assert "linked-issue" not in list_slugs(project)
    with pytest.raises(IssueError, match="the issue folder is a link"):
        load_issue(project, "linked-issue")


# -- the issue you are in ----------------------------------------------------------------------------------------
def test_issue_here_is_the_folder_under_issues_you_stand_in(project: Path, tmp_path: Path) -> None:
    folder = _folder(project)
    (folder / "photos" / "raw").mkdir(parents=True)
    (project / "issues" / ".drafts").mkdir()
    assert issue_here(project, folder) == SEED_SLUG
    assert issue_here(project, folder / "photos" / "raw") == SEED_SLUG
    assert issue_here(project, project / "issues" / "welcome") == "welcome"
    for elsewhere in (project, project / "issues", project / "issues" / ".drafts", project / "layouts", tmp_path):
        assert issue_here(project, elsewhere) is None, elsewhere
    # another newsletter's issue folder is not an issue of this one (--root given from there)
    other = tmp_path / "other"
    (other / "issues" / "essay").mkdir(parents=True)
    assert issue_here(project, other / "issues" / "essay") is None
    assert chosen_slug(project, "welcome", folder) == "welcome"  # --issue wins
    assert chosen_slug(project, None, project) is None  # the command's own default (the newest) applies
    assert required_slug(project, None, folder) == SEED_SLUG
    with pytest.raises(UsageError, match=r"which issue\? pass --issue SLUG") as caught:
        required_slug(project, None, project)
    assert caught.value.exit_code == 2 and SEED_SLUG in caught.value.hint


def _second_issue(project: Path) -> Path:
    """A newer issue than the seed (2026-12-03): the one commands take by default outside an issue folder."""
    folder = create_issue(project, "The Quiet Courage of Rest", load_config(project), date=dt.date(2026, 12, 3))
    (folder / "body.md").write_text("A quiet essay.\n")
    return folder


def _run(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_render_and_check_work_on_the_issue_you_are_in(ready_project: Path, monkeypatch) -> None:
    newer = _second_issue(ready_project)
    (_folder(ready_project) / "photos").mkdir()
    monkeypatch.chdir(_folder(ready_project) / "photos")
    rendered = _run("render")
    assert rendered.exit_code == 0, rendered.output
    assert (ready_project / "build" / SEED_SLUG / "email.html").is_file()
    assert not (ready_project / "build" / newer.name).exists()
    checked = _run("check", "--no-spam")
    assert checked.output.splitlines()[-1].startswith(f"{SEED_SLUG}: "), checked.output
    assert _run("check", "--no-spam", "--issue", newer.name).output.splitlines()[-1].startswith(newer.name)
    monkeypatch.chdir(ready_project)  # elsewhere: the newest by date, as before
    assert _run("check", "--no-spam").output.splitlines()[-1].startswith(f"{newer.name}: ")


def test_commands_that_need_an_issue_take_the_one_you_are_in(sender: Cli, ready_project: Path,
                                                            monkeypatch) -> None:
    _second_issue(ready_project)
    monkeypatch.chdir(_folder(ready_project))
    status = _run("status")
    assert status.exit_code == 0 and status.output.startswith(f"issue:      {SEED_SLUG} "), status.output
    dry = _run("send", "--dry-run")
    assert dry.exit_code == 0 and f"issue:      {SEED_SLUG}\n" in dry.output, dry.output
    stats = _run("stats", "--json")  # one issue, not the table of every sent issue
    assert stats.exit_code == 0 and json.loads(stats.output)["issue"] == SEED_SLUG, stats.output
    monkeypatch.chdir(ready_project)  # elsewhere --issue stays required: never the newest, for a send
    assert isinstance(json.loads(_run("stats", "--json").output), list)
    for args in (("send", "--dry-run"), ("status",), ("unschedule",)):
        result = _run(*args)
        assert result.exit_code == 2, (args, result.output)
        assert "which issue? pass --issue SLUG, or run the command inside the issue's folder" in result.output
    assert "default: the one whose folder you are in" in " ".join(_run("send", "--help").output.split())


# -- missing images ------------------------------------------------------------------------------------------------
def test_a_missing_file_suggests_the_one_meant(project: Path) -> None:
    folder = _folder(project)
    (folder / "IMG_4821.JPG").write_bytes(b"jpeg")
    (folder / "sunrise-over-hills.png").write_bytes(b"png")
    os.symlink("/etc/passwd", folder / "linked.jpg")
    assert missing_file(folder, "IMG_4821.JPG") is None
    assert missing_file(folder, "linked.jpg") is None  # not missing: check names it as a link
    wrong_case = missing_file(folder, "img_4821.jpg")
    assert wrong_case is not None and wrong_case.did_you_mean == "IMG_4821.JPG"
    assert wrong_case.message() == "image file `img_4821.jpg` not found beside body.md: did you mean IMG_4821.JPG?"
    assert missing_file(folder, "sunrise-over-hils.png") == MissingFile("sunrise-over-hils.png",
                                                                        "sunrise-over-hills.png")
    assert missing_file(folder, "body.mb") == MissingFile("body.mb")  # the essay's own files are never meant
    assert missing_file(folder, "portrait.jpg") == MissingFile("portrait.jpg")
    assert local_name("my%20photo.jpg?v=2") == "my photo.jpg"
    assert [local_name(u) for u in ("../x.jpg", "/etc/passwd", "a/b.jpg", "https://x.org/a.jpg", "")] == [None] * 5


# -- every problem of issue.yaml at once -------------------------------------------------------------------------
def test_every_problem_of_an_issue_is_reported_together(project: Path) -> None:
    folder = _folder(project)
    (folder / "issue.yaml").write_text(
        "title: [a, list]\nsubjcet: S\ndate: next tuesday\nworkshop: from-trauma\npublic: yes please\n"
        "welcome: 'true'\n", encoding="utf-8")
    (folder / "body.md").write_text("  \n")
    with pytest.raises(IssueError) as caught:
        load_issue(project, SEED_SLUG, load_config(project))
    lines = str(caught.value).splitlines()
    yaml_path, body_path = folder / "issue.yaml", folder / "body.md"
    assert lines == [
        "7 problems:",
        f"{yaml_path}:1: `title` must be text, not a list",
        f"{yaml_path}:2: unknown key `subjcet` (did you mean `subject`?)",
        f"{yaml_path}:3: `date` must be a date written YYYY-MM-DD, got 'next tuesday'",
        f"{yaml_path}:4: unknown workshop `from-trauma` (did you mean `from-trauma-to-triumph`?)",
        f"{yaml_path}:5: `public` must be true or false, got 'yes please'",
        f"{yaml_path}:6: `welcome` must be true or false, got 'true'",
        f"{body_path}: body.md is empty",
    ]


def test_a_single_problem_keeps_its_line_and_hint(project: Path) -> None:
    (_folder(project) / "issue.yaml").write_text("subject: S\ndate: 2026-11-26\n", encoding="utf-8")
    with pytest.raises(IssueError) as caught:
        load_issue(project, SEED_SLUG)
    err = caught.value
    assert err.message.startswith("no `title`") and err.path == _folder(project) / "issue.yaml"
    assert 'title: "My essay"' in err.hint


def test_new_issues_ship_no_placeholder_link(ready_project: Path) -> None:
    cli = Cli(ready_project)
    assert cli("new", "The Quiet Courage of Rest").exit_code == 0
    body = (ready_project / "issues" / "the-quiet-courage-of-rest" / "body.md").read_text()
    assert "example.org" not in body and "example.com" not in body


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
