"""sendgrid.py: the client of SendGrid's v3 API: a malformed key is named and never printed, a connection the
server closed while idle is replaced without a request in doubt."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from conftest import SEED_SLUG, Cli
from fake_sendgrid import API_KEY


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


def test_a_connection_the_server_closed_while_idle_is_not_a_request_in_doubt() -> None:
    """The bulk path keeps its connection alive between requests; one that SendGrid closed while idle is
    replaced before the next request, which then goes out and is answered (not reported in doubt)."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from newsletter.sendgrid import SendGridTransport

    ports: list[int] = []
    closed = threading.Event()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def do_POST(self) -> None:  # noqa: N802
            self.rfile.read(int(self.headers["Content-Length"]))
            ports.append(self.client_address[1])
            self.send_response(202)
            self.send_header("Content-Length", "0")
            self.send_header("X-Message-Id", f"m{len(ports)}")
            self.end_headers()
            self.close_connection = len(ports) == 3  # then drop it, as an idle timeout would, without saying so

    class Server(ThreadingHTTPServer):
        def shutdown_request(self, request: object) -> None:
            super().shutdown_request(request)  # type: ignore[arg-type]
            closed.set()

    server = Server(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        transport = SendGridTransport(API_KEY, base_url=f"http://127.0.0.1:{server.server_address[1]}", timeout=5)
        for n in range(1, 4):
            assert transport.send_encoded(b'{"personalizations":[]}').message_id == f"m{n}"
        assert len(set(ports)) == 1  # one connection for three requests
        assert closed.wait(5)
        assert transport.send_encoded(b"{}").message_id == "m4"
        assert len(set(ports)) == 2
    finally:
        server.shutdown()
        server.server_close()
