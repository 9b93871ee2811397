"""cli.py, the adapter: options parsed the same wherever `--root` stands, usage errors exit 2, `--debug` lets the
error's traceback through. What each command prints is tested with the module that computes it."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import SEED_SLUG, Cli

ISSUE = Path("issues") / SEED_SLUG


def test_root_before_or_after_the_verb(project: Path) -> None:
    from click.testing import CliRunner

    from newsletter.cli import main

    runner = CliRunner()
    assert runner.invoke(main, ["subscribers", "--root", str(project), "add", "a@readers.net"]).exit_code == 0
    assert runner.invoke(main, ["subscribers", "add", "--root", str(project), "b@readers.net"]).exit_code == 0
    assert (project / "subscribers" / "subscribers.csv").read_text().split()[1:] == ["a@readers.net,", "b@readers.net,"]


def test_debug_shows_the_traceback(cli: Cli, project: Path) -> None:
    (project / ISSUE / "body.md").unlink()
    from newsletter.errors import IssueError

    with pytest.raises(IssueError):
        cli("render", "--debug")


def test_usage_error_exits_2(cli: Cli) -> None:
    result = cli("render", "--no-such-option")
    assert result.exit_code == 2
