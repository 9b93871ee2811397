"""journal.py called directly: every record sequence replays to the right fate, torn tails never count."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from newsletter.journal import BatchFate, Journal, first_run_at, load_state

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
