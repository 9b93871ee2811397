"""Other tools' exports: find the files (a zip, a folder, several files), read each CSV whatever its encoding
and delimiter, recognise the platform, and tell each row's status: a reader to add, an opt-out for the
ledger (with its event and date), or a row to skip (unconfirmed, pending).

Nothing here writes; `subscribers.import_exports` merges what this reads. A status column whose values are
not understood makes the import refuse: an unknown status is never taken for "active".
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
import zipfile
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from .errors import SubscriberError
from .recipients import is_plausible, normalize

# Column names used by the tools writers leave: Mailchimp, Substack, Buttondown, Kit/ConvertKit, Ghost...
EMAIL_COLUMNS = ("email", "email address", "e-mail", "email_address", "emailaddress", "e-mail address",
                 "subscriber email", "subscriber", "mail")
NAME_COLUMNS = ("name", "full name", "full_name", "fullname", "display name", "subscriber name")
FIRST_COLUMNS = ("first name", "first_name", "firstname", "fname", "given name")
LAST_COLUMNS = ("last name", "last_name", "lastname", "lname", "surname", "family name")
MAX_FIELD = 64 * 1024  # a longer cell is a broken file, not a reader
EXPORT_SUFFIXES = (".csv", ".tsv", ".txt")


@dataclass(frozen=True)
class Status:
    """What a row's status means here: `active` (add), `suppress` (a ledger event) or `skip` (not added,
    not recorded: unconfirmed, pending)."""

    kind: str
    event: str = ""
    label: str = ""


ACTIVE = Status("active")


def _out(event: str, word: str) -> Status:
    # The summary names a status in the platform's word, and the ledger event when the word does not say it.
    said = {"unsubscribe": "unsub", "bounce": "bounce", "spamreport": "spam", "invalid": "invalid"}[event]
    plain = {"bounce": "bounced", "spamreport": "spam report", "invalid": "invalid", "unsubscribe": "unsubscribed"}
    return Status("suppress", event, word if said in word else f"{word} ({plain[event]})")


def _skip(word: str) -> Status:
    return Status("skip", "", word)


# Each platform's status column and what its values mean (keys lower-cased, `_`/`-` as spaces).
VOCABULARY: dict[str, dict[str, Status]] = {
    "kit": {"active": ACTIVE, "cancelled": _out("unsubscribe", "cancelled"),
            "canceled": _out("unsubscribe", "cancelled"), "bounced": _out("bounce", "bounced"),
            "complained": _out("spamreport", "complained"),
            "inactive": _skip("inactive (unconfirmed)"), "unconfirmed": _skip("unconfirmed")},
    "buttondown": {**{t: ACTIVE for t in ("regular", "premium", "churning", "past due", "gifted", "trialed", "unpaid",
                                          "paused", "active")},
                   "unactivated": _skip("unactivated (unconfirmed)"),
                   "unsubscribed": _out("unsubscribe", "unsubscribed"), "removed": _out("unsubscribe", "removed"),
                   "undeliverable": _out("bounce", "undeliverable"), "complained": _out("spamreport", "complained"),
                   "blocked": _out("invalid", "blocked"), "spammy": _out("invalid", "spammy"),
                   "malformed": _out("invalid", "malformed"), "disabled": _out("unsubscribe", "disabled")},
    "beehiiv": {"active": ACTIVE, "inactive": _out("unsubscribe", "inactive"), "pending": _skip("pending"),
                "needs approval": _skip("needs approval"), "needs attention": _skip("needs approval"),
                "validating": _skip("validating"), "invalid": _out("invalid", "invalid")},
    "listmonk": {"enabled": ACTIVE, "blocklisted": _out("unsubscribe", "blocklisted"),
                 "blacklisted": _out("unsubscribe", "blocklisted"), "disabled": _skip("disabled")},
    "mailerlite": {"active": ACTIVE, "unsubscribed": _out("unsubscribe", "unsubscribed"),
                   "unconfirmed": _skip("unconfirmed"), "bounced": _out("bounce", "bounced"),
                   "junk": _out("spamreport", "junk")},
    "sendy": {"subscribed": ACTIVE, "active": ACTIVE, "soft bounced": ACTIVE,
              "unsubscribed": _out("unsubscribe", "unsubscribed"), "bounced": _out("bounce", "bounced"),
              "marked as spam": _out("spamreport", "marked as spam"), "unconfirmed": _skip("unconfirmed")},
    "csv": {**{w: ACTIVE for w in ("active", "subscribed", "confirmed", "enabled")},
            **{w: _out("unsubscribe", w) for w in ("unsubscribed", "cancelled", "opted out", "inactive", "removed",
                                                   "blocklisted")},
            **{w: _out("bounce", w) for w in ("bounced", "cleaned", "undeliverable", "hard bounce")},
            **{w: _out("spamreport", w) for w in ("complained", "spam", "junk", "marked as spam", "spamreport")},
            **{w: _out("invalid", w) for w in ("invalid", "blocked")},
            **{w: _skip(w) for w in ("unconfirmed", "pending", "unactivated")}},
}
TRUE, FALSE = {"true", "yes", "1", "t", "y"}, {"false", "no", "0", "f", "n", ""}
# Mailchimp writes one CSV per status, in two naming eras.
MAILCHIMP_FILE = re.compile(r"^(subscribed|unsubscribed|cleaned|nonsubscribed)_(members|email_audience)_export",
                            re.IGNORECASE)
MAILCHIMP_STATUS = {"subscribed": ACTIVE, "unsubscribed": _out("unsubscribe", "unsubscribed"),
                    "cleaned": _out("bounce", "cleaned"), "nonsubscribed": _out("unsubscribe", "nonsubscribed")}
# Older Sendy exports have no header: the status is only in the file name.
SENDY_FILE = re.compile(r"-(unsubscribed|bounced|marked-as-spam|unconfirmed|subscribed|active)\.csv$", re.IGNORECASE)
# Words only one platform uses: they name the platform of a file whose header does not.
DISTINCT_WORDS = {"mailerlite": {"junk"}, "sendy": {"marked as spam", "soft bounced"},
                  "listmonk": {"enabled", "blocklisted", "blacklisted"},
                  "beehiiv": {"validating", "needs approval", "needs attention"}}
STATUS_COLUMNS = ("status", "state", "subscription status", "subscriber status", "subscriber_type")


@dataclass(slots=True)
class ExportRow:
    """One reader row of an export."""

    line: int
    address: str
    name: str
    first_name: str
    extra: list[tuple[str, str]]
    status: Status
    at: str  # the opt-out's time from the export (ISO 8601, UTC), or ""


@dataclass
class ExportFile:
    """One export file, read."""

    source: str  # what the writer calls it: a path, or zip!member
    platform: str = "csv"
    encoding: str = "utf-8"
    delimiter: str = ","
    email_column: str = ""
    email_column_guessed: bool = False
    headerless: bool = False
    name_columns: list[str] = field(default_factory=list)
    status_column: str = ""
    rows: list[ExportRow] = field(default_factory=list)
    malformed: list[tuple[int, str]] = field(default_factory=list)  # (line, what is wrong)
    empty: int = 0


def iter_sources(paths: list[Path]) -> Iterator[tuple[str, bytes]]:
    """(name, bytes) of each export file: files as given, the CSVs inside a zip, the CSVs in a folder."""
    for path in paths:
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and
                           (p.suffix.lower() in EXPORT_SUFFIXES or p.suffix.lower() == ".zip"))
            if not found:
                raise SubscriberError("no .csv, .tsv or .zip files in this folder", path=path)
            yield from iter_sources(found)
            continue
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise SubscriberError("file not found", path=path) from None
        except OSError as exc:
            raise SubscriberError(f"cannot read: {exc.strerror}", path=path) from None
        if data[:4] == b"PK\x03\x04":
            yield from _zip_members(path, data)
        else:
            yield str(path), data


def _zip_members(path: Path, data: bytes) -> Iterator[tuple[str, bytes]]:
    spreadsheet = SubscriberError("this is a binary file, not CSV (a spreadsheet workbook)", path=path,
                                  hint="save or export the list as CSV (comma, semicolon or tab separated)")
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile:
        if path.suffix.lower() != ".zip":
            raise spreadsheet from None
        raise SubscriberError("a damaged zip file", path=path, hint="download the export again") from None
    names = [m.filename for m in archive.infolist()]
    if "[Content_Types].xml" in names or any(n.startswith(("xl/", "word/")) for n in names):
        raise spreadsheet  # .xlsx and .ods are zips too
    members = [m for m in archive.infolist() if not m.is_dir() and not m.filename.startswith("__MACOSX/")
               and m.filename.lower().endswith(EXPORT_SUFFIXES)]
    if not members:
        raise SubscriberError("no CSV files inside this zip", path=path)
    for m in members:
        if m.file_size > 512 * 1024 * 1024:
            raise SubscriberError(f"{m.filename} is too large to import ({m.file_size} bytes)", path=path)
        yield f"{path}!{m.filename}", archive.read(m)


def _decode(data: bytes, source: str) -> tuple[str, str]:
    if not data.strip():
        raise SubscriberError("the file is empty", path=source)
    if b"\x00" in data[:8192]:
        if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
            try:
                return data.decode("utf-16"), "utf-16"
            except UnicodeDecodeError:
                pass
        raise SubscriberError("this is a binary file, not CSV", path=source,
                              hint="export the list as CSV (comma, semicolon or tab separated)")
    try:
        return data.decode("utf-8-sig"), "utf-8"
    except UnicodeDecodeError:
        # Excel on Windows writes cp1252; bytes it leaves undefined are kept as replacement characters
        return data.decode("cp1252", errors="replace"), "windows-1252"


def _delimiter(text: str) -> str:
    first = text.split("\n", 1)[0]
    counts = {d: first.count(d) for d in (",", ";", "\t")}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] else ","


def column_index(header: list[str], names: tuple[str, ...]) -> int | None:
    """The index of the first of `names` in `header` (any case, surrounding space and BOM ignored)."""
    lowered = [h.strip().lower().lstrip("\ufeff") for h in header]
    for name in names:
        if name in lowered:
            return lowered.index(name)
    return None


def _looks_like_address(value: str) -> bool:
    return is_plausible(normalize(value))


def _word(value: str) -> str:
    return " ".join(value.strip().lower().replace("_", " ").replace("-", " ").split())


def _iso(value: str) -> str:
    """An export's date (`2023-06-06 12:56:15`, `2024-03-13 11:33:53 UTC`, ISO 8601) as the ledger writes it."""
    text = value.strip().removesuffix(" UTC").removesuffix(" GMT").replace("Z", "+00:00")
    if not text:
        return ""
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        return ""
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)  # Mailchimp and beehiiv write UTC without saying so
    return when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _platform(source: str, header: list[str]) -> str:
    name = source.rsplit("!", 1)[-1].rsplit("/", 1)[-1]
    cols = {h.strip().lower() for h in header}
    if MAILCHIMP_FILE.match(name) or ("email address" in cols and cols & {"member_rating", "leid", "euid",
                                                                           "optin_time", "unsub_time", "clean_time"}):
        return "mailchimp"
    for column, platform in (("email_disabled", "substack"), ("subscribed_to_emails", "ghost"),
                             ("subscriber_type", "buttondown"), ("unsubscribed_at", "beehiiv")):
        if column in cols:
            return platform
    if "uuid" in cols and "status" in cols and "attributes" in cols:
        return "listmonk"
    if "email_address" in cols and "state" in cols:
        return "kit"
    if SENDY_FILE.search(name):
        return "sendy"
    return "csv"


def read_export(source: str, data: bytes) -> ExportFile:
    """Read one export: its platform, columns and rows with their status. Raises SubscriberError for a file
    that is not a readable CSV, has no email column, or has status values this import does not understand."""
    text, encoding = _decode(data, source)
    out = ExportFile(source=source, encoding=encoding, delimiter=_delimiter(text))
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=out.delimiter)
    try:
        header = [h.strip().lstrip("\ufeff") for h in next(reader)]
        records = [(reader.line_num, row) for row in reader]
    except StopIteration:
        raise SubscriberError("the file is empty", path=source) from None
    except csv.Error as exc:
        raise SubscriberError(f"malformed CSV: {exc}", path=source, line=reader.line_num,
                              hint="an unclosed quote is the usual cause") from None
    if any(_looks_like_address(h) for h in header):
        # No header row: the first line is a reader too.
        records.insert(0, (1, header))
        header = [f"column {i + 1}" for i in range(max(len(r) for _, r in records))]
        out.headerless = True
    out.platform = _platform(source, [] if out.headerless else header)
    email_at = _email_column(header, records, out)
    name_at, first_at = column_index(header, NAME_COLUMNS), column_index(header, FIRST_COLUMNS)
    last_at = column_index(header, LAST_COLUMNS)
    out.name_columns = [header[i] for i in (name_at, first_at, last_at) if i is not None]
    status_of = _status_reader(out, header, records, email_at)
    used = {email_at, name_at, first_at, last_at}
    extra_cols = [(i, h) for i, h in enumerate(header) if i not in used and h and not out.headerless]
    for line, row in records:
        if not any(cell.strip() for cell in row):
            continue
        if len(row) <= email_at:
            out.malformed.append((line, f"{len(row)} field(s) where the header has {len(header)}"))
            continue
        if len(row) > len(header) and any(c.strip() for c in row[len(header):]):
            out.malformed.append((line, f"{len(row)} fields where the header has {len(header)}"))
            continue
        raw = row[email_at].strip()
        if not raw:
            out.empty += 1
            continue

        def cell(i: int | None, row: list[str] = row) -> str:
            return " ".join(row[i].split()) if i is not None and i < len(row) else ""

        name = cell(name_at) or " ".join(f"{cell(first_at)} {cell(last_at)}".split())
        status, at = status_of(row, raw)
        out.rows.append(ExportRow(line, raw, name, cell(first_at),
                                  [(h, row[i].strip()) for i, h in extra_cols if i < len(row)], status, at))
    return out


def _email_column(header: list[str], records: list[tuple[int, list[str]]], out: ExportFile) -> int:
    email_at = column_index(header, EMAIL_COLUMNS)
    if email_at is None:
        email_at = next((i for i, h in enumerate(header) if "mail" in h.lower()), None)
    if email_at is None:
        # No telling header: the column whose values mostly look like addresses.
        sample = records[:200]
        scores = Counter(i for _, row in sample for i, v in enumerate(row) if _looks_like_address(v))
        if scores and scores.most_common(1)[0][1] >= max(1, len(sample) // 2):
            email_at = scores.most_common(1)[0][0]
            out.email_column_guessed = True
        else:
            raise SubscriberError(
                f"no email column found; columns: {', '.join(repr(h) for h in header) or '(none)'}",
                path=out.source, line=1, hint="name the column `email` (or `Email Address`) and import again")
    out.email_column = header[email_at] if email_at < len(header) else f"column {email_at + 1}"
    return email_at


StatusOf = Callable[[list[str], str], tuple[Status, str]]


def _status_reader(out: ExportFile, header: list[str], records: list[tuple[int, list[str]]], email_at: int
                   ) -> StatusOf:
    """A function (row, address) -> (Status, time) for this file; refuses unknown status values up front."""
    name = out.source.rsplit("!", 1)[-1].rsplit("/", 1)[-1]
    if out.platform == "mailchimp":
        return _mailchimp_status(out, header, name)
    if out.platform in ("substack", "ghost"):
        return _flag_status(out, header, records)
    return _column_status(out, header, records, name)


def _mailchimp_status(out: ExportFile, header: list[str], name: str) -> StatusOf:
    m = MAILCHIMP_FILE.match(name)
    by_file = MAILCHIMP_STATUS[m.group(1).lower()] if m else ACTIVE
    unsub, clean = column_index(header, ("unsub_time",)), column_index(header, ("clean_time",))
    out.status_column = "the file name" if m else ""
    at_of = _time_reader(header)

    def mailchimp(row: list[str], raw: str) -> tuple[Status, str]:
        # The file name says the status; UNSUB_TIME / CLEAN_TIME are the backstop for a renamed file.
        for i, status in ((unsub, MAILCHIMP_STATUS["unsubscribed"]), (clean, MAILCHIMP_STATUS["cleaned"])):
            if i is not None and i < len(row) and row[i].strip():
                return (by_file if by_file.kind == "suppress" else status), _iso(row[i])
        return by_file, at_of(row)

    return mailchimp


def _flag_status(out: ExportFile, header: list[str], records: list[tuple[int, list[str]]]) -> StatusOf:
    """Substack's `email_disabled` (true: opted out) and Ghost's `subscribed_to_emails` (false: opted out)."""
    flag, opted_out_when, word = (("email_disabled", TRUE, "email disabled") if out.platform == "substack"
                                  else ("subscribed_to_emails", FALSE, "not subscribed to emails"))
    found = column_index(header, (flag,))
    assert found is not None
    col = found
    out.status_column = header[col]
    _refuse_unknown(out, header[col], {_word(r[col]) for _, r in records if col < len(r)} - TRUE - FALSE,
                    sorted(TRUE | FALSE - {""}))
    off = _out("unsubscribe", word)

    def flagged(row: list[str], raw: str) -> tuple[Status, str]:
        if raw.lower().endswith("@deletion-request.substack.com"):
            return _skip("deletion requests (Substack placeholders)"), ""
        value = _word(row[col]) if col < len(row) else ""
        return (off if value in opted_out_when and (value or out.platform == "ghost") else ACTIVE), ""

    return flagged


def _column_status(out: ExportFile, header: list[str], records: list[tuple[int, list[str]]], name: str
                   ) -> StatusOf:
    """A status column (Kit, Buttondown, beehiiv, listmonk, MailerLite, Sendy, any CSV), or Sendy's file name."""
    at_of = _time_reader(header)
    status_at = None if out.headerless else column_index(header, STATUS_COLUMNS)
    if status_at is None:
        by_name = SENDY_FILE.search(name)
        if by_name:
            status = VOCABULARY["sendy"][_word(by_name.group(1))]
            out.status_column = "the file name"
            return lambda row, raw: (status, at_of(row))
        return lambda row, raw: (ACTIVE, "")
    col: int = status_at
    values = {_word(r[col]) if col < len(r) else "" for _, r in records if any(c.strip() for c in r)}
    vocabulary = VOCABULARY[out.platform]
    if out.platform == "csv":
        # No header names the platform: the one whose own words these are, else the common words.
        for candidate, words in DISTINCT_WORDS.items():
            if values & words and values <= VOCABULARY[candidate].keys():
                out.platform, vocabulary = candidate, VOCABULARY[candidate]
                break
    out.status_column = header[col]
    _refuse_unknown(out, header[col], values - vocabulary.keys(), sorted(vocabulary))
    unsub_at = column_index(header, ("unsubscribed_at", "unsubscription_date", "unsubscribed at"))
    late_optout = _out("unsubscribe", "unsubscribed")

    def by_column(row: list[str], raw: str) -> tuple[Status, str]:
        status = vocabulary[_word(row[col]) if col < len(row) else ""]
        if unsub_at is not None and unsub_at < len(row) and row[unsub_at].strip():
            # beehiiv keeps `active` on a reader who unsubscribed: the date is the truth
            return (status if status.kind == "suppress" else late_optout), _iso(row[unsub_at])
        return status, at_of(row)

    return by_column


def _time_reader(header: list[str]) -> Callable[[list[str]], str]:
    at = column_index(header, ("unsub_time", "clean_time", "unsubscribed_at", "unsubscription_date",
                               "last_changed", "updated_at"))
    return lambda row: _iso(row[at]) if at is not None and at < len(row) else ""


def _refuse_unknown(out: ExportFile, column: str, unknown: set[str], known: list[str]) -> None:
    if not unknown:
        return
    shown = ", ".join(repr(v) if v else "(empty)" for v in sorted(unknown)[:10])
    raise SubscriberError(
        f"column {column!r} ({out.platform}) has values this import does not understand: {shown}; nothing was "
        "imported", path=out.source, line=1,
        hint=f"known values: {', '.join(k for k in known if k)}. Fix the column, or remove it if it is not a "
             "subscription status (a reader is never assumed to be active)")
