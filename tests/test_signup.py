"""Sign-up: the page, double opt-in with recorded consent, and the welcome email, against `newsletter serve`
and the fake SendGrid."""

from __future__ import annotations

import csv
import html
import re
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import SEED_SLUG, record
from fake_sendgrid import API_KEY, FakeSendGrid
from test_serve import PREFIX, SECRET, Server, start_server, stop_server

from newsletter.ledger import Ledger, ledger_path

FORM = {"Content-Type": "application/x-www-form-urlencoded"}
CHECK_INBOX = "Check your inbox"


@pytest.fixture
def signup(project: Path, tmp_path: Path) -> Iterator[tuple[Server, FakeSendGrid]]:
    fake = FakeSendGrid().start()
    srv = start_server(project, tmp_path, {"SENDGRID_API_URL": fake.url, "SENDGRID_API_KEY": API_KEY})
    yield srv, fake
    stop_server(srv)
    fake.stop()
    assert not fake.schema_failures, fake.schema_failures[:3]


def _post(srv: Server, email: str, *, first: str = "", trap: str = "", ip: str = "") -> tuple[int, str]:
    body = urllib.parse.urlencode({"email": email, "first_name": first, "website": trap}).encode()
    headers = {**FORM, **({"X-Forwarded-For": ip} if ip else {})}
    return srv.request("POST", f"{PREFIX}/subscribe", body, headers)


def _confirm_links(fake: FakeSendGrid) -> list[str]:
    links = []
    for body in fake.requests:
        if (body.get("custom_args") or {}).get("newsletter_kind") == "confirm":
            text = next(c["value"] for c in body["content"] if c["type"] == "text/plain")
            links += re.findall(r"https://\S+/confirm/\S+", text)
    return links


def _path(url: str) -> str:
    return urllib.parse.urlsplit(url).path


def _list(root: Path) -> list[dict[str, str]]:
    path = root / "subscribers" / "subscribers.csv"
    return list(csv.DictReader(path.open(encoding="utf-8"))) if path.exists() else []


def test_sign_up_confirm_and_welcome_in_chromium(signup: tuple[Server, FakeSendGrid], browser) -> None:
    srv, fake = signup
    base = f"http://127.0.0.1:{srv.port}"
    page = browser.new_page(viewport={"width": 375, "height": 800})
    try:
        page.goto(f"{base}{PREFIX}/subscribe")
        assert page.get_by_role("heading").inner_text() == "Subscribe to Micro Moments"
        assert page.get_by_role("link", name="Read the past issues").is_visible()
        page.get_by_label("Your email address").fill("New.Reader@readers.net")
        page.get_by_label("Your first name (optional)").fill("Nora")
        page.get_by_role("button", name="Subscribe").click()
        page.wait_for_load_state()
        assert page.get_by_role("heading").inner_text() == CHECK_INBOX
        links = _confirm_links(fake)
        assert len(links) == 1 and fake.requests[0]["personalizations"][0]["to"] == [
            {"email": "new.reader@readers.net"}]
        assert _list(srv.root) == []  # not before the confirmation
        page.goto(base + _path(links[0]))  # the link in the email: a page with a button, nothing changed yet
        assert _list(srv.root) == []
        page.get_by_role("button", name="Confirm my subscription").click()
        page.wait_for_load_state()
        assert page.get_by_role("heading").inner_text() == "You are subscribed"
    finally:
        page.close()
    assert [(r["email"], r["first_name"]) for r in _list(srv.root)] == [("new.reader@readers.net", "Nora")]
    consent = [line for line in ledger_path(srv.root).read_text().splitlines()
               if line.startswith("new.reader@readers.net,subscribe,")]
    assert len(consent) == 1 and ",signup," in consent[0]
    assert "signed up 20" in consent[0] and "confirmed 20" in consent[0] and "/subscribe" in consent[0]
    welcome = [b for b in fake.requests if b.get("custom_args", {}).get("newsletter_issue") == "welcome"]
    assert len(welcome) == 1
    p = welcome[0]["personalizations"][0]
    assert p["to"][0]["email"] == "new.reader@readers.net"
    assert p["headers"]["List-Unsubscribe"].startswith(f"<https://micromoments.net{PREFIX}/unsubscribe/u1.")
    assert p["headers"]["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    page_html = next(c["value"] for c in welcome[0]["content"] if c["type"] == "text/html")
    for tag, value in p["substitutions"].items():
        page_html = page_html.replace(tag, value)
    assert "Dear Nora," in page_html and p["headers"]["List-Unsubscribe"][1:-1] in html.unescape(page_html)


def test_replies_are_the_same_whatever_the_address(signup: tuple[Server, FakeSendGrid]) -> None:
    srv, fake = signup
    (srv.root / "subscribers" / "subscribers.csv").write_text("email\nold@readers.net\ngone@readers.net\n")
    record(ledger_path(srv.root), "gone@readers.net", "unsubscribe")
    _post(srv, "pending@readers.net")
    answers = {who: _post(srv, who) for who in ("fresh@readers.net", "pending@readers.net", "old@readers.net",
                                                "gone@readers.net")}
    assert len({(code, re.sub(r"\d+(\.\d+)?ms", "", body)) for code, body in answers.values()}) == 1
    assert all(code == 200 and CHECK_INBOX in body for code, body in answers.values())
    # an unsubscribed reader who signs up again gets a confirmation, and confirming lifts the suppression
    gone = [u for u in _confirm_links(fake) if "Z29uZUByZWFkZXJzLm5ldA" in u]
    assert gone, _confirm_links(fake)
    assert srv.request("POST", _path(gone[0]))[0] == 200
    ledger = Ledger(ledger_path(srv.root))
    assert not ledger.is_suppressed("gone@readers.net") and ledger.event_of("gone@readers.net") == "subscribe"


def test_honeypot_rate_limits_and_twice_confirmed(project: Path, tmp_path: Path) -> None:
    fake = FakeSendGrid().start()
    srv = start_server(project, tmp_path, {"SENDGRID_API_URL": fake.url, "SENDGRID_API_KEY": API_KEY},
                       extra_config="signup:\n  per_address_per_day: 2\n  per_ip_per_hour: 4\n")
    try:
        code, body = _post(srv, "bot@readers.net", trap="https://spam.example")
        assert code == 200 and CHECK_INBOX in body
        assert fake.requests == [] and not (project / "subscribers" / "signups.jsonl").exists()
        for _ in range(3):  # three sign-ups of one address: two confirmation emails (the limit), same answer
            assert _post(srv, "eager@readers.net", ip="10.1.1.1")[0] == 200
        assert len(_confirm_links(fake)) == 2
        assert _post(srv, "other@readers.net", ip="10.1.1.1")[0] == 200  # the 4th from this IP: sent
        assert _post(srv, "fifth@readers.net", ip="10.1.1.1")[0] == 200  # the 5th: over the limit, nothing
        assert len(_confirm_links(fake)) == 3
        assert "10.1.1.1" not in (project / "subscribers" / "signups.jsonl").read_text()  # only a keyed hash
        link = _path(_confirm_links(fake)[0])
        assert srv.request("POST", link)[0] == 200
        code, again = srv.request("POST", link)
        assert code == 200 and "You are already subscribed" in again
        assert [r["email"] for r in _list(project)] == ["eager@readers.net"]
        welcomes = [b for b in fake.requests if b.get("custom_args", {}).get("newsletter_issue") == "welcome"]
        assert len(welcomes) == 1
        stop_server(srv)  # the limits are counted from subscribers/signups.jsonl: they hold across a restart
        srv = start_server(project, tmp_path, {"SENDGRID_API_URL": fake.url, "SENDGRID_API_KEY": API_KEY},
                           extra_config="signup:\n  per_address_per_day: 2\n  per_ip_per_hour: 4\n")
        assert _post(srv, "sixth@readers.net", ip="10.1.1.1")[0] == 200
        assert len(_confirm_links(fake)) == 3
    finally:
        stop_server(srv)
        fake.stop()


def test_expired_and_tampered_links_change_nothing(signup: tuple[Server, FakeSendGrid]) -> None:
    from newsletter.tokens import make_confirm_token

    srv, _ = signup
    old = make_confirm_token(SECRET, "late@readers.net", int(time.time()) - 8 * 86400)
    code, page = srv.request("POST", f"{PREFIX}/confirm/{old}")
    assert code == 400 and "This link has expired" in page
    fresh = make_confirm_token(SECRET, "late@readers.net", int(time.time()))
    tampered = fresh.replace("bGF0ZU", "bWF0ZU")
    for token in (tampered, fresh[:-2], "c1.x.y.z", make_confirm_token("another-secret", "late@readers.net",
                                                                       int(time.time()))):
        code, page = srv.request("POST", f"{PREFIX}/confirm/{token}")
        assert code == 400 and "This link is not valid" in page
    assert _list(srv.root) == [] and not ledger_path(srv.root).exists()
    code, page = srv.request("GET", f"{PREFIX}/confirm/{fresh}")
    assert code == 200 and "late@readers.net" in page and _list(srv.root) == []  # a GET changes nothing


def test_sendgrid_down_leaves_the_sign_up_pending(signup: tuple[Server, FakeSendGrid]) -> None:
    from conftest import Cli

    srv, fake = signup
    fake.plan = ["500"]
    code, page = _post(srv, "patient@readers.net")
    assert code == 503 and "could not send the confirmation email just now, please try again later" in page
    assert _list(srv.root) == []
    pending = Cli(srv.root)("subscribers", "pending")
    assert "patient@readers.net" in pending.output
    assert "pending:    1 sign-up(s)" in Cli(srv.root)("subscribers", "count").output
    code, page = _post(srv, "patient@readers.net")  # SendGrid is back: try again
    assert code == 200 and len(fake.accepted) == 1 and fake.responses == [500, 202]


def test_the_welcome_issue_is_never_sent_to_the_list(ready_project: Path, monkeypatch) -> None:
    from conftest import Cli

    monkeypatch.setenv("NEWSLETTER_SECRET", "s")
    cli = Cli(ready_project)
    result = cli("send", "--issue", "welcome", "--dry-run")
    assert result.exit_code == 1 and "is the welcome email" in result.output
    assert cli("render").output.startswith(f"wrote build/{SEED_SLUG}/") or SEED_SLUG in cli("render").output
    assert cli("check", "--issue", "welcome", "--no-spam").exit_code == 0
    site = ready_project / "site"
    (ready_project / "issues" / "welcome" / "issue.yaml").write_text(
        (ready_project / "issues" / "welcome" / "issue.yaml").read_text() + "public: true\n")
    assert cli("archive", "--out", str(site)).exit_code == 0
    assert not (site / "welcome" / "index.html").exists() and "welcome" not in (site / "index.html").read_text()


def test_embed_prints_a_plain_form(ready_project: Path) -> None:
    from conftest import Cli

    out = Cli(ready_project)("embed").output
    assert '<form method="post" action="https://letters.micromoments.net/subscribe"' in out
    assert 'name="email"' in out and 'name="website"' in out and "<script" not in out


def test_new_welcome_scaffolds_it(project: Path) -> None:
    import shutil

    from conftest import Cli

    shutil.rmtree(project / "issues" / "welcome")
    result = Cli(project)("new", "--welcome")
    assert result.exit_code == 0, result.output
    assert "welcome: true" in (project / "issues" / "welcome" / "issue.yaml").read_text()
    assert Cli(project)("new", "--welcome").exit_code == 1  # it exists now
