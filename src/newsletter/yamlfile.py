"""YAML files read safely, with the line of every key kept for error messages."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import NewsletterError, where

try:  # the C loader is several times faster; fall back when libyaml is absent
    from yaml import CSafeLoader as _Loader
except ImportError:  # pragma: no cover
    from yaml import SafeLoader as _Loader  # type: ignore[assignment]

KeyPath = tuple[str, ...]


@dataclass
class YamlDoc:
    """A parsed YAML mapping plus the line (1-based) where each key path appears."""

    path: Path
    data: dict[str, Any]
    lines: dict[KeyPath, int] = field(default_factory=dict)

    def line(self, *keys: str) -> int | None:
        """The line of the deepest known key along `keys`."""
        while keys:
            if keys in self.lines:
                return self.lines[keys]
            keys = keys[:-1]
        return None


class Problems:
    """Collects every problem of a file (and of the files read with it) so that all are reported at once, as one
    error: a single problem keeps its file, line and hint; several become one line each, `path:line: message`."""

    def __init__(self, doc: YamlDoc) -> None:
        self.doc = doc
        self.items: list[tuple[Path, int | None, str, str]] = []

    def add(self, keys: tuple[str, ...], message: str, hint: str = "") -> None:
        """A problem at the line of `keys` in the document (no line when none of them is there)."""
        self.items.append((self.doc.path, self.doc.line(*keys), message, hint))

    def add_at(self, path: Path, message: str, line: int | None = None, hint: str = "") -> None:
        """A problem in another file read along with the document (an issue's body.md)."""
        self.items.append((path, line, message, hint))

    def raise_if_any(self, error: type[NewsletterError]) -> None:
        """Raise `error` holding every problem collected, when there is any."""
        if not self.items:
            return
        if len(self.items) == 1:
            path, line, message, hint = self.items[0]
            raise error(message, path=path, line=line, hint=hint)
        files = list(dict.fromkeys([self.doc.path, *(path for path, *_ in self.items)]))
        ordered = sorted(self.items, key=lambda item: (files.index(item[0]), item[1] or 0))  # as the files read
        text = "\n".join(f"{where(path, line)}{message}" + (f"\n  hint: {hint}" if hint else "")
                         for path, line, message, hint in ordered)
        raise error(f"{len(self.items)} problems:\n{text}")


def _collect_lines(node: yaml.Node, prefix: KeyPath, out: dict[KeyPath, int]) -> None:
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            if isinstance(key_node, yaml.ScalarNode):
                key = (*prefix, str(key_node.value))
                out[key] = key_node.start_mark.line + 1
                _collect_lines(value_node, key, out)


def load_yaml(path: Path, error: type[NewsletterError]) -> YamlDoc:
    """Read a YAML mapping; malformed YAML or a non-mapping raises `error` naming the file and line."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise error("file not found", path=path) from None
    except UnicodeDecodeError as exc:
        raise error(f"not UTF-8 text ({exc.reason} at byte {exc.start})", path=path) from None
    except OSError as exc:
        raise error(f"cannot read: {exc.strerror}", path=path) from None
    try:
        _refuse_aliases(text, path, error)
        node = yaml.compose(text, Loader=_Loader)
        data = yaml.load(text, Loader=_Loader)
    except yaml.MarkedYAMLError as exc:
        raise _malformed(exc, text, path, error) from None
    except yaml.YAMLError as exc:
        raise error(f"malformed YAML: {exc}", path=path) from None
    except ValueError as exc:
        # A value YAML recognises but cannot build, such as the date 2026-02-30.
        line = _bad_scalar_line(yaml.compose(text, Loader=_Loader))
        raise error(f"invalid value: {exc}", path=path, line=line) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise error(
            f"expected a mapping of `key: value` lines, found a {_kind(data)}", path=path, line=1
        )
    lines: dict[KeyPath, int] = {}
    if node is not None:
        _collect_lines(node, (), lines)
    return YamlDoc(path=path, data=data, lines=lines)


_FLOW_CONTEXTS = {"while parsing a flow sequence": "[]", "while parsing a flow mapping": "{}"}
_QUOTE_HINT = "end the value with the same quote it starts with (\" or ')"


def _malformed(exc: yaml.MarkedYAMLError, text: str, path: Path, error: type[NewsletterError]) -> NewsletterError:
    """The error for YAML that does not parse, at the line to fix: where an unclosed quote or bracket opens (the
    parser notices only at the end of the file, or where the quote happens to close), else where parsing failed."""
    opens, mark = exc.context_mark, exc.problem_mark or exc.context_mark
    if exc.context == "while scanning a quoted scalar" and opens is not None:
        return error("malformed YAML: this quote is never closed", path=path, line=opens.line + 1, hint=_QUOTE_HINT)
    if mark is None:
        return error(f"malformed YAML: {exc.problem or exc.context}", path=path)
    bracket = _FLOW_CONTEXTS.get(exc.context or "")
    if bracket and opens is not None and opens.line < mark.line:
        return error(f"malformed YAML: the `{bracket[0]}` on this line is never closed", path=path,
                     line=opens.line + 1, hint=f"close it with `{bracket[1]}` on the same line")
    opened = _runaway_quote(text, mark.line)
    if opened is not None:
        return error(f"malformed YAML: the quote opened on this line closes only on line {mark.line + 1}",
                     path=path, line=opened + 1, hint=_QUOTE_HINT)
    return error(f"malformed YAML: {exc.problem or exc.context}", path=path, line=mark.line + 1,
                 hint="check the indentation and quote values that contain ': ' or start with a symbol")


def _runaway_quote(text: str, failed_line: int) -> int | None:
    """The line (0-based) where a quoted value opens when it runs over several lines and closes on the line where
    parsing failed: `title: "My essay` closed by the first quote of the next line leaves the rest of that line
    out of place. None when no such value precedes the failure."""
    opened = None
    try:
        for token in yaml.scan(text, Loader=_Loader):
            if token.start_mark.line > failed_line:
                break
            if (isinstance(token, yaml.ScalarToken) and token.style in ('"', "'")
                    and token.start_mark.line < token.end_mark.line == failed_line):
                opened = token.start_mark.line
    except yaml.YAMLError:
        pass  # the scanner stops where the file breaks: what it read is enough
    return opened


def _refuse_aliases(text: str, path: Path, error: type[NewsletterError]) -> None:
    """Anchors and aliases are refused: a writer never needs them, and nested aliases (a "billion laughs"
    file of 1.7 KB) would make every walk over the document exponential. One pass over the parser's events."""
    for event in yaml.parse(text, Loader=_Loader):
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
            mark = event.start_mark
            raise error("YAML anchors/aliases are not supported (`&name` / `*name`): write the value out",
                        path=path, line=mark.line + 1 if mark else None)


def _bad_scalar_line(node: yaml.Node | None) -> int | None:
    """The line of the first scalar that the safe constructor cannot build."""
    if node is None:
        return None
    if isinstance(node, yaml.ScalarNode):
        try:
            _Loader("").construct_object(node, deep=True)
        except ValueError:
            return node.start_mark.line + 1
        return None
    children = node.value if isinstance(node, yaml.SequenceNode) else [n for pair in node.value for n in pair]
    for child in children:
        line = _bad_scalar_line(child)
        if line:
            return line
    return None


def _kind(value: Any) -> str:
    return {list: "list", str: "single value", int: "number", float: "number", bool: "true/false"}.get(
        type(value), type(value).__name__
    )


def unknown_key_message(key: str, allowed: Iterable[str]) -> str:
    """'unknown key `x`' plus the closest allowed key, when there is one."""
    allowed = sorted(allowed)
    close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
    msg = f"unknown key `{key}`"
    if close:
        msg += f" (did you mean `{close[0]}`?)"
    else:
        msg += f"; known keys: {', '.join(allowed)}"
    return msg


def describe(value: Any) -> str:
    """The type of a YAML value in the writer's words."""
    return _kind(value)
