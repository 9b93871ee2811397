"""recipients.py called directly: the one address rule, the de-duplication, the eligibility tally."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from newsletter.recipients import Address, Distinct, Eligibility, eligible, first_name_of, mailbox_key, unique


@pytest.mark.parametrize("raw", ["ada@readers.net", " Ada@Readers.NET ", "a.b+c@mail.readers.co.uk",
                                 "josé@exämple.net"])
def test_plausible_addresses(raw: str) -> None:
    assert Address.plausible(Address.normalize(raw))


@pytest.mark.parametrize("raw", ["", "ada", "ada@", "@readers.net", "ada@readers", "ada@@readers.net",
                                 "ada@readers.net\nbob@readers.net", "a da@readers.net", "ada@readers.net;x",
                                 "ada@rea\ufffdders.net", "ada\x00@readers.net", 42, None, ["a@b.net"],
                                 "a" * 320 + "@readers.net"])
def test_implausible_addresses(raw: object) -> None:
    assert not Address.plausible(Address.normalize(raw) if isinstance(raw, str) else raw)


def test_normalise_and_validate() -> None:
    assert Address.normalize("  Ada@Readers.Net\t") == "ada@readers.net"
    assert Address.validate("Ada Lovelace <ada@readers.net>") == "ada@readers.net"
    assert Address.validate("mailto:ada@readers.net?subject=hi") == "ada@readers.net"
    for bad in ("not-an-address", "ada@readers.net\r\nBcc: x@y.net"):
        with pytest.raises(ValueError):
            Address.validate(bad)


class _Ledger:
    def __init__(self, suppressed: set[str]) -> None:
        self.suppressed = suppressed

    def is_suppressed_key(self, email: str) -> bool:
        return email in self.suppressed


class _Journal:
    def __init__(self, sent: set[str], doubt: set[str]) -> None:
        self.sent, self.doubt = sent, doubt

    def is_sent_key(self, address: str) -> bool:
        return address in self.sent

    def in_doubt_key(self, address: str) -> bool:
        return address in self.doubt


def test_eligibility_counts_everyone_once() -> None:
    rows = [("a@r.net", "A", ""), ("A@R.net ", "dup", ""), ("b@r.net", "B", ""), ("c@r.net", "C", ""),
            ("d@r.net", "D", ""), ("bad@", "X", ""), ("e@r.net", "E", "Eve")]
    tally = Eligibility()
    got = list(eligible(rows, _Ledger({"b@r.net"}), _Journal({"c@r.net"}, {"d@r.net"}), resend_in_doubt=False,
                        tally=tally))
    assert got == [("a@r.net", "A", ""), ("e@r.net", "E", "Eve")]
    assert (tally.readers, tally.suppressed, tally.already_sent, tally.in_doubt, tally.invalid, tally.duplicates,
            tally.total) == (2, 1, 1, 1, 1, 1, 6)
    assert tally.invalid_examples == ["bad@"]
    again = Eligibility()
    assert ("d@r.net", "D", "") in list(eligible(rows, _Ledger(set()), _Journal(set(), {"d@r.net"}),
                                             resend_in_doubt=True, tally=again))


def test_unique_keeps_the_first_row() -> None:
    rows = [("X@r.net", "", ""), ("x@r.net", "", ""), ("y@r.net", "", "")]
    assert [k for k, *_ in unique(rows)] == ["x@r.net", "y@r.net"]


@pytest.mark.parametrize(("name", "first"), [
    ('Mary-Kate "MK" Olsen, Jr.', "Mary-Kate"), ("Dr. Jane Doe, PhD", "Jane"), ("Rev. Dr. Martin King", "Martin"),
    ("Jean (JJ) Jacques", "Jean"), ("O'Brien D'Arcy", "O'Brien"), ("Ada", "Ada"), ("", ""), ("Prof.", "")])
def test_first_name_of(name: str, first: str) -> None:
    assert first_name_of(name) == first


def test_the_fast_path_agrees_with_email_validator() -> None:
    import random
    import string

    from email_validator import EmailNotValidError, validate_email

    from newsletter.recipients import _PLAIN

    rng = random.Random(7)
    alphabet = string.ascii_letters + string.digits + ".-_+!#$%&'*/=?^`{|}~"
    samples = ["ada@readers.net", "Ada.Lovelace+news@Mail.Example.CO.UK", "a@x.test", "a..b@x.net", ".a@x.net",
               "a@-x.net", "a@x.n", "a" * 65 + "@x.net", "weird!#$%&'*+/=?^_`{|}~-@x.net"]
    samples += ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 12))) + "@"
                + rng.choice(["x.net", "Mail.ORG", "a-b.co", "q.test", "b.localhost", "c.Onion"]) for _ in range(3000)]
    fast = 0
    for address in samples:
        try:
            reference = str(validate_email(address, check_deliverability=False).normalized)
        except EmailNotValidError:
            reference = None
        try:
            ours = Address.validate(address)
        except ValueError:
            ours = None
        assert ours == reference, address
        fast += bool(_PLAIN.fullmatch(address))
    assert fast > 1000  # the fast path was exercised


def _exact(rows: list[tuple[str, str, str]], suppressed: set[str]) -> tuple[list[tuple[str, str, str]], int]:
    """What eligible() must yield, worked out with a plain set of addresses: (readers, duplicates)."""
    seen: set[str] = set()
    out, dups = [], 0
    for email, name, first in rows:
        key = Address.normalize(email)
        if key in seen:
            dups += 1
            continue
        seen.add(key)
        if key not in suppressed and Address.plausible(key):
            out.append((key, name, first))
    return out, dups


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["ada", "bob", "cy", "dee", "eve", "flo", "gus", "hal"]),
                          st.sampled_from(["r.net", "R.NET", "x.org"]), st.sampled_from(["", "N", "Zoë"])),
                max_size=40),
       st.sets(st.sampled_from(["ada@r.net", "eve@x.org", "hal@r.net"])))
def test_readers_sharing_a_hash_are_each_sent_once(local_parts, suppressed) -> None:
    """A weak hash (the address's length) makes most distinct readers share a hash: each is still yielded
    exactly once, and only true duplicates are counted as such."""
    rows = [(f"{local}@{domain}", name, "") for local, domain, name in local_parts]
    expected, dups = _exact(rows, suppressed)
    tally = Eligibility()
    got = list(eligible(rows, _Ledger(suppressed), _Journal(set(), set()), resend_in_doubt=False, tally=tally,
                        key_hash=len))
    assert sorted(got) == sorted(expected) and len(got) == len(set(got))
    assert tally.duplicates == dups and tally.readers == len(expected)
    assert tally.total == len({Address.normalize(r[0]) for r in rows})
    assert sorted(k for k, *_ in unique(rows, key_hash=len)) == sorted({Address.normalize(r[0]) for r in rows})


def test_eligible_needs_a_way_to_read_the_rows_again() -> None:
    with pytest.raises(TypeError):
        list(eligible(iter([("a@r.net", "", "")]), _Ledger(set()), _Journal(set(), set()), resend_in_doubt=False,
                      tally=Eligibility()))
    rows = [("a@r.net", "", ""), ("b@r.net", "", "")]
    got = list(eligible(iter(rows), _Ledger(set()), _Journal(set(), set()), resend_in_doubt=False,
                        tally=Eligibility(), reread=lambda: iter(rows), key_hash=lambda _: 7))
    assert got == [("a@r.net", "", ""), ("b@r.net", "", "")]  # the second shares the hash: sent after a re-read


def test_distinct_grows_and_forgets_nothing() -> None:
    import random

    rng = random.Random(3)
    values = [rng.getrandbits(64) - 2**63 for _ in range(5000)] + [0, 1, -1]
    seen = Distinct()
    assert all(seen.add(v) for v in values[:-2])
    assert not seen.add(1)  # 0 is kept as 1: a hash shared, for the caller to settle against the addresses
    assert seen.add(-1)
    assert not any(seen.add(v) for v in values)
    assert len(seen._table) >= 2 * len(values) - 4  # at most half full


def test_the_tally_adds_up_across_streams_and_keeps_five_invalid_examples() -> None:
    long_one = "a" * 310 + "@readers.net"  # plausible in form, longer than an address may be
    rows = [(f"bad{i}@", "", "") for i in range(7)] + [(long_one, "", ""), ("ok@r.net", "Ok", "O"),
                                                        ("OK@r.net", "", ""), ("s@r.net", "", ""),
                                                        ("t@r.net", "", ""), ("u@r.net", "", "")]
    tally = Eligibility()
    ledger, journal = _Ledger({"s@r.net"}), _Journal({"t@r.net"}, {"u@r.net"})
    assert list(eligible(rows, ledger, journal, resend_in_doubt=False, tally=tally)) == [("ok@r.net", "Ok", "O")]
    assert tally.invalid == 8 and tally.invalid_examples == [f"bad{i}@" for i in range(5)]
    stream = eligible([("v@r.net", "", ""), ("V@r.net", "", ""), ("w@r.net", "", "")], ledger, journal,
                      resend_in_doubt=False, tally=tally)
    assert next(stream) == ("v@r.net", "", "")
    stream.close()  # a send that stops early: what was read is counted all the same
    assert (tally.readers, tally.suppressed, tally.already_sent, tally.in_doubt, tally.invalid, tally.duplicates,
            tally.total) == (2, 1, 1, 1, 8, 1, 13)
    list(eligible([("s@r.net", "", ""), ("t@r.net", "", ""), ("u@r.net", "", ""), ("u@r.net", "", "")],
                  ledger, journal, resend_in_doubt=False, tally=tally))
    assert (tally.suppressed, tally.already_sent, tally.in_doubt, tally.duplicates, tally.total) == (2, 2, 2, 2, 16)


def test_unique_counts_the_rows_it_skips() -> None:
    tally = Eligibility()
    rows = [("X@r.net", "Xa", "X"), ("x@r.net", "", ""), (" x@R.NET", "", ""), ("y@r.net", "Y", "")]
    assert list(unique(rows, tally)) == [("x@r.net", "X@r.net", "Xa", "X"), ("y@r.net", "y@r.net", "Y", "")]
    assert tally.duplicates == 2 and tally.total == 0


@pytest.mark.parametrize(("address", "key"), [
    ("Ada+News@Readers.net", "ada@readers.net"), ("a.d.a+x@googlemail.com", "ada@gmail.com"),
    ("a.da@gmail.com", "ada@gmail.com"), ("a.da@readers.net", "a.da@readers.net"),
    ("+tag@readers.net", "+tag@readers.net"),
    ("...@gmail.com", "...@gmail.com"), ("no-at-sign", "no-at-sign"), ("a+b+c@r.net", "a@r.net"),
    ("a@b@readers.net", "a@b@readers.net")])
def test_mailbox_key(address: str, key: str) -> None:
    assert mailbox_key(address) == key


@pytest.mark.parametrize(("name", "first"), [
    ("Dr Jane Doe", "Jane"), ("Mr Mrs", ""), ("Sir, Dame.", ""), ('"MK" Olsen', "Olsen"), ("(JJ), Jacques", "Jacques"),
    ("Jane.", "Jane"), ("  Jane  Doe ", "Jane")])
def test_first_name_of_without_titles_and_nicknames(name: str, first: str) -> None:
    assert first_name_of(name) == first


@pytest.mark.parametrize(("raw", "address"), [
    ("mailto:ada@x.net?subject=hi?there", "ada@x.net"), ("MAILTO:ada@x.net", "ada@x.net"),
    ("Ada <ada@x.net>", "ada@x.net"), ("A <b> <ada@x.net>", "ada@x.net"), ("Ada <ada@x.net", "Ada <ada@x.net"),
    ("ada@x.net>", "ada@x.net>"), ("  ada@x.net  ", "ada@x.net")])
def test_bare_takes_the_address_out_of_what_exports_write(raw: str, address: str) -> None:
    assert Address.bare(raw) == address


def test_validate_names_the_control_character() -> None:
    for raw in ("ada@x.net\r\nBcc: eve@x.net", "ada\x00@x.net"):
        with pytest.raises(ValueError, match="^it contains a line break or a control character$"):
            Address.validate(raw)


def test_each_reason_is_counted_within_one_stream_and_320_characters_is_an_address() -> None:
    longest = "a" * 308 + "@readers.net"  # 320: as long as an address may be
    rows = [("s1@r.net", "", ""), ("s2@r.net", "", ""), ("t1@r.net", "", ""), ("t2@r.net", "", ""),
            ("u1@r.net", "", ""), ("u2@r.net", "", ""), (longest, "", ""), ("a" + longest, "", "")]
    tally = Eligibility()
    got = list(eligible(rows, _Ledger({"s1@r.net", "s2@r.net"}), _Journal({"t1@r.net", "t2@r.net"},
                                                                          {"u1@r.net", "u2@r.net"}),
                        resend_in_doubt=False, tally=tally))
    assert got == [(longest, "", "")] and len(longest) == 320
    assert (tally.suppressed, tally.already_sent, tally.in_doubt, tally.invalid) == (2, 2, 2, 1)


def test_distinct_sized_for_many_from_the_start() -> None:
    seen = Distinct(expected=5000)
    assert len(seen._table) >= 10000
    assert all(seen.add(v) for v in range(2, 6000)) and not seen.add(5999)


def test_validate_refuses_special_use_domains_and_says_why() -> None:
    for address in ("ada@mail.readers.test", "ada@readers.invalid", "ada@host.localhost"):
        with pytest.raises(ValueError):
            Address.validate(address)
    with pytest.raises(ValueError, match="^An email address must have an @-sign.$"):
        Address.validate("ada.readers.net")
    assert first_name_of("Dr. Xander X. Jones") == "Xander"


def test_without_a_journal_nobody_was_sent_yet_and_a_one_shot_stream_is_refused_by_name() -> None:
    tally = Eligibility()
    rows = [("a@r.net", "A", ""), ("b@r.net", "", "")]
    got = list(eligible(rows, _Ledger({"b@r.net"}), None, resend_in_doubt=False, tally=tally))
    assert got == [("a@r.net", "A", "")]
    assert (tally.readers, tally.suppressed, tally.already_sent, tally.in_doubt) == (1, 1, 0, 0)
    with pytest.raises(TypeError, match=r"^eligible\(\) needs `reread` \(or a list of rows\) to settle a hash "
                                        r"shared by two readers$"):
        list(eligible(iter(rows), _Ledger(set()), None, resend_in_doubt=False, tally=Eligibility()))


def test_an_address_may_be_320_characters_and_not_one_more() -> None:
    longest = "a" * 308 + "@readers.net"
    assert len(longest) == 320 and Address.plausible(longest) and not Address.plausible("a" + longest)


def test_the_fast_path_keeps_email_validators_length_limits() -> None:
    domain = "@" + ".".join(["d" * 61] * 3) + ".net"  # 190 characters
    assert Address.validate("a" * 64 + domain) == "a" * 64 + domain  # 254: the longest address
    with pytest.raises(ValueError, match="too long"):
        Address.validate("a" * 64 + domain + "t")  # 255, with a local part of 64: the fast path's own limit


def test_a_list_is_read_again_only_to_settle_a_shared_hash() -> None:
    rows = [("a@r.net", "", ""), ("b@r.net", "", ""), ("c@r.net", "", "")]
    reads: list[int] = []

    def reread() -> list[tuple[str, str, str]]:
        reads.append(1)
        return rows

    def shared(key: str) -> int:  # a and b share a hash, as two of a billion readers might
        return 1 if key in ("a@r.net", "b@r.net") else 2

    def send(key_hash: object) -> list[str]:
        return [k for k, *_ in eligible(iter(rows), _Ledger(set()), None, resend_in_doubt=False,
                                        tally=Eligibility(), reread=reread, key_hash=key_hash)]  # type: ignore[arg-type]

    assert send(hash) == ["a@r.net", "b@r.net", "c@r.net"] and not reads  # nothing shared: read once
    assert send(shared) == ["a@r.net", "c@r.net", "b@r.net"] and len(reads) == 1  # b settled by a second read
    assert [k for k, *_ in unique(iter(rows), reread=reread)] == ["a@r.net", "b@r.net", "c@r.net"] and len(reads) == 1


def test_distinct_takes_16_to_32_bytes_a_reader() -> None:
    sized = Distinct(expected=4000)
    assert all(sized.add(h) for h in range(2, 4002))
    assert len(sized._table) == 8192  # sized once (2 slots a reader, rounded up to a power of two): never grew
    grown = Distinct()
    for n, h in enumerate(range(2, 5002), start=1):
        grown.add(h)
        assert len(grown._table) <= max(1024, 4 * n)  # at least a quarter full once it has grown
