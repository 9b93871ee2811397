"""What SendGrid tells us: signed Event Webhook batches, the events log, and their mapping to the ledger."""

from __future__ import annotations

import base64
import binascii
import json
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import WEBHOOK_PUBLIC_KEY_ENV as PUBLIC_KEY_ENV
from .errors import HttpError
from .files import append_durably, read_jsonl
from .ledger import Event, Kind, Ledger, Source
from .recipients import is_plausible, normalize

EVENTS_NAME = "events.jsonl"
SIGNATURE_HEADER = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP_HEADER = "X-Twilio-Email-Event-Webhook-Timestamp"
TOLERANCE = 600  # seconds either way: SendGrid documents none; ten minutes stops replays of old batches
DEDUPE_WINDOW = 3 * 86400  # SendGrid retries a batch for up to 24 h: remember event ids for three days


class WebhookError(HttpError):
    """A webhook request that must be refused (bad signature, stale, malformed)."""


def events_path(root: Path) -> Path:
    """subscribers/events.jsonl: every event SendGrid reported, one JSON object per line."""
    return root / "subscribers" / EVENTS_NAME


def verify_signature(public_key_b64: str, signature_b64: str, timestamp: str, body: bytes,
                     *, now: float | None = None, tolerance: float = TOLERANCE) -> None:
    """ECDSA P-256/SHA-256 over timestamp + raw body; raises WebhookError(403) when it does not hold."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import load_der_public_key

    if not public_key_b64:
        raise WebhookError(f"{PUBLIC_KEY_ENV} is not set: signed webhooks cannot be verified", 403)
    if not signature_b64 or not timestamp:
        raise WebhookError("missing signature headers", 403)
    try:
        ts = int(timestamp)
    except ValueError:
        raise WebhookError("malformed timestamp", 403) from None
    if abs((now if now is not None else time.time()) - ts) > tolerance:
        raise WebhookError("stale timestamp", 403)
    try:
        key = load_der_public_key(base64.b64decode(public_key_b64))
        signature = base64.b64decode(signature_b64, validate=True)
    except (ValueError, binascii.Error):
        raise WebhookError("malformed signature or key", 403) from None
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise WebhookError("the webhook public key is not an EC key", 403)
    try:
        key.verify(signature, timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise WebhookError("bad signature", 403) from None


def parse_batch(body: bytes) -> list[dict[str, Any]]:
    """The JSON array of events; WebhookError(400) when it is not one."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise WebhookError("malformed JSON", 400) from None
    except RecursionError:  # a body nested 100,000 deep: refused, not a 500
        raise WebhookError("malformed JSON: nested too deeply", 400) from None
    if not isinstance(data, list) or not all(isinstance(e, dict) for e in data):
        raise WebhookError("expected a JSON array of event objects", 400)
    return data


# `dropped` suppresses only for the reader's own reasons; SendGrid's other reasons ("Recipient List over
# Package Quota", "Spam Content", "Invalid SMTPAPI header", ...) are about the message or the account.
DROPPED_REASONS = {
    "unsubscribed address": Kind.UNSUBSCRIBE,
    "bounced address": Kind.BOUNCE,
    "spam reporting address": Kind.SPAMREPORT,
    "invalid": Kind.INVALID,
}
_EVENT_KINDS = {"unsubscribe": Kind.UNSUBSCRIBE, "group_unsubscribe": Kind.UNSUBSCRIBE,
                "group_resubscribe": Kind.RESUBSCRIBE, "spamreport": Kind.SPAMREPORT}


def ledger_event_for(event: dict[str, Any]) -> Kind | None:
    """The ledger event a SendGrid event means, if any: only the reader's own acts and their mailbox's fate."""
    kind = event.get("event")
    if kind == "bounce":
        # `blocked` is temporary (a full mailbox, a greylist): not a reason to stop mailing
        return None if event.get("type") == "blocked" else Kind.BOUNCE
    if kind == "dropped":
        return DROPPED_REASONS.get(" ".join(str(event.get("reason", "")).lower().split()))
    return _EVENT_KINDS.get(str(kind))


class EventLog:
    """The append-only events log, with the recent event ids kept for de-duplication."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.path = events_path(root)
        self.seen: set[str] = set()
        cutoff = time.time() - DEDUPE_WINDOW
        for e in read_events(self.path):
            if isinstance(e.get("timestamp"), int | float) and e["timestamp"] >= cutoff and e.get("sg_event_id"):
                self.seen.add(str(e["sg_event_id"]))

    def record(self, events: Iterable[dict[str, Any]], ledger: Ledger) -> RecordResult:
        """Append new events to the log and suppressing ones to the ledger. Event ids are marked as seen only
        after every write succeeded: a batch that fails (StorageError, a lock held too long) is answered with
        an error and SendGrid's retry is stored in full. Events whose address is not a plausible address (not
        a string, a line break) are skipped and counted, never written and never logged with the address."""
        result = RecordResult()
        fresh: list[dict[str, Any]] = []
        ids: set[str] = set()
        for e in events:
            eid = str(e.get("sg_event_id") or "")
            if eid and (eid in self.seen or eid in ids):
                continue  # SendGrid delivered this batch before
            email = e.get("email")
            if not isinstance(email, str) or not is_plausible(normalize(email)):
                result.skipped += 1
                continue
            if eid:
                ids.add(eid)
            fresh.append(e)
        if not fresh:
            return result
        to_ledger = []
        for e in fresh:
            kind = ledger_event_for(e)
            if kind:
                detail = f"{e.get('event')} {e.get('sg_event_id') or ''}".strip()
                if e.get("reason"):
                    detail += f": {e['reason']}"
                to_ledger.append(Event(normalize(e["email"]), kind, source=Source.SENDGRID, detail=detail[:200]))
        # The ledger writes only what changes someone's state (a bounce after an unsubscribe adds nothing).
        written = ledger.record(to_ledger, what=f"{len(to_ledger)} event(s) from SendGrid").written if to_ledger else []
        data = b"".join(json.dumps(e, separators=(",", ":"), ensure_ascii=False).encode() + b"\n" for e in fresh)
        append_durably(self.path, data, what=f"{len(fresh)} event(s) from SendGrid")
        self.seen |= ids  # only now: everything this batch needs is on disk
        result.logged, result.ledger = len(fresh), len(written)
        return result


@dataclass
class RecordResult:
    """What one webhook batch stored."""

    logged: int = 0
    ledger: int = 0
    skipped: int = 0


def read_events(path: Path) -> Iterator[dict[str, Any]]:
    """The events log, streamed."""
    return read_jsonl(path)
