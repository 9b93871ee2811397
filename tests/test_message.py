"""message.py called directly: the encoded request of the bulk path is the dict request, byte for byte in meaning."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from conftest import SEED_SLUG
from hypothesis import example, given, settings
from hypothesis import strategies as st

from newsletter.build import load
from newsletter.message import MessageBuilder
from newsletter.render import ALL_TAGS, FIRST_HTML_TAG, FIRST_TEXT_TAG, TOKEN_TAG, RenderedEmail, render_issue

NAMES = st.sampled_from(["", "Ada", "Ada Lovelace", 'Mary-Kate "MK" Olsen, Jr.', "Dr. Jane Doe", "Zoë  Ñúñez",
                         "O'Brien <b>&</b>", "back\\slash", "tab\there", "Prof.", "  ", "名前 太郎", "a;b,c"])


@pytest.fixture(scope="module")
def seed(tmp_path_factory: pytest.TempPathFactory) -> tuple[object, RenderedEmail]:
    from conftest import FILLED_CONFIG, new_project

    root = new_project(tmp_path_factory.mktemp("message") / "letters", FILLED_CONFIG)
    config, issue = load(Path(root), SEED_SLUG)
    return config, render_issue(config, issue)


@settings(max_examples=50, deadline=None)
@given(readers=st.lists(st.tuples(st.sampled_from(["ada@readers.net", "zoë@exämple.net", "b+c@x.org"]), NAMES,
                                  NAMES), min_size=1, max_size=12),
       greeting=st.sampled_from(["Dear {first_name},", "Hello {name}!", "Hi,", "Dear {first_name} ({name}),"]),
       tags=st.sets(st.sampled_from(ALL_TAGS)), mailto=st.booleans())
@example(readers=[("ada@readers.net", "Prof.", ""), ("b+c@x.org", "", ""), ("zoë@exämple.net", "Ada", "  ")],
         greeting="Dear {first_name},", tags={FIRST_HTML_TAG, FIRST_TEXT_TAG}, mailto=False)  # no first name: the name
def test_the_encoded_request_is_the_request(seed, readers, greeting, tags, mailto) -> None:
    config, rendered = seed
    issue = dataclasses.replace(rendered.issue, greeting=greeting)
    # Which substitutions travel depends on the tags the parts use: any set of them, the token always.
    parts = dataclasses.replace(rendered, issue=issue, html=_strip_tags(rendered.html) + " ".join(tags | {TOKEN_TAG}),
                                text=_strip_tags(rendered.text))
    if mailto:
        config = dataclasses.replace(config, sendgrid=dataclasses.replace(config.sendgrid,
                                                                          unsubscribe_mailto="out@x.org"))
    builder = MessageBuilder(config, parts, secret="s", slug=SEED_SLUG, subject="Sübject \"quoted\"")
    for _ in range(2):  # the second time from the cache of encoded names
        assert json.loads(builder.encoded(readers)) == builder.body(readers)


def _strip_tags(text: str) -> str:
    for tag in ALL_TAGS:
        text = text.replace(tag, "")
    return text
