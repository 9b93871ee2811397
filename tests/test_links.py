"""links.py: `check --links` requests every link of the issue (HEAD, then GET when HEAD is refused) against a
local server, and names the line of each broken one."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from conftest import SEED_SLUG, Cli

ISSUE = Path("issues") / SEED_SLUG


class _Links(BaseHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass

    def do_HEAD(self) -> None:  # noqa: N802
        if self.path == "/head-refused":
            self.send_response(405)
        else:
            self.send_response(200 if self.path == "/ok" else 404)
        self.end_headers()

    def do_GET(self) -> None:  # noqa: N802
        self.send_response(200 if self.path in ("/ok", "/head-refused") else 404)
        self.end_headers()


def test_check_links_reports_broken_ones(ready_project: Path) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Links)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        (ready_project / ISSUE / "body.md").write_text(
            f"Fine [ok]({base}/ok).\n\nHEAD refused: [get]({base}/head-refused).\n\nGone: [missing]({base}/missing).\n")
        config = ready_project / "newsletter.yaml"  # no network here: the workshop page is local too
        config.write_text(config.read_text().replace("https://micromoments.net/workshops/from-trauma-to-triumph",
                                                     f"{base}/ok"))
        result = Cli(ready_project)("check", "--links", "--no-spam")
    finally:
        server.shutdown()
        server.server_close()
    assert result.exit_code == 1
    broken = [line for line in result.output.splitlines() if "broken link" in line]
    assert broken == [f"error: {ready_project / ISSUE / 'body.md'}:5: broken link (HTTP 404): {base}/missing"]
    assert "links: 3 checked" in result.output  # the three above (the workshop page is /ok again)
