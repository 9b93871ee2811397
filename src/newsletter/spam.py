"""Spam score of a message with SpamAssassin, offline (local tests only, no network look-ups)."""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass, field

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
