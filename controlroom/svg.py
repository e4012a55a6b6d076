"""Server-rendered SVG charts: a `Chart` (bar or line) as one `<svg>` element, no script, no CDN.

Every label and name is escaped (they come from the ledger: project names, tags, teams are
caller-controlled); only presentation attributes are used (no `style=`), so the page's
Content-Security-Policy needs no `unsafe-inline`. Bounded: at most `MAX_SERIES` series,
`MAX_BARS` bar groups and `MAX_LINE_POINTS` points per line (evenly thinned beyond), so a
chart's size does not grow with the ledger.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from html import escape

from controlroom.model import Chart, Series

WIDTH, HEIGHT = 640, 260
LEFT, RIGHT, TOP, BOTTOM = 64, 16, 28, 56
MAX_SERIES = 8
MAX_BARS = 40
MAX_LINE_POINTS = 400
MAX_LABEL = 18
# Okabe-Ito: distinguishable with the common colour-vision deficiencies.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000")


def _e(text: object) -> str:
    return escape(str(text), quote=True)


def _short(label: str, n: int = MAX_LABEL) -> str:
    return label if len(label) <= n else label[: n - 1] + "…"


def _num(v: object) -> float | None:
    """A finite float, or None (strings, NaN and infinities are not plotted)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    f = float(v)
    return f if math.isfinite(f) else None


def compact(v: float) -> str:
    """An axis number: 950, 1.2k, 3.4M, 0.25."""
    a = abs(v)
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if a >= div:
            return f"{v / div:.3g}{suffix}"
    if a == 0 or a >= 1:
        return f"{v:.4g}"
    return f"{v:.2g}"


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round tick values covering [lo, hi] (lo <= hi), about `count` of them."""
    if hi <= lo:
        hi = lo + 1.0
    raw = (hi - lo) / max(count - 1, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    start = math.floor(lo / step) * step
    ticks: list[float] = []
    t = start
    while t < hi + step * 0.999 and len(ticks) < 12:
        ticks.append(round(t, 10))
        t += step
    return ticks


def render_chart(chart: Chart, width: int = WIDTH, height: int = HEIGHT) -> str:
    """`<svg>` markup for `chart` (role="img", titled); "no data" when nothing is plottable."""
    series = chart.series[:MAX_SERIES]
    dropped = len(chart.series) - len(series)
    if chart.kind == "line":
        body, note = _line(series, width, height)
    else:
        body, note = _bars(series, width, height)
    if dropped > 0:
        note = (note + "; " if note else "") + f"{dropped} more series not drawn"
    title = chart.title + (f" ({chart.unit})" if chart.unit else "")
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img" '
        f'viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
        f'aria-label="{_e(title)}">',
        f"<title>{_e(title)}</title>",
        f'<text x="{LEFT}" y="16" font-size="13" font-weight="bold" fill="#222">'
        f"{_e(_short(title, 80))}</text>",
        body,
        _legend(series, width, height),
    ]
    if note:
        parts.append(
            f'<text x="{width - RIGHT}" y="16" font-size="10" text-anchor="end" fill="#777">'
            f"{_e(note)}</text>"
        )
    parts.append("</svg>")
    return "".join(parts)


def _no_data(width: int, height: int) -> str:
    return (
        f'<text x="{width / 2:.0f}" y="{height / 2:.0f}" text-anchor="middle" font-size="12" '
        f'fill="#777">no data in this range</text>'
    )


def _y_axis(lo: float, hi: float, width: int, height: int) -> tuple[str, float, float]:
    """Grid lines and labels; returns (markup, y_min, y_max) of the scale."""
    ticks = nice_ticks(lo, hi)
    y0, y1 = ticks[0], ticks[-1]
    out = []
    for t in ticks:
        y = _sy(t, y0, y1, height)
        out.append(
            f'<line x1="{LEFT}" x2="{width - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" '
            f'stroke="#ddd" stroke-width="1"/>'
            f'<text x="{LEFT - 6}" y="{y + 4:.1f}" font-size="10" text-anchor="end" '
            f'fill="#555">{_e(compact(t))}</text>'
        )
    return "".join(out), y0, y1


def _sy(v: float, y0: float, y1: float, height: int) -> float:
    plot = height - TOP - BOTTOM
    return TOP + plot - (v - y0) / (y1 - y0 or 1.0) * plot


def _bars(series: list[Series], width: int, height: int) -> tuple[str, str]:
    cats: dict[str, int] = {}
    values: list[dict[str, float]] = []
    for s in series:
        vals: dict[str, float] = {}
        for x, y in s.points:
            v = _num(y)
            if v is None:
                continue
            label = str(x)
            if label not in cats:
                cats[label] = len(cats)
            vals[label] = vals.get(label, 0.0) + v
        values.append(vals)
    labels = list(cats)
    note = ""
    if len(labels) > MAX_BARS:
        note = f"first {MAX_BARS} of {len(labels)} groups"
        labels = labels[:MAX_BARS]
    if not labels:
        return _no_data(width, height), note
    every = [v for vals in values for k, v in vals.items() if k in cats and cats[k] < MAX_BARS]
    lo, hi = min(0.0, *every), max(0.0, *every)
    axis, y0, y1 = _y_axis(lo, hi, width, height)
    out = [axis]
    plot_w = width - LEFT - RIGHT
    group_w = plot_w / len(labels)
    n = max(len(series), 1)
    bar_w = max(group_w * 0.8 / n, 1.0)
    base = _sy(0.0, y0, y1, height)
    for gi, label in enumerate(labels):
        gx = LEFT + gi * group_w + group_w * 0.1
        for si, (s, vals) in enumerate(zip(series, values, strict=True)):
            if label not in vals:
                continue
            v = vals[label]
            y = _sy(v, y0, y1, height)
            top, h = min(y, base), abs(base - y)
            out.append(
                f'<rect x="{gx + si * bar_w:.1f}" y="{top:.1f}" width="{bar_w:.1f}" '
                f'height="{max(h, 0.5):.1f}" fill="{PALETTE[si % len(PALETTE)]}">'
                f"<title>{_e(s.name)} · {_e(label)}: {_e(compact(v))}</title></rect>"
            )
        if len(labels) <= 12 or gi % math.ceil(len(labels) / 12) == 0:
            cx = LEFT + gi * group_w + group_w / 2
            out.append(
                f'<text x="{cx:.1f}" y="{height - BOTTOM + 14}" font-size="10" '
                f'text-anchor="middle" fill="#333">{_e(_short(label, 14))}'
                f"<title>{_e(label)}</title></text>"
            )
    return "".join(out), note


def _thin(points: list[tuple[float, float]], n: int) -> list[tuple[float, float]]:
    if len(points) <= n:
        return points
    step = len(points) / n
    return [points[int(i * step)] for i in range(n - 1)] + [points[-1]]


def _when(ts: float, span: float) -> str:
    try:
        dt = datetime.fromtimestamp(ts, UTC)
    except (OverflowError, OSError, ValueError):
        return "?"
    return dt.strftime("%m-%d %H:%M" if span <= 3 * 86400 else "%Y-%m-%d")


def _line(series: list[Series], width: int, height: int) -> tuple[str, str]:
    """Lines over unix-time x values; when the x values are labels (e.g. days as
    `2026-11-24`), over those labels evenly spaced in order of first appearance."""
    cats: dict[str, int] = {}
    if any(isinstance(x, str) for s in series for x, _ in s.points):
        for s in series:
            for x, _ in s.points:
                cats.setdefault(str(x), len(cats))
    lines: list[list[tuple[float, float]]] = []
    note = ""
    for s in series:
        pts = []
        for x, y in s.points:
            fx = float(cats[str(x)]) if cats else _num(x)
            fy = _num(y)
            if fx is not None and fy is not None:
                pts.append((fx, fy))
        pts.sort()
        if len(pts) > MAX_LINE_POINTS:
            note = f"thinned to {MAX_LINE_POINTS} points per line"
            pts = _thin(pts, MAX_LINE_POINTS)
        lines.append(pts)
    every = [p for pts in lines for p in pts]
    if not every:
        return _no_data(width, height), note
    x0 = min(p[0] for p in every)
    x1 = max(p[0] for p in every)
    lo = min(0.0, *(p[1] for p in every))
    hi = max(0.0, *(p[1] for p in every))
    axis, y0, y1 = _y_axis(lo, hi, width, height)
    out = [axis]
    plot_w = width - LEFT - RIGHT
    span = x1 - x0 or 1.0

    def sx(x: float) -> float:
        return LEFT + (x - x0) / span * plot_w

    labels = list(cats)
    ticks = [x0 + span * i / 4 for i in range(5)]
    if labels:
        ticks = sorted({float(round(t)) for t in ticks})
    for i, t in enumerate(ticks):
        text = _short(labels[int(t)], 14) if labels else _when(t, span)
        anchor = "start" if i == 0 else "end" if i == len(ticks) - 1 else "middle"
        out.append(
            f'<text x="{sx(t):.1f}" y="{height - BOTTOM + 14}" font-size="10" '
            f'text-anchor="{anchor}" fill="#333">{_e(text)}</text>'
        )
    for si, (s, pts) in enumerate(zip(series, lines, strict=True)):
        if not pts:
            continue
        color = PALETTE[si % len(PALETTE)]
        coords = " ".join(f"{sx(x):.1f},{_sy(y, y0, y1, height):.1f}" for x, y in pts)
        out.append(
            f'<polyline points="{coords}" fill="none" stroke="{color}" stroke-width="2">'
            f"<title>{_e(s.name)}</title></polyline>"
        )
        if len(pts) == 1:
            x, y = pts[0]
            out.append(
                f'<circle cx="{sx(x):.1f}" cy="{_sy(y, y0, y1, height):.1f}" r="3" '
                f'fill="{color}"/>'
            )
    return "".join(out), note


def _legend(series: list[Series], width: int, height: int) -> str:
    out = []
    x, y = LEFT, height - 18
    for si, s in enumerate(series):
        name = _short(s.name, 22)
        if x + 24 + 7 * len(name) > width - RIGHT:
            break
        color = PALETTE[si % len(PALETTE)]
        out.append(
            f'<rect x="{x}" y="{y - 9}" width="10" height="10" fill="{color}"/>'
            f'<text x="{x + 14}" y="{y}" font-size="11" fill="#333">{_e(name)}'
            f"<title>{_e(s.name)}</title></text>"
        )
        x += 24 + 7 * len(name)
    return "".join(out)
