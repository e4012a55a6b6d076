"""`governor sessions list | show | kill`: the on-call commands, over the proxy's admin API.

They go through the proxy rather than the ledger or Temporal directly so one kill reaches a
session wherever it lives (proxy sessions via the ledger, workflow sessions via the kill hook),
and so every kill is authenticated and audited in one place.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any, NoReturn
from urllib.parse import quote

import click
import httpx
import orjson

DEFAULT_URL = os.environ.get("GOVERNOR_URL", "http://127.0.0.1:8080")


def _fail(message: str, code: int = 1) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def transport_failure(base: str, exc: httpx.HTTPError, read_timeout: float,
                      hint: str = "") -> str:  # fmt: skip
    """One sentence for an HTTP failure that is not an answer: the proxy could not be reached
    (nothing listening, DNS, connect timeout), or it was reached but did not answer within
    `read_timeout` seconds (then `hint`, e.g. which option raises it), or the connection broke
    while its answer was read."""
    name = type(exc).__name__
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
        return (f"cannot reach the Governor proxy at {base} ({name}); "
                "is `governor up` running? (--url / GOVERNOR_URL)")  # fmt: skip
    if isinstance(exc, httpx.TimeoutException):
        return (f"the Governor proxy at {base} took the request but did not answer within "
                f"{read_timeout:g} s ({name}); it may still be working{hint}")
    return f"the connection to the Governor proxy at {base} broke before its answer ({name})"


def admin_request(url: str, key: str | None, method: str, path: str,
                  read_timeout: float = 15.0, timeout_hint: str = "",
                  **kw: Any) -> dict[str, Any]:  # fmt: skip
    """One admin call (connect within 5 s, the answer within `read_timeout` s); every failure
    becomes one sentence on stderr and a non-zero exit."""
    if not key:
        _fail("no admin key: pass --key or set GOVERNOR_ADMIN_KEY (e.g. gk-dev-oncall)", 2)
    base = url.rstrip("/")
    try:
        r = httpx.request(
            method,
            base + path,
            headers={"Authorization": f"Bearer {key}"},
            timeout=httpx.Timeout(read_timeout, connect=min(5.0, read_timeout)),
            **kw,
        )
    except httpx.InvalidURL as exc:
        _fail(f"bad --url {url!r}: {exc}", 2)
    except httpx.HTTPError as exc:
        _fail(transport_failure(base, exc, read_timeout, timeout_hint))
    try:
        doc = orjson.loads(r.content) if r.content else {}
    except orjson.JSONDecodeError:
        _fail(f"{base} answered {r.status_code} without JSON: is it a Governor proxy?")
    if r.status_code >= 400:
        err = doc.get("error", {}) if isinstance(doc, dict) else {}
        if not isinstance(err, dict):  # another API's shape, e.g. {"error": "not found"}
            err = {}
        msg = err.get("message") or r.reason_phrase
        hint = ""
        if r.status_code == 401:
            hint = " (check --key / GOVERNOR_ADMIN_KEY)"
        _fail(f"{r.status_code} {err.get('code', '')}: {msg}{hint}".replace("  ", " "))
    if not isinstance(doc, dict):
        _fail(f"{base} answered with unexpected JSON")
    return doc


def _ts(v: Any) -> str:
    if not isinstance(v, int | float) or v <= 0:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(v))


_url = click.option("--url", default=DEFAULT_URL, show_default=True, help="Governor proxy URL")
_key = click.option("--key", envvar="GOVERNOR_ADMIN_KEY", default=None, help="admin or on-call key")
_json = click.option("--json", "as_json", is_flag=True, help="print the raw JSON")


@click.group()
def sessions() -> None:
    """Agent sessions (proxy and workflow sessions alike): list, show, kill."""


@sessions.command("list")
@click.option("--status", type=click.Choice(["open", "killed", "closed"]), default=None)
@click.option("--project", default=None)
@click.option("--limit", type=click.IntRange(1, 10_000), default=100, show_default=True)
@_url
@_key
@_json
def list_sessions(
    status: str | None, project: str | None, limit: int, url: str, key: str | None, as_json: bool
) -> None:
    """List sessions from the ledger, newest first."""
    params: dict[str, Any] = {"limit": limit}
    if status:
        params["status"] = status
    if project:
        params["project"] = project
    doc = admin_request(url, key, "GET", "/gateway/sessions", params=params)
    rows = doc.get("sessions", [])
    if as_json:
        click.echo(orjson.dumps(rows, option=orjson.OPT_INDENT_2).decode())
        return
    if not rows:
        click.echo("no sessions")
        return
    click.echo(
        f"{'SESSION':<30} {'KIND':<8} {'STATUS':<7} {'PROJECT':<18} {'TAG':<16} {'CALLS':>6} "
        f"{'TOKENS':>9} {'COST $':>9}  LAST"
    )
    for s in rows:
        click.echo(
            f"{str(s.get('session_id', ''))[:30]:<30} {s.get('kind') or '-'!s:<8} "
            f"{s.get('status', '')!s:<7} "
            f"{str(s.get('project') or '-')[:18]:<18} {str(s.get('workflow_tag') or '-')[:16]:<16} "
            f"{s.get('calls', 0):>6} {s.get('tokens', 0):>9} {s.get('cost_usd', 0.0):>9.4f}  "
            f"{_ts(s.get('last_ts') or s.get('updated_ts'))}"
        )


@sessions.command("show")
@click.argument("session_id")
@_url
@_key
@_json
def show_session(session_id: str, url: str, key: str | None, as_json: bool) -> None:
    """One session: its usage (the workflow's or this replica's count of answered calls, and the
    ledger's totals, refusals included), kill record, and the workflow's own status if any."""
    doc = admin_request(url, key, "GET", f"/gateway/sessions/{quote(session_id, safe='')}")
    if as_json:
        click.echo(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode())
        return
    wf = doc.get("workflow")
    click.echo(f"session   {doc.get('session_id')}")
    click.echo(f"status    {doc.get('status', '-')}")
    for f in ("project", "team", "user", "workflow_tag"):
        v = doc.get(f) or (wf or {}).get(f)
        if v:
            click.echo(f"{f:<9} {v}")
    src = wf or doc.get("live") or doc
    click.echo(
        f"usage     {src.get('calls', 0)} calls, {src.get('tokens', 0)} tokens, "
        f"${src.get('cost_usd', 0.0):.4f}"
    )
    if src is not doc and doc.get("calls") is not None:
        # `usage` is the freshest count of answered calls (the workflow's, else this replica's);
        # the ledger's totals, which `sessions list` and `audit show` print, count every
        # governed call, refusals included, as of its last flush.
        click.echo(
            f"ledger    {doc.get('calls', 0)} calls (refusals included), "
            f"{doc.get('tokens', 0)} tokens, ${doc.get('cost_usd', 0.0):.4f}"
        )
    if kill := doc.get("kill"):
        click.echo(
            f"killed    by {kill.get('actor')} at {_ts(kill.get('ts'))}: {kill.get('reason')}"
        )
    if wf:
        ceiling = wf.get("token_ceiling")
        click.echo(
            f"workflow  {wf.get('window_tokens', 0)} tokens in window"
            + (f" of {ceiling}" if ceiling else "")
            + f"; rate {wf.get('token_rate_per_hour', 0):.0f}/h vs baseline "
            f"{wf.get('baseline_tokens_per_hour', 0):.0f}/h ({wf.get('baseline_source')})"
        )
        if wf.get("model_override"):
            click.echo(f"model     moved to {wf['model_override']}")
        for vm, t in (wf.get("pinned") or {}).items():
            click.echo(f"pinned    {vm} -> {t.get('provider')}/{t.get('model')}")
        for d in wf.get("decisions") or []:
            click.echo(f"decision  turn {d.get('turn')}: {d.get('kind')}: {d.get('detail')}")


@sessions.command("kill")
@click.argument("session_id")
@click.option("--reason", required=True, help="why (audited with your key's user)")
@_url
@_key
def kill_session(session_id: str, reason: str, url: str, key: str | None) -> None:
    """Kill a session wherever it lives; idempotent."""
    if not reason.strip():
        _fail("--reason must say why", 2)
    doc = admin_request(
        url,
        key,
        "PUT",
        f"/gateway/sessions/{quote(session_id, safe='')}/kill",
        content=orjson.dumps({"reason": reason}),
    )
    already = " (it was already killed)" if doc.get("already_killed") else ""
    click.echo(
        f"killed {doc.get('session_id')} by {doc.get('actor')}: {doc.get('reason')}{already}"
    )
