"""Who gets an issue: the one address rule, the streaming de-duplication of the list, and eligibility.

`Address` is the only rule for what an email address is: how it is normalised (compared) and when it is
plausible or valid. The ledger, the list, the imports, the webhook, the command line and the tokens all use
it, so they agree on which strings name the same reader. This module imports nothing else of the package:
every stage can depend on it.
"""

from __future__ import annotations

import re
import unicodedata
from array import array
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Protocol

# Cheap enough for a million readers (email-validator costs ~20 µs each): one local part, one domain with a
# dot, no whitespace, separators, quotes or control characters. Full validation (`validate`) is for input.
_PLAUSIBLE = re.compile(r'^[^@\s<>(),;:"\[\]\\\x00-\x1f\x7f\ufffd]+@(?:[^@\s<>(),;:"\[\]\\\x00-\x1f\x7f\ufffd.]+\.)+'
                        r'[^@\s<>(),;:"\[\]\\\x00-\x1f\x7f\ufffd.]{2,}$')
MAX_LENGTH = 320


def normalize(address: str) -> str:
    """The comparison key: addresses compare case-insensitively after trimming and Unicode NFC normalisation
    (`josé` typed with a combining accent is the same reader as with a precomposed one)."""
    key = address.strip().lower()
    # isascii() is a flag check: the great majority of addresses skip the normaliser on the hot path
    return key if key.isascii() else unicodedata.normalize("NFC", key)


_DOTLESS = {"gmail.com": "gmail.com", "googlemail.com": "gmail.com"}  # Gmail ignores dots; one mailbox, two names


def mailbox_key(address: str) -> str:
    """The mailbox an address reaches, for rate limits only, never for identity: `ada+news@x.net` and
    `ada@x.net` share one; at Gmail `a.da@googlemail.com` and `ada@gmail.com` do too."""
    key = normalize(address)
    local, at, domain = key.rpartition("@")
    if not at:
        return key
    local = local.split("+", 1)[0] or local
    if domain in _DOTLESS:
        local, domain = local.replace(".", "") or local, _DOTLESS[domain]
    return f"{local}@{domain}"


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


# Plain ASCII addresses, the great majority of any list, are checked here (as email-validator would accept
# them: a dot-atom local part, letter-digit-hyphen labels, a top-level domain of letters that is not reserved
# for special use); anything else goes to email-validator, which costs ~200 µs an address on an import.
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_PLAIN = re.compile(rf"({_ATOM}(?:\.{_ATOM})*)@((?:{_LABEL}\.)+[A-Za-z]{{2,63}})")
_SPECIAL_USE = frozenset({"arpa", "invalid", "local", "localhost", "onion", "test"})


def validate(raw: str) -> str:
    """The address as typed or imported, checked fully (syntax only, no DNS); raises ValueError with the reason."""
    from email_validator import EmailNotValidError, validate_email

    if any(c in raw for c in "\r\n\x00"):
        raise ValueError("it contains a line break or a control character")
    address = bare(raw)
    plain = _PLAIN.fullmatch(address)
    if plain and len(plain.group(1)) <= 64 and len(address) <= 254 and \
            plain.group(2).rsplit(".", 1)[1].lower() not in _SPECIAL_USE:
        return f"{plain.group(1)}@{plain.group(2).lower()}"  # as email-validator normalises it
    try:
        return str(validate_email(address, check_deliverability=False).normalized)
    except EmailNotValidError as exc:
        raise ValueError(str(exc)) from None


# Titles and honorifics a greeting leaves out ("Dear Dr. Jane Doe, PhD," -> "Dear Jane,").
_TITLES = frozenset({"dr", "mr", "mrs", "ms", "mx", "miss", "prof", "professor", "rev", "sir", "dame", "fr"})
_NICKNAME = re.compile(r"""(?:^|\s)(?:"[^"]*"|“[^”]*”|'[^']*'|\([^)]*\))(?=[\s,]|$)""")


_SPECIAL = re.compile(r"[\"“'(,.]")


def first_name_of(name: str) -> str:
    """The first name in a full name: the first word that is not a title, leaving out quoted nicknames
    ("Mary-Kate \"MK\" Olsen, Jr." -> "Mary-Kate"); "" when there is none."""
    if not name:
        return ""
    if not _SPECIAL.search(name):  # the common case, "Jane Doe": no nickname, title dot or comma
        for word in name.split():
            if word.lower() not in _TITLES:
                return word
        return ""
    for word in _NICKNAME.sub(" ", name).replace(",", " ").split():
        bare_word = word.strip(".")
        if bare_word and bare_word.lower() not in _TITLES:
            return bare_word
    return ""


class Address:
    """The address rule, as one name: `Address.normalize`, `.plausible`, `.validate`, `.bare`."""

    normalize = staticmethod(normalize)
    plausible = staticmethod(is_plausible)
    validate = staticmethod(validate)
    bare = staticmethod(bare)


# -- the list, once per reader ---------------------------------------------------------------------------
@dataclass
class Eligibility:
    """Why each reader of the list is, or is not, sent this issue now."""

    readers: int = 0  # eligible: to be sent
    suppressed: int = 0
    already_sent: int = 0
    in_doubt: int = 0
    invalid: int = 0
    duplicates: int = 0
    total: int = 0  # distinct addresses on the list

    def __post_init__(self) -> None:
        self.invalid_examples: list[str] = []


class _Suppressions(Protocol):
    def is_suppressed_key(self, key: str) -> bool: ...


class _Sent(Protocol):
    def is_sent_key(self, key: str) -> bool: ...

    def in_doubt_key(self, key: str) -> bool: ...


Row = tuple[str, str, str]  # (address as written, name, first name) of one line of the list
Reader = tuple[str, str, str]  # (normalised address, name, first name) of a reader to mail


def unique(rows: Iterable[Row], tally: Eligibility | None = None, *,
           reread: Callable[[], Iterable[Row]] | None = None, expected: int = 0,
           key_hash: Callable[[str], int] = hash) -> Iterator[tuple[str, str, str, str]]:
    """(key, email, name, first name) of each reader once, streamed: `key` is the normalised address; a later
    row with the same key is skipped and counted. Memory: 16 to 32 bytes a reader (see `Distinct`; `expected`
    readers sizes its table at once).

    Two distinct addresses that share a 64-bit hash are told apart by reading the rows again (`reread`, or the
    rows themselves when they are a list or tuple): the second is then yielded at the end. A one-shot iterator
    without `reread` cannot be read again, and such a pair (odds about n^2 / 2^65: 3e-8 for a million readers)
    would count as one: only counting and listing use it so; a send goes through `eligible`, which is exact."""
    add, norm = Distinct(expected).add, normalize
    doubtful: set[int] = set()
    dups = 0
    try:
        for email, name, first in rows:
            key = norm(email)
            h = key_hash(key)  # str caches its hash: callers hashing `key` again pay nothing
            if add(h):
                yield key, email, name, first
            else:
                dups += 1
                doubtful.add(h)
        again = _rereader(rows, reread)
        if doubtful and again is not None:  # duplicates, or (rarely) two readers sharing a hash: rows tell which
            for found in _collided(again(), doubtful, key_hash):
                dups -= 1
                yield found
    finally:
        if tally is not None:
            tally.duplicates += dups


def eligible(rows: Iterable[Row], ledger: _Suppressions, journal: _Sent | None, *, resend_in_doubt: bool,
             tally: Eligibility, reread: Callable[[], Iterable[Row]] | None = None, expected: int = 0,
             key_hash: Callable[[str], int] = hash) -> Iterator[Reader]:
    """(address, name, first name) of each reader to send to now, streamed; `tally` counts everyone and why
    they were left out: suppressed in the ledger, malformed (one bad address makes SendGrid refuse a whole
    request), already sent, or in doubt (`journal` None: nobody was sent this issue yet).

    Exactly once (`unique`), in 16 to 32 bytes a reader: two distinct readers who share a 64-bit hash are told
    apart by reading the rows again (`reread`, or the rows themselves when they are a list or tuple). Raises
    TypeError for a one-shot iterator without `reread`: it could not be exact."""
    if _rereader(rows, reread) is None:
        raise TypeError("eligible() needs `reread` (or a list of rows) to settle a hash shared by two readers")
    # Names bound once and counts kept in locals: this loop runs a million times for a large list. The tally
    # is complete once the stream is (readers counts as it goes).
    suppressed, plausible = ledger.is_suppressed_key, _PLAUSIBLE.match
    sent, doubt = (journal.is_sent_key, journal.in_doubt_key) if journal is not None else (None, None)
    total = n_suppressed = n_sent = n_doubt = 0
    try:
        for key, email, name, first in unique(rows, tally, reread=reread, expected=expected, key_hash=key_hash):
            total += 1
            if suppressed(key):
                n_suppressed += 1
            elif len(key) > MAX_LENGTH or not plausible(key):
                tally.invalid += 1
                if len(tally.invalid_examples) < 5:
                    tally.invalid_examples.append(email)
            elif sent is not None and sent(key):
                n_sent += 1
            elif doubt is not None and not resend_in_doubt and doubt(key):
                n_doubt += 1
            else:
                tally.readers += 1
                yield key, name, first
    finally:
        tally.total += total
        tally.suppressed += n_suppressed
        tally.already_sent += n_sent
        tally.in_doubt += n_doubt


def _rereader(rows: Iterable[Row], reread: Callable[[], Iterable[Row]] | None) -> Callable[[], Iterable[Row]] | None:
    if reread is not None:
        return reread
    if isinstance(rows, (list, tuple)):
        return lambda: rows
    return None


def _collided(rows: Iterable[Row], doubtful: set[int], key_hash: Callable[[str], int],
              ) -> Iterator[tuple[str, str, str, str]]:
    """Among rows whose hash was seen twice, the first row of each address that is not the first address with
    its hash: distinct readers that a shared hash made look like duplicates."""
    first: dict[int, str] = {}  # doubtful hash -> the address that holds it in the table
    found: set[str] = set()
    for email, name, first_name in rows:
        key = normalize(email)
        h = key_hash(key)
        if h not in doubtful:
            continue
        holder = first.setdefault(h, key)
        if key != holder and key not in found:
            found.add(key)
            yield key, email, name, first_name


class Distinct:
    """Which 64-bit hashes have been seen: an open-addressing table in an `array` of 8-byte slots, a quarter to
    half full, so 16 to 32 bytes a reader (a `set` of ints costs about 60). A hash is not an address: callers settle
    a repeated hash against the addresses themselves (`unique`, `eligible`)."""

    def __init__(self, expected: int = 0) -> None:
        size = 1024
        while size < 2 * expected:
            size *= 2
        self._table = array("q", bytes(8 * size))
        self._mask = size - 1
        self._room = size // 2  # insertions left before the table doubles

    def add(self, h: int) -> bool:
        """Record `h`; False when it was recorded before."""
        h = h or 1  # 0 marks a free slot: hash 0 shares a slot with 1, and is settled like any shared hash
        table = self._table
        i = h & self._mask
        held = table[i]
        if held:  # most slots are free at the first look: the loop is the exception
            if held == h:
                return False
            mask = self._mask
            while True:
                i = (i + 1) & mask  # linear probing: the hash is SipHash, its low bits are as good as any
                held = table[i]
                if not held:
                    break
                if held == h:
                    return False
        table[i] = h
        self._room -= 1
        if not self._room:
            self._grow()
        return True

    def _grow(self) -> None:
        old = self._table
        table = self._table = array("q", bytes(16 * len(old)))
        mask = self._mask = len(table) - 1
        for h in old:
            if h:
                i = h & mask
                while table[i]:
                    i = (i + 1) & mask
                table[i] = h
        self._room = len(table) // 2 - len(old) // 2
