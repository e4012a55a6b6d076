"""Server-rendered SVG charts: well-formed, escaped, bounded, honest about what they drop."""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET

from controlroom.model import Chart, Series
from controlroom.svg import MAX_BARS, MAX_LINE_POINTS, MAX_SERIES, nice_ticks, render_chart

NS = "{http://www.w3.org/2000/svg}"
HOSTILE = '<script>alert("x")</script>&"\'><img src=x onerror=alert(1)>'


def parse(svg: str) -> ET.Element:
    return ET.fromstring(svg)  # raises on anything not well-formed


def test_hostile_labels_are_escaped_everywhere_and_the_svg_stays_well_formed():
    chart = Chart(title=HOSTILE, kind="bar", unit=HOSTILE,
                  series=[Series(name=HOSTILE, points=[(HOSTILE, 3.0), ("<script>", 1.0)])])
    svg = render_chart(chart)
    assert "<script" not in svg and "<img" not in svg
    root = parse(svg)
    texts = " ".join(t.text or "" for t in root.iter() if t.text)
    assert "<script>" in texts  # shown as text, not markup
    assert not any(a.startswith("on") for el in root.iter() for a in el.attrib)
    assert "style" not in {a for el in root.iter() for a in el.attrib}  # CSP: no inline style


def test_line_chart_hostile_series_names_and_non_numbers_are_safe():
    chart = Chart(title="t", kind="line", unit="tokens/h", series=[
        Series(name=HOSTILE, points=[(0.0, 1.0), (3600.0, float("nan")), (True, 2.0),
                                     (7200.0, float("inf")), (10800.0, 5.0)]),
    ])
    root = parse(render_chart(chart))
    (line,) = root.iter(NS + "polyline")
    assert len(line.attrib["points"].split()) == 2  # NaN, inf and a non-number x: not plotted


def test_a_line_over_day_labels_is_drawn_in_label_order():
    days = [f"2026-11-{d:02d}" for d in range(20, 28)]
    chart = Chart(title="daily", kind="line", unit="USD", series=[
        Series(name="a", points=[(d, float(i)) for i, d in enumerate(days)]),
        Series(name="<b>", points=[(d, 2.0) for d in days[2:]])])
    svg = render_chart(chart)
    root = parse(svg)
    a, b = root.iter(NS + "polyline")
    xs = [float(p.split(",")[0]) for p in a.attrib["points"].split()]
    assert len(xs) == 8 and xs == sorted(xs)
    assert len(b.attrib["points"].split()) == 6
    assert "2026-11-20" in svg and "2026-11-27" in svg and "no data" not in svg


def test_bar_heights_are_proportional_to_values():
    chart = Chart(title="spend", kind="bar", unit="USD",
                  series=[Series(name="spend", points=[("a", 10.0), ("b", 40.0)])])
    rects = [r for r in parse(render_chart(chart)).iter(NS + "rect") if r.find(NS + "title")
             is not None]
    h = [float(r.attrib["height"]) for r in rects]
    assert len(h) == 2 and math.isclose(h[1] / h[0], 4.0, rel_tol=0.02)


def test_charts_are_bounded_whatever_the_ledger_holds():
    many = Chart(title="big", kind="bar", unit="", series=[
        Series(name=f"s{i}", points=[(f"x{j}", float(j)) for j in range(5000)])
        for i in range(50)
    ])
    svg = render_chart(many)
    root = parse(svg)
    bars = [r for r in root.iter(NS + "rect") if r.find(NS + "title") is not None]
    assert len(bars) <= MAX_SERIES * MAX_BARS
    assert f"first {MAX_BARS} of 5000 groups" in svg and "42 more series not drawn" in svg
    assert len(svg) < 400_000
    line = Chart(title="long", kind="line", unit="", series=[
        Series(name="s", points=[(float(t), float(t % 7)) for t in range(100_000)])])
    root = parse(render_chart(line))
    (pl,) = root.iter(NS + "polyline")
    assert len(pl.attrib["points"].split()) == MAX_LINE_POINTS


def test_an_empty_chart_says_no_data():
    for kind in ("bar", "line"):
        svg = render_chart(Chart(title="empty", kind=kind, unit="", series=[]))  # type: ignore[arg-type]
        assert "no data in this range" in svg
        parse(svg)


def test_negative_values_and_ticks():
    chart = Chart(title="delta", kind="bar", unit="%",
                  series=[Series(name="d", points=[("a", -5.0), ("b", 20.0)])])
    parse(render_chart(chart))
    t = nice_ticks(-5, 20)
    assert t[0] <= -5 and t[-1] >= 20 and len(t) <= 12
    assert nice_ticks(0, 0)[-1] >= 1
