"""The page from hand-made panels: every panel shown, hostile names escaped, kill form by role,
YAML in a <pre>, figures machine-readable, and the page's size bounded."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser

from controlroom.model import Action, Chart, Panel, Series, Table
from controlroom.page import MAX_PAGE_BYTES, Viewer, control_room_page, format_cell, render_panel
from tests.controlroom.sample_panels import sample_panels

VIEWER = Viewer(user="u_viewer", role="viewer", can_act=False, csrf="c" * 40)
ONCALL = Viewer(user="u_oncall", role="oncall", can_act=True, csrf="d" * 40)
FORM = {"since": "7d", "until": "", "team": "", "project": "", "workflow_tag": "", "panel": "",
        "view": "all"}


class Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def tags(html: str) -> list[tuple[str, dict[str, str | None]]]:
    p = Tags()
    p.feed(html)
    return p.tags


def page(viewer: Viewer = VIEWER, panels: list[Panel] | None = None) -> str:
    return control_room_page(sample_panels() if panels is None else panels, viewer, FORM,
                             1.7e9, 1.7e9 + 7 * 86400)


def test_every_panel_renders_with_its_question_layer_and_figures():
    html = page()
    for p in sample_panels():
        assert f'data-panel="{p.number}" data-layer="{p.layer}"' in html
        assert p.question in html
        for name, v in p.figures.items():
            m = re.search(rf'data-figure="{name}" data-value="([^"]*)"', html)
            assert m and json.loads(m.group(1).replace("&quot;", '"')) == v
            assert f"<dd>{format_cell(v)}</dd>" in html


def test_hostile_names_never_become_markup():
    html = page(ONCALL)
    assert "<script" not in html
    assert "&lt;script&gt;" in html
    assert not [t for t, _ in tags(html) if t in ("script", "img", "iframe")]
    assert not [a for _, attrs in tags(html) for a in attrs if a.startswith("on")]
    assert not [a for _, attrs in tags(html) for a in attrs if a == "style"]


def test_kill_forms_are_live_for_on_call_and_disabled_for_a_viewer():
    on = page(ONCALL)
    forms = [a for t, a in tags(on) if t == "form" and a.get("action") == "/control-room/kill"]
    assert len(forms) == 2
    assert f'name="csrf" value="{ONCALL.csrf}"' in on
    assert 'name="session_id" value="sess-loop"' in on
    assert not [a for t, a in tags(on) if t == "button" and "disabled" in a]
    off = page(VIEWER)
    buttons = [a for t, a in tags(off) if t == "button" and a.get("type") == "submit"]
    kill_buttons = [b for b in buttons if "disabled" in b]
    assert len(kill_buttons) == 2 and "needs an on-call or admin key" in off


def test_yaml_rollback_is_shown_in_a_pre():
    html = page()
    m = re.search(r"<pre>(.*?)</pre>", html, re.S)
    assert m and "- model: claude-opus-4-7\n+ model: claude-opus-4-6" in m.group(1)


def test_the_page_has_no_script_and_only_self_hosted_resources():
    html = page()
    for t, a in tags(html):
        assert t != "script"
        for attr in ("src", "href"):
            v = a.get(attr)
            if v is not None:
                assert v.startswith(("/control-room", "#")), v


def test_the_page_size_is_bounded_whatever_the_panels_hold():
    huge_cell = "x" * 100_000
    big = [
        Panel(n, "big " * 1000, "q" * 100_000, "engineering",
              figures={f"f{i}": huge_cell for i in range(1000)},
              tables=[Table("t", [f"c{i}" for i in range(100)],
                            [[huge_cell] * 100 for _ in range(2000)]) for _ in range(20)],
              charts=[Chart("c", "bar", "", [Series(str(i), [(str(j), 1.0) for j in range(500)])
                                            for i in range(20)]) for _ in range(20)],
              actions=[Action("yaml", "t", huge_cell) for _ in range(500)])
        for n in range(1, 7)
    ]
    html = page(ONCALL, big)
    assert len(html.encode()) < MAX_PAGE_BYTES + 600_000
    assert "the page reached its size bound" in html


def test_a_single_panel_renders_alone():
    p = sample_panels()[2]
    html = render_panel(p, ONCALL)
    assert html.startswith('<section class="panel" id="panel-3"')
    assert html.count("<section") == 1


def test_format_cell():
    assert format_cell(None) == "—"
    assert format_cell(True) == "yes"
    assert format_cell(1234567) == "1,234,567"
    assert format_cell(3100.0) == "3,100"
    assert format_cell(451.25) == "451.25"
    assert format_cell(2.2149) == "2.215"
    assert format_cell(float("nan")) == "nan"


def test_urls_in_cells_are_links_and_nothing_else_is():
    t = Table("outcomes", ["url", "other"], [
        ["https://github.com/acme/monorepo/pull/1031", "javascript:alert(1)"],
        ['https://x.example/"><script>', "http://a b"],
    ])
    html = render_panel(Panel(6, "Outcome join", "q", "executive", tables=[t]), VIEWER)
    links = [a for tag, a in tags(html) if tag == "a"]
    assert [a["href"] for a in links] == ["https://github.com/acme/monorepo/pull/1031",
                                          'https://x.example/"><script>']
    assert all(a["rel"] == "noopener noreferrer" for a in links)
    assert "<script" not in html and 'href="javascript' not in html


def test_a_ts_column_reads_as_a_utc_time_not_a_number():
    # The runaway panel's alerts table showed opened_ts as "1,796,013,534.60".
    t = Table("Runbook alerts (runaway_agent)", ["alert_key", "opened_ts", "calls"],
              [["alert-runaway_agent,session_id=s1", 1796013534.597, 1796013534],
               ["alert-runaway_agent,session_id=s2", None, 3]])
    html = render_panel(Panel(3, "Runaway", "q", "oncall", tables=[t]), VIEWER)
    assert "<td>2026-11-30 04:38:54 UTC</td>" in html
    assert "1,796,013,534.6" not in html
    assert '<td class="num">1,796,013,534</td>' in html  # other columns keep their format
    assert "<td>—</td>" in html


def test_an_empty_table_says_so():
    html = render_panel(Panel(5, "Safety", "q", "engineering",
                              tables=[Table("events", ["hook", "n"], [])]), VIEWER)
    assert '<td colspan="2" class="note">none in this range</td>' in html


def test_a_simulated_provider_is_labelled_and_a_real_one_is_not():
    assert 'data-simulated="true"' not in page()
    sim = control_room_page(sample_panels(), VIEWER, FORM, 1.7e9, 1.7e9 + 60, simulated=True)
    assert 'data-simulated="true"' in sim and "SIMULATED provider" in sim
