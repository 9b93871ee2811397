"""`check --links`: request every link of an issue (HEAD, then GET when HEAD is refused), concurrently."""

from __future__ import annotations

import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

USER_AGENT = "newsletter-link-check/0.1 (+https://pypi.org/project/newsletter)"


@dataclass(frozen=True)
class LinkResult:
    """What requesting one URL gave: an HTTP status, or an error text."""

    url: str
    status: int | None
    error: str = ""
    content_type: str = ""

    @property
    def broken(self) -> bool:
        """A status of 400 or more, or no answer."""
        return self.status is None or self.status >= 400


def _request(url: str, method: str, timeout: float) -> tuple[int, str]:
    req = urllib.request.Request(url, method=method, headers={"User-Agent": USER_AGENT})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return int(resp.status), str(resp.headers.get("Content-Type", ""))
    except urllib.error.HTTPError as exc:
        return int(exc.code), ""


def check_link(url: str, timeout: float = 10.0) -> LinkResult:
    """HEAD the URL; servers that refuse HEAD (405, 501, 403...) get a GET."""
    try:
        status, ctype = _request(url, "HEAD", timeout)
        if status >= 400:
            status, ctype = _request(url, "GET", timeout)
        return LinkResult(url, status, content_type=ctype)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        return LinkResult(url, None, str(reason))


def is_offline(results: list[LinkResult]) -> bool:
    """Every request failed before any server answered, for want of a name lookup or a route: no network
    (a laptop on a train), not a page full of broken links."""
    if not results or any(r.status is not None for r in results):
        return False
    markers = ("name or service not known", "temporary failure in name resolution", "nodename nor servname",
               "network is unreachable", "no address associated", "getaddrinfo failed", "no route to host")
    return all(any(m in r.error.lower() for m in markers) for r in results)


def check_links(urls: list[str], *, timeout: float = 10.0, workers: int = 8) -> list[LinkResult]:
    """Every URL, checked concurrently; results in the order given."""
    unique = list(dict.fromkeys(urls))
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(unique) or 1))) as pool:
        return list(pool.map(lambda u: check_link(u, timeout), unique))
