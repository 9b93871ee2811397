"""Shared fixtures: a copy of the sample newsletter per test, the CLI runner, a clean environment."""

from __future__ import annotations

import csv
import json
import os
import shutil
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from click.testing import CliRunner, Result
from fake_sendgrid import API_KEY, FakeSendGrid

from newsletter.cli import main
from newsletter.ledger import Event, Kind, Ledger, Recording

REPO = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data"
SEED_SLUG = "micro-moments-of-connection"
T = TypeVar("T")

# This machine sets PYTHONDONTWRITEBYTECODE: pytest would then rewrite every test module's asserts on every run
# (4 s of CPU) and each `newsletter` child would compile the package again. The suite has a CPU budget: keep the
# (git-ignored) __pycache__ folders for the test modules imported after this one, and for the children.
sys.dont_write_bytecode = False
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)

# The tests' temporary folders live in memory where the machine has a tmpfs at /dev/shm: a run makes and removes
# some 12,000 files, which costs 6 s of CPU on ext4 (the suite's budget again). Faults of a full disk mount their
# own tmpfs; nothing here depends on the disk under the temporary folders.
if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK):
    os.environ.setdefault("PYTEST_DEBUG_TEMPROOT", "/dev/shm")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--update-golden", action="store_true", help="Rewrite tests/golden/ from the current output.")
    parser.addoption("--cpu-report", action="store_true", help="List the tests that spend the most CPU.")


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # No test may reach the real SendGrid API or depend on the developer's shell.
    for name in ("SENDGRID_API_KEY", "SENDGRID_API_URL", "NEWSLETTER_SECRET", "NEWSLETTER_ROOT",
                 "NEWSLETTER_DEBUG", "NEWSLETTER_NAMESERVER", "SENDGRID_WEBHOOK_PUBLIC_KEY",
                 "SSL_CERT_FILE", "HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.delenv(name, raising=False)


def new_project(root: Path, config: str | None = None) -> Path:
    """At `root`: a copy of the repository's newsletter (issues, layouts, an empty subscribers/), with `config` as
    newsletter.yaml (default: the repository's, SpamAssassin off)."""
    root.mkdir(parents=True)
    shutil.copytree(REPO / "issues", root / "issues")
    shutil.copytree(REPO / "layouts", root / "layouts")
    (root / "subscribers").mkdir()
    # SpamAssassin takes seconds a message: only the tests about spam scores turn it back on (spam_on below).
    text = (REPO / "newsletter.yaml").read_text(encoding="utf-8") + NO_SPAM if config is None else config
    (root / "newsletter.yaml").write_text(text, encoding="utf-8")
    return root


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A copy of the repository's newsletter (config, issues, layouts) in a temp folder."""
    return new_project(tmp_path / "letters")


NO_SPAM = "check:\n  spam: false\n"


def spam_on(root: Path) -> None:
    """Score messages with SpamAssassin in this project (newsletter.yaml without `check: {spam: false}`)."""
    path = root / "newsletter.yaml"
    path.write_text(path.read_text(encoding="utf-8").replace(NO_SPAM, ""), encoding="utf-8")


FILLED_CONFIG = """\
name: Micro Moments
language: en
base_url: https://letters.micromoments.net
sender: {name: Micro Moments, email: letters@micromoments.net}
reply_to: hello@micromoments.net
postal_address: "12 Quiet Lane, Bristol BS1 4AA, UK"
workshops:
  from-trauma-to-triumph:
    title: From Trauma to Triumph
    headline: "Triumph After Trauma: An Invitation to Heal and Grow"
    pitch: |
      For many of us, trauma can cloud these moments of connection.
    register_url: https://micromoments.net/workshops/from-trauma-to-triumph
    date: "Saturday 9 January 2027"
    price: "£85"
    next: betrayal-forgiveness-redemption
  betrayal-forgiveness-redemption:
    title: "Betrayal, Forgiveness, and Redemption: A Path of Compassionate Self-Discovery"
check:
  spam: false
"""


@pytest.fixture
def ready_project(project: Path) -> Path:
    """The sample newsletter with every placeholder filled in: `check` passes."""
    (project / "newsletter.yaml").write_text(FILLED_CONFIG, encoding="utf-8")
    return project


class Cli:
    """Runs `newsletter ...` in process, as a user would type it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.runner = CliRunner()

    def __call__(self, *args: str, input: str | None = None, root: bool = True) -> Result:
        argv = list(args)
        if root:
            # --root goes after the subcommand name (and after `subscribers <verb>`)
            at = 2 if argv and argv[0] == "subscribers" else 1
            argv[at:at] = ["--root", str(self.root)]
        return self.runner.invoke(main, argv, input=input, catch_exceptions=False)


@pytest.fixture
def cli(project: Path) -> Cli:
    return Cli(project)


def seed_paragraphs() -> list[str]:
    """The seed essay's paragraphs, without the export's trailing `0`."""
    text = DATA / "micro-moments.txt"  # a copy of ../shared/seed/: the project depends on nothing outside it
    paras = [" ".join(p.split()) for p in text.read_text(encoding="utf-8").split("\n\n") if p.strip()]
    if paras[-1].endswith("0"):
        paras[-1] = paras[-1][:-1].strip()
    return [p for p in paras if p]


def record(path: Path, email: str, event: str, source: str = "cli", detail: str = "", at: str = "",
           signed_up: str = "") -> Recording:
    """Record one ledger event at `path` (subscribers/unsubscribes.csv) through the ledger's one writer."""
    return Ledger(path).record([Event(email, Kind(event), at, source, detail, signed_up)])


def sent_journal(root: Path, emails: list[str], *, finished: bool = True) -> None:
    """The seed's send journal after one run that SendGrid accepted for `emails` (ended, unless not `finished`)."""
    from newsletter.journal import Journal, journal_path

    with Journal(journal_path(root, SEED_SLUG)) as j:
        j.run(readers=len(emails), resend_in_doubt=False)
        j.batch(1, emails)
        j.attempt(1, 1)
        j.ok(1, 202, "m1")
        if finished:
            j.end()


@pytest.fixture(scope="session")
def short_write_shim(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tests/shim/shortwrite.c built as an LD_PRELOAD library: a disk that fills up under one file."""
    import subprocess

    out = tmp_path_factory.mktemp("shim") / "shortwrite.so"
    source = Path(__file__).parent / "shim" / "shortwrite.c"
    subprocess.run(["gcc", "-shared", "-fPIC", "-O2", "-o", str(out), str(source), "-ldl"], check=True)
    return out


def shim_env(shim: Path, match: str, *, tear: str = "", full_file: Path | None = None) -> dict[str, str]:
    """Environment that makes writes to files whose path contains `match` come up short (see shortwrite.c)."""
    env = {"LD_PRELOAD": str(shim), "SHIM_MATCH": match}
    if tear:
        env["SHIM_TEAR"] = tear
    if full_file is not None:
        env["SHIM_FULL_FILE"] = str(full_file)
    return env


# -- export files of other tools, read as `subscribers import` reads them ------------------------------------------
def export_rows(*paths: Path) -> list[Any]:
    """Every row of the export files at `paths` (exports.read_exports, then iter_rows)."""
    from newsletter.exports import iter_rows, read_exports

    return [row for f in read_exports(list(paths)) for row in iter_rows(f)]


def export_statuses(path: Path) -> dict[str, tuple[Any, Any, str]]:
    """address -> (status kind, ledger event, time) of every row of one export file."""
    return {r.address: (r.status.kind, r.status.event, r.at) for r in export_rows(path)}


def export_refusal(*paths: Path) -> str:
    """The message with which reading the export files at `paths` is refused (fails if it is not)."""
    from newsletter.errors import SubscriberError

    with pytest.raises(SubscriberError) as caught:
        export_rows(*paths)
    return str(caught.value)


# -- sending against the fake SendGrid (tests/fake_sendgrid.py) --------------------------------------------------
SECRET = "test-secret-0123456789"


@pytest.fixture
def fake() -> Iterator[FakeSendGrid]:
    server = FakeSendGrid().start()
    yield server
    server.stop()  # fails if a body broke SendGrid's schema


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, fake: FakeSendGrid) -> dict[str, str]:
    values = {"SENDGRID_API_URL": fake.url, "SENDGRID_API_KEY": API_KEY, "NEWSLETTER_SECRET": SECRET}
    for k, v in values.items():
        monkeypatch.setenv(k, v)
    return values


def configure(root: Path, **sendgrid: object) -> None:
    settings_ = {"backoff": 0.01, "timeout": 2, "concurrency": 2, **sendgrid}
    block = "sendgrid:\n" + "".join(f"  {k}: {json.dumps(v)}\n" for k, v in settings_.items())
    path = root / "newsletter.yaml"
    path.write_text(path.read_text() + block)


def write_list(root: Path, rows: list[tuple[str, str]]) -> None:

    with open(root / "subscribers" / "subscribers.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["email", "name"])
        w.writerows(rows)


def readers(n: int, start: int = 0) -> list[tuple[str, str]]:
    return [(f"reader{i}@readers.net", f"Reader {i}") for i in range(start, start + n)]


@pytest.fixture
def sender(ready_project: Path, env: dict[str, str]) -> Cli:
    configure(ready_project)
    return Cli(ready_project)


# -- headless Chromium (Debian's), as the project's guide asks ------------------------------------------------
CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="session")
def browser() -> Iterator[object]:
    """One Chromium for the whole run (each launch costs a second of CPU), driven by Playwright."""
    if not shutil.which(CHROMIUM):
        pytest.fail("Debian's chromium is required at /usr/bin/chromium (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield b
        b.close()


# -- SendGrid's signed Event Webhook, and the web app in process -------------------------------------------------
class WebhookSigner:
    """A key pair like SendGrid's: the public half for SENDGRID_WEBHOOK_PUBLIC_KEY, the private half signs."""

    def __init__(self) -> None:
        import base64

        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ec

        self.key = ec.generate_private_key(ec.SECP256R1())
        self.public = base64.b64encode(self.key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)).decode()

    def headers(self, body: bytes, ts: int | None = None) -> dict[str, str]:
        """The signature headers SendGrid sends with `body`."""
        import base64
        import time

        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec

        stamp = str(int(time.time()) if ts is None else ts)
        sig = self.key.sign(stamp.encode() + body, ec.ECDSA(hashes.SHA256()))
        return {"X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(sig).decode(),
                "X-Twilio-Email-Event-Webhook-Timestamp": stamp, "Content-Type": "application/json"}


def wait_for(condition: Callable[[], T], timeout: float = 10.0, what: str = "the condition") -> T:
    """Poll `condition` until it gives a true value, and return that value (never a fixed sleep); fail after
    `timeout` seconds."""
    import time

    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)
    return value


# -- the suite's own cost: `pytest --cpu-report` lists the tests that spend the most CPU (theirs and their
# children's), since the suite has a CPU budget (README) ----------------------------------------------------
_CPU: list[tuple[float, str]] = []


def _cpu_now() -> float:
    import resource

    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    if not item.config.getoption("--cpu-report"):
        yield
        return
    start = _cpu_now()
    yield
    _CPU.append((_cpu_now() - start, item.nodeid))


def pytest_terminal_summary(terminalreporter: object, exitstatus: int, config: pytest.Config) -> None:
    if not config.getoption("--cpu-report") or not _CPU:
        return
    by_file: dict[str, float] = {}
    for cpu, nodeid in _CPU:
        by_file[nodeid.split("::")[0]] = by_file.get(nodeid.split("::")[0], 0.0) + cpu
    write = terminalreporter.write_line  # type: ignore[attr-defined]
    write(f"CPU in tests: {sum(c for c, _ in _CPU):.1f} s (collection and start-up not included)")
    for name, cpu in sorted(by_file.items(), key=lambda x: -x[1]):
        write(f"  {name:<55} {cpu:6.1f} s")
    for cpu, nodeid in sorted(_CPU, reverse=True)[:25]:
        write(f"  {cpu:6.2f} s  {nodeid}")


@pytest.fixture(scope="module")
def dns_server() -> Iterator[Any]:
    """A DNS server on loopback (dnslib) for a module's tests: its `Zone` holds the records it answers."""
    from helpers import serving_zone

    with serving_zone() as z:
        yield z
