"""Each tool's export: how a file says which tool wrote it, and what its statuses and opt-out dates mean.

A status value this import does not know makes it refuse: an unknown status is never taken for "active". A
date in an opt-out column (`unsubscribed_at`, Mailchimp's `UNSUB_TIME`/`CLEAN_TIME`, Buttondown's
`unsubscription_date`...) means opted out, whatever the status column says and when there is none.
Vocabularies as each tool documents them (checked 2026-12): Buttondown's subscriber types (`churned` and
`churning` still get the free letters), beehiiv's subscription statuses, Kit's states, listmonk's, MailerLite's
and Sendy's statuses, Mailchimp's per-status files, Substack's `email_disabled`, Ghost's `subscribed_to_emails`.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from enum import Enum, StrEnum

from .errors import SubscriberError
from .ledger import Kind


class StatusKind(Enum):
    """What a row's status means here."""

    ACTIVE = "active"  # a reader to add
    SUPPRESS = "suppress"  # an opt-out for the ledger
    SKIP = "skip"  # neither added nor recorded: unconfirmed, pending


@dataclass(frozen=True)
class Status:
    """A row's status: its kind, the ledger event of an opt-out, and how the summary names it."""

    kind: StatusKind
    event: Kind | None = None  # the ledger event of a SUPPRESS: unsubscribe, bounce, spamreport or invalid
    label: str = ""


class Platform(StrEnum):
    """The tool that wrote an export (the ledger's source is `import:<platform>`)."""

    MAILCHIMP = "mailchimp"
    SUBSTACK = "substack"
    GHOST = "ghost"
    BUTTONDOWN = "buttondown"
    BEEHIIV = "beehiiv"
    LISTMONK = "listmonk"
    KIT = "kit"
    MAILERLITE = "mailerlite"
    SENDY = "sendy"
    CSV = "csv"  # any other CSV with an email column


ACTIVE = Status(StatusKind.ACTIVE)
_SAID = {Kind.UNSUBSCRIBE: "unsub", Kind.BOUNCE: "bounce", Kind.SPAMREPORT: "spam", Kind.INVALID: "invalid"}
_PLAIN = {Kind.UNSUBSCRIBE: "unsubscribed", Kind.BOUNCE: "bounced", Kind.SPAMREPORT: "spam report",
          Kind.INVALID: "invalid"}


def _out(event: Kind, word: str) -> Status:
    # The summary names a status in the platform's word, and the ledger event when the word does not say it.
    return Status(StatusKind.SUPPRESS, event, word if _SAID[event] in word else f"{word} ({_PLAIN[event]})")


def _skip(word: str) -> Status:
    return Status(StatusKind.SKIP, None, word)


def _active(*words: str) -> dict[str, Status]:
    return dict.fromkeys(words, ACTIVE)


# Each platform's status column and what its values mean (keys lower-cased, `_`/`-` as spaces).
VOCABULARY: dict[Platform, dict[str, Status]] = {
    Platform.KIT: {"active": ACTIVE, "cancelled": _out(Kind.UNSUBSCRIBE, "cancelled"),
                   "canceled": _out(Kind.UNSUBSCRIBE, "cancelled"), "bounced": _out(Kind.BOUNCE, "bounced"),
                   "complained": _out(Kind.SPAMREPORT, "complained"),
                   "inactive": _skip("inactive (unconfirmed)"), "unconfirmed": _skip("unconfirmed")},
    # Buttondown: churning/churned/past due/paused are (former) paying readers who still get the free letters.
    Platform.BUTTONDOWN: {**_active("regular", "premium", "churning", "churned", "past due", "gifted", "trialed",
                                    "unpaid", "paused", "active"),
                          "unactivated": _skip("unactivated (unconfirmed)"),
                          "unsubscribed": _out(Kind.UNSUBSCRIBE, "unsubscribed"),
                          "removed": _out(Kind.UNSUBSCRIBE, "removed"), "disabled": _out(Kind.UNSUBSCRIBE, "disabled"),
                          "undeliverable": _out(Kind.BOUNCE, "undeliverable"),
                          "complained": _out(Kind.SPAMREPORT, "complained"), "blocked": _out(Kind.INVALID, "blocked"),
                          "spammy": _out(Kind.INVALID, "spammy"), "malformed": _out(Kind.INVALID, "malformed")},
    Platform.BEEHIIV: {"active": ACTIVE, "inactive": _out(Kind.UNSUBSCRIBE, "inactive"), "pending": _skip("pending"),
                       "needs approval": _skip("needs approval"), "needs attention": _skip("needs approval"),
                       "validating": _skip("validating"), "invalid": _out(Kind.INVALID, "invalid")},
    Platform.LISTMONK: {"enabled": ACTIVE, "blocklisted": _out(Kind.UNSUBSCRIBE, "blocklisted"),
                        "blacklisted": _out(Kind.UNSUBSCRIBE, "blocklisted"), "disabled": _skip("disabled")},
    Platform.MAILERLITE: {"active": ACTIVE, "unsubscribed": _out(Kind.UNSUBSCRIBE, "unsubscribed"),
                          "unconfirmed": _skip("unconfirmed"), "bounced": _out(Kind.BOUNCE, "bounced"),
                          "junk": _out(Kind.SPAMREPORT, "junk")},
    Platform.SENDY: {**_active("subscribed", "active", "soft bounced"),
                     "unsubscribed": _out(Kind.UNSUBSCRIBE, "unsubscribed"), "bounced": _out(Kind.BOUNCE, "bounced"),
                     "marked as spam": _out(Kind.SPAMREPORT, "marked as spam"), "unconfirmed": _skip("unconfirmed")},
    Platform.CSV: {**_active("active", "subscribed", "confirmed", "enabled"),
                   **{w: _out(Kind.UNSUBSCRIBE, w) for w in ("unsubscribed", "cancelled", "opted out", "inactive",
                                                          "removed", "blocklisted")},
                   **{w: _out(Kind.BOUNCE, w) for w in ("bounced", "cleaned", "undeliverable", "hard bounce")},
                   **{w: _out(Kind.SPAMREPORT, w) for w in ("complained", "spam", "junk", "marked as spam",
                                                         "spamreport")},
                   **{w: _out(Kind.INVALID, w) for w in ("invalid", "blocked")},
                   **{w: _skip(w) for w in ("unconfirmed", "pending", "unactivated")}},
}
TRUE, FALSE = frozenset({"true", "yes", "1", "t", "y"}), frozenset({"false", "no", "0", "f", "n", ""})
# Substack's `email_disabled` (true: opted out) and Ghost's `subscribed_to_emails` (false: opted out).
FLAGS = {Platform.SUBSTACK: ("email_disabled", TRUE, "email disabled"),
         Platform.GHOST: ("subscribed_to_emails", FALSE, "not subscribed to emails")}
SUBSTACK_PLACEHOLDER = "@deletion-request.substack.com"
# Mailchimp writes one CSV per status, in two naming eras.
MAILCHIMP_FILE = re.compile(r"^(subscribed|unsubscribed|cleaned|nonsubscribed)_(members|email_audience)_export",
                            re.IGNORECASE)
MAILCHIMP_STATUS = {"subscribed": ACTIVE, "unsubscribed": _out(Kind.UNSUBSCRIBE, "unsubscribed"),
                    "cleaned": _out(Kind.BOUNCE, "cleaned"), "nonsubscribed": _out(Kind.UNSUBSCRIBE, "nonsubscribed")}
MAILCHIMP_COLUMNS = frozenset({"member_rating", "leid", "euid", "optin_time", "unsub_time", "clean_time"})
# Older Sendy exports have no header: the status is only in the file name.
SENDY_FILE = re.compile(r"-(unsubscribed|bounced|marked-as-spam|unconfirmed|subscribed|active)\.csv$", re.IGNORECASE)
# Words only one platform uses: they name the platform of a file whose header does not.
DISTINCT_WORDS = {Platform.MAILERLITE: {"junk"}, Platform.SENDY: {"marked as spam", "soft bounced"},
                  Platform.LISTMONK: {"enabled", "blocklisted", "blacklisted"},
                  Platform.BEEHIIV: {"validating", "needs approval", "needs attention"}}
STATUS_COLUMNS = ("status", "state", "subscription status", "subscriber status", "subscriber_type")
# Buttondown's newer exports call the subscriber type `type`, a word too common to read as a status elsewhere.
BUTTONDOWN_STATUS_COLUMNS = ("subscriber_type", "type", *STATUS_COLUMNS)
# Columns whose date (or yes) means the reader opted out, by ledger event; unsubscribe first when a row has two.
# Not `churn_date`: a Buttondown reader who stopped paying still gets the free letters.
OPT_OUT_DATES = (
    (Kind.UNSUBSCRIBE, ("unsubscribed at", "unsubscribed on", "unsubscribe date", "unsubscribed date",
                     "unsubscription date", "unsubscribed", "unsub time", "unsubscribe time", "opted out at",
                     "optout time", "opt out date")),
    (Kind.SPAMREPORT, ("complained at", "spam reported at", "marked as spam at")),
    (Kind.BOUNCE, ("clean time", "cleaned at", "bounced at", "bounced on", "undeliverability date")),
)
DATED = {Kind.UNSUBSCRIBE: _out(Kind.UNSUBSCRIBE, "unsubscribed"),
         Kind.SPAMREPORT: _out(Kind.SPAMREPORT, "complained"), Kind.BOUNCE: _out(Kind.BOUNCE, "bounced")}
# An opt-out column holding one of these says "not opted out" (MySQL writes a missing date as zeros).
NOT_SET = FALSE | {"null", "none", "never", "n/a", "na", "-", "nat", "0000-00-00", "0000-00-00 00:00:00"}
# When a status says opted out but no opt-out column dates it, these tell when the row last changed.
TIME_COLUMNS = ("last_changed", "updated_at")
MAX_VALUES = 200  # distinct values in a status column: more is not a status (every vocabulary has under 40)


def column_index(header: list[str], names: tuple[str, ...]) -> int | None:
    """The index of the first of `names` in `header` (any case, surrounding space and BOM ignored)."""
    lowered = [h.strip().lower().lstrip("\ufeff") for h in header]
    for name in names:
        if name in lowered:
            return lowered.index(name)
    return None


def word(value: str) -> str:
    """A status value as the vocabularies spell it: lower case, `_` and `-` as spaces, spaces collapsed."""
    return " ".join(value.strip().lower().replace("_", " ").replace("-", " ").split())


def iso(value: str) -> str:
    """An export's date (`2023-06-06 12:56:15`, `2024-03-13 11:33:53 UTC`, ISO 8601, Unix seconds or
    milliseconds) as the ledger writes it; "" when it is none of these."""
    text = value.strip().removesuffix(" UTC").removesuffix(" GMT").replace("Z", "+00:00")
    if text.isdigit() and len(text) in (10, 13):
        seconds = int(text) / (1000 if len(text) == 13 else 1)
        return dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        return ""
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)  # Mailchimp and beehiiv write UTC without saying so
    return when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def opted_out(value: str) -> tuple[bool, str]:
    """What a cell of an opt-out column says: (opted out, when). A date, `yes`, or any value that is not a
    recognised "not set" counts: an opt-out column is never read as "still subscribed" by guessing."""
    text = value.strip()
    if text.lower() in NOT_SET or text.startswith("0000-00-00"):
        return False, ""
    return True, iso(text)


def detect_platform(name: str, header: list[str]) -> Platform:
    """The tool that wrote a file, from its name and header (`CSV` when neither says)."""
    cols = {h.strip().lower() for h in header}
    if MAILCHIMP_FILE.match(name) or ("email address" in cols and cols & MAILCHIMP_COLUMNS):
        return Platform.MAILCHIMP
    if "email_disabled" in cols:
        return Platform.SUBSTACK
    if "subscribed_to_emails" in cols:
        return Platform.GHOST
    if "subscriber_type" in cols or ("type" in cols and cols & {"churn_date", "undeliverability_date"}):
        return Platform.BUTTONDOWN
    if "unsubscribed_at" in cols and cols & {"tier", "free tier", "premium tier"}:
        return Platform.BEEHIIV
    if "uuid" in cols and "status" in cols and "attributes" in cols:
        return Platform.LISTMONK
    if "email_address" in cols and "state" in cols:
        return Platform.KIT
    if SENDY_FILE.search(name):
        return Platform.SENDY
    return Platform.CSV


def date_columns(header: list[str]) -> list[tuple[int, Kind]]:
    """(index, ledger event) of the header's opt-out date columns, unsubscribe ones first."""
    words = [word(h) for h in header]
    return [(i, event) for event, names in OPT_OUT_DATES for i, w in enumerate(words) if w in names]


class StatusReader:
    """How one file's rows get their status. Built from the header and the file's name, shown every row's
    status value while the file is scanned, checked once (`check` refuses values it does not know), then
    asked for each row's status and opt-out time (`status`)."""

    def __init__(self, source: str, name: str, header: list[str], *, headerless: bool) -> None:
        self.source = source
        self.platform = detect_platform(name, [] if headerless else header)
        self.column: int | None = None  # the status (or flag) column
        self.named: Status | None = None  # the status the file's name gives (Mailchimp, older Sendy)
        self.values: set[str] = set()
        self.dates = [] if headerless else date_columns(header)
        self.time_at = None if headerless else column_index(header, TIME_COLUMNS)
        self._words: dict[str, str] = {}
        self._vocabulary: dict[str, Status] = {}
        self._flag_off = _out(Kind.UNSUBSCRIBE, FLAGS[self.platform][2]) if self.platform in FLAGS else ACTIVE
        if self.platform is Platform.MAILCHIMP:
            m = MAILCHIMP_FILE.match(name)
            self.named = MAILCHIMP_STATUS[m.group(1).lower()] if m else None
        elif self.platform in FLAGS:
            self.column = column_index(header, (FLAGS[self.platform][0],))
        else:
            columns = BUTTONDOWN_STATUS_COLUMNS if self.platform is Platform.BUTTONDOWN else STATUS_COLUMNS
            self.column = None if headerless else column_index(header, columns)
            sendy = SENDY_FILE.search(name) if self.column is None else None
            self.named = VOCABULARY[Platform.SENDY][word(sendy.group(1))] if sendy else None
        self.column_name = header[self.column] if self.column is not None else ""

    def _word(self, row: list[str]) -> str:
        col = self.column
        cell = row[col] if col is not None and col < len(row) else ""
        found = self._words.get(cell)
        if found is None:
            found = self._words[cell] = word(cell)
        return found

    def see(self, row: list[str]) -> None:
        """Note a row's status value (while the file is scanned)."""
        if self.column is None:
            return
        self.values.add(self._word(row))
        if len(self.values) > MAX_VALUES:
            self._refuse(f"has more than {MAX_VALUES} different values: it is not a subscription status")

    def check(self) -> None:
        """Settle the vocabulary once every value was seen; refuses values it does not know."""
        if self.column is None:
            return
        if self.platform in FLAGS:
            known = TRUE | FALSE
            self._vocabulary = {}
        else:
            if self.platform is Platform.CSV:
                # No header names the platform: the one whose own words these are, else the common words.
                for candidate, words in DISTINCT_WORDS.items():
                    if self.values & words and self.values <= VOCABULARY[candidate].keys():
                        self.platform = candidate
                        break
            self._vocabulary = VOCABULARY[self.platform]
            known = frozenset(self._vocabulary)
        unknown = self.values - known
        if unknown:
            shown = ", ".join(repr(v) if v else "(empty)" for v in sorted(unknown)[:10])
            self._refuse(f"has values this import does not understand: {shown}; nothing was imported",
                         hint=f"known values: {', '.join(sorted(k for k in known if k))}. Fix the column, or "
                              "remove it if it is not a subscription status (a reader is never assumed to be "
                              "active)")

    def _refuse(self, what: str, hint: str = "") -> None:
        raise SubscriberError(f"column {self.column_name!r} ({self.platform}) {what}", path=self.source, line=1,
                              hint=hint or "remove the column if it is not a subscription status")

    def status(self, row: list[str], address: str) -> tuple[Status, str]:
        """A row's status and, for an opt-out, when it happened (ISO 8601 UTC, or "" when the file does
        not say). A date in an opt-out column makes any row an opt-out."""
        if self.platform is Platform.SUBSTACK and address.lower().endswith(SUBSTACK_PLACEHOLDER):
            return _skip("deletion requests (Substack placeholders)"), ""
        status = self._base(row)
        for i, event in self.dates:
            if i < len(row) and row[i].strip():
                out, when = opted_out(row[i])
                if out:
                    return (status if status.kind is StatusKind.SUPPRESS else DATED[event]), when
        if status.kind is StatusKind.SUPPRESS and self.time_at is not None and self.time_at < len(row):
            return status, iso(row[self.time_at])
        return status, ""

    def _base(self, row: list[str]) -> Status:
        if self.named is not None:
            return self.named
        if self.column is None:
            return ACTIVE
        value = self._word(row)
        if self.platform in FLAGS:
            return self._flag_off if value in FLAGS[self.platform][1] else ACTIVE
        found = self._vocabulary.get(value)
        if found is None:  # not seen while scanning: the file changed under us
            raise SubscriberError("the file changed while it was being imported; nothing was imported",
                                  path=self.source, hint="import it again")
        return found
