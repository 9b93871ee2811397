"""The one rule for what an email address is: how it is normalised (compared) and when it is plausible.

Every stage uses these three functions, so the ledger, the list, the webhook, the command line and the
tokens agree on which strings name the same reader.
"""

from __future__ import annotations

import re

# Cheap enough for a million readers (email-validator costs ~20 µs each): one local part, one domain with a
# dot, no whitespace, separators, quotes or control characters. Full validation (`validate`) is for input.
_PLAUSIBLE = re.compile(r'^[^@\s<>(),;:"\[\]\\\x00-\x1f\x7f\ufffd]+@(?:[^@\s<>(),;:"\[\]\\\x00-\x1f\x7f\ufffd.]+\.)+'
                        r'[^@\s<>(),;:"\[\]\\\x00-\x1f\x7f\ufffd.]{2,}$')
MAX_LENGTH = 320


def normalize(address: str) -> str:
    """The comparison key: addresses compare case-insensitively after trimming."""
    return address.strip().lower()


def is_plausible(address: object) -> bool:
    """Whether a (normalised) value can be an address we may store or send to: a string, one `@`, a dotted
    domain, no whitespace, line break, separator or undecodable byte."""
    return isinstance(address, str) and len(address) <= MAX_LENGTH and bool(_PLAUSIBLE.match(address))


def bare(raw: str) -> str:
    """`Ada <ada@x.net>` and `mailto:ada@x.net` (as some exports write them) -> `ada@x.net`."""
    raw = raw.strip()
    if raw.lower().startswith("mailto:"):
        raw = raw[7:].split("?", 1)[0]
    if raw.endswith(">") and "<" in raw:
        raw = raw[raw.rindex("<") + 1:-1]
    return raw.strip()


def validate(raw: str) -> str:
    """The address as typed or imported, checked fully (syntax only, no DNS); raises ValueError with the reason."""
    from email_validator import EmailNotValidError, validate_email

    if any(c in raw for c in "\r\n\x00"):
        raise ValueError("it contains a line break or a control character")
    try:
        return str(validate_email(bare(raw), check_deliverability=False).normalized)
    except EmailNotValidError as exc:
        raise ValueError(str(exc)) from None
