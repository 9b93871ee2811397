"""SendGrid request bodies: the shared part built (and encoded) once, one small personalization per reader."""

from __future__ import annotations

import datetime as dt
import re
from typing import TYPE_CHECKING, Any

import orjson

from .recipients import first_name_of
from .render import (
    FIRST_HTML_TAG,
    FIRST_TEXT_TAG,
    NAME_HTML_TAG,
    NAME_TEXT_TAG,
    TOKEN_TAG,
    reader_substitutions,
)
from .tokens import make_token, unsubscribe_url

if TYPE_CHECKING:
    from .config import Config
    from .render import RenderedEmail

MAX_PER_REQUEST = 1000  # SendGrid: at most 1000 personalizations (and recipients) per request
ONE_CLICK = "List-Unsubscribe=One-Click"
_CACHE_SIZE = 50_000  # distinct first names (or names) whose substitutions are kept encoded
_JSON_SPECIAL = re.compile(r'["\\\x00-\x1f]').search  # what a JSON string cannot hold as it is


def _to_name(name: str) -> str:
    # SendGrid refuses `,` and `;` in to.name; the greeting keeps the name as written.
    if "," in name or ";" in name or '"' in name:
        name = name.replace(",", " ").replace(";", " ").replace('"', "")
    return " ".join(name.split())


def sender_fields(config: Config) -> dict[str, Any]:
    """`from` and, when there is one, `reply_to`: who every message of this publication comes from."""
    fields: dict[str, Any] = {"from": {"email": config.sender.email, "name": config.sender.name}
                              if config.sender.name else {"email": config.sender.email}}
    if config.reply_to:
        fields["reply_to"] = {"email": config.reply_to}
    return fields


def one_off_body(config: Config, *, recipients: list[tuple[str, dict[str, str]]], subject: str, html: str, text: str,
                 kind: str, bypass_unsubscribes: bool = False) -> dict[str, Any]:
    """A message that is not an issue (the sign-up's confirmation) to each of `recipients`, (address, its
    substitutions) each, one personalization apiece: the publication's sender, no tracking (SendGrid's click
    tracking would rewrite the link the reader must press), `kind` in custom_args. `bypass_unsubscribes` lets it
    reach an address on SendGrid's global unsubscribes: a reader who left and asks to come back must get the
    email that lets them."""
    body: dict[str, Any] = {
        "personalizations": [{"to": [{"email": email}], **({"substitutions": subs} if subs else {})}
                             for email, subs in recipients],
        **sender_fields(config),
        "subject": subject,
        "content": [{"type": "text/plain", "value": text}, {"type": "text/html", "value": html}],
        "custom_args": {"newsletter_kind": kind},
        "tracking_settings": {"click_tracking": {"enable": False, "enable_text": False},
                              "open_tracking": {"enable": False}, "subscription_tracking": {"enable": False}},
    }
    settings: dict[str, Any] = {}
    if bypass_unsubscribes:
        settings["bypass_unsubscribe_management"] = {"enable": True}
    if config.sendgrid.sandbox:
        settings["sandbox_mode"] = {"enable": True}
    if settings:
        body["mail_settings"] = settings
    return body


def _json_text(value: str) -> str:
    """`value` as the inside of a JSON string (UTF-8 output: only quotes, backslashes and controls escaped)."""
    return orjson.dumps(value).decode()[1:-1] if _JSON_SPECIAL(value) else value


class MessageBuilder:
    """Builds request bodies: the shared part once, then a small personalization per reader."""

    def __init__(self, config: Config, rendered: RenderedEmail, *, secret: str, slug: str, subject: str,
                 sandbox: bool = False, send_at: dt.datetime | None = None, batch_id: str = "") -> None:
        cfg = config
        s = cfg.sendgrid
        self.secret = secret
        self.base_url = cfg.base_url
        self.greeting, self.fallback = rendered.issue.greeting, rendered.issue.greeting_fallback
        self.tags = rendered.tags  # only the substitutions the parts use travel with each reader
        self.mailto = s.unsubscribe_mailto
        body: dict[str, Any] = {
            **sender_fields(cfg),
            "subject": subject,
            "content": [  # text/plain first, then text/html: SendGrid requires this order
                {"type": "text/plain", "value": rendered.text},
                {"type": "text/html", "value": rendered.html},
            ],
            "custom_args": {"newsletter_issue": slug},
            "tracking_settings": {
                "click_tracking": {"enable": s.click_tracking, "enable_text": False},
                "open_tracking": {"enable": s.open_tracking},
                # Our own List-Unsubscribe headers and links; SendGrid's would point elsewhere.
                "subscription_tracking": {"enable": False},
            },
        }
        if s.categories:
            body["categories"] = list(s.categories)
        if s.asm_group_id:
            body["asm"] = {"group_id": s.asm_group_id}
            if s.asm_groups_to_display:
                body["asm"]["groups_to_display"] = list(s.asm_groups_to_display)
        if sandbox or s.sandbox:
            body["mail_settings"] = {"sandbox_mode": {"enable": True}}
        if send_at is not None:
            body["send_at"] = int(send_at.timestamp())
        if batch_id:  # what `newsletter unschedule` cancels
            body["batch_id"] = batch_id
        self.shared = body
        self._prepare_encoding()

    def _prepare_encoding(self) -> None:
        """What `encoded` joins per reader: the shared part as JSON once, and the fixed pieces around each
        reader's values."""
        self._head = orjson.dumps(self.shared)[:-1] + b',"personalizations":['
        mailto = f", <mailto:{self.mailto}?subject=unsubscribe>" if self.mailto else ""
        self._unsubscribe = _json_text(unsubscribe_url(self.base_url, ""))
        self._after_url = _json_text(f">{mailto}") + f'","List-Unsubscribe-Post":"{ONE_CLICK}"}}}}'
        self._with_token = TOKEN_TAG in self.tags
        self._name_tags = self.tags - {TOKEN_TAG}
        # With the usual greeting ("Dear {first_name},") a reader's substitutions depend on their first name
        # alone, and first names repeat across a list: those are encoded once per first name.
        self._by_first = not (self._name_tags & {NAME_HTML_TAG, NAME_TEXT_TAG}) and "{name}" not in self.greeting
        self._needs_first = bool(self._name_tags & {FIRST_HTML_TAG, FIRST_TEXT_TAG}) or "{first_name}" in \
            self.greeting
        self._cache: dict[Any, str] = {}

    def personalization(self, email: str, name: str, first_name: str = "") -> dict[str, Any]:
        """One reader: their address, name, signed unsubscribe link and List-Unsubscribe headers."""
        token = make_token(self.secret, email)
        url = unsubscribe_url(self.base_url, token)
        header = f"<{url}>" if not self.mailto else f"<{url}>, <mailto:{self.mailto}?subject=unsubscribe>"
        to: dict[str, str] = {"email": email}
        to_name = _to_name(name)
        if to_name:
            to["name"] = to_name
        return {
            "to": [to],
            "substitutions": reader_substitutions(name, token, first_name, greeting=self.greeting,
                                                  fallback=self.fallback, used=self.tags),
            "headers": {"List-Unsubscribe": header, "List-Unsubscribe-Post": ONE_CLICK},
        }

    def body(self, readers: list[tuple[str, str, str]]) -> dict[str, Any]:
        """The request for these readers, (address, name, first name) each: one personalization each."""
        return {**self.shared, "personalizations": [self.personalization(*r) for r in readers]}

    def encoded(self, readers: list[tuple[str, str, str]]) -> bytes:
        """`body(readers)` encoded as JSON, built for a million readers: the shared part is encoded once, and each
        reader adds only their own fragment (json.loads of it equals `body(readers)`)."""
        secret, unsubscribe, after_url, with_token = self.secret, self._unsubscribe, self._after_url, \
            self._with_token
        names = self._names
        parts = []
        for email, name, first in readers:
            token = make_token(secret, email)
            subs = names(name, first)
            if with_token:
                subs = f'"{TOKEN_TAG}":"{token}",{subs}' if subs else f'"{TOKEN_TAG}":"{token}"'
            to_name = _to_name(name) if name else ""
            to = f'"{_json_text(email)}","name":"{_json_text(to_name)}"' if to_name else f'"{_json_text(email)}"'
            parts.append(f'{{"to":[{{"email":{to}}}],"substitutions":{{{subs}}},"headers":{{"List-Unsubscribe":'
                         f'"<{unsubscribe}{token}{after_url}')
        return self._head + ",".join(parts).encode() + b"]}"

    def _names(self, name: str, first_name: str) -> str:
        """The reader's substitutions other than the token, as JSON object members (cached, see above)."""
        if self._by_first:
            if first_name:
                first = " ".join(first_name.split())
            elif self._needs_first:
                first = first_name_of(" ".join(name.split()) if name else "")
            else:
                first = ""
            # Without a first name the fallback may show the whole name: then the name is the key.
            key: Any = first if (first or not self._needs_first) else (name, first_name)
        else:
            key = (name, first_name)
        found = self._cache.get(key)
        if found is None:
            values = reader_substitutions(name, "", first_name, greeting=self.greeting, fallback=self.fallback,
                                          used=self._name_tags)
            found = orjson.dumps(values).decode()[1:-1]
            if len(self._cache) >= _CACHE_SIZE:
                self._cache.clear()
            self._cache[key] = found
        return found
