"""What landed, shown: the text of `stats` and the static page of `report` (inline SVG charts in the brand's
colours, drawn here; no JavaScript)."""

from __future__ import annotations

import datetime as dt
import html
import json
from dataclasses import dataclass
from pathlib import Path

from .config import Config, load_config
from .errors import UsageError
from .files import write_atomic
from .stats import Count, IssueStats, Landed, Timeline, Week, landed, percent

REPORT_DIR = ("build", "report")
PUBLISHED_DIR = ("build", "site")  # the archive `serve` publishes: the report must never land in it
CHART_ISSUES = 12  # the bar chart shows the newest issues; the table lists them all
TITLE_WIDTH = 34


# -- text, for `stats` -----------------------------------------------------------------------------------------
def _figure(label: str, c: Count, of: str) -> str:
    if c.count is None:
        return f"{label:<14}{'off':>8}"
    return f"{label:<14}{c.count:>8}  {percent(c.rate):>8}  {of}"


def issue_lines(s: IssueStats) -> list[str]:
    """`stats --issue SLUG`: one figure a line, the links, then the warnings."""
    when = f"; first send {s.sent_at:%Y-%m-%d %H:%M} UTC" if s.sent_at else ""
    lines = [f"{'issue':<14}{s.slug}" + (f" ({s.title})" if s.title != s.slug else ""),
             f"{'sent':<14}{s.sent:>8}  (accepted by SendGrid, from the send journal{when})"]
    if s.joined_since is not None:
        lines.append(f"{'joined since':<14}{s.joined_since:>8}  (confirmed sign-ups since this issue went out)")
    if s.sent and s.heard:
        lines += [
            _figure("delivered", s.delivered, "of sent"),
            _figure("human opens", s.opens, "of delivered"),
            _figure("machine opens", s.machine_opens, "of delivered: mail privacy proxies, not counted as opens"),
            _figure("clicks", s.clicks, "of delivered clicked a link"),
        ]
        if s.cta is not None:
            lines.append(_figure("workshop", Count(s.cta.unique_clicks, s.cta.rate),
                                 f"of delivered clicked {s.cta.workshop} ({s.cta.url or 'no register_url'})"))
        lines += [_figure("hard bounces", s.bounces.hard, "of sent"),
                  _figure("soft bounces", s.bounces.soft, "of sent (blocked, expired, or deferred and not delivered)"),
                  _figure("unsubscribes", s.unsubscribes, "of delivered"),
                  _figure("spam reports", s.spamreports, "of delivered")]
        if s.bounces.dropped:
            lines.append(f"{'dropped':<14}{sum(s.bounces.dropped.values()):>8}  "
                         + ", ".join(f"{reason}: {n}" for reason, n in s.bounces.dropped.items()))
        if s.links:
            lines.append("links (unique clicks):")
            lines += [f"  {link.unique_clicks:>6}  {link.url}" + (f"  ({link.role.replace('_', ' ')})" if link.role
                                                                   else "") for link in s.links]
    return lines + [f"warning: {w}" for w in s.warnings]


def _short(title: str, width: int = TITLE_WIDTH) -> str:
    return title if len(title) <= width else title[:width - 1].rstrip() + "…"


def _rate(c: Count) -> str:
    return "off" if c.count is None else percent(c.rate)


def table_lines(issues: list[IssueStats]) -> list[str]:
    """`stats`: one row per sent issue, newest first, then each issue's warnings."""
    if not issues:
        return ["no issue has been sent yet"]
    head = (f"{'date':<10}  {'title':<{TITLE_WIDTH}}  {'sent':>7}  {'delivered':>9}  {'human opens':>11}  "
            f"{'CTA clicks':>10}  {'unsubscribes':>12}  {'spam reports':>12}  {'joined since':>12}")
    lines = [head]
    for s in issues:
        date = f"{s.sent_at:%Y-%m-%d}" if s.sent_at else "not sent"
        cta = _rate(Count(s.cta.unique_clicks, s.cta.rate)) if s.cta else "no CTA"
        joined = "" if s.joined_since is None else str(s.joined_since)
        lines.append(f"{date:<10}  {_short(s.title):<{TITLE_WIDTH}}  {s.sent:>7}  {percent(s.delivered.rate):>9}  "
                     f"{_rate(s.opens):>11}  {cta:>10}  {s.unsubscribes.count or 0:>12}  "
                     f"{percent(s.spamreports.rate):>12}  {joined:>12}")
    lines += [f"{s.slug}: {w}" for s in issues for w in s.warnings]
    return lines


# -- the page, for `report` ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Written:
    """Where the report went and how many issues it shows."""

    path: Path
    issues: int


def write_report(root: Path, out_dir: Path | None = None) -> Written:
    """Compute what landed and write <out_dir>/index.html (default build/report/), private to its owner."""
    out = out_dir or root.joinpath(*REPORT_DIR)
    published = root.joinpath(*PUBLISHED_DIR).resolve()
    if out.resolve() == published or published in out.resolve().parents:
        raise UsageError(f"{out} is inside {published}, which `serve` publishes: the report holds readers' "
                         "behaviour", hint="write it elsewhere, e.g. the default build/report")
    config = load_config(root)
    data = landed(root, charts=True)
    path = out / "index.html"
    write_atomic(path, render_page(config, data), what="the report", private=True)
    return Written(path, len(data.issues))


def _hex(rgb: tuple[float, float, float]) -> str:
    return "#" + "".join(f"{round(c):02x}" for c in rgb)


def _rgb(color: str) -> tuple[float, float, float]:
    h = color.lstrip("#")
    h = "".join(c * 2 for c in h) if len(h) == 3 else h
    return int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16)


def mix(a: str, b: str, share: float) -> str:
    """Colour `a` with `share` of colour `b` mixed in (hex in, hex out)."""
    ra, rb = _rgb(a), _rgb(b)
    return _hex(tuple(x + (y - x) * share for x, y in zip(ra, rb, strict=True)))  # type: ignore[arg-type]


def palette(config: Config) -> dict[str, str]:
    """The chart colours, from the brand: the workshop's clicks in the accent, opens a lighter accent."""
    c = config.colors
    return {"delivered": c["muted"], "opens": mix(c["accent"], c["content"], 0.45), "cta": c["accent"],
            "joined": c["accent"], "left": c["muted"], "axis": c["muted"], "text": c["text"]}


def _where(*path: int | str) -> str:
    """Where a figure is in `stats --json` (the index in the list, then the keys), as an HTML attribute."""
    return html.escape(json.dumps(list(path)), quote=True)


def _count_text(value: int | None) -> str:
    return "off" if value is None else f"{value:,}"


def _issue_bars(issues: list[IssueStats], colors: dict[str, str]) -> str:
    """Per issue, oldest on the left: delivered, human opens and CTA clicks as bars, each labelled."""
    shown = list(enumerate(issues))[:CHART_ISSUES][::-1]
    if not shown:
        return "<p>No issue has been sent yet.</p>"
    width, height, top, bottom = 680, 270, 24, 44
    group = (width - 20) / len(shown)
    bar = min(28.0, group / 4)
    scale = max(max(s.sent for _, s in shown), 1)
    parts = [f'<svg class="chart" id="issues-chart" viewBox="0 0 {width} {height}" role="img" '
             'aria-labelledby="issues-chart-title" shape-rendering="crispEdges">',
             '<title id="issues-chart-title">Each issue: delivered, human opens and workshop clicks</title>',
             f'<line x1="10" y1="{height - bottom}" x2="{width - 10}" y2="{height - bottom}" '
             f'stroke="{colors["axis"]}" stroke-width="1"/>']
    for slot, (index, s) in enumerate(shown):
        x0 = 10 + slot * group + (group - 3 * bar) / 2
        bars = (("delivered", s.delivered.count, _where(index, "delivered", "count")),
                ("opens", s.opens.count, _where(index, "opens", "count")),
                ("cta", s.cta.unique_clicks if s.cta else None, _where(index, "cta", "unique_clicks")))
        for k, (kind, value, path) in enumerate(bars):
            x = x0 + k * bar
            h = (value or 0) / scale * (height - top - bottom)
            y = height - bottom - h
            label = {"delivered": "delivered", "opens": "human opens", "cta": "workshop clicks"}[kind]
            parts.append(f'<rect class="bar-{kind}" x="{x:.1f}" y="{y:.1f}" width="{bar - 2:.1f}" height="{h:.1f}" '
                         f'fill="{colors[kind]}"><title>{html.escape(s.title)}: {label}</title></rect>')
            if kind != "cta" or s.cta is not None:
                parts.append(f'<text x="{x + (bar - 2) / 2:.1f}" y="{y - 4:.1f}" text-anchor="middle" font-size="10" '
                             f'fill="{colors["text"]}" data-stat="{path}">{html.escape(_count_text(value))}</text>')
        day = f"{s.sent_at:%d %b}" if s.sent_at else "not sent"
        for line, (text, dy) in enumerate(((day, 16), (_short(s.title, max(8, int(group / 7))), 30))):
            parts.append(f'<text x="{x0 + 1.5 * bar:.1f}" y="{height - bottom + dy}" text-anchor="middle" '
                         f'font-size="{11 - line}" fill="{colors["text"]}">{html.escape(text)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _legend(items: list[tuple[str, str]]) -> str:
    return '<p class="legend">' + "".join(
        f'<span><i style="background:{color}"></i>{html.escape(label)}</span>' for label, color in items) + "</p>"


def _timeline_chart(t: Timeline | None, colors: dict[str, str]) -> str:
    """The newest issue's unique human opens and clicks, counted up hour by hour over its first 72 hours."""
    if t is None:
        return "<p>No issue has been sent yet.</p>"
    width, height, left, top, bottom = 680, 220, 40, 16, 30
    hours = len(t.opens) - 1
    scale = max(max(t.opens + t.clicks), 1)

    def points(series: list[int]) -> str:
        return " ".join(f"{left + h / hours * (width - left - 10):.1f},"
                        f"{height - bottom - n / scale * (height - top - bottom):.1f}" for h, n in enumerate(series))

    parts = [f'<svg class="chart" id="timeline-chart" viewBox="0 0 {width} {height}" role="img" '
             'aria-labelledby="timeline-chart-title">',
             f'<title id="timeline-chart-title">{html.escape(t.slug)}: human opens and clicks over the first '
             f'{hours} hours</title>',
             f'<line x1="{left}" y1="{height - bottom}" x2="{width - 10}" y2="{height - bottom}" '
             f'stroke="{colors["axis"]}"/>']
    for h in range(0, hours + 1, 12):
        x = left + h / hours * (width - left - 10)
        parts.append(f'<text x="{x:.1f}" y="{height - bottom + 16}" text-anchor="middle" font-size="11" '
                     f'fill="{colors["text"]}">{h} h</text>')
    for name, series, color in (("opens", t.opens, colors["opens"]), ("clicks", t.clicks, colors["cta"])):
        parts.append(f'<polyline class="line-{name}" fill="none" stroke="{color}" stroke-width="3" '
                     f'points="{points(series)}" data-series="{",".join(map(str, series))}"/>')
    parts.append("</svg>")
    return "".join(parts) + (
        f'<p class="note">After {hours} hours: <span data-timeline="opens">{t.opens[-1]:,}</span> readers had '
        f'opened it, <span data-timeline="clicks">{t.clicks[-1]:,}</span> had clicked a link.</p>')


def _growth_chart(weeks: list[Week], colors: dict[str, str]) -> str:
    """Confirmed sign-ups up, readers who left down, week by week."""
    if not weeks:
        return "<p>Nobody has joined or left yet.</p>"
    width, height, mid = 680, 200, 100
    slot = (width - 20) / len(weeks)
    scale = max(max(max(w.joined, w.left) for w in weeks), 1)
    parts = [f'<svg class="chart" id="growth-chart" viewBox="0 0 {width} {height}" role="img" '
             'aria-labelledby="growth-chart-title" shape-rendering="crispEdges">',
             '<title id="growth-chart-title">The list week by week: joined (up) and left (down)</title>',
             f'<line x1="10" y1="{mid}" x2="{width - 10}" y2="{mid}" stroke="{colors["axis"]}"/>']
    wide = min(slot * 0.7, 36)
    for i, w in enumerate(weeks):
        x = 10 + i * slot + (slot - wide) / 2
        up, down = w.joined / scale * (mid - 20), w.left / scale * (mid - 20)
        tip = f"week of {w.start:%d %b %Y}: {w.joined} joined, {w.left} left"
        parts.append(f'<g data-week="{w.start.isoformat()}" data-joined="{w.joined}" data-left="{w.left}">'
                     f'<title>{html.escape(tip)}</title>'
                     f'<rect x="{x:.1f}" y="{mid - up:.1f}" width="{wide:.1f}" height="{up:.1f}" '
                     f'fill="{colors["joined"]}"/>'
                     f'<rect x="{x:.1f}" y="{mid}" width="{wide:.1f}" height="{down:.1f}" '
                     f'fill="{colors["left"]}"/></g>')
    first, last = weeks[0].start, weeks[-1].start
    parts.append(f'<text x="10" y="{height - 4}" font-size="11" fill="{colors["text"]}">{first:%d %b %Y}</text>'
                 f'<text x="{width - 10}" y="{height - 4}" font-size="11" text-anchor="end" '
                 f'fill="{colors["text"]}">{last:%d %b %Y}</text></svg>')
    return "".join(parts)


def _cell(value: Count, *path: int | str, count_key: str = "count") -> str:
    """A count and its rate, each tagged with its place in `stats --json`."""
    return (f'<td><span data-stat="{_where(*path, count_key)}">{_count_text(value.count)}</span>'
            f'<br><small data-stat="{_where(*path, "rate")}">{html.escape(_rate(value))}</small></td>')


def _table(issues: list[IssueStats]) -> str:
    """Every sent issue, newest first, with every figure of `stats --json`."""
    head = ("date", "issue", "sent", "delivered", "human opens", "machine opens", "clicks", "workshop clicks",
            "hard bounces", "soft bounces", "dropped", "unsubscribes", "spam reports", "joined since")
    rows = []
    for i, s in enumerate(issues):
        cta = (_cell(Count(s.cta.unique_clicks, s.cta.rate), i, "cta", count_key="unique_clicks") if s.cta
               else "<td>no workshop</td>")
        dropped = "<br>".join(f'{html.escape(reason)}: <span data-stat="{_where(i, "bounces", "dropped", reason)}">'
                              f"{n:,}</span>" for reason, n in s.bounces.dropped.items()) or "none"
        joined = "" if s.joined_since is None else f"{s.joined_since:,}"
        rows.append(
            f"<tr><td>{s.sent_at:%Y-%m-%d}</td>" if s.sent_at else "<tr><td>not sent</td>")
        rows.append(
            f"<td>{html.escape(s.title)}</td><td data-stat=\"{_where(i, 'sent')}\">{s.sent:,}</td>"
            + _cell(s.delivered, i, "delivered") + _cell(s.opens, i, "opens")
            + _cell(s.machine_opens, i, "machine_opens")
            + _cell(s.clicks, i, "clicks") + cta + _cell(s.bounces.hard, i, "bounces", "hard")
            + _cell(s.bounces.soft, i, "bounces", "soft") + f"<td>{dropped}</td>"
            + _cell(s.unsubscribes, i, "unsubscribes") + _cell(s.spamreports, i, "spamreports")
            + f'<td data-stat="{_where(i, "joined_since")}">{joined}</td></tr>')
    return ('<div class="wide"><table><thead><tr>' + "".join(f"<th>{h}</th>" for h in head)
            + "</tr></thead><tbody>" + "".join(rows) + "</tbody></table></div>")


def _links(issues: list[IssueStats]) -> str:
    if not issues or not issues[0].links:
        return "<p>No clicks recorded for the newest issue.</p>"
    items = "".join(f'<li><span data-stat="{_where(0, "links", k, "unique_clicks")}">{link.unique_clicks:,}</span> '
                    f"{html.escape(link.url)}" + (f" <em>({link.role.replace('_', ' ')})</em>" if link.role else "")
                    + "</li>" for k, link in enumerate(issues[0].links))
    return f"<ul class=\"links\">{items}</ul>"


def _warnings(issues: list[IssueStats]) -> str:
    items = "".join(f"<li><strong>{html.escape(s.title)}</strong>: {html.escape(w)}</li>"
                    for s in issues for w in s.warnings)
    return f'<h2>Needs your attention</h2><ul class="warnings">{items}</ul>' if items else ""


def _style(config: Config) -> str:
    c, f = config.colors, config.fonts
    return (f"body{{margin:0;background:{c['background']};color:{c['text']};font-family:{f['body']};"
            "line-height:1.5}"
            f"main{{max-width:960px;margin:0 auto;padding:24px;background:{c['content']}}}"
            f"h1,h2{{font-family:{f['heading']};color:{c['heading']};line-height:1.25}}"
            f"a{{color:{c['accent']}}} .chart{{width:100%;height:auto;display:block}}"
            f".private{{border-left:4px solid {c['accent']};padding:8px 12px;background:{c['cta_background']}}}"
            ".legend span{margin-right:16px;white-space:nowrap}"
            ".legend i{display:inline-block;width:12px;height:12px;margin-right:6px;vertical-align:-1px}"
            ".wide{overflow-x:auto} table{border-collapse:collapse;font-size:14px}"
            f"th,td{{padding:6px 8px;border-bottom:1px solid {mix(c['muted'], c['content'], 0.7)};"
            "text-align:right;vertical-align:top;min-width:3em}"
            "th:nth-child(2),td:nth-child(2){text-align:left;min-width:12em} td:first-child{white-space:nowrap}"
            f".note{{color:{c['muted']};font-size:14px}} .warnings li{{margin-bottom:6px}}")


def render_page(config: Config, data: Landed) -> str:
    """The whole page: warnings, three charts, the table of every figure, the newest issue's links."""
    colors = palette(config)
    name = html.escape(config.name)
    made = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return (
        f'<!doctype html><html lang="{html.escape(config.language)}"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1"><meta name="robots" content="noindex">'
        f"<title>{name}: what landed</title><style>{_style(config)}</style></head><body><main>"
        f"<h1>{name}: what landed</h1>"
        "<p class=\"private\">This page shows what readers did: keep it to yourself. "
        "<code>newsletter serve</code> does not publish it.</p>"
        f'<p class="note">Made {made}. Delivered and bounces are rates of those sent; the rest, of those '
        "delivered. Human opens leave out the machine opens of mail privacy proxies (Apple Mail).</p>"
        + _warnings(data.issues)
        + "<h2>Each issue</h2>"
        + _legend([("delivered", colors["delivered"]), ("human opens", colors["opens"]),
                   ("workshop clicks", colors["cta"])])
        + _issue_bars(data.issues, colors)
        + "<h2>The newest issue, its first 72 hours</h2>"
        + _legend([("readers who opened it", colors["opens"]), ("readers who clicked", colors["cta"])])
        + _timeline_chart(data.timeline, colors)
        + "<h2>The list, week by week</h2>"
        + _legend([("joined (confirmed sign-ups)", colors["joined"]), ("left", colors["left"])])
        + _growth_chart(data.growth, colors)
        + "<h2>Every issue</h2>" + _table(data.issues)
        + "<h2>Links in the newest issue</h2>" + _links(data.issues)
        + "</main></body></html>\n")
