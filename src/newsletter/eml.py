"""A complete RFC 5322 message of an issue, as one reader receives it (standard library `email`)."""

from __future__ import annotations

import datetime as dt
import email.policy
import email.utils
import hashlib
from email.headerregistry import Address as HeaderAddress
from email.message import EmailMessage

from .config import Config
from .render import SAMPLE_READER, RenderedEmail, personalize
from .tokens import make_token, secret_from_env, unsubscribe_url


def _address(name: str, addr: str) -> HeaderAddress:
    local, _, domain = addr.partition("@")
    return HeaderAddress(display_name=name, username=local, domain=domain)


def build_sample_eml(config: Config, rendered: RenderedEmail) -> bytes:
    """The message as the sample reader receives it (render --eml, the spam score)."""
    secret, _ = secret_from_env(required=False)
    return build_eml(config, rendered, secret=secret, address=SAMPLE_READER["email"], name=SAMPLE_READER["name"])


def build_scoring_eml(config: Config, rendered: RenderedEmail) -> bytes:
    """The sample reader's message with nothing that changes between runs (the date is the issue's, the
    Message-ID is derived from the content, the link is signed with the development key): the same issue
    gives the same bytes, so its spam score can be cached."""
    from .tokens import DEVELOPMENT_SECRET

    when = dt.datetime.combine(rendered.issue.date, dt.time(7, 0), tzinfo=dt.UTC)
    return build_eml(config, rendered, secret=DEVELOPMENT_SECRET, address=SAMPLE_READER["email"],
                     name=SAMPLE_READER["name"], date=when, stable_id=True)


def build_eml(config: Config, rendered: RenderedEmail, *, secret: str, address: str, name: str = "",
              subject: str | None = None, date: dt.datetime | None = None, stable_id: bool = False) -> bytes:
    """multipart/alternative (text, then HTML), UTF-8, with the headers a real send carries."""
    token = make_token(secret, address)
    _, html, text = personalize(rendered, name=name, token=token)
    url = unsubscribe_url(config.base_url, token)
    msg = EmailMessage(policy=email.policy.SMTP)  # bodies encoded in 76-character quoted-printable lines
    msg["From"] = _address(config.sender.name, config.sender.email)
    msg["To"] = _address(name, address)
    if config.reply_to:
        msg["Reply-To"] = _address("", config.reply_to)
    msg["Subject"] = subject or rendered.subject
    msg["Date"] = email.utils.format_datetime(date) if date else email.utils.formatdate(localtime=True)
    domain = config.sender.email.rpartition("@")[2] or "localhost"
    if stable_id:
        digest = hashlib.sha256((html + text + str(msg["Subject"])).encode()).hexdigest()[:24]
        msg["Message-ID"] = f"<{digest}.{rendered.issue.slug}@{domain}>"
    else:
        msg["Message-ID"] = email.utils.make_msgid(domain=domain)
    unsubscribe = f"<{url}>"
    if config.sendgrid.unsubscribe_mailto:
        unsubscribe += f", <mailto:{config.sendgrid.unsubscribe_mailto}?subject=unsubscribe>"
    msg["List-Unsubscribe"] = unsubscribe
    msg["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    msg.set_content(text, subtype="plain", charset="utf-8", cte="quoted-printable")
    msg.add_alternative(html, subtype="html", charset="utf-8", cte="quoted-printable")
    if stable_id:  # the MIME boundary too is random otherwise
        msg.set_boundary(f"=_nl_{hashlib.sha256((html + text).encode()).hexdigest()[:32]}")
    # Headers are written unfolded up to RFC 5322's 998 characters: folding a long List-Unsubscribe URL
    # would turn it into an encoded-word that mail clients do not parse.
    return msg.as_bytes(policy=email.policy.SMTP.clone(max_line_length=998))
