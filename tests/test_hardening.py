"""Hostile and broken input: each ends in exit 1 or 2 with one plain line naming the culprit, quickly,
without a traceback, a secret in the output, or anything sent."""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

import pytest
from conftest import SEED_SLUG, Cli, record

ISSUE = Path("issues") / SEED_SLUG


def _bomb(levels: int = 9) -> str:
    lines = ["l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for i in range(1, levels + 1):
        lines.append(f"b{i}: &l{i} {{" + ", ".join(f"k{j}: *l{i - 1}" for j in range(9)) + "}")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("where", ["newsletter.yaml", "issue.yaml"])
def test_yaml_alias_bombs_are_refused_at_once(cli: Cli, project: Path, where: str) -> None:
    path = project / "newsletter.yaml" if where == "newsletter.yaml" else project / ISSUE / "issue.yaml"
    before = path.read_text()
    path.write_text(before + _bomb())
    start = time.perf_counter()
    result = cli("render")
    assert time.perf_counter() - start < 1.0
    assert result.exit_code == 1, result.output
    line = len(before.splitlines()) + 1
    assert f"{where}:{line}: YAML anchors/aliases are not supported" in result.output
    assert "internal error" not in result.output and "MemoryError" not in result.output


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


@pytest.mark.parametrize(("content", "message", "line"), [
    (b"email,name\nada@readers.net,Ada\nbob@readers.net,Jos\xe9\n", "not UTF-8 text", 3),
    (b"email,name\nada@readers.net,Ada\nbob@readers.net,\"" + b"x" * 200_000 + b"\"\n", "a field is too long", 3),
])
@pytest.mark.parametrize("command", [("subscribers", "count"), ("subscribers", "list"),
                                     ("send", "--issue", SEED_SLUG, "--dry-run")])
def test_broken_bytes_in_the_list_name_the_line(ready_project: Path, monkeypatch, content: bytes, message: str,
                                                line: int, command: tuple[str, ...]) -> None:
    monkeypatch.setenv("NEWSLETTER_SECRET", "s3cret")
    (ready_project / "subscribers" / "subscribers.csv").write_bytes(content)
    result = Cli(ready_project)(*command, "--no-spam") if command[0] == "check" else Cli(ready_project)(*command)
    assert result.exit_code == 1, result.output
    assert f"subscribers.csv:{line}: {message}" in result.output
    assert ("re-save as UTF-8" if "UTF-8" in message else "the field is too long") in result.output
    assert "internal error" not in result.output


@pytest.mark.parametrize(("key", "says"), [
    ("SG.abc\nSG.def", "SENDGRID_API_KEY contains a line break"),
    ("SG.abc def", "SENDGRID_API_KEY contains a space or other whitespace"),
    ("SG.abc\x01def", "not printable ASCII"),
])
@pytest.mark.parametrize("debug", [False, True])
def test_a_malformed_api_key_is_named_never_printed(ready_project: Path, monkeypatch, key: str, says: str,
                                                     debug: bool) -> None:
    from click.testing import CliRunner

    from newsletter.cli import main

    monkeypatch.setenv("NEWSLETTER_SECRET", "s3cret")
    monkeypatch.setenv("SENDGRID_API_KEY", key)
    monkeypatch.setenv("SENDGRID_API_URL", "http://127.0.0.1:9")  # nothing listens: nothing can be sent
    Cli(ready_project)("subscribers", "add", "ada@readers.net")
    argv = ["send", "--root", str(ready_project), "--issue", SEED_SLUG, "--yes"] + (["--debug"] if debug else [])
    result = CliRunner().invoke(main, argv)
    text = result.output + "".join(__import__("traceback").format_exception(result.exception)
                                   if result.exception and not isinstance(result.exception, SystemExit) else [])
    assert result.exit_code != 0
    assert says in text
    assert "abc" not in text and "def" not in text and "Bearer" not in text


def test_files_others_read_follow_the_umask_and_address_files_are_private(ready_project: Path, tmp_path: Path,
                                                                          monkeypatch) -> None:
    from newsletter.archive import build_archive
    from newsletter.build import build
    from newsletter.journal import Journal, journal_path
    from newsletter.ledger import ledger_path
    from newsletter.subscribers import add_subscriber

    old = os.umask(0o022)
    try:
        (ready_project / ISSUE / "issue.yaml").write_text(
            (ready_project / ISSUE / "issue.yaml").read_text() + "public: true\n")
        site = build_archive(ready_project, tmp_path / "site")
        rendered = build(ready_project, SEED_SLUG, tmp_path / "build")
        add_subscriber(ready_project, "ada@readers.net")
        record(ledger_path(ready_project), "bob@readers.net", "unsubscribe")
        with Journal(journal_path(ready_project, SEED_SLUG)) as j:
            j.run(readers=0, resend_in_doubt=False)
        from newsletter.ledger import load_ledger
        from newsletter.webhook import EventLog

        EventLog(ready_project).record([{"email": "cy@readers.net", "event": "open", "sg_event_id": "x"}],
                                       load_ledger(ready_project))
    finally:
        os.umask(old)

    def mode(p: Path) -> int:
        return stat.S_IMODE(p.stat().st_mode)

    published = [site.out_dir / "index.html", site.feed, site.out_dir / SEED_SLUG / "index.html",
                 *rendered.paths.values()]
    for p in published:
        assert mode(p) == 0o644, (p, oct(mode(p)))
    private = [ready_project / "subscribers" / "subscribers.csv", ledger_path(ready_project),
               journal_path(ready_project, SEED_SLUG), ready_project / "subscribers" / "events.jsonl"]
    for p in private:
        assert mode(p) in (0o600, 0o640), (p, oct(mode(p)))
