"""Helpers shared by several test files. The newsletter's web side, under https://micromoments.net/letters: in
process through Starlette's TestClient on `web.create_app` (`open_app`), or as a real `newsletter serve` process
(`start_server`) for what needs a real socket or process: the log file, LD_PRELOAD shims, stalled connections,
kill -9, Chromium. A DNS zone on loopback (`serving_zone`)."""

from __future__ import annotations

import contextlib
import http.client
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from conftest import FILLED_CONFIG, SECRET, WebhookSigner, wait_for

from newsletter.ledger import ledger_path
from newsletter.tokens import make_token

__all__ = ["PREFIX", "SECRET", "App", "Server", "Zone", "free_port", "open_app", "serving_zone", "site_config",
           "start_server", "stop_server", "wait_for", "wait_for_log"]

PREFIX = "/letters"  # base_url has a path: serve answers under it
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def site_config(project: Path, extra_config: str = "") -> None:
    """newsletter.yaml: the filled-in one with base_url under /letters, plus `extra_config`."""
    (project / "newsletter.yaml").write_text(
        FILLED_CONFIG.replace("base_url: https://letters.micromoments.net",
                              f"base_url: https://micromoments.net{PREFIX}") + extra_config)


@dataclass
class Site:
    """What the app in process and the real server both offer a test."""

    root: Path
    signer: WebhookSigner

    def request(self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None,
                ) -> tuple[int, str]:
        raise NotImplementedError

    def url(self, email: str, secret: str = SECRET) -> str:
        """The path of `email`'s unsubscribe link."""
        return f"{PREFIX}/unsubscribe/{make_token(secret, email)}"

    def signed(self, body: bytes, ts: int | None = None) -> dict[str, str]:
        """The headers SendGrid signs `body` with."""
        return self.signer.headers(body, ts)

    def ledger_lines(self) -> list[str]:
        path = ledger_path(self.root)
        return path.read_text().splitlines()[1:] if path.exists() else []


@dataclass
class App(Site):
    """`web.create_app` in process, through Starlette's TestClient."""

    client: Any = None

    def request(self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None,
                ) -> tuple[int, str]:
        r = self.client.request(method, path, content=body or None, headers=headers or {})
        return r.status_code, r.text


def open_app(project: Path, monkeypatch: pytest.MonkeyPatch, *, public_key: bool = True,
             extra_config: str = "") -> App:
    """The app of `project` (configured by site_config) with NEWSLETTER_SECRET set and, with `public_key`, the
    webhook's public key; no lifespan (its workers run only where a test enters `app.client`)."""
    from starlette.testclient import TestClient

    from newsletter.web import create_app

    site_config(project, extra_config)
    signer = WebhookSigner()
    monkeypatch.setenv("NEWSLETTER_SECRET", SECRET)
    if public_key:
        monkeypatch.setenv("SENDGRID_WEBHOOK_PUBLIC_KEY", signer.public)
    else:
        monkeypatch.delenv("SENDGRID_WEBHOOK_PUBLIC_KEY", raising=False)
    return App(project, signer, TestClient(create_app(project)))


@dataclass
class Server(Site):
    """`newsletter serve` as a real process on a free port; its output goes to `log_path`."""

    port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path = Path()
    log: Any = field(default=None, repr=False)

    def request(self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None,
                ) -> tuple[int, str]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request(method, path, body=body or None, headers=headers or {})
            resp = conn.getresponse()
            return resp.status, resp.read().decode("utf-8", "replace")
        finally:
            conn.close()


# -- a DNS zone on loopback (dnslib), for `doctor` and mail authentication ----------------------------------------
class Zone:
    """Authoritative answers from a dict the test edits: (name, type) -> values; other names are NXDOMAIN.
    `port` is where serving_zone() answers."""

    port = 0

    def __init__(self) -> None:
        self.records: dict[tuple[str, str], list[str]] = {}
        self.questions: list[tuple[str, str]] = []

    def set(self, name: str, rtype: str, *values: str) -> None:
        self.records[(name, rtype)] = list(values)

    def drop(self, name: str, rtype: str) -> None:
        del self.records[(name, rtype)]

    def resolve(self, request: Any, handler: Any) -> Any:
        from dnslib import AAAA, CNAME, MX, QTYPE, RCODE, RR, TXT, A

        reply = request.reply()
        name, rtype = str(request.q.qname).rstrip(".").lower(), QTYPE[request.q.qtype]
        self.questions.append((name, rtype))
        make = {"A": A, "AAAA": AAAA, "CNAME": CNAME, "TXT": TXT,
                "MX": lambda v: MX(v.split()[1], int(v.split()[0]))}
        for value in self.records.get((name, rtype), []):
            reply.add_answer(RR(request.q.qname, QTYPE.reverse[rtype], rdata=make[rtype](value), ttl=60))
        if not reply.rr and not any(n == name for n, _ in self.records):
            reply.header.rcode = RCODE.NXDOMAIN
        return reply


@contextlib.contextmanager
def serving_zone() -> Iterator[Zone]:
    """A Zone answering on a free UDP port of 127.0.0.1 until the block ends (each stop costs a poll interval:
    one server for a module)."""
    from dnslib.server import DNSLogger, DNSServer

    zone = Zone()
    server = DNSServer(zone, address="127.0.0.1", port=0, logger=DNSLogger(
        log="-recv,-send,-request,-reply,-truncated,-data,-error", prefix=False))
    server.start_thread()
    zone.port = server.server.server_address[1]
    try:
        yield zone
    finally:
        server.server.shutdown()
        server.server.server_close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(project: Path, tmp_path: Path, extra_env: dict[str, str] | None = None, *,
                 public_key: bool = True, extra_config: str = "") -> Server:
    """`newsletter serve` on a free port, as a subprocess (so LD_PRELOAD shims apply to it); waits for /healthz.
    newsletter.yaml is written by site_config."""
    site_config(project, extra_config)
    signer = WebhookSigner()
    port = free_port()
    env = {**os.environ, "NEWSLETTER_SECRET": SECRET, **(extra_env or {})}
    if public_key:
        env["SENDGRID_WEBHOOK_PUBLIC_KEY"] = signer.public
    log_path = tmp_path / "serve.log"
    log = open(log_path, "wb")  # noqa: SIM115 - closed by stop_server
    exe = str(Path(sys.executable).parent / "newsletter")
    proc = subprocess.Popen([exe, "serve", "--root", str(project), "--port", str(port)], stdout=log,
                            stderr=subprocess.STDOUT, env=env)
    srv = Server(project, signer, port, proc, log_path, log)

    def up() -> bool:
        assert proc.poll() is None, log_path.read_text()
        try:
            return srv.request("GET", f"{PREFIX}/healthz")[0] == 200
        except OSError:
            return False

    wait_for(up, 30, "serve to start")
    return srv


def stop_server(srv: Server) -> None:
    assert srv.proc is not None
    srv.proc.terminate()
    srv.proc.wait(timeout=10)
    srv.log.close()


def wait_for_log(srv: Server, text: str, timeout: float = 10.0) -> str:
    """serve's log once it holds `text`."""
    wait_for(lambda: text in srv.log_path.read_text(errors="replace"), timeout, f"{text!r} in the log")
    return srv.log_path.read_text(errors="replace")


def run_python(code: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`code` in a Python child that imports the very `newsletter` package this test imported (PYTHONPATH), so
    under mutmut the child runs the mutant too; `env` adds to the environment (an LD_PRELOAD shim, say)."""
    import newsletter

    package_root = str(Path(newsletter.__file__).resolve().parents[1])
    full_env = {**os.environ, **(env or {})}
    full_env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH", "")) if p)
    return subprocess.run([sys.executable, "-c", code], env=full_env, capture_output=True, text=True, timeout=60)
