"""`newsletter serve`: the unsubscribe page with RFC 8058 one-click POST, the SendGrid Event Webhook, sign-up and
its confirmation, health; the outbox worker. What every answer gets (headers, private log, deadline): webguard.py."""

from __future__ import annotations

import contextlib
import html
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from .config import Config, env_set, env_value, load_config
from .errors import NewsletterError
from .files import GroupCommit
from .ledger import Event, Kind, Ledger, Outcome, Recorded, Source, ledger_path
from .outbox import Outbox, OutboxWorker, Postman
from .signup import (
    MAX_FIRST_NAME,
    Confirmed,
    ConfirmStatus,
    FormProblem,
    Roster,
    SignupOutcome,
    SignupResult,
    Signups,
    Welcome,
)
from .suppressions import BackgroundPusher
from .tokens import LinkState, secret_from_env, verify_token
from .webguard import AccessLog, PrivateLog, SecurityHeaders, for_log, protocol_class, request_deadline
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
    signups: Signups
    outbox: Outbox
    worker: OutboxWorker  # sends the outbox: confirmation and welcome emails never go out inside a request
    unsubscribes: GroupCommit[Event, Recorded]  # the page's and one-click's writes to the ledger
    prefix: str = ""  # the path of base_url, under which every route answers


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
a {{ color:{c['accent']}; }}
p.error {{ color:#a4262c; font-weight:bold; }}
@media (prefers-color-scheme: dark) {{
  body {{ background:{c['dark_background']}; color:{c['dark_text']}; }}
  main {{ background:{c['dark_content']}; }} h1 {{ color:{c['dark_text']}; }} p.small {{ color:{c['dark_muted']}; }}
  a {{ color:{c['dark_accent']}; }} p.error {{ color:#ff9a9f; }}
}}
</style></head>
<body><main>
<p class="small">{html.escape(config.name)}</p>
<h1>{html.escape(title)}</h1>
{body}
</main></body></html>"""
    # The security headers are added to every answer by SecurityHeaders.
    return HTMLResponse(doc, status_code=status, headers={"Cache-Control": "no-store"})


_FIELD = "font-size:18px;padding:10px;width:100%;max-width:420px;box-sizing:border-box;"
HONEYPOT = "website"  # a field hidden from people; a bot that fills it is answered and ignored


def signup_form(config: Config, action: str, email: str = "", first_name: str = "") -> str:
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
            f'value="{html.escape(first_name, quote=True)}" style="{_FIELD}"></p>\n'
            f'  <p style="position:absolute;left:-10000px;" aria-hidden="true"><label for="nl-{HONEYPOT}">Leave '
            f'this empty</label><input id="nl-{HONEYPOT}" name="{HONEYPOT}" type="text" tabindex="-1" '
            'autocomplete="off"></p>\n'
            '  <p><button type="submit">Subscribe</button></p>\n'
            "</form>\n"
            f'<p class="small"><a href="{html.escape(config.archive_url, quote=True)}/">Read the past issues</a></p>')


def _confirm_refused(config: Config, why: LinkState) -> Any:
    if why is LinkState.EXPIRED:
        return _page(config, "This link has expired", "<p>Confirmation links work for 7 days. Please "
                     f'<a href="{html.escape(config.base_url, quote=True)}/subscribe">sign up again</a>.</p>', 400)
    return _page(config, "This link is not valid", "<p>This confirmation link is incomplete or has been changed. "
                 "Please use the button in the email itself.</p>", 400)


def _invalid(state: WebState) -> Any:
    return _page(state.config, "This link is not valid",
                 "<p>This unsubscribe link is incomplete or has been changed. Please use the link from the "
                 "bottom of the email itself, or reply to any issue and ask to be removed.</p>", 400)


async def _read_limited(request: Any, limit: int) -> bytes | None:
    """The request body, or None when it is over `limit` bytes (or the client went away while sending it)."""
    from starlette.requests import ClientDisconnect

    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        return None
    body = b""
    try:
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                return None
    except ClientDisconnect:  # dropped at the request deadline: nobody reads the answer
        return None
    return body


# -- sign-up (double opt-in): the page, the form's POST, the confirm link --------------------------------
FORM_PROBLEMS = {
    FormProblem.ADDRESS: "That does not look like an email address. Please check it and try again.",
    FormProblem.NAME: f"Please give just your first name: letters only, up to {MAX_FIRST_NAME} characters, or "
                      "leave it empty.",
}
CHECK_INBOX = ("<p>If the address is right, an email is on its way with a button to confirm your subscription to "
               "{name}. It can take a few minutes; look in the spam folder too.</p>")


async def _subscribe_page(request: Any) -> Any:
    state: WebState = request.app.state.newsletter
    config = state.config
    return _page(config, f"Subscribe to {config.name}", signup_form(config, action=f"{state.prefix}/subscribe"))


async def _subscribe_post(request: Any) -> Any:
    """Record the sign-up and answer: the same work and the same page whatever the address (new, pending,
    subscribed, unsubscribed); the outbox worker decides the rest, after the answer."""
    from starlette.concurrency import run_in_threadpool
    from starlette.responses import PlainTextResponse

    from .signup import Request as SignupRequest

    state: WebState = request.app.state.newsletter
    config = state.config
    body = await _read_limited(request, MAX_FORM_BYTES)
    if body is None:
        return PlainTextResponse("request too large", status_code=413)
    form = {k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace")).items()}
    req = SignupRequest(email=form.get("email", ""), first_name=form.get("first_name", ""),
                        source=request.headers.get("referer", "") or f"{config.base_url}/subscribe",
                        ip=request.client.host if request.client else "", honeypot=form.get(HONEYPOT, ""))
    try:
        result = await run_in_threadpool(state.signups.request, req)
    except (NewsletterError, OSError) as exc:
        log.error("sign-up not recorded: %s", for_log(str(exc)))
        return _page(config, "We could not sign you up just now",
                     "<p>Something went wrong on our side and nothing was recorded. Please try again in a few "
                     "minutes.</p>", 503)
    if result.outcome is SignupOutcome.RECORDED:
        state.worker.nudge()
    return _signup_answer(state, result, form)


def _signup_answer(state: WebState, result: SignupResult, form: dict[str, str]) -> Any:
    config = state.config
    if result.outcome is SignupOutcome.INVALID and result.problem is not None:
        return _page(config, f"Subscribe to {config.name}",
                     f'<p class="error" role="alert">{html.escape(FORM_PROBLEMS[result.problem])}</p>'
                     + signup_form(config, f"{state.prefix}/subscribe", form.get("email", ""),
                                   form.get("first_name", "")), 400)
    # RECORDED, TRAP, LIMITED: one answer, so the form tells nobody anything about an address.
    return _page(config, "Check your inbox", CHECK_INBOX.format(name=html.escape(config.name)))


async def _confirm_page(request: Any) -> Any:
    from .tokens import verify_confirm_token

    state: WebState = request.app.state.newsletter
    config = state.config
    link = verify_confirm_token(state.secret, request.path_params["token"], time.time())
    if link.state is not LinkState.VALID:
        return _confirm_refused(config, link.state)
    # A GET never changes anything: mail scanners open every link.
    action = html.escape(str(request.url.path), quote=True)
    return _page(config, f"Confirm your subscription to {config.name}",
                 f"<p>Press the button to start receiving {html.escape(config.name)} at "
                 f"<strong>{html.escape(link.email)}</strong>.</p>"
                 f'<form method="post" action="{action}"><button type="submit">Confirm my subscription'
                 "</button></form>")


async def _confirm_post(request: Any) -> Any:
    from starlette.concurrency import run_in_threadpool

    from .signup import confirm

    state: WebState = request.app.state.newsletter
    config = state.config
    await _read_limited(request, MAX_FORM_BYTES)
    try:
        done = await run_in_threadpool(confirm, state.signups, state.outbox, state.ledger,
                                       request.path_params["token"])
    except (NewsletterError, OSError) as exc:
        log.error("confirmation not recorded: %s", for_log(str(exc)))
        return _page(config, "We could not confirm you just now",
                     "<p>Something went wrong on our side and nothing was recorded. Please press the button "
                     "in the email again in a few minutes.</p>", 503)
    if done.welcome is Welcome.QUEUED:
        state.worker.nudge()
    return _confirmed_page(state, done)


def _confirmed_page(state: WebState, done: Confirmed) -> Any:
    config = state.config
    if done.status in (ConfirmStatus.INVALID, ConfirmStatus.EXPIRED):
        return _confirm_refused(config, LinkState(done.status.value))
    if done.note:
        log.warning("%s: %s", "welcome email" if done.welcome is Welcome.NONE else "confirmation not finished",
                    for_log(done.note))
    if done.status is ConfirmStatus.STALE:
        return _page(config, "This link is older than your unsubscribe",
                     "<p>You unsubscribed after asking for this link, so it cannot sign you up again. If you "
                     f'would like to come back, please <a href="{html.escape(config.base_url, quote=True)}/subscribe">'
                     "sign up again</a>: a new email will ask you to confirm.</p>", 409)
    if done.status is ConfirmStatus.PARTIAL:
        return _page(config, "Almost there",
                     "<p>Your consent was recorded, but we could not add you to the list just now. Please press "
                     "the button in the email again in a few minutes to finish.</p>", 503)
    title = "You are already subscribed" if done.status is ConfirmStatus.ALREADY else "You are subscribed"
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
    background: the reader does not wait on SendGrid, and what fails waits in the ledger's queue. Concurrent
    unsubscribes are recorded together, one fsync for all (state.unsubscribes)."""
    (done,) = state.unsubscribes.submit([Event(email, Kind.UNSUBSCRIBE, source=source)])
    return done.outcome is Outcome.RECORDED


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
        log.error("unsubscribe not recorded: %s", for_log(str(exc)))
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
        log.error("webhook batch not stored: %s", for_log(str(exc)))
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
    signups, outbox = Signups(root, config, secret), Outbox(root)
    roster = Roster(root)
    _intake_roster(roster)  # read now, before the first sign-up: no request ever waits on a whole-list read
    worker = OutboxWorker(outbox, Postman(root, config, secret),
                          intake=lambda: _intake(signups, roster, ledger, outbox))
    state = WebState(root=root, config=config, secret=secret, public_key=env_value(PUBLIC_KEY_ENV),
                     ledger=ledger, events=EventLog(root), lock=threading.Lock(), signups=signups, outbox=outbox,
                     worker=worker, unsubscribes=GroupCommit(lambda events: ledger.record(
                         events, what=f"{len(events)} unsubscribe(s)").results),
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
        worker.start()
        try:
            yield
        finally:
            worker.stop()
            pusher.stop()

    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.newsletter = state
    return AccessLog(SecurityHeaders(app))


def app_state(app: Any) -> WebState:
    """The state behind an app made by create_app (under its middleware)."""
    while not hasattr(app, "state"):
        app = app.app
    state: WebState = app.state.newsletter
    return state


def _intake(signups: Signups, roster: Roster, ledger: Ledger, outbox: Outbox) -> None:
    """The outbox worker's first step: decide what new sign-ups lead to (the list unreadable: decided without it,
    so a reader on it may get a confirmation, never the other way round)."""
    _intake_roster(roster)  # triage refreshes it too: this one says when the list cannot be read
    signups.triage(roster, ledger, outbox)


def _intake_roster(roster: Roster) -> None:
    known = roster.problem
    roster.refresh()
    if roster.problem and roster.problem != known:
        log.warning("the list cannot be read, sign-ups are checked without it: %s", for_log(roster.problem))


def serve(root: Path, host: str, port: int, ready: Any = None) -> None:
    """Run the app on uvicorn until interrupted; `ready(url)` is called once the port is known to be free."""
    import resource

    import uvicorn

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    for handler in logging.getLogger().handlers:
        handler.addFilter(PrivateLog())
    deadline = request_deadline()
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
    # log_config=None: uvicorn's own lines go through the root handler, and so through PrivateLog.
    uvicorn.run(app, host=host, port=port, access_log=False, log_level="warning", log_config=None,
                proxy_headers=True, http=protocol_class(deadline), timeout_keep_alive=5, backlog=2048)
