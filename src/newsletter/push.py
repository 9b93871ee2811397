"""Opt-outs that reach SendGrid: every unsubscribe and spam report the ledger learns from us (the command line,
the unsubscribe page, one-click, imports) is also put on SendGrid's suppression list, so SendGrid drops mail
already scheduled or in flight to that reader; a resubscribe or confirmed sign-up lifts it there too.

The queue is the ledger itself: `subscribers/sendgrid-push.json` remembers how far into it SendGrid has been
told. What could not be pushed (no key, the API down) simply stays beyond that offset until `newsletter sync`
(or the next unsubscribe) pushes it. Events that came from SendGrid (source `sendgrid`) are not pushed back.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .files import write_atomic
from .ledger import LIFTING, ledger_path
from .recipients import is_plausible, normalize

STATE_NAME = "sendgrid-push.json"
PUSHED_EVENTS = ("unsubscribe", "spamreport")
PER_REQUEST = 1000  # addresses per suppression request


def state_path(root: Path) -> Path:
    """subscribers/sendgrid-push.json: the ledger offset SendGrid has been told up to."""
    return root / "subscribers" / STATE_NAME


@dataclass
class Pending:
    """What SendGrid has not been told yet: addresses to suppress and to lift, and where that ends."""

    add: list[str] = field(default_factory=list)
    remove: list[str] = field(default_factory=list)
    end: int = 0

    def __len__(self) -> int:
        return len(self.add) + len(self.remove)


def _offset(root: Path) -> int:
    try:
        return int(json.loads(state_path(root).read_text(encoding="utf-8")).get("offset", 0))
    except (OSError, ValueError, AttributeError):
        return 0


def pending(root: Path) -> Pending:
    """The ledger's events beyond the pushed offset that SendGrid must hear of, the latest per address."""
    path = ledger_path(root)
    start = _offset(root)
    try:
        with open(path, "rb") as fh:
            size = fh.seek(0, 2)
            if start > size:
                start = 0  # the ledger was replaced (restored from a backup): tell SendGrid everything again
            fh.seek(start)
            data = fh.read()
    except FileNotFoundError:
        return Pending(end=0)
    complete = data[: data.rfind(b"\n") + 1]  # a torn last line is pushed once it is whole
    latest: dict[str, str] = {}
    for row in csv.reader(complete.decode("utf-8", "replace").splitlines()):
        if len(row) != 5 or row[3] == "sendgrid":
            continue
        email, event = normalize(row[0]), row[1]
        if is_plausible(email) and (event in PUSHED_EVENTS or event in LIFTING):
            latest[email] = event
    out = Pending(end=start + len(complete))
    for email, event in latest.items():
        (out.add if event in PUSHED_EVENTS else out.remove).append(email)
    return out


def push(root: Path, transport: Any, group_id: int | None) -> int:
    """Tell SendGrid what it has not heard yet; returns how many addresses. Raises TransportError (the offset
    then stays where it was: nothing is lost, the next push sends it again; suppressing twice is harmless)."""
    from filelock import FileLock

    with FileLock(str(state_path(root)) + ".lock", timeout=60):
        todo = pending(root)
        for i in range(0, len(todo.add), PER_REQUEST):
            transport.add_suppressions(todo.add[i:i + PER_REQUEST], group_id)
        for email in todo.remove:
            transport.remove_suppression(email, group_id)
        if todo.end != _offset(root):
            write_atomic(state_path(root), json.dumps({"offset": todo.end}) + "\n", what="how far SendGrid was told")
        return len(todo)


def push_if_possible(root: Path, timeout: float = 10.0) -> tuple[int, str]:
    """Push now when SENDGRID_API_KEY is set; (addresses pushed, why something waits: "" when nothing does).
    Never raises: what is not pushed waits for `newsletter sync`."""
    import os

    from .config import load_config
    from .errors import NewsletterError, TransportError
    from .sendgrid import SendGridTransport, api_key_from_env

    if not os.environ.get("SENDGRID_API_KEY", "").strip():
        return 0, "SENDGRID_API_KEY is not set" if len(pending(root)) else ""
    try:
        group = load_config(root).sendgrid.asm_group_id
        return push(root, SendGridTransport(api_key_from_env(), timeout=timeout), group), ""
    except (TransportError, NewsletterError, OSError) as exc:
        return 0, str(exc)
