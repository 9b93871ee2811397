"""journal.py called directly: every record sequence replays to the right fate, torn tails never count."""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path

import pytest
from conftest import shim_env
from helpers import run_python

from newsletter.errors import SendError, StorageError
from newsletter.journal import (
    BatchFate,
    Journal,
    ScheduleInfo,
    first_run_at,
    iter_sent_addresses,
    journal_path,
    load_state,
    send_lock,
    sends_dir,
)

A, B = "ada@readers.net", "bob@readers.net"


def _journal(tmp_path: Path, *steps: tuple[str, ...]) -> Path:
    path = tmp_path / "sends" / "issue.jsonl"
    with Journal(path) as j:
        j.run(readers=2, resend_in_doubt=False)
        j.batch(1, [A, B])
        for step in steps:
            getattr(j, step[0])(1, *step[1:])
    return path


@pytest.mark.parametrize(("steps", "sent", "doubt", "failed"), [
    ((), False, False, False),  # defined, never attempted: the next run sends it
    ((("attempt", 1),), False, True, False),  # left, no answer: in doubt
    ((("attempt", 1), ("ok", 202, "m1")), True, False, False),
    ((("attempt", 1), ("retry", 500, "boom")), False, False, False),  # answered, not accepted
    ((("attempt", 1), ("retry", 500, "boom"), ("attempt", 2)), False, True, False),
    ((("attempt", 1), ("retry", 500, "boom"), ("attempt", 2), ("ok", 202, "m2")), True, False, False),
    ((("attempt", 1), ("doubt", "timed out")), False, True, False),
    ((("attempt", 1), ("failed", 400, "bad from")), False, False, True),
    ((("attempt", 1), ("replaced", "413: split in two")), False, False, False),
])
def test_every_record_sequence_replays_to_its_fate(tmp_path: Path, steps, sent: bool, doubt: bool,
                                                   failed: bool) -> None:
    state = load_state(_journal(tmp_path, *steps))
    assert state.is_sent(A) is sent and state.is_sent(" BOB@Readers.net ") is sent
    assert state.in_doubt(A) is doubt
    assert bool(state.failed_batches) is failed
    assert state.next_batch == 2
    if doubt:
        assert state.doubt_batches[1].state is BatchFate.DOUBT and state.in_doubt_readers == 2


@pytest.mark.parametrize("cut", [1, 5, 12, 20])
def test_a_torn_last_record_never_counts(tmp_path: Path, cut: int) -> None:
    path = _journal(tmp_path, ("attempt", 1))
    whole = path.read_bytes()
    ok = json.dumps({"t": "ok", "b": 1, "status": 202, "id": "m"}, separators=(",", ":")).encode()
    path.write_bytes(whole + ok[:cut])  # the `ok` record torn: the batch stays in doubt, never sent twice
    state = load_state(path)
    assert not state.is_sent(A) and state.in_doubt(A)


def test_a_cancel_naming_no_batch_cancels_nothing(tmp_path: Path) -> None:
    """A hand-edited `{"t":"cancel"}` without a batch id must not forget the unscheduled batches: a reader in
    doubt stays in doubt (never mailed twice), a reader sent stays sent."""
    path = _journal(tmp_path, ("attempt", 1))
    path.write_bytes(path.read_bytes() + b'{"t":"cancel","at":"2026-12-02T00:00:00+00:00"}\n')
    state = load_state(path)
    assert state.in_doubt(A) and state.in_doubt(B)


def test_a_torn_attempt_means_the_request_never_left(tmp_path: Path) -> None:
    path = _journal(tmp_path)
    path.write_bytes(path.read_bytes() + b'{"t":"attempt","b":1')
    state = load_state(path)
    assert not state.in_doubt(A) and not state.is_sent(A)  # a re-run sends the batch


def test_a_torn_record_closed_by_a_later_one_stays_unreadable(tmp_path: Path) -> None:
    path = _journal(tmp_path)
    path.write_bytes(path.read_bytes() + b'{"t":"attempt","b":1\n{"t":"replaced","b":1,"why":"x"}\n')
    state = load_state(path)
    assert not state.in_doubt(A) and not state.is_sent(A) and state.next_batch == 2


def test_a_later_run_settles_earlier_failures(tmp_path: Path) -> None:
    path = tmp_path / "issue.jsonl"
    with Journal(path) as j:
        j.run(readers=2, resend_in_doubt=False)
        j.batch(1, [A, B])
        j.attempt(1, 1)
        j.failed(1, 500, "gave up")
        j.end()
        j.run(readers=2, resend_in_doubt=False)
        j.batch(2, [A, B])
        j.attempt(2, 1)
        j.ok(2, 202, "m")
    state = load_state(path)
    assert not state.failed_batches and state.sent_readers == 2
    runs = state.runs()
    assert len(runs) == 2 and runs[0].ended and not runs[1].ended
    assert state.first_sent_at() == first_run_at(path) is not None


def test_only_the_journal_spells_record_types() -> None:
    src = Path(__file__).resolve().parent.parent / "src" / "newsletter"
    for f in src.glob("*.py"):
        if f.name != "journal.py":
            text = f.read_text()
            for kind in ("batch", "attempt", "retry", "replaced", "doubt"):
                assert f'"t": "{kind}"' not in text and f"'t': '{kind}'" not in text, (f.name, kind)


# -- what each record says, and which are fsynced -----------------------------------------------------------------
ISO = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00")


def test_each_record_is_one_compact_line_as_the_format_says(tmp_path: Path) -> None:
    path = tmp_path / "sends" / "issue.jsonl"  # its folder is made
    with Journal(path) as j:
        j.run(readers=3, resend_in_doubt=True, batch_id="B-1")
        j.schedule("B-1", dt.datetime(2027, 1, 2, 9, 30, tzinfo=dt.timezone(dt.timedelta(hours=2))))
        j.batch(4, [A, "josé@readers.net"])
        j.attempt(4, 2)
        j.retry(4, 500, "boom")
        j.retry(4, None, "timed out")
        j.ok(4, 202, "msg-1")
        j.failed(5, 400, "bad from")
        j.replaced(6, "413: split")
        j.doubt(7, "no answer")
        j.cancel_asked("B-1")
        j.cancel_refused("B-1", "x" * 400)
        j.cancel("B-1")
        j.end()
    raw = path.read_bytes()
    assert "josé".encode() in raw and b'{"t":"batch","b":4,' in raw  # UTF-8 as it is, no spaces
    records = [json.loads(line) for line in raw.decode().splitlines()]
    stamps = [r.pop("at") for r in records if "at" in r]
    assert len(stamps) == 6 and all(ISO.fullmatch(s) for s in stamps), stamps
    assert records == [
        {"t": "run", "readers": 3, "resend_in_doubt": True, "batch_id": "B-1"},
        {"t": "schedule", "batch_id": "B-1", "send_at": "2027-01-02T07:30:00+00:00"},
        {"t": "batch", "b": 4, "emails": [A, "josé@readers.net"]},
        {"t": "attempt", "b": 4, "n": 2},
        {"t": "retry", "b": 4, "status": 500, "error": "boom"},
        {"t": "retry", "b": 4, "status": None, "error": "timed out"},
        {"t": "ok", "b": 4, "status": 202, "id": "msg-1"},
        {"t": "failed", "b": 5, "status": 400, "error": "bad from"},
        {"t": "replaced", "b": 6, "why": "413: split"},
        {"t": "doubt", "b": 7, "error": "no answer"},
        {"t": "cancel_asked", "batch_id": "B-1"},
        {"t": "cancel_refused", "batch_id": "B-1", "error": "x" * 300},
        {"t": "cancel", "batch_id": "B-1"},
        {"t": "end"},
    ]
    with Journal(path) as j:
        j.run(readers=1, resend_in_doubt=False)  # no batch id: none written
    assert json.loads(path.read_text().splitlines()[-1]).keys() == {"t", "at", "readers", "resend_in_doubt"}


SYNCS = """
from pathlib import Path
from newsletter.journal import Journal
with Journal(Path({path!r})) as j:
    j.run(readers=2, resend_in_doubt=False)
    j.batch(1, ["ada@readers.net"])
    j.attempt(1, 1)
    j.ok(1, 202, "m")
    j.retry(1, 500, "e")
    j.failed(1, 500, "e")
    j.replaced(1, "e")
    j.doubt(1, "e")
    j.sync()
    j.end()
    j.schedule("B", __import__("datetime").datetime(2027, 1, 1, tzinfo=__import__("datetime").UTC))
    j.cancel_asked("B")
    j.cancel_refused("B", "e")
    j.cancel("B")
"""


def test_the_records_that_announce_something_are_fsynced_the_outcomes_with_the_next(tmp_path: Path,
                                                                                   short_write_shim: Path) -> None:
    path, trace = tmp_path / "sends" / "issue.jsonl", tmp_path / "trace"
    done = run_python(SYNCS.format(path=str(path)), {**shim_env(short_write_shim, "issue.jsonl"),
                                                     "SHIM_TRACE": str(trace)})
    assert done.returncode == 0, done.stderr
    marks = ["s" if line == "s" else "w" for line in trace.read_text().splitlines()]
    # run, batch, attempt (synced: the request leaves after it), five outcomes, sync(), end, four schedule
    # records, and the fsync of the outcomes written since at close
    assert marks == ["w", "s", "w", "w", "s", "w", "w", "w", "w", "w", "s", "w", "s",
                     "w", "s", "w", "s", "w", "s", "w", "s", "s"]
    # The same records written here, without the shim, are the same bytes (and tell mutmut what this test runs).
    plain = tmp_path / "plain" / "issue.jsonl"
    exec(SYNCS.format(path=str(plain)), {})
    assert [json.loads(line)["t"] for line in plain.read_text().splitlines()] == [
        json.loads(line)["t"] for line in path.read_text().splitlines()]


TORN_ATTEMPT = """
import sys
from pathlib import Path
from newsletter.errors import StorageError
from newsletter.journal import Journal
flag = Path({flag!r})
with Journal(Path({path!r})) as j:
    j.run(readers=2, resend_in_doubt=False)
    j.batch(1, ["ada@readers.net"])
    for record in (lambda: j.attempt(1, 1), j.end):
        flag.touch()  # the disk fills in the middle of the record
        try:
            record()
        except StorageError as exc:
            print(exc)
        flag.unlink()  # room again
        j.retry(1, 500, "after the full disk")
        j.retry(1, 500, "and again")
"""


def test_a_record_torn_by_a_full_disk_is_an_error_and_the_next_starts_on_a_fresh_line(tmp_path: Path,
                                                                                     short_write_shim: Path) -> None:
    path, flag = tmp_path / "issue.jsonl", tmp_path / "disk-is-full"
    done = run_python(TORN_ATTEMPT.format(path=str(path), flag=str(flag)),
                      shim_env(short_write_shim, "issue.jsonl", tear='{"t":"', full_file=flag))
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        f"disk full: could not record the `attempt` record of batch 1 in {path}",
        "  hint: free some space, then run the command again",
        f"disk full: could not record the `end` record in {path}",
        "  hint: free some space, then run the command again"]
    lines = path.read_text().splitlines()
    assert lines[2] == lines[5] == '{"t":"'  # each torn record closed by one newline, and no blank line after
    assert [json.loads(line)["t"] for i, line in enumerate(lines) if i not in (2, 5)] == [
        "run", "batch", "retry", "retry", "retry", "retry"]
    state = load_state(path)
    assert not state.in_doubt(A) and not state.is_sent(A)  # the torn attempt never counted: no request left
    assert not state.runs()[0].ended
    plain = tmp_path / "plain.jsonl"  # with room on the disk (and so mutmut sees what this test runs)
    exec(TORN_ATTEMPT.format(path=str(plain), flag=str(flag)), {})
    assert [json.loads(line)["t"] for line in plain.read_text().splitlines()] == [
        "run", "batch", "attempt", "retry", "retry", "end", "retry", "retry"]


def test_a_journal_not_open_or_that_cannot_be_opened_is_an_error(tmp_path: Path) -> None:
    j = Journal(tmp_path / "issue.jsonl")
    with pytest.raises(SendError) as caught:
        j.attempt(1, 1)
    assert (caught.value.message, caught.value.path) == ("the journal is not open", tmp_path / "issue.jsonl")
    j.sync()  # nothing to sync: nothing happens
    with j:
        j.run(readers=1, resend_in_doubt=False)
    with pytest.raises(SendError, match="the journal is not open"):  # closed again
        j.end()
    (tmp_path / "blocker").write_text("a file where the sends folder should be")
    with pytest.raises(StorageError, match="could not record the start of this send") as failed, \
            Journal(tmp_path / "blocker" / "issue.jsonl"):
        pass
    assert failed.value.path == tmp_path / "blocker" / "issue.jsonl"


# -- replaying ----------------------------------------------------------------------------------------------------
def _write(tmp_path: Path, *records: dict) -> Path:
    path = tmp_path / "issue.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_runs_batches_and_failures_replay_with_their_details(tmp_path: Path) -> None:
    path = _write(tmp_path,
                  {"t": "end", "at": "orphan"},  # an end before any run changes nothing
                  {"t": "run", "at": "2027-01-01T08:00:00+00:00", "readers": None},
                  {"t": "batch", "b": 1, "emails": [A]}, {"t": "attempt", "b": 1},
                  {"t": "batch", "b": 2, "emails": [B, "cy@readers.net"]}, {"t": "attempt", "b": 2},
                  {"t": "failed", "b": 2, "error": "gave up"},
                  {"t": "batch", "b": "x"}, {"t": "ok", "b": None},  # unreadable batch numbers are skipped
                  {"t": "ok", "b": 9},  # an outcome of a batch never defined changes nothing
                  {"t": "end", "at": "2027-01-01T08:05:00+00:00"},
                  {"t": "run", "at": "2027-01-02T08:00:00+00:00", "readers": 2},
                  {"t": "batch", "b": 3, "emails": [B]}, {"t": "attempt", "b": 3}, {"t": "ok", "b": 3},
                  {"t": "batch", "b": 4, "emails": ["dan@readers.net"]}, {"t": "attempt", "b": 4},
                  {"t": "doubt", "b": 4, "error": "timed out"})
    state = load_state(path)
    assert [(r.started, r.ended, r.readers) for r in state.runs()] == [
        ("2027-01-01T08:00:00+00:00", "2027-01-01T08:05:00+00:00", 0), ("2027-01-02T08:00:00+00:00", "", 2)]
    assert state.first_sent_at() == dt.datetime(2027, 1, 1, 8, tzinfo=dt.UTC) == first_run_at(path)
    assert state.next_batch == 10 and state.sent_batches == 1 and state.sent_readers == 1
    assert state.doubt_batches[1].error == "no answer recorded" and state.doubt_batches[4].error == "timed out"
    assert state.doubt_batches[1].readers == 1 and state.doubt_batches[1].emails == [A]
    assert state.in_doubt_readers == 2 and state.doubt_batch_count() == 2
    failed = state.failed_batches[2]  # cy was never delivered: the failure stands, without the addresses
    assert (failed.readers, failed.state, failed.error, failed.emails) == (2, BatchFate.FAILED, "gave up", [])


def test_a_doubt_settled_by_a_later_acceptance_no_longer_counts(tmp_path: Path) -> None:
    path = _write(tmp_path, {"t": "run", "at": "x"},
                  {"t": "batch", "b": 1, "emails": [A, B]}, {"t": "attempt", "b": 1},
                  {"t": "batch", "b": 2, "emails": [A]}, {"t": "attempt", "b": 2}, {"t": "ok", "b": 2})
    state = load_state(path)
    assert state.in_doubt(B) and not state.in_doubt(A) and state.in_doubt_readers == 1
    assert state.doubt_batch_count() == 1  # B is not settled yet
    path.write_text(path.read_text() + '{"t":"batch","b":3,"emails":["bob@readers.net"]}\n{"t":"ok","b":3}\n')
    state = load_state(path)
    assert state.doubt_batch_count() == 0 and state.in_doubt_readers == 0 and len(state.doubt_batches) == 1
    assert state.first_sent_at() is None and first_run_at(path) is None  # "x" is no time
    assert first_run_at(_write(tmp_path, {"t": "batch", "b": 1})) is None
    assert first_run_at(_write(tmp_path, {"t": "run"}, {"t": "run", "at": "2027-01-01T00:00:00+00:00"})) is None


def test_iter_sent_addresses_streams_accepted_batches_in_order(tmp_path: Path) -> None:
    path = _write(tmp_path, {"t": "batch", "b": 1, "emails": [A]}, {"t": "batch", "b": 2, "emails": [B]},
                  {"t": "batch", "b": 3, "emails": ["cy@readers.net"]}, {"t": "replaced", "b": 3},
                  {"t": "ok", "b": 3}, {"t": "ok", "b": 2}, {"t": "failed", "b": 1}, {"t": "ok", "b": 1},
                  {"t": "batch", "emails": ["nobody@readers.net"]}, {"t": "ok"},
                  {"t": "batch", "b": 1, "emails": [A]}, {"t": "failed"}, {"t": "replaced", "b": 99},
                  {"t": "batch", "b": 5}, {"t": "ok", "b": 5}, {"t": "ok", "b": 1})
    assert list(iter_sent_addresses(path)) == [B, "nobody@readers.net", A]


def test_a_schedule_counts_as_sent_until_its_cancel_is_recorded(tmp_path: Path) -> None:
    now = dt.datetime(2027, 1, 1, 8, 0, tzinfo=dt.UTC)
    records = [{"t": "run", "at": "r1", "batch_id": "B-1"},
               {"t": "schedule", "batch_id": "B-1", "send_at": "2027-01-01T09:00:00+00:00"},
               {"t": "batch", "b": 1, "emails": [A]}, {"t": "attempt", "b": 1}, {"t": "ok", "b": 1},
               {"t": "batch", "b": 2, "emails": [B]}, {"t": "attempt", "b": 2}, {"t": "ok", "b": 2},
               {"t": "batch", "b": 3, "emails": ["cy@readers.net"]}, {"t": "attempt", "b": 3}]
    state = load_state(_write(tmp_path, *records))
    assert state.is_sent(A) and state.is_sent(B) and state.sent_batches == 2 and state.in_doubt("cy@readers.net")
    pending = state.pending_schedule()
    assert pending is not None and pending.batch_id == "B-1" and pending.pending(now)
    assert pending.minutes_left(now) == 60.0 and not pending.cancel_unknown
    assert not pending.pending(now + dt.timedelta(hours=2)) and pending.minutes_left(now + dt.timedelta(hours=2)) == -60
    asked = [*records, {"t": "cancel_asked", "batch_id": "B-1", "at": "t1"}]
    info = load_state(_write(tmp_path, *asked)).schedules[0]
    assert (info.cancel_asked_at, info.cancel_refused, info.cancel_unknown) == ("t1", "", True)
    refused = [*asked, {"t": "cancel_refused", "batch_id": "B-1", "error": ""}, {"t": "cancel_asked", "batch_id": "X"}]
    state = load_state(_write(tmp_path, *refused))
    info = state.schedules[0]
    assert (info.cancel_refused, info.cancel_unknown) == ("refused", False) and state.is_sent(A)
    cancelled = [*refused, {"t": "cancel", "batch_id": "B-1", "at": "t2"},
                 {"t": "batch", "b": 4, "emails": ["dan@readers.net"]}, {"t": "attempt", "b": 4}, {"t": "ok", "b": 4}]
    state = load_state(_write(tmp_path, *cancelled))
    info = state.schedules[0]
    assert info.cancelled_at == "t2" and not info.pending(now) and state.pending_schedule() is None
    assert not state.is_sent(A) and not state.in_doubt("cy@readers.net")  # SendGrid discards the whole batch
    assert state.sent_batches == 1 and state.is_sent("dan@readers.net")  # sent after the cancel: not scheduled
    assert not pending.pending(now + dt.timedelta(hours=1))  # at send_at it is going out: too late
    assert ScheduleInfo("B-0", "2000-01-01T00:00:00+00:00").minutes_left() < 0  # against the clock, when not given
    assert ScheduleInfo("B-3", "2999-01-01T00:00:00+00:00").minutes_left() > 0
    bad = ScheduleInfo("B-2", "not a time")
    assert bad.minutes_left(now) == -1.0 and not bad.pending(now)


def test_a_scheduled_run_that_cancels_another_keeps_its_own_schedule(tmp_path: Path) -> None:
    state = load_state(_write(tmp_path,
                              {"t": "schedule", "batch_id": "OLD", "send_at": "2027-01-01T09:00:00+00:00"},
                              {"t": "schedule", "batch_id": "NEW", "send_at": "2027-01-01T10:00:00+00:00"},
                              {"t": "cancel", "batch_id": "OLD", "at": "t"},
                              {"t": "batch", "b": 1, "emails": [A]}, {"t": "ok", "b": 1},
                              {"t": "cancel", "batch_id": "NEW", "at": "t"},
                              {"t": "batch", "b": 2, "emails": [B]}, {"t": "ok", "b": 2}))
    assert not state.is_sent(A) and state.is_sent(B) and state.sent_batches == 1
    assert [(s.batch_id, s.cancelled_at) for s in state.schedules] == [("OLD", "t"), ("NEW", "t")]


def test_the_send_lock_is_one_per_issue_and_never_waits(tmp_path: Path) -> None:
    from filelock import Timeout

    assert sends_dir(tmp_path) == tmp_path / "subscribers" / "sends"
    assert journal_path(tmp_path, "issue") == tmp_path / "subscribers" / "sends" / "issue.jsonl"
    lock = send_lock(tmp_path, "issue")
    assert lock.lock_file == str(tmp_path / "subscribers" / "sends" / "issue.lock") and lock.timeout == 0
    with lock:
        with pytest.raises(Timeout):
            send_lock(tmp_path, "issue").acquire()
        with send_lock(tmp_path, "other"):  # another issue sends meanwhile
            pass


def test_records_missing_their_fields_replay_as_empty_never_as_none(tmp_path: Path) -> None:
    state = load_state(_write(tmp_path, {"t": "run"}, {"t": "end"}, {"t": "schedule", "batch_id": "B"},
                              {"t": "cancel_asked", "batch_id": "B"}, {"t": "cancel_refused", "batch_id": "B"},
                              {"t": "batch", "emails": [A]}, {"t": "attempt"}, {"t": "failed"},
                              {"t": "batch", "b": 2}, {"t": "schedule"}, {"t": "cancel", "batch_id": "B"}))
    assert [(r.started, r.ended, r.readers) for r in state.runs()] == [("", "", 0)]
    first, second = state.schedules
    assert (first.batch_id, first.send_at, first.cancel_asked_at, first.cancel_refused, first.cancelled_at) == (
        "B", "", "", "refused", "")
    assert (second.batch_id, second.send_at) == ("", "")
    assert state.failed_batches[0].error == "" and state.failed_batches[0].readers == 1
    assert state.next_batch == 3 and not state.doubt_batches  # batch 2 named nobody, and was never attempted


def test_a_run_scheduled_under_a_batch_id_is_cancelled_with_it(tmp_path: Path) -> None:
    # The run record carries the batch id: its batches belong to the schedule even before `schedule` is read.
    state = load_state(_write(tmp_path, {"t": "run", "batch_id": "B"}, {"t": "batch", "b": 1, "emails": [A]},
                              {"t": "attempt", "b": 1}, {"t": "cancel", "batch_id": "B"},
                              {"t": "run"}, {"t": "batch", "b": 2, "emails": [B]}, {"t": "attempt", "b": 2},
                              {"t": "cancel", "batch_id": "B"}))
    assert not state.in_doubt(A)  # cancelled with its schedule
    assert state.in_doubt(B)  # the next run was not scheduled: a later cancel of "B" leaves it
    state = load_state(_write(tmp_path, {"t": "schedule", "batch_id": "B", "send_at": "2027-01-01T09:00:00+00:00"},
                              {"t": "cancel_refused", "batch_id": "OTHER", "error": "no such batch"},
                              {"t": "batch", "b": 1, "emails": [A]}, {"t": "ok", "b": 1},
                              {"t": "batch", "b": 2, "emails": [B]}, {"t": "ok", "b": 2}))
    assert state.schedules[0].cancel_refused == "" and state.sent_batches == 2 and state.sent_readers == 2
    state = load_state(_write(tmp_path, {"t": "batch", "b": 1, "emails": [A]}, {"t": "ok", "b": 1},
                              {"t": "schedule", "batch_id": "B", "send_at": "2027-01-01T09:00:00+00:00"},
                              {"t": "batch", "b": 2, "emails": [B]}, {"t": "ok", "b": 2},
                              {"t": "batch", "b": 3, "emails": ["cy@readers.net"]}, {"t": "attempt", "b": 3},
                              {"t": "retry", "b": 3}))
    assert state.is_sent(A) and state.is_sent(B) and state.sent_batches == 2  # sent, and scheduled: both count
    state = load_state(_write(tmp_path, {"t": "batch", "b": 1, "emails": [A]}, {"t": "ok", "b": 1},
                              {"t": "batch", "b": 2, "emails": [B]}, {"t": "ok", "b": 2},
                              {"t": "schedule", "batch_id": "B", "send_at": "x"},
                              {"t": "cancel_refused", "batch_id": "B", "error": "too late"}))
    assert state.sent_batches == 2 and state.schedules[0].cancel_refused == "too late"
    # a run whose schedule was cancelled: what it does after is not part of it (a second cancel leaves it)
    state = load_state(_write(tmp_path, {"t": "run", "batch_id": "B"}, {"t": "cancel", "batch_id": "B"},
                              {"t": "batch", "b": 1, "emails": [A]}, {"t": "attempt", "b": 1},
                              {"t": "cancel", "batch_id": "B"}))
    assert state.in_doubt(A)
    assert not state.in_doubt("cy@readers.net") and 3 not in state.doubt_batches  # answered: not in doubt


def test_send_at_is_written_in_utc_whatever_the_local_zone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    monkeypatch.setenv("TZ", "Asia/Tokyo")
    time.tzset()
    try:
        with Journal(tmp_path / "issue.jsonl") as j:
            j.schedule("B", dt.datetime(2027, 1, 2, 7, 30, tzinfo=dt.UTC))
    finally:
        monkeypatch.undo()
        time.tzset()
    assert json.loads((tmp_path / "issue.jsonl").read_text())["send_at"] == "2027-01-02T07:30:00+00:00"


def test_waiting_readers_counts_those_sendgrid_holds_for_a_send_still_to_come(tmp_path: Path) -> None:
    future, past = "2999-01-01T09:00:00+00:00", "2000-01-01T09:00:00+00:00"
    state = load_state(_write(tmp_path,
                              {"t": "schedule", "batch_id": "GONE", "send_at": past},
                              {"t": "batch", "b": 1, "emails": ["old@readers.net"]}, {"t": "ok", "b": 1},
                              {"t": "schedule", "batch_id": "SOON", "send_at": future},
                              {"t": "batch", "b": 2, "emails": [A, B]}, {"t": "ok", "b": 2},
                              {"t": "batch", "b": 3, "emails": ["cy@readers.net"]}, {"t": "ok", "b": 3},
                              {"t": "schedule", "batch_id": "DROPPED", "send_at": future},
                              {"t": "batch", "b": 4, "emails": ["dan@readers.net"]}, {"t": "ok", "b": 4},
                              {"t": "cancel", "batch_id": "DROPPED", "at": "t"}))
    assert state.waiting_readers() == 3  # SOON's three; GONE went out, DROPPED was cancelled
    assert load_state(_write(tmp_path, {"t": "run", "at": "x"})).waiting_readers() == 0


def test_finished_run_is_the_last_run_when_it_went_out_whole(tmp_path: Path) -> None:
    ended = [{"t": "run", "at": "r1"}, {"t": "batch", "b": 1, "emails": [A]}, {"t": "attempt", "b": 1},
             {"t": "ok", "b": 1}, {"t": "end", "at": "e1"}]
    assert load_state(_write(tmp_path, {"t": "batch", "b": 1})).finished_run() is None  # no run
    done = load_state(_write(tmp_path, *ended)).finished_run()
    assert done is not None and (done.started, done.ended) == ("r1", "e1")
    later = load_state(_write(tmp_path, *ended, {"t": "run", "at": "r2"}, {"t": "end", "at": "e2"})).finished_run()
    assert later is not None and later.started == "r2"  # the last run decides
    assert load_state(_write(tmp_path, *ended, {"t": "run", "at": "r2"})).finished_run() is None  # killed
    failed = [*ended[:-1], {"t": "batch", "b": 2, "emails": [B]}, {"t": "attempt", "b": 2},
              {"t": "failed", "b": 2, "error": "e"}, {"t": "end", "at": "e1"}]
    assert load_state(_write(tmp_path, *failed)).finished_run() is None
    doubt = [*ended[:-1], {"t": "batch", "b": 2, "emails": [B]}, {"t": "attempt", "b": 2}, {"t": "end", "at": "e1"}]
    assert load_state(_write(tmp_path, *doubt)).finished_run() is None
    scheduled = [{"t": "run", "at": "r1", "batch_id": "S"},
                 {"t": "schedule", "batch_id": "S", "send_at": "2999-01-01T00:00:00+00:00"}, *ended[1:]]
    assert load_state(_write(tmp_path, *scheduled)).finished_run() is not None
    assert load_state(_write(tmp_path, *scheduled, {"t": "cancel", "batch_id": "S", "at": "t"})).finished_run() is None


def test_an_fsync_refused_is_an_error_of_sync_and_closing_goes_on(tmp_path: Path) -> None:
    import errno
    import os

    fifo = tmp_path / "issue.jsonl"
    os.mkfifo(fifo)  # fsync(2) of a pipe fails (EINVAL), as on a file system that cannot sync
    with Journal(fifo) as j:
        with pytest.raises(StorageError) as caught:
            j.sync()
        assert caught.value.errno == errno.EINVAL and caught.value.path == fifo
        assert str(caught.value) == f"Invalid argument: could not record the outcomes of this send in {fifo}"
    # the fsync of the outcomes at close failed too: it is skipped, the descriptor still closed
    with pytest.raises(SendError, match="the journal is not open"):
        j.end()


def test_a_run_or_batch_not_scheduled_replays_with_no_schedule(tmp_path: Path) -> None:
    state = load_state(_write(tmp_path, {"t": "batch", "b": 1, "emails": [A]}, {"t": "attempt", "b": 1},
                              {"t": "run", "at": "r1"}, {"t": "batch", "b": 2, "emails": [B]},
                              {"t": "attempt", "b": 2},
                              {"t": "run", "at": "r2", "batch_id": "S"},
                              {"t": "schedule", "batch_id": "S", "send_at": "2999-01-01T00:00:00+00:00"},
                              {"t": "batch", "b": 3, "emails": ["cy@readers.net"]}, {"t": "attempt", "b": 3},
                              {"t": "cancel", "batch_id": "S", "at": "t"},
                              {"t": "batch", "b": 4, "emails": ["dan@readers.net"]}, {"t": "attempt", "b": 4}))
    assert [(r.started, r.schedule) for r in state.runs()] == [("r1", ""), ("r2", "S")]
    # before any run, in a plain run, and after the run's own schedule was cancelled: "" (not scheduled)
    assert {b: s.schedule for b, s in state.doubt_batches.items()} == {1: "", 2: "", 4: ""}
