"""What every answer of `serve` gets, whatever the route: security headers, a private log (no token, no address,
no encoding of an address), and a deadline for a whole request (headers and body)."""

from __future__ import annotations

import asyncio
import base64
import logging
import re
import time
from typing import Any

from .config import env_value
from .errors import NewsletterError

log = logging.getLogger("newsletter.web")
DEADLINE_ENV = "NEWSLETTER_REQUEST_DEADLINE"  # seconds a client has to send a whole request (default 10)
REQUEST_DEADLINE = 10.0
# Every page: no script at all, styles inline (the pages' own) or from the archive's pages' sources, never framed.
CONTENT_SECURITY_POLICY = ("default-src 'none'; style-src 'self' 'unsafe-inline' https:; img-src 'self' data: https:; "
                           "font-src 'self' data: https:; form-action 'self'; base-uri 'none'; frame-ancestors 'none'")
SECURITY_HEADERS = {"content-security-policy": CONTENT_SECURITY_POLICY, "x-content-type-options": "nosniff",
                    "referrer-policy": "no-referrer", "x-frame-options": "DENY"}


def _loggable(text: str) -> str:
    """Control characters escaped: a request path with %0a must not forge a second log line."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


_SECRET_PATH = re.compile(r"/(unsubscribe|confirm)/[^?]*")
_ADDRESS = re.compile(r"""[^\s@<>()\[\]"',;:/]+@[^\s@<>()\[\]"',;:/]+""")
_TOKEN = re.compile(r"\b[uc]1\.[A-Za-z0-9_.=-]+")


def _hides_an_address(segment: str) -> bool:
    """Whether a path segment is, holds or encodes an address (a token's middle part is one in base64)."""
    from urllib.parse import unquote

    text = unquote(segment)
    if "@" in text or _TOKEN.match(text):
        return True
    for part in text.split("."):
        if len(part) >= 4:
            try:
                if b"@" in base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)):
                    return True
            except ValueError:
                continue
    return False


def path_for_log(path: str) -> str:
    """A request path as the log shows it: tokens replaced (everything after /unsubscribe/ or /confirm/), any
    segment that is, holds or encodes an address masked, control characters escaped."""
    path = _SECRET_PATH.sub(lambda m: f"/{m.group(1)}/<token>", path)
    return _loggable("/".join("<masked>" if _hides_an_address(seg) else seg for seg in path.split("/")))


def private(text: str) -> str:
    """Text with tokens and addresses masked: what may reach the log."""
    return _ADDRESS.sub("<address>", _TOKEN.sub("<token>", text))


def for_log(text: str) -> str:
    """Text as a log line may hold it: tokens and addresses masked, control characters escaped."""
    return _loggable(private(text))


class PrivateLog(logging.Filter):
    """On serve's log handler: no token or address reaches a log line, whoever logged it (uvicorn included)."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Mask the message, and the traceback if there is one."""
        record.msg, record.args = private(record.getMessage()), None
        if record.exc_info and not record.exc_text:
            record.exc_text = private(logging.Formatter().formatException(record.exc_info))
        return True


class AccessLog:
    """ASGI middleware: one log line per request, without tokens or addresses (see path_for_log)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = {"code": 500}

        async def capture(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, capture)
        finally:
            log.info("%s %s %d %.1fms", _loggable(scope.get("method", "-")), path_for_log(scope.get("path", "")),
                     status["code"], (time.perf_counter() - start) * 1000)


class SecurityHeaders:
    """ASGI middleware: SECURITY_HEADERS on every answer (a route's own value of one wins)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def add_headers(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {bytes(name).lower() for name, _ in headers}
                headers += [(name.encode(), value.encode()) for name, value in SECURITY_HEADERS.items()
                            if name.encode() not in present]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, add_headers)


def request_deadline() -> float:
    """NEWSLETTER_REQUEST_DEADLINE (seconds, default 10): how long a client has to send a whole request."""
    raw = env_value(DEADLINE_ENV).strip()
    if not raw:
        return REQUEST_DEADLINE
    try:
        value = float(raw)
    except ValueError:
        value = 0.0
    if not 0 < value <= 3600:
        raise NewsletterError(f"{DEADLINE_ENV} must be a number of seconds from 0 to 3600, got {raw!r}",
                              hint=f"unset it for the default of {REQUEST_DEADLINE:g} s")
    return value


def protocol_class(deadline: float = REQUEST_DEADLINE) -> type:
    """uvicorn's h11 protocol with a request deadline. uvicorn has none: a client that sends half a request (its
    headers, or its body) and stops holds its connection (and a slot) for ever, so 1000 of them starve real
    readers. Here a connection whose request, headers and body, is not complete within `deadline` seconds of its
    start (or of the previous response) is closed."""
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class DeadlineProtocol(H11Protocol):  # type: ignore[misc]
        _timer: asyncio.TimerHandle | None = None

        def _arm(self) -> None:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = self.loop.call_later(deadline, self._late)

        def _late(self) -> None:
            self._timer = None
            # IDLE: the request line and headers are not complete; SEND_BODY: the body is not. Either way the
            # client stalled: drop it (a handler waiting for the body sees the client gone).
            if self.conn.their_state in (h11.IDLE, h11.SEND_BODY) and not self.transport.is_closing():
                self.transport.close()

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            super().connection_lost(exc)

    return DeadlineProtocol
