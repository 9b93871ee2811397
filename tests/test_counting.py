"""counting.py: who gets the issue, counted in a forked child while the send renders and checks; counted again
when the ledger changed meanwhile (a sync), and what the child finds wrong raised in the parent as usual.

A process running other threads counts in place (the in-process sends of test_send.py and test_preflight.py);
these tests call the library from a process without threads, so the count forks as in a real `newsletter send`."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from conftest import readers, record, wait_for, write_list

from newsletter.counting import Count
from newsletter.errors import SubscriberError
from newsletter.journal import JournalState
from newsletter.ledger import ledger_path


@pytest.fixture
def alone() -> None:
    """No other thread in this process, so the count forks (daemon threads an earlier test left end first)."""
    wait_for(lambda: threading.active_count() == 1, 60, "this process to run no other thread")


def test_the_count_in_its_child_sees_an_opt_out_added_since_it_started(alone: None, project: Path) -> None:
    write_list(project, readers(3))
    record(ledger_path(project), "reader0@readers.net", "unsubscribe")
    count = Count(project, JournalState(), resend_in_doubt=False)  # counting in its child from now on
    record(ledger_path(project), "READER2@readers.net", "bounce")  # the sync pulls a bounce meanwhile
    count.again_if_changed()
    spool, tally = count.finish()
    assert [line.split("\t")[0] for line in spool.read().splitlines()] == ["reader1@readers.net"]
    assert (tally.readers, tally.suppressed, tally.total) == (1, 2, 3)


def test_a_count_not_told_of_the_change_keeps_its_first_answer(alone: None, project: Path) -> None:
    """What again_if_changed is for: a child that read the ledger before the bounce counts the reader in."""
    write_list(project, readers(2))
    count = Count(project, JournalState(), resend_in_doubt=False)
    _, first = count.finish()
    record(ledger_path(project), "reader1@readers.net", "bounce")
    count.again_if_changed()
    _, second = count.finish()
    assert (first.readers, second.readers, second.suppressed) == (2, 1, 1)


def test_a_list_the_child_cannot_read_is_raised_in_the_parent(alone: None, project: Path) -> None:
    write_list(project, readers(3))
    path = project / "subscribers" / "subscribers.csv"
    path.write_bytes(path.read_text().encode("utf-16"))
    count = Count(project, JournalState(), resend_in_doubt=False)
    with pytest.raises(SubscriberError) as err:
        count.finish()
    assert "not UTF-8 text" in str(err.value) and err.value.path == path and err.value.line == 1
