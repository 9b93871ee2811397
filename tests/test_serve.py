"""`newsletter serve` started for real on loopback: unsubscribe page, one-click POST, signed webhook."""

from __future__ import annotations

import base64
import json
import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from conftest import SEED_SLUG, Cli
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from helpers import PREFIX, SECRET, Server, free_port, start_server, stop_server  # noqa: F401 - re-exported

from newsletter.ledger import Ledger, ledger_path
from newsletter.tokens import make_token


@pytest.fixture
def server(project: Path, tmp_path: Path) -> Iterator[Server]:
    srv = start_server(project, tmp_path)
    yield srv
    stop_server(srv)


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
    assert json.loads(text) == {"received": 7, "new": 7, "ledger": 5, "skipped": 0}
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
def test_page_flow_in_chromium(server: Server, browser) -> None:
    page = browser.new_page(viewport={"width": 375, "height": 700})
    try:
        page.goto(f"http://127.0.0.1:{server.port}{server.url('Page.Reader@readers.net')}")
        assert page.get_by_role("heading").inner_text() == "Unsubscribe page.reader@readers.net from Micro Moments?"
        assert server.ledger_lines() == []
        button = page.get_by_role("button", name="Unsubscribe")
        assert button.bounding_box()["height"] >= 44
        button.click()
        page.wait_for_load_state()
        assert page.get_by_role("heading").inner_text() == "You are unsubscribed"
        assert "page.reader@readers.net" in page.content()
    finally:
        page.close()
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


# -- a full disk: nothing claimed that was not stored ----------------------------------------------------
@pytest.fixture
def full_disk(project: Path, tmp_path: Path, short_write_shim: Path) -> Iterator[tuple[Server, Path]]:
    """serve on a disk that is full under subscribers/ while the returned flag file exists."""
    from conftest import shim_env

    full = tmp_path / "disk-is-full"
    full.touch()
    srv = start_server(project, tmp_path, shim_env(short_write_shim, "subscribers/", full_file=full))
    yield srv, full
    stop_server(srv)


def test_one_click_on_a_full_disk_answers_503_then_records_with_room(full_disk: tuple[Server, Path]) -> None:
    srv, full = full_disk
    project = srv.root
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    status, page = srv.request("POST", srv.url("victim@readers.net"), b"List-Unsubscribe=One-Click", headers)
    assert status == 503, page  # a one-click client retries on 5xx
    assert "not</strong> recorded" in page and "You are unsubscribed" not in page
    assert not list(Ledger(ledger_path(project)).addresses())  # nothing whole was stored
    full.unlink()  # room again: the client's retry is stored
    status, page = srv.request("POST", srv.url("victim@readers.net"), b"List-Unsubscribe=One-Click", headers)
    assert status == 200 and "You are unsubscribed" in page
    ledger = Ledger(ledger_path(project))
    assert ledger.is_suppressed("victim@readers.net") and not ledger.unreadable
    lines = ledger_path(project).read_bytes().split(b"\n")
    assert any(line.startswith(b"victim@readers.net,unsubscribe,") for line in lines)
    time.sleep(0.2)
    log = srv.log_path.read_text()
    assert "unsubscribe not recorded: disk full" in log and "victim@readers.net" not in log


def test_webhook_batch_on_a_full_disk_is_stored_when_sendgrid_retries(full_disk: tuple[Server, Path]) -> None:
    srv, full = full_disk
    project = srv.root
    now = int(time.time())
    body = _events({"email": "una@readers.net", "event": "unsubscribe", "sg_event_id": "f1", "timestamp": now},
                   {"email": "bo@readers.net", "event": "bounce", "type": "bounce", "sg_event_id": "f2",
                    "timestamp": now})
    status, text = srv.request("POST", f"{PREFIX}/webhooks/sendgrid", body, srv.signed(body))
    assert status == 503, text  # not stored, so not acknowledged
    full.unlink()
    status, text = srv.request("POST", f"{PREFIX}/webhooks/sendgrid", body, srv.signed(body))  # the retry
    assert status == 200, text
    assert json.loads(text)["new"] == 2 and json.loads(text)["ledger"] == 2
    ledger = Ledger(ledger_path(project))
    assert ledger.event_of("una@readers.net") == "unsubscribe" and ledger.event_of("bo@readers.net") == "bounce"


def test_webhook_skips_malformed_addresses_and_keeps_the_rest(server: Server) -> None:
    now = int(time.time())
    body = _events({"email": 12345, "event": "unsubscribe", "sg_event_id": "m1", "timestamp": now},
                   {"email": "evil@readers.net\nforged@readers.net,unsubscribe", "event": "unsubscribe",
                    "sg_event_id": "m2", "timestamp": now},
                   {"email": ["x@readers.net"], "event": "spamreport", "sg_event_id": "m3", "timestamp": now},
                   {"email": "fine@readers.net", "event": "unsubscribe", "sg_event_id": "m4", "timestamp": now})
    status, text = server.request("POST", f"{PREFIX}/webhooks/sendgrid", body, server.signed(body))
    assert status == 200, text
    assert json.loads(text) == {"received": 4, "new": 1, "ledger": 1, "skipped": 3}
    assert [line.split(",")[0] for line in server.ledger_lines()] == ["fine@readers.net"]
    time.sleep(0.2)
    log = server.log_path.read_text()
    assert "evil@" not in log and "forged@" not in log and "Traceback" not in log
    deep = b"[" * 100_000 + b"]" * 100_000
    assert server.request("POST", f"{PREFIX}/webhooks/sendgrid", deep, server.signed(deep))[0] == 400


def test_half_open_connections_do_not_starve_real_readers(server: Server) -> None:
    """1000 clients send half a request line and stop: real ones are still answered within a second, and
    the stalled ones are dropped once they have not finished their headers in 10 s."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 4096)), hard))
    held: list[socket.socket] = []
    try:
        start = time.monotonic()
        for _ in range(1000):
            s = socket.create_connection(("127.0.0.1", server.port), timeout=5)
            s.sendall(b"GET /letters/heal")  # half a request line, then nothing
            held.append(s)
        now = int(time.time())
        body = _events({"email": "wh@readers.net", "event": "unsubscribe", "sg_event_id": "h1", "timestamp": now})
        checks = [("GET", f"{PREFIX}/healthz", b"", {}),
                  ("POST", server.url("held@readers.net"), b"List-Unsubscribe=One-Click",
                   {"Content-Type": "application/x-www-form-urlencoded"}),
                  ("POST", f"{PREFIX}/webhooks/sendgrid", body, server.signed(body))]
        for method, path, data, headers in checks * 3:
            t0 = time.monotonic()
            status, _ = server.request(method, path, data, headers)
            assert status == 200 and time.monotonic() - t0 < 1.0, (path, status, time.monotonic() - t0)
        assert time.monotonic() - start < 9, "the checks must run while the connections are held"
        assert Ledger(ledger_path(server.root)).is_suppressed("held@readers.net")
        # the server drops them: each held socket reads EOF (or a reset) once the 10 s are up
        deadline = start + 25
        open_ = list(held)
        while open_ and time.monotonic() < deadline:
            still = []
            for s in open_:
                s.settimeout(0.01)
                try:
                    if s.recv(1) == b"":
                        continue
                except (TimeoutError, BlockingIOError):
                    still.append(s)
                    continue
                except OSError:
                    continue
            open_ = still
            time.sleep(0.2)
        assert not open_, f"{len(open_)} stalled connections still open after 25 s"
        assert time.monotonic() - start >= 9.5  # ... and not before their 10 s
    finally:
        for s in held:
            s.close()


def test_control_characters_cannot_forge_log_lines(server: Server) -> None:
    server.request("GET", f"{PREFIX}/nothing%0a2026-12-01%2012:00:00,000%20GET%20/forged%20200")
    time.sleep(0.3)
    lines = server.log_path.read_text().splitlines()
    assert not any(line.startswith("2026-12-01 12:00:00,000 GET /forged") for line in lines), lines
    assert any("\\n2026-12-01" in line for line in lines)


def test_without_a_public_key_every_webhook_is_refused(project: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("SENDGRID_WEBHOOK_PUBLIC_KEY", raising=False)
    srv = start_server(project, tmp_path, public_key=False)
    try:
        body = _events({"email": "x@readers.net", "event": "unsubscribe", "sg_event_id": "u1",
                        "timestamp": int(time.time())})
        status, _ = srv.request("POST", f"{PREFIX}/webhooks/sendgrid", body, {"Content-Type": "application/json"})
        assert status == 403
        status, _ = srv.request("POST", f"{PREFIX}/webhooks/sendgrid", body, srv.signed(body))  # signed, no key
        assert status == 403
        assert srv.ledger_lines() == []
        time.sleep(0.2)
        assert "SENDGRID_WEBHOOK_PUBLIC_KEY is not set" in srv.log_path.read_text()
    finally:
        stop_server(srv)


def test_an_unwritable_ledger_gets_a_kind_503_and_one_log_line(server: Server) -> None:
    ledger = ledger_path(server.root)
    ledger.parent.mkdir(parents=True, exist_ok=True)
    ledger.mkdir()  # a ledger that cannot be opened for writing (even root cannot write into a folder as a file)
    code, page = server.request("POST", server.url("stuck@readers.net"), b"List-Unsubscribe=One-Click",
                                {"Content-Type": "application/x-www-form-urlencoded"})
    assert code == 503 and "We could not unsubscribe you just now" in page and "Internal Server Error" not in page
    time.sleep(0.2)
    log = server.log_path.read_text()
    assert len([line for line in log.splitlines() if "unsubscribe not recorded" in line]) == 1
    assert "stuck@readers.net" not in log and "Traceback" not in log
