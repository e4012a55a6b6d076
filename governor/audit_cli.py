"""`governor audit …`: the auditor's commands.

Each works through the proxy's admin API with an auditor (or on-call/admin) key, like
`governor sessions`, or directly on the ledger database for an operator who holds its
credentials (`--data-dir`, `--ledger`, `GOVERNOR_LEDGER_URL`, as `governor proxy`), or on an
exported bundle file.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import sys
from pathlib import Path
from typing import Any
from urllib.parse import quote

import click
import orjson

from governor.sessions_cli import _fail, _json, _url, admin_request

_audit_key = click.option("--key", envvar="GOVERNOR_ADMIN_KEY", default=None,
                          help="auditor, on-call or admin key (admin API mode)")
_data_dir = click.option("--data-dir", type=click.Path(path_type=Path), default=None,
                         help="read the ledger in this data dir directly (as `governor proxy`)")
_ledger = click.option("--ledger", default=None,
                       help="read this ledger URL directly (sqlite:///… or postgresql://…)")


def ledger_url(data_dir: Path | None, ledger: str | None) -> str | None:
    """The ledger to read directly, or None: go through the admin API."""
    if ledger:
        return ledger
    if data_dir is not None:
        return f"sqlite:///{data_dir / 'ledger.db'}"
    return os.environ.get("GOVERNOR_LEDGER_URL") or None


@click.group()
def audit() -> None:
    """Audit a session's governed record: replay its decisions; verify the ledger's chain."""


@audit.command("replay")
@click.argument("target")
@click.option("--config", "config_dir", type=click.Path(path_type=Path), default=None,
              help="re-decide under this config directory instead of the recorded versions")
@click.option("--temporal-address", envvar="GOVERNOR_TEMPORAL_ADDRESS", default=None,
              help="Temporal server to read the workflow history from (ledger mode)")
@_url
@_audit_key
@_data_dir
@_ledger
@_json
def audit_replay(target: str, config_dir: Path | None, temporal_address: str | None, url: str,
                 key: str | None, data_dir: Path | None, ledger: str | None,
                 as_json: bool) -> None:
    """Replay TARGET (a session id, or an exported bundle file): the workflow history through
    Temporal's Replayer on today's code, and every recorded governance decision through
    today's policy core. Exit 0: everything reproduced; 1: divergences (each is named)."""
    from audit.replay import record_from_bundle, record_from_doc, replay

    config = None
    label = None
    if config_dir is not None:
        from activities.config_source import load_config_dir
        from policies.config.yamlsource import ConfigErrors

        try:
            config = load_config_dir(config_dir)
        except ConfigErrors as exc:
            _fail(f"--config {config_dir}: " + "; ".join(str(e) for e in exc.errors[:5]), 2)
        label = f"--config {config_dir}"
    path = Path(target)
    if path.is_file():
        try:
            record = record_from_bundle(path)
        except (OSError, ValueError) as exc:
            _fail(f"cannot read bundle {target}: {exc}", 2)
    elif (lurl := ledger_url(data_dir, ledger)) is not None:
        record = asyncio.run(_from_ledger(lurl, target, temporal_address, data_dir))
    else:
        doc = admin_request(url, key, "GET", f"/gateway/audit/sessions/{quote(target, safe='')}"
                            "/decisions")
        record = record_from_doc(doc)
    report = asyncio.run(replay(record, config=config, config_label=label))
    if as_json:
        click.echo(orjson.dumps(report.as_dict(), option=orjson.OPT_INDENT_2).decode())
    else:
        for line in report.lines():
            click.echo(line)
    sys.exit(0 if report.ok else 1)


async def _from_ledger(url: str, session_id: str, temporal_address: str | None,
                       data_dir: Path | None) -> Any:
    """The record from the ledger; the history from Temporal while the server has it, else
    from the archive under the data dir (settings from GOVERNOR_CONFIG_DIR, as `governor up`)."""
    from audit.replay import histories_from_archive, histories_from_temporal, record_from_ledger
    from ledger.store import LedgerStore
    from workflows.session import session_workflow_id

    store = await LedgerStore.open(url)
    try:
        record = await record_from_ledger(store, session_id)
    finally:
        await store.close()
    if not record.calls:
        _fail(f"no calls of session {session_id!r} in the ledger {url.split('@')[-1]}")
    if not any(r["path"] == "workflow" for r in record.calls):
        return record
    if temporal_address:
        from temporalio.client import Client
        from temporalio.contrib.pydantic import pydantic_data_converter

        try:
            client = await Client.connect(temporal_address,
                                          data_converter=pydantic_data_converter)
        except Exception as exc:
            _fail(f"cannot reach Temporal at {temporal_address}: {type(exc).__name__}")
        record.histories = await histories_from_temporal(client,
                                                         session_workflow_id(session_id))
    if not record.histories and data_dir is not None:
        from activities.config_source import load_config_dir
        from audit.archive import Archive

        cfg = load_config_dir(os.environ.get("GOVERNOR_CONFIG_DIR", "examples/config"))
        archive = Archive.from_settings(cfg.settings.archive, data_dir)
        record.histories = await histories_from_archive(archive, session_id)
    return record


def parse_since(value: str | None) -> float | None:
    """`--since`: epoch seconds, an ISO-8601 date/time (UTC unless it says otherwise), or a
    duration back from now (`30m`, `24h`, `7d`)."""
    if value is None:
        return None
    from policies.config.models import window_seconds

    v = value.strip()
    try:
        return float(v)
    except ValueError:
        pass
    try:
        return dt.datetime.now(dt.UTC).timestamp() - window_seconds(v)
    except ValueError:
        pass
    try:
        t = dt.datetime.fromisoformat(v)
    except ValueError:
        raise click.BadParameter(
            "use epoch seconds, an ISO date/time (2026-11-30T00:00) or a duration (24h, 7d)",
            param_hint="'--since'",
        ) from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.UTC)
    return t.timestamp()


async def _verify_direct(url: str, since: float | None) -> dict[str, Any]:
    from audit.verify import verify
    from ledger.store import LedgerStore

    store = await LedgerStore.open(url)
    try:
        return (await verify(store, since=since)).to_dict()
    finally:
        await store.close()


@audit.command("verify")
@click.option("--since", default=None, help="only links from then on: epoch, ISO time or 24h/7d")
@_url
@_audit_key
@_data_dir
@_ledger
@_json
def audit_verify(since: str | None, url: str, key: str | None, data_dir: Path | None,
                 ledger: str | None, as_json: bool) -> None:  # fmt: skip
    """Walk every chain of the ledger and name each record altered, inserted or deleted.

    Exit 0: the ledger verifies; 1: something was found (each finding is named).
    """
    from audit.verify import report_lines

    t = parse_since(since)
    lurl = ledger_url(data_dir, ledger)
    if lurl is not None:
        from ledger.errors import LedgerError

        try:
            doc = asyncio.run(_verify_direct(lurl, t))
        except (LedgerError, ValueError) as exc:
            _fail(str(exc))
    else:
        params = {"since": repr(t)} if t is not None else {}
        doc = admin_request(url, key, "GET", "/gateway/audit/verify", params=params)
    if as_json:
        click.echo(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode())
    else:
        for line in report_lines(doc):
            click.echo(line)
    sys.exit(0 if doc.get("ok") else 1)
