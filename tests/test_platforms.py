"""platforms.py: how each tool's export says which tool wrote it, and what its statuses and opt-out dates mean (an
unknown status refuses the import; a date in an opt-out column means opted out)."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import export_refusal, export_statuses

from newsletter.exports import iter_rows, read_exports
from newsletter.ledger import Kind
from newsletter.platforms import VOCABULARY, Platform, StatusKind

BUTTONDOWN = {
    "regular": None, "premium": None, "churning": None, "churned": None, "past_due": None, "paused": None,
    "gifted": None, "trialed": None, "unpaid": None, "unactivated": "skip", "unsubscribed": "unsubscribe",
    "removed": "unsubscribe", "disabled": "unsubscribe", "undeliverable": "bounce", "complained": "spamreport",
    "blocked": "invalid", "spammy": "invalid", "malformed": "invalid",
}


def test_every_buttondown_type_has_a_meaning(tmp_path: Path) -> None:
    path = tmp_path / "buttondown.csv"
    path.write_text("email,subscriber_type,churn_date\n" + "".join(
        f"{t}@example.net,{t},{'2025-01-01' if t == 'churned' else ''}\n" for t in BUTTONDOWN))
    (f,) = read_exports([path])
    assert f.platform is Platform.BUTTONDOWN
    got = {r.address.split("@")[0]: r.status for r in iter_rows(f)}
    for word, meaning in BUTTONDOWN.items():
        status = got[word]
        expected = (StatusKind.ACTIVE if meaning is None else StatusKind.SKIP if meaning == "skip"
                    else StatusKind.SUPPRESS)
        assert status.kind is expected, word  # a churned reader still gets the free letters: churn_date is no opt-out
        assert status.event is (Kind(meaning) if expected is StatusKind.SUPPRESS else None), word


def test_buttondown_newer_exports_call_the_type_type(tmp_path: Path) -> None:
    path = tmp_path / "subscribers.csv"
    path.write_text("email_address,type,churn_date,undeliverability_date\na@example.net,churned,2025-01-01,\n"
                    "b@example.net,regular,,2025-02-02T10:00:00Z\n")
    (f,) = read_exports([path])
    assert (f.platform, f.status_column) == (Platform.BUTTONDOWN, "type")
    got = {r.address: (r.status.kind, r.status.event, r.at) for r in iter_rows(f)}
    assert got == {"a@example.net": (StatusKind.ACTIVE, None, ""),
                   "b@example.net": (StatusKind.SUPPRESS, Kind.BOUNCE, "2025-02-02T10:00:00Z")}


def test_vocabularies_are_enums_not_strings() -> None:
    assert all(isinstance(s.kind, StatusKind) for words in VOCABULARY.values() for s in words.values())
    assert all(isinstance(s.event, Kind) and s.event.suppresses for words in VOCABULARY.values()
               for s in words.values() if s.kind is StatusKind.SUPPRESS)


def test_an_unknown_status_value_refuses(tmp_path: Path) -> None:
    path = tmp_path / "buttondown.csv"
    path.write_text("email,subscriber_type\na@example.net,regular\nb@example.net,lapsed\n")
    text = export_refusal(path)
    assert "column 'subscriber_type' (buttondown) has values this import does not understand: 'lapsed'" in text


def test_a_column_of_many_values_is_not_a_status(tmp_path: Path) -> None:
    path = tmp_path / "list.csv"
    path.write_text("email,status\n" + "".join(f"r{i}@example.net,note {i}\n" for i in range(300)))
    assert "column 'status' (csv) has more than 200 different values" in export_refusal(path)


@pytest.mark.parametrize(("header", "cell", "event", "at"), [
    ("unsubscribed_at", "2024-05-06 07:08:09", "unsubscribe", "2024-05-06T07:08:09Z"),
    ("unsubscribe_date", "2024-05-06", "unsubscribe", "2024-05-06T00:00:00Z"),
    ("Unsubscribed", "yes", "unsubscribe", ""),
    ("unsubscribed", "1715000000", "unsubscribe", "2024-05-06T12:53:20Z"),
    ("UNSUB_TIME", "2024-05-06 07:08:09", "unsubscribe", "2024-05-06T07:08:09Z"),
    ("CLEAN_TIME", "2024-05-06 07:08:09 UTC", "bounce", "2024-05-06T07:08:09Z"),
    ("bounced_at", "2024-05-06T07:08:09+02:00", "bounce", "2024-05-06T05:08:09Z"),
    ("complained_at", "06/05/2024", "spamreport", ""),  # a date it cannot read is still a date: opted out
])
def test_a_date_in_an_opt_out_column_means_opted_out(tmp_path: Path, header, cell, event, at) -> None:
    path = tmp_path / "list.csv"
    path.write_text(f"email,created_at,{header}\nleft@example.net,2023-01-01,{cell}\nstays@example.net,2023-01-01,\n"
                    f"also@example.net,2023-01-01,0000-00-00 00:00:00\nno@example.net,2023-01-01,false\n")
    got = export_statuses(path)
    assert got.pop("left@example.net") == (StatusKind.SUPPRESS, event, at)
    assert set(got.values()) == {(StatusKind.ACTIVE, None, "")}


def test_a_date_beats_an_active_or_pending_status(tmp_path: Path) -> None:
    path = tmp_path / "list.csv"
    path.write_text("email,status,unsubscribed_at\na@example.net,active,2024-01-01\nb@example.net,pending,2024-01-02\n"
                    "c@example.net,bounced,2024-01-03\n")
    assert export_statuses(path) == {"a@example.net": (StatusKind.SUPPRESS, "unsubscribe", "2024-01-01T00:00:00Z"),
                              "b@example.net": (StatusKind.SUPPRESS, "unsubscribe", "2024-01-02T00:00:00Z"),
                              "c@example.net": (StatusKind.SUPPRESS, "bounce", "2024-01-03T00:00:00Z")}


def test_a_renamed_mailchimp_file_keeps_its_unsub_and_clean_times(tmp_path: Path) -> None:
    # README promises it: the file name no longer says the status, UNSUB_TIME / CLEAN_TIME still do.
    path = tmp_path / "audience (1).csv"
    path.write_text("Email Address,First Name,MEMBER_RATING,UNSUB_TIME,CLEAN_TIME,LEID\n"
                    "left@example.net,Lee,2,2023-06-06 12:56:15,,1\ngone@example.net,Go,1,,2020-03-23 17:30:05,2\n"
                    "here@example.net,Here,4,,,3\n")
    (f,) = read_exports([path])
    assert f.platform is Platform.MAILCHIMP and f.date_columns == ["UNSUB_TIME", "CLEAN_TIME"]
    assert {r.address: (r.status.kind, r.status.event, r.at) for r in iter_rows(f)} == {
        "left@example.net": (StatusKind.SUPPRESS, "unsubscribe", "2023-06-06T12:56:15Z"),
        "gone@example.net": (StatusKind.SUPPRESS, "bounce", "2020-03-23T17:30:05Z"),
        "here@example.net": (StatusKind.ACTIVE, None, "")}
