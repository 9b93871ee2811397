"""Signed unsubscribe tokens: URL-safe, versioned, bound to the address and the key."""

from __future__ import annotations

import re

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from newsletter.tokens import make_token, unsubscribe_url, verify_token

addresses = st.from_regex(r"[a-zA-Z0-9._%+-]{1,20}@[a-zA-Z0-9-]{1,12}\.[a-z]{2,6}", fullmatch=True)


@given(addresses)
def test_round_trip_is_case_insensitive_and_url_safe(address: str) -> None:
    token = make_token("k", address)
    assert re.fullmatch(r"u1\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+", token)
    assert verify_token("k", token) == address.lower()
    assert make_token("k", f"  {address.upper()} ") == token


@given(addresses, st.integers(0, 200))
@example("0@0000.aaaaad", 152)  # a last base64 character whose spare bits decoded to the same bytes
def test_any_changed_character_is_refused(address: str, position: int) -> None:
    token = make_token("k", address)
    i = position % len(token)
    changed = token[:i] + ("A" if token[i] != "A" else "B") + token[i + 1:]
    assert verify_token("k", changed) is None


def test_wrong_key_and_garbage() -> None:
    token = make_token("right", "ada@readers.net")
    assert verify_token("wrong", token) is None
    for junk in ("", "u1", "u1..", "u2.YQ.YQ", "u1.%%%.xx", "u1." + "A" * 5000 + ".x", token + ".extra"):
        assert verify_token("right", junk) is None


def test_url() -> None:
    assert unsubscribe_url("https://l.net/news/", "u1.a.b") == "https://l.net/news/unsubscribe/u1.a.b"
    assert unsubscribe_url("https://l.net/XX/", "t") == "https://l.net/XX/unsubscribe/t"


def test_an_address_whose_base64_ends_in_x_keeps_it() -> None:
    # base64's alphabet has X: only the padding `=` is stripped (this address's UTF-8 ends in 0x97: ...bMSX).
    token = make_token("k", "abc@readers.lė")
    assert token.split(".")[1].endswith("X") and verify_token("k", token) == "abc@readers.lė"


def test_only_the_canonical_lowercase_address_verifies() -> None:
    import base64

    from newsletter.tokens import _mac

    def forged(email: str) -> str:  # signed with the right key, but not an address make_token would sign
        payload = base64.urlsafe_b64encode(email.encode()).rstrip(b"=").decode()
        mac = base64.urlsafe_b64encode(_mac("k", email)).rstrip(b"=").decode()
        return f"u1.{payload}.{mac}"

    assert verify_token("k", forged("ada@readers.net")) == "ada@readers.net"
    assert verify_token("k", forged("Ada@readers.net")) is None  # not normalised
    assert verify_token("k", forged("ada@readers")) is None  # normalised, not plausible


NOW = 1_800_000_000


def test_confirm_links_are_valid_for_seven_days_and_bound_to_key_and_address() -> None:
    from newsletter.tokens import ConfirmLink, LinkState, make_confirm_token, verify_confirm_token

    token = make_confirm_token("k", " Ada@Readers.net ", NOW)
    assert re.fullmatch(r"c1\.[A-Za-z0-9_-]+\.1800000000\.[A-Za-z0-9_-]+", token)
    assert verify_confirm_token("k", token, NOW + 60) == ConfirmLink(LinkState.VALID, "ada@readers.net", NOW)
    assert verify_confirm_token("k", token, NOW + 7 * 86400).state is LinkState.VALID  # the last second
    assert verify_confirm_token("k", token, NOW + 7 * 86400 + 1) == ConfirmLink(LinkState.EXPIRED)
    assert verify_confirm_token("k", token, NOW - 300).state is LinkState.VALID  # a clock a little behind
    assert verify_confirm_token("k", token, NOW - 301) == ConfirmLink(LinkState.EXPIRED)  # dated in the future
    version, address, when, mac = token.split(".")
    invalid = ConfirmLink(LinkState.INVALID)
    for bad in (f"c2.{address}.{when}.{mac}", f"{version}.{address}.{NOW + 1}.{mac}", f"{version}.{address}.{when}.x",
                f"{version}.{address}.{when}.{mac[:-1]}A" if not mac.endswith("A") else f"{version}.{address}.{when}.B",
                f"{version}.{address}.{when}", f"{version}.{address}.soon.{mac}", f"{version}.%%.{when}.{mac}",
                f"{version}.{address}.{when}.{mac}.x", f"{version}.{address}.{when}.{mac}A"):
        assert verify_confirm_token("k", bad, NOW) == invalid, bad
    assert verify_confirm_token("other", token, NOW) == invalid
    junk = make_confirm_token("k", "not an address", NOW)  # signed, but no address
    assert verify_confirm_token("k", junk, NOW) == invalid


def test_the_secret_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from newsletter.errors import SendError
    from newsletter.tokens import DEVELOPMENT_SECRET, secret_from_env

    assert secret_from_env(required=False) == (DEVELOPMENT_SECRET, True)
    with pytest.raises(SendError) as caught:
        secret_from_env(required=True)
    assert caught.value.message == "NEWSLETTER_SECRET is not set: it signs every reader's unsubscribe link"
    assert caught.value.hint.startswith("export NEWSLETTER_SECRET=$(python3 -c 'import secrets; print(")
    assert caught.value.hint.endswith(" and keep it: changing it breaks the links in mail already sent")
    monkeypatch.setenv("NEWSLETTER_SECRET", "s3cret")
    assert secret_from_env(required=True) == ("s3cret", False) == secret_from_env(required=False)


def test_keyed_hash_hides_the_value_behind_the_key() -> None:
    import hashlib
    import hmac

    from newsletter.tokens import keyed_hash

    assert keyed_hash("k", "10.0.0.1") == hmac.new(b"k", b"ip:10.0.0.1", hashlib.sha256).hexdigest()[:24]
    assert len({keyed_hash("k", "10.0.0.1"), keyed_hash("j", "10.0.0.1"), keyed_hash("k", "10.0.0.2")}) == 3


def test_tokens_compare_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    import hmac

    from newsletter import tokens

    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a, b):  # type: ignore[no-untyped-def]
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(tokens.hmac, "compare_digest", spy)
    token = tokens.make_token("k", "ada@readers.net")
    assert tokens.verify_token("k", token) == "ada@readers.net"
    assert tokens.verify_token("other", token) is None
    assert len(calls) == 2  # both verdicts came from compare_digest, never ==
