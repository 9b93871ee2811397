"""Mutation check for the promises' guard tests: each change is made alone, its test is run, the file is
restored. Every line must say `caught`. Run by hand: `.venv/bin/python tests/mutations.py` (about a minute)."""

import pathlib
import subprocess

root = pathlib.Path(__file__).resolve().parent.parent
M = [
 ("attempt record not fsynced", "src/newsletter/journal.py",
  "            if sync:\n",
  "            if sync and record['t'] != _ATTEMPT:\n",
  "tests/test_send.py::test_each_request_leaves_after_its_attempt_record_is_whole_and_synced"),
 ("attempt record written after the request", "src/newsletter/send.py",
  "            self.journal.attempt(b, attempt)  # whole and fsynced, or no request\n            try:\n"
  "                with self.report_lock:\n                    self.report.requests += 1\n"
  "                flight.left = True\n                accepted = self._send(body)",
  "            try:\n                with self.report_lock:\n                    self.report.requests += 1\n"
  "                flight.left = True\n                accepted = self._send(body)\n"
  "                self.journal.attempt(b, attempt)",
  "tests/test_send.py::test_each_request_leaves_after_its_attempt_record_is_whole_and_synced"),
 ("429 ignores X-RateLimit-Reset", "src/newsletter/send.py",
  "delay = exc.retry_after if exc.retry_after is not None else backoff_delay(rate_waits, self.backoff)",
  "delay = backoff_delay(rate_waits, self.backoff)",
  "tests/test_send.py::test_429_waits_for_the_reset_then_retries"),
 ("5xx retried without backoff", "src/newsletter/send.py",
  "            self.sleep(backoff_delay(attempt, self.backoff))",
  "            pass",
  "tests/test_send.py::test_5xx_retried_with_backoff"),
 ("HTML greeting uses the text tag", "src/newsletter/render.py",
  "    greeting = (GREETING_TEXT_TAG if for_text else GREETING_HTML_TAG) if issue.greeting else \"\"",
  "    greeting = GREETING_TEXT_TAG if issue.greeting else \"\"",
  "tests/test_send.py::test_the_delivered_html_greets_with_the_escaped_name"),
 ("serve accepts unsigned webhooks without a key", "src/newsletter/webhook.py",
  "    if not public_key_b64:\n        raise WebhookError(",
  "    if not public_key_b64:\n        return\n        raise WebhookError(",
  "tests/test_serve.py::test_without_a_public_key_every_webhook_is_refused"),
 ("== instead of hmac.compare_digest", "src/newsletter/tokens.py",
  "hmac.compare_digest(given, _mac(secret, email))", "given == _mac(secret, email)",
  "tests/test_units.py::test_tokens_compare_in_constant_time"),
]
for name, f, old, new, test in M:
    p = root / f
    text = p.read_text()
    assert old in text, (name, old)
    p.write_text(text.replace(old, new, 1))
    try:
        r = subprocess.run([str(root / ".venv/bin/pytest"), "-q", "-x", "-p", "no:cacheprovider", test],
                           cwd=root, capture_output=True, text=True, timeout=300)
        verdict = "caught" if r.returncode != 0 else "NOT CAUGHT"
        print(f"{verdict:10} {name:48} by {test}", flush=True)
    finally:
        p.write_text(text)
