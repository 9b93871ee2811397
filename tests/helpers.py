"""Helpers shared by the tests that boot `newsletter serve` as a real process (what needs a real socket)."""

from __future__ import annotations

import base64
import http.client
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from conftest import FILLED_CONFIG
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from newsletter.ledger import ledger_path
from newsletter.tokens import make_token

SECRET = "serve-test-secret"
PREFIX = "/letters"  # base_url has a path: serve answers under it


@dataclass
class Server:
    root: Path
    port: int
    proc: subprocess.Popen
    key: ec.EllipticCurvePrivateKey
    log_path: Path

    def request(self, method: str, path: str, body: bytes = b"", headers: dict | None = None,
                ) -> tuple[int, str]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request(method, path, body=body or None, headers=headers or {})
            resp = conn.getresponse()
            return resp.status, resp.read().decode("utf-8", "replace")
        finally:
            conn.close()

    def url(self, email: str, secret: str = SECRET) -> str:
        return f"{PREFIX}/unsubscribe/{make_token(secret, email)}"

    def signed(self, body: bytes, ts: int | None = None) -> dict[str, str]:
        ts = int(time.time()) if ts is None else ts
        sig = self.key.sign(str(ts).encode() + body, ec.ECDSA(hashes.SHA256()))
        return {"X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(sig).decode(),
                "X-Twilio-Email-Event-Webhook-Timestamp": str(ts), "Content-Type": "application/json"}

    def ledger_lines(self) -> list[str]:
        path = ledger_path(self.root)
        return path.read_text().splitlines()[1:] if path.exists() else []


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(project: Path, tmp_path: Path, extra_env: dict[str, str] | None = None, *,
                 public_key: bool = True, extra_config: str = "") -> Server:
    """`newsletter serve` on a free port, as a subprocess (so LD_PRELOAD shims apply to it); waits for /healthz.
    newsletter.yaml is the filled-in one with base_url under /letters, plus `extra_config`."""
    (project / "newsletter.yaml").write_text(
        FILLED_CONFIG.replace("base_url: https://letters.micromoments.net",
                              f"base_url: https://micromoments.net{PREFIX}") + extra_config)
    key = ec.generate_private_key(ec.SECP256R1())
    public = base64.b64encode(key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)).decode()
    port = free_port()
    env = {**os.environ, "NEWSLETTER_SECRET": SECRET, **(extra_env or {})}
    if public_key:
        env["SENDGRID_WEBHOOK_PUBLIC_KEY"] = public
    log_path = tmp_path / "serve.log"
    log = open(log_path, "wb")  # noqa: SIM115 - closed by stop_server
    exe = str(Path(sys.executable).parent / "newsletter")
    proc = subprocess.Popen([exe, "serve", "--root", str(project), "--port", str(port)], stdout=log,
                            stderr=subprocess.STDOUT, env=env)
    srv = Server(project, port, proc, key, log_path)
    srv.log = log  # type: ignore[attr-defined]
    deadline = time.monotonic() + 30
    while True:
        try:
            if srv.request("GET", f"{PREFIX}/healthz")[0] == 200:
                break
        except OSError:
            pass
        assert proc.poll() is None, log_path.read_text()
        assert time.monotonic() < deadline, "serve did not start"
        time.sleep(0.1)
    return srv


def stop_server(srv: Server) -> None:
    srv.proc.terminate()
    srv.proc.wait(timeout=10)
    srv.log.close()  # type: ignore[attr-defined]




def wait_for(condition: Callable[[], object], timeout: float = 10.0, what: str = "the condition") -> None:
    """Poll `condition` until it is true (never a fixed sleep); fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


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
