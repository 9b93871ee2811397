"""`newsletter serve` started for real on loopback: unsubscribe page, one-click POST, signed webhook."""

from __future__ import annotations

import base64
import http.client
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import FILLED_CONFIG, SEED_SLUG, Cli
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from newsletter.ledger import Ledger, ledger_path
from newsletter.tokens import make_token

SECRET = "serve-test-secret"
PREFIX = "/letters"  # base_url has a path: serve answers under it


@dataclass
class Server:
    root: Path
    port: int
    proc: subprocess.Popen
    key: ec.EllipticCurvePrivateKey
    log_path: Path

    def request(self, method: str, path: str, body: bytes = b"", headers: dict | None = None,
                ) -> tuple[int, str]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request(method, path, body=body or None, headers=headers or {})
            resp = conn.getresponse()
            return resp.status, resp.read().decode("utf-8", "replace")
        finally:
            conn.close()

    def url(self, email: str, secret: str = SECRET) -> str:
        return f"{PREFIX}/unsubscribe/{make_token(secret, email)}"

    def signed(self, body: bytes, ts: int | None = None) -> dict[str, str]:
        ts = int(time.time()) if ts is None else ts
        sig = self.key.sign(str(ts).encode() + body, ec.ECDSA(hashes.SHA256()))
        return {"X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(sig).decode(),
                "X-Twilio-Email-Event-Webhook-Timestamp": str(ts), "Content-Type": "application/json"}

    def ledger_lines(self) -> list[str]:
        path = ledger_path(self.root)
        return path.read_text().splitlines()[1:] if path.exists() else []


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(project: Path, tmp_path: Path) -> Iterator[Server]:
    (project / "newsletter.yaml").write_text(
        FILLED_CONFIG.replace("base_url: https://letters.micromoments.net",
                              f"base_url: https://micromoments.net{PREFIX}"))
    key = ec.generate_private_key(ec.SECP256R1())
    public = base64.b64encode(key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)).decode()
    port = free_port()
    env = dict(os.environ, NEWSLETTER_SECRET=SECRET, SENDGRID_WEBHOOK_PUBLIC_KEY=public)
    log_path = tmp_path / "serve.log"
    log = open(log_path, "wb")  # noqa: SIM115
    exe = str(Path(sys.executable).parent / "newsletter")
    proc = subprocess.Popen([exe, "serve", "--root", str(project), "--port", str(port)], stdout=log,
                            stderr=subprocess.STDOUT, env=env)
    srv = Server(project, port, proc, key, log_path)
    deadline = time.monotonic() + 30
    while True:
        try:
            if srv.request("GET", f"{PREFIX}/healthz")[0] == 200:
                break
        except OSError:
            pass
        assert proc.poll() is None, log_path.read_text()
        assert time.monotonic() < deadline, "serve did not start"
        time.sleep(0.1)
    yield srv
    proc.terminate()
    proc.wait(timeout=10)
    log.close()


def test_get_shows_the_address_and_changes_nothing(server: Server) -> None:
    status, page = server.request("GET", server.url("Ada@Readers.net"))
    assert status == 200
    assert "Unsubscribe ada@readers.net from Micro Moments?" in page
    assert '<form method="post"' in page
    assert server.ledger_lines() == []


def test_one_click_post_is_recorded_once(server: Server) -> None:
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    status, page = server.request("POST", server.url("ada@readers.net"), b"List-Unsubscribe=One-Click", headers)
    assert status == 200 and "You are unsubscribed" in page
    again, _ = server.request("POST", server.url("ada@readers.net"), b"List-Unsubscribe=One-Click", headers)
    assert again == 200
    lines = server.ledger_lines()
    assert len(lines) == 1 and lines[0].startswith("ada@readers.net,unsubscribe,") and ",one-click," in lines[0]
    assert Ledger(ledger_path(server.root)).is_suppressed("ADA@readers.net")


def test_one_click_as_multipart_form_data(server: Server) -> None:
    boundary = "xYzZy"
    body = (f'--{boundary}\r\nContent-Disposition: form-data; name="List-Unsubscribe"\r\n\r\n'
            f"One-Click\r\n--{boundary}--\r\n").encode()
    headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    assert server.request("POST", server.url("multi@readers.net"), body, headers)[0] == 200
    lines = server.ledger_lines()
    assert len(lines) == 1 and lines[0].startswith("multi@readers.net,unsubscribe,") and ",one-click," in lines[0]


@pytest.mark.parametrize("mangle", ["tamper", "wrong-key", "malformed", "other-version"])
def test_bad_tokens_are_refused_and_write_nothing(server: Server, mangle: str) -> None:
    good = make_token(SECRET, "ada@readers.net")
    token = {
        "tamper": good[:-2] + ("AA" if not good.endswith("AA") else "BB"),
        "wrong-key": make_token("another-secret", "ada@readers.net"),
        "malformed": "not-a-token",
        "other-version": "u9" + good[2:],
    }[mangle]
    for method in ("GET", "POST"):
        status, page = server.request(method, f"{PREFIX}/unsubscribe/{token}", b"List-Unsubscribe=One-Click")
        assert status == 400 and "not valid" in page
        assert "ada@readers.net" not in page
    assert server.ledger_lines() == []


def test_outside_the_base_path_is_not_found(server: Server) -> None:
    status, _ = server.request("GET", f"/unsubscribe/{make_token(SECRET, 'a@readers.net')}")
    assert status == 404


def test_body_size_is_limited(server: Server) -> None:
    status, _ = server.request("POST", server.url("a@readers.net"), b"x" * 100_000)
    assert status == 413 and server.ledger_lines() == []


def test_500_concurrent_one_click_posts(server: Server) -> None:
    def post(i: int) -> int:
        return server.request("POST", server.url(f"reader{i}@readers.net"), b"List-Unsubscribe=One-Click",
                              {"Content-Type": "application/x-www-form-urlencoded"})[0]

    with ThreadPoolExecutor(max_workers=40) as pool:
        statuses = list(pool.map(post, range(500)))
    assert statuses == [200] * 500
    lines = server.ledger_lines()
    assert len(lines) == 500
    assert {line.split(",")[0] for line in lines} == {f"reader{i}@readers.net" for i in range(500)}
    assert all(line.split(",")[1] == "unsubscribe" and len(line.split(",")) == 5 for line in lines)


def _events(*events: dict) -> bytes:
    return (json.dumps(list(events)) + "\r\n").encode()


def test_signed_webhook_events(server: Server) -> None:
    now = int(time.time())
    body = _events(
        {"email": "Bob@Readers.net", "event": "unsubscribe", "sg_event_id": "e1", "timestamp": now},
        {"email": "cy@readers.net", "event": "bounce", "type": "bounce", "sg_event_id": "e2", "timestamp": now},
        {"email": "di@readers.net", "event": "bounce", "type": "blocked", "sg_event_id": "e3", "timestamp": now},
        {"email": "ed@readers.net", "event": "spamreport", "sg_event_id": "e4", "timestamp": now},
        {"email": "fi@readers.net", "event": "dropped", "reason": "Invalid", "sg_event_id": "e5", "timestamp": now},
        {"email": "gus@readers.net", "event": "group_unsubscribe", "asm_group_id": 4, "sg_event_id": "e6",
         "timestamp": now},
        {"email": "hal@readers.net", "event": "open", "sg_event_id": "e7", "timestamp": now,
         "newsletter_issue": SEED_SLUG},
    )
    status, text = server.request("POST", f"{PREFIX}/webhooks/sendgrid", body, server.signed(body))
    assert status == 200, text
    assert json.loads(text) == {"received": 7, "new": 7, "ledger": 5}
    events = {tuple(line.split(",")[:2]) for line in server.ledger_lines()}
    assert events == {("bob@readers.net", "unsubscribe"), ("cy@readers.net", "bounce"),
                      ("ed@readers.net", "spamreport"), ("fi@readers.net", "invalid"),
                      ("gus@readers.net", "unsubscribe")}
    assert all(",sendgrid," in line for line in server.ledger_lines())
    # SendGrid retries the same batch: nothing new is written
    status, text = server.request("POST", f"{PREFIX}/webhooks/sendgrid", body, server.signed(body))
    assert status == 200 and json.loads(text)["new"] == 0
    assert len(server.ledger_lines()) == 5
    logged = (server.root / "subscribers" / "events.jsonl").read_text().splitlines()
    assert len(logged) == 7


def test_webhook_refuses_bad_signatures(server: Server) -> None:
    body = _events({"email": "x@readers.net", "event": "unsubscribe", "sg_event_id": "z1",
                    "timestamp": int(time.time())})
    headers = server.signed(body)
    tampered = body.replace(b"x@readers", b"y@readers")
    assert server.request("POST", f"{PREFIX}/webhooks/sendgrid", tampered, headers)[0] == 403
    stripped = body.rstrip(b"\r\n")  # re-serialised bodies break the signature
    assert server.request("POST", f"{PREFIX}/webhooks/sendgrid", stripped, headers)[0] == 403
    stale = server.signed(body, ts=int(time.time()) - 3600)
    assert server.request("POST", f"{PREFIX}/webhooks/sendgrid", body, stale)[0] == 403
    other = ec.generate_private_key(ec.SECP256R1())
    sig = base64.b64encode(other.sign(headers["X-Twilio-Email-Event-Webhook-Timestamp"].encode() + body,
                                      ec.ECDSA(hashes.SHA256()))).decode()
    forged = {**headers, "X-Twilio-Email-Event-Webhook-Signature": sig}
    assert server.request("POST", f"{PREFIX}/webhooks/sendgrid", body, forged)[0] == 403
    assert server.request("POST", f"{PREFIX}/webhooks/sendgrid", body, {})[0] == 403
    malformed = b"[{not json"
    assert server.request("POST", f"{PREFIX}/webhooks/sendgrid", malformed, server.signed(malformed))[0] == 400
    assert server.ledger_lines() == []
    assert not (server.root / "subscribers" / "events.jsonl").exists()


def test_log_has_one_line_per_request_without_tokens_or_addresses(server: Server) -> None:
    server.request("GET", server.url("secret.reader@readers.net"))
    server.request("POST", server.url("secret.reader@readers.net"), b"List-Unsubscribe=One-Click")
    time.sleep(0.3)
    log = server.log_path.read_text()
    lines = [line for line in log.splitlines() if "/unsubscribe/" in line]
    assert len(lines) == 2
    assert all("/letters/unsubscribe/<token>" in line for line in lines)
    assert "secret.reader" not in log and "u1." not in log


@pytest.mark.browser
def test_page_flow_in_chromium(server: Server) -> None:
    import shutil

    from playwright.sync_api import sync_playwright

    assert shutil.which("/usr/bin/chromium"), "apt-get install chromium"
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"])
        try:
            page = browser.new_page(viewport={"width": 375, "height": 700})
            page.goto(f"http://127.0.0.1:{server.port}{server.url('Page.Reader@readers.net')}")
            assert page.get_by_role("heading").inner_text() == \
                "Unsubscribe page.reader@readers.net from Micro Moments?"
            assert server.ledger_lines() == []
            button = page.get_by_role("button", name="Unsubscribe")
            assert button.bounding_box()["height"] >= 44
            button.click()
            page.wait_for_load_state()
            assert page.get_by_role("heading").inner_text() == "You are unsubscribed"
            assert "page.reader@readers.net" in page.content()
        finally:
            browser.close()
    lines = server.ledger_lines()
    assert len(lines) == 1 and lines[0].startswith("page.reader@readers.net,unsubscribe,")
    assert ",page," in lines[0]


def test_captured_list_unsubscribe_url_works_against_serve(server: Server, monkeypatch) -> None:
    """The URL in a real send's List-Unsubscribe header, POSTed as a mail client does."""
    from fake_sendgrid import API_KEY, FakeSendGrid

    fake = FakeSendGrid().start()
    try:
        for k, v in {"SENDGRID_API_URL": fake.url, "SENDGRID_API_KEY": API_KEY, "NEWSLETTER_SECRET": SECRET}.items():
            monkeypatch.setenv(k, v)
        (server.root / "subscribers" / "subscribers.csv").write_text("email,name\nmail.client@readers.net,Mo\n")
        result = Cli(server.root)("send", "--issue", SEED_SLUG, "--yes", "--no-sync")
        assert result.exit_code == 0, result.output
        header = fake.requests[0]["personalizations"][0]["headers"]["List-Unsubscribe"]
    finally:
        fake.stop()
    url = header.strip("<>")
    assert url.startswith(f"https://micromoments.net{PREFIX}/unsubscribe/")
    path = url.split("micromoments.net", 1)[1]
    assert server.request("GET", path)[0] == 200 and server.ledger_lines() == []
    bad = path[:-3] + "xyz"
    assert server.request("POST", bad, b"List-Unsubscribe=One-Click")[0] == 400 and server.ledger_lines() == []
    status, _ = server.request("POST", path, b"List-Unsubscribe=One-Click",
                               {"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 200
    assert [line.split(",")[:2] for line in server.ledger_lines()] == [["mail.client@readers.net", "unsubscribe"]]
