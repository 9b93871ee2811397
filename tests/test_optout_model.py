"""A model of who may be mailed: random interleavings of every way an opt-out or a return arrives.

hypothesis drives the real library and the real web app (Starlette's TestClient, its SendGrid pusher running)
against the fake SendGrid over HTTP: command-line unsubscribes and resubscribes, one-click, sign-up
confirmations with old and new links, webhook events of every kind (dropped reasons included), dated imports,
and sync. After every step: the ledger's state equals an independent fold of its lines by the rule (latest
event by time, ties by file order; a confirmation lifts only a sign-up asked for after the latest suppressing
event), who is mailable follows it, and SendGrid's suppressions agree for every address it was told about.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import os
import shutil
import tempfile
import time
import unicodedata
from pathlib import Path
from typing import Any

import pytest
from conftest import FILLED_CONFIG, SECRET, WebhookSigner, wait_for
from fake_sendgrid import API_KEY, FakeSendGrid
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from newsletter.ledger import Kind, Ledger, ledger_path
from newsletter.sendgrid import SendGridTransport
from newsletter.subscribers import count_subscribers, import_exports, record_ledger_events
from newsletter.suppressions import sync, waiting
from newsletter.tokens import make_confirm_token, make_token

GROUP = 42
PREFIX = "/letters"
ADDRESSES = ["ada@readers.net", "bob@readers.net", "josé@readers.net"]
SUPPRESSING = {"unsubscribe", "bounce", "spamreport", "invalid", "unreadable"}
WEBHOOK_EVENTS = [  # (SendGrid event, what it suppresses, if anything)
    ({"event": "unsubscribe"}, "unsubscribe"),
    ({"event": "group_unsubscribe", "asm_group_id": GROUP}, "unsubscribe"),
    ({"event": "group_resubscribe", "asm_group_id": GROUP}, None),
    ({"event": "spamreport"}, "spamreport"),
    ({"event": "bounce", "type": "bounce", "reason": "550 no such user"}, "bounce"),
    ({"event": "bounce", "type": "blocked", "reason": "452 mailbox full"}, None),
    ({"event": "dropped", "reason": "Bounced Address"}, "bounce"),
    ({"event": "dropped", "reason": "Unsubscribed Address"}, "unsubscribe"),
    ({"event": "dropped", "reason": "Spam Reporting Address"}, "spamreport"),
    ({"event": "dropped", "reason": "Invalid"}, "invalid"),
    ({"event": "dropped", "reason": "Recipient List over Package Quota"}, None),
    ({"event": "dropped", "reason": "Spam Content"}, None),
    ({"event": "dropped", "reason": "Invalid SMTPAPI header"}, None),
    ({"event": "delivered"}, None),
]


def spellings(address: str) -> list[str]:
    """The ways one reader's address arrives: any case, padded, decomposed (NFD)."""
    return [address, address.upper(), f"  {address} ", unicodedata.normalize("NFD", address).title()]


def _secs(at: str) -> int:
    return int(dt.datetime.fromisoformat(at).timestamp())


def oracle(path: Path) -> dict[str, tuple[bool, str, str]]:
    """address -> (suppressed, deciding event, its source), by folding the ledger's lines in time order."""
    events: dict[str, list[tuple[int, int, str, int, str]]] = {}
    if path.exists():
        with open(path, encoding="utf-8", newline="") as fh:
            for line, row in enumerate(csv.reader(fh)):
                if line == 0 or len(row) != 5:
                    continue
                email, kind, at, source, detail = row
                signed = _secs(detail.split()[2].rstrip(";")) if kind == "subscribe" else 0
                events.setdefault(unicodedata.normalize("NFC", email.strip().lower()), []).append(
                    (_secs(at), line, kind, signed, source))
    out = {}
    for email, evs in events.items():
        state, source, last_supp = "", "", -1
        for at, _, kind, signed, src in sorted(evs):
            if kind in SUPPRESSING:
                state, source, last_supp = kind, src, at
            elif kind == "resubscribe" or (kind == "subscribe" and (not state or signed > last_supp)):
                state, source = "", src
        out[email] = (bool(state), state, source)
    return out


class OptOuts(RuleBasedStateMachine):
    """One newsletter, three readers on its list, every door an opt-out (or a return) comes through."""

    fake: FakeSendGrid
    signer: WebhookSigner

    @initialize()
    def start(self) -> None:
        from starlette.testclient import TestClient

        from newsletter.web import create_app

        self.dir = Path(tempfile.mkdtemp(prefix="optout-model-"))
        self.root = self.dir / "letters"
        (self.root / "subscribers").mkdir(parents=True)
        (self.root / "newsletter.yaml").write_text(
            FILLED_CONFIG.replace("base_url: https://letters.micromoments.net",
                                  f"base_url: https://micromoments.net{PREFIX}")
            + f"sendgrid:\n  asm_group_id: {GROUP}\n  timeout: 5\n", encoding="utf-8")
        with open(self.root / "subscribers" / "subscribers.csv", "w", encoding="utf-8") as fh:
            fh.write("email,name\n" + "".join(f"{a},\n" for a in ADDRESSES))
        self.fake.reset()
        self.links: list[tuple[str, int]] = []
        self.client = TestClient(create_app(self.root))
        self.client.__enter__()  # the lifespan: serve's SendGrid pusher runs

    def teardown(self) -> None:
        if hasattr(self, "client"):
            self.client.__exit__(None, None, None)
            shutil.rmtree(self.dir, ignore_errors=True)

    def state(self) -> dict[str, tuple[bool, str, str]]:
        return oracle(ledger_path(self.root))

    def suppressed(self, address: str) -> bool:
        return self.state().get(address, (False, "", ""))[0]

    # -- the doors ----------------------------------------------------------------------------------------
    @rule(who=st.sampled_from(ADDRESSES), spelling=st.integers(0, 3),
          kind=st.sampled_from(["unsubscribe", "bounce", "spamreport", "invalid"]))
    def command_line_suppresses(self, who: str, spelling: int, kind: str) -> None:
        record_ledger_events(self.root, [spellings(who)[spelling]], Kind(kind))
        assert self.suppressed(who)

    @rule(who=st.sampled_from(ADDRESSES), spelling=st.integers(0, 3))
    def command_line_resubscribes(self, who: str, spelling: int) -> None:
        record_ledger_events(self.root, [spellings(who)[spelling]], Kind.RESUBSCRIBE)
        assert not self.suppressed(who)

    @rule(who=st.sampled_from(ADDRESSES))
    def one_click(self, who: str) -> None:
        answer = self.client.post(f"{PREFIX}/unsubscribe/{make_token(SECRET, who)}",
                                  content=b"List-Unsubscribe=One-Click",
                                  headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert answer.status_code == 200
        assert self.suppressed(who)

    @rule(who=st.sampled_from(ADDRESSES))
    def signs_up(self, who: str) -> None:
        self.links.append((who, int(time.time())))  # the confirmation link the email would carry

    @precondition(lambda self: bool(self.links))
    @rule(pick=st.integers(0, 1000))
    def confirms(self, pick: int) -> None:
        who, signed_up = self.links[pick % len(self.links)]
        before = self.state().get(who, (False, "", ""))
        answer = self.client.post(f"{PREFIX}/confirm/{make_confirm_token(SECRET, who, signed_up)}")
        assert answer.status_code in (200, 409), answer.text
        if answer.status_code == 409:  # an old link: it lifts nothing and writes nothing
            assert before[0] and self.suppressed(who)
            assert "older than your unsubscribe" in answer.text
        else:
            assert not self.suppressed(who)

    @rule(who=st.sampled_from(ADDRESSES), which=st.integers(0, len(WEBHOOK_EVENTS) - 1))
    def sendgrid_reports(self, who: str, which: int) -> None:
        event, suppresses = WEBHOOK_EVENTS[which]
        before = self.state().get(who, (False, "", ""))
        if event["event"] == "unsubscribe":  # the reader used SendGrid's own link: its lists hold them
            self.fake.global_suppressions.add(who)
            self.fake.suppressions.setdefault("/v3/suppression/unsubscribes", []).append(
                {"email": who, "created": int(time.time())})
        elif event["event"] == "group_unsubscribe":
            self.fake.group_suppressions.setdefault(str(GROUP), set()).add(who)
        elif event["event"] == "group_resubscribe":
            self.fake.group_suppressions.setdefault(str(GROUP), set()).discard(who)
        body = json.dumps([{**event, "email": who.upper(), "timestamp": int(time.time()),
                            "sg_event_id": os.urandom(8).hex()}]).encode()
        answer = self.client.post(f"{PREFIX}/webhooks/sendgrid", content=body, headers=self.signed(body))
        assert answer.status_code == 200, answer.text
        if suppresses:
            assert self.suppressed(who)
        elif event["event"] == "group_resubscribe":
            assert not self.suppressed(who)
        else:  # not the reader's reason: the ledger is as it was
            assert self.state().get(who, (False, "", "")) == before

    @rule(who=st.sampled_from(ADDRESSES), dated=st.sampled_from(["2021-03-04 05:06:07", ""]),
          status=st.sampled_from(["unsubscribed", "cleaned"]))
    def imports_an_old_export(self, who: str, dated: str, status: str) -> None:
        # Mailchimp's per-status files: unsubscribed (UNSUB_TIME) and cleaned, i.e. bounced (CLEAN_TIME)
        column = "UNSUB_TIME" if status == "unsubscribed" else "CLEAN_TIME"
        export = self.dir / f"{status}_members_export_4f1e2a.csv"
        export.write_text(f"Email Address,{column}\n{who},{dated}\n", encoding="utf-8")
        import_exports(self.root, [export])
        if not dated:  # undated: it counts from now
            assert self.suppressed(who)

    @rule()
    def syncs(self) -> None:
        sync(self.root, SendGridTransport(API_KEY, timeout=5))

    # -- what must hold after every step --------------------------------------------------------------------
    @invariant()
    def the_ledger_and_the_list_follow_the_rule(self) -> None:
        if not hasattr(self, "client"):
            return
        expected = self.state()
        ledger = Ledger(ledger_path(self.root))
        app = self.client.app
        while not hasattr(app, "state"):  # the middlewares around the Starlette app
            app = app.app  # type: ignore[attr-defined]
        served = app.state.newsletter.ledger  # type: ignore[attr-defined]
        served.refresh()
        for who in ADDRESSES:
            want = expected.get(who, (False, "", ""))[0]
            for spelled in spellings(who):
                assert ledger.is_suppressed(spelled) == want, (who, spelled, expected)
            assert served.is_suppressed(who) == want
        assert count_subscribers(self.root).active == sum(not expected.get(a, (False,))[0] for a in ADDRESSES)

    @invariant()
    def sendgrid_agrees_for_everyone_it_was_told_about(self) -> None:
        if not hasattr(self, "client"):
            return
        # serve's pusher works in the background
        wait_for(lambda: not len(waiting(self.root)), what="SendGrid to be told")
        for who, (suppressed, kind, source) in self.state().items():
            at_sendgrid = self.fake.suppressed(who, GROUP)
            if not suppressed:
                assert not at_sendgrid, (who, self.state())
            elif kind in ("unsubscribe", "spamreport") and source != "sendgrid":
                assert at_sendgrid, (who, self.state())

    def signed(self, body: bytes) -> dict[str, str]:
        return self.signer.headers(body)


@pytest.fixture
def model_env(monkeypatch: pytest.MonkeyPatch) -> Any:
    fake = FakeSendGrid().start()
    signer = WebhookSigner()
    for name, value in {"SENDGRID_API_URL": fake.url, "SENDGRID_API_KEY": API_KEY, "NEWSLETTER_SECRET": SECRET,
                        "SENDGRID_WEBHOOK_PUBLIC_KEY": signer.public}.items():
        monkeypatch.setenv(name, value)
    OptOuts.fake, OptOuts.signer = fake, signer
    yield fake
    fake.stop()  # fails if a body broke SendGrid's schema


def test_who_may_be_mailed_follows_the_rule_whatever_the_order(model_env: FakeSendGrid) -> None:
    from hypothesis.stateful import run_state_machine_as_test

    run_state_machine_as_test(OptOuts, settings=settings(
        max_examples=int(os.environ.get("MODEL_EXAMPLES", "20")), stateful_step_count=14, deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much]))
