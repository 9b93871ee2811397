"""markdown.py: CommonMark to readable plain text (the text part of every email)."""

from __future__ import annotations

import pytest

from newsletter.markdown import _MD, to_text


@pytest.mark.parametrize(("md", "text"), [
    ("Hello *you*, see [the site](https://x.net).\n\nSecond\nline.",
     "Hello you, see the site (https://x.net).\n\nSecond line."),
    ("# Head\n\n- a\n- b\n\n1. one\n2. two", "Head\n----\n\n- a\n- b\n\n1. one\n2. two"),
    ("> quoted\n> text", "> quoted text"),
    ("![alt text](p.png)", "[alt text]"),
    ("<b>raw html</b> stays text", "<b>raw html</b> stays text"),
])
def test_markdown_to_text(md: str, text: str) -> None:
    assert to_text(_MD.parse(md)) == text
