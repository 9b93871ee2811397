"""What SendGrid tells us: signed Event Webhook batches, the events log, and their mapping to the ledger."""

from __future__ import annotations

import base64
import binascii
import json
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import msgspec

from .config import WEBHOOK_PUBLIC_KEY_ENV as PUBLIC_KEY_ENV
from .errors import HttpError
from .files import append_durably
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


# `dropped` suppresses only for the reader's own reasons; every other reason ("Recipient List over Package Quota",
# "Spam Content", "Invalid SMTPAPI header", ...) is about the sender or the message: logged, never a suppression.
DROPPED_SUPPRESSING = {
    "unsubscribed address": Kind.UNSUBSCRIBE,
    "bounced address": Kind.BOUNCE,
    "spam reporting address": Kind.SPAMREPORT,
    "invalid": Kind.INVALID,
}
# The reader's own acts at SendGrid (its unsubscribe links and preference page, a spam report).
_OWN_ACTS = {"unsubscribe": Kind.UNSUBSCRIBE, "group_unsubscribe": Kind.UNSUBSCRIBE,
             "group_resubscribe": Kind.RESUBSCRIBE, "spamreport": Kind.SPAMREPORT}
# A `bounce` of these types is temporary: `blocked` (a full mailbox, a greylist, a block) and `expired` (a
# deferral SendGrid gave up on after 72 hours). Three of them on different messages suppress the address.
SOFT_BOUNCE_TYPES = frozenset({"blocked", "expired"})
SOFT_BOUNCE_LIMIT = 3
SOFT_BOUNCE_DETAIL = f"soft-bounced {SOFT_BOUNCE_LIMIT} times"
_NONE: frozenset[str] = frozenset()


def is_soft_bounce(kind: object, bounce_type: object) -> bool:
    """Whether an event (its `event` and `type`) is a temporary bounce."""
    return kind == "bounce" and bounce_type in SOFT_BOUNCE_TYPES


def ledger_event_for(event: dict[str, Any]) -> Kind | None:
    """The ledger event a SendGrid event means by itself, if any (soft bounces count up in the EventLog)."""
    kind = event.get("event")
    if kind == "bounce":
        return None if is_soft_bounce(kind, event.get("type")) else Kind.BOUNCE
    if kind == "dropped":
        return DROPPED_SUPPRESSING.get(" ".join(str(event.get("reason", "")).split()).lower())
    return _OWN_ACTS.get(str(kind))


def soft_bounce_step(seen: frozenset[str], kind: object, bounce_type: object, message_id: object,
                     ) -> tuple[frozenset[str], bool]:
    """One event applied to an address's soft-bounced messages since its last delivery: the new set, and
    whether this event makes it the limit (the set then starts again, so each suppression is counted once)."""
    if kind == "delivered":
        return _NONE, False
    if not is_soft_bounce(kind, bounce_type) or not message_id:
        return seen, False
    seen = seen | {str(message_id)}
    if len(seen) >= SOFT_BOUNCE_LIMIT:
        return _NONE, True
    return seen, False


class _Indexed(msgspec.Struct, gc=False):
    """The fields of a logged event the EventLog's index needs."""

    email: str = ""
    event: str = ""
    type: str | None = None
    timestamp: float | None = None
    sg_event_id: str | None = None
    sg_message_id: str | None = None


class EventLog:
    """The append-only events log, with its in-memory index: recent event ids (for de-duplication) and, per
    address, the messages that soft-bounced since its last delivery. Both are rebuilt from the log on load."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.path = events_path(root)
        self.seen: set[str] = set()
        self.soft: dict[str, frozenset[str]] = {}
        cutoff = time.time() - DEDUPE_WINDOW
        for e in scan_events(self.path, _Indexed):
            if e.sg_event_id and e.timestamp is not None and e.timestamp >= cutoff:
                self.seen.add(e.sg_event_id)
            if e.event == "delivered" or e.event == "bounce":
                email = normalize(e.email)
                now, _ = soft_bounce_step(self.soft.get(email, _NONE), e.event, e.type, e.sg_message_id)
                self._set_soft(self.soft, email, now)

    @staticmethod
    def _set_soft(index: dict[str, frozenset[str]], email: str, seen: frozenset[str]) -> None:
        if seen:
            index[email] = seen
        else:
            index.pop(email, None)

    def record(self, events: Iterable[dict[str, Any]], ledger: Ledger) -> RecordResult:
        """Append new events to the log and suppressing ones to the ledger. Event ids and soft-bounce counts are
        updated only after every write succeeded: a batch that fails (StorageError, a lock held too long) is
        answered with an error and SendGrid's retry is stored and counted in full. Events whose address is not
        a plausible address (not a string, a line break) are skipped and counted, never written and never
        logged with the address."""
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
        soft: dict[str, frozenset[str]] = {}  # this batch's changes to self.soft, applied once it is stored
        to_ledger = self._ledger_events(fresh, soft)
        # The ledger writes only what changes someone's state (a bounce after an unsubscribe adds nothing).
        written = ledger.record(to_ledger, what=f"{len(to_ledger)} event(s) from SendGrid").written if to_ledger else []
        data = b"".join(json.dumps(e, separators=(",", ":"), ensure_ascii=False).encode() + b"\n" for e in fresh)
        append_durably(self.path, data, what=f"{len(fresh)} event(s) from SendGrid")
        self.seen |= ids  # only now: everything this batch needs is on disk
        for email, seen in soft.items():
            self._set_soft(self.soft, email, seen)
        result.logged, result.ledger = len(fresh), len(written)
        return result

    def _ledger_events(self, fresh: list[dict[str, Any]], soft: dict[str, frozenset[str]]) -> list[Event]:
        """The ledger lines a batch calls for (one per address and event), counting soft bounces into `soft`."""
        out: list[Event] = []
        planned: set[tuple[str, Kind]] = set()
        for e in fresh:
            email = normalize(e["email"])
            kind = ledger_event_for(e)
            detail = f"{e.get('event')} {e.get('sg_event_id') or ''}".strip()
            if e.get("reason"):
                detail += f": {e['reason']}"
            if e.get("event") in ("delivered", "bounce"):
                seen = soft.get(email, self.soft.get(email, _NONE))
                soft[email], reached = soft_bounce_step(seen, e.get("event"), e.get("type"), e.get("sg_message_id"))
                if reached:
                    kind, detail = Kind.BOUNCE, SOFT_BOUNCE_DETAIL
            if kind and (email, kind) not in planned:
                planned.add((email, kind))
                out.append(Event(email, kind, source=Source.SENDGRID, detail=detail[:200]))
        return out


@dataclass
class RecordResult:
    """What one webhook batch stored."""

    logged: int = 0
    ledger: int = 0
    skipped: int = 0


_Shape = TypeVar("_Shape", bound=msgspec.Struct)
_BLOCK = 1 << 22  # 4 MB of whole lines decoded at a time


def scan_events(path: Path, shape: type[_Shape]) -> Iterator[_Shape]:
    """The events log, streamed, each event decoded into `shape` (a msgspec Struct naming only the fields the
    caller needs: a million events are read in about a second). A torn last line is left out; a line that is
    not an event object, or whose fields have the wrong types, is skipped."""
    decoder = msgspec.json.Decoder(shape)
    for block in _line_blocks(path):
        try:
            events = decoder.decode_lines(block)
        except (msgspec.DecodeError, msgspec.ValidationError):
            events = _decode_leniently(bytes(block), shape)
        yield from events


def _decode_leniently(block: bytes, shape: type[_Shape]) -> list[_Shape]:
    """Line by line, for a block holding a line the typed decoder refused (a hand edit, an odd field)."""
    out = []
    for line in block.splitlines():
        try:
            out.append(msgspec.convert(msgspec.json.decode(line), shape, strict=False))
        except (msgspec.DecodeError, msgspec.ValidationError):
            continue
    return out


def _line_blocks(path: Path) -> Iterator[memoryview]:
    """The file's whole lines, a few MB at a time, read into one reused buffer (a torn last line, never
    written whole, is not yielded). Each view is valid until the next one is asked for."""
    try:
        fh = open(path, "rb")  # noqa: SIM115 - closed by the with below
    except FileNotFoundError:
        return
    with fh:
        buf = bytearray(_BLOCK)
        kept = 0  # the start of a line whose end is not read yet
        while True:
            with memoryview(buf) as view:
                n = fh.readinto(view[kept:])
            if not n:
                return
            end = kept + n
            cut = buf.rfind(b"\n", 0, end) + 1
            if cut:
                with memoryview(buf)[:cut] as block:
                    yield block
                buf[:end - cut] = buf[cut:end]
                kept = end - cut
            else:
                kept = end
            if kept == len(buf):  # one line longer than the buffer: make room
                buf.extend(bytes(len(buf)))
