"""issues/<slug>/ -> Issue (issue.py): what of an issue folder may be read, rendered or published."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import SEED_SLUG, Cli

from newsletter.errors import IssueError
from newsletter.images import publish_issue_images
from newsletter.issue import issue_files, list_slugs, load_issue, safe_file, unsafe_files


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
