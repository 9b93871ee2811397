"""worker.py: serve's background loop (the SendGrid pusher and the outbox run on it): a round at start and after
each nudge; while a round says something waits, another after `retry` seconds, doubling up to `max_retry`."""

from __future__ import annotations

import logging
import time

import pytest
from conftest import wait_for

from newsletter.worker import RetryingWorker


class Rounds(RetryingWorker):
    """A worker whose first `failing` rounds say SendGrid is down; it notes when each round ran."""

    name = "test worker"

    def __init__(self, failing: int, **timing: float) -> None:
        super().__init__(**timing)
        self.failing = failing
        self.at: list[float] = []

    def _round(self) -> str:
        self.at.append(time.monotonic())
        return "SendGrid is down\n(HTTP 503)" if len(self.at) <= self.failing else ""


def test_a_round_at_start_then_one_per_nudge_and_none_after_stop() -> None:
    worker = Rounds(0, retry=60, max_retry=60).start()  # what waits from before a restart goes first
    try:
        wait_for(lambda: worker.rounds == 1, what="the first round")
        worker.nudge()
        wait_for(lambda: worker.rounds == 2, what="the round the nudge asked for")
    finally:
        worker.stop()
    worker.nudge()
    assert worker.rounds == 2 and worker._thread is not None and not worker._thread.is_alive()


def test_while_something_waits_it_retries_doubling_up_to_the_maximum(caplog: pytest.LogCaptureFixture) -> None:
    worker = Rounds(4, retry=0.05, max_retry=0.2)
    with caplog.at_level(logging.WARNING, logger="newsletter.worker"):
        worker.start()
        try:
            wait_for(lambda: worker.rounds == 5, what="four retries and a round that succeeds")
        finally:
            worker.stop()
    gaps = [b - a for a, b in zip(worker.at, worker.at[1:], strict=False)]
    assert [g >= want for g, want in zip(gaps, (0.05, 0.1, 0.2, 0.2), strict=True)] == [True] * 4, gaps
    assert gaps[3] < 0.4, gaps  # capped at max_retry, not 0.4
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0] == "test worker: SendGrid is down?(HTTP 503); trying again in 0 s"  # one line, never two
    assert len(lines) == 4
