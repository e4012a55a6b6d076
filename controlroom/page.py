"""The control room as HTML: `Panel`s, the filter form, the login page and message pages.

Pure string building, no I/O. Everything shown is escaped (project, team and tag names come
from callers); no script at all, no inline style (the stylesheet is `STYLESHEET`, served from
`/control-room/style.css`), so the page runs under `Content-Security-Policy: default-src 'self'`.

Bounded: per panel at most `MAX_FIGURES` figures, `MAX_TABLES` tables of `MAX_ROWS` rows by
`MAX_COLUMNS` columns (cells cut at `MAX_CELL` characters), `MAX_CHARTS` charts and
`MAX_ACTIONS` actions (details cut at `MAX_DETAIL`); once the page passes `MAX_PAGE_BYTES`
the remaining tables and charts are replaced by a note. A page stays under ~2.5 MB whatever
the ledger holds.

Machine-readable hooks for tests and scrapers: each panel is `<section data-panel="N"
data-layer="…">`, each headline figure `<div data-figure="name" data-value="JSON">`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from html import escape
from urllib.parse import quote

import orjson

from controlroom.model import Action, Cell, Panel, Table
from controlroom.svg import render_chart

BASE = "/control-room"
MAX_FIGURES = 40
MAX_TABLES = 8
MAX_ROWS = 100
MAX_COLUMNS = 16
MAX_CELL = 200
MAX_CHARTS = 8
MAX_ACTIONS = 30
MAX_DETAIL = 8000
MAX_PAGE_BYTES = 2_000_000

STYLESHEET = """
*{box-sizing:border-box}
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1d1d1f;
background:#f5f6f8}
header{display:flex;align-items:center;gap:1em;padding:.6em 1.2em;background:#1f2937;color:#fff}
header h1{font-size:1.1em;margin:0;flex:1}
header .who{opacity:.85}
header form{margin:0}
header button{background:#374151;color:#fff;border:1px solid #6b7280;border-radius:4px;
padding:.2em .8em;cursor:pointer}
main{padding:1em 1.2em;max-width:1400px;margin:auto}
form.filters{display:flex;flex-wrap:wrap;gap:.6em;align-items:end;background:#fff;padding:.8em;
border-radius:6px;border:1px solid #e5e7eb}
form.filters label{display:flex;flex-direction:column;font-size:.8em;color:#4b5563}
form.filters input,form.filters select{font:inherit;padding:.25em .4em;min-width:9em}
nav.panels{margin:.8em 0;display:flex;gap:1em;flex-wrap:wrap}
section.panel{background:#fff;border:1px solid #e5e7eb;border-radius:6px;padding:1em 1.2em;
margin:1em 0}
section.panel h2{margin:0 0 .2em;font-size:1.15em}
.question{margin:0 0 .8em;color:#374151;font-style:italic}
.layer{font-size:.75em;padding:.1em .5em;border-radius:9px;background:#e0e7ff;color:#3730a3;
margin-left:.5em;font-style:normal;vertical-align:middle}
dl.figures{display:flex;flex-wrap:wrap;gap:.6em;margin:0 0 .8em}
dl.figures div{background:#f9fafb;border:1px solid #e5e7eb;border-radius:5px;padding:.4em .7em;
min-width:9em}
dl.figures dt{font-size:.75em;color:#6b7280}
dl.figures dd{margin:0;font-size:1.25em;font-weight:600}
.charts{display:flex;flex-wrap:wrap;gap:1em}
svg.chart{background:#fff;border:1px solid #eee;max-width:100%;height:auto}
table{border-collapse:collapse;margin:.4em 0 1em;font-size:.9em}
caption{text-align:left;font-weight:600;padding:.2em 0}
th,td{border-bottom:1px solid #e5e7eb;padding:.25em .6em;text-align:left;vertical-align:top}
th{background:#f3f4f6;position:sticky;top:0}
td.num{text-align:right;font-variant-numeric:tabular-nums}
.actions li{margin:.4em 0}
pre{background:#0f172a;color:#e2e8f0;padding:.7em;border-radius:5px;overflow:auto;
max-height:24em}
form.kill{display:inline-flex;gap:.4em;align-items:center;margin-left:.6em}
form.kill button{background:#b91c1c;color:#fff;border:0;border-radius:4px;padding:.25em .8em;
cursor:pointer}
form.kill button[disabled]{background:#9ca3af;cursor:not-allowed}
.note{color:#6b7280;font-size:.85em}
.error{background:#fef2f2;border:1px solid #fecaca;color:#991b1b;padding:.6em .8em;
border-radius:5px}
.ok{background:#ecfdf5;border:1px solid #a7f3d0;color:#065f46;padding:.6em .8em;border-radius:5px}
form.login{background:#fff;max-width:26em;margin:4em auto;padding:1.5em;border-radius:6px;
border:1px solid #e5e7eb;display:flex;flex-direction:column;gap:.8em}
form.login input{font:inherit;padding:.4em}
form.login button{font:inherit;padding:.4em;background:#1f2937;color:#fff;border:0;
border-radius:4px;cursor:pointer}
"""

FAVICON_SVG = (
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 16 16">'
    '<rect width="16" height="16" rx="3" fill="#1f2937"/>'
    '<path d="M3 12V7h2v5zm4 0V4h2v8zm4 0V9h2v3z" fill="#fff"/></svg>'
)


@dataclass(frozen=True)
class Viewer:
    """Who is looking: their user and role, whether they may act, the session's CSRF token."""

    user: str
    role: str
    can_act: bool
    csrf: str


def _e(text: object) -> str:
    return escape(str(text), quote=True)


def _cut(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def format_cell(v: Cell) -> str:
    """How a value reads on the page: integers with thousands separators, floats to 4
    significant digits (2 decimals from 100 up), booleans yes/no, None as an em dash."""
    if v is None:
        return "—"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        if not math.isfinite(v):
            return str(v)
        if v == int(v) and abs(v) < 1e15:
            return f"{int(v):,}"
        return f"{v:,.2f}" if abs(v) >= 100 else f"{v:.4g}"
    return _cut(str(v), MAX_CELL)


def _json_attr(v: Cell) -> str:
    """The raw value as JSON for `data-value` (strings cut like the cell they sit beside)."""
    if isinstance(v, str):
        v = _cut(v, MAX_CELL)
    try:
        return _e(orjson.dumps(v).decode())
    except TypeError:
        return _e(orjson.dumps(str(v)).decode())


def layout(title: str, body: str, header: str = "") -> str:
    return (
        "<!doctype html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)}</title>"
        f'<link rel="stylesheet" href="{BASE}/style.css">'
        f'<link rel="icon" href="{BASE}/favicon.svg" type="image/svg+xml">'
        f"</head><body>{header}<main>{body}</main></body></html>"
    )


def _header(viewer: Viewer) -> str:
    return (
        "<header><h1>Governor control room</h1>"
        f'<span class="who">{_e(viewer.user)} · {_e(viewer.role)}</span>'
        f'<form method="post" action="{BASE}/logout">'
        f'<input type="hidden" name="csrf" value="{_e(viewer.csrf)}">'
        '<button type="submit">Log out</button></form></header>'
    )


def login_page(error: str | None = None) -> str:
    """The login form: the API key goes in a POST body, never in a URL."""
    err = f'<p class="error" role="alert">{_e(error)}</p>' if error else ""
    body = (
        f'<form class="login" method="post" action="{BASE}/login" autocomplete="off">'
        "<h2>Governor control room</h2>"
        "<p class=\"note\">Sign in with a viewer, auditor, on-call or admin API key. "
        "The key is exchanged for a signed session cookie; it is not stored.</p>"
        f"{err}"
        '<label>API key <input type="password" name="api_key" required maxlength="512" '
        'autofocus></label>'
        '<button type="submit">Sign in</button></form>'
    )
    return layout("Sign in · Governor control room", body)


def message_page(title: str, message: str, viewer: Viewer | None = None,
                 ok: bool = False) -> str:
    """A page with one sentence: errors (400, 403, 404 …) and action results."""
    cls = "ok" if ok else "error"
    body = (
        f"<h2>{_e(title)}</h2><p class=\"{cls}\" role=\"status\">{_e(message)}</p>"
        f'<p><a href="{BASE}">Back to the control room</a></p>'
    )
    return layout(f"{title} · Governor control room", body,
                  _header(viewer) if viewer is not None else "")


def _filters_form(form: dict[str, str]) -> str:
    def field(name: str, label: str, hint: str) -> str:
        return (
            f'<label>{_e(label)}<input name="{name}" value="{_e(form.get(name, ""))}" '
            f'placeholder="{_e(hint)}" maxlength="128"></label>'
        )

    views = "".join(
        f'<option value="{v}"{" selected" if form.get("view", "all") == v else ""}>{v}</option>'
        for v in ("all", "executive", "oncall", "engineering")
    )
    panels = "".join(
        f'<option value="{n}"{" selected" if form.get("panel", "") == n else ""}>'
        f"{n or 'all'}</option>"
        for n in ("", "1", "2", "3", "4", "5", "6")
    )
    return (
        f'<form class="filters" method="get" action="{BASE}">'
        + field("since", "Since", "7d or 2026-11-01")
        + field("until", "Until", "now")
        + field("team", "Team", "any")
        + field("project", "Project", "any")
        + field("workflow_tag", "Workflow tag", "any")
        + f'<label>Layer<select name="view">{views}</select></label>'
        + f'<label>Panel<select name="panel">{panels}</select></label>'
        + '<button type="submit">Apply</button></form>'
    )


class _Budget:
    """Bytes left for the page; past it, tables and charts become a one-line note."""

    def __init__(self, limit: int) -> None:
        self.left = limit

    def take(self, html: str) -> str:
        if self.left - len(html) < 0:
            self.left = 0
            return '<p class="note">(omitted: the page reached its size bound; narrow the ' \
                   "filters or use <code>governor report</code>)</p>"
        self.left -= len(html)
        return html


ALERT_API = "/gateway/alerts/"


def alert_href(alert_key: str) -> str:
    return f"{BASE}/alerts/{quote(alert_key, safe='')}"


def _cell_html(v: Cell) -> str:
    """A cell's HTML: http(s) URLs (a merged PR, a ticket) become links that leave no referrer
    and open no window handle; an alert's API path (`/gateway/alerts/KEY`, the runaway panel's
    runbook column) links to its control-room page; everything else is escaped text."""
    text = format_cell(v)
    if isinstance(v, str) and v == text and v.startswith(ALERT_API) and len(v) > len(ALERT_API):
        return f'<a href="{_e(alert_href(v[len(ALERT_API):]))}">{_e(v)}</a>'
    if isinstance(v, str) and v == text and v.startswith(("https://", "http://")) and \
            not any(c.isspace() for c in v):
        return f'<a href="{_e(v)}" rel="noopener noreferrer">{_e(v)}</a>'
    return _e(text)


def _table(t: Table) -> str:
    cols = t.columns[:MAX_COLUMNS]
    rows = t.rows[:MAX_ROWS]
    head = "".join(f'<th scope="col">{_e(_cut(str(c), MAX_CELL))}</th>' for c in cols)
    out = [f"<table><caption>{_e(_cut(t.title, MAX_CELL))}</caption><thead><tr>{head}</tr>"
           "</thead><tbody>"]
    # A `*_ts` column holds unix seconds (the runaway panel's `opened_ts`): shown as a UTC time,
    # not as a number with thousands separators (1,796,013,534.60).
    times = {i for i, c in enumerate(cols) if str(c).endswith("_ts")}
    for row in rows:
        cells = []
        for i, v in enumerate(list(row)[: len(cols)]):
            if i in times and v is not None:
                cells.append(f"<td>{_e(_when(v))}</td>")
                continue
            num = isinstance(v, (int, float)) and not isinstance(v, bool)
            cls = ' class="num"' if num else ""
            cells.append(f"<td{cls}>{_cell_html(v)}</td>")
        out.append(f"<tr>{''.join(cells)}</tr>")
    if not rows:
        out.append(f'<tr><td colspan="{max(len(cols), 1)}" class="note">none in this range'
                   "</td></tr>")
    out.append("</tbody></table>")
    more = []
    if len(t.rows) > MAX_ROWS:
        more.append(f"first {MAX_ROWS} of {len(t.rows):,} rows")
    if len(t.columns) > MAX_COLUMNS:
        more.append(f"first {MAX_COLUMNS} of {len(t.columns)} columns")
    if more:
        out.append(f'<p class="note">{_e("; ".join(more))}</p>')
    return "".join(out)


def _action(a: Action, viewer: Viewer) -> str:
    kind, target = _cut(a.kind, 64), _cut(a.target, 256)
    detail = _cut(a.detail, MAX_DETAIL)
    if a.kind == "kill_session":
        disabled = "" if viewer.can_act else " disabled"
        why = "" if viewer.can_act else (
            '<span class="note">needs an on-call or admin key</span>')
        return (
            f'<li data-action="kill_session" data-target="{_e(target)}">'
            f"<strong>Kill session</strong> <code>{_e(target)}</code> — {_e(detail)}"
            f'<form class="kill" method="post" action="{BASE}/kill">'
            f'<input type="hidden" name="csrf" value="{_e(viewer.csrf)}">'
            f'<input type="hidden" name="session_id" value="{_e(target)}">'
            f'<input name="reason" placeholder="reason" maxlength="500"{disabled}>'
            f'<label><input type="checkbox" name="confirm" value="yes" required{disabled}> '
            "confirm</label>"
            f'<button type="submit"{disabled}>Kill</button>{why}</form></li>'
        )
    if a.kind == "yaml":
        return (
            f'<li data-action="yaml" data-target="{_e(target)}"><strong>Config change</strong> '
            f"<code>{_e(target)}</code><pre>{_e(detail)}</pre></li>"
        )
    return (
        f'<li data-action="{_e(kind)}" data-target="{_e(target)}"><strong>{_e(kind)}</strong> '
        f"<code>{_e(target)}</code> — {_e(detail)}</li>"
    )


def render_panel(p: Panel, viewer: Viewer, budget: _Budget | None = None) -> str:
    """One panel as a `<section>`: question, figures, charts, tables, suggested actions."""
    budget = budget or _Budget(MAX_PAGE_BYTES)
    out = [
        f'<section class="panel" id="panel-{int(p.number)}" data-panel="{int(p.number)}" '
        f'data-layer="{_e(p.layer)}">'
        f"<h2>{int(p.number)}. {_e(_cut(p.title, MAX_CELL))}"
        f'<span class="layer">{_e(p.layer)}</span></h2>'
        f'<p class="question">{_e(_cut(p.question, 1000))}</p>'
    ]
    figs = list(p.figures.items())
    if figs:
        out.append('<dl class="figures">')
        for name, v in figs[:MAX_FIGURES]:
            name = _cut(str(name), 120)
            out.append(
                f'<div data-figure="{_e(name)}" data-value="{_json_attr(v)}">'
                f"<dt>{_e(name)}</dt><dd>{_e(format_cell(v))}</dd></div>"
            )
        out.append("</dl>")
        if len(figs) > MAX_FIGURES:
            out.append(f'<p class="note">first {MAX_FIGURES} of {len(figs)} figures</p>')
    if p.charts:
        out.append('<div class="charts">')
        for c in p.charts[:MAX_CHARTS]:
            out.append(budget.take(f"<figure>{render_chart(c)}</figure>"))
        out.append("</div>")
    for t in p.tables[:MAX_TABLES]:
        out.append(budget.take(_table(t)))
    if len(p.tables) > MAX_TABLES:
        out.append(f'<p class="note">first {MAX_TABLES} of {len(p.tables)} tables</p>')
    if p.actions:
        out.append('<h3>Suggested actions</h3><ul class="actions">')
        out.extend(budget.take(_action(a, viewer)) for a in p.actions[:MAX_ACTIONS])
        out.append("</ul>")
        if len(p.actions) > MAX_ACTIONS:
            out.append(f'<p class="note">first {MAX_ACTIONS} of {len(p.actions)} actions</p>')
    out.append("</section>")
    return "".join(out)


def control_room_page(panels: list[Panel], viewer: Viewer, form: dict[str, str],
                      since: float, until: float, notice: str | None = None,
                      simulated: bool = False) -> str:
    """The whole page: header, filters, the panels in number order. `simulated`: the
    gateway's providers include the simulator, and the page says so."""
    budget = _Budget(MAX_PAGE_BYTES)

    def iso(ts: float) -> str:
        return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M UTC")

    ordered = sorted(panels, key=lambda p: p.number)
    nav = "".join(
        f'<a href="#panel-{int(p.number)}">{int(p.number)}. {_e(_cut(p.title, 60))}</a>'
        for p in ordered
    )
    body = [
        _filters_form(form),
        f'<p class="note">Calls from {_e(iso(since))} to {_e(iso(until))}. Aggregates by tool, '
        "team, project and workflow tag — never a ranking of people.</p>",
    ]
    if simulated:
        body.append('<p class="note" data-simulated="true"><strong>SIMULATED provider</strong>: '
                    "this gateway answers from its built-in simulator; its calls are not a "
                    "real model's.</p>")
    if notice:
        body.append(f'<p class="ok" role="status">{_e(notice)}</p>')
    body.append(f'<nav class="panels">{nav}</nav>')
    if not ordered:
        body.append('<p class="note">No panel matches these filters.</p>')
    body.extend(render_panel(p, viewer, budget) for p in ordered)
    return layout("Governor control room", "".join(body), _header(viewer))


def _when(ts: object) -> str:
    if isinstance(ts, bool) or not isinstance(ts, (int, float)) or not math.isfinite(ts):
        return "—"
    try:
        return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    except (OverflowError, OSError, ValueError):
        return "—"


def alert_page(viewer: Viewer, alert_key: str, runs: list[dict[str, object]],
               runbook: str | None, live: dict[str, object] | None = None) -> str:
    """One alert for on-call: its live runbook (`RunbookStatus` fields: status, what it
    waits for, with ack/approve/resolve forms), its runs (newest first: status, severity,
    sources, times, repeats, incident, summary, labels), the rule's runbook text and each
    run's steps. `runs`: `AlertRecord` fields plus `steps` (`RunbookStepRecord` fields)."""
    first = runs[0] if runs else {}
    out = [f"<h2>Alert {_e(_cut(str(first.get('name', alert_key)), 200))}</h2>",
           f'<p class="note">key <code>{_e(_cut(alert_key, 300))}</code></p>']
    if live is not None:
        waiting, acked, resolved = (live.get(k) for k in ("waiting_for", "acknowledged_by",
                                                           "resolved_by"))
        out.append(
            f'<p class="ok" data-runbook-status="{_e(live.get("status", ""))}">Runbook '
            f"<strong>{_e(live.get('status', ''))}</strong>"
            + (f" — waiting for {_e(_cut(str(waiting), 300))}" if waiting else "")
            + (f" — acknowledged by {_e(_cut(str(acked), 200))}" if acked else "")
            + (f" — resolved by {_e(_cut(str(resolved), 200))}" if resolved else "")
            + "</p>")
        if live.get("status") not in ("resolved", "closed") and not resolved:
            out.append('<div class="alert-actions">')
            for what in ("ack", "approve", "resolve"):
                disabled = "" if viewer.can_act else " disabled"
                out.append(
                    f'<form class="kill" method="post" '
                    f'action="{_e(alert_href(alert_key))}/{what}">'
                    f'<input type="hidden" name="csrf" value="{_e(viewer.csrf)}">'
                    f'<input name="comment" placeholder="comment" maxlength="1000"{disabled}>'
                    f'<button type="submit" data-alert-action="{what}"{disabled}>{what}'
                    "</button></form>")
            out.append("</div>")
    if runbook:
        out.append(f"<h3>Runbook</h3><pre>{_e(_cut(runbook, MAX_DETAIL))}</pre>")
    for run in runs[:20]:
        fields = [("status", run.get("status")), ("severity", run.get("severity")),
                  ("sources", run.get("sources")), ("opened", _when(run.get("opened_ts"))),
                  ("updated", _when(run.get("updated_ts"))),
                  ("closed", _when(run.get("closed_ts"))), ("repeats", run.get("repeats")),
                  ("incident", run.get("incident")), ("summary", run.get("summary"))]
        out.append(f'<section class="panel" data-run="{_e(run.get("run_id", ""))}">'
                   f"<h3>Run <code>{_e(_cut(str(run.get('run_id', '')), 200))}</code></h3>")
        out.append(_table(Table("Run", [k for k, _ in fields],
                                [[_plain(v) for _, v in fields]])))
        out.append(f"<h4>Labels</h4><pre>{_e(_cut(str(run.get('labels', '{}')), MAX_DETAIL))}"
                   "</pre>")
        steps = run.get("steps")
        rows = [[_plain(s.get("step")), _plain(s.get("action")), _plain(s.get("phase")),
                 _plain(s.get("actor")), _plain(s.get("result")), _when(s.get("ts"))]
                for s in (steps if isinstance(steps, list) else [])[:MAX_ROWS]
                if isinstance(s, dict)]
        out.append(_table(Table("Runbook steps", ["step", "action", "phase", "actor", "result",
                                                  "at"], rows)))
        out.append("</section>")
    return layout("Alert · Governor control room", "".join(out), _header(viewer))


def _plain(v: object) -> Cell:
    return v if v is None or isinstance(v, (str, int, float, bool)) else str(v)
