"""Spam score of a message with SpamAssassin, offline (local tests only, no network look-ups).

Most of SpamAssassin's time goes into loading its rules (2 to 3 s), not into scoring a message (about 0.5 s). So
a command that will need a score starts `spamd` early (`start_daemon`), on a private UNIX socket, before it has
the message: the rules load while the command renders and reads its list, and `spamc` asks for the score once
the message exists. Without spamd and spamc, `spamassassin -t` scores the message.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from .errors import NewsletterError
from .files import write_atomic

ERROR_AT = 5.0
WARN_AT = 2.0
_SCORE = re.compile(r"Content analysis details:\s+\((-?[\d.]+) points?, (-?[\d.]+) required\)")
_RULE = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s+([A-Z0-9_]+)\s+(.*)$")
MAX_MESSAGE = 4_000_000  # spamc's own limit is 500 KB: above it, it would answer without scoring
# spamd runs under a small shell that stops it, and removes its folder, when our end of the shell's stdin closes:
# when this process exits, however it exits (kill -9 included), no daemon is left behind.
_WATCHED = 'dir=$1; shift; spamd "$@" & pid=$!; read -r _; kill -TERM "$pid" 2>/dev/null; wait "$pid"; rm -rf "$dir"'


@dataclass
class SpamScore:
    """SpamAssassin's verdict: the score and the rules that fired (points, name, description)."""

    score: float
    rules: list[tuple[float, str, str]] = field(default_factory=list)


def spamassassin_available() -> bool:
    """Whether the `spamassassin` command is installed."""
    return shutil.which("spamassassin") is not None


def _cache_path(message: bytes, cache_dir: Path) -> Path:
    return cache_dir / f"{hashlib.sha256(message).hexdigest()}.json"


def cached(message: bytes, cache_dir: Path) -> SpamScore | None:
    """The remembered verdict on these exact bytes, if any."""
    try:
        data = json.loads(_cache_path(message, cache_dir).read_text(encoding="utf-8"))
        return SpamScore(float(data["score"]), [(float(p), str(n), str(t)) for p, n, t in data["rules"]])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def cached_score(message: bytes, cache_dir: Path, timeout: float = 120.0) -> SpamScore:
    """score_message, remembered by the SHA-256 of the exact bytes scored: `check` fills the cache and `send`
    of the same message finds the verdict there instead of running SpamAssassin (seconds) again."""
    found = cached(message, cache_dir)
    if found is not None:
        return found
    result = score_message(message, timeout)
    with contextlib.suppress(NewsletterError):  # a cache that cannot be written costs time, nothing else
        write_atomic(_cache_path(message, cache_dir), json.dumps({"score": result.score, "rules": result.rules}),
                     what="a spam score")
    return result


def scored_since(cache_dir: Path, sources: list[Path]) -> bool:
    """Whether a verdict was cached after the last change to any of `sources` (files or folders of files): when
    not, the message about to be rendered is most likely new, and worth starting SpamAssassin for at once."""
    try:
        newest_verdict = max((p.stat().st_mtime for p in cache_dir.glob("*.json")), default=None)
    except OSError:
        return False
    if newest_verdict is None:
        return False
    for source in sources:
        files = source.rglob("*") if source.is_dir() else [source]
        with contextlib.suppress(OSError):
            if any(f.stat().st_mtime > newest_verdict for f in files):
                return False
    return True


def score_message(message: bytes, timeout: float = 120.0) -> SpamScore:
    """SpamAssassin's score of an RFC 5322 message (local rules only): through the spamd this process started
    (or starts now), else `spamassassin -L -t`."""
    daemon = _daemon if _daemon is not None else start_daemon()
    if daemon is not None:
        try:
            return _parse(daemon.score(message, timeout))
        except (RuntimeError, OSError, subprocess.TimeoutExpired):
            pass  # spamd could not run here: spamassassin itself may
        finally:
            stop_daemon()  # the one message this command scores
    proc = subprocess.run(["spamassassin", "-L", "-t"], input=message, capture_output=True, timeout=timeout,
                          check=False)
    if not _SCORE.search(proc.stdout.decode("utf-8", "replace")):
        raise RuntimeError(f"spamassassin gave no score (exit {proc.returncode}): "
                           f"{proc.stderr.decode('utf-8', 'replace')[-300:]}")
    return _parse(proc.stdout)


def _parse(report: bytes) -> SpamScore:
    """The score and rules of SpamAssassin's report (`spamassassin -t` and `spamc -R` print the same one)."""
    out = report.decode("utf-8", "replace")
    found = _SCORE.search(out)
    if not found:
        raise RuntimeError(f"SpamAssassin gave no score: {out[-300:]!r}")
    rules: list[tuple[float, str, str]] = []
    table = out[found.end():].split("\n")
    for line in table:
        m = _RULE.match(line)
        if m:
            rules.append((float(m.group(1)), m.group(2), m.group(3).strip()))
        elif rules and line.startswith(" " * 20) and line.strip():
            points, name, text = rules[-1]
            rules[-1] = (points, name, f"{text} {line.strip()}")
    return SpamScore(score=float(found.group(1)), rules=rules)


class SpamDaemon:
    """A private spamd (local rules only, one child) on a UNIX socket in a 0700 temporary folder."""

    def __init__(self) -> None:
        self.folder = tempfile.mkdtemp(prefix="newsletter-spamd-")
        self.socket = os.path.join(self.folder, "spamd.sock")
        args = ["-L", "-x", f"--socketpath={self.socket}", "--min-children=1", "--max-children=1",
                "--syslog=stderr"]
        self.proc = subprocess.Popen(["sh", "-c", _WATCHED, "sh", self.folder, *args], stdin=subprocess.PIPE,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)

    def score(self, message: bytes, timeout: float) -> bytes:
        """spamc's report on `message`; raises RuntimeError when spamd did not answer."""
        deadline = time.monotonic() + timeout
        while not os.path.exists(self.socket):  # spamd binds its socket early, then loads the rules
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("spamd did not start")
            time.sleep(0.02)
        # -x: an error is an error (without it spamc passes the message through unscored and exits 0)
        proc = subprocess.run(["spamc", "-x", "-R", "-U", self.socket, "-s", str(MAX_MESSAGE)], input=message,
                              capture_output=True, timeout=max(deadline - time.monotonic(), 1.0), check=False)
        if proc.returncode != 0 or not _SCORE.search(proc.stdout.decode("utf-8", "replace")):
            raise RuntimeError(f"spamc gave no score (exit {proc.returncode}): "
                               f"{proc.stderr.decode('utf-8', 'replace')[-300:]}")
        return proc.stdout

    def stop(self) -> None:
        """Stop spamd (and its child) and remove the folder."""
        with contextlib.suppress(OSError):
            if self.proc.stdin is not None:
                self.proc.stdin.close()  # the watching shell stops spamd
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.folder, ignore_errors=True)


_daemon: SpamDaemon | None = None
_daemon_lock = threading.Lock()


def start_daemon() -> SpamDaemon | None:
    """Start this process's spamd (once) if spamd and spamc are installed; it loads its rules meanwhile."""
    global _daemon
    with _daemon_lock:
        if _daemon is None and shutil.which("spamd") and shutil.which("spamc"):
            try:
                _daemon = SpamDaemon()
            except OSError:
                _daemon = None
        return _daemon


def stop_daemon() -> None:
    """Stop this process's spamd, if it started one (the score was cached after all, or it has scored)."""
    global _daemon
    with _daemon_lock:
        daemon, _daemon = _daemon, None
    if daemon is not None:
        daemon.stop()
