"""`newsletter doctor`: is this newsletter ready to send? Each check a typed result with the fix in plain words.

Sender domain (SendGrid's domain authentication, DKIM, return path, DMARC, SPF), replies, the public URL, the
Event Webhook and its signature, the API key's permissions, the link secret, readers' data kept out of git, and a
recent backup. DNS questions go through dnspython (to NEWSLETTER_NAMESERVER when set); SendGrid is asked through
sendgrid.py. Without a network, what needs one is a warning ("no network: not checked"), never a failure.
"""

from __future__ import annotations

import base64
import binascii
import http.client
import ipaddress
import re
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from .config import (
    API_KEY_ENV,
    SECRET_ENV,
    WEBHOOK_PUBLIC_KEY_ENV,
    Config,
    env_file_path,
    env_set,
    env_value,
    load_config,
)
from .errors import NewsletterError, TransportError
from .mailauth import DNS_LIFETIME, NoNetwork, Resolver, dmarc_policy, domain_of, org_domain, spf_lookups, spf_records
from .sendgrid import SendGridTransport, transport_from_env

CHECK_IDS = ("sender-domain", "dkim", "return-path", "dmarc", "spf", "reply-mx", "base-url", "webhook",
             "webhook-signed", "api-key", "secret", "list-private", "backup")
NO_NETWORK = "no network: not checked"
SECRET_MIN_CHARS = 32
BACKUP_MAX_AGE_DAYS = 7
SPF_LOOKUP_LIMIT = 10  # RFC 7208 4.6.4: past ten DNS-querying terms the receiver answers permerror
HTTP_TIMEOUT = 10.0
WEBHOOK_PATH = "/webhooks/sendgrid"
SENDER_AUTH = "SendGrid > Settings > Sender Authentication"
EVENT_WEBHOOK = "SendGrid > Settings > Mail Settings > Event Webhook"
API_KEYS = "SendGrid > Settings > API Keys"
NEW_SECRET = "python3 -c 'import secrets; print(secrets.token_urlsafe(32))'"
# The Event Webhook's toggles (its settings' names) -> the words on SendGrid's page, as README lists them.
EVENTS_FOR_THE_LEDGER = {"dropped": "Dropped", "bounce": "Bounced", "spam_report": "Spam Reports",
                         "unsubscribe": "Unsubscribes", "group_unsubscribe": "Group Unsubscribes"}
EVENTS_FOR_STATS = {"delivered": "Delivered", "open": "Opened", "click": "Clicked", "deferred": "Deferred"}

T = TypeVar("T")


class Status(StrEnum):
    """A check's verdict: ok, a warning (worth fixing, or not checkable here), or a failure (exit 1)."""

    OK = "ok"
    WARN = "warn"
    FAIL = "fail"


@dataclass(frozen=True)
class Check:
    """One check's result: its id, verdict, what was found, and what to do ("" when nothing)."""

    check: str
    status: Status
    detail: str
    fix: str = ""

    def as_dict(self) -> dict[str, Any]:
        """The JSON shape: {"check", "status", "detail", "fix"} (fix null when there is nothing to do)."""
        return {"check": self.check, "status": self.status.value, "detail": self.detail, "fix": self.fix or None}


@dataclass(frozen=True)
class DoctorReport:
    """Every check, in CHECK_IDS order."""

    checks: tuple[Check, ...]

    @property
    def failed(self) -> bool:
        """Whether any check failed (the command then exits 1)."""
        return any(c.status == Status.FAIL for c in self.checks)

    def get(self, check_id: str) -> Check:
        """The result of one check, by id."""
        return next(c for c in self.checks if c.check == check_id)

    def as_dict(self) -> dict[str, Any]:
        """{"checks": [...]}, as `doctor --json` prints it."""
        return {"checks": [c.as_dict() for c in self.checks]}


class _NotChecked(Exception):
    """A check that cannot be made here: a warning saying why (status: SendGrid's answer, when it gave one)."""

    def __init__(self, detail: str, fix: str = "", status: int | None = None) -> None:
        super().__init__(detail)
        self.detail, self.fix, self.status = detail, fix, status


@dataclass
class _Context:
    """What the checks share: the config, one resolver, SendGrid's answers (each asked at most once)."""

    root: Path
    config: Config
    dns: Resolver
    transport: SendGridTransport | None
    no_key: str = ""  # why there is no transport
    sendgrid_offline: bool = False
    answers: dict[str, Any] = field(default_factory=dict)

    def ask(self, what: str, call: Callable[[SendGridTransport], T]) -> T:
        """SendGrid's answer to `call`, asked once; _NotChecked when it cannot be had."""
        if self.transport is None:
            raise _NotChecked(f"not checked: {self.no_key}", f"set {API_KEY_ENV} (see api-key)")
        if self.sendgrid_offline:
            raise _NotChecked(NO_NETWORK)
        if what not in self.answers:
            try:
                self.answers[what] = call(self.transport)
            except TransportError as exc:
                self.answers[what] = self._not_checked(exc)  # the same answer for every check that asks
        answer = self.answers[what]
        if isinstance(answer, _NotChecked):
            raise answer
        return answer  # type: ignore[no-any-return]

    def _not_checked(self, exc: TransportError) -> _NotChecked:
        if exc.status is None and not exc.sent:  # could not connect: the network (or SendGrid) is not there
            self.sendgrid_offline = True
            return _NotChecked(NO_NETWORK)
        if exc.status == 401:
            return _NotChecked("not checked: SendGrid refused the API key (see api-key)", status=401)
        if exc.status == 403:
            return _NotChecked("not checked: the API key may not read this setting (403)",
                               f"give the key read access to it in {API_KEYS}, or run doctor with one that has",
                               status=403)
        return _NotChecked(f"not checked: {exc}", status=exc.status)


def run_doctor(root: Path, *, dns_timeout: float = DNS_LIFETIME) -> DoctorReport:
    """Run every check against this newsletter, its DNS, SendGrid account and folder; never raises for what a
    check finds (only for a newsletter.yaml that does not load or a malformed NEWSLETTER_NAMESERVER).
    `dns_timeout`: seconds to wait for one DNS answer before deciding there is no network."""
    config = load_config(root)
    ctx = _Context(root=root, config=config, dns=Resolver.from_env(dns_timeout), transport=None)
    if not env_set(API_KEY_ENV):
        ctx.no_key = f"{API_KEY_ENV} is not set"
    else:
        try:
            ctx.transport = transport_from_env(config.sendgrid.timeout, at_most=HTTP_TIMEOUT)
        except NewsletterError as exc:
            ctx.no_key = exc.message
    return DoctorReport(tuple(_run(ctx, check_id, CHECKS[check_id]) for check_id in CHECK_IDS))


def _run(ctx: _Context, check_id: str, check: Callable[[_Context], tuple[Status, str, str]]) -> Check:
    try:
        status, detail, fix = check(ctx)
    except NoNetwork:
        return Check(check_id, Status.WARN, NO_NETWORK)
    except _NotChecked as exc:
        return Check(check_id, Status.WARN, exc.detail, exc.fix)
    return Check(check_id, status, detail, fix)


def _ok(detail: str) -> tuple[Status, str, str]:
    return Status.OK, detail, ""


def _warn(detail: str, fix: str) -> tuple[Status, str, str]:
    return Status.WARN, detail, fix


def _fail(detail: str, fix: str) -> tuple[Status, str, str]:
    return Status.FAIL, detail, fix


# -- the sending domain at SendGrid, and the records it asks for ------------------------------------------------
def _authenticated_domain(ctx: _Context) -> dict[str, Any] | None:
    """SendGrid's authenticated domain for the From address: its own domain, else the nearest parent; a
    verified one first."""
    domain = domain_of(ctx.config.sender.email)
    listed = ctx.ask("domains", lambda t: t.authenticated_domains())
    candidates = [d for d in listed if isinstance(d.get("domain"), str)
                  and (domain == d["domain"].lower() or domain.endswith("." + d["domain"].lower()))]
    candidates.sort(key=lambda d: (len(d["domain"]), bool(d.get("valid"))), reverse=True)
    return candidates[0] if candidates else None


def _check_sender_domain(ctx: _Context) -> tuple[Status, str, str]:
    domain = domain_of(ctx.config.sender.email)
    record = _authenticated_domain(ctx)
    if record is None:
        return _fail(f"{domain} (the From address's domain) is not authenticated at SendGrid",
                     f"in {SENDER_AUTH}, authenticate {domain}, add the DNS records it lists at your registrar "
                     "(README: Before your first send), then press Verify")
    if not record.get("valid"):
        return _fail(f"{record['domain']} is set up at SendGrid but not verified yet",
                     f"add the records that dkim and return-path name at your registrar, then press Verify in "
                     f"{SENDER_AUTH}")
    return _ok(f"{record['domain']} is authenticated at SendGrid")


def _domain_records(ctx: _Context, names: Callable[[str], bool]) -> tuple[str, list[dict[str, Any]]]:
    record = _authenticated_domain(ctx)
    if record is None:
        raise _NotChecked(f"not checked: {domain_of(ctx.config.sender.email)} is not authenticated at SendGrid "
                          "(see sender-domain)")
    listed = record.get("dns")
    dns: dict[str, Any] = listed if isinstance(listed, dict) else {}
    wanted = [dns[k] for k in sorted(dns) if names(k) and isinstance(dns[k], dict) and dns[k].get("host")]
    return str(record["domain"]).lower(), wanted


def _published(ctx: _Context, zone: str, wanted: list[dict[str, Any]]) -> tuple[Status, str, str]:
    """Each record SendGrid lists, looked up: ok when all resolve to SendGrid's value, else fail naming them."""
    wrong, fixes = [], []
    for rec in wanted:
        host, rtype, data = str(rec["host"]).lower().rstrip("."), str(rec.get("type", "cname")).upper(), \
            str(rec.get("data", ""))
        found = ctx.dns.lookup(host, rtype)
        if _same_record(rtype, found, data):
            continue
        wrong.append(f"{host} has no {rtype} record" if not found else
                     f"{host} {rtype} is {found[0]}, SendGrid expects {data}")
        # Registrars' forms ask for the host without the domain they manage ("s1._domainkey").
        label = host[: -len(zone) - 1] if host.endswith("." + zone) else host
        fixes.append(f"type {rtype}, host {label}, value {data}")
    if wrong:
        return _fail("; ".join(wrong), "at your registrar, add (or correct) " + "; and ".join(fixes))
    names = [str(r["host"]).lower() for r in wanted]
    return _ok(f"{' and '.join(names)} {'resolves' if len(names) == 1 else 'resolve'} as SendGrid lists")


def _same_record(rtype: str, found: list[str], expected: str) -> bool:
    if rtype == "TXT":  # a DKIM key may be split or spaced differently
        return "".join(expected.split()) in ["".join(f.split()) for f in found]
    return expected.lower().rstrip(".") in [f.lower().rstrip(".") for f in found]


def _check_dkim(ctx: _Context) -> tuple[Status, str, str]:
    zone, wanted = _domain_records(ctx, lambda key: key.startswith("dkim"))
    if not wanted:
        raise _NotChecked(f"not checked: SendGrid lists no DKIM record for {zone}")
    return _published(ctx, zone, wanted)


def _check_return_path(ctx: _Context) -> tuple[Status, str, str]:
    zone, wanted = _domain_records(ctx, lambda key: key in ("mail_cname", "mail_server"))
    if not wanted:
        raise _NotChecked(f"not checked: SendGrid lists no return-path record for {zone}")
    return _published(ctx, zone, wanted)


# -- what receivers look up themselves: DMARC, SPF, the reply-to domain's MX ------------------------------------
def _check_dmarc(ctx: _Context) -> tuple[Status, str, str]:
    domain = domain_of(ctx.config.sender.email)
    reports = ctx.config.reply_to if org_domain(domain_of(ctx.config.reply_to)) == org_domain(domain) \
        else ctx.config.sender.email
    starter = f"v=DMARC1; p=none; rua=mailto:{reports}"
    name = f"_dmarc.{domain}"
    records = _dmarc_records(ctx, name)
    if not records and org_domain(domain) != domain:  # receivers fall back to the organisational domain
        name = f"_dmarc.{org_domain(domain)}"
        records = _dmarc_records(ctx, name)
    if not records:
        return _fail(f"no DMARC record at _dmarc.{domain}: Gmail, Yahoo and Microsoft refuse bulk mail without one",
                     f"at your registrar, add a TXT record at _dmarc.{domain} (host `_dmarc`): {starter}")
    if len(records) > 1:
        return _fail(f"{len(records)} DMARC records at {name}: receivers then apply none",
                     f"keep one TXT record at {name}, e.g. {starter}")
    policy = dmarc_policy(records[0])
    if policy is None:
        return _fail(f"the DMARC record at {name} has no valid policy (p=none, quarantine or reject): {records[0]}",
                     f"replace it with: {starter}")
    return _ok(f"{name}: p={policy}")


def _dmarc_records(ctx: _Context, name: str) -> list[str]:
    return [t for t in ctx.dns.lookup(name, "TXT") if re.match(r"\s*v\s*=\s*DMARC1\s*(;|$)", t, re.IGNORECASE)]


def _check_spf(ctx: _Context) -> tuple[Status, str, str]:
    domain = domain_of(ctx.config.sender.email)
    records = spf_records(ctx.dns, domain)
    if not records:
        return _ok(f"{domain} publishes no SPF record: none needed, SendGrid's return path carries its own")
    if len(records) > 1:
        return _warn(f"{domain} has {len(records)} SPF records: receivers treat that as an error",
                     "merge them into one TXT record starting v=spf1")
    lookups, problem = spf_lookups(ctx.dns, domain, SPF_LOOKUP_LIMIT)
    if problem:
        return _warn(f"{domain}'s SPF record: {problem}", "correct it at your registrar (or remove it: SendGrid's "
                                                           "return path carries SPF for your mail)")
    if lookups > SPF_LOOKUP_LIMIT:
        return _warn(f"{domain}'s SPF record needs {lookups} DNS lookups; receivers stop at {SPF_LOOKUP_LIMIT}",
                     "remove the include: entries of services you no longer use, or ask your DNS host to flatten "
                     "the record")
    return _ok(f"one SPF record at {domain}, {lookups} DNS lookup(s) of {SPF_LOOKUP_LIMIT}")


def _check_reply_mx(ctx: _Context) -> tuple[Status, str, str]:
    address = ctx.config.reply_to
    domain = domain_of(address)
    exchanges = ctx.dns.lookup(domain, "MX")
    fix = ("at your registrar, add the MX records your mail provider gives you, or set reply_to in newsletter.yaml "
           "to an address that receives mail")
    if not exchanges:
        return _fail(f"{domain} has no MX record: replies to {address} cannot be delivered", fix)
    if all(e in ("", ".") for e in exchanges):
        return _fail(f"{domain} refuses all mail (null MX): replies to {address} bounce", fix)
    return _ok(f"{domain} receives mail (MX {sorted(e for e in exchanges if e not in ('', '.'))[0]})")


# -- the public face: base_url over HTTPS ------------------------------------------------------------------------
class _PinnedHTTPS(http.client.HTTPSConnection):
    """HTTPS to `host`, connected to an address found by our own resolver (so NEWSLETTER_NAMESERVER holds)."""

    def __init__(self, host: str, port: int, address: str, tls: ssl.SSLContext) -> None:
        super().__init__(host, port, timeout=HTTP_TIMEOUT, context=tls)
        self._address, self._tls = address, tls

    def connect(self) -> None:
        """TCP to the address, TLS for the host name (certificate and SNI)."""
        raw = socket.create_connection((self._address, self.port), self.timeout)
        self.sock = self._tls.wrap_socket(raw, server_hostname=self.host)


def _check_base_url(ctx: _Context) -> tuple[Status, str, str]:
    base = ctx.config.base_url
    url = urlsplit(base)
    health = f"{base}/healthz"
    if url.scheme != "https" or not url.hostname:
        return _fail(f"base_url is {base}: readers' unsubscribe links must start with https://",
                     "serve it behind Caddy (README: Running serve in production) and set base_url: https://... "
                     "in newsletter.yaml")
    host = url.hostname
    try:
        port = url.port or 443
    except ValueError:
        return _fail(f"base_url {base} has a port that is not a number from 1 to 65535",
                     "correct base_url in newsletter.yaml")
    addresses = [host] if _is_ip(host) else ctx.dns.lookup(host, "A") + ctx.dns.lookup(host, "AAAA")
    if not addresses:
        return _fail(f"{host} has no address (no A or AAAA record)",
                     f"at your registrar, add an A record for {host} with your server's IP address")
    try:
        status = _get_status(host, port, addresses[0], f"{url.path.rstrip('/')}/healthz")
    except ssl.SSLCertVerificationError as exc:
        return _fail(f"{health}: the HTTPS certificate is not valid ({exc.verify_message})",
                     f"let Caddy fetch one: {host} must point at the server and ports 80 and 443 be open")
    except (OSError, http.client.HTTPException) as exc:
        if isinstance(exc, OSError) and exc.errno in (101, 113):  # ENETUNREACH, EHOSTUNREACH: no route out
            raise NoNetwork(str(exc)) from None
        return _fail(f"nothing answers at {health} ({type(exc).__name__}: {exc})",
                     "start `newsletter serve` behind Caddy on the server (README: Running serve in production)")
    if status != 200:
        return _fail(f"{health} answered {status}", "check `systemctl status newsletter` and Caddy's log on the "
                                                    "server: `newsletter serve` must be running behind it")
    return _ok(f"{health} answers over HTTPS")


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _get_status(host: str, port: int, address: str, path: str) -> int:
    """GET path over HTTPS, certificate verified against the system's authorities (SSL_CERT_FILE honoured)."""
    conn = _PinnedHTTPS(host, port, address, ssl.create_default_context())
    try:
        conn.request("GET", path, headers={"User-Agent": "newsletter-doctor"})
        return conn.getresponse().status
    finally:
        conn.close()


# -- SendGrid's account: the Event Webhook, its signature, the key's permissions -------------------------------
def _webhook_url(config: Config) -> str:
    return f"{config.base_url}{WEBHOOK_PATH}"


def _same_url(a: str, b: str) -> bool:
    x, y = urlsplit(a.strip()), urlsplit(b.strip())
    return (x.scheme.lower(), (x.netloc or "").lower(), x.path.rstrip("/"), x.query) == \
        (y.scheme.lower(), (y.netloc or "").lower(), y.path.rstrip("/"), y.query)


def _our_webhook(ctx: _Context) -> dict[str, Any] | None:
    hooks = ctx.ask("webhooks", lambda t: t.event_webhooks())
    return next((h for h in hooks if _same_url(str(h["url"]), _webhook_url(ctx.config))), None)


def _check_webhook(ctx: _Context) -> tuple[Status, str, str]:
    expected = _webhook_url(ctx.config)
    hooks = ctx.ask("webhooks", lambda t: t.event_webhooks())
    hook = _our_webhook(ctx)
    events = ", ".join({**EVENTS_FOR_THE_LEDGER, **EVENTS_FOR_STATS}.values())
    if hook is None:
        found = f"it posts to {', '.join(str(h['url']) for h in hooks)}" if hooks else "there is none"
        return _fail(f"no Event Webhook posts to {expected} ({found}): bounces and unsubscribes at SendGrid never "
                     "reach the ledger", f"in {EVENT_WEBHOOK}, set the URL to {expected} and tick {events}")
    if hook.get("enabled") is not True:
        return _fail(f"the Event Webhook to {expected} is off", f"turn it on in {EVENT_WEBHOOK}")
    missing = [label for key, label in EVENTS_FOR_THE_LEDGER.items() if hook.get(key) is not True]
    if missing:
        return _fail(f"the Event Webhook does not send {', '.join(missing)}: those opt-outs never reach the ledger",
                     f"tick {', '.join(missing)} in {EVENT_WEBHOOK}")
    unseen = [label for key, label in EVENTS_FOR_STATS.items() if hook.get(key) is not True]
    if unseen:
        return _warn(f"the Event Webhook does not send {', '.join(unseen)}: `newsletter stats` cannot count them",
                     f"tick {', '.join(unseen)} in {EVENT_WEBHOOK}")
    return _ok(f"on, posting to {expected} with every event README lists")


def _key_bytes(text: str) -> bytes:
    """A public key as base64 DER (PEM armour and line breaks allowed), for comparison."""
    body = "".join(line for line in text.strip().splitlines() if not line.startswith("-----"))
    try:
        return base64.b64decode("".join(body.split()), validate=True)
    except (binascii.Error, ValueError):
        return text.strip().encode()


def _check_webhook_signed(ctx: _Context) -> tuple[Status, str, str]:
    hook = _our_webhook(ctx)
    if hook is None:
        raise _NotChecked(f"not checked: no Event Webhook posts to {_webhook_url(ctx.config)} (see webhook)")
    hook_id = str(hook.get("id") or "")
    key = ctx.ask(f"signed:{hook_id}", lambda t: t.webhook_public_key(hook_id))
    mine = env_value(WEBHOOK_PUBLIC_KEY_ENV).strip()
    copy = f"copy the verification key from {EVENT_WEBHOOK} into {WEBHOOK_PUBLIC_KEY_ENV} (in .env on the server)"
    if not key:
        return _fail("the Event Webhook is not signed: `serve` accepts only signed events, so none arrive",
                     f"turn on Signed Event Webhook in {EVENT_WEBHOOK}, then {copy}")
    if not mine:
        return _fail(f"{WEBHOOK_PUBLIC_KEY_ENV} is not set: `serve` refuses every event", copy)
    if _key_bytes(mine) != _key_bytes(key):
        return _fail(f"{WEBHOOK_PUBLIC_KEY_ENV} is not the key SendGrid signs with: `serve` refuses every event",
                     f"{copy}, then restart serve")
    return _ok(f"signed, and {WEBHOOK_PUBLIC_KEY_ENV} is SendGrid's key")


def _key_needs(config: Config) -> list[tuple[str, tuple[str, ...]]]:
    """What the key must be allowed (SendGrid's scope names), by the name of the permission in SendGrid's page."""
    pushed = "asm.groups.suppressions" if config.sendgrid.asm_group_id else "asm.suppressions.global"
    return [("Mail Send", ("mail.send",)),
            ("Suppressions (read)", ("suppression.read",)),  # `sync` pulls SendGrid's lists
            ("Suppressions (write)", (f"{pushed}.create", f"{pushed}.delete")),  # opt-outs pushed, lifted
            ("Mail Batch", ("mail.batch.create",)),  # `send --at` gets a batch id ...
            ("Scheduled Sends", ("user.scheduled_sends.create",))]  # ... that `unschedule` cancels


def _check_api_key(ctx: _Context) -> tuple[Status, str, str]:
    create = (f"create a key in {API_KEYS} with Mail Send, Suppressions, Mail Batch and Scheduled Sends, and put it "
              f"in .env as {API_KEY_ENV}=...")
    if ctx.transport is None:
        return _fail(ctx.no_key, create)
    try:
        scopes = set(ctx.ask("scopes", lambda t: t.scopes()))
    except _NotChecked as exc:
        if exc.status == 401:
            return _fail("SendGrid refused the API key (401): it is mistyped, deleted or revoked", create)
        if exc.status in (404, 405):
            raise _NotChecked("not checked: this API has no GET /v3/scopes") from None
        raise
    missing = [label for label, needed in _key_needs(ctx.config) if not scopes.issuperset(needed)]
    if missing:
        return _fail(f"the API key lacks {', '.join(missing)}",
                     f"in {API_KEYS}, edit the key and give it {', '.join(missing)}")
    return _ok("the API key may send, read and write suppressions, and schedule and cancel sends")


# -- this machine: the secret, git, backups ----------------------------------------------------------------------
def _check_secret(ctx: _Context) -> tuple[Status, str, str]:
    secret = env_value(SECRET_ENV)
    if not secret:
        return _fail(f"{SECRET_ENV} is not set: unsubscribe links cannot be signed",
                     f"add {SECRET_ENV}=<the output of {NEW_SECRET}> to .env, and keep it")
    if len(secret) < SECRET_MIN_CHARS:
        return _fail(f"{SECRET_ENV} has {len(secret)} characters; it needs at least {SECRET_MIN_CHARS}",
                     f"make a new one with {NEW_SECRET} and put it in .env (links in mail already sent with the "
                     "old one stop working)")
    env_file = env_file_path(ctx.root)
    mode = env_file.stat().st_mode & 0o777 if env_file.is_file() else 0
    if mode & 0o077:
        return _warn(f".env (the key and the secret) is readable by other users of this machine (mode {mode:o})",
                     "chmod 600 .env")
    return _ok(f"{SECRET_ENV} is set ({len(secret)} characters)")


PRIVATE = ("subscribers", ".env")  # readers' data, and the secrets


def _git(root: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", *args], cwd=root, input=stdin, capture_output=True, text=True, check=False)


def _private_paths(root: Path) -> Iterator[str]:
    """Files that must stay out of git: what is in subscribers/ (a README aside), the list, the ledger, .env."""
    seen = {"subscribers/subscribers.csv", "subscribers/unsubscribes.csv", ".env"}
    folder = root / "subscribers"
    if folder.is_dir():
        seen |= {p.relative_to(root).as_posix() for p in folder.rglob("*")
                 if p.is_file() and not p.name.lower().startswith("readme")}
    yield from sorted(seen)


def _check_list_private(ctx: _Context) -> tuple[Status, str, str]:
    later = "if you keep this folder in git later, let .gitignore list subscribers/ and .env first"
    if shutil.which("git") is None:
        return _warn("git is not installed: nothing to check", later)
    if _git(ctx.root, "rev-parse", "--show-toplevel").returncode != 0:
        return _warn("this folder is not in a git repository: nothing to check", later)
    listed = _git(ctx.root, "ls-files", "-z", "--", *PRIVATE).stdout.split("\0")
    tracked = [p for p in listed if p and not Path(p).name.lower().startswith("readme")]
    if tracked:
        shown = ", ".join(tracked[:3]) + (f" and {len(tracked) - 3} more" if len(tracked) > 3 else "")
        return _fail(f"git tracks readers' data or secrets: {shown}",
                     "git rm -r --cached subscribers .env && git commit -m 'Stop tracking readers' (the files stay "
                     "on disk); if they were pushed, they remain in the remote's history: ask for help removing them")
    paths = list(_private_paths(ctx.root))
    ignored = set(_git(ctx.root, "check-ignore", "--stdin", "-z", stdin="\0".join(paths) + "\0").stdout.split("\0"))
    exposed = [p for p in paths if p not in ignored]
    if exposed:
        return _fail(f".gitignore does not cover {', '.join(exposed[:3])}: one `git add -A` would publish them",
                     "add the lines `subscribers/` and `.env` to .gitignore")
    return _ok("git ignores subscribers/ and .env, and tracks none of their files")


def _check_backup(ctx: _Context) -> tuple[Status, str, str]:
    folder = ctx.root / "backups"
    found = sorted(folder.glob("*.tar.gz"), key=lambda p: p.stat().st_mtime) if folder.is_dir() else []
    fix = ("run `newsletter backup` now and every day (README says how), and copy backups/ off the server")
    if not found:
        return _warn("no backup in backups/: losing this machine would lose your readers", fix)
    newest = found[-1]
    days = (time.time() - newest.stat().st_mtime) / 86400
    if days > BACKUP_MAX_AGE_DAYS:
        return _warn(f"the newest backup, backups/{newest.name}, is {days:.0f} days old", fix)
    return _ok(f"the newest backup, backups/{newest.name}, is {_age(days)} old")


def _age(days: float) -> str:
    hours = days * 24
    return f"{hours:.0f} hour(s)" if hours < 48 else f"{days:.0f} days"


CHECKS: dict[str, Callable[[_Context], tuple[Status, str, str]]] = {
    "sender-domain": _check_sender_domain, "dkim": _check_dkim, "return-path": _check_return_path,
    "dmarc": _check_dmarc, "spf": _check_spf, "reply-mx": _check_reply_mx, "base-url": _check_base_url,
    "webhook": _check_webhook, "webhook-signed": _check_webhook_signed, "api-key": _check_api_key,
    "secret": _check_secret, "list-private": _check_list_private, "backup": _check_backup,
}
