"""A small fake of SendGrid's v3 API on 127.0.0.1, for tests and benchmarks.

It validates every mail/send body against SendGrid's request schema (tests/data/mail_send.schema.json,
copied from SendGrid's published spec with its known errors corrected) and the cross-field rules the
schema cannot express, records what it accepted, and on demand answers 400/401/403/413/429/5xx,
answers slowly, or drops the connection before or after accepting.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

SCHEMA_PATH = Path(__file__).parent / "data" / "mail_send.schema.json"
API_KEY = "SG.test-key.for-the-fake"
RESERVED_HEADERS = {"x-sg-id", "x-sg-eid", "received", "dkim-signature", "content-type",
                    "content-transfer-encoding", "to", "from", "subject", "reply-to", "cc", "bcc"}
HELP = "http://sendgrid.com/docs/API_Reference/Web_API_v3/Mail/errors.html"

_validator = None
_validator_lock = threading.Lock()


def schema_validator():  # type: ignore[no-untyped-def]
    global _validator
    with _validator_lock:
        if _validator is None:
            from jsonschema import Draft202012Validator, FormatChecker

            schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
            _validator = Draft202012Validator(schema, format_checker=FormatChecker())
        return _validator


def rule_errors(body: dict[str, Any], raw: bytes) -> list[dict[str, Any]]:
    """SendGrid's cross-field rules (mail_send.rules.json), with its error wording."""
    errors: list[dict[str, Any]] = []

    def err(message: str, field: str | None) -> None:
        errors.append({"message": message, "field": field, "help": HELP})

    ps = body.get("personalizations") or []
    if len(ps) > 1000:
        err("The personalizations field is limited to 1000 personalizations per request.", "personalizations")
    total = 0
    for i, p in enumerate(ps):
        seen: set[str] = set()
        for kind in ("to", "cc", "bcc"):
            for j, r in enumerate(p.get(kind) or []):
                total += 1
                addr = str(r.get("email", "")).lower()
                if addr in seen:
                    err("Each email address in the personalization block should be unique between to, cc, and bcc."
                        f" We found the first duplicate instance of [{addr}] in the personalizations.{i}.{kind} "
                        "field.", f"personalizations.{i}")
                seen.add(addr)
                name = r.get("name")
                if name is not None and (";" in name or "," in name):
                    err("The name of a recipient may not contain ';' or ','.", f"personalizations.{i}.{kind}.{j}.name")
        for key in (p.get("headers") or {}):
            if key.lower() in RESERVED_HEADERS or not key.isascii() or " " in key:
                err(f"The header {key} is reserved or invalid.", f"personalizations.{i}.headers")
        subs = p.get("substitutions") or {}
        if len(json.dumps(subs).encode()) > 10000:
            err("The substitutions are limited to 10,000 bytes per personalization.", f"personalizations.{i}")
    if total > 1000:
        err("The total number of recipients must be no more than 1000.", "personalizations")
    content = body.get("content") or []
    types = [c.get("type") for c in content]
    if "text/plain" in types and types.index("text/plain") != 0:
        err("If present, text/plain content must be first, followed by text/html.", "content")
    if "text/html" in types and "text/plain" in types and types.index("text/html") != 1:
        err("If present, text/plain content must be first, followed by text/html.", "content")
    cats = body.get("categories") or []
    if len(cats) > 10:
        err("Too many categories: at most 10.", "categories")
    if "send_at" in body and body["send_at"] > time.time() + 72 * 3600 + 60:
        err("The send_at parameter must be within 72 hours.", "send_at")
    for key in (body.get("headers") or {}):
        if key.lower() in RESERVED_HEADERS:
            err(f"The header {key} is reserved.", "headers")
    if len(raw) > 30 * 1024 * 1024:
        err("The total message size must be under 30 MB.", None)
    return errors


class FakeSendGrid:
    """The fake. `plan` holds one fault per mail/send request, consumed in order; then 202."""

    def __init__(self, *, latency: float = 0.0, validate_every: int = 1, api_key: str = API_KEY,
                 scopes: tuple[str, ...] = ("mail.send", "suppression.read"), keep_bodies: bool = True) -> None:
        self.keep_bodies = keep_bodies
        self.latency = latency
        self.validate_every = validate_every
        self.api_key = api_key
        self.scopes = list(scopes)
        self.plan: list[str] = []
        self.scopes_endpoint = True  # False: GET /v3/scopes answers 404, as a stand-in without it would
        # suppression lists: endpoint path (e.g. "/v3/suppression/bounces") -> items; paginated by limit/offset
        self.suppressions: dict[str, list[dict[str, Any]]] = {}
        self.list_requests: list[str] = []
        self.requests: list[dict[str, Any]] = []  # every mail/send body received (parsed)
        self.accepted: list[dict[str, Any]] = []  # bodies accepted for delivery (202)
        self.delivered: Counter[str] = Counter()  # address (lowercase) -> copies delivered
        self.responses: list[int] = []  # status per mail/send request (0 = dropped)
        self.times: list[float] = []  # time.monotonic() at which each mail/send request arrived
        self.schema_failures: list[str] = []
        self.bytes_received = 0
        self.on_request: Callable[[FakeSendGrid, dict[str, Any], int], None] | None = None
        # Scheduling and suppressions (shapes in tests/data/sendgrid/)
        self.batch_ids: list[str] = []
        self.scheduled_sends: dict[str, str] = {}  # batch id -> "cancel" | "pause"
        self.scheduled: list[dict[str, Any]] = []  # accepted bodies with send_at: delivered by deliver_scheduled()
        self.global_suppressions: set[str] = set()
        self.group_suppressions: dict[str, set[str]] = {}
        self.suppression_requests: list[tuple[str, str, Any]] = []  # (method, path, body)
        self.suppressions_down = False  # True: every suppression add/remove answers 500, as an outage would
        # The account's settings that `doctor` reads (shapes: tests/data/sendgrid/whitelabel_domains.json and
        # event_webhook_settings.json; build entries with authenticated_domain() and event_webhook() below)
        self.domains: list[dict[str, Any]] = []  # GET /v3/whitelabel/domains
        self.webhooks: list[dict[str, Any]] = []  # oldest first; "public_key" only while signing is on
        self.webhooks_all_endpoint = True  # False: .../settings/all answers 404, as for the older single webhook
        self.account_requests: list[str] = []  # paths of the GETs above
        self.received = threading.Event()
        self.lock = threading.Lock()
        self.server: ThreadingHTTPServer | None = None
        self.thread: threading.Thread | None = None

    # -- lifecycle -----------------------------------------------------------------------------------
    def reset(self) -> None:
        """Forget every account state (suppressions, schedules, mail), keeping the server: one fake, many runs."""
        with self.lock:
            for name in ("requests", "accepted", "responses", "times", "list_requests", "batch_ids", "scheduled",
                         "suppression_requests", "plan"):
                getattr(self, name).clear()
            for name in ("suppressions", "scheduled_sends", "group_suppressions"):
                getattr(self, name).clear()
            self.global_suppressions.clear()
            self.delivered.clear()
            self.suppressions_down = False

    def start(self) -> FakeSendGrid:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                fake._get(self)

            def do_POST(self) -> None:  # noqa: N802
                fake._post(self)

            def do_DELETE(self) -> None:  # noqa: N802
                fake._delete(self)

        class Server(ThreadingHTTPServer):
            def handle_error(self, request: Any, client_address: Any) -> None:
                # A client that gave up (timeout tests, kill -9) leaves a broken pipe: expected, not news.
                import sys

                if not isinstance(sys.exc_info()[1], ConnectionError):
                    super().handle_error(request, client_address)

        self.server = Server(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        """Shut the server down, then fail if any body it received broke SendGrid's schema or rules: every fake,
        however a test started it, checks what it was sent."""
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None
        assert not self.schema_failures, self.schema_failures[:5]

    @property
    def url(self) -> str:
        assert self.server is not None
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    # -- helpers -------------------------------------------------------------------------------------
    @staticmethod
    def _reply(h: BaseHTTPRequestHandler, status: int, body: Any = None, headers: dict[str, str] | None = None) -> None:
        data = b"" if body is None else json.dumps(body).encode()
        h.send_response(status)
        h.send_header("Server", "nginx")
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        h.end_headers()
        h.wfile.write(data)

    @staticmethod
    def _errors(message: str, field: str | None = None) -> dict[str, Any]:
        return {"errors": [{"message": message, "field": field, "help": None}]}

    def _authorized(self, h: BaseHTTPRequestHandler) -> bool:
        auth = h.headers.get("Authorization", "")
        if auth != f"Bearer {self.api_key}":
            self._reply(h, 401, self._errors("The provided authorization grant is invalid, expired, or revoked"))
            return False
        return True

    @staticmethod
    def _drop(h: BaseHTTPRequestHandler) -> None:
        h.close_connection = True
        with contextlib.suppress(OSError):
            h.connection.shutdown(socket.SHUT_RDWR)

    # -- endpoints -----------------------------------------------------------------------------------
    def _get(self, h: BaseHTTPRequestHandler) -> None:
        if h.path == "/_stats":  # for benchmarks: what was received
            with self.lock:
                stats = {"requests": len(self.responses), "delivered": len(self.delivered),
                         "copies": sum(self.delivered.values()), "bytes": self.bytes_received,
                         "schema_failures": len(self.schema_failures)}
            self._reply(h, 200, stats)
            return
        if not self._authorized(h):
            return
        path, _, query = h.path.partition("?")
        if path.startswith("/v3/user/scheduled_sends/"):
            batch_id = path.rsplit("/", 1)[1]
            if batch_id in self.scheduled_sends:
                self._reply(h, 200, [{"batch_id": batch_id, "status": self.scheduled_sends[batch_id]}])
            else:
                self._reply(h, 404, self._errors("not found"))
            return
        if path == "/v3/scopes" and self.scopes_endpoint:
            self._reply(h, 200, {"scopes": self.scopes})
        elif path.startswith(("/v3/whitelabel/", "/v3/user/webhooks/")):
            self._get_account(h, path, query)
        elif path.startswith(("/v3/suppression/", "/v3/asm/suppressions")):
            from urllib.parse import parse_qs

            self.list_requests.append(h.path)
            items = self.suppressions.get(path, [])
            if path.startswith("/v3/suppression/"):
                q = parse_qs(query)
                limit, offset = int(q.get("limit", ["500"])[0]), int(q.get("offset", ["0"])[0])
                if not 1 <= limit <= 500:
                    self._reply(h, 400, self._errors("limit must be 1..500", "limit"))
                    return
                start = int(q.get("start_time", ["0"])[0])
                items = [i for i in items if i.get("created", 0) >= start][offset:offset + limit]
            self._reply(h, 200, items)
        else:
            self._reply(h, 404, self._errors("not found"))

    def _get_account(self, h: BaseHTTPRequestHandler, path: str, query: str) -> None:
        """Domain authentication and the Event Webhook settings, as SendGrid answers them."""
        from urllib.parse import parse_qs

        with self.lock:
            self.account_requests.append(path)
            hooks = [dict(w) for w in self.webhooks]
        settings = "/v3/user/webhooks/event/settings"
        if path == "/v3/whitelabel/domains":
            q = parse_qs(query)
            offset, limit = int(q.get("offset", ["0"])[0]), int(q.get("limit", ["50"])[0])
            self._reply(h, 200, self.domains[offset:offset + limit])
        elif path == f"{settings}/all" and self.webhooks_all_endpoint:
            self._reply(h, 200, {"max_allowed": 5, "webhooks": hooks or [{}]})  # none: the spec's `[{}]`
        elif path == settings:  # the older single-webhook form: the oldest one
            oldest = hooks[0] if hooks else {"enabled": False, "url": ""}
            self._reply(h, 200, {k: v for k, v in oldest.items() if k not in ("friendly_name", "created_date",
                                                                                "updated_date")})
        elif path.startswith(f"{settings}/signed"):
            wanted = path[len(f"{settings}/signed"):].strip("/")
            hook = next((w for w in hooks if w.get("id") == wanted), None) if wanted else (hooks or [None])[0]
            if hook is None:
                self._reply(h, 404, {"errors": [{"message": "Invalid id provided."}]})
            else:
                self._reply(h, 200, {"id": wanted, "public_key": hook.get("public_key", "")})
        else:
            self._reply(h, 404, self._errors("not found"))

    def _post(self, h: BaseHTTPRequestHandler) -> None:
        path = h.path.split("?")[0]
        if path != "/v3/mail/send":
            self._post_other(h, path)
            return
        length = int(h.headers.get("Content-Length") or 0)
        raw = h.rfile.read(length)
        with self.lock:
            self.times.append(time.monotonic())
            index = len(self.responses)
            fault = self.plan.pop(0) if self.plan else ""
            self.responses.append(-1)
            self.bytes_received += len(raw)
        if not self._authorized(h):
            self.responses[index] = 401
            return
        try:
            body = json.loads(raw)
        except ValueError:
            self.responses[index] = 400
            self._reply(h, 400, self._errors("Bad Request", None))
            return
        with self.lock:
            self.requests.append(body if self.keep_bodies else {})
        if self.validate_every and index % self.validate_every == 0:
            problems = [f"{'.'.join(str(p) for p in e.absolute_path)}: {e.message}"
                        for e in schema_validator().iter_errors(body)]
            rules = rule_errors(body, raw)
            if problems or rules:
                with self.lock:
                    self.schema_failures.extend(problems + [r["message"] for r in rules])
                self.responses[index] = 400
                errors = [{"message": p, "field": p.split(":")[0] or None, "help": None} for p in problems]
                self._reply(h, 400, {"errors": errors + rules})
                return
        if self.on_request is not None:
            self.on_request(self, body, index)
        self.received.set()
        if self.latency:
            time.sleep(self.latency)
        if fault.startswith("slow:"):
            self._accept(body, index)
            time.sleep(float(fault.split(":", 1)[1]))
            self._reply(h, 202, headers={"X-Message-Id": uuid.uuid4().hex[:22]})
            return
        if fault == "drop_before":
            self.responses[index] = 0
            self._drop(h)
            return
        if fault == "drop_after":
            self._accept(body, index)
            self.responses[index] = 0
            self._drop(h)
            return
        if fault in ("400", "401", "403", "413", "500", "502", "503"):
            status = int(fault)
            self.responses[index] = status
            message = {"400": "The from email does not contain a valid address.", "401": "authorization required",
                       "403": "access forbidden", "413": "Payload Too Large",
                       "500": "internal error", "502": "bad gateway", "503": "service unavailable"}[fault]
            self._reply(h, status, self._errors(message, "from.email" if status == 400 else None))
            return
        if fault.startswith("429"):
            wait = float(fault.split(":", 1)[1]) if ":" in fault else 1.0
            self.responses[index] = 429
            self._reply(h, 429, self._errors("too many requests"),
                        {"X-RateLimit-Limit": "600", "X-RateLimit-Remaining": "0",
                         "X-RateLimit-Reset": str(int(time.time() + wait))})
            return
        sandbox = ((body.get("mail_settings") or {}).get("sandbox_mode") or {}).get("enable") is True
        if sandbox:
            self.responses[index] = 200
            self._reply(h, 200)
            return
        self._accept(body, index)
        self._reply(h, 202, headers={"X-Message-Id": uuid.uuid4().hex[:22]})

    def _accept(self, body: dict[str, Any], index: int) -> None:
        with self.lock:
            if self.keep_bodies:
                self.accepted.append(body)
            self.responses[index] = 202
            if "send_at" in body:  # SendGrid holds it until send_at: see deliver_scheduled()
                self.scheduled.append(body)
                return
            for p in body.get("personalizations", []):
                for r in p.get("to", []):
                    self.delivered[r["email"].lower()] += 1

    def suppressed(self, email: str, group: int | None) -> bool:
        """Whether SendGrid would drop mail to `email` sent with this unsubscribe group."""
        email = email.lower()
        return email in self.global_suppressions or (
            group is not None and email in self.group_suppressions.get(str(group), set()))

    def deliver_scheduled(self) -> None:
        """send_at has come: deliver the scheduled bodies that were not cancelled, dropping suppressed readers
        as SendGrid does at delivery time."""
        with self.lock:
            due, self.scheduled = self.scheduled, []
        for body in due:
            if self.scheduled_sends.get(str(body.get("batch_id", ""))) == "cancel":
                continue
            group = (body.get("asm") or {}).get("group_id")
            for p in body.get("personalizations", []):
                for r in p.get("to", []):
                    if not self.suppressed(r["email"], group):
                        self.delivered[r["email"].lower()] += 1

    # -- scheduling and suppressions -----------------------------------------------------------------
    _SPECS = {"mail_batch": "mail_batch.json", "scheduled_sends": "scheduled_sends.json",
              "global": "asm_global_suppressions.json", "group": "asm_group_suppressions.json"}

    def _request_schema(self, spec: str, operation: str) -> dict[str, Any] | None:
        data = json.loads((SCHEMA_PATH.parent / "sendgrid" / self._SPECS[spec]).read_text(encoding="utf-8"))
        return data[operation].get("requestBody")

    def _body(self, h: BaseHTTPRequestHandler, spec: str, operation: str) -> Any:
        """The JSON body, validated against SendGrid's request schema; None (after a 400) when it is not valid."""
        raw = h.rfile.read(int(h.headers.get("Content-Length") or 0))
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            self._reply(h, 400, self._errors("Bad Request"))
            return None
        schema = self._request_schema(spec, operation)
        if schema is not None:
            from jsonschema import Draft202012Validator, FormatChecker

            validator = Draft202012Validator(schema, format_checker=FormatChecker())
            problems = [e.message for e in validator.iter_errors(body)]
            if problems:
                self.schema_failures.extend(problems)
                self._reply(h, 400, self._errors(problems[0]))
                return None
        return body

    def _post_other(self, h: BaseHTTPRequestHandler, path: str) -> None:
        if not self._authorized(h):
            return
        if path == "/v3/mail/batch":
            self._body(h, "mail_batch", "create")
            batch_id = uuid.uuid4().hex
            self.batch_ids.append(batch_id)
            self._reply(h, 201, {"batch_id": batch_id})
        elif path == "/v3/user/scheduled_sends":
            body = self._body(h, "scheduled_sends", "cancel_or_pause")
            if body is None:
                return
            if body["batch_id"] in self.scheduled_sends:  # a second status for the same batch: SendGrid says 400
                self._reply(h, 400, self._errors("batch id already has a status", "batch_id"))
                return
            self.scheduled_sends[body["batch_id"]] = body["status"]
            self._reply(h, 201, body)
        elif path == "/v3/asm/suppressions/global" or (path.startswith("/v3/asm/groups/")
                                                        and path.endswith("/suppressions")):
            if self.suppressions_down:
                self._reply(h, 500, self._errors("internal error"))
                return
            is_global = path == "/v3/asm/suppressions/global"
            body = self._body(h, "global" if is_global else "group", "add")
            if body is None:
                return
            with self.lock:
                self.suppression_requests.append(("POST", path, body))
                emails = {e.lower() for e in body["recipient_emails"]}
                if is_global:
                    self.global_suppressions |= emails
                else:
                    self.group_suppressions.setdefault(path.split("/")[4], set()).update(emails)
            self._reply(h, 201, body)
        else:
            self._reply(h, 404, self._errors("not found"))

    def _delete(self, h: BaseHTTPRequestHandler) -> None:
        from urllib.parse import unquote

        if not self._authorized(h):
            return
        parts = [unquote(p) for p in h.path.split("?")[0].split("/")]
        if self.suppressions_down:
            self._reply(h, 500, self._errors("internal error"))
            return
        with self.lock:
            self.suppression_requests.append(("DELETE", h.path, None))
            if parts[1:5] == ["v3", "asm", "suppressions", "global"] and len(parts) == 6:
                self.global_suppressions.discard(parts[5].lower())
            elif parts[1:4] == ["v3", "asm", "groups"] and len(parts) == 7 and parts[5] == "suppressions":
                self.group_suppressions.get(parts[4], set()).discard(parts[6].lower())
            else:
                self._reply(h, 404, self._errors("not found"))
                return
        h.send_response(204)
        h.send_header("Content-Length", "0")
        h.end_headers()


def authenticated_domain(domain: str, *, user_id: int = 7, return_path: str = "em1234",
                         valid: bool = True) -> dict[str, Any]:
    """One entry of GET /v3/whitelabel/domains with automatic security: the return path and both DKIM keys are
    CNAMEs into SendGrid (the published example's shape, tests/data/sendgrid/whitelabel_domains.json)."""
    def cname(host: str, data: str) -> dict[str, Any]:
        return {"valid": valid, "type": "cname", "host": host, "data": data}

    return {"id": 10_000 + user_id, "user_id": user_id, "subdomain": return_path, "domain": domain,
            "username": "writer", "ips": [], "custom_spf": False, "default": True, "legacy": False,
            "automatic_security": True, "valid": valid,
            "dns": {"mail_cname": cname(f"{return_path}.{domain}", f"u{user_id}.wl.sendgrid.net"),
                    "dkim1": cname(f"s1._domainkey.{domain}", f"s1._domainkey.u{user_id}.wl.sendgrid.net"),
                    "dkim2": cname(f"s2._domainkey.{domain}", f"s2._domainkey.u{user_id}.wl.sendgrid.net")}}


WEBHOOK_EVENTS = ("group_resubscribe", "delivered", "group_unsubscribe", "spam_report", "bounce", "deferred",
                  "unsubscribe", "processed", "open", "click", "dropped")


def event_webhook(url: str, *, enabled: bool = True, public_key: str = "", off: tuple[str, ...] = (),
                  webhook_id: str = "77d4a5da-7015-11ed-a1eb-0242ac120002") -> dict[str, Any]:
    """One Event Webhook as GET /v3/user/webhooks/event/settings/all lists it: every event on but `processed` and
    those in `off`; `public_key` present only when signed (tests/data/sendgrid/event_webhook_settings.json)."""
    hook: dict[str, Any] = {"enabled": enabled, "url": url}
    hook.update({event: event not in off and event != "processed" for event in WEBHOOK_EVENTS})
    hook.update({"friendly_name": "newsletter", "id": webhook_id, "created_date": "2026-11-02T09:00:00Z",
                 "updated_date": "2026-11-02T09:00:00Z"})
    if public_key:
        hook["public_key"] = public_key
    return hook


if __name__ == "__main__":  # a fake to point a manual `newsletter send` (or a benchmark) at
    import argparse

    parser = argparse.ArgumentParser(description="A fake SendGrid v3 API on 127.0.0.1")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added to every mail/send answer")
    parser.add_argument("--validate-every", type=int, default=1, help="validate every Nth body (0: none)")
    args = parser.parse_args()
    fake = FakeSendGrid(latency=args.latency, validate_every=args.validate_every, keep_bodies=False).start()
    print(f"SENDGRID_API_URL={fake.url} SENDGRID_API_KEY={API_KEY}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        fake.stop()
