"""`newsletter backup` / `restore`: a consistent private snapshot of subscribers/, taken while readers unsubscribe,
put back faithfully; unsafe archives refused; git never sees readers' data."""

from __future__ import annotations

import csv
import io
import json
import re
import shutil
import subprocess
import sys
import tarfile
import threading
from pathlib import Path

import pytest
from conftest import REPO, SEED_SLUG, Cli, readers, wait_for, write_list

from newsletter.ledger import Ledger

NAME = re.compile(r"wrote (\S+) \(")
DATA_FILES = ["events.jsonl", "sendgrid-push.json", f"sends/{SEED_SLUG}.jsonl", "signups.jsonl",
              "subscribers.csv", "sync.json", "unsubscribes.csv"]


def backup(cli: Cli, *args: str) -> Path:
    result = cli("backup", *args)
    assert result.exit_code == 0, result.output
    found = NAME.search(result.output)
    assert found, result.output
    path = Path(found.group(1))
    return path if path.is_absolute() else Path.cwd() / path


def members(path: Path) -> dict[str, bytes]:
    with tarfile.open(path, "r:gz") as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}  # type: ignore[union-attr]


def fill(root: Path, cli: Cli) -> None:
    """Readers' data as the commands leave it: the list, the ledger (with its lock file), a journal, sign-ups,
    events, the push offset and the sync time."""
    write_list(root, readers(5))
    assert cli("unsubscribe", "reader1@readers.net").exit_code == 0
    data = root / "subscribers"
    (data / "sends").mkdir(exist_ok=True)
    (data / "sends" / f"{SEED_SLUG}.jsonl").write_text('{"t":"run","at":"2026-12-01T07:00:00+00:00","readers":4}\n')
    (data / "sends" / f"{SEED_SLUG}.lock").write_text("")
    (data / "signups.jsonl").write_text('{"t":"request","email":"new@readers.net","at":1764572400}\n')
    (data / "events.jsonl").write_text('{"event":"delivered","email":"reader0@readers.net"}\n')
    (data / "sendgrid-push.json").write_text('{"offset": 0}\n')
    (data / "sync.json").write_text('{"last_sync": 1764572400}\n')
    (data / "README.md").write_text("tracked by git\n")


def test_backup_holds_every_data_file_privately(project: Path, cli: Cli) -> None:
    fill(project, cli)
    assert (project / "subscribers" / "unsubscribes.csv.lock").exists()
    first = backup(cli)
    assert first.parent == project / "backups"
    assert re.fullmatch(r"\d{8}T\d{6}Z\.tar\.gz", first.name)
    assert first.stat().st_mode & 0o777 == 0o600
    held = members(first)
    assert sorted(held) == [f"subscribers/{name}" for name in DATA_FILES]  # no locks, no README
    for name in DATA_FILES:
        assert held[f"subscribers/{name}"] == (project / "subscribers" / name).read_bytes()
    with tarfile.open(first, "r:gz") as tar:
        assert {m.mode for m in tar.getmembers()} == {0o600}
    second = backup(cli)  # within the same second: a second file, never the first overwritten
    assert second != first and first.exists() and members(second) == held
    chosen = backup(cli, "--out", str(project.parent / "offsite" / "letters.tar.gz"))
    assert chosen == project.parent / "offsite" / "letters.tar.gz" and members(chosen) == held
    assert not list((project / "backups").glob(".*")) and not list(chosen.parent.glob(".*"))  # no temp files left


def test_backup_with_nothing_to_back_up(cli: Cli, project: Path) -> None:
    result = cli("backup")
    assert result.exit_code == 1 and "nothing to back up" in result.output
    assert not (project / "backups").exists()


# A second process records unsubscribes in a loop through the ledger's one writer (locked, fsynced). Each
# event's detail is large, so one append is a write of 8 KB (two pages) that a reader without the lock can catch
# half done. (It rarely does: the fsync after each write is most of the writer's time. A backup taken without the
# locks passed this test 3 times in 3 with 2000 events of 32 KB, and 8 in 8 with 400 of 8 or 32 KB.)
PAD = 8192
EVENTS = 400  # at most 3.3 MB
WRITER = f"""
import sys
from pathlib import Path
from newsletter.ledger import Event, Kind, Ledger, ledger_path
ledger = Ledger(ledger_path(Path(sys.argv[1])))
stop = Path(sys.argv[2])
for i in range({EVENTS}):
    if stop.exists():  # the test has its backups: stop writing
        break
    ledger.record([Event(f"reader{{i}}@readers.net", Kind.UNSUBSCRIBE, detail="asked by reply " + "x" * {PAD})])
"""


def ledger_rows(data: bytes) -> list[list[str]]:
    """The ledger's rows, each checked whole: five fields, an address, an event."""
    assert data.endswith(b"\n"), data[-80:]
    rows = list(csv.reader(io.StringIO(data.decode("utf-8"))))
    assert rows[0] == ["email", "event", "at", "source", "detail"]
    for row in rows[1:]:
        assert len(row) == 5 and row[1] == "unsubscribe" and row[4] == "asked by reply " + "x" * PAD, row[:4]
    return rows[1:]


def without_timing(output: str) -> str:
    return "\n".join(line for line in output.splitlines() if not line.startswith("elapsed:"))


def test_backups_during_concurrent_unsubscribes_then_restore(sender: Cli, tmp_path: Path) -> None:
    root = sender.root
    write_list(root, readers(100))
    stop = tmp_path / "stop"
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(root), str(stop)])
    ledger = root / "subscribers" / "unsubscribes.csv"
    taken: list[Path] = []
    try:
        wait_for(lambda: ledger.exists() or writer.poll() is not None, 60, "the writer's first line")
        assert ledger.exists(), "the writer wrote nothing"
        while (writer.poll() is None and len(taken) < 4) or not taken:
            taken.append(backup(sender, "--out", str(tmp_path / "during" / f"{len(taken)}.tar.gz")))
    finally:
        stop.touch()
        writer.wait(timeout=60)
    assert writer.returncode == 0
    counts = []
    for path in taken:
        rows = ledger_rows(members(path)["subscribers/unsubscribes.csv"])
        counts.append(len(rows))
        assert [r[0] for r in rows] == [f"reader{i}@readers.net" for i in range(len(rows))]
    assert counts == sorted(counts) and len(taken) >= 3, counts
    assert counts[0] > 0 and any(c < EVENTS for c in counts), counts  # taken while the writer wrote
    # The last backup, put back into a fresh copy of the folder (a new server), gives the same answers.
    final = backup(sender)
    fresh = tmp_path / "fresh"
    shutil.copytree(root, fresh, ignore=shutil.ignore_patterns("subscribers", "backups", "build"))
    (fresh / "subscribers").mkdir()
    restored = Cli(fresh)
    result = restored("restore", str(final))
    assert result.exit_code == 0, result.output
    assert f"restored {len(members(final))} file(s) into" in result.output
    assert (fresh / "subscribers" / "unsubscribes.csv").read_bytes() == ledger.read_bytes()
    assert (fresh / "subscribers" / "unsubscribes.csv").stat().st_mode & 0o777 == 0o600
    assert not Ledger(fresh / "subscribers" / "unsubscribes.csv").problems
    for command in (("subscribers", "count"), ("send", "--issue", SEED_SLUG, "--dry-run")):
        before, after = sender(*command), restored(*command)
        assert before.exit_code == after.exit_code == 0, before.output + after.output
        assert without_timing(before.output) == without_timing(after.output)
    written = sum(1 for line in ledger.read_text().splitlines()[1:])
    active = max(0, 100 - written)  # 100 readers; the writer's first `written` unsubscribed
    assert f"active:     {active}\n" in sender("subscribers", "count").output


def test_a_backup_waits_for_an_append_in_progress(project: Path, cli: Cli, tmp_path: Path) -> None:
    """Deterministic: an append is half written under the ledger's lock when the backup starts; the backup
    waits for it and holds the whole line (a backup that ignored the lock would copy half a line)."""
    from filelock import FileLock

    from newsletter.backup import backup_subscribers

    fill(project, cli)
    ledger = project / "subscribers" / "unsubscribes.csv"
    line = b"reader3@readers.net,unsubscribe,2026-12-01T21:30:00Z,cli,asked by reply\n"
    out = tmp_path / "during.tar.gz"
    with FileLock(f"{ledger}.lock"), open(ledger, "ab") as fh:
        fh.write(line[:20])
        fh.flush()
        worker = threading.Thread(target=backup_subscribers, args=(project, out))
        worker.start()
        worker.join(timeout=1.0)
        assert worker.is_alive() and not out.exists()  # still waiting for the lock
        fh.write(line[20:])
    worker.join(timeout=30)
    assert not worker.is_alive()
    assert members(out)["subscribers/unsubscribes.csv"] == ledger.read_bytes()
    assert members(out)["subscribers/unsubscribes.csv"].endswith(line)


def test_restore_refuses_a_folder_holding_data_unless_forced(project: Path, cli: Cli) -> None:
    fill(project, cli)
    older = backup(cli)
    older_ledger = members(older)["subscribers/unsubscribes.csv"]
    assert cli("unsubscribe", "reader2@readers.net").exit_code == 0
    (project / "subscribers" / "sends" / "later.jsonl").write_text('{"t":"run"}\n')
    newer_ledger = (project / "subscribers" / "unsubscribes.csv").read_bytes()
    refused = cli("restore", str(older))
    assert refused.exit_code == 1
    assert "subscribers/ already holds readers' data (8 file(s)); nothing was restored" in refused.output
    assert "restore --force" in refused.output
    assert (project / "subscribers" / "unsubscribes.csv").read_bytes() == newer_ledger
    forced = cli("restore", "--force", str(older))
    assert forced.exit_code == 0, forced.output
    kept = re.search(r"kept what was there in (\S+-before-restore\.tar\.gz)", forced.output)
    assert kept, forced.output
    saved = members(project / "backups" / Path(kept.group(1)).name)
    assert saved["subscribers/unsubscribes.csv"] == newer_ledger and "subscribers/sends/later.jsonl" in saved
    assert (project / "subscribers" / "unsubscribes.csv").read_bytes() == older_ledger
    assert not (project / "subscribers" / "sends" / "later.jsonl").exists()  # the snapshot, exactly
    assert (project / "subscribers" / "README.md").read_text() == "tracked by git\n"  # git's, left alone
    assert not [p for p in (project / "subscribers").iterdir() if p.name.startswith(".restore")]


def _archive(path: Path, *entries: tarfile.TarInfo) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        good = tarfile.TarInfo("subscribers/subscribers.csv")
        data = b"email,name\nada@readers.net,Ada\n"
        good.size = len(data)
        tar.addfile(good, io.BytesIO(data))
        for entry in entries:
            payload = b"ada@readers.net\n" if entry.isfile() else b""
            entry.size = len(payload)
            tar.addfile(entry, io.BytesIO(payload) if payload else None)
    return path


def _entry(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    return info


@pytest.mark.parametrize(("entry", "says"), [
    (_entry("/tmp/newsletter-restore-test/owned.csv"), "absolute"),
    (_entry("subscribers/../../escaped.csv"), "outside the destination"),
    (_entry("subscribers/../newsletter.yaml"), "is not inside subscribers/"),
    (_entry("subscribers/sends/x.jsonl", tarfile.SYMTYPE, "/etc/passwd"), "absolute"),
    (_entry("subscribers/events.jsonl", tarfile.SYMTYPE, "subscribers.csv"), "is a link or a device"),
    (_entry("subscribers/signups.jsonl", tarfile.LNKTYPE, "subscribers/subscribers.csv"), "is a link or a device"),
    (_entry("subscribers/tty", tarfile.CHRTYPE), "special file"),
    (_entry("newsletter.yaml"), "is not inside subscribers/"),
])
def test_restore_refuses_unsafe_archives(project: Path, cli: Cli, tmp_path: Path, entry: tarfile.TarInfo,
                                         says: str) -> None:
    before = (project / "newsletter.yaml").read_bytes()
    result = cli("restore", str(_archive(tmp_path / "evil.tar.gz", entry)))
    assert result.exit_code == 1 and "refused, nothing was restored" in result.output and says in result.output
    assert list((project / "subscribers").iterdir()) == []
    assert (project / "newsletter.yaml").read_bytes() == before
    assert not Path("/tmp/newsletter-restore-test").exists() and not (project.parent / "escaped.csv").exists()


def test_restore_refuses_what_is_not_a_backup(project: Path, cli: Cli, tmp_path: Path) -> None:
    (tmp_path / "list.csv").write_text("email\nada@readers.net\n")
    for path, says in ((tmp_path / "list.csv", "not a backup made by `newsletter backup`"),
                       (tmp_path / "missing.tar.gz", "no such file")):
        result = cli("restore", str(path))
        assert result.exit_code == 1 and says in result.output, result.output
    with tarfile.open(tmp_path / "other.tar.gz", "w:gz") as tar:
        tar.addfile(tarfile.TarInfo("notes/empty.txt"))
    result = cli("restore", str(tmp_path / "other.tar.gz"))
    assert result.exit_code == 1 and "is not inside subscribers/" in result.output
    assert list((project / "subscribers").iterdir()) == []


def test_git_ignores_the_files_holding_readers(tmp_path: Path) -> None:
    folder = tmp_path / "letters"
    (folder / "subscribers").mkdir(parents=True)
    shutil.copy(REPO / ".gitignore", folder / ".gitignore")
    shutil.copy(REPO / "subscribers" / "README.md", folder / "subscribers" / "README.md")
    private = ["subscribers/subscribers.csv", "subscribers/unsubscribes.csv", "subscribers/unsubscribes.csv.lock",
               "subscribers/signups.jsonl", "subscribers/events.jsonl", f"subscribers/sends/{SEED_SLUG}.jsonl",
               "subscribers/sendgrid-push.json", "subscribers/sync.json", "backups/20261201T213000Z.tar.gz",
               "build/site/index.html"]
    for name in private:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(json.dumps({"email": "ada@readers.net"}))
    git = ["git", "-C", str(folder)]
    subprocess.run([*git, "init", "-q"], check=True)
    ignored = subprocess.run([*git, "check-ignore", *private], capture_output=True, text=True)
    assert ignored.returncode == 0 and ignored.stdout.split() == private
    tracked = subprocess.run([*git, "check-ignore", "subscribers/README.md"], capture_output=True, text=True)
    assert tracked.returncode == 1  # the README explaining the folder is the one file git may hold there
    subprocess.run([*git, "add", "-A"], check=True)  # the writer's habit
    staged = subprocess.run([*git, "ls-files"], capture_output=True, text=True, check=True).stdout.split()
    assert staged == [".gitignore", "subscribers/README.md"]
