"""counting.py: who gets the issue, counted in a forked child while the send renders and checks; counted again
when the ledger changed meanwhile (a sync), and what the child finds wrong raised in the parent as usual.

A process running other threads counts in place (the in-process sends of test_send.py and test_preflight.py count
that way, and so would this test process once Chromium or a server ran in it). So the library is called here from
one child process without threads, where the count forks as in a real `newsletter send`."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest
from conftest import new_project, readers, record, write_list

from newsletter.ledger import ledger_path

COUNTS = """
import json, sys, threading
from pathlib import Path
from newsletter.counting import Count
from newsletter.journal import JournalState
from newsletter.ledger import Event, Kind, Ledger, ledger_path

assert threading.active_count() == 1  # so every Count below forks its child
late, unchanged, unreadable = (Path(p) for p in sys.argv[1:])
out = {}

count = Count(late, JournalState(), resend_in_doubt=False)  # counting in its child from now on
Ledger(ledger_path(late)).record([Event("READER2@readers.net", Kind.BOUNCE)])  # the sync pulls a bounce meanwhile
count.again_if_changed()
spool, tally = count.finish()
out["late"] = [[line.split("\\t")[0] for line in spool.read().splitlines()], tally.readers, tally.suppressed,
               tally.total]

count = Count(unchanged, JournalState(), resend_in_doubt=False)
_, first = count.finish()
Ledger(ledger_path(unchanged)).record([Event("reader1@readers.net", Kind.BOUNCE)])
count.again_if_changed()
_, second = count.finish()
out["unchanged"] = [first.readers, second.readers, second.suppressed]

count = Count(unreadable, JournalState(), resend_in_doubt=False)
try:
    count.finish()
    out["unreadable"] = None
except Exception as exc:
    out["unreadable"] = [type(exc).__name__, str(exc), str(exc.path), exc.line]
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def counted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The three counts below, made by the library in one child process (one start-up for the three)."""
    base = tmp_path_factory.mktemp("counting")
    late, unchanged, unreadable = (new_project(base / name) for name in ("late", "unchanged", "unreadable"))
    write_list(late, readers(3))
    record(ledger_path(late), "reader0@readers.net", "unsubscribe")
    write_list(unchanged, readers(2))
    write_list(unreadable, readers(3))
    path = unreadable / "subscribers" / "subscribers.csv"
    path.write_bytes(path.read_text().encode("utf-16"))
    done = subprocess.run([sys.executable, "-c", COUNTS, str(late), str(unchanged), str(unreadable)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    result["path"] = str(path)
    return result


def test_the_count_in_its_child_sees_an_opt_out_added_since_it_started(counted: dict[str, Any]) -> None:
    assert counted["late"] == [["reader1@readers.net"], 1, 2, 3]


def test_a_count_not_told_of_the_change_keeps_its_first_answer(counted: dict[str, Any]) -> None:
    """What again_if_changed is for: a count that read the ledger before the bounce counts the reader in."""
    assert counted["unchanged"] == [2, 1, 1]


def test_a_list_the_child_cannot_read_is_raised_in_the_parent(counted: dict[str, Any]) -> None:
    kind, message, path, line = counted["unreadable"]
    assert kind == "SubscriberError" and "not UTF-8 text" in message
    assert (path, line) == (counted["path"], 1)
