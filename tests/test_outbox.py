"""outbox.py: emails queued durably, sent through message.py's builder against the fake SendGrid, retried with
backoff while it is down, never twice queued; called as a library."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

from conftest import SECRET
from fake_sendgrid import API_KEY, FakeSendGrid
from helpers import wait_for

from newsletter.config import load_config
from newsletter.outbox import (
    Fate,
    Letter,
    Mail,
    Outbox,
    OutboxWorker,
    Postman,
    Result,
    outbox_path,
    send_waiting,
)
from newsletter.sendgrid import SendGridTransport
from newsletter.tokens import LinkState, verify_confirm_token

NOW = time.time()


def _postman(root: Path, fake: FakeSendGrid | None) -> Postman:
    transport = SendGridTransport(API_KEY, base_url=fake.url, timeout=5) if fake is not None else None
    return Postman(root, load_config(root), SECRET, transport=lambda: transport)


def test_queued_once_ever_and_kept_across_a_restart(ready_project: Path) -> None:
    outbox = Outbox(ready_project)
    first = Mail.confirmation("ada@readers.net", int(NOW), NOW)
    assert outbox.enqueue([first, first]) == [first]
    assert outbox.enqueue([first]) == []  # the same id is never queued twice
    welcome = Mail.welcome("ada@readers.net", "Ada", NOW)
    outbox.enqueue([welcome])
    outbox.settle([welcome], Fate.SENT)
    assert outbox.enqueue([Mail.welcome("ada@readers.net", "Ada", NOW + 9)]) == []  # welcomed once, ever
    again = Outbox(ready_project)  # a restart reads what waits
    assert again.waiting() == [first] and again.holds(welcome.id)
    assert outbox_path(ready_project).stat().st_mode & 0o777 == 0o600
    kinds = [json.loads(line)["t"] for line in outbox_path(ready_project).read_text().splitlines()]
    assert kinds == ["queued", "queued", "sent"]


def _filled(body: dict, part: int = 0) -> list[str]:
    """Each reader's view of one part of a body: the substitution tags filled."""
    views = []
    for p in body["personalizations"]:
        text = body["content"][part]["value"]
        for tag, value in p.get("substitutions", {}).items():
            text = text.replace(tag, value)
        views.append(text)
    return views


def test_confirmations_are_built_by_message_py_and_echo_nothing_typed(ready_project: Path,
                                                                      fake: FakeSendGrid) -> None:
    outbox = Outbox(ready_project)
    outbox.enqueue([Mail.confirmation("nora@readers.net", int(NOW), NOW), Mail.welcome("wil@readers.net", "Wil", NOW),
                    Mail.confirmation("obi@readers.net", int(NOW) - 5, NOW + 1)])
    done = send_waiting(outbox, _postman(ready_project, fake))
    assert (done.sent, done.waiting, outbox.waiting()) == (3, 0, [])
    assert len(fake.accepted) == 2  # one request for both confirmations, one for the welcome
    confirm, welcome = fake.accepted  # both passed the fake's schema check (the fixture asserts it)
    assert confirm["from"] == {"email": "letters@micromoments.net", "name": "Micro Moments"}
    assert confirm["reply_to"] == {"email": "hello@micromoments.net"}
    assert confirm["tracking_settings"]["click_tracking"]["enable"] is False  # the link is not rewritten
    assert confirm["mail_settings"] == {"bypass_unsubscribe_management": {"enable": True}}
    assert confirm["custom_args"] == {"newsletter_kind": "confirm"}
    assert [p["to"] for p in confirm["personalizations"]] == [[{"email": "nora@readers.net"}],
                                                             [{"email": "obi@readers.net"}]]
    for (email, signed), text, page in zip([("nora@readers.net", int(NOW)), ("obi@readers.net", int(NOW) - 5)],
                                           _filled(confirm), _filled(confirm, 1), strict=True):
        token = re.search(r"https://letters\.micromoments\.net/confirm/(\S+)", text).group(1)
        link = verify_confirm_token(SECRET, token, NOW)
        assert (link.state, link.email, link.signed_up) == (LinkState.VALID, email, signed)
        assert f'href="https://letters.micromoments.net/confirm/{token}"' in page
        assert "Hello" not in text and "Hello" not in page
    assert welcome["custom_args"] == {"newsletter_issue": "welcome"}
    p = welcome["personalizations"][0]
    assert p["to"] == [{"email": "wil@readers.net", "name": "Wil"}] and "List-Unsubscribe" in p["headers"]


def test_sendgrid_down_keeps_them_waiting_and_a_refused_one_is_dropped(ready_project: Path,
                                                                       fake: FakeSendGrid) -> None:
    outbox = Outbox(ready_project)
    outbox.enqueue([Mail.confirmation("a@readers.net", int(NOW), NOW), Mail.confirmation("b@readers.net", int(NOW),
                                                                                        NOW + 1)])
    fake.plan = ["503"]
    done = send_waiting(outbox, _postman(ready_project, fake))
    assert (done.sent, done.waiting, done.why) == (0, 2, "SendGrid answered 503: service unavailable")
    fake.plan = ["400", "400"]  # SendGrid refuses the request: sent again reader by reader, the refused one dropped
    done = send_waiting(outbox, _postman(ready_project, fake))
    assert (done.sent, done.dropped, outbox.waiting()) == (1, 1, [])
    assert fake.responses == [503, 400, 400, 202]
    assert [len(b["personalizations"]) for b in fake.requests] == [2, 2, 1, 1]
    assert [b["personalizations"][0]["to"][0]["email"] for b in fake.accepted] == ["b@readers.net"]
    fates = [json.loads(line) for line in outbox_path(ready_project).read_text().splitlines()][2:]
    assert [(f["t"], f["id"].split(":")[1]) for f in fates] == [("dropped", "a@readers.net"), ("sent", "b@readers.net")]
    assert fates[0]["why"].startswith("SendGrid answered 400")
    outbox.enqueue([Mail.confirmation("c@readers.net", int(NOW), NOW)])
    done = send_waiting(outbox, _postman(ready_project, None))  # no key: waits for it
    assert (done.waiting, done.why) == (1, "SENDGRID_API_KEY is not set")


def test_many_waiting_go_in_requests_of_at_most_the_batch_size(ready_project: Path, fake: FakeSendGrid) -> None:
    outbox = Outbox(ready_project)
    outbox.enqueue([Mail.confirmation(f"r{i}@readers.net", int(NOW), NOW + i) for i in range(5)])
    assert send_waiting(outbox, _postman(ready_project, fake), size=2).sent == 5
    assert [len(b["personalizations"]) for b in fake.accepted] == [2, 2, 1]


def test_a_confirmation_whose_link_expired_is_dropped(ready_project: Path, fake: FakeSendGrid) -> None:
    outbox = Outbox(ready_project)
    outbox.enqueue([Mail.confirmation("old@readers.net", int(NOW) - 8 * 86400, NOW - 8 * 86400)])
    done = send_waiting(outbox, _postman(ready_project, fake))
    assert (done.dropped, fake.requests) == (1, [])
    assert "its link expired" in outbox_path(ready_project).read_text()


def test_the_worker_retries_with_backoff_until_sendgrid_is_back(ready_project: Path, fake: FakeSendGrid) -> None:
    outbox = Outbox(ready_project)
    outbox.enqueue([Mail.confirmation("wait@readers.net", int(NOW), NOW)])
    fake.plan = ["503", "503", "503"]
    worker = OutboxWorker(outbox, _postman(ready_project, fake), retry=0.05, max_retry=1.0).start()
    try:
        wait_for(lambda: len(fake.accepted) == 1, what="the email once SendGrid is back")
    finally:
        worker.stop()
    assert fake.responses == [503, 503, 503, 202] and outbox.waiting() == []
    gaps = [b - a for a, b in zip(fake.times, fake.times[1:], strict=False)]
    assert gaps[0] >= 0.045 and gaps[1] >= 0.095 and gaps[2] >= 0.19, gaps  # 0.05, 0.1, 0.2: doubling


def test_the_postman_waits_on_a_broken_layout_and_sends_once_it_is_fixed(ready_project: Path,
                                                                         fake: FakeSendGrid) -> None:
    layout = ready_project / "layouts" / "confirm.mjml"
    good = layout.read_text()
    layout.write_text(good.replace("</mj-body>", "{{ nonsense }}</mj-body>"))
    postman = _postman(ready_project, fake)
    mail = [Mail.confirmation("x@readers.net", int(NOW), NOW)]
    attempt = postman(mail)
    assert attempt.result is Result.RETRY and "nonsense" in attempt.why and fake.requests == []
    layout.write_text(good)
    assert postman(mail).result is Result.SENT
    assert fake.accepted[0]["custom_args"]["newsletter_kind"] == Letter.CONFIRM
