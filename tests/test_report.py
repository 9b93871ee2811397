"""`newsletter report`: the page after real sends and signed webhook batches, rendered by Chromium with
JavaScript off: it has the bars in the brand's colour, every figure equals `stats --json`, and `serve` does
not publish it."""

from __future__ import annotations

import datetime as dt
import io
import json
import re
import shutil
import stat
from pathlib import Path
from typing import Any

import pytest
from conftest import SEED_SLUG, Cli
from fake_sendgrid import FakeSendGrid
from signed_webhook import SignedWebhook, event, send_issue, with_tracking
from starlette.testclient import TestClient

from newsletter.ledger import ledger_path
from newsletter.web import create_app

ACCENT = "#0b6e4f"  # the brand's accent, set in newsletter.yaml: the workshop's bars are drawn in it
CTA = "https://micromoments.net/workshops/from-trauma-to-triumph"
SECOND = "the-quiet-courage-of-rest"
HOUR = 3600


def emails(n: int, start: int = 0) -> list[str]:
    return [f"reader{i}@readers.net" for i in range(start, start + n)]


@pytest.fixture(scope="module")
def page_data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Two issues sent to the fake, events for both, sign-ups and opt-outs in the ledger, then `report`."""
    mp = pytest.MonkeyPatch()
    fake = FakeSendGrid().start()
    try:
        yield _build(tmp_path_factory.mktemp("report"), mp, fake)
    finally:
        fake.stop()  # fails if a body broke SendGrid's schema
        mp.undo()


def _build(tmp: Path, mp: pytest.MonkeyPatch, fake: FakeSendGrid) -> dict[str, Any]:
    from conftest import FILLED_CONFIG, SECRET, new_project

    root = new_project(tmp / "letters", FILLED_CONFIG)
    with_tracking(root, f'brand:\n  colors:\n    accent: "{ACCENT}"\n')
    for name, value in {"SENDGRID_API_URL": fake.url, "SENDGRID_API_KEY": "SG.test-key.for-the-fake",
                        "NEWSLETTER_SECRET": SECRET}.items():
        mp.setenv(name, value)
    second = root / "issues" / SECOND
    shutil.copytree(root / "issues" / SEED_SLUG, second)
    (second / "issue.yaml").write_text((second / "issue.yaml").read_text().replace(
        "Micro Moments of Connection: The Heartbeat of Life", "The Quiet Courage of Rest"))
    cli = Cli(root)
    send_issue(cli, SEED_SLUG, emails(30))
    start = send_issue(cli, SECOND, emails(40))
    hook = SignedWebhook(root, mp)
    hook.post([event("delivered", e, SEED_SLUG) for e in emails(28)]
              + [event("open", e, SEED_SLUG, sg_machine_open=False) for e in emails(12)]
              + [event("click", e, SEED_SLUG, url=f"{CTA}?utm_source=newsletter") for e in emails(3)])
    hook.post([event("delivered", e, SECOND) for e in emails(38)]
              + [event("bounce", "reader39@readers.net", SECOND, type="bounce")]
              + [event("open", e, SECOND, at=start + HOUR / 2) for e in emails(10)]  # hour 1
              + [event("open", e, SECOND, at=start + 5 * HOUR - 60) for e in emails(5, 10)]  # hour 5
              + [event("open", e, SECOND, at=start + 30 * HOUR) for e in emails(5, 15)]  # hour 30
              + [event("open", "reader20@readers.net", SECOND, at=start + 80 * HOUR)]  # after 72 h
              + [event("open", e, SECOND, sg_machine_open=True, at=start + 60) for e in emails(10, 25)]
              + [event("click", e, SECOND, url=f"{CTA}?utm_medium=email", at=start + HOUR / 2) for e in emails(5)]
              + [event("click", "reader5@readers.net", SECOND, url=CTA, at=start + 50 * HOUR)]
              + [event("spamreport", "reader30@readers.net", SECOND)])
    today = dt.datetime.now(dt.UTC)
    last_week = today - dt.timedelta(days=7)
    with open(ledger_path(root), "a", encoding="utf-8") as fh:
        for i, at in enumerate([today, today, last_week]):
            fh.write(f"new{i}@readers.net,subscribe,{at:%Y-%m-%dT%H:%M:%SZ},https://x/subscribe,\n")
        fh.write(f"reader31@readers.net,unsubscribe,{today:%Y-%m-%dT%H:%M:%SZ},page,\n")
        fh.write(f"old@readers.net,unsubscribe,{today:%Y-%m-%dT%H:%M:%SZ},import:mailchimp,\n")  # never joined here
    result = cli("report")
    assert result.exit_code == 0, result.output
    path = root / "build" / "report" / "index.html"
    assert f"wrote {path}" in result.output
    stats = json.loads(cli("stats", "--json").output)
    return {"root": root, "path": path, "stats": stats, "monday": (today - dt.timedelta(days=today.weekday())).date()}


@pytest.fixture(scope="module")
def page(page_data: dict[str, Any], browser: Any) -> Any:
    context = browser.new_context(java_script_enabled=False, viewport={"width": 900, "height": 800})
    p = context.new_page()
    p.goto(page_data["path"].as_uri())
    yield p
    context.close()


def test_it_is_a_private_static_page(page_data: dict[str, Any]) -> None:
    path: Path = page_data["path"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600  # it holds what readers did
    text = path.read_text()
    assert "<script" not in text.lower() and " on" + "load=" not in text.lower()
    assert text.count("<svg") == 3


def _at(data: Any, where: list[Any]) -> Any:
    for key in where:
        data = data[key]
    return data


def _matches(shown: str, value: Any) -> bool:
    """A figure as shown (`1,234`, `40.0 %`, `0.35 %`, `off`, `–`) against the value in `stats --json`."""
    if value is None:
        return shown in ("off", "–", "")
    if isinstance(value, float):
        number = float(shown.removesuffix(" %")) / 100
        return abs(number - value) <= (0.00005 if shown.count(".") and len(shown.split(".")[1]) > 3 else 0.0005)
    return shown.replace(",", "") == str(value)


def test_every_figure_equals_stats_json(page: Any, page_data: dict[str, Any]) -> None:
    figures = [(json.loads(el.get_attribute("data-stat")), el.text_content())
               for el in page.locator("[data-stat]").all()]
    stats = page_data["stats"]
    assert len(figures) > 40
    wrong = [(where, shown, _at(stats, where)) for where, shown in figures if not _matches(shown, _at(stats, where))]
    assert wrong == []
    # each issue's main figures are on the page, in the table and on the bars
    shown = {tuple(where) for where, _ in figures}
    for i in range(len(stats)):
        for key in ("delivered", "opens", "machine_opens", "clicks", "unsubscribes", "spamreports"):
            assert (i, key, "count") in shown and (i, key, "rate") in shown
        assert (i, "cta", "unique_clicks") in shown and (i, "sent") in shown and (i, "joined_since") in shown
    # and the figures are the ones fed: newest first
    assert [s["issue"] for s in stats] == [SECOND, SEED_SLUG]
    assert stats[0]["opens"]["count"] == 21 and stats[0]["machine_opens"]["count"] == 10
    assert stats[0]["cta"]["unique_clicks"] == 6 and stats[1]["cta"]["unique_clicks"] == 3
    assert stats[0]["joined_since"] == 2  # this week's two sign-ups
    warnings = page.locator(".warnings li").all_text_contents()
    assert any("above Gmail's 0.3 % limit" in w for w in warnings)
    assert any("hard bounces 2.5 % of sent" in w for w in warnings)


def _pixels(png: bytes, color: str) -> int:
    from PIL import Image

    target = tuple(int(color[i:i + 2], 16) for i in (1, 3, 5))
    image = Image.open(io.BytesIO(png)).convert("RGB")
    return sum(n for n, rgb in image.getcolors(1 << 20) or []
               if all(abs(a - b) <= 2 for a, b in zip(rgb, target, strict=True)))


def test_the_bars_are_drawn_in_the_brand_colours(page: Any) -> None:
    chart = page.locator("#issues-chart")
    box = chart.bounding_box()
    assert box["width"] > 400 and box["height"] > 100  # it renders, at the page's width
    png = chart.screenshot()
    accent = _pixels(png, ACCENT)
    assert accent > 300  # the workshop's bars
    assert _pixels(png, "#5f5a55") > accent  # delivered (the brand's muted colour) is taller than CTA clicks
    assert _pixels(page.locator("#growth-chart").screenshot(), ACCENT) > 100  # joined, week by week


def test_the_newest_issue_hour_by_hour(page: Any) -> None:
    def series(name: str) -> list[int]:
        return [int(n) for n in page.locator(f"#timeline-chart polyline.line-{name}").get_attribute("data-series")
                .split(",")]

    opens = series("opens")
    assert len(opens) == 73 and opens[0] == 0
    assert opens[1] == 10 and opens[4] == 10 and opens[5] == 15 and opens[30] == 20 and opens[72] == 20
    clicks = series("clicks")
    assert clicks[1] == 5 and clicks[49] == 5 and clicks[50] == 6
    assert page.locator("[data-timeline=opens]").text_content() == "20"


def test_the_list_week_by_week(page: Any, page_data: dict[str, Any]) -> None:
    weeks = {g.get_attribute("data-week"): (g.get_attribute("data-joined"), g.get_attribute("data-left"))
             for g in page.locator("#growth-chart g[data-week]").all()}
    monday = page_data["monday"]
    # this week: two sign-ups; left: the page unsubscribe, the spam report and the hard bounce, not the import
    assert weeks[monday.isoformat()] == ("2", "3")
    assert weeks[(monday - dt.timedelta(days=7)).isoformat()] == ("1", "0")
    assert sum(int(left) for _, left in weeks.values()) == 3


def test_serve_does_not_publish_it(page_data: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    from conftest import SECRET

    monkeypatch.setenv("NEWSLETTER_SECRET", SECRET)
    client = TestClient(create_app(page_data["root"]))
    for path in ("/report", "/report/", "/report/index.html", "/build/report/index.html", "/archive/report/",
                 "/build/report/", "/index.html"):
        response = client.get(path)
        assert response.status_code == 404, path
        assert "what landed" not in response.text


def test_it_is_never_written_where_serve_publishes(ready_project: Path) -> None:
    result = Cli(ready_project)("report", "--out", str(ready_project / "build" / "site" / "stats"))
    assert result.exit_code == 2 and "which `serve` publishes" in result.output
    assert not (ready_project / "build" / "site").exists()


def test_with_nothing_sent_the_page_says_so(ready_project: Path) -> None:
    out = ready_project / "elsewhere"
    assert Cli(ready_project)("report", "--out", str(out)).exit_code == 0
    text = (out / "index.html").read_text()
    assert "No issue has been sent yet." in text and not re.search(r"data-stat=", text)
