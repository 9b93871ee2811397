"""`newsletter stats`: a real send to the fake SendGrid, then SendGrid's signed webhook batches through the app;
the figures of one issue (`--issue`, table and --json) and of every sent issue."""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path

import pytest
from conftest import SECRET, SEED_SLUG, Cli, configure, sent_journal
from fake_sendgrid import FakeSendGrid
from signed_webhook import NEXT_WORKSHOP_URL as NEXT
from signed_webhook import SignedWebhook, event, send_issue, with_tracking

from newsletter.ledger import ledger_path
from newsletter.stats import link_key, percent, same_page
from newsletter.tokens import make_token

CTA = "https://micromoments.net/workshops/from-trauma-to-triumph"
SECOND = "the-quiet-courage-of-rest"


def emails(n: int, start: int = 0) -> list[str]:
    return [f"reader{i}@readers.net" for i in range(start, start + n)]


@pytest.fixture
def tracked(ready_project: Path, env: dict[str, str]) -> Cli:
    """The filled-in newsletter with open and click tracking on, and the next workshop's register URL."""
    with_tracking(ready_project)
    return Cli(ready_project)


def rate(n: int, base: int) -> float:
    return round(n / base, 4)


def feed_the_first_issue(hook: SignedWebhook, readers: list[str]) -> None:
    """What SendGrid reports about 400 readers: 395 delivered, 2 hard bounces, a block, a deferral never
    delivered, a drop for a reason of the sender's; opens by people and by Apple's proxy; CTA clicks repeated
    and tagged; spam reports; and an event about the writer's own test copy."""
    r, s = readers, SEED_SLUG
    batch = [event("delivered", e, s) for e in r[:395]]
    batch += [event("bounce", r[396], s, type="bounce", reason="550 5.1.1 no such user"),
              event("bounce", r[397], s, type="bounce", reason="550 5.1.1 no such user"),
              event("bounce", r[398], s, type="blocked", reason="452 mailbox full"),
              event("deferred", r[399], s, response="421 try again later", attempt="3"),
              event("dropped", r[395], s, reason="Recipient List over Package Quota"),
              event("delivered", "me@writer.net", s)]  # a `--to` test copy: not a reader of the send
    hook.post(batch)
    opens = [event("open", e, s, sg_machine_open=False) for e in r[:100]]
    opens += [event("open", e, s, sg_machine_open=False) for e in r[:30]]  # opened twice: counted once
    opens += [event("open", e, s, sg_machine_open=True) for e in r[100:150] + r[:10]]  # Apple's proxy
    opens.append(event("open", "me@writer.net", s, sg_machine_open=False))
    hook.post(opens)
    clicks = [event("click", e, s, url=f"{CTA}?utm_source=newsletter&utm_medium=email") for e in r[:20]]
    clicks.append(event("click", r[0], s, url=f"{CTA}/?utm_campaign=micro-moments"))  # again, another tag
    clicks += [event("click", r[0], s, url=CTA), event("click", r[1], s, url=f"{CTA}#dates")]
    clicks += [event("click", e, s, url="https://micromoments.net/about?ref=letter") for e in r[20:25]]
    clicks += [event("click", e, s, url=NEXT) for e in r[30:32]]
    own_link = f"https://letters.micromoments.net/unsubscribe/{make_token(SECRET, r[25])}"
    clicks.append(event("click", r[25], s, url=own_link))
    hook.post(clicks)
    hook.post([event("unsubscribe", r[26], s), event("spamreport", r[40], s), event("spamreport", r[41], s)])


def test_one_issue_honestly(tracked: Cli, fake: FakeSendGrid, monkeypatch: pytest.MonkeyPatch) -> None:
    readers = emails(400)
    send_issue(tracked, SEED_SLUG, readers)
    hook = SignedWebhook(tracked.root, monkeypatch)
    feed_the_first_issue(hook, readers)
    one_click = hook.client.post(f"/unsubscribe/{make_token(SECRET, readers[27])}",
                                 content=b"List-Unsubscribe=One-Click",
                                 headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert one_click.status_code == 200
    with open(ledger_path(tracked.root), "a", encoding="utf-8") as fh:  # two sign-ups confirmed since the send
        fh.write("new1@readers.net,subscribe,2099-01-01T00:00:00Z,https://x/subscribe,\n"
                 "new2@readers.net,subscribe,2099-01-02T00:00:00Z,https://x/subscribe,\n"
                 "old@readers.net,subscribe,2020-01-01T00:00:00Z,https://x/subscribe,\n"
                 # our own page before the send: not this issue's unsubscribe
                 f"{readers[28]},unsubscribe,2020-01-01T00:00:00Z,page,\n")

    result = tracked("stats", "--issue", SEED_SLUG, "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    d = 395
    assert list(data) == ["issue", "sent", "delivered", "opens", "machine_opens", "clicks", "cta", "links",
                          "bounces", "unsubscribes", "spamreports", "warnings", "joined_since"]
    assert data["issue"] == SEED_SLUG and data["sent"] == 400
    assert data["delivered"] == {"count": 395, "rate": rate(395, 400)}
    assert data["opens"] == {"count": 100, "rate": rate(100, d)}
    assert data["machine_opens"] == {"count": 60, "rate": rate(60, d)}
    assert data["clicks"] == {"count": 27, "rate": rate(27, d)}  # the unsubscribe link is not a click
    assert data["cta"] == {"workshop": "From Trauma to Triumph",
                           "url": "https://micromoments.net/workshops/from-trauma-to-triumph",
                           "unique_clicks": 20, "rate": rate(20, d)}
    links = {(link["url"], link["role"]): link["unique_clicks"] for link in data["links"]}
    assert links == {
        (CTA, "workshop"): 20, (f"{CTA}/", "workshop"): 1,  # the same page: both are the CTA (20 readers)
        ("https://micromoments.net/about?ref=letter", None): 5,
        (NEXT, "next_workshop"): 2,  # reported apart from the CTA
        ("https://letters.micromoments.net/unsubscribe/…", "unsubscribe"): 1,  # folded: no reader's token shown
    }
    assert data["bounces"] == {"hard": {"count": 2, "rate": rate(2, 400)}, "soft": {"count": 2, "rate": rate(2, 400)},
                               "dropped": {"Recipient List over Package Quota": 1}}
    assert data["unsubscribes"] == {"count": 2, "rate": rate(2, d)}  # SendGrid's and our one-click
    assert data["spamreports"] == {"count": 2, "rate": rate(2, d)}
    assert data["joined_since"] == 2
    assert data["warnings"] == [
        f"spam reports {percent(2 / d)} of delivered: above Gmail's 0.3 % limit, so Gmail may refuse or "
        "spam-folder your mail; send only to readers who asked for it, and keep the unsubscribe link plain to see"]
    assert percent(2 / d) == "0.51 %"
    # the ledger: what suppresses, and nothing for the sender's own drop, the block or the deferral
    lines = {tuple(line.split(",")[:2]) for line in ledger_path(tracked.root).read_text().splitlines()[1:]}
    assert {(readers[i], "bounce") for i in (396, 397)} <= lines
    assert {(readers[26], "unsubscribe"), (readers[27], "unsubscribe"), (readers[40], "spamreport")} <= lines
    assert not {line for line in lines if line[0] in (readers[395], readers[398], readers[399])}

    table = tracked("stats", "--issue", SEED_SLUG).output
    assert "delivered          395    98.8 %  of sent" in table
    assert "human opens        100    25.3 %  of delivered" in table
    assert "machine opens       60    15.2 %  of delivered: mail privacy proxies" in table
    assert "workshop            20     5.1 %  of delivered clicked From Trauma to Triumph (" in table
    assert "dropped              1  Recipient List over Package Quota: 1" in table
    assert "warning: spam reports 0.51 % of delivered: above Gmail's 0.3 % limit" in table
    assert f"       2  {NEXT}  (next workshop)" in table


def test_every_sent_issue_newest_first_in_one_table(tracked: Cli, fake: FakeSendGrid,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    root = tracked.root
    second = root / "issues" / SECOND
    shutil.copytree(root / "issues" / SEED_SLUG, second)
    yaml = second / "issue.yaml"
    yaml.write_text(yaml.read_text().replace("Micro Moments of Connection: The Heartbeat of Life",
                                             "The Quiet Courage of Rest").replace("2026-11-26", "2026-12-03"))
    send_issue(tracked, SEED_SLUG, emails(10))
    send_issue(tracked, SECOND, emails(20))
    hook = SignedWebhook(root, monkeypatch)
    hook.post([event("delivered", e, SEED_SLUG) for e in emails(10)]
              + [event("open", e, SEED_SLUG) for e in emails(4)]
              + [event("delivered", e, SECOND) for e in emails(16)]
              + [event("click", e, SECOND, url=f"{CTA}?utm_source=x") for e in emails(2)]
              + [event("open", "someone@else.net", "an-issue-never-sent")])
    listed = json.loads(tracked("stats", "--json").output)
    assert [i["issue"] for i in listed] == [SECOND, SEED_SLUG]
    assert listed[1] == json.loads(tracked("stats", "--issue", SEED_SLUG, "--json").output)
    assert listed[0]["delivered"] == {"count": 16, "rate": 0.8} and listed[0]["cta"]["unique_clicks"] == 2
    assert listed[1]["opens"] == {"count": 4, "rate": 0.4}
    table = tracked("stats").output.splitlines()
    assert table[0].split() == ["date", "title", "sent", "delivered", "human", "opens", "CTA", "clicks",
                                "unsubscribes", "spam", "reports", "joined", "since"]
    day = table[1][:10]
    assert dt.date.fromisoformat(day) >= dt.date(2026, 12, 1)  # when it was sent, not the issue's date
    assert table[1] == (f"{day}  {'The Quiet Courage of Rest':<34}  {20:>7}  {'80.0 %':>9}  {'0.0 %':>11}  "
                        f"{'12.5 %':>10}  {0:>12}  {'0.0 %':>12}  {0:>12}")
    assert table[2].startswith(f"{day}  Micro Moments of Connection: The…        10    100.0 %       40.0 %")


def test_tracking_off_is_said_not_shown_as_zero(ready_project: Path, env: dict[str, str],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    configure(ready_project)  # open_tracking and click_tracking default to off
    cli = Cli(ready_project)
    send_issue(cli, SEED_SLUG, emails(5))
    SignedWebhook(ready_project, monkeypatch).post([event("delivered", e, SEED_SLUG) for e in emails(5)])
    data = json.loads(cli("stats", "--issue", SEED_SLUG, "--json").output)
    assert data["opens"] == data["machine_opens"] == data["clicks"] == {"count": None, "rate": None}
    assert data["cta"]["unique_clicks"] is None and data["links"] == []
    assert data["warnings"] == [
        "open tracking is off (`sendgrid: {open_tracking: true}` in newsletter.yaml turns it on): opens are not "
        "counted",
        "click tracking is off (`sendgrid: {click_tracking: true}` in newsletter.yaml turns it on): clicks, the "
        "workshop's included, are not counted"]
    table = cli("stats").output
    row = table.splitlines()[1].split("100.0 %")[1].split()
    assert row == ["off", "off", "0", "0.0", "%", "0"]  # human opens and CTA clicks: off, never 0 %


@pytest.mark.parametrize(("spam", "hard", "expected"), [
    (1, 0, ["spam reports 0.10 % of delivered: Gmail asks senders to stay under 0.1 % (and blocks at 0.3 %)"]),
    (3, 0, ["spam reports 0.30 % of delivered: above Gmail's 0.3 % limit"]),
    (0, 21, ["hard bounces 2.1 % of sent: above 2 %"]),
    (0, 20, []),
])
def test_warnings_at_gmails_thresholds_and_two_percent_hard_bounces(
        tracked: Cli, fake: FakeSendGrid, monkeypatch: pytest.MonkeyPatch, spam: int, hard: int,
        expected: list[str]) -> None:
    readers = emails(1000)
    sent_journal(tracked.root, readers)  # as a send leaves it (the send itself is test_send.py's)
    hook = SignedWebhook(tracked.root, monkeypatch)
    hook.post([event("delivered", e, SEED_SLUG) for e in readers[:1000 - hard]]
              + [event("bounce", e, SEED_SLUG, type="bounce") for e in readers[1000 - hard:]]
              + [event("spamreport", e, SEED_SLUG) for e in readers[:spam]])
    warnings = json.loads(tracked("stats", "--issue", SEED_SLUG, "--json").output)["warnings"]
    assert len(warnings) == len(expected)
    assert all(w.startswith(x) for w, x in zip(warnings, expected, strict=True))


def test_links_compare_on_scheme_host_and_path() -> None:
    assert link_key("HTTPS://Micromoments.net/w?utm_source=a&id=7&fbclid=x#top") == "https://micromoments.net/w?id=7"
    assert same_page(f"{CTA}/?utm_medium=email", CTA)
    assert not same_page("http://micromoments.net/workshops/from-trauma-to-triumph", CTA)
    assert not same_page(f"{CTA}-online", CTA)


def test_stats_of_an_unknown_issue_is_refused(ready_project: Path) -> None:
    result = Cli(ready_project)("stats", "--issue", "no-such-issue")
    assert result.exit_code != 0 and "no-such-issue" in result.output


def test_stats_right_after_a_send_says_why_there_is_nothing_yet(ready_project: Path) -> None:
    sent_journal(ready_project, ["a@readers.net", "b@readers.net"])
    out = Cli(ready_project)("stats", "--issue", SEED_SLUG).output
    assert "sent                 2" in out
    assert ("no delivery events yet: is `newsletter serve` reachable at https://letters.micromoments.net/webhooks/"
            "sendgrid and the Event Webhook on? (see README)") in out
    assert "0.0%" not in out
