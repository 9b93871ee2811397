"""Signed unsubscribe tokens: HMAC-SHA256 over the address, keyed by NEWSLETTER_SECRET, URL-safe, versioned."""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from .config import SECRET_ENV, env_value
from .errors import SendError
from .recipients import is_plausible, normalize

# Used only for previews when no secret is set; `send` refuses to run with it.
DEVELOPMENT_SECRET = "newsletter-development-key-NOT-for-sending"
VERSION = "u1"
_MAC_BYTES = 16  # 128 bits of HMAC-SHA256: unforgeable, and keeps each link short


_URLSAFE = bytes.maketrans(b"+/", b"-_")


def _b64(data: bytes) -> str:
    # binascii and bytes.translate are C: a million tokens a send make this a hot path.
    return binascii.b2a_base64(data, newline=False).translate(_URLSAFE).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@functools.lru_cache(maxsize=4)
def _keyed(secret: str) -> tuple[Any, Any]:
    """HMAC-SHA256's inner and outer hashes with the key (and the message prefix) already absorbed (RFC 2104):
    each token then costs two C-level copies instead of a key schedule."""
    key = secret.encode("utf-8")
    if len(key) > 64:
        key = hashlib.sha256(key).digest()
    key = key.ljust(64, b"\0")
    inner = hashlib.sha256(bytes(b ^ 0x36 for b in key))
    inner.update(f"unsubscribe:{VERSION}:".encode())
    return inner, hashlib.sha256(bytes(b ^ 0x5C for b in key))


def _mac(secret: str, email: str) -> bytes:
    inner, outer = _keyed(secret)
    i = inner.copy()
    i.update(email.encode("utf-8"))
    o = outer.copy()
    o.update(i.digest())
    return o.digest()[:_MAC_BYTES]


def make_token(secret: str, email: str) -> str:
    """The token for `email`: `u1.<address>.<mac>`, both parts base64url without padding."""
    email = normalize(email)
    return f"{VERSION}.{_b64(email.encode('utf-8'))}.{_b64(_mac(secret, email))}"


def verify_token(secret: str, token: str) -> str | None:
    """The address a token was made for, or None when it is malformed, tampered or signed with another key."""
    try:
        version, payload, mac = token.split(".")
        if version != VERSION:
            return None
        email = _unb64(payload).decode("utf-8")
        given = _unb64(mac)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        return None
    # Only the canonical spelling: base64's spare low bits would otherwise let several tokens stand for one.
    if _b64(email.encode("utf-8")) != payload or _b64(given) != mac:
        return None
    if email != normalize(email) or not is_plausible(email):
        return None
    return email if hmac.compare_digest(given, _mac(secret, email)) else None


def secret_from_env(*, required: bool) -> tuple[str, bool]:
    """(secret, is_development_key); raises SendError when `required` and the variable is unset."""
    secret = env_value(SECRET_ENV)
    if secret:
        return secret, False
    if required:
        raise SendError(
            f"{SECRET_ENV} is not set: it signs every reader's unsubscribe link",
            hint=f"export {SECRET_ENV}=$(python3 -c 'import secrets; print(secrets.token_urlsafe(32))') "
            "and keep it: changing it breaks the links in mail already sent",
        )
    return DEVELOPMENT_SECRET, True


def unsubscribe_url(base_url: str, token: str) -> str:
    """<base_url>/unsubscribe/<token>."""
    return f"{base_url.rstrip('/')}/unsubscribe/{token}"


CONFIRM_VERSION = "c1"
CONFIRM_DAYS = 7


def _confirm_mac(secret: str, payload: str) -> bytes:
    return hmac.new(secret.encode("utf-8"), f"confirm:{payload}".encode(), hashlib.sha256).digest()[:_MAC_BYTES]


def make_confirm_token(secret: str, email: str, signed_up: int) -> str:
    """The link that confirms a sign-up: `c1.<address>.<unix time of the sign-up>.<mac>`."""
    payload = f"{_b64(normalize(email).encode('utf-8'))}.{signed_up}"
    return f"{CONFIRM_VERSION}.{payload}.{_b64(_confirm_mac(secret, payload))}"


class LinkState(StrEnum):
    """What a confirmation link is worth."""

    VALID = "valid"
    INVALID = "invalid"  # malformed, tampered or signed with another key
    EXPIRED = "expired"  # older than CONFIRM_DAYS (or dated in the future)


@dataclass(frozen=True)
class ConfirmLink:
    """A confirmation link read: its state, and for a valid one the address and the sign-up's unix time."""

    state: LinkState
    email: str = ""
    signed_up: int = 0


def verify_confirm_token(secret: str, token: str, now: float) -> ConfirmLink:
    """The confirmation link `token`, checked: valid (with its address and sign-up time), invalid or expired."""
    try:
        version, address, signed_up, mac = token.split(".")
        email = _unb64(address).decode("utf-8")
        when = int(signed_up)
        given = _unb64(mac)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        return ConfirmLink(LinkState.INVALID)
    if version != CONFIRM_VERSION or _b64(given) != mac or not is_plausible(email):
        return ConfirmLink(LinkState.INVALID)
    if not hmac.compare_digest(given, _confirm_mac(secret, f"{address}.{signed_up}")):
        return ConfirmLink(LinkState.INVALID)
    if now - when > CONFIRM_DAYS * 86400 or when > now + 300:
        return ConfirmLink(LinkState.EXPIRED)
    return ConfirmLink(LinkState.VALID, email, when)


def keyed_hash(secret: str, value: str) -> str:
    """A keyed hash of a value that must not be stored as it is (a reader's IP address)."""
    return hmac.new(secret.encode("utf-8"), f"ip:{value}".encode(), hashlib.sha256).hexdigest()[:24]
