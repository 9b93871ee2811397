"""The one background loop `serve` runs its workers on (the SendGrid pusher, the outbox): a daemon thread that
does a round after each nudge, and while a round says something must wait (SendGrid down), tries again after
`retry` seconds, doubling up to `max_retry`."""

from __future__ import annotations

import logging
import threading

log = logging.getLogger("newsletter.worker")


class RetryingWorker:
    """Subclasses give `_round()`: it does the work and returns why something still waits ("" when nothing)."""

    name = "worker"

    def __init__(self, *, retry: float, max_retry: float, poll: float | None = None) -> None:
        self.retry, self.max_retry, self.poll = retry, max_retry, poll
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.rounds = 0

    def _round(self) -> str:
        raise NotImplementedError

    def nudge(self) -> None:
        """Something new may wait: look now (the caller never waits for it)."""
        self._wake.set()

    def start(self) -> RetryingWorker:
        """Start the thread; what waits from before a restart goes first."""
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()
        self._wake.set()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the thread (what waits stays where it is kept, for the next start)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=timeout)

    def _run(self) -> None:
        delay = self.retry
        while not self._stop.is_set():
            self._wake.wait(self.poll)
            self._wake.clear()
            if self._stop.is_set():
                return
            why = self._round()
            self.rounds += 1
            if not why:
                delay = self.retry
                continue
            log.warning("%s: %s; trying again in %.0f s", self.name,
                        "".join(c if c.isprintable() else "?" for c in why), delay)
            self._stop.wait(delay)
            delay = min(delay * 2, self.max_retry)
            self._wake.set()
