"""`newsletter doctor` against a DNS server on loopback (dnslib), the fake SendGrid's account, an HTTPS /healthz on
loopback with its own certificate authority, and a git repository: a good set-up, then each thing broken in turn."""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from conftest import Cli
from fake_sendgrid import API_KEY, FakeSendGrid, authenticated_domain, event_webhook
from helpers import Zone

from newsletter.config import load_env_file, resolve_root
from newsletter.doctor import CHECK_IDS, NO_NETWORK, Status, run_doctor

DOMAIN = "micromoments.net"
HOST = f"letters.{DOMAIN}"
SECRET = "k3Y-for-the-doctor-tests-0123456789abcdef"  # 41 characters
SCOPES = ["mail.send", "suppression.read", "asm.suppressions.global.create", "asm.suppressions.global.delete",
          "mail.batch.create", "mail.batch.read", "user.scheduled_sends.create", "user.scheduled_sends.read",
          "whitelabel.read", "user.webhooks.event.settings.read"]
DATA = Path(__file__).parent / "data" / "sendgrid"


# -- a DNS zone on loopback (helpers.Zone) -------------------------------------------------------------------
def good_zone(zone: Zone) -> None:
    """What a writer's registrar holds after following README's *Before your first send*."""
    zone.set(f"s1._domainkey.{DOMAIN}", "CNAME", "s1._domainkey.u7.wl.sendgrid.net")
    zone.set(f"s2._domainkey.{DOMAIN}", "CNAME", "s2._domainkey.u7.wl.sendgrid.net")
    zone.set(f"em1234.{DOMAIN}", "CNAME", "u7.wl.sendgrid.net")
    zone.set(f"_dmarc.{DOMAIN}", "TXT", f"v=DMARC1; p=none; rua=mailto:hello@{DOMAIN}")
    zone.set(DOMAIN, "TXT", "v=spf1 include:_spf.fastmail.test include:sendgrid.net ~all", "google-site-verification=x")
    zone.set("_spf.fastmail.test", "TXT", "v=spf1 ip4:66.111.4.0/24 a mx -all")
    zone.set("sendgrid.net", "TXT", "v=spf1 ip4:167.89.0.0/17 ~all")
    zone.set(DOMAIN, "MX", "10 in1-smtp.messagingengine.com", "20 in2-smtp.messagingengine.com")
    zone.set(HOST, "A", "127.0.0.1")


@pytest.fixture
def zone(dns_server: Zone) -> Zone:
    """The loopback DNS server holding a good set-up's records (one server for the module: each stop costs a
    poll interval)."""
    dns_server.records.clear()
    dns_server.questions.clear()
    good_zone(dns_server)
    return dns_server


# -- an HTTPS /healthz on loopback, with a certificate authority of its own ----------------------------------------
def certificates(folder: Path) -> tuple[Path, Path, Path]:
    """(CA certificate, server certificate, server key) for HOST, made with `cryptography`."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = dt.datetime.now(dt.UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "doctor test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(1).not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    leaf = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, HOST)]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(2)
            .not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(HOST)]), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = folder / "ca.pem", folder / "server.pem", folder / "server.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return paths


@pytest.fixture(scope="module")
def https(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path]]:
    """(port, CA file): GET /healthz answers 200 over TLS for HOST; the CA is trusted through SSL_CERT_FILE."""
    ca, cert, key = certificates(tmp_path_factory.mktemp("tls"))

    class Health(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_GET(self) -> None:  # noqa: N802
            ok = self.path == "/healthz"
            body = b'{"status": "ok"}' if ok else b"not found"
            self.send_response(200 if ok else 404)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Health)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, key)
    server.socket = tls.wrap_socket(server.socket, server_side=True)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield server.server_address[1], ca
    server.shutdown()
    server.server_close()


def public_key() -> str:
    """A webhook verification key as SendGrid shows it: base64 DER of a P-256 public key."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    der = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(der).decode()


@pytest.fixture(scope="module")
def account() -> Iterator[FakeSendGrid]:
    server = FakeSendGrid().start()
    yield server
    server.stop()  # fails if a body broke SendGrid's schema


@pytest.fixture
def fake(account: FakeSendGrid) -> FakeSendGrid:
    """The fake SendGrid (one for the module), its account reset to a good set-up by `setup`."""
    account.account_requests.clear()
    account.webhooks_all_endpoint = True
    return account


@dataclass
class Setup:
    """A newsletter ready to send, and everything doctor asks about it."""

    root: Path
    zone: Zone
    fake: FakeSendGrid
    base_url: str
    key: str

    def run(self) -> dict[str, Any]:
        """check id -> Check."""
        return {c.check: c for c in run_doctor(self.root).checks}

    def git(self, *args: str) -> None:
        subprocess.run(["git", *args], cwd=self.root, check=True, capture_output=True)


@pytest.fixture
def setup(ready_project: Path, zone: Zone, fake: FakeSendGrid, https: tuple[int, Path],
          monkeypatch: pytest.MonkeyPatch) -> Setup:
    port, ca = https
    base_url = f"https://{HOST}:{port}"
    config = ready_project / "newsletter.yaml"
    config.write_text(config.read_text().replace(f"https://{HOST}", base_url))
    good_zone(zone)
    key = public_key()
    fake.scopes = list(SCOPES)
    fake.domains = [authenticated_domain(DOMAIN)]
    fake.webhooks = [event_webhook(f"{base_url}/webhooks/sendgrid", public_key=key)]
    for name, value in {"SENDGRID_API_URL": fake.url, "SENDGRID_API_KEY": API_KEY, "NEWSLETTER_SECRET": SECRET,
                        "SENDGRID_WEBHOOK_PUBLIC_KEY": key, "NEWSLETTER_NAMESERVER": f"127.0.0.1:{zone.port}",
                        "SSL_CERT_FILE": str(ca)}.items():
        monkeypatch.setenv(name, value)
    s = Setup(ready_project, zone, fake, base_url, key)
    s.git("init", "-q")
    (ready_project / ".gitignore").write_text("subscribers/\n.env\nbuild/\nbackups/\n")
    (ready_project / "subscribers" / "subscribers.csv").write_text("email,name\nada@readers.net,Ada\n")
    (ready_project / "backups").mkdir()
    (ready_project / "backups" / "20261130T031500Z.tar.gz").write_bytes(b"\x1f\x8b a backup")
    return s


def not_ok(checks: dict[str, Any]) -> dict[str, tuple[Status, str]]:
    return {k: (c.status, c.detail) for k, c in checks.items() if c.status != Status.OK}


# -- the good set-up ------------------------------------------------------------------------------------------------
def test_a_good_set_up_passes_every_check(setup: Setup) -> None:
    result = Cli(setup.root)("doctor")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert [line.split()[1] for line in lines[:-1]] == list(CHECK_IDS)
    assert all(line.startswith("✓ ") for line in lines[:-1]), result.output
    assert lines[-1] == "0 failure(s), 0 warning(s): ready to send"
    assert f"s1._domainkey.{DOMAIN} and s2._domainkey.{DOMAIN} resolve as SendGrid lists" in result.output
    assert "4 DNS lookup(s) of 10" in result.output  # two includes, and the a and mx in fastmail's record
    # what was asked, and where
    assert {"/v3/whitelabel/domains", "/v3/user/webhooks/event/settings/all",
            "/v3/user/webhooks/event/settings/signed/77d4a5da-7015-11ed-a1eb-0242ac120002"} <= \
        set(setup.fake.account_requests)
    assert (f"_dmarc.{DOMAIN}", "TXT") in setup.zone.questions and (HOST, "A") in setup.zone.questions


def test_json_prints_every_check_and_exits_1_on_a_failure(setup: Setup) -> None:
    setup.zone.drop(f"_dmarc.{DOMAIN}", "TXT")
    result = Cli(setup.root)("doctor", "--json")
    assert result.exit_code == 1
    data = json.loads(result.output)
    assert list(data) == ["checks"]
    assert [c["check"] for c in data["checks"]] == list(CHECK_IDS)
    for c in data["checks"]:
        assert set(c) == {"check", "status", "detail", "fix"}
        assert c["status"] in ("ok", "warn", "fail") and isinstance(c["detail"], str) and c["detail"]
        assert (c["fix"] is None) == (c["status"] == "ok")
    assert [c["check"] for c in data["checks"] if c["status"] != "ok"] == ["dmarc"]


# -- the sending domain ---------------------------------------------------------------------------------------------
def test_a_missing_dkim_record_is_named_with_the_record_to_add(setup: Setup) -> None:
    setup.zone.drop(f"s2._domainkey.{DOMAIN}", "CNAME")
    setup.zone.set(f"s1._domainkey.{DOMAIN}", "CNAME", "s1._domainkey.u9.wl.sendgrid.net")
    checks = setup.run()
    assert not_ok(checks).keys() == {"dkim"}
    dkim = checks["dkim"]
    assert dkim.status == Status.FAIL
    assert dkim.detail == (f"s1._domainkey.{DOMAIN} CNAME is s1._domainkey.u9.wl.sendgrid.net, SendGrid expects "
                           f"s1._domainkey.u7.wl.sendgrid.net; s2._domainkey.{DOMAIN} has no CNAME record")
    assert dkim.fix == ("at your registrar, add (or correct) type CNAME, host s1._domainkey, value "
                        "s1._domainkey.u7.wl.sendgrid.net; and type CNAME, host s2._domainkey, value "
                        "s2._domainkey.u7.wl.sendgrid.net")


def test_a_missing_return_path_fails(setup: Setup) -> None:
    setup.zone.drop(f"em1234.{DOMAIN}", "CNAME")
    checks = setup.run()
    assert not_ok(checks) == {"return-path": (Status.FAIL, f"em1234.{DOMAIN} has no CNAME record")}
    assert "u7.wl.sendgrid.net" in checks["return-path"].fix


def test_a_domain_not_authenticated_at_sendgrid(setup: Setup) -> None:
    setup.fake.domains = [authenticated_domain("otherletters.net")]
    checks = setup.run()
    assert checks["sender-domain"].status == Status.FAIL
    assert checks["sender-domain"].detail.startswith(f"{DOMAIN} (the From address's domain) is not authenticated")
    assert "Sender Authentication" in checks["sender-domain"].fix
    assert checks["dkim"].status == checks["return-path"].status == Status.WARN  # nothing to compare with
    setup.fake.domains = [authenticated_domain(DOMAIN, valid=False)]
    assert setup.run()["sender-domain"].detail == f"{DOMAIN} is set up at SendGrid but not verified yet"


def test_dmarc_missing_gives_a_starter_record(setup: Setup) -> None:
    setup.zone.drop(f"_dmarc.{DOMAIN}", "TXT")
    dmarc = setup.run()["dmarc"]
    assert dmarc.status == Status.FAIL
    assert dmarc.detail.startswith(f"no DMARC record at _dmarc.{DOMAIN}")
    assert dmarc.fix == (f"at your registrar, add a TXT record at _dmarc.{DOMAIN} (host `_dmarc`): "
                         f"v=DMARC1; p=none; rua=mailto:hello@{DOMAIN}")
    setup.zone.set(f"_dmarc.{DOMAIN}", "TXT", "v=DMARC1; rua=mailto:hello@micromoments.net")
    assert "has no valid policy" in setup.run()["dmarc"].detail


def test_a_subdomain_sender_uses_the_organisational_domain(setup: Setup) -> None:
    """From letters@news.micromoments.net: SendGrid's micromoments.net covers it, and DMARC falls back to
    _dmarc.micromoments.net (the Public Suffix List's organisational domain)."""
    config = setup.root / "newsletter.yaml"
    config.write_text(config.read_text().replace(f"letters@{DOMAIN}", f"letters@news.{DOMAIN}"))
    setup.zone.set(f"_dmarc.{DOMAIN}", "TXT", "v=DMARC1; p=quarantine")
    setup.zone.set(f"news.{DOMAIN}", "MX", "10 in1-smtp.messagingengine.com")
    checks = setup.run()
    assert not_ok(checks) == {}
    assert checks["dmarc"].detail == f"_dmarc.{DOMAIN}: p=quarantine"
    assert (f"_dmarc.news.{DOMAIN}", "TXT") in setup.zone.questions


def test_spf_with_eleven_lookups_warns(setup: Setup) -> None:
    includes = [f"s{i}.spf.test" for i in range(11)]
    for name in includes:
        setup.zone.set(name, "TXT", "v=spf1 ip4:192.0.2.0/24 -all")
    setup.zone.set(DOMAIN, "TXT", "v=spf1 " + " ".join(f"include:{n}" for n in includes) + " ~all")
    spf = setup.run()["spf"]
    assert (spf.status, spf.detail) == (Status.WARN, f"{DOMAIN}'s SPF record needs 11 DNS lookups; receivers "
                                                     "stop at 10")
    setup.zone.set(DOMAIN, "TXT", "v=spf1 " + " ".join(f"include:{n}" for n in includes[:10]) + " ~all")
    assert setup.run()["spf"].detail == f"one SPF record at {DOMAIN}, 10 DNS lookup(s) of 10"
    setup.zone.set(DOMAIN, "TXT", "v=spf1 include:sendgrid.net ~all", "v=spf1 mx -all")
    assert setup.run()["spf"].detail == f"{DOMAIN} has 2 SPF records: receivers treat that as an error"
    setup.zone.set(DOMAIN, "TXT", "v=spf1 mx redirect=_spf.loop.test")
    setup.zone.set("_spf.loop.test", "TXT", f"v=spf1 include:{DOMAIN} -all")
    spf = setup.run()["spf"]
    assert (spf.status, spf.detail) == (Status.WARN, f"{DOMAIN}'s SPF record: include loop through {DOMAIN}")


def test_reply_to_without_mx_fails(setup: Setup) -> None:
    setup.zone.drop(DOMAIN, "MX")
    checks = setup.run()
    assert not_ok(checks) == {"reply-mx": (Status.FAIL, f"{DOMAIN} has no MX record: replies to hello@{DOMAIN} "
                                                        "cannot be delivered")}


# -- the public URL -------------------------------------------------------------------------------------------------
def test_base_url_must_answer_over_https(setup: Setup, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SSL_CERT_FILE")  # the test CA is no longer trusted
    assert "the HTTPS certificate is not valid" in setup.run()["base-url"].detail
    config = setup.root / "newsletter.yaml"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]  # nothing listens there once closed
    config.write_text(config.read_text().replace(setup.base_url, f"https://{HOST}:{closed}"))
    base = setup.run()["base-url"]
    assert (base.status, base.detail.split(" (")[0]) == (Status.FAIL, f"nothing answers at https://{HOST}:{closed}"
                                                                      "/healthz")
    config.write_text(config.read_text().replace(f"https://{HOST}:{closed}", f"http://{HOST}"))
    assert setup.run()["base-url"].detail.endswith("readers' unsubscribe links must start with https://")


# -- SendGrid's settings --------------------------------------------------------------------------------------------
def test_webhook_off_wrong_url_or_missing_events(setup: Setup) -> None:
    url = f"{setup.base_url}/webhooks/sendgrid"
    setup.fake.webhooks = [event_webhook(url, enabled=False, public_key=setup.key)]
    assert setup.run()["webhook"].detail == f"the Event Webhook to {url} is off"
    setup.fake.webhooks = [event_webhook("https://old.example.net/hooks", public_key=setup.key)]
    checks = setup.run()
    assert checks["webhook"].detail.startswith(f"no Event Webhook posts to {url} (it posts to "
                                               "https://old.example.net/hooks)")
    assert checks["webhook-signed"].status == Status.WARN
    setup.fake.webhooks = [event_webhook(url, public_key=setup.key, off=("bounce", "group_unsubscribe", "open"))]
    webhook = setup.run()["webhook"]
    assert (webhook.status, webhook.fix) == (Status.FAIL, "tick Bounced, Group Unsubscribes in SendGrid > Settings > "
                                                          "Mail Settings > Event Webhook")
    setup.fake.webhooks = [event_webhook(url, public_key=setup.key, off=("open", "click"))]
    assert setup.run()["webhook"].status == Status.WARN  # only `stats` misses them
    setup.fake.webhooks = []
    assert setup.run()["webhook"].detail.endswith("(there is none): bounces and unsubscribes at SendGrid never "
                                                  "reach the ledger")


def test_the_older_single_webhook_endpoint_is_read_too(setup: Setup) -> None:
    setup.fake.webhooks_all_endpoint = False
    checks = setup.run()
    assert not_ok(checks) == {}
    assert "/v3/user/webhooks/event/settings" in setup.fake.account_requests


def test_webhook_unsigned_or_with_another_key(setup: Setup, monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"{setup.base_url}/webhooks/sendgrid"
    setup.fake.webhooks = [event_webhook(url)]
    signed = setup.run()["webhook-signed"]
    assert (signed.status, signed.detail) == (Status.FAIL, "the Event Webhook is not signed: `serve` accepts only "
                                                           "signed events, so none arrive")
    setup.fake.webhooks = [event_webhook(url, public_key=setup.key)]
    monkeypatch.setenv("SENDGRID_WEBHOOK_PUBLIC_KEY", public_key())
    assert setup.run()["webhook-signed"].detail.startswith("SENDGRID_WEBHOOK_PUBLIC_KEY is not the key SendGrid")
    pem = "-----BEGIN PUBLIC KEY-----\n" + setup.key[:40] + "\n" + setup.key[40:] + "\n-----END PUBLIC KEY-----\n"
    monkeypatch.setenv("SENDGRID_WEBHOOK_PUBLIC_KEY", pem)  # the same key, pasted with its armour
    assert setup.run()["webhook-signed"].status == Status.OK
    monkeypatch.delenv("SENDGRID_WEBHOOK_PUBLIC_KEY")
    assert setup.run()["webhook-signed"].detail == "SENDGRID_WEBHOOK_PUBLIC_KEY is not set: `serve` refuses every event"


def test_key_scopes_missing_or_key_refused(setup: Setup, monkeypatch: pytest.MonkeyPatch) -> None:
    setup.fake.scopes = ["mail.send", "suppression.read"]
    key = setup.run()["api-key"]
    assert (key.status, key.detail) == (Status.FAIL, "the API key lacks Suppressions (write), Mail Batch, "
                                                     "Scheduled Sends")
    monkeypatch.setenv("SENDGRID_API_KEY", "SG.revoked")
    checks = setup.run()
    assert checks["api-key"].detail.startswith("SendGrid refused the API key (401)")
    assert {checks[k].status for k in ("sender-domain", "webhook", "webhook-signed")} == {Status.WARN}
    monkeypatch.delenv("SENDGRID_API_KEY")
    checks = setup.run()
    assert (checks["api-key"].status, checks["api-key"].detail) == (Status.FAIL, "SENDGRID_API_KEY is not set")
    assert checks["dkim"].detail == "not checked: SENDGRID_API_KEY is not set"


# -- this machine ---------------------------------------------------------------------------------------------------
def test_short_or_missing_secret_fails(setup: Setup, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NEWSLETTER_SECRET", "x" * 31)
    checks = setup.run()
    assert not_ok(checks) == {"secret": (Status.FAIL, "NEWSLETTER_SECRET has 31 characters; it needs at least 32")}
    monkeypatch.delenv("NEWSLETTER_SECRET")
    assert setup.run()["secret"].status == Status.FAIL


def test_subscribers_tracked_or_not_ignored_by_git(setup: Setup) -> None:
    setup.git("add", "-f", "subscribers/subscribers.csv")
    checks = setup.run()
    assert not_ok(checks) == {"list-private": (Status.FAIL, "git tracks readers' data or secrets: "
                                                            "subscribers/subscribers.csv")}
    assert checks["list-private"].fix.startswith("git rm -r --cached subscribers .env")
    setup.git("rm", "-q", "--cached", "subscribers/subscribers.csv")
    (setup.root / ".gitignore").write_text("build/\n")
    (setup.root / "subscribers" / "README.md").write_text("readers' data: never in git\n")  # may be tracked
    detail = setup.run()["list-private"].detail
    assert detail == (".gitignore does not cover .env, subscribers/subscribers.csv, subscribers/unsubscribes.csv: "
                      "one `git add -A` would publish them")


def test_no_git_repository_warns(setup: Setup) -> None:
    subprocess.run(["rm", "-rf", str(setup.root / ".git")], check=True)
    private = setup.run()["list-private"]
    assert (private.status, private.detail) == (Status.WARN, "this folder is not in a git repository: nothing to "
                                                             "check")


def test_no_recent_backup_warns(setup: Setup) -> None:
    backup = setup.root / "backups" / "20261130T031500Z.tar.gz"
    old = backup.stat().st_mtime - 8 * 86400
    os.utime(backup, (old, old))
    checks = setup.run()
    assert not_ok(checks) == {"backup": (Status.WARN, "the newest backup, backups/20261130T031500Z.tar.gz, is 8 days "
                                                      "old")}
    backup.unlink()
    result = Cli(setup.root)("doctor")
    assert result.exit_code == 0  # a warning is not a failure
    assert "! backup         no backup in backups/" in result.output


# -- no network ------------------------------------------------------------------------------------------------------
def test_without_a_network_dns_and_http_checks_warn(setup: Setup, monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    monkeypatch.setenv("NEWSLETTER_NAMESERVER", f"127.0.0.1:{dead}")  # nothing answers DNS (as with no network)
    monkeypatch.setenv("SENDGRID_API_URL", f"http://127.0.0.1:{dead}")  # nor HTTP
    report = run_doctor(setup.root, dns_timeout=0.2)  # the one DNS timeout this costs, shortened
    statuses = {c.check: (c.status, c.detail) for c in report.checks}
    offline = {"sender-domain", "dkim", "return-path", "dmarc", "spf", "reply-mx", "base-url", "webhook",
               "webhook-signed", "api-key"}
    assert {k: v for k, v in statuses.items() if k in offline} == {k: (Status.WARN, NO_NETWORK) for k in offline}
    assert {statuses[k][0] for k in ("secret", "list-private", "backup")} == {Status.OK}
    assert not report.failed  # exit 0
    assert setup.fake.account_requests == []


def test_a_resolver_blind_to_the_internet_counts_as_no_network(setup: Setup) -> None:
    """A sandbox's or a captive portal's DNS says NXDOMAIN to everything: not a set-up with every record missing."""
    setup.zone.records.clear()
    checks = setup.run()
    dns_checks = {"dkim", "return-path", "dmarc", "spf", "reply-mx", "base-url"}
    assert not_ok(checks) == {k: (Status.WARN, NO_NETWORK) for k in dns_checks}
    assert setup.zone.questions == [("sendgrid.net", "TXT")]  # asked once, then nothing more


def test_a_malformed_nameserver_is_a_usage_error(setup: Setup, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NEWSLETTER_NAMESERVER", "dns.example.net:53")
    result = Cli(setup.root)("doctor")
    assert result.exit_code == 2
    assert "NEWSLETTER_NAMESERVER='dns.example.net:53' is not HOST:PORT with an IP address" in result.output


# -- .env beside newsletter.yaml ------------------------------------------------------------------------------------
def test_env_file_is_loaded_without_overriding_and_must_be_private(setup: Setup,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("NEWSLETTER_SECRET", "SENDGRID_WEBHOOK_PUBLIC_KEY"):
        monkeypatch.setenv(name, "")  # so that what .env loads is undone after the test
        monkeypatch.delenv(name)
    monkeypatch.setenv("SENDGRID_API_KEY", API_KEY)
    env_file = setup.root / ".env"
    env_file.write_text(f"NEWSLETTER_SECRET={SECRET}\nSENDGRID_WEBHOOK_PUBLIC_KEY={setup.key}\n"
                        "SENDGRID_API_KEY=SG.from-the-file\n")
    env_file.chmod(0o644)
    result = Cli(setup.root)("doctor", "--json")
    checks = {c["check"]: c for c in json.loads(result.output)["checks"]}
    assert os.environ["NEWSLETTER_SECRET"] == SECRET  # loaded when the root was resolved
    assert os.environ["SENDGRID_API_KEY"] == API_KEY  # the environment wins over .env
    assert checks["webhook-signed"]["status"] == checks["api-key"]["status"] == "ok"
    assert (checks["secret"]["status"], checks["secret"]["fix"]) == ("warn", "chmod 600 .env")
    env_file.chmod(0o600)
    assert setup.run()["secret"].status == Status.OK
    assert load_env_file(setup.root) is False  # once per process
    assert resolve_root(setup.root) == setup.root


# -- the fake's answers keep SendGrid's published shapes ------------------------------------------------------------
def test_the_fake_account_answers_in_sendgrids_shapes() -> None:
    domains = json.loads((DATA / "whitelabel_domains.json").read_text())["response_200"]
    hooks = json.loads((DATA / "event_webhook_settings.json").read_text())["all"]["response_200_two_webhooks"]
    made = authenticated_domain(DOMAIN)
    assert set(made) == set(domains[0]) and set(made["dns"]) == set(domains[0]["dns"])
    assert all(set(made["dns"][k]) == set(domains[0]["dns"][k]) for k in made["dns"])
    assert set(event_webhook("https://x.test/hook", public_key="k")) == \
        set(hooks["webhooks"][0]) - {"oauth_client_id", "oauth_token_url"}
