"""preview.py: the local page that shows the issue as readers see it (phone, desktop, dark, text), in Chromium,
re-rendered when a file changes and showing a broken file's error until it is fixed."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
from conftest import SEED_SLUG

ISSUE = Path("issues") / SEED_SLUG


@pytest.mark.browser
def test_preview_page_renders_and_follows_edits(browser, ready_project: Path) -> None:
    from newsletter.preview import Previewer, make_server

    previewer = Previewer(ready_project, None)  # what `newsletter preview` runs, in this process
    server = make_server(previewer, "127.0.0.1", 0)
    previewer.start()
    serving = threading.Thread(target=server.serve_forever, daemon=True)
    serving.start()
    url = f"http://127.0.0.1:{server.server_address[1]}/"
    try:
        page = browser.new_page(viewport={"width": 1700, "height": 1000})
        page.goto(url)
        page.wait_for_function("document.body.dataset.version >= 1")
        for frame_id, width in (("phone", 375), ("desktop", 600), ("dark", 375)):
            frame = page.frame_locator(f"#{frame_id}")
            heading = frame.locator("h1")
            heading.wait_for()
            assert heading.inner_text() == "Micro Moments of Connection: The Heartbeat of Life"
            assert page.locator(f"#{frame_id}").evaluate("e => e.clientWidth") == width
        dark_bg = page.frame_locator("#dark").locator(".nl-content").first.evaluate(
            "e => getComputedStyle(e).backgroundColor")
        assert dark_bg == "rgb(30, 30, 30)"
        assert "Why are we here?" in page.locator("#text").inner_text()
        assert page.locator("#subject").inner_text() == "Micro moments of connection"
        version = int(page.evaluate("document.body.dataset.version"))
        body = ready_project / ISSUE / "body.md"
        body.write_text("A brand new first paragraph.\n\n" + body.read_text())
        start = time.monotonic()
        page.wait_for_function(f"document.body.dataset.version > {version}", timeout=5000)
        page.frame_locator("#phone").locator("text=A brand new first paragraph.").wait_for(timeout=5000)
        assert time.monotonic() - start < 3
        meta = ready_project / ISSUE / "issue.yaml"
        good = meta.read_text()
        meta.write_text("title: [unclosed\n")
        page.locator("#error").filter(has_text="malformed YAML").wait_for(timeout=5000)
        assert serving.is_alive()  # the server lives on
        meta.write_text(good)
        page.wait_for_function("getComputedStyle(document.getElementById('error')).display === 'none'",
                               timeout=5000)
        state = json.loads(page.evaluate("fetch('state.json').then(r => r.text())"))
        assert state["error"] == ""
        # The spam score joins later (SpamAssassin takes seconds, more on a loaded machine): it is not
        # waited for here; the check results that come with the render are.
        problems = json.loads(page.evaluate("fetch('state.json').then(r => r.text())"))["problems"]
        assert [p for p in problems if not p.startswith("note: spam score")] == []  # a filled-in config
    finally:
        previewer.stop.set()
        server.shutdown()
        server.server_close()


