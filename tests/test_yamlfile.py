"""YAML files (yamlfile.py): a malformed file is reported at the line to fix; Problems reports every problem at
once; alias bombs are refused at once."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from conftest import SEED_SLUG, Cli

from newsletter.errors import IssueError
from newsletter.yamlfile import Problems, load_yaml

ISSUE = Path("issues") / SEED_SLUG


def _error(tmp_path: Path, text: str) -> IssueError:
    path = tmp_path / "issue.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(IssueError) as caught:
        load_yaml(path, IssueError)
    return caught.value


@pytest.mark.parametrize("quote", ['"', "'"])
def test_an_unclosed_quote_is_reported_where_it_opens(tmp_path: Path, quote: str) -> None:
    err = _error(tmp_path, f"title: ok\nsubject: {quote}My essay\ndate: 2026-11-26\nworkshop: x\n\n")
    assert (err.line, err.message) == (2, "malformed YAML: this quote is never closed")
    assert "end the value with the same quote" in err.hint


def test_a_quote_closed_by_the_next_lines_quote_is_reported_where_it_opens(tmp_path: Path) -> None:
    # `"My essay` swallows the newline and `subject: ` up to the next quote; the parser trips on line 2
    err = _error(tmp_path, 'title: "My essay\nsubject: "Other"\ndate: 2026-11-26\n')
    assert (err.line, err.message) == (1, "malformed YAML: the quote opened on this line closes only on line 2")
    err = _error(tmp_path, 'title: ok\npreheader: "one\n\ntwo\nsubject: "Other\n')
    assert (err.line, err.message) == (2, "malformed YAML: the quote opened on this line closes only on line 5")


def test_an_unclosed_bracket_is_reported_where_it_opens(tmp_path: Path) -> None:
    err = _error(tmp_path, "title: ok\ntags: [a, b\ndate: 2026-11-26\nworkshop: x\n")
    assert (err.line, err.message) == (2, "malformed YAML: the `[` on this line is never closed")


def test_a_value_quoted_over_several_lines_is_fine_and_later_mistakes_keep_their_line(tmp_path: Path) -> None:
    path = tmp_path / "issue.yaml"
    path.write_text('preheader: "one\n  two"\ndate: 2026-11-26\n', encoding="utf-8")
    assert load_yaml(path, IssueError).data["preheader"] == "one two"
    err = _error(tmp_path, 'preheader: "one\n  two"\ndate: 2026-11-26\ntitle: a: b\n')
    assert err.line == 4 and err.message == "malformed YAML: mapping values are not allowed in this context"


def test_problems_are_raised_together_in_the_order_of_the_file(tmp_path: Path) -> None:
    path = tmp_path / "issue.yaml"
    path.write_text("title: T\ndate: x\n", encoding="utf-8")
    doc = load_yaml(path, IssueError)
    problems = Problems(doc)
    problems.raise_if_any(IssueError)  # nothing collected: nothing raised
    problems.add_at(tmp_path / "body.md", "body.md is empty")
    problems.add(("date",), "bad date", hint="write YYYY-MM-DD")
    problems.add(("title",), "bad title")
    with pytest.raises(IssueError) as caught:
        problems.raise_if_any(IssueError)
    assert str(caught.value).splitlines() == [
        "3 problems:", f"{path}:1: bad title", f"{path}:2: bad date", "  hint: write YYYY-MM-DD",
        f"{tmp_path / 'body.md'}: body.md is empty"]
    one = Problems(doc)
    one.add(("date",), "bad date", hint="write YYYY-MM-DD")
    with pytest.raises(IssueError) as caught:
        one.raise_if_any(IssueError)
    assert (caught.value.path, caught.value.line, caught.value.hint) == (path, 2, "write YYYY-MM-DD")


def _bomb(levels: int = 9) -> str:
    lines = ["l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for i in range(1, levels + 1):
        lines.append(f"b{i}: &l{i} {{" + ", ".join(f"k{j}: *l{i - 1}" for j in range(9)) + "}")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("where", ["newsletter.yaml", "issue.yaml"])
def test_yaml_alias_bombs_are_refused_at_once(cli: Cli, project: Path, where: str) -> None:
    path = project / "newsletter.yaml" if where == "newsletter.yaml" else project / ISSUE / "issue.yaml"
    before = path.read_text()
    path.write_text(before + _bomb())
    start = time.perf_counter()
    result = cli("render")
    assert time.perf_counter() - start < 1.0
    assert result.exit_code == 1, result.output
    line = len(before.splitlines()) + 1
    assert f"{where}:{line}: YAML anchors/aliases are not supported" in result.output
    assert "internal error" not in result.output and "MemoryError" not in result.output
