"""Mail authentication in DNS through dnspython: one resolver (NEWSLETTER_NAMESERVER when set), SPF's lookup count,
DMARC's policy, and the organisational domain (the Public Suffix List bundled with `publicsuffixlist`: no fetch)."""

from __future__ import annotations

import functools
import ipaddress
import re
from typing import Any

from .config import NAMESERVER_ENV, env_value
from .errors import UsageError
from .recipients import normalize

DNS_LIFETIME = 3.0  # seconds for one question, retries included; a dead network costs this once
SPF_MAX_TERMS = 50  # a record that sprawls past this is over the limit anyway: stop asking
# A name that always exists. A resolver that says it does not cannot see the Internet's DNS (a sandbox, a captive
# portal answering NXDOMAIN for everything): every missing record would then be a false failure.
CANARY = "sendgrid.net"


class NoNetwork(Exception):
    """No DNS server could be reached: the network (or the resolver) is not there."""


class Resolver:
    """Answers DNS questions as lists of strings; after the first sign of no network, every question raises
    NoNetwork at once (so a dead network costs one timeout, not one per question)."""

    def __init__(self, nameserver: tuple[str, int] | None = None, lifetime: float = DNS_LIFETIME) -> None:
        self.nameserver = nameserver
        self.lifetime = lifetime
        self.offline = False
        self._resolver: Any = None
        self._canary_seen = False

    @classmethod
    def from_env(cls, lifetime: float = DNS_LIFETIME) -> Resolver:
        """Asking NEWSLETTER_NAMESERVER (`HOST:PORT`, `[v6]:PORT` or a bare address) when set, else the system's."""
        spec = env_value(NAMESERVER_ENV).strip()
        if not spec:
            return cls(lifetime=lifetime)
        match = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\](?::(\d+))?|([^:]+)(?::(\d+))?|([0-9A-Fa-f:]+)", spec)
        host = match and (match.group(1) or match.group(3) or match.group(5))
        port = int(match and (match.group(2) or match.group(4)) or 53)
        try:
            ipaddress.ip_address(host or "")
        except ValueError:
            raise UsageError(f"{NAMESERVER_ENV}={spec!r} is not HOST:PORT with an IP address",
                             hint=f"e.g. {NAMESERVER_ENV}=127.0.0.1:5353, or unset it to use the system's") from None
        if not 0 < port < 65536:
            raise UsageError(f"{NAMESERVER_ENV}={spec!r}: the port must be 1 to 65535")
        return cls((str(host), port), lifetime)

    def _get(self) -> Any:
        import dns.resolver

        if self._resolver is None:
            if self.nameserver is None:
                try:
                    self._resolver = dns.resolver.Resolver()
                except dns.resolver.NoResolverConfiguration:
                    self.offline = True
                    raise NoNetwork("no DNS server configured") from None
            else:
                self._resolver = dns.resolver.Resolver(configure=False)
                self._resolver.nameservers = [self.nameserver[0]]
                self._resolver.port = self.nameserver[1]
            self._resolver.lifetime = self.lifetime
            self._resolver.timeout = self.lifetime / 2
        return self._resolver

    def lookup(self, name: str, rtype: str) -> list[str]:
        """The records of `rtype` at `name` as text ([] when there are none or the name does not exist): TXT
        strings joined, CNAME and MX targets without the final dot ("." for a null MX), addresses as written."""
        if self.offline:
            raise NoNetwork("no network")
        if not self._canary_seen:
            self._canary_seen = True
            if self._ask(CANARY, "TXT") is None:
                self.offline = True
                raise NoNetwork(f"the DNS server says {CANARY} does not exist: it cannot see the Internet's DNS")
        return self._ask(name, rtype) or []

    def _ask(self, name: str, rtype: str) -> list[str] | None:
        """The records as text; None when the name does not exist, [] when it has none of this type."""
        import dns.exception
        import dns.resolver

        try:
            answer = self._get().resolve(name, rtype, raise_on_no_answer=False)
        except dns.resolver.NXDOMAIN:
            return None
        except dns.resolver.NoNameservers as exc:
            if _unreachable(exc):
                self.offline = True
                raise NoNetwork(str(exc)) from None
            return []  # the domain's own servers fail (SERVFAIL): as good as no record, for a receiver
        except dns.exception.Timeout:
            self.offline = True
            raise NoNetwork(f"no answer to {name} {rtype} within {self.lifetime:g} s") from None
        except dns.exception.DNSException:
            return []  # a malformed name or answer: nothing a receiver could use either
        if answer.rrset is None or answer.rrset.rdtype != answer.rdtype:
            return []
        return [_as_text(r) for r in answer.rrset]


def _unreachable(exc: Any) -> bool:
    """Whether every server failed by the network (refused, unreachable), not with an answer such as SERVFAIL."""
    errors = exc.kwargs.get("errors") or []
    return bool(errors) and all(isinstance(e[3], OSError) for e in errors)


def _as_text(rdata: Any) -> str:
    import dns.name
    import dns.rdatatype

    kind = rdata.rdtype
    if kind == dns.rdatatype.TXT:
        return b"".join(rdata.strings).decode("utf-8", "replace")
    if kind == dns.rdatatype.MX:
        return "." if rdata.exchange == dns.name.root else rdata.exchange.to_text(omit_final_dot=True).lower()
    if kind == dns.rdatatype.CNAME:
        return str(rdata.target.to_text(omit_final_dot=True)).lower()
    if kind in (dns.rdatatype.A, dns.rdatatype.AAAA):
        return str(rdata.address)
    return str(rdata.to_text())


def domain_of(address: str) -> str:
    """The domain of an email address, lowercase."""
    return normalize(address).rpartition("@")[2].rstrip(".")


@functools.lru_cache(maxsize=1)
def _suffixes() -> Any:
    from publicsuffixlist import PublicSuffixList

    return PublicSuffixList()  # the list bundled with the package: never fetched


def org_domain(domain: str) -> str:
    """The organisational domain (RFC 7489 3.2): one label below its public suffix (letters.example.co.uk ->
    example.co.uk), by the Public Suffix List."""
    return str(_suffixes().privatesuffix(domain.lower()) or domain.lower())


def dmarc_policy(record: str) -> str | None:
    """The `p=` of a DMARC record (none, quarantine or reject), None when it has no valid one."""
    tags = dict(part.strip().partition("=")[::2] for part in record.split(";") if "=" in part)
    policy = {k.strip().lower(): v.strip().lower() for k, v in tags.items()}.get("p")
    return policy if policy in ("none", "quarantine", "reject") else None


def spf_records(resolver: Resolver, domain: str) -> list[str]:
    """The SPF records (TXT `v=spf1 ...`) at a domain."""
    return [t for t in resolver.lookup(domain, "TXT") if re.match(r"v=spf1(\s|$)", t.strip(), re.IGNORECASE)]


class _SpfProblem(Exception):
    """The SPF record cannot be evaluated (a receiver's permerror)."""


def spf_lookups(resolver: Resolver, domain: str, limit: int) -> tuple[int, str]:
    """(DNS lookups the domain's SPF record costs a receiver, the problem that stops evaluating it or "").

    RFC 7208 4.6.4: `include`, `a`, `mx`, `ptr`, `exists` and `redirect` each cost one, the included records'
    own terms counted too; past `limit` the receiver gives up. Counting stops a little past it."""
    count = 0

    def walk(name: str, chain: tuple[str, ...]) -> None:
        nonlocal count
        if name in chain:
            raise _SpfProblem(f"include loop through {name}")
        records = spf_records(resolver, name)
        if len(records) != 1:
            raise _SpfProblem(f"{name} has {'no' if not records else len(records)} SPF record"
                              f"{'s' if len(records) > 1 else ''}" + (f" (included from {chain[-1]})" if chain else ""))
        for term in records[0].split()[1:]:
            if count > SPF_MAX_TERMS:
                return
            mechanism, _, target = term.lower().lstrip("+-~?").partition(":")
            if mechanism.startswith("redirect="):
                mechanism, target = "redirect", mechanism[len("redirect="):]
            mechanism = mechanism.split("/")[0]
            if mechanism in ("include", "redirect"):
                count += 1
                if target and "%" not in target:  # a macro depends on the sender: not followed
                    walk(target, (*chain, name))
            elif mechanism in ("a", "mx", "ptr", "exists"):
                count += 1

    try:
        walk(domain, ())
    except _SpfProblem as exc:
        return count, str(exc)
    return count, ""
