"""eml.py: the complete RFC 5322 message of an issue as one reader receives it (`render --eml`)."""

from __future__ import annotations

import email
import email.policy
import re
from pathlib import Path

from conftest import SEED_SLUG, Cli, seed_paragraphs


def test_eml_is_a_complete_message(ready_project: Path) -> None:
    cli = Cli(ready_project)
    result = cli("render", "--eml")
    assert result.exit_code == 0, result.output
    raw = (ready_project / "build" / SEED_SLUG / "email.eml").read_bytes()
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert msg["From"] == "Micro Moments <letters@micromoments.net>"
    assert msg["Reply-To"] == "hello@micromoments.net"
    assert msg["To"] == "Ada <reader@example.net>"
    assert msg["Subject"] == "Micro moments of connection"
    assert msg["Date"] and msg["Message-ID"].endswith("@micromoments.net>")
    assert re.fullmatch(r"<https://letters\.micromoments\.net/unsubscribe/u1\.[\w.-]+>", str(msg["List-Unsubscribe"]))
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert msg.get_content_type() == "multipart/alternative"
    parts = list(msg.iter_parts())
    assert [p.get_content_type() for p in parts] == ["text/plain", "text/html"]
    assert all(p.get_content_charset() == "utf-8" for p in parts)
    text, page = parts[0].get_content(), parts[1].get_content()
    unsub = str(msg["List-Unsubscribe"]).strip("<>")
    assert f"Unsubscribe: {unsub}" in text and f'href="{unsub}"' in page
    flat = " ".join(text.split())
    for paragraph in seed_paragraphs()[:14]:  # title and essay (this config's pitch is a short one)
        assert paragraph in flat
    assert all(len(line) <= 998 for line in raw.split(b"\r\n"))
