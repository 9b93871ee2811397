"""webguard.py: what every answer of `serve` gets. The security headers and the masking rules are called in
process; the log file and the request deadline need the real `serve` process (its log handler, real sockets)."""

from __future__ import annotations

import base64
import json
import re
import socket
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import SECRET
from helpers import FORM, PREFIX, start_server, stop_server, wait_for, wait_for_log
from starlette.testclient import TestClient

from newsletter.errors import NewsletterError
from newsletter.ledger import Ledger, ledger_path
from newsletter.tokens import make_confirm_token, make_token
from newsletter.web import create_app
from newsletter.webguard import CONTENT_SECURITY_POLICY, for_log, path_for_log, request_deadline


def _every_route(client: TestClient) -> Iterator[tuple[str, int]]:
    token, confirm = make_token(SECRET, "ada@readers.net"), make_confirm_token(SECRET, "ada@readers.net",
                                                                              int(time.time()))
    for method, path, data in [
            ("GET", "/subscribe", None), ("POST", "/subscribe", {"email": "ada@readers.net"}),
            ("POST", "/subscribe", {"email": "nope"}), ("GET", f"/confirm/{confirm}", None),
            ("POST", f"/confirm/{confirm}", None), ("GET", "/confirm/c1.x.y.z", None),
            ("GET", f"/unsubscribe/{token}", None), ("POST", f"/unsubscribe/{token}", None),
            ("GET", "/unsubscribe/bad", None), ("POST", "/webhooks/sendgrid", None), ("GET", "/healthz", None),
            ("GET", "/no/such/page", None), ("POST", "/subscribe", {"email": "x" * 20_000})]:
        r = client.request(method, PREFIX + path, data=data)
        assert r.headers["content-security-policy"] == CONTENT_SECURITY_POLICY, path
        assert r.headers["x-content-type-options"] == "nosniff", path
        assert r.headers["referrer-policy"] == "no-referrer", path
        assert r.headers["x-frame-options"] == "DENY", path
        assert "<script" not in r.text.lower() and not re.search(r"\son[a-z]+\s*=", r.text), path
        yield path, r.status_code


def test_security_headers_on_every_route(project: Path, env: dict[str, str]) -> None:
    from helpers import site_config

    site_config(project)
    with TestClient(create_app(project)) as client:  # the lifespan runs: the workers start and stop
        statuses = dict(_every_route(client))
    assert statuses["/subscribe"] in (200, 413) and statuses["/no/such/page"] == 404
    assert statuses["/webhooks/sendgrid"] == 403 and statuses["/healthz"] == 200
    policy = dict(part.strip().split(" ", 1) for part in CONTENT_SECURITY_POLICY.split(";"))
    assert "script-src" not in policy and policy["default-src"] == "'none'"  # no script at all, inline or not
    assert policy["frame-ancestors"] == "'none'"


def test_paths_and_messages_as_the_log_shows_them() -> None:
    who = "secret.reader@readers.net"
    encoded = base64.urlsafe_b64encode(who.encode()).decode().rstrip("=")
    assert path_for_log(f"/letters/unsubscribe/{make_token(SECRET, who)}") == "/letters/unsubscribe/<token>"
    assert path_for_log(f"/letters/confirm/{make_confirm_token(SECRET, who, 0)}/x") == "/letters/confirm/<token>"
    for hidden in (who, encoded, urllib.parse.quote(who), make_token(SECRET, who), f"x.{encoded}.y"):
        assert path_for_log(f"/letters/x/{hidden}") == "/letters/x/<masked>", hidden
    assert path_for_log("/letters/healthz") == "/letters/healthz"
    assert path_for_log("/a\nb") == "/a\\nb"  # a second log line cannot be forged
    assert for_log(f"could not write {who} (u1.abc.def)\r\n") == "could not write <address> (<token>)\\r\\n"


@pytest.mark.parametrize(("value", "seconds"), [("", 10.0), ("2.5", 2.5), (" 60 ", 60.0)])
def test_the_request_deadline_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch, value: str,
                                                         seconds: float) -> None:
    monkeypatch.setenv("NEWSLETTER_REQUEST_DEADLINE", value)
    assert request_deadline() == seconds


@pytest.mark.parametrize("value", ["0", "-1", "3601", "soon"])
def test_a_bad_request_deadline_is_refused(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("NEWSLETTER_REQUEST_DEADLINE", value)
    with pytest.raises(NewsletterError, match="NEWSLETTER_REQUEST_DEADLINE must be a number of seconds"):
        request_deadline()


# -- the real process: its log file -------------------------------------------------------------------------
def test_the_log_file_has_one_line_per_request_and_no_token_address_or_encoding(project: Path,
                                                                                 tmp_path: Path) -> None:
    """serve without SENDGRID_WEBHOOK_PUBLIC_KEY nor SENDGRID_API_KEY: both are said once in the log, every
    webhook is refused, and the log holds a line per request with no token, address, nor any encoding of one,
    and no line a request path could forge."""
    srv = start_server(project, tmp_path, public_key=False)  # no SendGrid key: the outbox worker logs its email waits
    who = "secret.reader@readers.net"
    encoded = base64.urlsafe_b64encode(who.encode()).decode().rstrip("=")
    confirm, unsubscribe = make_confirm_token(SECRET, who, int(time.time())), make_token(SECRET, who)
    body = json.dumps([{"email": "x@readers.net", "event": "unsubscribe", "sg_event_id": "u1",
                        "timestamp": int(time.time())}]).encode()
    try:
        srv.request("POST", f"{PREFIX}/subscribe", urllib.parse.urlencode({"email": who}).encode(), FORM)
        for method, path in [("GET", f"/confirm/{confirm}"), ("POST", f"/confirm/{confirm}"),
                             ("GET", f"/unsubscribe/{unsubscribe}"), ("POST", f"/unsubscribe/{unsubscribe}"),
                             ("GET", f"/confirm/{confirm}/extra"), ("GET", f"/{who}"), ("GET", f"/x/{encoded}"),
                             ("GET", f"/x/{urllib.parse.quote(who)}"), ("GET", f"/x/{unsubscribe}"),
                             ("GET", "/nothing%0a2026-12-01%2012:00:00,000%20GET%20/forged%20200")]:
            srv.request(method, PREFIX + path)
        assert srv.request("POST", f"{PREFIX}/webhooks/sendgrid", body, FORM)[0] == 403
        assert srv.request("POST", f"{PREFIX}/webhooks/sendgrid", body, srv.signed(body))[0] == 403  # signed, no key
        srv.request("GET", f"{PREFIX}/healthz")
        wait_for_log(srv, "SENDGRID_API_KEY is not set")
        wait_for(lambda: srv.log_path.read_text().count(" /letters/") >= 15, what="every request's line")
        log = srv.log_path.read_text()
    finally:
        stop_server(srv)
    assert "SENDGRID_WEBHOOK_PUBLIC_KEY is not set" in log
    assert not any("x@readers.net" in line for line in srv.ledger_lines())  # the webhooks wrote nothing
    assert "POST /letters/confirm/<token> 200" in log and "GET /letters/unsubscribe/<token> 200" in log
    assert len([line for line in log.splitlines() if "/letters/unsubscribe/" in line]) == 2
    for secret in (who, "secret.reader", encoded, confirm, unsubscribe, confirm.split(".")[-1],
                   unsubscribe.split(".")[-1], "secret%2Ereader", "secret.reader%40", "u1.", "c1."):
        assert secret not in log, secret
    lines = log.splitlines()
    assert not any(line.startswith("2026-12-01 12:00:00,000 GET /forged") for line in lines), lines
    assert any("\\n2026-12-01" in line for line in lines)
    assert "Traceback" not in log


# -- the real process: stalled clients are dropped at the deadline --------------------------------------------
def test_stalled_clients_are_dropped_at_the_deadline_and_never_starve_real_ones(project: Path,
                                                                                 tmp_path: Path) -> None:
    """1000 clients send half a request line and stop, 20 more stop half-way through their body, one before the
    end of its headers: real readers are still answered within a second, and every stalled connection is closed
    by the server, without an answer, once NEWSLETTER_REQUEST_DEADLINE (3 s here, 10 s by default) is up."""
    import resource

    deadline = 3.0
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 4096)), hard))
    srv = start_server(project, tmp_path, {"NEWSLETTER_REQUEST_DEADLINE": str(deadline)})
    held: list[socket.socket] = []
    try:
        start = time.monotonic()
        for _ in range(1000):
            s = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
            s.sendall(b"GET /letters/heal")  # half a request line, then nothing
            held.append(s)
        for i in range(20):
            s = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
            path = f"{PREFIX}/subscribe" if i % 2 else f"{PREFIX}/unsubscribe/{make_token(SECRET, 'a@b.net')}"
            s.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
                      "Content-Length: 1000\r\n\r\nemail=a%40b.net&first".encode())  # then nothing
            held.append(s)
        header = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
        header.sendall(b"GET /letters/healthz HTTP/1.1\r\nHost: x\r\n")  # headers never finished
        held.append(header)
        body = json.dumps([{"email": "wh@readers.net", "event": "unsubscribe", "sg_event_id": "h1",
                            "timestamp": int(time.time())}]).encode()
        checks = [("GET", f"{PREFIX}/healthz", b"", {}),
                  ("POST", srv.url("held@readers.net"), b"List-Unsubscribe=One-Click", FORM),
                  ("POST", f"{PREFIX}/webhooks/sendgrid", body, srv.signed(body))]
        for method, path, data, headers in checks * 3:
            t0 = time.monotonic()
            status, _ = srv.request(method, path, data, headers)
            assert status == 200 and time.monotonic() - t0 < 1.0, (path, status, time.monotonic() - t0)
        assert time.monotonic() - start < deadline, "the checks must run while the connections are held"
        assert Ledger(ledger_path(project)).is_suppressed("held@readers.net")
        for s in held:  # each reads EOF (or a reset): closed by the server, without an answer
            s.settimeout(deadline + 5)
            try:
                data = s.recv(1)
            except ConnectionResetError:
                data = b""
            assert data == b"", data
        elapsed = time.monotonic() - start
        assert deadline - 0.1 <= elapsed < deadline + 5, elapsed  # ... and not before the deadline
        assert "a@b.net" not in (project / "subscribers" / "unsubscribes.csv").read_text()
        assert not (project / "subscribers" / "signups.jsonl").exists()
    finally:
        for s in held:
            s.close()
        stop_server(srv)
    assert "Traceback" not in srv.log_path.read_text()
