"""Library stages called directly: config errors, Markdown to text, how send classifies failures, tokens."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import FILLED_CONFIG, record

from newsletter.config import load_config
from newsletter.errors import ConfigError, TransportError
from newsletter.markdown import _MD, to_text
from newsletter.send import Action, backoff_delay, classify


def _config(tmp_path: Path, text: str) -> Path:
    (tmp_path / "newsletter.yaml").write_text(text, encoding="utf-8")
    return tmp_path


def test_a_filled_config_loads(tmp_path: Path) -> None:
    c = load_config(_config(tmp_path, FILLED_CONFIG))
    assert c.sender.email == "letters@micromoments.net" and c.reply_to == "hello@micromoments.net"
    assert c.workshops["from-trauma-to-triumph"].next == "betrayal-forgiveness-redemption"
    assert c.archive_url == "https://letters.micromoments.net/archive"


@pytest.mark.parametrize(("change", "message"), [
    (("sender: {name: Micro Moments, email: letters@micromoments.net}", "sender: {name: M, email: not-mail}"),
     "newsletter.yaml:4: `sender.email` is not an email address: 'not-mail'"),
    (("reply_to: hello@micromoments.net", "reply_to: hello"), "`reply_to` is not an email address"),
    (("    next: betrayal-forgiveness-redemption", "    next: nowhere"), "nowhere"),
    (("language: en", "language: english!"), "`language` must be a language tag"),
    (("name: Micro Moments\n", ""), "missing required key `name`"),
])
def test_config_errors_name_the_line(tmp_path: Path, change: tuple[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(_config(tmp_path, FILLED_CONFIG.replace(*change)))
    assert message in str(err.value)


def test_every_config_problem_is_reported_at_once(tmp_path: Path) -> None:
    text = FILLED_CONFIG.replace("reply_to: hello@micromoments.net", "reply_to: hello") + (
        "brand:\n  colors:\n    accent: red\n  fonts:\n    body: '<script>'\n")
    with pytest.raises(ConfigError) as err:
        load_config(_config(tmp_path, text))
    assert "3 problems" in str(err.value)


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


@pytest.mark.parametrize(("status", "sent", "attempt", "rate_waits", "action"), [
    (None, True, 1, 0, Action.DOUBT),  # no answer after the request left
    (None, False, 1, 0, Action.RETRY),  # refused before it left
    (None, False, 4, 0, Action.GIVE_UP),
    (413, False, 1, 0, Action.SPLIT),
    (429, False, 1, 0, Action.RATE_LIMIT),
    (429, False, 1, 6, Action.GIVE_UP),
    (400, False, 1, 0, Action.STOP), (401, False, 1, 0, Action.STOP), (403, False, 1, 0, Action.STOP),
    (500, False, 1, 0, Action.RETRY), (503, False, 3, 0, Action.RETRY), (502, False, 4, 0, Action.GIVE_UP),
    (404, False, 1, 0, Action.STOP),
])
def test_classify(status, sent: bool, attempt: int, rate_waits: int, action: Action) -> None:
    assert classify(TransportError("x", status=status, sent=sent), attempt, rate_waits, retries=3) is action


def test_backoff_grows_and_never_vanishes() -> None:
    delays = [backoff_delay(a, 1.0) for a in (1, 2, 3, 4, 5, 6, 7, 8, 9, 10) for _ in range(20)]
    assert min(delays) >= 0.5 and max(delays) <= 30.5
    assert max(backoff_delay(6, 1.0) for _ in range(200)) > 8  # 2**5 = 32, capped at 30: it does grow


def test_tokens_compare_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    import hmac

    from newsletter import tokens

    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a, b):  # type: ignore[no-untyped-def]
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(tokens.hmac, "compare_digest", spy)
    token = tokens.make_token("k", "ada@readers.net")
    assert tokens.verify_token("k", token) == "ada@readers.net"
    assert tokens.verify_token("other", token) is None
    assert len(calls) == 2  # both verdicts came from compare_digest, never ==


def test_a_suppressed_address_is_not_imported(tmp_path: Path) -> None:
    from newsletter.ledger import ledger_path
    from newsletter.subscribers import import_exports, list_path

    root = _config(tmp_path, FILLED_CONFIG)
    record(ledger_path(root), "ada@readers.net", "spamreport")
    export = tmp_path / "export.csv"
    export.write_text("email,name\nADA@readers.net,Ada\nbob@readers.net,Bob\n")
    report = import_exports(root, [export])
    assert report.added == 1 and report.kept_out == {"spamreport": 1}
    assert "ada@" not in list_path(root).read_text()


def test_the_torn_line_rule(tmp_path: Path) -> None:
    from newsletter.ledger import HEADER, Ledger

    path = tmp_path / "unsubscribes.csv"
    path.write_text(HEADER + "\nada@readers.net,resubscribe,2026-01-01T00:00:00Z,cli,\nada@readers.net,unsub")
    ledger = Ledger(path)
    assert ledger.is_suppressed("ada@readers.net")  # a torn last line naming an address suppresses it
    with open(path, "a") as fh:
        fh.write("scribe,2026-01-02T00:00:00Z,cli,\n")  # the write completes: still suppressed, now for good
    ledger.refresh()
    assert ledger.is_suppressed("ada@readers.net") and ledger.event_of("ada@readers.net") == "unsubscribe"
