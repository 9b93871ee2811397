"""Spam score of a message with SpamAssassin, offline (local tests only, no network look-ups)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from .errors import NewsletterError
from .files import write_atomic

ERROR_AT = 5.0
WARN_AT = 2.0
_SCORE = re.compile(r"Content analysis details:\s+\((-?[\d.]+) points?, (-?[\d.]+) required\)")
_RULE = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s+([A-Z0-9_]+)\s+(.*)$")


@dataclass
class SpamScore:
    """SpamAssassin's verdict: the score and the rules that fired (points, name, description)."""

    score: float
    rules: list[tuple[float, str, str]] = field(default_factory=list)


def spamassassin_available() -> bool:
    """Whether the `spamassassin` command is installed."""
    return shutil.which("spamassassin") is not None


def cached(message: bytes, cache_dir: Path) -> SpamScore | None:
    """The remembered verdict on these exact bytes, if any."""
    path = cache_dir / f"{hashlib.sha256(message).hexdigest()}.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return SpamScore(float(data["score"]), [(float(p), str(n), str(t)) for p, n, t in data["rules"]])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def cached_score(message: bytes, cache_dir: Path, timeout: float = 120.0) -> SpamScore:
    """score_message, remembered by the SHA-256 of the exact bytes scored: `check` fills the cache and `send`
    of the same message finds the verdict there instead of running SpamAssassin (seconds) again."""
    found = cached(message, cache_dir)
    if found is not None:
        return found
    path = cache_dir / f"{hashlib.sha256(message).hexdigest()}.json"
    result = score_message(message, timeout)
    with contextlib.suppress(NewsletterError):  # a cache that cannot be written costs time, nothing else
        write_atomic(path, json.dumps({"score": result.score, "rules": result.rules}), what="a spam score")
    return result


def score_message(message: bytes, timeout: float = 120.0) -> SpamScore:
    """Run `spamassassin -L -t` (local rules only) on an RFC 5322 message."""
    proc = subprocess.run(["spamassassin", "-L", "-t"], input=message, capture_output=True, timeout=timeout,
                          check=False)
    out = proc.stdout.decode("utf-8", "replace")
    found = _SCORE.search(out)
    if not found:
        raise RuntimeError(f"spamassassin gave no score (exit {proc.returncode}): "
                           f"{proc.stderr.decode('utf-8', 'replace')[-300:]}")
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
