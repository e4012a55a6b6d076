"""`governor report [--panel N] [--since 7d] [--format table|json|csv]`: the control room's panels.

Two sources, one computation (`controlroom.panels.compute_panels`), so the report shows what the
web page shows:
- through a proxy's admin API (default): `--url` / `GOVERNOR_URL` and a viewer, auditor,
  on-call or admin key (`--key` / `GOVERNOR_REPORT_KEY`, else `GOVERNOR_ADMIN_KEY`);
- straight from the ledger with `--ledger URL` (or `--data-dir`) and `--config DIR` (prices,
  budgets and loop settings; like `governor sessions`, for an operator on the database host).
"""

from __future__ import annotations

import asyncio
import csv
import io
import os
import time
from pathlib import Path
from typing import Any

import click
import orjson

from governor.sessions_cli import _fail, admin_request

DEFAULT_URL = os.environ.get("GOVERNOR_URL", "http://127.0.0.1:8080")


def render_table(doc: dict[str, Any]) -> str:
    """Panels as text: figures, then each table with aligned columns, then actions."""
    out: list[str] = []
    for p in doc["panels"]:
        out.append(f"== {p['number']}. {p['title']} [{p['layer']}] — {p['question']}")
        if p["figures"]:
            out.append("   " + "  ".join(f"{k}={_cell(v)}" for k, v in p["figures"].items()))
        for t in p["tables"]:
            out.append(f"-- {t['title']}")
            rows = [[_cell(c) for c in r] for r in t["rows"]]
            if not rows:
                out.append("   (none)")
                continue
            widths = [min(max(len(h), *(len(r[i]) for r in rows)), 48)
                      for i, h in enumerate(t["columns"])]
            out.append("   " + "  ".join(h.ljust(w) for h, w in zip(t["columns"], widths,
                                                                      strict=True)))
            for r in rows:
                out.append("   " + "  ".join(c[:w].ljust(w) for c, w in zip(r, widths,
                                                                           strict=True)))
        for a in p["actions"]:
            detail = a["detail"].replace("\n", "\n      ")
            out.append(f"=> {a['kind']} {a['target']}: {detail}")
        out.append("")
    return "\n".join(out)


def render_csv(doc: dict[str, Any]) -> str:
    """One CSV: `panel,table,<columns…>` header per table, then its rows (figures as a
    `figures` table of name,value)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    for p in doc["panels"]:
        w.writerow(["panel", "table", "name", "value"])
        for k, v in p["figures"].items():
            w.writerow([p["number"], "figures", k, _cell(v)])
        for t in p["tables"]:
            w.writerow(["panel", "table", *t["columns"]])
            for r in t["rows"]:
                w.writerow([p["number"], t["title"], *(_cell(c) for c in r)])
    return buf.getvalue()


def _cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.4f}".rstrip("0").rstrip(".") if v != int(v) or abs(v) < 1e15 else str(v)
    return str(v)


async def _from_ledger(ledger: str, config_dir: Path | None, params: dict[str, str]) -> Any:
    from activities.config_source import load_config_dir
    from controlroom.filters import FilterError, parse_page_query
    from ledger.errors import LedgerError
    from ledger.store import LedgerStore
    from policies.config.yamlsource import ConfigErrors
    from proxy.control_room_routes import panels_document, query_panels

    try:
        config = load_config_dir(config_dir) if config_dir is not None else None
    except ConfigErrors as exc:
        _fail(f"{len(exc.errors)} config error(s): " + "; ".join(map(str, exc.errors)))
    try:
        query = parse_page_query(params, time.time())  # the web page's and JSON route's parser
    except FilterError as exc:
        _fail(str(exc), 2)
    try:
        store = await LedgerStore.open(ledger)
    except (LedgerError, ValueError) as exc:
        _fail(f"ledger: {exc}")
    try:
        return panels_document(query.filters, await query_panels(store, query, config),
                               query.view)
    finally:
        await store.close()


@click.command("report")
@click.option("--panel", "panel", type=click.IntRange(1, 6), multiple=True,
              help="panel number 1-6 (repeatable; default all six)")
@click.option("--since", default="7d", show_default=True,
              help="duration back from --until (30m, 24h, 7d, 2w), ISO date/time or epoch s")
@click.option("--until", default=None, help="ISO date/time, epoch s or a duration back from now "
              "(default now)")
@click.option("--team", default=None)
@click.option("--project", default=None)
@click.option("--tag", "--workflow-tag", "tag", default=None, help="workflow tag")
@click.option("--view", type=click.Choice(["all", "executive", "oncall", "engineering"]),
              default="all", show_default=True, help="one metric layer's panels")
@click.option("--format", "fmt", type=click.Choice(["table", "json", "csv"]), default="table",
              show_default=True)
@click.option("--url", default=DEFAULT_URL, show_default=True, help="Governor proxy URL")
@click.option("--key", default=None, help="viewer/auditor/on-call/admin key "
              "(GOVERNOR_REPORT_KEY, else GOVERNOR_ADMIN_KEY)")
@click.option("--ledger", default=None, help="read the ledger directly (sqlite:///… or "
              "postgresql://…) instead of the admin API")
@click.option("--config", "config_dir", type=click.Path(path_type=Path, exists=True,
                                                         file_okay=False), default=None,
              help="config directory (with --ledger: prices, budgets, loop settings)")
def report(panel: tuple[int, ...], since: str, until: str | None, team: str | None,
           project: str | None, tag: str | None, view: str, fmt: str, url: str,
           key: str | None, ledger: str | None, config_dir: Path | None) -> None:
    """The control room's six panels: adoption, burn rate, runaway agents, premium-model review
    (with tokenizer drift), safety review, outcome join. Never a ranking of people."""
    params = {"since": since}  # the names of the web page's query (controlroom.filters)
    for name, v in (("until", until), ("team", team), ("project", project),
                    ("workflow_tag", tag), ("view", None if view == "all" else view)):
        if v:
            params[name] = v
    if panel:
        params["panel"] = ",".join(str(p) for p in sorted(set(panel)))
    if ledger:
        doc = asyncio.run(_from_ledger(ledger, config_dir, params))
    else:
        key = key or os.environ.get("GOVERNOR_REPORT_KEY") or os.environ.get("GOVERNOR_ADMIN_KEY")
        doc = admin_request(url, key, "GET", "/gateway/control-room/panels", params=params)
    if fmt == "json":
        click.echo(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode())
    elif fmt == "csv":
        click.echo(render_csv(doc), nl=False)
    else:
        click.echo(render_table(doc))
