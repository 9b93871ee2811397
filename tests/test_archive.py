"""archive.py: `newsletter archive` writes the sent (or public) issues' pages and an Atom feed; `serve` hosts them from
build/site when archive_url lies under base_url; a send rebuilds it."""

from __future__ import annotations

import os
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from conftest import FILLED_CONFIG, SEED_SLUG, Cli, readers, seed_paragraphs, write_list
from PIL import Image
from starlette.testclient import TestClient

from newsletter.archive import build_archive, site_dir
from newsletter.config import load_config
from newsletter.issue import load_issue
from newsletter.render import image_urls, render_issue, view_url
from newsletter.web import create_app

ISSUE = Path("issues") / SEED_SLUG


def small_photo(path: Path) -> None:
    """A small JPEG (re-encoding a camera-sized one costs a second of CPU)."""
    Image.new("RGB", (320, 240), (200, 120, 40)).save(path, "JPEG")


def with_photo(root: Path, *, public: bool = True) -> None:
    small_photo(root / ISSUE / "dawn.jpg")
    body = root / ISSUE / "body.md"
    body.write_text(body.read_text(encoding="utf-8") + "\n\n![Dawn over the hills](dawn.jpg)\n", encoding="utf-8")
    if public:  # listed in the archive before it is sent
        with open(root / ISSUE / "issue.yaml", "a", encoding="utf-8") as fh:
            fh.write("public: true\n")


def email_urls(root: Path) -> tuple[str, list[str]]:
    """The email's "view in browser" URL and the archive image URLs it loads."""
    config = load_config(root)
    rendered = render_issue(config, load_issue(root, SEED_SLUG, config))
    view = view_url(config, rendered.issue)
    return view, [u for u in image_urls(rendered.html) if u.startswith(view)]


@pytest.fixture
def site(ready_project: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("NEWSLETTER_SECRET", "archive-test-secret")
    with_photo(ready_project)
    build_archive(ready_project, site_dir(ready_project))
    return ready_project


def client(root: Path) -> TestClient:
    return TestClient(create_app(root), follow_redirects=False)


def test_serve_answers_the_archive_at_the_urls_the_email_uses(site: Path) -> None:
    view, images = email_urls(site)
    assert view == f"https://letters.micromoments.net/archive/{SEED_SLUG}/"
    assert images == [f"{view}dawn.jpg"]
    c = client(site)
    page = c.get(urlsplit(view).path)
    assert page.status_code == 200 and page.headers["content-type"] == "text/html; charset=utf-8"
    assert page.headers["cache-control"] == "public, max-age=300"
    assert "Dawn over the hills" in page.text and "/unsubscribe/" not in page.text
    photo = c.get(urlsplit(images[0]).path)
    assert photo.status_code == 200 and photo.headers["content-type"] == "image/jpeg"
    assert photo.headers["cache-control"] == "public, max-age=2592000"
    assert photo.headers["x-content-type-options"] == "nosniff"
    assert photo.content == (site_dir(site) / SEED_SLUG / "dawn.jpg").read_bytes()
    head = c.head(urlsplit(images[0]).path)
    assert head.status_code == 200 and head.content == b"" and int(head.headers["content-length"]) == len(photo.content)
    index = c.get("/archive/")
    assert index.status_code == 200 and f'href="{SEED_SLUG}/"' in index.text
    feed = c.get("/archive/feed.xml")
    assert feed.status_code == 200 and feed.headers["content-type"] == "application/atom+xml; charset=utf-8"
    assert feed.headers["cache-control"] == "public, max-age=300" and "<feed" in feed.text
    # A folder asked for without its slash is sent to it: the pages' links are relative.
    for bare in ("/archive", f"/archive/{SEED_SLUG}"):
        moved = c.get(bare)
        assert moved.status_code == 301 and moved.headers["location"] == bare + "/"
    # The other routes still answer beside it.
    assert c.get("/healthz").status_code == 200 and c.get("/subscribe").status_code == 200


def test_only_regular_files_inside_build_site_are_served(site: Path) -> None:
    out = site_dir(site)
    (site / "subscribers" / "subscribers.csv").write_text("email,name\nada@readers.net,Ada\n")
    os.symlink(site / "subscribers" / "subscribers.csv", out / "readers.html")
    os.symlink(site / "subscribers", out / "private")
    os.symlink(out / SEED_SLUG / "dawn.jpg", out / "link.jpg")  # a link stays a link, even to a good file
    (out / ".index.html.x1y2").write_text("a write in progress")
    (out / "notes.txt").write_text("not a type the archive publishes")
    (site / "build" / "outside.html").write_text("beside build/site, not in it: ada@readers.net")
    (out / "drafts").mkdir()
    (out / "drafts" / "sky.jpg").write_bytes((out / SEED_SLUG / "dawn.jpg").read_bytes())
    c = client(site)
    for path in ("/archive/readers.html", "/archive/private/subscribers.csv", "/archive/link.jpg",
                 "/archive/.index.html.x1y2", "/archive/notes.txt", "/archive/%2e%2e/outside.html",
                 "/archive/..%2foutside.html", "/archive//etc/passwd", "/archive/drafts/",
                 "/archive/nothing-here/", "/archivefoo", "/archive/feed.xml/x"):
        answer = c.get(path)
        assert answer.status_code == 404, path
        assert "ada@readers.net" not in answer.text and "Index of" not in answer.text
    assert c.get("/archive/drafts/sky.jpg").status_code == 200  # images of an unsent issue: published


def test_the_archive_follows_base_url_and_archive_url(ready_project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NEWSLETTER_SECRET", "archive-test-secret")
    with_photo(ready_project)
    config = ready_project / "newsletter.yaml"
    config.write_text(FILLED_CONFIG.replace("https://letters.micromoments.net", "https://micromoments.net/letters"))
    build_archive(ready_project, site_dir(ready_project))
    view, images = email_urls(ready_project)
    c = client(ready_project)
    assert urlsplit(images[0]).path == f"/letters/archive/{SEED_SLUG}/dawn.jpg"
    assert c.get(urlsplit(view).path).status_code == 200 and c.get(urlsplit(images[0]).path).status_code == 200
    assert c.get("/archive/").status_code == 404
    # Published elsewhere (a static host): serve leaves the path alone.
    config.write_text(FILLED_CONFIG + "archive_url: https://static.micromoments.net/archive\n")
    assert client(ready_project).get("/archive/").status_code == 404


def test_a_finished_send_rebuilds_the_archive(sender: Cli, fake: object) -> None:
    root = sender.root
    write_list(root, readers(3))
    page = site_dir(root) / SEED_SLUG / "index.html"
    assert sender("send", "--issue", SEED_SLUG, "--dry-run").exit_code == 0
    assert sender("send", "--issue", SEED_SLUG, "--to", "me@readers.net").exit_code == 0
    assert not page.exists()  # neither a dry run nor a test copy publishes the issue
    sent = sender("send", "--issue", SEED_SLUG, "--yes", "--no-sync")
    assert sent.exit_code == 0, sent.output
    assert "rebuilt (1 issue(s))" in sent.output
    assert page.is_file() and f'href="{SEED_SLUG}/"' in (site_dir(root) / "index.html").read_text()


def test_a_failed_rebuild_is_a_warning_not_a_failed_send(sender: Cli, fake: object) -> None:
    root = sender.root
    write_list(root, readers(2))
    (root / "build").mkdir()
    (root / "build" / "site").write_text("a file where the archive's folder should be")
    sent = sender("send", "--issue", SEED_SLUG, "--yes", "--no-sync")
    assert sent.exit_code == 0, sent.output
    assert "sent: 2 reader(s)" in sent.output
    assert "warning: the archive was not rebuilt" in sent.output and "run `newsletter archive`" in sent.output


def test_an_archive_page_was_sent_to_nobody_and_fits_a_phone(ready_project: Path) -> None:
    from newsletter.archive import web_page

    config = load_config(ready_project)
    issue = load_issue(ready_project, SEED_SLUG, config)
    page = web_page(config, issue)
    assert "You are receiving this because you signed up" not in page  # nobody received the web copy
    assert "You are receiving this because you signed up" in render_issue(config, issue).html  # the email says so
    top = page[page.index("<body"):][:1000]
    assert "All issues of" in top and "padding:0 16px" in top  # the top links keep off a phone's edge


def test_archive_pages_and_feed(ready_project: Path, tmp_path: Path) -> None:
    cli = Cli(ready_project)
    # the seed has been sent (an acknowledged batch in its journal); a draft has not; an older one is public
    journal = ready_project / "subscribers" / "sends" / f"{SEED_SLUG}.jsonl"
    journal.parent.mkdir(parents=True)
    journal.write_text('{"t":"batch","b":1,"emails":["a@r.net"]}\n{"t":"attempt","b":1,"n":1}\n'
                       '{"t":"ok","b":1,"status":202,"id":"x"}\n')
    for slug, extra in (("a-draft", ""), ("an-older-essay", "public: true\n")):
        folder = ready_project / "issues" / slug
        folder.mkdir()
        (folder / "issue.yaml").write_text(f"title: {slug}\ndate: 2026-01-0{1 if extra else 2}\n{extra}")
        (folder / "body.md").write_text("Some words.\n\n![A lake at dawn](lake.jpg)\n")
        from PIL import Image

        Image.new("RGB", (64, 48), (90, 140, 200)).save(folder / "lake.jpg")
    out = tmp_path / "site"
    result = cli("archive", "--out", str(out))
    assert result.exit_code == 0, result.output
    index = (out / "index.html").read_text()
    assert index.index(f'href="{SEED_SLUG}/"') < index.index('href="an-older-essay/"')
    assert "a-draft" not in index
    page = (out / SEED_SLUG / "index.html").read_text()
    assert "Micro Moments of Connection: The Heartbeat of Life" in page
    assert "/unsubscribe/" not in page and "u1." not in page and "%%" not in page and "Dear " not in page
    older = (out / "an-older-essay" / "index.html").read_text()
    assert 'src="lake.jpg"' in older and (out / "an-older-essay" / "lake.jpg").exists()
    assert '<a href="../"' in older and "All issues of Micro Moments" in older  # back to the index
    assert 'href="https://letters.micromoments.net/subscribe"' in older and "/subscribe" in index  # and sign-up
    # a draft's images are published (its email loads them from there); its page is not
    assert (out / "a-draft" / "lake.jpg").exists() and not (out / "a-draft" / "index.html").exists()
    feed = ET.parse(out / "feed.xml").getroot()
    ns = {"a": "http://www.w3.org/2005/Atom"}
    entries = feed.findall("a:entry", ns)
    assert [e.findtext("a:title", namespaces=ns) for e in entries] == [
        "Micro Moments of Connection: The Heartbeat of Life", "an-older-essay"]
    content = entries[0].findtext("a:content", namespaces=ns)
    assert entries[0].find("a:content", ns).get("type") == "html"
    for paragraph in seed_paragraphs()[1:14]:
        assert paragraph in " ".join(re.sub(r"<[^>]+>", " ", content).split())
    assert entries[0].find("a:link", ns).get("href") == f"https://letters.micromoments.net/archive/{SEED_SLUG}/"
    assert 'src="https://letters.micromoments.net/archive/an-older-essay/lake.jpg"' in entries[1].findtext(
        "a:content", namespaces=ns)
    # the emails' "view in browser" link points at the archive page
    cli("render")
    email_html = (ready_project / "build" / SEED_SLUG / "email.html").read_text()
    assert f'href="https://letters.micromoments.net/archive/{SEED_SLUG}/"' in email_html


def test_the_archive_follows_the_umask(ready_project: Path, tmp_path: Path) -> None:
    import stat

    (ready_project / ISSUE / "issue.yaml").write_text(
        (ready_project / ISSUE / "issue.yaml").read_text() + "public: true\n")
    old = os.umask(0o022)
    try:
        site = build_archive(ready_project, tmp_path / "site")
    finally:
        os.umask(old)
    for p in (site.out_dir / "index.html", site.feed, site.out_dir / SEED_SLUG / "index.html"):
        assert stat.S_IMODE(p.stat().st_mode) == 0o644, (p, oct(p.stat().st_mode))
