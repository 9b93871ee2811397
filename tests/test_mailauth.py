"""mailauth.py: mail authentication in DNS, against a zone on loopback: the resolver's answers and its "no network",
SPF's lookup count as a receiver counts it, DMARC's policy, and the organisational domain (the bundled Public
Suffix List). `doctor`'s checks built on these are in test_doctor.py."""

from __future__ import annotations

import pytest
from helpers import Zone

from newsletter.errors import UsageError
from newsletter.mailauth import CANARY, NoNetwork, Resolver, dmarc_policy, domain_of, org_domain, spf_lookups


@pytest.fixture
def zone(dns_server: Zone) -> Zone:
    dns_server.records.clear()
    dns_server.set(CANARY, "TXT", "v=spf1 ip4:167.89.0.0/17 ~all")  # the resolver can see the Internet's DNS
    return dns_server


def resolver(zone: Zone) -> Resolver:
    return Resolver(("127.0.0.1", zone.port), lifetime=2)


def test_answers_as_text(zone: Zone) -> None:
    zone.set("micromoments.net", "MX", "10 In1-Smtp.Messagingengine.com", "20 in2-smtp.messagingengine.com")
    zone.set("s1._domainkey.micromoments.net", "CNAME", "S1._domainkey.u7.wl.sendgrid.net")
    zone.set("letters.micromoments.net", "A", "192.0.2.7")
    r = resolver(zone)
    assert sorted(r.lookup("micromoments.net", "MX")) == ["in1-smtp.messagingengine.com",
                                                          "in2-smtp.messagingengine.com"]
    assert r.lookup("s1._domainkey.micromoments.net", "CNAME") == ["s1._domainkey.u7.wl.sendgrid.net"]
    assert r.lookup("letters.micromoments.net", "A") == ["192.0.2.7"]
    assert r.lookup("letters.micromoments.net", "TXT") == []  # the name exists, not this type
    assert r.lookup("nowhere.micromoments.net", "TXT") == []  # NXDOMAIN


def test_a_resolver_blind_to_the_internet_is_no_network_and_stays_so(zone: Zone) -> None:
    zone.drop(CANARY, "TXT")
    zone.set("micromoments.net", "TXT", "v=spf1 -all")
    r = resolver(zone)
    with pytest.raises(NoNetwork, match=f"{CANARY} does not exist"):
        r.lookup("micromoments.net", "TXT")
    asked = len(zone.questions)
    with pytest.raises(NoNetwork):
        r.lookup("micromoments.net", "TXT")
    assert len(zone.questions) == asked  # one dead network costs one question, not one per check


def test_the_nameserver_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for spec, expected in (("127.0.0.1:5353", ("127.0.0.1", 5353)), ("[::1]:53", ("::1", 53)),
                           ("10.0.0.2", ("10.0.0.2", 53))):
        monkeypatch.setenv("NEWSLETTER_NAMESERVER", spec)
        assert Resolver.from_env().nameserver == expected
    monkeypatch.setenv("NEWSLETTER_NAMESERVER", "dns.example:53")
    with pytest.raises(UsageError, match="is not HOST:PORT with an IP address"):
        Resolver.from_env()
    monkeypatch.delenv("NEWSLETTER_NAMESERVER")
    assert Resolver.from_env().nameserver is None


def test_spf_counts_each_lookup_a_receiver_makes(zone: Zone) -> None:
    zone.set("micromoments.net", "TXT", "google-site-verification=x",
             "v=spf1 include:_spf.fastmail.test a mx ip4:192.0.2.0/24 include:%{i}.macro.test ~all")
    zone.set("_spf.fastmail.test", "TXT", "v=spf1 include:more.fastmail.test ptr -all")
    zone.set("more.fastmail.test", "TXT", "v=spf1 exists:x.test redirect=last.test")
    zone.set("last.test", "TXT", "v=spf1 ip6:2001:db8::/32 -all")
    # include, a, mx, include (a macro: counted, not followed); include, ptr; exists, redirect
    assert spf_lookups(resolver(zone), "micromoments.net", 10) == (8, "")


def test_spf_that_a_receiver_cannot_evaluate_is_named(zone: Zone) -> None:
    zone.set("loop.test", "TXT", "v=spf1 include:back.test -all")
    zone.set("back.test", "TXT", "v=spf1 include:loop.test -all")
    zone.set("two.test", "TXT", "v=spf1 -all", "v=spf1 ~all")
    zone.set("dangling.test", "TXT", "v=spf1 include:gone.test -all")
    r = resolver(zone)
    assert spf_lookups(r, "loop.test", 10) == (2, "include loop through loop.test")
    assert spf_lookups(r, "two.test", 10) == (0, "two.test has 2 SPF records")
    assert spf_lookups(r, "dangling.test", 10) == (1, "gone.test has no SPF record (included from dangling.test)")


@pytest.mark.parametrize(("record", "policy"), [
    ("v=DMARC1; p=none; rua=mailto:hello@micromoments.net", "none"),
    ("v=DMARC1;p=Reject", "reject"), ("v=DMARC1; sp=reject; p = quarantine ;", "quarantine"),
    ("v=DMARC1; p=monitor", None), ("v=DMARC1; rua=mailto:x@y.z", None)])
def test_dmarc_policy(record: str, policy: str | None) -> None:
    assert dmarc_policy(record) == policy


def test_the_organisational_domain_is_one_label_below_the_public_suffix() -> None:
    assert org_domain("letters.micromoments.net") == "micromoments.net"
    assert org_domain("News.Letters.Example.co.uk") == "example.co.uk"
    assert org_domain("micromoments.net") == "micromoments.net"
    assert domain_of("Ada@Letters.MicroMoments.net") == "letters.micromoments.net"
