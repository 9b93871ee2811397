"""Photos in an issue: published re-encoded, at most 1200 px wide, upright and without EXIF, at the URLs the
email loads them from; `send` refuses while they are not there."""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from conftest import FILLED_CONFIG, SEED_SLUG, Cli
from fake_sendgrid import FakeSendGrid
from PIL import Image

ISSUE = Path("issues") / SEED_SLUG
GPS_IFD = 0x8825


def camera_photo(path: Path, size: tuple[int, int] = (2400, 1800), orientation: int = 1) -> None:
    """A JPEG as a phone writes it: larger than any email shows (a phone's 4000 x 3000 costs four times the CPU to
    make and re-encode, for the same test), with a GPS position and an orientation tag in its EXIF."""
    im = Image.new("RGB", size, (200, 120, 40))
    for x in range(0, size[0], 400):  # some detail, so the encoder has work to do
        im.paste((30, 60, 160), (x, 0, x + 100, size[1] // 3))
    exif = Image.Exif()
    exif[0x010F] = "PhoneMaker"  # Make
    exif[0x0112] = orientation
    exif.get_ifd(GPS_IFD).update({1: "N", 2: (51.0, 27.0, 3.5), 3: "W", 4: (2.0, 35.0, 12.1)})
    im.save(path, "JPEG", quality=95, exif=exif)


def add_photo(project: Path, markdown: str) -> None:
    body = project / ISSUE / "body.md"
    body.write_text(body.read_text(encoding="utf-8") + f"\n\n{markdown}\n", encoding="utf-8")


def test_a_camera_photo_is_published_small_upright_and_without_exif(tmp_path: Path) -> None:
    from newsletter.images import publish

    landscape, portrait = tmp_path / "dawn.jpg", tmp_path / "tall.jpg"
    camera_photo(landscape)
    camera_photo(portrait, (2400, 1600), orientation=6)  # stored sideways, shown upright
    assert "GPS" not in str(Image.open(landscape).getexif()) and Image.open(landscape).getexif().get_ifd(GPS_IFD)
    out = tmp_path / "site"
    size = publish(landscape, out / "dawn.jpg")
    with Image.open(out / "dawn.jpg") as im:
        assert im.size == (1200, 900) == (size.width, size.height)
        assert not im.getexif() and "exif" not in im.info  # no GPS, no camera
        assert im.info.get("progressive") or im.info.get("progression")
    size = publish(portrait, out / "tall.jpg")
    with Image.open(out / "tall.jpg") as im:
        assert im.size == (1200, 1800)  # orientation applied first: portrait stays portrait
        assert not im.getexif()
    assert (out / "dawn.jpg").stat().st_size < landscape.stat().st_size


@pytest.mark.parametrize("fmt", ["PNG", "WEBP"])
def test_png_and_webp_lose_their_exif_and_gps_too(tmp_path: Path, fmt: str) -> None:
    from newsletter.images import publish

    exif = Image.Exif()
    exif[0x010F] = "PhoneMaker"
    exif.get_ifd(GPS_IFD).update({1: "N", 2: (51.0, 27.0, 3.5)})
    source = tmp_path / f"map.{fmt.lower()}"
    Image.new("RGB", (1600, 800), (10, 90, 200)).save(source, fmt, exif=exif)
    assert Image.open(source).getexif().get_ifd(GPS_IFD)  # the camera's position is there to begin with
    publish(source, tmp_path / "site" / source.name)
    with Image.open(tmp_path / "site" / source.name) as im:
        assert im.size == (1200, 600)
        assert not im.getexif() and "exif" not in im.info and b"Exif" not in (tmp_path / "site" / source.name
                                                                              ).read_bytes()


def test_a_changed_photo_is_published_again_whatever_its_date(tmp_path: Path) -> None:
    import os

    from newsletter.images import publish

    source, target = tmp_path / "dawn.jpg", tmp_path / "site" / "dawn.jpg"
    Image.new("RGB", (800, 600), (200, 0, 0)).save(source, "JPEG")
    publish(source, target)
    first = target.read_bytes()
    publish(source, target)  # unchanged: the published copy is reused
    assert target.read_bytes() == first
    Image.new("RGB", (800, 600), (0, 0, 200)).save(source, "JPEG")  # replaced by a copy with an older date
    os.utime(source, (1_000_000_000, 1_000_000_000))
    publish(source, target)
    with Image.open(target) as im:
        assert im.getpixel((10, 10))[2] > 150  # blue now: not the stale red copy


def test_the_img_gets_width_and_height(ready_project: Path) -> None:
    camera_photo(ready_project / ISSUE / "dawn.jpg")
    add_photo(ready_project, "![Dawn over the hills](dawn.jpg)\n\nA photo ![the sea](dawn.jpg) inline.")
    result = Cli(ready_project)("render")
    assert result.exit_code == 0, result.output
    html = (ready_project / "build" / SEED_SLUG / "email.html").read_text(encoding="utf-8")
    src = f'src="https://letters.micromoments.net/archive/{SEED_SLUG}/dawn.jpg"'
    tags = [t for t in html.split("<img")[1:] if src in t.split(">")[0]]
    assert len(tags) == 2
    for tag in tags:
        tag = tag.split(">")[0]
        assert 'width="552"' in tag and 'height="414"' in tag, tag  # 1200x900 shown 552 wide
        assert "height:auto" in tag  # ...and still fluid on a phone


def test_image_paths_with_spaces(ready_project: Path) -> None:
    camera_photo(ready_project / ISSUE / "IMG 2041.JPG", (800, 600))
    add_photo(ready_project, "![the garden](IMG 2041.JPG)")
    result = Cli(ready_project)("check", "--no-spam")
    assert result.exit_code == 1
    assert "image path with a space is shown as text, not as an image: write ![the garden](<IMG 2041.JPG>)" \
        in result.output
    body = ready_project / ISSUE / "body.md"
    body.write_text(body.read_text().replace("(IMG 2041.JPG)", "(<IMG 2041.JPG>)"))
    result = Cli(ready_project)("check", "--no-spam")
    assert result.exit_code == 0 and "0 error(s)" in result.output, result.output


def test_a_heavy_image_is_a_warning(ready_project: Path) -> None:
    import random

    rng = random.Random(7)
    noise = Image.frombytes("RGB", (1200, 1200), rng.randbytes(1200 * 1200 * 3))
    noise.save(ready_project / ISSUE / "noise.png")  # random pixels do not compress
    add_photo(ready_project, "![static](noise.png)")
    result = Cli(ready_project)("check", "--no-spam")
    assert "image `noise.png` is" in result.output and "MB even after re-encoding" in result.output


# -- published where the email loads them, and checked before a send -------------------------------------------
@pytest.fixture
def site_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A static web server on loopback serving tmp/www (the writer's web host)."""
    www = tmp_path / "www"
    www.mkdir()
    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

    handler = functools.partial(Quiet, directory=str(www))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", www
    server.shutdown()
    server.server_close()


@pytest.fixture
def photo_issue(project: Path, site_server: tuple[str, Path], monkeypatch: pytest.MonkeyPatch) -> Path:
    base, _ = site_server
    (project / "newsletter.yaml").write_text(
        FILLED_CONFIG.replace("base_url: https://letters.micromoments.net", f"base_url: {base}/letters"))
    camera_photo(project / ISSUE / "dawn.jpg")
    add_photo(project, "![Dawn over the hills](dawn.jpg)")
    (project / "subscribers" / "subscribers.csv").write_text("email,name\nada@readers.net,Ada\n")
    return project


def test_send_refuses_until_the_images_are_published(photo_issue: Path, site_server: tuple[str, Path],
                                                     fake: FakeSendGrid, env: dict[str, str]) -> None:
    base, www = site_server
    cli = Cli(photo_issue)
    url = f"{base}/letters/archive/{SEED_SLUG}/dawn.jpg"
    refused = cli("send", "--issue", SEED_SLUG, "--yes", "--no-sync")
    assert refused.exit_code == 1
    assert (f"issues/{SEED_SLUG}/dawn.jpg is not published at {url}: run `newsletter archive` and upload "
            "build/site") in refused.output
    assert fake.requests == []
    test_copy = cli("send", "--issue", SEED_SLUG, "--to", "me@readers.net", "--no-sync")
    assert test_copy.exit_code == 0 and "warning: issues/" in test_copy.output  # a test copy only warns
    # the writer follows the advice: archive, upload (here: copy to the web root)
    assert cli("archive").exit_code == 0
    site = photo_issue / "build" / "site"
    assert (site / SEED_SLUG / "dawn.jpg").is_file() and not (site / SEED_SLUG / "index.html").exists()
    import shutil

    shutil.copytree(site, www / "letters" / "archive")
    import urllib.request

    with urllib.request.urlopen(url) as resp:
        assert resp.status == 200 and resp.headers["Content-Type"] == "image/jpeg"
    sent = cli("send", "--issue", SEED_SLUG, "--yes", "--no-sync")
    assert sent.exit_code == 0, sent.output
    assert fake.delivered["ada@readers.net"] == 1 and fake.delivered["me@readers.net"] == 1


def test_check_links_requests_images_and_knows_when_offline(photo_issue: Path) -> None:
    result = Cli(photo_issue)("check", "--no-spam", "--links")
    assert "image not published (HTTP 404)" in result.output and "dawn.jpg" in result.output
    body = photo_issue / ISSUE / "body.md"
    body.write_text(body.read_text() + "\n\n[a link](https://no-such-host.invalid/page)\n")
    cfg = photo_issue / "newsletter.yaml"
    cfg.write_text(cfg.read_text().replace("base_url: http://127.0.0.1", "base_url: http://no-such-host.invalid"))
    offline = Cli(photo_issue)("check", "--no-spam", "--links")
    assert offline.output.count("no network: links not checked") == 1
    assert "broken link" not in offline.output
