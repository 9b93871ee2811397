"""The only sendgrid importer: SendGrid v3 calls, with every HTTP and connection failure -> TransportError."""

from __future__ import annotations

import http.client
import json
import select
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

from .config import API_KEY_ENV, API_URL_ENV, env_value
from .errors import SendError, TransportError

DEFAULT_API_URL = "https://api.sendgrid.com"


@dataclass(frozen=True)
class Accepted:
    """SendGrid took the request (202, or 200 in sandbox mode)."""

    status: int
    message_id: str


def api_url() -> str:
    """SENDGRID_API_URL without a trailing slash (tests point it at a local fake)."""
    return (env_value(API_URL_ENV) or DEFAULT_API_URL).rstrip("/")


def error_messages(body: bytes) -> list[str]:
    """SendGrid's `{"errors": [{"field", "message"}]}` as readable lines."""
    try:
        errors = json.loads(body or b"{}").get("errors") or []
    except (ValueError, AttributeError):
        text = body.decode("utf-8", "replace").strip()
        return [text[:300]] if text else []
    out = []
    for e in errors:
        if isinstance(e, dict):
            field = e.get("field")
            out.append(f"{field}: {e.get('message')}" if field else str(e.get("message")))
    return out


class SendGridTransport:
    """A thin wrapper over the official client; one client per thread (its headers dict is shared state)."""

    def __init__(self, api_key: str, base_url: str | None = None, timeout: float = 30.0) -> None:
        self.api_key = api_key
        self.base_url = (base_url or api_url()).rstrip("/")
        self.timeout = timeout
        self._local = threading.local()
        self._path = ""
        self._headers: dict[str, str] = {}
        self._proxied: bool | None = None

    def _client(self) -> Any:
        client = getattr(self._local, "client", None)
        if client is None:
            from sendgrid import SendGridAPIClient

            client = SendGridAPIClient(api_key=self.api_key, host=self.base_url).client
            client.timeout = self.timeout  # the client has no timeout by default and can hang forever
            self._local.client = client
        return client

    def _call(self, make: Any) -> Any:
        from python_http_client.exceptions import HTTPError

        try:
            return make(self._client())
        except HTTPError as exc:
            status = int(getattr(exc, "status_code", 0) or 0)
            raise _refused(status, getattr(exc, "headers", None), getattr(exc, "body", b"") or b"",
                           getattr(exc, "reason", "") or "") from None
        except urllib.error.URLError as exc:
            # urllib wraps errors raised while connecting or sending the request: nothing was accepted.
            raise TransportError(f"cannot reach SendGrid at {self.base_url}: {exc.reason}", sent=False) from None
        except TimeoutError as exc:
            raise TransportError(f"no answer from SendGrid within {self.timeout:g} s ({exc})", sent=True) from None
        except (http.client.HTTPException, OSError) as exc:
            # Raised while reading the answer: the request went out, its fate is unknown.
            raise TransportError(f"connection lost before SendGrid answered: {exc!r}", sent=True) from None

    def scopes(self) -> list[str]:
        """The scopes of the API key (GET /v3/scopes)."""
        response = self._call(lambda c: c.scopes.get())
        try:
            return list(json.loads(response.body or b"{}").get("scopes") or [])
        except ValueError:
            raise TransportError("GET /v3/scopes answered something that is not JSON") from None

    def get_json(self, path: str, params: dict[str, Any] | None = None) -> Any:
        """GET /v3/<path> with query parameters; the decoded JSON answer."""
        segments = [s for s in path.strip("/").split("/") if s][1:]  # the client adds /v3 itself

        def call(client: Any) -> Any:
            for segment in segments:
                client = client._(segment)
            return client.get(query_params=params or None)

        response = self._call(call)
        try:
            return json.loads(response.body or b"null")
        except ValueError:
            raise TransportError(f"GET {path} answered something that is not JSON") from None

    def authenticated_domains(self) -> list[dict[str, Any]]:
        """The account's authenticated sending domains (GET /v3/whitelabel/domains): `domain`, `valid` and the
        records it must publish under `dns` (`dkim1`, `dkim2`, `mail_cname`: `host`, `type`, `data`)."""
        answer = self.get_json("/v3/whitelabel/domains", {"limit": 200, "offset": 0})
        return [d for d in answer if isinstance(d, dict)] if isinstance(answer, list) else []

    def event_webhooks(self) -> list[dict[str, Any]]:
        """The Event Webhooks (GET /v3/user/webhooks/event/settings/all); accounts that predate several webhooks
        answer only the older single-webhook GET /v3/user/webhooks/event/settings. Empty entries are left out."""
        try:
            answer = self.get_json("/v3/user/webhooks/event/settings/all")
            hooks = answer.get("webhooks") if isinstance(answer, dict) else None
        except TransportError as exc:
            if exc.status != 404:
                raise
            hooks = [self.get_json("/v3/user/webhooks/event/settings")]
        return [h for h in hooks or [] if isinstance(h, dict) and h.get("url")]

    def webhook_public_key(self, webhook_id: str = "") -> str:
        """The verification key of a signed Event Webhook ("" when it is not signed): GET
        /v3/user/webhooks/event/settings/signed/{id}, or the older single-webhook form without an id."""
        path = "/v3/user/webhooks/event/settings/signed" + (f"/{webhook_id}" if webhook_id else "")
        answer = self.get_json(path)
        key = answer.get("public_key") if isinstance(answer, dict) else None
        return key if isinstance(key, str) else ""

    def request_json(self, method: str, path: str, body: Any = None) -> Any:
        """`method` /v3/<path> with a JSON body; the decoded JSON answer (None when empty)."""
        segments = [s for s in path.strip("/").split("/") if s][1:]  # the client adds /v3 itself

        def call(client: Any) -> Any:
            for segment in segments:
                client = client._(segment)
            return getattr(client, method.lower())(request_body=body) if body is not None else \
                getattr(client, method.lower())()

        response = self._call(call)
        try:
            return json.loads(response.body) if response.body else None
        except ValueError:
            raise TransportError(f"{method} {path} answered something that is not JSON") from None

    def create_batch(self) -> str:
        """A new batch id (POST /v3/mail/batch): it lets a scheduled send be cancelled."""
        answer = self.request_json("POST", "/v3/mail/batch")
        batch_id = answer.get("batch_id") if isinstance(answer, dict) else None
        if not isinstance(batch_id, str) or not batch_id:
            raise TransportError("POST /v3/mail/batch answered without a batch_id")
        return batch_id

    def cancel_scheduled(self, batch_id: str) -> None:
        """Cancel every message of a scheduled batch (POST /v3/user/scheduled_sends, status cancel)."""
        self.request_json("POST", "/v3/user/scheduled_sends", {"batch_id": batch_id, "status": "cancel"})

    def scheduled_status(self, batch_id: str) -> str:
        """The status SendGrid holds for a scheduled batch (`cancel`, `pause`; "" when it holds none)."""
        from urllib.parse import quote

        try:
            answer = self.request_json("GET", f"/v3/user/scheduled_sends/{quote(batch_id, safe='')}")
        except TransportError as exc:
            if exc.status == 404:
                return ""
            raise
        items = answer if isinstance(answer, list) else [answer]
        return next((str(i.get("status", "")) for i in items if isinstance(i, dict)), "")

    def add_suppressions(self, emails: list[str], group_id: int | None) -> None:
        """Unsubscribe addresses in SendGrid: the unsubscribe group when there is one, else globally."""
        path = f"/v3/asm/groups/{group_id}/suppressions" if group_id else "/v3/asm/suppressions/global"
        self.request_json("POST", path, {"recipient_emails": emails})

    def remove_suppression(self, email: str, group_id: int | None) -> None:
        """Lift what add_suppressions did for one address."""
        from urllib.parse import quote

        path = (f"/v3/asm/groups/{group_id}/suppressions/{quote(email, safe='@')}" if group_id
                else f"/v3/asm/suppressions/global/{quote(email, safe='@')}")
        self.request_json("DELETE", path)

    def send_encoded(self, data: bytes) -> Accepted:
        """POST /v3/mail/send with a body already encoded as JSON; raises TransportError on anything but 200/202.

        The bulk path of a send: one kept-alive connection per thread (no TLS handshake per request) and no
        re-encoding of a half-megabyte body. Failures mean what they mean for `send`: nothing left when the
        connection could not be made or the request not written whole; in doubt once it was."""
        if self._proxied is None:
            self._proxied = _proxied(self.base_url)
        if self._proxied:  # urllib honours the proxy settings (HTTPS_PROXY, NO_PROXY); http.client would not
            return self.send(json.loads(data))
        conn = self._connection()
        try:
            if conn.sock is None:
                conn.connect()
        except OSError as exc:
            conn.close()
            raise TransportError(f"cannot reach SendGrid at {self.base_url}: {exc}", sent=False) from None
        try:
            conn.request("POST", self._path + "/v3/mail/send", data, self._headers)
        except (http.client.HTTPException, OSError) as exc:
            conn.close()  # the request was not written whole: SendGrid cannot have acted on it
            raise TransportError(f"cannot reach SendGrid at {self.base_url}: {exc}", sent=False) from None
        try:
            response = conn.getresponse()
            body = response.read()
        except TimeoutError as exc:
            conn.close()
            raise TransportError(f"no answer from SendGrid within {self.timeout:g} s ({exc})", sent=True) from None
        except (http.client.HTTPException, OSError) as exc:
            conn.close()
            raise TransportError(f"connection lost before SendGrid answered: {exc!r}", sent=True) from None
        status = response.status
        if status not in (200, 202):
            raise _refused(status, response.headers, body, response.reason)
        return Accepted(status=status, message_id=str(response.headers.get("X-Message-Id", "")))

    def _connection(self) -> http.client.HTTPConnection:
        """This thread's connection, reconnected when the server closed it while it was idle: a request written
        into a connection the server already dropped would fail after leaving, and count as in doubt."""
        conn: http.client.HTTPConnection | None = getattr(self._local, "conn", None)
        if conn is None:
            parts = urllib.parse.urlsplit(self.base_url)
            factory = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
            conn = self._local.conn = factory(parts.hostname or "", parts.port, timeout=self.timeout)
            self._path = parts.path.rstrip("/")
            self._headers = {"Authorization": f"Bearer {self.api_key}", "Content-Type": "application/json",
                             "User-Agent": "newsletter", "Accept": "application/json"}
        elif conn.sock is not None and _dropped(conn.sock):
            conn.close()
        return conn

    def send(self, body: dict[str, Any]) -> Accepted:
        """POST /v3/mail/send; raises TransportError on anything but 200/202."""
        response = self._call(lambda c: c.mail.send.post(request_body=body))
        status = int(response.status_code)
        if status not in (200, 202):
            raise TransportError(f"SendGrid answered {status}", status=status, body=response.body or b"")
        return Accepted(status=status, message_id=str(response.headers.get("X-Message-Id", "")))


def _refused(status: int, headers: Any, body: bytes, reason: str) -> TransportError:
    """An answer other than 2xx as a TransportError: SendGrid's own messages, and when to retry after a 429."""
    retry_after = None
    if status == 429 and headers is not None:
        reset = headers.get("X-RateLimit-Reset")
        try:
            retry_after = max(0.0, float(reset) - time.time()) if reset else None
        except ValueError:
            retry_after = None
    detail = "; ".join(error_messages(body)) or reason or ""
    return TransportError(f"SendGrid answered {status}" + (f": {detail}" if detail else ""),
                          status=status, retry_after=retry_after, body=body)


def _dropped(sock: socket.socket) -> bool:
    """Whether an idle kept-alive connection was closed by the other side (it is readable: EOF or a reset)."""
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)


def _proxied(base_url: str) -> bool:
    """Whether the environment sends requests to this URL through a proxy (HTTPS_PROXY and NO_PROXY)."""
    parts = urllib.parse.urlsplit(base_url)
    proxies = urllib.request.getproxies()
    return parts.scheme in proxies and not urllib.request.proxy_bypass(parts.hostname or "")


def api_key_from_env() -> str:
    """SENDGRID_API_KEY, or a SendError saying how to set it."""
    key = env_value(API_KEY_ENV).strip()
    if not key:
        raise SendError(f"{API_KEY_ENV} is not set: it is needed to send",
                        hint="create a key with the Mail Send permission in SendGrid (Settings > API Keys)")
    check_key_shape(key)
    return key


def transport_from_env(timeout: float, *, at_most: float | None = None) -> SendGridTransport:
    """The client every command uses: SENDGRID_API_KEY checked, each request bounded by the newsletter's
    `sendgrid.timeout`, or sooner (`at_most`) where an answer is wanted sooner (a push after a command, a page)."""
    return SendGridTransport(api_key_from_env(), timeout=timeout if at_most is None else min(timeout, at_most))


def check_key_shape(key: str) -> None:
    """Refuse a key that cannot go into an HTTP header, before any request: the error names the fault, never
    the key (http.client's own error would print it, header and all)."""
    fix = f"copy the key again and set {API_KEY_ENV} to it alone, on one line"
    if "\n" in key or "\r" in key:
        raise SendError(f"{API_KEY_ENV} contains a line break", hint=fix)
    if any(c.isspace() for c in key):
        raise SendError(f"{API_KEY_ENV} contains a space or other whitespace", hint=fix)
    if not key.isascii() or not key.isprintable():
        raise SendError(f"{API_KEY_ENV} contains characters that cannot be sent (not printable ASCII)", hint=fix)
