"""The one error family of the library; cli.py turns each into a message and an exit code."""

from __future__ import annotations

import re
from enum import StrEnum
from pathlib import Path

# What a terminal would act on instead of showing: C0 controls (ESC starts an escape sequence, BEL ends an OSC
# one), DEL, C1 controls (0x9b is a one-byte CSI), and the bidirectional overrides that reorder what is shown.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_UNSAFE_KEEP_LINES = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029"
                                "\u202a-\u202e\u2066-\u2069]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: str, *, lines: bool = False) -> str:
    """`text` safe to print on a terminal: control characters, escape sequences and bidirectional overrides
    shown as `\\x1b`-style escapes. For every text that came from a file (names, columns, values, zip members);
    `lines=True` keeps line breaks (a message we wrote over several lines)."""
    if text.isprintable():  # the common case, one pass in C
        return text
    return (_UNSAFE_KEEP_LINES if lines else _UNSAFE).sub(_escape, text)


def where(path: Path | str | None, line: int | None = None) -> str:
    """`path:line: `, `path: ` or nothing: how every message says where (a path is escaped: it may be a zip
    member's name, chosen by whoever made the zip)."""
    if path is None:
        return ""
    shown = printable(str(path))
    return f"{shown}:{line}: " if line else f"{shown}: "


class NewsletterError(Exception):
    """Something the user can fix: a message, optionally where (file, line) and a hint."""

    exit_code = 1

    def __init__(
        self, message: str, *, path: Path | str | None = None, line: int | None = None, hint: str = ""
    ) -> None:
        super().__init__(message)
        self.message = message
        self.path = path
        self.line = line
        self.hint = hint

    def __str__(self) -> str:
        # Messages quote files (column names, values): whatever they hold is shown, never obeyed.
        text = f"{where(self.path, self.line)}{printable(self.message, lines=True)}"
        if self.hint:
            text += f"\n  hint: {printable(self.hint, lines=True)}"
        return text


class UsageError(NewsletterError):
    """The command cannot run as typed (no newsletter folder, a bad argument): exit 2."""

    exit_code = 2


class HttpError(NewsletterError):
    """A request to `serve` that must be refused: the message, and the HTTP status to answer with."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class ConfigError(NewsletterError):
    """newsletter.yaml is missing, malformed or holds wrong values."""


class IssueError(NewsletterError):
    """An issue bundle (issues/<slug>/) is missing, malformed or incomplete."""


class LayoutError(NewsletterError):
    """A layout in layouts/ does not render or produces MJML that does not parse."""


class SubscriberError(NewsletterError):
    """The subscriber list or an import file cannot be used."""


class LedgerError(NewsletterError):
    """The unsubscribe ledger cannot be read or written."""


class StorageError(NewsletterError):
    """A write that matters could not complete (disk full, I/O error, read-only file system): never a success."""

    errno: int | None = None

    @classmethod
    def from_os(cls, exc: OSError, path: Path, what: str) -> StorageError:
        """'disk full: could not record <what> in <path>' and the like, from the OSError behind it."""
        import errno

        reason = {errno.ENOSPC: "disk full", errno.EDQUOT: "disk quota exceeded", errno.EROFS: "read-only file system",
                  errno.EACCES: "permission denied", errno.EPERM: "permission denied",
                  errno.EIO: "I/O error"}.get(exc.errno or 0, exc.strerror or type(exc).__name__)
        hint = "free some space, then run the command again" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else ""
        err = cls(f"{reason}: could not record {what}", path=path, hint=hint)
        err.errno = exc.errno
        return err

    def __str__(self) -> str:
        # The file goes last here: "disk full: could not record ... in subscribers/unsubscribes.csv"
        message = printable(self.message, lines=True)
        text = f"{message} in {printable(str(self.path))}" if self.path is not None else message
        return text + (f"\n  hint: {printable(self.hint, lines=True)}" if self.hint else "")


class SendError(NewsletterError):
    """A send cannot start or did not complete."""


class TransportError(NewsletterError):
    """SendGrid (or the network to it) refused or failed a request."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
        sent: bool = False,
        body: bytes = b"",
    ) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after
        # True when the request may have reached SendGrid (its fate is then unknown).
        self.sent = sent
        self.body = body


class Level(StrEnum):
    """How much a Problem matters: an error stops `check` (and `send`); warnings and notes inform."""

    ERROR = "error"
    WARNING = "warning"
    NOTE = "note"


class Problem:
    """One finding of `render` or `check`: level `error` or `warning`, with file and line when known."""

    __slots__ = ("level", "message", "path", "line")

    def __init__(self, level: Level | str, message: str, path: Path | str | None = None,
                 line: int | None = None) -> None:
        self.level = Level(level)
        self.message = message
        self.path = path
        self.line = line

    def __str__(self) -> str:
        return f"{self.level}: {where(self.path, self.line)}{printable(self.message, lines=True)}"

    def __repr__(self) -> str:
        return f"Problem({str(self)!r})"
