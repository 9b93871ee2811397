"""SendGrid's Event Webhook as SendGrid sends it (signed, batched), posted to `web.create_app` through Starlette's
TestClient; and a send to the fake SendGrid whose readers the events are about."""

from __future__ import annotations

import itertools
import json
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import Cli, WebhookSigner, configure, write_list
from starlette.testclient import TestClient

from newsletter.journal import journal_path, load_state
from newsletter.web import create_app

_ids = itertools.count(1)


class SignedWebhook:
    """Posts event batches to <base_url>/webhooks/sendgrid of the app, signed with a key of its own."""

    def __init__(self, root: Path, monkeypatch: pytest.MonkeyPatch, prefix: str = "") -> None:
        self.root = root
        self.prefix = prefix
        self.signer = WebhookSigner()
        monkeypatch.setenv("SENDGRID_WEBHOOK_PUBLIC_KEY", self.signer.public)
        self.client = TestClient(create_app(root))

    def restart(self) -> None:
        """A new app, as after `serve` restarts: its index is rebuilt from the events log."""
        self.client = TestClient(create_app(self.root))

    def post(self, events: list[dict[str, Any]]) -> dict[str, Any]:
        """One signed batch; returns the app's answer (asserted 200)."""
        body = (json.dumps(events) + "\r\n").encode()  # SendGrid's bodies end in CRLF: signed as sent
        response = self.client.post(f"{self.prefix}/webhooks/sendgrid", content=body, headers=self.signer.headers(body))
        assert response.status_code == 200, response.text
        return dict(response.json())


def event(kind: str, email: str, slug: str = "", *, message: str = "", at: float | None = None,
          **fields: Any) -> dict[str, Any]:
    """One SendGrid event as the webhook carries it (custom arg `newsletter_issue` top level)."""
    n = next(_ids)
    e: dict[str, Any] = {"email": email, "timestamp": int(at if at is not None else time.time()),
                         "smtp-id": f"<{n}@ismtpd0001p1lon1.sendgrid.net>", "event": kind,
                         "category": ["newsletter"], "sg_event_id": f"ev-{n}",
                         "sg_message_id": message or f"msg-{slug}-{email}.filterdrecv-1", **fields}
    if slug:
        e["newsletter_issue"] = slug
    return e


def send_issue(cli: Cli, slug: str, emails: list[str]) -> float:
    """The list is exactly `emails`; `newsletter send --yes` to the fake; returns when the send started."""
    write_list(cli.root, [(e, "") for e in emails])
    result = cli("send", "--issue", slug, "--yes")
    assert result.exit_code == 0, result.output
    started = load_state(journal_path(cli.root, slug)).first_sent_at()
    assert started is not None
    return started.timestamp()


NEXT_WORKSHOP_URL = "https://micromoments.net/workshops/betrayal"


def with_tracking(root: Path, extra: str = "") -> None:
    """Open and click tracking on, and a register URL for the next workshop (so the workshop block links it)."""
    path = root / "newsletter.yaml"
    path.write_text(path.read_text().replace(
        "  betrayal-forgiveness-redemption:\n",
        f"  betrayal-forgiveness-redemption:\n    register_url: {NEXT_WORKSHOP_URL}\n") + extra)
    configure(root, open_tracking=True, click_tracking=True)
