"""`newsletter serve`: the unsubscribe page with RFC 8058 one-click POST, the SendGrid Event Webhook, health."""

from __future__ import annotations

import asyncio
import contextlib
import html
import logging
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from .config import API_KEY_ENV, Config, env_set, env_value, load_config
from .errors import NewsletterError
from .ledger import Event, Kind, Ledger, Source, ledger_path
from .suppressions import BackgroundPusher
from .tokens import secret_from_env, verify_token
from .webhook import (
    PUBLIC_KEY_ENV,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    EventLog,
    RecordResult,
    WebhookError,
    parse_batch,
    verify_signature,
)

log = logging.getLogger("newsletter.web")
MAX_FORM_BYTES = 16 * 1024
MAX_WEBHOOK_BYTES = 5 * 1024 * 1024  # SendGrid posts batches of up to 768 KB
_TOKEN_IN_PATH = re.compile(r"/unsubscribe/[^/?]+")


@dataclass
class WebState:
    """What the handlers share."""

    root: Path
    config: Config
    secret: str
    public_key: str
    ledger: Ledger
    events: EventLog
    lock: threading.Lock  # check-then-append of one process is atomic: a second POST writes nothing new
    prefix: str = ""  # the path of base_url, under which every route answers


def _loggable(text: str) -> str:
    """Control characters escaped: a request path with %0a must not forge a second log line."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _without_address(text: str, email: str) -> str:
    return text.replace(email, _mask(email))


def _mask(email: str) -> str:
    local, _, domain = email.partition("@")
    return f"{local[:1]}…@{domain}" if local else email


def _page(config: Config, title: str, body: str, status: int = 200) -> Any:
    from starlette.responses import HTMLResponse

    c, f = config.colors, config.fonts
    doc = f"""<!doctype html>
<html lang="{html.escape(config.language)}"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex">
<meta name="color-scheme" content="light dark">
<title>{html.escape(title)} · {html.escape(config.name)}</title>
<style>
body {{ margin:0; background:{c['background']}; color:{c['text']}; font-family:{f['body']}; font-size:18px;
       line-height:1.6; }}
main {{ max-width:560px; margin:48px auto; background:{c['content']}; padding:32px 28px; border-radius:8px; }}
h1 {{ font-family:{f['heading']}; color:{c['heading']}; font-size:26px; line-height:1.3; margin:0 0 16px; }}
button {{ background:{c['accent']}; color:{c['button_text']}; border:0; border-radius:6px; font-size:18px;
         font-weight:bold; padding:14px 28px; min-height:48px; cursor:pointer; font-family:inherit; }}
p.small {{ font-size:14px; color:{c['muted']}; }}
@media (prefers-color-scheme: dark) {{
  body {{ background:{c['dark_background']}; color:{c['dark_text']}; }}
  main {{ background:{c['dark_content']}; }} h1 {{ color:{c['dark_text']}; }} p.small {{ color:{c['dark_muted']}; }}
}}
</style></head>
<body><main>
<p class="small">{html.escape(config.name)}</p>
<h1>{html.escape(title)}</h1>
{body}
</main></body></html>"""
    return HTMLResponse(doc, status_code=status, headers={"Cache-Control": "no-store",
                                                           "Referrer-Policy": "no-referrer"})


_FIELD = "font-size:18px;padding:10px;width:100%;max-width:420px;box-sizing:border-box;"
HONEYPOT = "website"  # a field hidden from people; a bot that fills it is answered and ignored


def signup_form(config: Config, action: str, email: str = "") -> str:
    """The sign-up form: plain HTML that works without JavaScript (the page and `newsletter embed`)."""
    promise = config.signup.promise or (f"One letter a week from {config.name}. Unsubscribe with one click, "
                                        "any time.")
    return (f'<p>{html.escape(promise)}</p>\n'
            f'<form method="post" action="{html.escape(action, quote=True)}" class="nl-signup">\n'
            '  <p><label for="nl-email">Your email address</label><br>\n'
            f'  <input id="nl-email" name="email" type="email" required autocomplete="email" '
            f'value="{html.escape(email, quote=True)}" style="{_FIELD}"></p>\n'
            '  <p><label for="nl-first">Your first name (optional)</label><br>\n'
            '  <input id="nl-first" name="first_name" type="text" autocomplete="given-name" '
            f'style="{_FIELD}"></p>\n'
            f'  <p style="position:absolute;left:-10000px;" aria-hidden="true"><label for="nl-{HONEYPOT}">Leave '
            f'this empty</label><input id="nl-{HONEYPOT}" name="{HONEYPOT}" type="text" tabindex="-1" '
            'autocomplete="off"></p>\n'
            '  <p><button type="submit">Subscribe</button></p>\n'
            "</form>\n"
            f'<p class="small"><a href="{html.escape(config.archive_url, quote=True)}/">Read the past issues</a></p>')


def _confirm_refused(config: Config, why: str) -> Any:
    if why == "expired":
        return _page(config, "This link has expired", "<p>Confirmation links work for 7 days. Please "
                     f'<a href="{html.escape(config.base_url, quote=True)}/subscribe">sign up again</a>.</p>', 400)
    return _page(config, "This link is not valid", "<p>This confirmation link is incomplete or has been changed. "
                 "Please use the button in the email itself.</p>", 400)


def _invalid(state: WebState) -> Any:
    return _page(state.config, "This link is not valid",
                 "<p>This unsubscribe link is incomplete or has been changed. Please use the link from the "
                 "bottom of the email itself, or reply to any issue and ask to be removed.</p>", 400)


async def _read_limited(request: Any, limit: int) -> bytes | None:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        return None
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            return None
    return body


# -- sign-up (double opt-in): the page, the form's POST, the confirm link --------------------------------
def _transport(config: Config) -> Any:
    """SendGrid, when SENDGRID_API_KEY is set (None otherwise: the confirmation email cannot go out)."""
    from .sendgrid import SendGridTransport, api_key_from_env

    if not env_set(API_KEY_ENV):
        return None
    return SendGridTransport(api_key_from_env(), timeout=config.sendgrid.timeout)

async def _subscribe_page(request: Any) -> Any:
    state: WebState = request.app.state.newsletter
    config = state.config
    return _page(config, f"Subscribe to {config.name}", signup_form(config, action=f"{state.prefix}/subscribe"))

async def _subscribe_post(request: Any) -> Any:
    from starlette.concurrency import run_in_threadpool
    from starlette.responses import PlainTextResponse

    from .signup import Request as SignupRequest
    from .signup import SignupError, request_signup

    state: WebState = request.app.state.newsletter
    config, prefix = state.config, state.prefix
    body = await _read_limited(request, MAX_FORM_BYTES)
    if body is None:
        return PlainTextResponse("request too large", status_code=413)
    form = {k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace")).items()}
    req = SignupRequest(email=form.get("email", ""), first_name=form.get("first_name", ""),
                        source=request.headers.get("referer", "") or f"{config.base_url}/subscribe",
                        ip=request.client.host if request.client else "", honeypot=form.get(HONEYPOT, ""))
    try:
        await run_in_threadpool(request_signup, state.root, config, state.secret, _transport(config), req)
    except SignupError as exc:
        if exc.status == 400:
            return _page(config, f"Subscribe to {config.name}", f'<p class="error" role="alert">'
                         f"{html.escape(exc.message)}.</p>" + signup_form(config, f"{prefix}/subscribe",
                                                                          form.get("email", "")), 400)
        log.error("sign-up not confirmed by email: %s", _loggable(_without_address(str(exc), req.email)))
        return _page(config, "We could not send the confirmation",
                     "<p>We could not send the confirmation email just now, please try again later.</p>", 503)
    except (NewsletterError, OSError) as exc:
        log.error("sign-up not recorded: %s", _loggable(_without_address(str(exc), req.email)))
        return _page(config, "We could not sign you up just now",
                     "<p>Something went wrong on our side and nothing was recorded. Please try again in a few "
                     "minutes.</p>", 503)
    # The same answer whatever the address: new, pending, already subscribed or unsubscribed.
    return _page(config, "Check your inbox",
                 "<p>If the address is right, an email is on its way with a button to confirm your "
                 f"subscription to {html.escape(config.name)}. It can take a minute; look in the spam folder "
                 "too.</p>")

async def _confirm_page(request: Any) -> Any:
    from .tokens import verify_confirm_token

    state: WebState = request.app.state.newsletter
    config = state.config
    found = verify_confirm_token(state.secret, request.path_params["token"], time.time())
    if isinstance(found, str):
        return _confirm_refused(config, found)
    # A GET never changes anything: mail scanners open every link.
    action = html.escape(str(request.url.path), quote=True)
    return _page(config, f"Confirm your subscription to {config.name}",
                 f"<p>Press the button to start receiving {html.escape(config.name)} at "
                 f"<strong>{html.escape(found[0])}</strong>.</p>"
                 f'<form method="post" action="{action}"><button type="submit">Confirm my subscription'
                 "</button></form>")

async def _confirm_post(request: Any) -> Any:
    from starlette.concurrency import run_in_threadpool

    from .signup import SignupError, confirm

    state: WebState = request.app.state.newsletter
    config = state.config
    await _read_limited(request, MAX_FORM_BYTES)
    try:
        done = await run_in_threadpool(confirm, state.root, config, state.secret, _transport(config),
                                       request.path_params["token"], state.ledger)
    except SignupError as exc:
        return _confirm_refused(config, "expired" if "expired" in exc.message else "invalid")
    except (NewsletterError, OSError) as exc:
        log.error("confirmation not recorded: %s", _loggable(str(exc)))
        return _page(config, "We could not confirm you just now",
                     "<p>Something went wrong on our side and nothing was recorded. Please press the button "
                     "in the email again in a few minutes.</p>", 503)
    return _confirmed_page(state, done)


def _confirmed_page(state: WebState, done: Any) -> Any:
    from .signup import ConfirmStatus

    config = state.config
    if done.welcome_note:
        log.warning("welcome email: %s", _loggable(_without_address(done.welcome_note, done.email)))
    if done.status is ConfirmStatus.STALE:
        return _page(config, "This link is older than your unsubscribe",
                     "<p>You unsubscribed after asking for this link, so it cannot sign you up again. If you "
                     f'would like to come back, please <a href="{html.escape(config.base_url, quote=True)}/subscribe">'
                     "sign up again</a>: a new email will ask you to confirm.</p>", 409)
    if done.status is ConfirmStatus.PARTIAL:
        return _page(config, "Almost there",
                     "<p>Your consent was recorded, but we could not add you to the list just now. Please press "
                     "the button in the email again in a few minutes to finish.</p>", 503)
    title = "You are already subscribed" if done.already else "You are subscribed"
    return _page(config, title, f"<p>Welcome to {html.escape(config.name)}. The next letter will find you at "
                 f"<strong>{html.escape(done.email)}</strong>.</p>"
                 f'<p class="small"><a href="{html.escape(config.archive_url)}/">Read the past issues</a></p>')


# -- unsubscribe (page, one-click), the event webhook, health ------------------------------------------------
async def _unsubscribe_page(request: Any) -> Any:
    state: WebState = request.app.state.newsletter
    config = state.config
    email = verify_token(state.secret, request.path_params["token"])
    if email is None:
        return _invalid(state)
    # A GET never changes anything: mail scanners open every link.
    action = html.escape(str(request.url.path), quote=True)
    return _page(config, f"Unsubscribe {email} from {config.name}?",
                 f'<p>You will get no more emails from {html.escape(config.name)} at '
                 f"<strong>{html.escape(email)}</strong>.</p>"
                 f'<form method="post" action="{action}"><input type="hidden" name="confirm" value="page">'
                 f'<button type="submit">Unsubscribe</button></form>'
                 f'<p class="small">Changed your mind? Just close this page.</p>')


def _record_unsubscribe(state: WebState, email: str, source: str) -> bool:
    """The ledger decides (a second POST writes nothing) and tells SendGrid after the answer, in the
    background: the reader does not wait on SendGrid, and what fails waits in the ledger's queue."""
    recording = state.ledger.record([Event(email, Kind.UNSUBSCRIBE, source=source)], what=f"a {source} unsubscribe")
    return bool(recording.written)


async def _unsubscribe_post(request: Any) -> Any:
    from starlette.concurrency import run_in_threadpool
    from starlette.responses import PlainTextResponse

    state: WebState = request.app.state.newsletter
    config = state.config
    body = await _read_limited(request, MAX_FORM_BYTES)
    if body is None:
        return PlainTextResponse("request too large", status_code=413)
    email = verify_token(state.secret, request.path_params["token"])
    if email is None:
        return _invalid(state)
    # RFC 8058 clients send `List-Unsubscribe=One-Click` urlencoded or as multipart/form-data.
    form = parse_qs(body.decode("utf-8", "replace"))
    one_click = form.get("List-Unsubscribe", [""])[0] == "One-Click" or (
        b'name="List-Unsubscribe"' in body and b"One-Click" in body)
    try:
        recorded = await run_in_threadpool(_record_unsubscribe, state, email,
                                           Source.ONE_CLICK if one_click else Source.PAGE)
    except (NewsletterError, OSError) as exc:
        # Nothing was stored, so nothing is claimed: 503 makes a one-click client retry, and the reader
        # is told plainly. The log line names the cause, never the address.
        log.error("unsubscribe not recorded: %s", _loggable(_without_address(str(exc), email)))
        return _page(config, "We could not unsubscribe you just now",
                     "<p>Something went wrong on our side and your request was <strong>not</strong> recorded. "
                     "Please try again in a few minutes, or reply to any issue and ask to be removed: "
                     "we will do it by hand.</p>", 503)
    del recorded  # the same page whether it was new or a repeat
    return _page(config, "You are unsubscribed",
                 f"<p><strong>{html.escape(email)}</strong> will get no more emails from "
                 f"{html.escape(config.name)}.</p><p>Thank you for reading. If this was a mistake, reply "
                 "to any issue and we will add you back.</p>")


def _record_events(state: WebState, events: list[dict[str, Any]]) -> RecordResult:
    # The lock is taken in a worker thread, never across an await on the event loop.
    with state.lock:
        return state.events.record(events, state.ledger)


async def _webhook(request: Any) -> Any:
    from starlette.concurrency import run_in_threadpool
    from starlette.responses import JSONResponse

    state: WebState = request.app.state.newsletter
    body = await _read_limited(request, MAX_WEBHOOK_BYTES)
    if body is None:
        return JSONResponse({"error": "request too large"}, status_code=413)
    try:
        # The signature is checked over the raw bytes before anything is read from them.
        verify_signature(state.public_key, request.headers.get(SIGNATURE_HEADER, ""),
                         request.headers.get(TIMESTAMP_HEADER, ""), body)
        events = parse_batch(body)
    except WebhookError as exc:
        return JSONResponse({"error": exc.message}, status_code=exc.status)
    try:
        result = await run_in_threadpool(_record_events, state, events)
    except (NewsletterError, OSError) as exc:
        # Not stored, so not acknowledged: SendGrid retries a batch that is not answered 2xx.
        log.error("webhook batch not stored: %s", _loggable(str(exc)))
        return JSONResponse({"error": "could not store the events; retry later"}, status_code=503)
    return JSONResponse({"received": len(events), "new": result.logged, "ledger": result.ledger,
                         "skipped": result.skipped})


async def _health(request: Any) -> Any:
    from starlette.responses import JSONResponse

    return JSONResponse({"status": "ok", "newsletter": request.app.state.newsletter.config.name})


async def _archive_file(request: Any) -> Any:
    """The public archive from build/site (when archive_url lies under base_url): regular files only."""
    from starlette.responses import FileResponse, RedirectResponse

    from .archive import Found, find_site_file, site_dir

    state: WebState = request.app.state.newsletter
    found = find_site_file(site_dir(state.root), request.path_params["path"])
    if found.found is Found.SLASH:
        return RedirectResponse(request.url.path + "/", status_code=301)
    if found.found is Found.MISSING or found.path is None:
        return _page(state.config, "Page not found", "<p>There is no such page in the archive. "
                     f'<a href="{html.escape(state.config.archive_url, quote=True)}/">All issues</a></p>', 404)
    return FileResponse(found.path, stat_result=found.stat, media_type=found.content_type,
                        headers={"Cache-Control": found.cache_control, "X-Content-Type-Options": "nosniff"})


def create_app(root: Path) -> Any:
    """The ASGI app, configured from newsletter.yaml and the environment: the route table."""
    from starlette.applications import Starlette
    from starlette.routing import Route

    config = load_config(root)
    secret, _ = secret_from_env(required=True)
    ledger = Ledger(ledger_path(root))
    pusher = BackgroundPusher(ledger)
    ledger.follow = pusher.follow  # every opt-out recorded here reaches SendGrid without a `sync`
    state = WebState(root=root, config=config, secret=secret, public_key=env_value(PUBLIC_KEY_ENV),
                     ledger=ledger, events=EventLog(root), lock=threading.Lock(),
                     prefix=urlsplit(config.base_url).path.rstrip("/"))
    prefix = state.prefix
    routes = [
        Route(f"{prefix}/unsubscribe/{{token}}", _unsubscribe_page, methods=["GET"]),
        Route(f"{prefix}/unsubscribe/{{token}}", _unsubscribe_post, methods=["POST"]),
        Route(f"{prefix}/webhooks/sendgrid", _webhook, methods=["POST"]),
        Route(f"{prefix}/healthz", _health, methods=["GET"]),
        Route(f"{prefix}/subscribe", _subscribe_page, methods=["GET"]),
        Route(f"{prefix}/subscribe", _subscribe_post, methods=["POST"]),
        Route(f"{prefix}/confirm/{{token}}", _confirm_page, methods=["GET"]),
        Route(f"{prefix}/confirm/{{token}}", _confirm_post, methods=["POST"]),
    ]
    from .archive import hosted_path

    archive_path = hosted_path(config)
    if archive_path is not None:  # last: the archive may sit at base_url itself, beside the routes above
        routes.append(Route(f"{archive_path}{{path:path}}", _archive_file, methods=["GET", "HEAD"]))

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> Any:
        pusher.start()
        try:
            yield
        finally:
            pusher.stop()

    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.newsletter = state
    return AccessLog(app)


class AccessLog:
    """ASGI middleware: one log line per request; tokens (which carry the address) never reach the log."""

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
            path = _loggable(_TOKEN_IN_PATH.sub("/unsubscribe/<token>", scope.get("path", "")))
            log.info("%s %s %d %.1fms", _loggable(scope.get("method", "-")), path, status["code"],
                     (time.perf_counter() - start) * 1000)


HEADER_TIMEOUT = 10.0  # seconds a client has to finish a request's headers


def _protocol_class() -> type:
    """uvicorn's h11 protocol with a header-read deadline. uvicorn has none: a client that sends half a
    request line and stops holds its connection (and a slot) for ever, so 1000 of them starve real readers.
    Here a connection whose request headers are not complete within HEADER_TIMEOUT seconds of its start (or of
    the previous response) is closed."""
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class HeaderTimeoutProtocol(H11Protocol):  # type: ignore[misc]
        _header_timer: asyncio.TimerHandle | None = None

        def _arm(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
            self._header_timer = self.loop.call_later(HEADER_TIMEOUT, self._headers_late)

        def _headers_late(self) -> None:
            self._header_timer = None
            if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
                self.transport.close()  # still no complete request line and headers: drop it

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None
            super().connection_lost(exc)

    return HeaderTimeoutProtocol


def serve(root: Path, host: str, port: int, ready: Any = None) -> None:
    """Run the app on uvicorn until interrupted; `ready(url)` is called once the port is known to be free."""
    import resource

    import uvicorn

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if not env_set(PUBLIC_KEY_ENV):
        log.warning("%s is not set: the event webhook will refuse every request (403)", PUBLIC_KEY_ENV)
    app = create_app(root)
    import socket

    with socket.socket() as probe:  # a clear message instead of uvicorn's log line when the port is taken
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise NewsletterError(f"cannot listen on {host}:{port}: {exc.strerror}",
                                  hint="choose another with --port") from None
    # Many idle connections are cheap (the header deadline closes the stalled ones); running out of file
    # descriptors is not: take what the system allows.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 65536) if hard > 0 else 65536, hard))
    if ready:
        ready(f"http://{host}:{port}")
    # No limit_concurrency: uvicorn counts idle connections against it and answers 503 to real readers.
    uvicorn.run(app, host=host, port=port, access_log=False, log_level="warning", proxy_headers=True,
                http=_protocol_class(), timeout_keep_alive=5, backlog=2048)
