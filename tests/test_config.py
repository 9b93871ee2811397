"""config.py: newsletter.yaml -> a frozen Config, every problem reported together with its line."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import FILLED_CONFIG

from newsletter.config import load_config
from newsletter.errors import ConfigError


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
