"""webhook.py: what each SendGrid event means for the ledger (`dropped` reasons, bounce types), soft bounces that
end in suppression (counted in the events log's index, rebuilt when the log loads), the log's reader, and the
signed webhook route in process: signatures, retried batches, malformed addresses."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import msgspec
import pytest
from conftest import SEED_SLUG, Cli, WebhookSigner, configure
from fake_sendgrid import FakeSendGrid
from helpers import PREFIX, App, open_app
from signed_webhook import SignedWebhook, event, send_issue

from newsletter.ledger import Ledger, ledger_path
from newsletter.webhook import (
    SOFT_BOUNCE_DETAIL,
    EventLog,
    events_path,
    ledger_event_for,
    scan_events,
    soft_bounce_step,
)


@pytest.mark.parametrize(("reason", "expected"), [
    ("Unsubscribed Address", "unsubscribe"),
    ("Bounced Address", "bounce"),
    ("Spam Reporting Address", "spamreport"),
    ("Invalid", "invalid"),
    ("  bounced   address ", "bounce"),  # spacing and case as a proxy may re-write them
    ("Recipient List over Package Quota", None),
    ("Spam Content (if spam checker app enabled)", None),
    ("Spam Content", None),
    ("Invalid SMTPAPI header", None),
    ("Invalid Email", None),
    ("Bounced Address due to quota", None),
    ("", None),
])
def test_dropped_suppresses_only_for_the_readers_own_reasons(reason: str, expected: str | None) -> None:
    assert ledger_event_for({"event": "dropped", "email": "a@readers.net", "reason": reason}) == expected


def test_a_drop_without_a_reason_suppresses_nobody() -> None:
    assert ledger_event_for({"event": "dropped", "email": "a@readers.net"}) is None


@pytest.mark.parametrize(("fields", "expected"), [
    ({"event": "bounce", "type": "bounce"}, "bounce"),
    ({"event": "bounce"}, "bounce"),  # older payloads have no type: a bounce is permanent
    ({"event": "bounce", "type": "blocked"}, None),  # soft: counted, three suppress
    ({"event": "bounce", "type": "expired"}, None),  # a deferral SendGrid gave up on: soft too
    ({"event": "deferred"}, None),
    ({"event": "unsubscribe"}, "unsubscribe"),
    ({"event": "group_unsubscribe", "asm_group_id": 4}, "unsubscribe"),
    ({"event": "spamreport"}, "spamreport"),
    ({"event": "open"}, None), ({"event": "click", "url": "https://x.net"}, None), ({"event": "delivered"}, None),
])
def test_what_each_event_means(fields: dict[str, object], expected: str | None) -> None:
    assert ledger_event_for({"email": "a@readers.net", **fields}) == expected


def test_soft_bounce_counting() -> None:
    seen: frozenset[str] = frozenset()
    seen, reached = soft_bounce_step(seen, "bounce", "blocked", "m1")
    seen, reached = soft_bounce_step(seen, "bounce", "blocked", "m1")  # the same message again: still one
    assert seen == {"m1"} and not reached
    seen, reached = soft_bounce_step(seen, "bounce", "bounce", "m2")  # hard: the ledger's `bounce` handles it
    seen, reached = soft_bounce_step(seen, "bounce", "expired", "m2")
    assert seen == {"m1", "m2"} and not reached
    assert soft_bounce_step(seen, "delivered", None, "m3") == (frozenset(), False)
    assert soft_bounce_step(seen, "bounce", "blocked", "") == (seen, False)  # no message id: not countable
    assert soft_bounce_step(seen, "bounce", "blocked", "m3") == (frozenset(), True)


@pytest.fixture
def sent(ready_project: Path, env: dict[str, str]) -> Cli:
    configure(ready_project)
    cli = Cli(ready_project)
    send_issue(cli, SEED_SLUG, ["a@readers.net", "b@readers.net", "c@readers.net", "d@readers.net"])
    return cli


def sendgrid_lines(root: Path) -> list[list[str]]:
    return [line.split(",") for line in ledger_path(root).read_text().splitlines()[1:]]


def blocked(email: str, message: str) -> dict[str, object]:
    return event("bounce", email, SEED_SLUG, message=message, type="blocked", reason="452 4.2.2 mailbox full")


def test_three_soft_bounces_on_different_messages_suppress(sent: Cli, fake: FakeSendGrid,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    root = sent.root
    hook = SignedWebhook(root, monkeypatch)
    hook.post([blocked("a@readers.net", "m1"), blocked("b@readers.net", "m1"), blocked("c@readers.net", "m1")])
    hook.post([blocked("A@Readers.net", "m2"), blocked("b@readers.net", "m2"), blocked("c@readers.net", "m1")])
    hook.post([event("delivered", "b@readers.net", SEED_SLUG, message="m3")])  # a delivery resets the count
    assert not ledger_path(root).exists()
    hook.restart()  # `serve` restarted: the counts come back from the events log
    answer = hook.post([blocked("a@readers.net", "m3"), blocked("b@readers.net", "m4"),
                        event("bounce", "c@readers.net", SEED_SLUG, message="m2", type="expired")])
    assert answer["ledger"] == 1
    assert sendgrid_lines(root) == [["a@readers.net", "bounce", sendgrid_lines(root)[0][2], "sendgrid",
                                     SOFT_BOUNCE_DETAIL]]
    assert SOFT_BOUNCE_DETAIL == "soft-bounced 3 times"
    ledger = Ledger(ledger_path(root))
    assert ledger.is_suppressed("a@readers.net")
    assert not ledger.is_suppressed("b@readers.net")  # 2, a delivery, then 1
    assert not ledger.is_suppressed("c@readers.net")  # m1 twice and m2: two messages
    hook.post([event("bounce", "c@readers.net", SEED_SLUG, message="m5", type="blocked")])
    assert Ledger(ledger_path(root)).is_suppressed("c@readers.net")
    assert len(sendgrid_lines(root)) == 2
    stats = json.loads(sent("stats", "--issue", SEED_SLUG, "--json").output)
    assert stats["bounces"]["soft"]["count"] == 3 and stats["bounces"]["hard"]["count"] == 0


def test_a_batch_sendgrid_retries_is_counted_once(sent: Cli, fake: FakeSendGrid,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    hook = SignedWebhook(sent.root, monkeypatch)
    batch = [blocked("d@readers.net", "m1"), blocked("d@readers.net", "m2")]
    hook.post(batch)
    assert hook.post(batch)["new"] == 0
    hook.post([blocked("d@readers.net", "m2")])  # another event about a message already counted
    assert not ledger_path(sent.root).exists()


def test_other_drops_are_logged_and_shown_never_suppressing(sent: Cli, fake: FakeSendGrid,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    reasons = ["Recipient List over Package Quota", "Spam Content", "Invalid SMTPAPI header", "Bounced Address"]
    readers = ["a@readers.net", "b@readers.net", "c@readers.net", "d@readers.net"]
    answer = SignedWebhook(sent.root, monkeypatch).post(
        [event("dropped", e, SEED_SLUG, reason=r) for e, r in zip(readers, reasons, strict=True)])
    assert answer == {"received": 4, "new": 4, "ledger": 1, "skipped": 0}
    assert [line[:2] for line in sendgrid_lines(sent.root)] == [["d@readers.net", "bounce"]]
    assert len(events_path(sent.root).read_text().splitlines()) == 4
    dropped = json.loads(sent("stats", "--issue", SEED_SLUG, "--json").output)["bounces"]["dropped"]
    assert dropped == {r: 1 for r in reasons}


class Fields(msgspec.Struct):
    email: str = ""
    event: str = ""


def test_the_log_reader_skips_torn_and_broken_lines(tmp_path: Path) -> None:
    log = tmp_path / "subscribers" / "events.jsonl"
    log.parent.mkdir()
    good = [json.dumps({"email": f"r{i}@readers.net", "event": "open", "extra": [1, {"x": 2}]}) for i in range(3)]
    log.write_text(f"{good[0]}\n{{not json\n{good[1]}\n[1, 2]\n{{\"email\": 5}}\n{good[2]}\n{{\"email\": \"torn@")
    assert [e.email for e in scan_events(log, Fields)] == ["r0@readers.net", "r1@readers.net", "r2@readers.net"]
    assert list(scan_events(tmp_path / "none.jsonl", Fields)) == []


def test_the_log_reader_reads_lines_longer_than_its_buffer(tmp_path: Path) -> None:
    log = tmp_path / "events.jsonl"
    long = json.dumps({"email": "long@readers.net", "event": "click", "url": "https://x.net/" + "a" * (5 << 20)})
    log.write_text("\n".join([json.dumps({"email": "s@readers.net", "event": "open"}), long, long]) + "\n")
    assert [e.email for e in scan_events(log, Fields)] == ["s@readers.net", "long@readers.net", "long@readers.net"]


def test_the_index_loads_from_the_log(ready_project: Path) -> None:
    log = events_path(ready_project)
    log.write_text("".join(json.dumps(e) + "\n" for e in [
        blocked("x@readers.net", "m1"), blocked("x@readers.net", "m2"), blocked("y@readers.net", "m1"),
        event("delivered", "y@readers.net", message="m2")]))
    index = EventLog(ready_project)
    assert index.soft == {"x@readers.net": {"m1", "m2"}}
    assert len(index.seen) == 4


# -- the webhook route, through Starlette's TestClient on `web.create_app` --------------------------------
@pytest.fixture
def app(project: Path, monkeypatch: pytest.MonkeyPatch) -> App:
    return open_app(project, monkeypatch)


def _events(*events: dict) -> bytes:
    return (json.dumps(list(events)) + "\r\n").encode()


def test_signed_webhook_events(app: App) -> None:
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
    status, text = app.request("POST", f"{PREFIX}/webhooks/sendgrid", body, app.signed(body))
    assert status == 200, text
    assert json.loads(text) == {"received": 7, "new": 7, "ledger": 5, "skipped": 0}
    events = {tuple(line.split(",")[:2]) for line in app.ledger_lines()}
    assert events == {("bob@readers.net", "unsubscribe"), ("cy@readers.net", "bounce"),
                      ("ed@readers.net", "spamreport"), ("fi@readers.net", "invalid"),
                      ("gus@readers.net", "unsubscribe")}
    assert all(",sendgrid," in line for line in app.ledger_lines())
    # SendGrid retries the same batch: nothing new is written
    status, text = app.request("POST", f"{PREFIX}/webhooks/sendgrid", body, app.signed(body))
    assert status == 200 and json.loads(text)["new"] == 0
    assert len(app.ledger_lines()) == 5
    assert len(events_path(app.root).read_text().splitlines()) == 7


def test_webhook_refuses_bad_signatures(app: App) -> None:
    body = _events({"email": "x@readers.net", "event": "unsubscribe", "sg_event_id": "z1",
                    "timestamp": int(time.time())})
    headers = app.signed(body)
    hook = f"{PREFIX}/webhooks/sendgrid"
    assert app.request("POST", hook, body.replace(b"x@readers", b"y@readers"), headers)[0] == 403  # tampered
    assert app.request("POST", hook, body.rstrip(b"\r\n"), headers)[0] == 403  # re-serialised: not as signed
    assert app.request("POST", hook, body, app.signed(body, ts=int(time.time()) - 3600))[0] == 403  # stale
    forged = {**headers, **{k: v for k, v in WebhookSigner().headers(
        body, int(headers["X-Twilio-Email-Event-Webhook-Timestamp"])).items() if k.endswith("Signature")}}
    assert app.request("POST", hook, body, forged)[0] == 403  # signed with another key
    assert app.request("POST", hook, body, {})[0] == 403
    malformed = b"[{not json"
    assert app.request("POST", hook, malformed, app.signed(malformed))[0] == 400
    assert app.ledger_lines() == []
    assert not events_path(app.root).exists()


def test_webhook_skips_malformed_addresses_and_keeps_the_rest(app: App, caplog: pytest.LogCaptureFixture) -> None:
    now = int(time.time())
    body = _events({"email": 12345, "event": "unsubscribe", "sg_event_id": "m1", "timestamp": now},
                   {"email": "evil@readers.net\nforged@readers.net,unsubscribe", "event": "unsubscribe",
                    "sg_event_id": "m2", "timestamp": now},
                   {"email": ["x@readers.net"], "event": "spamreport", "sg_event_id": "m3", "timestamp": now},
                   {"email": "fine@readers.net", "event": "unsubscribe", "sg_event_id": "m4", "timestamp": now})
    with caplog.at_level(logging.INFO):
        status, text = app.request("POST", f"{PREFIX}/webhooks/sendgrid", body, app.signed(body))
    assert status == 200, text
    assert json.loads(text) == {"received": 4, "new": 1, "ledger": 1, "skipped": 3}
    assert [line.split(",")[0] for line in app.ledger_lines()] == ["fine@readers.net"]
    assert "evil@" not in caplog.text and "forged@" not in caplog.text and "Traceback" not in caplog.text
    deep = b"[" * 100_000 + b"]" * 100_000
    assert app.request("POST", f"{PREFIX}/webhooks/sendgrid", deep, app.signed(deep))[0] == 400
