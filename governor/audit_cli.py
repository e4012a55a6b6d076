"""`governor audit …`: the auditor's commands.

Each works through the proxy's admin API with an auditor (or on-call/admin) key, like
`governor sessions`, or directly on the ledger database for an operator who holds its
credentials (`--data-dir`, `--ledger`, `GOVERNOR_LEDGER_URL`, as `governor proxy`), or on an
exported bundle file.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import getpass
import os
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import click
import httpx
import orjson

from governor.sessions_cli import _fail, _json, _url, admin_request, transport_failure

T = TypeVar("T")
DEFAULT_DATA = Path(os.environ.get("GOVERNOR_DATA_DIR", ".governor"))
DEFAULT_CONFIG = Path(os.environ.get("GOVERNOR_CONFIG_DIR", "examples/config"))

_audit_key = click.option("--key", envvar="GOVERNOR_ADMIN_KEY", default=None,
                          help="auditor, on-call or admin key (admin API mode)")
_data_dir = click.option("--data-dir", type=click.Path(path_type=Path), default=None,
                         help="read the ledger in this data dir directly (as `governor proxy`)")
_ledger = click.option("--ledger", default=None,
                       help="read this ledger URL directly (sqlite:///… or postgresql://…)")
# A verify or export of a large ledger takes long before its first byte (100,000 calls: ~4 s
# on an idle machine, more under load); the proxy stops a verify after 30 min (504).
LONG_READ_S = 1800.0
_TIMEOUT_HINT = ": raise --timeout (GOVERNOR_AUDIT_TIMEOUT)"
_timeout = click.option("--timeout", type=click.FloatRange(min=0.001, max=86400.0),
                        envvar="GOVERNOR_AUDIT_TIMEOUT", default=LONG_READ_S, show_default=True,
                        help="seconds to wait for the proxy's answer (admin API mode)")


def ledger_url(data_dir: Path | None, ledger: str | None) -> str | None:
    """The ledger to read directly, or None: go through the admin API."""
    if ledger:
        return ledger
    if data_dir is not None:
        return f"sqlite:///{data_dir / 'ledger.db'}"
    return os.environ.get("GOVERNOR_LEDGER_URL") or None


@click.group()
def audit() -> None:
    """Audit a session's governed record: show, export, erase, replay; verify the ledger's chain."""


@audit.command("replay")
@click.argument("target")
@click.option("--config", "config_dir", type=click.Path(path_type=Path), default=None,
              help="re-decide under this config directory instead of the recorded versions")
@click.option("--temporal-address", envvar="TEMPORAL_ADDRESS", default=None,
              help="read the workflow history from this Temporal (direct mode; else the archive)")
@click.option("--archive", "archive_url", default=None,
              help="archive URL overriding the settings of GOVERNOR_CONFIG_DIR (direct mode)")
@_url
@_audit_key
@_data_dir
@_ledger
@_json
def audit_replay(target: str, config_dir: Path | None, temporal_address: str | None,
                 archive_url: str | None, url: str, key: str | None, data_dir: Path | None,
                 ledger: str | None, as_json: bool) -> None:
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
    direct = None
    if path.is_file():
        try:
            record = record_from_bundle(path)
        except (OSError, ValueError) as exc:
            _fail(f"cannot read bundle {target}: {exc}", 2)
        record.salt = _stored_salt(data_dir)
    elif Direct.wanted(data_dir, ledger):
        direct = Direct(data_dir, ledger, None, archive_url, temporal_address)
        salt = _stored_salt(direct.data_dir)
        # the one bound of show, export and replay: --config's, else GOVERNOR_CONFIG_DIR's
        most = (config.settings.archive if config is not None else direct.settings()
                ).max_export_calls
        record = asyncio.run(direct.run(
            lambda store, archive, temporal: _direct_record(store, archive, temporal, target,
                                                            salt, most)))
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
    code = 0 if report.ok else 1
    _finish(direct, code)
    sys.exit(code)


def _stored_salt(data_dir: Path | None) -> bytes | None:
    """The deployment's fingerprint salt if this side holds it (`GOVERNOR_FINGERPRINT_SALT`, or
    the data dir's salt file), never created here: without it guardrail verdicts are not
    checked against the stored text."""
    from activities.guardrails import SALT_ENV, SALT_FILE

    env = os.environ.get(SALT_ENV)
    if env:
        return env.encode("utf-8")
    if data_dir is None:
        return None
    try:
        return (data_dir / SALT_FILE).read_bytes().strip() or None
    except OSError:
        return None


def _salt_source(data_dir: Path | None) -> str:
    """Where `_stored_salt` read the salt: named by a salt-check refusal."""
    from activities.guardrails import SALT_ENV, SALT_FILE

    if os.environ.get(SALT_ENV) or data_dir is None:
        return SALT_ENV
    return str(data_dir / SALT_FILE)


async def _direct_record(store: Any, archive: Any, temporal: Any, session_id: str,
                         salt: bytes | None = None, max_calls: int | None = None) -> Any:
    """The record from the ledger (its guardrail verdicts checked against the stored text when
    `salt` is at hand); the workflow history from Temporal while the server has it, else from
    the session archive. More than `max_calls` calls (`archive.max_export_calls`, as the
    replay route) is one `error:` line, exit 1, before any row is read."""
    from audit.offloop import ExportTooLarge, calls_within
    from audit.replay import histories_from_archive, histories_from_temporal, record_from_ledger
    from workflows.session import session_workflow_id

    if max_calls is not None:
        try:
            await calls_within(store, session_id, max_calls)
        except ExportTooLarge as exc:
            _fail(f"{exc}{_LIMITS_HINT}")
    record = await record_from_ledger(store, session_id, salt)
    if not record.calls:
        _fail(f"no calls of session {session_id!r} in the ledger")
    if any(r["path"] == "workflow" for r in record.calls):
        if temporal is not None:
            record.histories = await histories_from_temporal(
                temporal, session_workflow_id(session_id))
        if not record.histories:
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


async def _verify_direct(
    url: str,
    since: float | None,
    checkpoints: list[dict[str, Any]],
    salt: bytes | None = None,
    source: str | None = None,
) -> dict[str, Any]:
    from audit.verify import verify
    from ledger.store import LedgerStore

    store = await LedgerStore.open(url)
    try:
        if salt is not None:  # the replicas' salt (`ledger.salt_check`), else every row differs
            await store.compare_salt(salt, source)
        return (await verify(store, since=since, checkpoints=checkpoints, salt=salt)).to_dict()
    finally:
        await store.close()


def _checkpoints(files: tuple[Path, ...], data_dir: Path | None) -> list[dict[str, Any]]:
    """The chain heads kept beside the journals: the files named, and every
    `DATA_DIR/*/chain-head.json` (each replica's journal directory)."""
    from ledger.chain import CHECKPOINT_FILE, read_checkpoint

    paths = list(files)
    if data_dir is not None:
        paths += sorted(data_dir.glob(f"*/{CHECKPOINT_FILE}"))
    out = []
    for p in paths:
        try:
            out.append(read_checkpoint(p))
        except ValueError as exc:
            _fail(str(exc), 2)
    return out


@audit.command("verify")
@click.option("--since", default=None, help="only links from then on: epoch, ISO time or 24h/7d")
@click.option(
    "--checkpoint",
    "checkpoint_files",
    multiple=True,
    type=click.Path(path_type=Path, dir_okay=False),
    help="a chain-head.json kept beside a journal (with --data-dir: all of them are read)",
)
@_url
@_audit_key
@_timeout
@_data_dir
@_ledger
@_json
def audit_verify(since: str | None, checkpoint_files: tuple[Path, ...], url: str,
                 key: str | None, timeout: float, data_dir: Path | None, ledger: str | None,
                 as_json: bool) -> None:  # fmt: skip
    """Walk every chain of the ledger and name each record altered, inserted or deleted.

    Directly on the ledger, each replica's chain head kept beside its journal
    (`chain-head.json`, under --data-dir or named by --checkpoint) is checked too: it catches a
    chain cut or rewritten together with its in-database checkpoint.

    Exit 0: the ledger verifies; 1: something was found (each finding is named).
    """
    from audit.verify import report_lines

    t = parse_since(since)
    lurl = ledger_url(data_dir, ledger)
    if lurl is not None:
        from ledger.errors import LedgerError

        cps = _checkpoints(checkpoint_files, data_dir)
        try:  # the salt the chain's record keys are keyed under: env, else the data dir's
            doc = asyncio.run(
                _verify_direct(lurl, t, cps, _stored_salt(data_dir), _salt_source(data_dir))
            )
        except (LedgerError, ValueError) as exc:
            _fail(str(exc))
    else:
        if checkpoint_files:
            _fail("--checkpoint reads the ledger directly: add --ledger URL or --data-dir DIR", 2)
        params = {"since": repr(t)} if t is not None else {}
        doc = admin_request(url, key, "GET", "/gateway/audit/verify", read_timeout=timeout,
                            timeout_hint=_TIMEOUT_HINT, params=params)
    if as_json:
        click.echo(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode())
    else:
        for line in report_lines(doc):
            click.echo(line)
    sys.exit(0 if doc.get("ok") else 1)


@audit.command("reset-salt-check")
@_data_dir
@_ledger
def reset_salt_check(data_dir: Path | None, ledger: str | None) -> None:
    """Forget the salt the ledger was first opened with (`ledger.salt_check`), to change the
    deployment's salt on purpose: stop every replica, run this, start them with the new salt
    (the first to start records it). Chain links keyed under the old salt need the old salt
    to verify: verify (or export) before."""
    from ledger.errors import LedgerError
    from ledger.store import LedgerStore

    lurl = ledger_url(data_dir, ledger)
    if lurl is None:
        _fail("reset-salt-check works on the ledger directly: add --ledger URL or --data-dir", 2)

    async def run() -> bool:
        store = await LedgerStore.open(lurl)
        try:
            return await store.reset_salt_check()
        finally:
            await store.close()

    try:
        had = asyncio.run(run())
    except (LedgerError, ValueError) as exc:
        _fail(f"ledger: {exc}")
    click.echo(
        "salt check reset: the next replica to start records its salt"
        if had
        else "salt check reset: none was recorded (the next replica to start records its salt)"
    )


# -- show, export, erase (the session archive) ----------------------------------------


def _direct(fn: Callable[..., Any]) -> Callable[..., Any]:
    opts = [
        click.option("--data-dir", type=click.Path(path_type=Path), default=None,
                     help="read the ledger and archive under this data dir (direct mode)"),
        click.option("--ledger", default=None,
                     help="ledger URL (sqlite:///… or postgresql://…; direct mode)"),
        click.option("--config", "config_dir", type=click.Path(path_type=Path), default=None,
                     help=f"config directory whose settings name the archive "
                          f"(direct mode; default {DEFAULT_CONFIG})"),
        click.option("--archive", "archive_url", default=None,
                     help="archive URL overriding the settings (direct mode)"),
        click.option("--temporal-address", envvar="TEMPORAL_ADDRESS", default=None,
                     help="read live workflow histories from this Temporal (direct mode)"),
    ]
    for o in reversed(opts):
        fn = o(fn)
    return fn


class Direct:
    """The direct mode's sources: ledger, archive, Temporal (optional)."""

    def __init__(self, data_dir: Path | None, ledger: str | None, config_dir: Path | None,
                 archive_url: str | None, temporal_address: str | None) -> None:
        self.data_dir = data_dir or DEFAULT_DATA
        self.ledger_url = (ledger or os.environ.get("GOVERNOR_LEDGER_URL")
                           or f"sqlite:///{self.data_dir / 'ledger.db'}")
        self.config_dir = config_dir
        self.archive_url = archive_url
        self.temporal_address = temporal_address
        self.temporal_used = False

    @staticmethod
    def wanted(data_dir: Path | None, ledger: str | None) -> bool:
        return data_dir is not None or ledger is not None or bool(
            os.environ.get("GOVERNOR_LEDGER_URL"))

    def settings(self) -> Any:
        from policies.config.models import ArchiveSettings

        base = ArchiveSettings()
        cdir = self.config_dir or (DEFAULT_CONFIG if DEFAULT_CONFIG.is_dir() else None)
        if cdir is not None:
            from activities.config_source import load_config_dir
            from policies.config.yamlsource import ConfigErrors

            try:
                base = load_config_dir(cdir).settings.archive
            except ConfigErrors as exc:
                _fail(f"config {cdir}: {len(exc.errors)} error(s), first: {exc.errors[0]}", 2)
        if self.archive_url:
            base = base.model_copy(update={"url": self.archive_url})
        return base

    def _archive(self, archive_cls: Any) -> Any:
        if self.ledger_url.startswith("sqlite:///"):
            path = Path(self.ledger_url.removeprefix("sqlite:///"))
            if not path.exists():
                _fail(f"no ledger at {path} (--data-dir / --ledger / GOVERNOR_LEDGER_URL)", 2)
        try:
            return archive_cls.from_settings(self.settings(), self.data_dir)
        except ValueError as exc:
            _fail(f"archive: {exc}", 2)

    async def run(self, work: Callable[[Any, Any, Any], Awaitable[T]]) -> T:
        from audit.archive import Archive
        from ledger.errors import LedgerError
        from ledger.store import LedgerStore

        archive = self._archive(Archive)
        try:
            store = await LedgerStore.open(self.ledger_url)
        except (LedgerError, ValueError) as exc:
            _fail(f"ledger: {exc}")
        salt = _stored_salt(self.data_dir)
        if salt is not None:  # what this writes is chained as the gateway's writes are
            store.attach_chain_key(salt)
            try:  # under the replicas' salt (`ledger.salt_check`), or not at all
                await store.compare_salt(salt, _salt_source(self.data_dir))
            except LedgerError as exc:
                await store.close()
                _fail(f"ledger: {exc}")
        temporal = None
        if self.temporal_address:
            from governor.up import connect_temporal

            try:
                temporal = await connect_temporal(self.temporal_address)
                self.temporal_used = True
            except Exception as exc:
                click.echo(f"warning: Temporal at {self.temporal_address} unreachable ({exc}); "
                           "histories come from the archive", err=True)
        from audit.archive import ArchiveError
        from audit.sealing import SealingError

        try:
            return await work(store, archive, temporal)
        except (ArchiveError, SealingError) as exc:
            _fail(f"archive: {exc}")
        except LedgerError as exc:
            _fail(f"ledger: {exc}")
        finally:
            await store.close()


_LIMITS_HINT = ("; on the ledger directly the bounds are the --config directory's "
                "archive.max_export_calls and archive.max_export_bytes settings "
                "(default: GOVERNOR_CONFIG_DIR's)")


def _finish(direct: Direct | None, code: int = 0) -> None:
    """Exit at once after a Temporal client was used: its runtime threads may abort interpreter
    teardown (as `governor up` notes)."""
    if direct is None or not direct.temporal_used:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


@audit.command("show")
@click.argument("session_id")
@click.option("--offset", type=click.IntRange(0, 10**9), default=0, show_default=True,
              help="skip this many timeline entries")
@click.option("--limit", type=click.IntRange(1, 5000), default=1000, show_default=True,
              help="show at most this many entries (a last line says how many more)")
@_url
@_audit_key
@_json
@_direct
def show(session_id: str, offset: int, limit: int, url: str, key: str | None, as_json: bool,
         data_dir: Path | None, ledger: str | None, config_dir: Path | None,
         archive_url: str | None, temporal_address: str | None) -> None:
    """A session's timeline: calls (route, tokens, cost, decision and why), refusals, kills,
    guardrail events (fingerprints only), alerts and runbook steps, outcomes."""
    from audit.timeline import Entry, render

    if Direct.wanted(data_dir, ledger):
        from audit.offloop import ExportTooLarge, Source, build_show, calls_within
        from audit.session_source import session_histories

        direct: Direct | None = Direct(data_dir, ledger, config_dir, archive_url,
                                       temporal_address)
        assert direct is not None
        limits = direct.settings()  # as the route: archive.max_export_calls / _bytes

        async def work(store: Any, archive: Any, temporal: Any) -> dict[str, Any] | None:
            assert direct is not None
            await calls_within(store, session_id, limits.max_export_calls)
            hist = await session_histories(temporal, session_id, limits.max_export_bytes
                                           ) if temporal is not None else []
            return await build_show(Source(direct.ledger_url, None, archive), session_id, hist,
                                    offset, limit, limits.max_export_calls)

        try:
            doc = asyncio.run(direct.run(work))
        except ExportTooLarge as exc:
            _fail(f"{exc}{_LIMITS_HINT}")
        if doc is None:
            _fail(f"no session {session_id!r} in the ledger or the archive")
    else:
        direct = None
        doc = admin_request(url, key, "GET",
                            f"/gateway/audit/sessions/{quote(session_id, safe='')}"
                            f"?offset={offset}&limit={limit}")
    if as_json:
        click.echo(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode())
    else:
        entries = [Entry(**e) for e in doc.get("entries", [])]
        click.echo(render(doc["session"], entries, doc.get("source", "-"),
                          doc.get("tombstones") or []), nl=False)
        more = int(doc.get("more") or 0)
        if more:
            click.echo(f"... {more} more entries (of {doc.get('total_entries')}): "
                       f"--offset {offset + len(entries)}")
    _finish(direct)


@audit.command("export")
@click.argument("session_id")
@click.option("--out", "out", type=click.Path(path_type=Path), default=None,
              help="write the bundle here (default: standard output)")
@_url
@_audit_key
@_timeout
@_direct
def export(session_id: str, out: Path | None, url: str, key: str | None, timeout: float,
           data_dir: Path | None, ledger: str | None, config_dir: Path | None,
           archive_url: str | None, temporal_address: str | None) -> None:
    """A self-contained bundle of the session (JSON lines: manifest of counts, hashes and time
    range; every row; the workflow history) that reads without Governor."""
    from audit.bundle import BundleError, parse_bundle

    d: Direct | None = None
    if Direct.wanted(data_dir, ledger):
        from audit.offloop import ExportTooLarge, Source, build_export, calls_within
        from audit.session_source import session_histories

        d = Direct(data_dir, ledger, config_dir, archive_url, temporal_address)
        limits = d.settings()  # archive.max_export_calls / max_export_bytes, as the route

        async def work(store: Any, archive: Any, temporal: Any) -> bytes | None:
            await calls_within(store, session_id, limits.max_export_calls)
            hist = await session_histories(temporal, session_id, limits.max_export_bytes
                                           ) if temporal is not None else []
            built = await build_export(Source(d.ledger_url, None, archive), session_id, hist,
                                       limits.max_export_bytes, limits.max_export_calls)
            if built is None:
                return None
            with built[1] as rest:
                return built[0] + rest.read()

        try:
            body = asyncio.run(d.run(work))
        except ExportTooLarge as exc:
            _fail(f"{exc}{_LIMITS_HINT}")
        if body is None:
            _fail(f"no session {session_id!r} in the ledger or the archive")
    else:
        body = _download(url, key, f"/gateway/audit/sessions/{quote(session_id, safe='')}/export",
                         timeout)
    try:
        bundle = parse_bundle(body)  # what we hand over checks against its own manifest
    except BundleError as exc:
        where = "the ledger" if d is not None else url
        _fail(f"the export from {where} is not a valid audit bundle ({exc}); nothing written")
    m = bundle.manifest
    if out is None:
        sys.stdout.buffer.write(body)
    else:
        out.write_bytes(body)
        counts = ", ".join(f"{n} {k}" for k, n in sorted(m["counts"].items()))
        click.echo(f"wrote {out}: {counts or 'no rows'}; sha256 {m['sha256']} "
                   f"(from the {m.get('source', 'unknown source')})", err=True)
    _finish(d)


def _download(url: str, key: str | None, path: str, read_timeout: float) -> bytes:
    if not key:
        _fail("no admin key: pass --key or set GOVERNOR_ADMIN_KEY (an auditor key)", 2)
    base = url.rstrip("/")
    try:
        r = httpx.get(base + path, headers={"Authorization": f"Bearer {key}"},
                      timeout=httpx.Timeout(read_timeout, connect=min(5.0, read_timeout)))
    except httpx.InvalidURL as exc:
        _fail(f"bad --url {url!r}: {exc}", 2)
    except httpx.HTTPError as exc:
        _fail(transport_failure(base, exc, read_timeout, _TIMEOUT_HINT))
    if r.status_code >= 400:
        try:
            err = orjson.loads(r.content).get("error", {})
        except (orjson.JSONDecodeError, AttributeError):
            err = {}
        if not isinstance(err, dict):  # another API's shape, e.g. {"error": "not found"}
            err = {}
        _fail(f"{r.status_code} {err.get('code', '')}: {err.get('message') or r.reason_phrase}")
    return r.content


@audit.command("erase")
@click.argument("session_id")
@click.option("--reason", required=True, help="why (recorded in the tombstones)")
@_url
@_audit_key
@_direct
def erase_cmd(session_id: str, reason: str, url: str, key: str | None, data_dir: Path | None,
              ledger: str | None, config_dir: Path | None, archive_url: str | None,
              temporal_address: str | None) -> None:
    """Delete a session from the archive and the ledger (an erasure request), leaving
    tombstones that say what went, who asked and why (admin key, or direct mode)."""
    if not reason.strip():
        _fail("--reason must say why", 2)
    if Direct.wanted(data_dir, ledger):
        from activities.archive_session import erase_session

        d = Direct(data_dir, ledger, config_dir, archive_url, None)
        actor = f"operator:{getpass.getuser()}"

        async def work(store: Any, archive: Any, _t: Any) -> dict[str, Any]:
            from audit.chain import newest_link_keyed

            if not store.chain_keyed and await newest_link_keyed(store):
                _fail("the ledger's chain names rows by keyed record keys: erasing needs the "
                      "deployment's salt (GOVERNOR_FINGERPRINT_SALT, or --data-dir holding "
                      "fingerprint.salt), else its tombstones would not match", 2)
            return await erase_session(store, archive, session_id, reason=reason.strip(),
                                       actor=actor, cause="erasure", now=time.time())

        doc = asyncio.run(d.run(work))
    else:
        doc = admin_request(url, key, "POST",
                            f"/gateway/audit/sessions/{quote(session_id, safe='')}/erase",
                            content=orjson.dumps({"reason": reason}))
    tomb = doc.get("archive") or {}
    rows = doc.get("ledger_rows")
    kept = doc.get("redacted") or {}
    click.echo(f"erased {session_id}: {len(tomb.get('removed') or [])} archive object(s)"
               + (f", ledger rows {rows}" if rows is not None else
                  ", ledger rows kept (no tamper-evident chain to record their deletion)")
               + (f"; {kept.get('alerts', 0)} alert(s) and {kept.get('runbook_steps', 0)} "
                  f"runbook step(s) kept, naming {doc['ref']} instead" if doc.get("ref") else ""))
