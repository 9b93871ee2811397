"""SendGrid's suppression lists follow the ledger's state: push, pull, sync (suppressions.py)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Cli, WebhookSigner, configure, record, wait_for, write_list
from fake_sendgrid import API_KEY, FakeSendGrid

from newsletter.errors import TransportError
from newsletter.ledger import Kind, Ledger, Source, ledger_path
from newsletter.sendgrid import SendGridTransport
from newsletter.suppressions import (
    BackgroundPusher,
    open_ledger,
    plan,
    pull,
    pull_state_path,
    push,
    push_state_path,
    sync,
    waiting,
)
from newsletter.tokens import make_confirm_token

GROUP = 42


@pytest.fixture
def letters(ready_project: Path, env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Path:
    configure(ready_project, asm_group_id=GROUP)
    write_list(ready_project, [("ada@readers.net", "Ada"), ("bob@readers.net", "Bob")])
    return ready_project


@pytest.fixture
def signer(monkeypatch: pytest.MonkeyPatch) -> WebhookSigner:
    s = WebhookSigner()
    monkeypatch.setenv("SENDGRID_WEBHOOK_PUBLIC_KEY", s.public)
    return s


@pytest.fixture
def app(letters: Path, signer: WebhookSigner) -> Iterator[object]:
    from starlette.testclient import TestClient

    from newsletter.web import create_app

    with TestClient(create_app(letters)) as client:  # its lifespan runs serve's SendGrid pusher
        yield client


def _webhook(client: object, signer: WebhookSigner, *events: dict) -> None:
    body = json.dumps([{"timestamp": int(time.time()), "sg_event_id": f"e{i}-{time.monotonic_ns()}", **e}
                       for i, e in enumerate(events)]).encode()
    answer = client.post("/webhooks/sendgrid", content=body, headers=signer.headers(body))  # type: ignore[attr-defined]
    assert answer.status_code == 200, answer.text


def _transport() -> SendGridTransport:
    return SendGridTransport(API_KEY, timeout=5)


def test_a_push_never_lifts_what_sendgrid_itself_recorded(letters: Path, fake: FakeSendGrid, app: object,
                                                          signer: WebhookSigner) -> None:
    # Ada signs up and confirms; later she unsubscribes through SendGrid's own group link.
    signed_up = int(time.time()) - 60
    confirmed = app.post(f"/confirm/{make_confirm_token('test-secret-0123456789', 'ada@readers.net', signed_up)}")  # type: ignore[attr-defined]
    assert confirmed.status_code == 200, confirmed.text
    wait_for(lambda: not len(waiting(letters)), what="the confirmation's lift to reach SendGrid")
    fake.group_suppressions.setdefault(str(GROUP), set()).add("ada@readers.net")
    _webhook(app, signer, {"email": "ada@readers.net", "event": "group_unsubscribe", "asm_group_id": GROUP})
    assert Ledger(ledger_path(letters)).is_suppressed("ada@readers.net")
    wait_for(lambda: not len(waiting(letters)), what="serve's pusher")
    assert Cli(letters)("sync").exit_code == 0
    deletes = [p for m, p, _ in fake.suppression_requests if m == "DELETE" and "ada" in p]
    assert deletes == [f"/v3/asm/groups/{GROUP}/suppressions/ada@readers.net",
                       "/v3/asm/suppressions/global/ada@readers.net"]  # the confirmation's lift, before the opt-out
    assert fake.suppressed("ada@readers.net", GROUP)  # and nothing since: SendGrid still drops her mail


def test_a_confirmed_sign_up_lifts_the_suppression_at_sendgrid(letters: Path, fake: FakeSendGrid, app: object) -> None:
    recording = open_ledger(letters).record([ledger_event("bob@readers.net", Kind.UNSUBSCRIBE,
                                                          at="2026-01-05T10:00:00Z")])
    assert fake.suppressed("bob@readers.net", GROUP), (recording, fake.suppression_requests)
    token = make_confirm_token("test-secret-0123456789", "bob@readers.net", int(time.time()))  # signed up since
    answer = app.post(f"/confirm/{token}")  # type: ignore[attr-defined]
    assert answer.status_code == 200 and "You are subscribed" in answer.text
    wait_for(lambda: not fake.suppressed("bob@readers.net", GROUP), what="the lift to reach SendGrid")
    assert not Ledger(ledger_path(letters)).is_suppressed("bob@readers.net")


def test_a_return_lifts_sendgrids_own_global_unsubscribe_too(letters: Path, fake: FakeSendGrid, app: object,
                                                             signer: WebhookSigner) -> None:
    fake.global_suppressions.add("ada@readers.net")  # SendGrid's own (global) unsubscribe link
    _webhook(app, signer, {"email": "ada@readers.net", "event": "unsubscribe"})
    wait_for(lambda: not len(waiting(letters)), what="serve's pusher")
    assert not [r for r in fake.suppression_requests if r[0] == "POST"]  # SendGrid knows: nothing pushed back
    result = Cli(letters)("resubscribe", "ada@readers.net")
    assert result.exit_code == 0, result.output
    # The command's push or serve's pusher (whichever reads the new line first) lifts it, global included.
    wait_for(lambda: not fake.suppressed("ada@readers.net", GROUP), what="the lift at SendGrid")
    assert not len(waiting(letters))


def test_what_cannot_be_pushed_waits_in_the_ledger_until_sendgrid_is_back(letters: Path, fake: FakeSendGrid) -> None:
    fake.suppressions_down = True
    cli = Cli(letters)
    result = cli("unsubscribe", "ada@readers.net")
    assert result.exit_code == 0 and "SendGrid not told yet (SendGrid answered 500" in result.output
    assert waiting(letters).add == ["ada@readers.net"]
    fake.suppressions_down = False
    synced = cli("sync")
    assert synced.exit_code == 0 and "pushed 1 address(es)" in synced.output
    assert fake.suppressed("ada@readers.net", GROUP) and not len(waiting(letters))


def test_a_lift_sendgrid_could_not_hear_waits_for_the_next_push(letters: Path, fake: FakeSendGrid) -> None:
    ledger = open_ledger(letters)
    assert ledger.record([ledger_event("ada@readers.net", Kind.UNSUBSCRIBE)]).pushed == 1
    fake.suppressions_down = True  # SendGrid answers 500 to every add and delete
    recording = ledger.record([ledger_event("ada@readers.net", Kind.RESUBSCRIBE)])
    assert recording.pushed == 0 and "SendGrid answered 500" in recording.waiting
    with pytest.raises(TransportError):
        push(ledger, _transport(), GROUP)
    assert fake.suppressed("ada@readers.net", GROUP) and waiting(letters).remove == ["ada@readers.net"]
    fake.suppressions_down = False
    assert push(ledger, _transport(), GROUP) == 1  # the offset stayed: the lift is told now
    assert not fake.suppressed("ada@readers.net", GROUP) and not len(waiting(letters))
    deletes = [p for m, p, _ in fake.suppression_requests if m == "DELETE"]
    assert deletes == [f"/v3/asm/groups/{GROUP}/suppressions/ada@readers.net",
                       "/v3/asm/suppressions/global/ada@readers.net"]


def test_an_address_the_ledger_suppresses_is_never_deleted_there(letters: Path, fake: FakeSendGrid) -> None:
    ledger = open_ledger(letters)
    ledger.record([ledger_event("ada@readers.net", Kind.UNSUBSCRIBE)])
    # An old resubscribe (dated before the unsubscribe) arrives after it: it changes nothing, so nothing is lifted.
    ledger.record([ledger_event("ada@readers.net", Kind.RESUBSCRIBE, at="2020-01-01T00:00:00Z")])
    ledger.record([ledger_event("ada@readers.net", Kind.BOUNCE, source=Source.SENDGRID)])
    push(ledger, _transport(), GROUP)
    assert not [r for r in fake.suppression_requests if r[0] == "DELETE"]
    assert fake.suppressed("ada@readers.net", GROUP)


def test_pull_records_listings_at_their_own_time(letters: Path, fake: FakeSendGrid) -> None:
    path = ledger_path(letters)
    record(path, "ada@readers.net", "unsubscribe")
    record(path, "ada@readers.net", "resubscribe")  # she came back after SendGrid listed her (below)
    long_ago = int(time.time()) - 86400
    fake.suppressions["/v3/suppression/unsubscribes"] = [{"email": "ada@readers.net", "created": long_ago},
                                                        {"email": "cy@readers.net", "created": long_ago}]
    fake.suppressions["/v3/suppression/bounces"] = [{"email": "Bob@Readers.net", "created": long_ago,
                                                     "reason": "550 unknown user"}]
    report = sync(letters, _transport())
    assert report.appended["suppression/unsubscribes"] == 1 and report.appended["suppression/bounces"] == 1
    ledger = Ledger(path)
    assert not ledger.is_suppressed("ada@readers.net")  # the listing is older than her return
    assert ledger.is_suppressed("cy@readers.net") and ledger.event_of("bob@readers.net") is Kind.BOUNCE
    bob = [line for line in path.read_text().splitlines() if line.startswith("bob@")]
    assert bob[0].split(",")[2] == time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(long_ago))
    assert sync(letters, _transport()).appended == {k: 0 for k in report.appended}  # idempotent
    assert not len(plan(Ledger(path)))


def ledger_event(email: str, kind: Kind, *, at: str = "", source: str = Source.CLI):  # type: ignore[no-untyped-def]
    from newsletter.ledger import Event

    return Event(email, kind, at, source)


def test_pull_reads_every_page_and_only_what_is_new_since_the_last_pull(letters: Path, fake: FakeSendGrid) -> None:
    from urllib.parse import parse_qs, urlsplit

    now = int(time.time())
    fake.suppressions["/v3/suppression/bounces"] = [{"email": f"b{i}@readers.net", "created": now - 7200}
                                                    for i in range(1001)]  # three pages of 500
    fake.suppressions["/v3/suppression/invalid_emails"] = [
        {"email": "not an address", "created": now}, {"email": "Iv@Readers.net", "created_at": str(now - 60)}]
    fake.suppressions["/v3/asm/suppressions"] = [{"email": "grp@readers.net", "group_name": "Weekly"},
                                                 {"email": "old@readers.net", "created": "yesterday"}]
    ledger = Ledger(ledger_path(letters))
    report = pull(ledger, _transport())
    assert report.since == 0 and report.fetched["suppression/bounces"] == 1001
    assert report.appended["suppression/bounces"] == 1001 and report.appended["suppression/invalid_emails"] == 1
    pages = [parse_qs(urlsplit(p).query) for p in fake.list_requests if "/bounces" in p]
    assert [(q["limit"], q["offset"]) for q in pages] == [(["500"], ["0"]), (["500"], ["500"]), (["500"], ["1000"])]
    assert [p for p in fake.list_requests if "/asm/" in p] == ["/v3/asm/suppressions"]  # one answer, no pages
    lines = {line.split(",")[0]: line for line in ledger_path(letters).read_text().splitlines()[1:]}
    assert lines["iv@readers.net"].split(",")[2] == time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now - 60))
    assert lines["old@readers.net"].split(",")[2] == "1970-01-01T00:00:01Z"  # undated: as old as can be
    assert "asm/suppressions: Weekly" in lines["grp@readers.net"] and "not an address" not in str(lines)
    last = json.loads(pull_state_path(letters).read_text())["last_sync"]
    assert now - 5 <= last <= time.time()
    fake.list_requests.clear()
    again = pull(Ledger(ledger_path(letters)), _transport())
    assert again.since == last and again.appended["suppression/bounces"] == 0
    first = parse_qs(urlsplit(fake.list_requests[0]).query)
    assert first["start_time"] == [str(last - 300)]  # since the last pull, with an overlap
    assert all("start_time" not in p for p in fake.list_requests if "/asm/" in p)
    fake.list_requests.clear()
    pull(Ledger(ledger_path(letters)), _transport(), full=True)
    assert all("start_time" not in p for p in fake.list_requests)


def test_an_answer_that_is_not_a_list_is_a_transport_error(letters: Path, fake: FakeSendGrid) -> None:
    fake.suppressions["/v3/asm/suppressions"] = {"error": "not a list"}  # type: ignore[assignment]
    with pytest.raises(TransportError, match="GET /v3/asm/suppressions answered something that is not a list"):
        pull(Ledger(ledger_path(letters)), _transport())
    assert not pull_state_path(letters).exists()  # not pulled: the next pull starts from the same time


def test_serves_pusher_retries_until_sendgrid_is_back(letters: Path, fake: FakeSendGrid,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    ledger = Ledger(ledger_path(letters))
    pusher = BackgroundPusher(ledger, retry=0.01, max_retry=0.02)
    ledger.follow = pusher.follow
    fake.suppressions_down = True
    pusher.start()
    try:
        recording = ledger.record([ledger_event("ada@readers.net", Kind.UNSUBSCRIBE)])
        assert (recording.pushed, recording.waiting) == (0, "")  # the request never waits for SendGrid
        wait_for(lambda: "trying again in" in caplog.text, what="the pusher's first failure")
        assert "opt-outs not pushed to SendGrid yet: SendGrid answered 500" in caplog.text
        assert not fake.suppressed("ada@readers.net", GROUP)
        fake.suppressions_down = False
        wait_for(lambda: fake.suppressed("ada@readers.net", GROUP), what="the retry")
        wait_for(lambda: pusher.pushed == 1, what="the count")
        ledger.record([ledger_event("bob@readers.net", Kind.SPAMREPORT)])
        wait_for(lambda: fake.suppressed("bob@readers.net", GROUP), what="the next nudge")
    finally:
        pusher.stop()
    assert pusher._thread is not None and not pusher._thread.is_alive()
    assert pusher.pushed == 2 and not len(waiting(letters))
    assert push_state_path(letters).exists()


def test_a_line_appended_after_the_ledger_was_read_waits_for_the_next_push(letters: Path, fake: FakeSendGrid) -> None:
    # serve's pusher read the ledger; a command then appends an opt-out before the pusher plans: judged on a
    # state without its line, the address looked "not suppressed" and the push lifted a fresh opt-out.
    served = Ledger(ledger_path(letters))
    Ledger(ledger_path(letters)).record([ledger_event("bob@readers.net", Kind.UNSUBSCRIBE)])  # no follower
    assert not len(plan(served))  # nothing it has not read
    assert push(served, _transport(), GROUP) == 1  # a push reads first: then it adds, never lifts
    assert fake.suppressed("bob@readers.net", GROUP)
    Ledger(ledger_path(letters)).record([ledger_event("cy@readers.net", Kind.UNSUBSCRIBE)])  # after that push
    assert not len(plan(served))  # from the pushed offset on, too
    assert push(served, _transport(), GROUP) == 1 and fake.suppressed("cy@readers.net", GROUP)
    assert not [r for r in fake.suppression_requests if r[0] == "DELETE"]


def test_commands_open_the_ledger_strictly_and_sync_pushes_to_the_group(letters: Path, fake: FakeSendGrid) -> None:
    from newsletter.errors import LedgerError

    path = ledger_path(letters)
    path.parent.mkdir(exist_ok=True)
    path.write_text("email,event,at,source,detail\nada;unsubscribe;2026-01-05\n")
    with pytest.raises(LedgerError):
        open_ledger(letters)
    assert open_ledger(letters, strict=False).unreadable  # the writers' own tail reads go on
    path.write_text("email,event,at,source,detail\nada@readers.net,unsubscribe,2026-01-05T00:00:00Z,cli,\n")
    assert sync(letters, _transport()).pushed == 1
    assert fake.group_suppressions == {str(GROUP): {"ada@readers.net"}} and not fake.global_suppressions


def test_push_tells_sendgrid_in_batches_beside_its_own_lock_and_state(letters: Path, fake: FakeSendGrid) -> None:
    ledger = Ledger(ledger_path(letters))
    ledger.record([ledger_event("ada@readers.net", Kind.UNSUBSCRIBE), ledger_event("bob@readers.net", Kind.SPAMREPORT)])
    assert push(ledger, _transport(), GROUP) == 2
    assert [(m, p, b["recipient_emails"]) for m, p, b in fake.suppression_requests] == [
        ("POST", f"/v3/asm/groups/{GROUP}/suppressions", ["ada@readers.net", "bob@readers.net"])]  # one request
    assert push_state_path(letters) == letters / "subscribers" / "sendgrid-push.json"
    assert pull_state_path(letters) == letters / "subscribers" / "sync.json"
    assert json.loads(push_state_path(letters).read_text()) == {"offset": ledger_path(letters).stat().st_size}
    assert (letters / "subscribers" / "sendgrid-push.json.lock").exists()  # the lock beside the state it guards


def test_without_a_key_what_waits_says_so(ready_project: Path) -> None:
    from newsletter.suppressions import push_now

    ledger = open_ledger(ready_project)
    assert push_now(ledger) == (0, "")  # nothing waits: nothing to say
    recording = ledger.record([ledger_event("ada@readers.net", Kind.UNSUBSCRIBE)])
    assert (recording.pushed, recording.waiting) == (0, "SENDGRID_API_KEY is not set")
    assert waiting(ready_project).add == ["ada@readers.net"]


def test_a_full_sync_reads_every_list_from_the_start(letters: Path, fake: FakeSendGrid) -> None:
    sync(letters, _transport())
    fake.list_requests.clear()
    sync(letters, _transport(), full=True)
    assert fake.list_requests and all("start_time" not in p for p in fake.list_requests)


def test_sync_pages_through_every_list_and_is_idempotent(ready_project: Path, fake: FakeSendGrid,
                                                          env: dict[str, str]) -> None:
    now = int(time.time())
    fake.suppressions = {
        "/v3/suppression/unsubscribes": [{"email": f"U{i}@Readers.net", "created": now - 100} for i in range(1203)],
        "/v3/suppression/bounces": [{"email": "b@readers.net", "created": now, "reason": "550 no such user",
                                     "status": "5.1.1"}],
        "/v3/suppression/spam_reports": [{"email": "s@readers.net", "created": now, "ip": "10.0.0.1"}],
        "/v3/suppression/invalid_emails": [{"email": "i@readers.net", "created": now, "reason": "bad"}],
        "/v3/asm/suppressions": [{"email": "g@readers.net", "group_id": 7, "group_name": "Weekly",
                                  "created_at": now}],
    }
    record(ledger_path(ready_project), "u5@readers.net", "unsubscribe")  # already known
    cli = Cli(ready_project)
    result = cli("sync")
    assert result.exit_code == 0, result.output
    assert "suppression/unsubscribes: 1203 listed, 1202 new in the ledger" in result.output
    assert "appended 1206 event(s)" in result.output
    pages = [p for p in fake.list_requests if p.startswith("/v3/suppression/unsubscribes")]
    assert len(pages) == 3 and "offset=1000" in pages[2] and "limit=500" in pages[0]
    ledger = Ledger(ledger_path(ready_project))
    for address, event in [("u1202@readers.net", "unsubscribe"), ("b@readers.net", "bounce"),
                           ("s@readers.net", "spamreport"), ("i@readers.net", "invalid"),
                           ("g@readers.net", "unsubscribe")]:
        assert ledger.event_of(address) == event
    again = cli("sync", "--full")
    assert "appended 0 event(s)" in again.output
    lines = ledger_path(ready_project).read_text().splitlines()
    assert len(lines) == 1 + 1 + 1206


def test_sync_respects_a_later_resubscribe(ready_project: Path, fake: FakeSendGrid, env: dict[str, str]) -> None:
    now = int(time.time())
    record(ledger_path(ready_project), "back@readers.net", "unsubscribe")
    record(ledger_path(ready_project), "back@readers.net", "resubscribe")
    record(ledger_path(ready_project), "again@readers.net", "resubscribe")
    fake.suppressions = {"/v3/suppression/unsubscribes": [
        {"email": "back@readers.net", "created": now - 86400},  # listed before they came back
        {"email": "again@readers.net", "created": now + 60},  # unsubscribed again after resubscribing
    ]}
    assert Cli(ready_project)("sync").exit_code == 0
    ledger = Ledger(ledger_path(ready_project))
    assert not ledger.is_suppressed("back@readers.net")
    assert ledger.is_suppressed("again@readers.net")


def _ledger_rows(root: Path) -> dict[str, list[str]]:
    import csv

    with ledger_path(root).open(newline="", encoding="utf-8") as fh:
        return {row[0]: row for row in list(csv.reader(fh))[1:]}


def test_pull_records_each_listing_as_sendgrids_with_its_reason(letters: Path, fake: FakeSendGrid) -> None:
    long_ago = int(time.time()) - 86400
    fake.suppressions["/v3/suppression/bounces"] = [
        {"email": "b@readers.net", "created": long_ago, "reason": "550 unknown user", "group_name": "not this"},
        {"email": "long@readers.net", "created": long_ago, "reason": "x" * 300}]
    fake.suppressions["/v3/suppression/unsubscribes"] = [{"email": "u@readers.net", "created": long_ago},
                                                        {"created": long_ago}]  # no address: skipped
    fake.suppressions["/v3/asm/suppressions"] = [{"email": "g@readers.net", "group_name": "Notes on UX"}]
    pull(Ledger(ledger_path(letters)), _transport())
    rows = _ledger_rows(letters)
    assert sorted(rows) == ["b@readers.net", "g@readers.net", "long@readers.net", "u@readers.net"]
    assert {row[3] for row in rows.values()} == {Source.SENDGRID}
    assert rows["b@readers.net"][4] == "suppression/bounces: 550 unknown user"
    assert rows["long@readers.net"][4] == "suppression/bounces: " + "x" * 200  # a reason is cut at 200 characters
    assert rows["u@readers.net"][4] == "suppression/unsubscribes"  # no reason: the list alone
    assert rows["g@readers.net"][4] == "asm/suppressions: Notes on UX"


def test_an_opt_out_recorded_while_sync_pulls_reaches_the_group_before_it_ends(letters: Path,
                                                                                fake: FakeSendGrid) -> None:
    class Busy(SendGridTransport):
        """SendGrid's answers, and a command that records an opt-out while the first list is read."""

        def get_json(self, path: str, params: dict | None = None) -> object:  # type: ignore[override]
            if not fake.list_requests:
                Ledger(ledger_path(letters)).record([ledger_event("bob@readers.net", Kind.UNSUBSCRIBE)])
            return super().get_json(path, params)

    report = sync(letters, Busy(API_KEY, timeout=5))
    assert report.pushed == 0  # nothing waited when it began
    assert fake.group_suppressions == {str(GROUP): {"bob@readers.net"}} and not fake.global_suppressions
    assert not len(waiting(letters))


def test_sync_reads_only_what_is_new_unless_full_and_a_state_without_a_time_reads_all(
        letters: Path, fake: FakeSendGrid) -> None:
    pull_state_path(letters).parent.mkdir(exist_ok=True)
    pull_state_path(letters).write_text("{}\n")  # written by hand, without its time: read from the start
    assert sync(letters, _transport()).since == 0
    assert fake.list_requests and all("start_time" not in p for p in fake.list_requests)
    fake.list_requests.clear()
    assert sync(letters, _transport()).since > 0  # since the last sync
    assert all("start_time" in p for p in fake.list_requests if "/suppression/" in p)


def test_a_push_with_nothing_new_leaves_its_state_file_alone(letters: Path, fake: FakeSendGrid) -> None:
    ledger = Ledger(ledger_path(letters))
    ledger.record([ledger_event("ada@readers.net", Kind.UNSUBSCRIBE)])
    assert push(ledger, _transport(), GROUP) == 1
    before = push_state_path(letters).stat()
    assert push(ledger, _transport(), GROUP) == 0
    after = push_state_path(letters).stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)  # not rewritten


def test_a_state_file_that_cannot_be_written_is_an_error_naming_it(letters: Path, fake: FakeSendGrid) -> None:
    from newsletter.errors import StorageError

    ledger = Ledger(ledger_path(letters))
    ledger.record([ledger_event("ada@readers.net", Kind.UNSUBSCRIBE)])
    push_state_path(letters).mkdir(parents=True)  # where the file goes, a folder: os.replace fails
    pull_state_path(letters).mkdir()
    with pytest.raises(StorageError, match="could not record how far SendGrid was told"):
        push(ledger, _transport(), GROUP)
    with pytest.raises(StorageError, match="could not record the time of this sync"):
        pull(ledger, _transport())


def test_a_commands_push_takes_the_key_as_set_and_waits_no_longer_than_configured(
        letters: Path, fake: FakeSendGrid, monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    from newsletter.suppressions import push_now

    ledger = Ledger(ledger_path(letters))
    ledger.record([ledger_event("ada@readers.net", Kind.UNSUBSCRIBE)])
    monkeypatch.setenv("SENDGRID_API_KEY", f" {API_KEY}\n")  # pasted with a space and a line break around it
    assert push_now(ledger) == (1, "") and fake.suppressed("ada@readers.net", GROUP)
    ledger.record([ledger_event("bob@readers.net", Kind.UNSUBSCRIBE)])
    configure(letters, timeout=1)  # the last `sendgrid:` block read wins
    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts the connection, never answers
        monkeypatch.setenv("SENDGRID_API_URL", f"http://127.0.0.1:{silent.getsockname()[1]}")
        pushed, why = push_now(ledger)
    assert (pushed, why.split(" (")[0]) == (0, "no answer from SendGrid within 1 s")
    assert waiting(letters).add == ["bob@readers.net"]
