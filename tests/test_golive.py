"""README's *Going live*, followed as far as it goes offline: the folder in git on the laptop, cloned on the
server, `serve` running there (a real process on loopback), a send to the fake SendGrid whose image check passes
against that `serve`, the archive served, a reader unsubscribing, a backup copied off, a restore on a new server."""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

from conftest import FILLED_CONFIG, REPO, SECRET, SEED_SLUG, Cli, configure, wait_for
from fake_sendgrid import FakeSendGrid
from helpers import free_port
from test_archive import with_photo

from newsletter.cli import main

GIT = ["git", "-c", "user.name=Writer", "-c", "user.email=writer@micromoments.net", "-c", "init.defaultBranch=main"]


def git(folder: Path, *args: str) -> str:
    return subprocess.run([*GIT, "-C", str(folder), *args], check=True, capture_output=True, text=True).stdout


def get(port: int, path: str, method: str = "GET", body: bytes = b"",
        headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(method, path, body=body or None, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def doctor(cli: Cli) -> dict[str, dict[str, str]]:
    """`newsletter doctor --json`, by check id."""
    return {c["check"]: c for c in json.loads(cli("doctor", "--json").output)["checks"]}


def start_serve(root: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    """`newsletter serve` as systemd runs it: its own process, on loopback; waits for /healthz."""
    exe = str(Path(sys.executable).parent / "newsletter")
    with open(log, "wb") as out:
        proc = subprocess.Popen([exe, "serve", "--root", str(root), "--host", "127.0.0.1", "--port", str(port)],
                                stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "NEWSLETTER_SECRET": SECRET})

    def up() -> bool:
        assert proc.poll() is None, log.read_text()
        try:
            return get(port, "/healthz")[0] == 200
        except OSError:
            return False

    wait_for(up, 30, "serve to start")
    return proc


def laptop_folder(tmp_path: Path, base_url: str) -> Path:
    """The newsletter's folder on the writer's laptop, in git, with this week's issue and a photo in it."""
    laptop = tmp_path / "laptop"
    laptop.mkdir()
    for name in ("issues", "layouts", "subscribers"):
        shutil.copytree(REPO / name, laptop / name)
    shutil.copy(REPO / ".gitignore", laptop / ".gitignore")
    (laptop / "newsletter.yaml").write_text(FILLED_CONFIG.replace("https://letters.micromoments.net", base_url))
    configure(laptop)
    with_photo(laptop, public=False)
    git(laptop, "init", "-q")
    git(laptop, "add", "-A")
    git(laptop, "commit", "-qm", "This week's issue")
    return laptop


def test_going_live_walkthrough(tmp_path: Path, fake: FakeSendGrid, env: dict[str, str]) -> None:
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"  # stands for https://letters.micromoments.net behind Caddy
    laptop = laptop_folder(tmp_path, base_url)
    # 1. The server clones the folder; readers are added there, and git never sees them.
    server = tmp_path / "srv" / "newsletter"
    git(tmp_path, "clone", "-q", str(laptop), str(server))
    on_server = Cli(server)
    for address in ("ada@readers.net", "bob@readers.net", "cy@readers.net"):
        assert on_server("subscribers", "add", address).exit_code == 0
    assert git(server, "status", "--porcelain") == ""  # subscribers/ holds readers now, and git ignores it
    if "doctor" in main.commands:  # README: Before your first send (its DNS checks have their own tests)
        checks = doctor(on_server)
        assert checks["list-private"]["status"] == "ok" and checks["backup"]["status"] == "warn"
    # 2. `serve` runs there (systemd in README); its health check answers.
    proc = start_serve(server, port, tmp_path / "serve.log")
    try:
        # 3. A test copy, then the send: the photo's URL answers from this serve, so neither warns nor refuses.
        test_copy = on_server("send", "--issue", SEED_SLUG, "--to", "writer@micromoments.net", "--no-sync")
        assert test_copy.exit_code == 0 and "warning" not in test_copy.output, test_copy.output
        sent = on_server("send", "--issue", SEED_SLUG, "--yes", "--no-sync")
        assert sent.exit_code == 0, sent.output
        assert "sent: 3 reader(s)" in sent.output and "rebuilt (1 issue(s))" in sent.output
        assert set(fake.delivered) == {"ada@readers.net", "bob@readers.net", "cy@readers.net",
                                       "writer@micromoments.net"}
        # 4. The archive is served at the URLs the email uses: the page, the photo, the index, the feed.
        email = fake.requests[-1]
        html_part = next(c["value"] for c in email["content"] if c["type"] == "text/html")
        view = f"{base_url}/archive/{SEED_SLUG}/"
        photo = re.search(r'src="([^"]+dawn\.jpg)"', html_part)
        assert f'href="{view}"' in html_part and photo and photo.group(1) == f"{view}dawn.jpg"
        status, headers, page = get(port, urlsplit(view).path)
        assert status == 200 and b"Dawn over the hills" in page and headers["content-type"].startswith("text/html")
        status, headers, image = get(port, urlsplit(photo.group(1)).path)
        assert status == 200 and headers["content-type"] == "image/jpeg" and image[:2] == b"\xff\xd8"
        status, _, index = get(port, "/archive/")
        assert status == 200 and f'href="{SEED_SLUG}/"'.encode() in index
        assert get(port, "/archive/feed.xml")[0] == 200
        # 5. A reader unsubscribes with one click, through serve.
        ada = next(p for p in email["personalizations"] if p["to"][0]["email"] == "ada@readers.net")
        one_click = urlsplit(ada["headers"]["List-Unsubscribe"][1:-1]).path
        assert get(port, one_click, "POST", b"List-Unsubscribe=One-Click",
                   {"Content-Type": "application/x-www-form-urlencoded"})[0] == 200
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    # 6. The daily backup, copied off the server (rsync in README).
    made = on_server("backup")
    assert made.exit_code == 0, made.output
    backup = next((server / "backups").glob("*.tar.gz"))
    assert backup.stat().st_mode & 0o777 == 0o600 and git(server, "status", "--porcelain") == ""
    if "doctor" in main.commands:
        assert doctor(on_server)["backup"]["status"] == "ok"
    offsite = tmp_path / "laptop-backups" / backup.name
    offsite.parent.mkdir()
    shutil.copy2(backup, offsite)
    # 7. A new server: clone, restore, and it knows what the old one knew.
    new_server = tmp_path / "srv2" / "newsletter"
    git(tmp_path, "clone", "-q", str(laptop), str(new_server))
    restored = Cli(new_server)
    assert restored("restore", str(offsite)).exit_code == 0
    for command in (("subscribers", "count"), ("send", "--issue", SEED_SLUG, "--dry-run")):
        before, after = on_server(*command), restored(*command)
        assert before.exit_code == after.exit_code == 0, before.output + after.output
        assert [line for line in before.output.splitlines() if not line.startswith("elapsed:")] == [
            line for line in after.output.splitlines() if not line.startswith("elapsed:")]
    count = restored("subscribers", "count").output
    assert "active:     2" in count and "unsubscribe 1" in count
    dry_run = restored("send", "--issue", SEED_SLUG, "--dry-run").output
    assert "already sent earlier: 2" in dry_run  # the journal came back: nobody would get it twice
