"""A complete RFC 5322 message of an issue, as one reader receives it (standard library `email`)."""

from __future__ import annotations

import email.policy
import email.utils
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


def build_eml(config: Config, rendered: RenderedEmail, *, secret: str, address: str, name: str = "",
              subject: str | None = None) -> bytes:
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
    msg["Date"] = email.utils.formatdate(localtime=True)
    msg["Message-ID"] = email.utils.make_msgid(domain=config.sender.email.rpartition("@")[2] or None)
    unsubscribe = f"<{url}>"
    if config.sendgrid.unsubscribe_mailto:
        unsubscribe += f", <mailto:{config.sendgrid.unsubscribe_mailto}?subject=unsubscribe>"
    msg["List-Unsubscribe"] = unsubscribe
    msg["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    msg.set_content(text, subtype="plain", charset="utf-8", cte="quoted-printable")
    msg.add_alternative(html, subtype="html", charset="utf-8", cte="quoted-printable")
    # Headers are written unfolded up to RFC 5322's 998 characters: folding a long List-Unsubscribe URL
    # would turn it into an encoded-word that mail clients do not parse.
    return msg.as_bytes(policy=email.policy.SMTP.clone(max_line_length=998))
