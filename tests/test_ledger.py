"""The ledger: append-only, fsynced under a lock, torn lines tolerated, latest event wins."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from conftest import Cli
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from newsletter.ledger import HEADER, Event, Ledger, append_event, append_events, ledger_path


def test_first_append_writes_the_header(project: Path) -> None:
    path = ledger_path(project)
    append_event(path, " Ada@Example.NET ", "unsubscribe", "cli", "asked, politely\nby mail")
    lines = path.read_text().splitlines()
    assert lines[0] == HEADER
    email, event, at, source, detail = lines[1].split(",", 4)
    assert (email, event, source) == ("ada@example.net", "unsubscribe", "cli")
    assert at.endswith("Z") and detail == '"asked, politely by mail"'


def test_latest_event_wins_case_insensitively(project: Path) -> None:
    path = ledger_path(project)
    append_event(path, "ada@example.net", "bounce")
    append_event(path, "ADA@example.net", "resubscribe")
    append_event(path, "bob@example.net", "spamreport")
    ledger = Ledger(path)
    assert not ledger.is_suppressed("  Ada@Example.Net")
    assert ledger.is_suppressed("BOB@EXAMPLE.NET ")
    assert not ledger.is_suppressed("carol@example.net")


def test_torn_last_line_suppresses_and_next_append_starts_fresh(project: Path, cli: Cli) -> None:
    path = ledger_path(project)
    append_event(path, "ada@example.net", "resubscribe")
    with open(path, "ab") as fh:
        fh.write(b"torn@example.net,unsubsc")  # a crash mid-write
    ledger = Ledger(path)
    assert ledger.is_suppressed("TORN@example.net")
    assert len(ledger.problems) == 1 and "torn last line" in ledger.problems[0].message
    assert cli("unsubscribe", "next@example.net").exit_code == 0
    lines = path.read_text().splitlines()
    assert lines[-2] == "torn@example.net,unsubsc"
    assert lines[-1].startswith("next@example.net,unsubscribe,")
    counted = cli("subscribers", "count")
    assert "unreadable line, counted as suppressing torn@example.net" in counted.output
    again = Ledger(path)
    assert again.is_suppressed("torn@example.net") and again.is_suppressed("next@example.net")
    assert not again.is_suppressed("ada@example.net")
    assert any("unreadable line" in p.message for p in again.problems)


def test_refresh_reads_only_new_lines(project: Path) -> None:
    path = ledger_path(project)
    append_event(path, "a@example.net", "unsubscribe")
    ledger = Ledger(path)
    assert not ledger.is_suppressed("b@example.net")
    append_event(path, "b@example.net", "unsubscribe")
    assert ledger.refresh() == 1
    assert ledger.is_suppressed("b@example.net")
    assert ledger.refresh() == 0


def test_missing_ledger_is_empty(project: Path) -> None:
    ledger = Ledger(ledger_path(project))
    assert not ledger.is_suppressed("a@example.net") and not ledger.problems


WRITER = """
import sys
from pathlib import Path
from newsletter.ledger import append_event
path, start, count = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
for i in range(start, start + count):
    append_event(path, f"reader{i}@example.net", "unsubscribe", "test", "x" * 300)
"""


def test_concurrent_writers_never_interleave(project: Path) -> None:
    path = ledger_path(project)
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(i * 200), "200"]) for i in range(6)]
    assert all(p.wait(timeout=120) == 0 for p in procs)
    lines = path.read_text().splitlines()
    assert lines[0] == HEADER and len(lines) == 1 + 6 * 200
    ledger = Ledger(path)
    assert not ledger.problems
    assert all(ledger.is_suppressed(f"reader{i}@example.net") for i in range(1200))


def test_concurrent_cli_unsubscribes_after_a_torn_line(project: Path) -> None:
    path = ledger_path(project)
    path.parent.mkdir(exist_ok=True)
    path.write_bytes((HEADER + "\nhalf@example.net,unsub").encode())
    exe = str(Path(sys.executable).parent / "newsletter")
    procs = [subprocess.Popen([exe, "unsubscribe", "--root", str(project), f"c{i}@example.net"],
                              stdout=subprocess.DEVNULL) for i in range(12)]
    assert all(p.wait(timeout=120) == 0 for p in procs)
    ledger = Ledger(path)
    assert all(ledger.is_suppressed(f"C{i}@example.net") for i in range(12))
    assert ledger.is_suppressed("half@example.net")
    assert sum(1 for line in path.read_text().splitlines() if ",unsubscribe," in line) == 12


case_variants = st.text(alphabet="abcdefxyz", min_size=1, max_size=8).flatmap(
    lambda local: st.tuples(st.just(local), st.lists(st.booleans(), min_size=len(local) + 11,
                                                      max_size=len(local) + 11)))


def _variant(address: str, flips: list[bool]) -> str:
    return "".join(c.upper() if f else c for c, f in zip(address, flips, strict=False)) + address[len(flips):]


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None)
@given(case_variants, st.sampled_from(["unsubscribe", "bounce", "spamreport", "invalid"]),
       st.text(" \t", max_size=2))
def test_suppressed_in_any_case_is_never_active(tmp_path_factory, data, event, pad) -> None:
    local, flips = data
    address = f"{local}@example.net"
    root = tmp_path_factory.mktemp("ledger")
    path = root / "subscribers" / "unsubscribes.csv"
    append_events(path, [Event(pad + _variant(address, flips) + pad, event)])
    ledger = Ledger(path)
    for variant in (address, address.upper(), _variant(address, flips[::-1]), f" {address.title()} "):
        assert ledger.is_suppressed(variant)
