"""Inline SVG charts drawn on the server: nothing is fetched by the browser, no script runs.

Every text that goes into a chart passes through :func:`markupsafe.escape`; numbers are
formatted by us. The functions return :class:`markupsafe.Markup` for the Jinja template.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from markupsafe import Markup, escape

from marketd.clock import hour_window, parse_iso

WIDTH, HEIGHT, PAD_L, PAD_B, PAD_T = 360, 120, 34, 16, 8
SERIES = (("pending", "#1f6fb2"), ("running", "#2e8b3a"), ("failed", "#c0392b"))


def _svg(label: str, body: Iterable[str]) -> Markup:
    head = (f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img" '
            f'width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" '
            f'aria-label="{escape(label)}"><title>{escape(label)}</title>')
    return Markup(head + "".join(body) + "</svg>")  # noqa: S704 - parts escaped above


def _hhmm(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%H:%M")


def _axes(top: float, left_text: str, right_text: str) -> list[str]:
    plot_h = HEIGHT - PAD_B - PAD_T
    return [
        f'<line x1="{PAD_L}" y1="{PAD_T}" x2="{PAD_L}" y2="{PAD_T + plot_h}" stroke="#999"/>',
        f'<line x1="{PAD_L}" y1="{PAD_T + plot_h}" x2="{WIDTH}" y2="{PAD_T + plot_h}" '
        f'stroke="#999"/>',
        f'<text x="{PAD_L - 3}" y="{PAD_T + 8}" font-size="9" text-anchor="end">'
        f'{top:g}</text>',
        f'<text x="{PAD_L - 3}" y="{PAD_T + plot_h}" font-size="9" text-anchor="end">0</text>',
        f'<text x="{PAD_L}" y="{HEIGHT - 3}" font-size="9">{escape(left_text)}</text>',
        f'<text x="{WIDTH}" y="{HEIGHT - 3}" font-size="9" text-anchor="end">'
        f'{escape(right_text)}</text>',
    ]


def budget_chart(provider: str, rows: Sequence[Mapping[str, Any]], rate_limit: int,
                 now: float, hours: int = 24) -> Markup:
    """Calls per clock hour over the last ``hours`` hours as bars, the hourly limit as a line."""
    this_hour = hour_window(now)
    start = this_hour - (hours - 1) * 3600
    used: dict[float, int] = {}
    for r in rows:
        at = parse_iso(r.get("hour_window"))
        if at is not None and start <= at <= this_hour:
            used[at] = used.get(at, 0) + int(r.get("used") or 0)
    top = max([rate_limit, 1, *used.values()])
    plot_w, plot_h = WIDTH - PAD_L, HEIGHT - PAD_B - PAD_T
    slot = plot_w / hours
    body = _axes(top, f"{_hhmm(start)} UTC", "this hour")
    for i in range(hours):
        at = start + i * 3600
        n = used.get(at, 0)
        h = plot_h * n / top
        x = PAD_L + i * slot + 1
        color = "#c0392b" if n >= rate_limit > 0 else "#1f6fb2"
        body.append(
            f'<rect class="bar" x="{x:.1f}" y="{PAD_T + plot_h - h:.1f}" '
            f'width="{max(slot - 2, 1):.1f}" height="{h:.1f}" fill="{color}">'
            f'<title>{escape(_hhmm(at))}: {n} of {rate_limit} calls</title></rect>')
    if rate_limit > 0:
        y = PAD_T + plot_h - plot_h * rate_limit / top
        body.append(f'<line class="limit" x1="{PAD_L}" y1="{y:.1f}" x2="{WIDTH}" y2="{y:.1f}" '
                    f'stroke="#c0392b" stroke-dasharray="4 3"><title>limit {rate_limit}/hour'
                    f'</title></line>')
    return _svg(f"{provider}: calls per hour over the last {hours} hours, "
                f"limit {rate_limit}/hour", body)


def queue_chart(samples: Sequence[Mapping[str, Any]], now: float, hours: int = 24) -> Markup:
    """Jobs by status (all providers) over the last ``hours`` hours, one line per status."""
    start = now - hours * 3600
    totals: dict[float, dict[str, int]] = {}
    for s in samples:
        at = parse_iso(s.get("sampled_at"))
        if at is None or at < start:
            continue
        point = totals.setdefault(at, {k: 0 for k, _ in SERIES})
        for key, _ in SERIES:
            point[key] += int(s.get(key) or 0)
    times = sorted(totals)
    top = max([1, *(v for p in totals.values() for v in p.values())])
    plot_w, plot_h = WIDTH - PAD_L, HEIGHT - PAD_B - PAD_T
    body = _axes(top, f"{_hhmm(start)} UTC", "now")
    if not times:
        body.append(f'<text x="{PAD_L + plot_w / 2:.0f}" y="{PAD_T + plot_h / 2:.0f}" '
                    f'font-size="11" text-anchor="middle">no samples yet</text>')
    for n, (key, color) in enumerate(SERIES):
        pts = " ".join(
            f"{PAD_L + plot_w * (t - start) / (now - start):.1f},"
            f"{PAD_T + plot_h - plot_h * totals[t][key] / top:.1f}" for t in times)
        if len(times) == 1:
            x, y = pts.split(",")
            body.append(f'<circle cx="{x}" cy="{y}" r="2" fill="{color}"/>')
        elif times:
            body.append(f'<polyline class="series" points="{pts}" fill="none" '
                        f'stroke="{color}" stroke-width="1.5"><title>{key}</title></polyline>')
        body.append(f'<text x="{PAD_L + 6 + n * 60}" y="{PAD_T + 9}" font-size="9" '
                    f'fill="{color}">{key}</text>')
    return _svg(f"jobs by status over the last {hours} hours", body)


PRICE_SERIES = (("lowest_ask", "ask", "#1f6fb2"), ("highest_bid", "bid", "#2e8b3a"),
                ("last_sale", "last sale", "#8e44ad"))


def history_chart(key: str, points: Sequence[Mapping[str, Any]], now: float) -> Markup:
    """One price's history as step lines (a price holds until it changes, up to now): ask, bid
    and last sale, amounts in minor units; each point's time and amounts in its tooltip."""
    times = [parse_iso(p.get("fetched_at")) or now for p in points]
    start = min(times, default=now - 3600)
    end = max(now, start + 60)
    amounts = [int(p[k]) for p in points for k, _, _ in PRICE_SERIES if p.get(k) is not None]
    top = max([1, *amounts])
    plot_w, plot_h = WIDTH - PAD_L, HEIGHT - PAD_B - PAD_T
    currency = str(points[-1].get("currency", "")) if points else ""
    body = _axes(top / 100, f"{datetime.fromtimestamp(start, UTC):%Y-%m-%d %H:%M} UTC", "now")

    def x(t: float) -> float:
        return PAD_L + plot_w * (t - start) / (end - start)

    def y(v: int) -> float:
        return PAD_T + plot_h - plot_h * v / top

    if not points:
        body.append(f'<text x="{PAD_L + plot_w / 2:.0f}" y="{PAD_T + plot_h / 2:.0f}" '
                    f'font-size="11" text-anchor="middle">no history yet</text>')
    for n, (field, label, color) in enumerate(PRICE_SERIES):
        coords: list[str] = []
        for i, (t, p) in enumerate(zip(times, points, strict=True)):
            v = p.get(field)
            if v is None:
                continue
            until = times[i + 1] if i + 1 < len(times) else end
            coords += [f"{x(t):.1f},{y(int(v)):.1f}", f"{x(until):.1f},{y(int(v)):.1f}"]
            body.append(f'<circle cx="{x(t):.1f}" cy="{y(int(v)):.1f}" r="2" fill="{color}">'
                        f'<title>{escape(str(p.get("fetched_at")))}: {escape(label)} '
                        f'{int(v) / 100:.2f} {escape(str(p.get("currency", "")))}</title>'
                        f'</circle>')
        if coords:
            body.append(f'<polyline class="series" points="{" ".join(coords)}" fill="none" '
                        f'stroke="{color}" stroke-width="1.5"><title>{escape(label)}</title>'
                        f'</polyline>')
        body.append(f'<text x="{PAD_L + 6 + n * 60}" y="{PAD_T + 9}" font-size="9" '
                    f'fill="{color}">{escape(label)}</text>')
    return _svg(f"price history of {key} ({currency}), a point per change", body)
