"""The session archive: each ended session's governed record in object storage, kept for years.

One store behind obstore (local directory, S3 or any S3-compatible server, GCS, Azure):

    objects/<sha[:2]>/<sha256>              immutable blobs, named by the sha256 of their
                                            plaintext; written with create-only puts, never
                                            overwritten; sealed (AES-256-GCM) when encryption
                                            is on (`audit.sealing`)
    sessions/<sha256(session id)>/index-<version:08d>.json
                                            the session's index, append-only: each version is a
                                            new object listing every blob of the session

A blob is JSON (canonical: sorted keys) of one of three kinds:

    record    {"format": RECORD_FORMAT, "session_id", "kind": "record"|"addendum",
               "sections": {section: [row, ...]}}     sections as `ledger.session_record`
    history   {"format": HISTORY_FORMAT, "session_id", "workflow_id", "run_id",
               "history": <Temporal history JSON: {"events": [...]}>}

The first archive of a session writes a `record` (split into several when it holds more than
`MAX_ROWS_PER_OBJECT` rows); whatever arrives later (a late outcome, a PR merged days after, a
longer history) is written as an `addendum` holding only the rows not archived before (a row
that changed, such as an alert that resolved, counts as new) and linked from the next index
version. An index version:

    {"format": INDEX_FORMAT, "session_id", "version": n, "ts": epoch seconds,
     "prev_sha256": sha256 of version n-1's plaintext (null for 1),
     "objects": [{"sha256", "kind": "record"|"addendum"|"history", "ts", "bytes",
                  "rows": {section: count}, "run_id"?}],
     "tombstones": [{"ts", "cause": "retention"|"erasure", "actor", "reason",
                     "removed": [{"sha256", "kind", "bytes", "rows"}]}],
     "erased": bool}

A deletion (retention, erasure) deletes the blobs and writes a version with no objects and a
tombstone saying what went and why; an erased session is never archived again.

Errors: `ArchiveError` (store unreachable, a blob whose bytes no longer hash to its name, an
index that is not ours), `SessionErased` for an archive attempt on an erased session,
`audit.sealing.SealingError` for key problems.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from audit.sealing import Sealer
from policies.config.models import ArchiveSettings

if TYPE_CHECKING:
    from obstore.store import ObjectStore


def _obstore() -> Any:
    """obstore, imported on first use: the proxy only needs it once it archives a session, and
    at start-up it would add ~4 MB to every replica's memory (the proxy's RSS bar)."""
    import obstore
    import obstore.exceptions
    import obstore.store

    return obstore


def _already_exists() -> type[BaseException]:
    return _obstore().exceptions.AlreadyExistsError  # type: ignore[no-any-return]

RECORD_FORMAT = "governor-archive-record/1"
HISTORY_FORMAT = "governor-archive-history/1"
INDEX_FORMAT = "governor-archive-index/1"
MAX_ROWS_PER_OBJECT = 5000
_INDEX_RACE_RETRIES = 8

# How rows of a section are recognised across objects (the later version of a row wins).
ROW_KEYS: dict[str, tuple[str, ...]] = {
    "session": ("session_id",),
    "owner": ("session_id",),
    "calls": ("call_id",),
    "kills": ("session_id",),
    "guardrail_events": ("call_id", "hook", "seq"),
    "alerts": ("run_id",),
    "runbook_steps": ("run_id", "step", "phase"),
    "outcomes": ("event_id", "session_id"),
    "config_versions": ("version_id",),
}


class ArchiveError(Exception):
    """The archive store failed, or holds something that is not what it should be."""


class ArchiveConfigError(ValueError):
    """The configured archive cannot be opened: a bad URL, or encryption on with its key
    missing or malformed. The message is one line, fit for a command's error output."""


class SessionErased(ArchiveError):
    """The session's archive was deleted (retention or erasure); it is not archived again."""


def canonical(doc: Any) -> bytes:
    """The bytes a blob is named by: JSON with sorted keys, no whitespace."""
    return orjson.dumps(doc, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def session_dir(session_id: str) -> str:
    return "sessions/" + sha256(session_id.encode())


def _blob_path(digest: str) -> str:
    return f"objects/{digest[:2]}/{digest}"


class Archive:
    """An archive store: create with `Archive.from_settings` or `Archive(store, sealer)`."""

    def __init__(
        self, store: ObjectStore | Path, sealer: Sealer | None = None, where: str = ""
    ) -> None:
        # A local directory may be given as its Path: its store is opened on first use.
        self._store = store
        self.sealer = sealer
        self.where = where

    @property
    def store(self) -> ObjectStore:
        got = self._store
        if isinstance(got, Path):
            got = self._store = _obstore().store.LocalStore(got)
        return got

    @classmethod
    def from_settings(
        cls, settings: ArchiveSettings, data_dir: Path, env: Mapping[str, str] | None = None
    ) -> Archive:
        """The configured store; the default is `data_dir / "archive"`. Raises SealingError when
        encryption is on and the key is missing or malformed, ArchiveConfigError (a
        ValueError) for a bad URL."""
        sealer = Sealer.from_env(settings.key_env, dict(env) if env else None) if (
            settings.encrypt
        ) else None
        if settings.url is None:
            path = (data_dir / "archive").resolve()
            path.mkdir(parents=True, exist_ok=True)
            return cls(path, sealer, str(path))
        url = settings.url
        if url.startswith("file://"):
            path = Path(url.removeprefix("file://")).resolve()
            path.mkdir(parents=True, exist_ok=True)
            return cls(path, sealer, str(path))
        config: dict[str, Any] = {}
        if settings.endpoint:
            config["endpoint"] = settings.endpoint
        if settings.region:
            config["region"] = settings.region
        try:
            store = _obstore().store.from_url(  # type: ignore[call-overload]
                url, config=config or None, client_options={"allow_http": settings.allow_http}
            )
        except Exception as exc:  # obstore's message: a first line, then a Debug dump
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ArchiveConfigError(f"archive url {url!r}: {first[:200]}") from None
        return cls(store, sealer, url)

    # -- blobs --------------------------------------------------------------------------------

    async def put_blob(self, data: bytes) -> tuple[str, bool]:
        """Store `data` under its sha256 unless it is there already: (sha256, created)."""
        digest = sha256(data)
        path = _blob_path(digest)
        if await self._exists(path):
            return digest, False
        body = self.sealer.seal(data, path) if self.sealer else data
        try:
            await _obstore().put_async(self.store, path, body, mode="create")
        except _already_exists():  # a racing writer stored the same content
            return digest, False
        except Exception as exc:
            raise ArchiveError(f"archive {self.where}: cannot write {path}: {exc}") from exc
        return digest, True

    async def get_blob(self, digest: str) -> bytes:
        """The blob named `digest`, checked against its name. FileNotFoundError if absent."""
        path = _blob_path(digest)
        data = await self._get(path)
        if self.sealer is not None:
            data = self.sealer.open(data, path)
        if sha256(data) != digest:
            raise ArchiveError(f"archive object {digest} does not hash to its name: altered")
        return data

    async def delete_blob(self, digest: str) -> None:
        try:
            await _obstore().delete_async(self.store, _blob_path(digest))
        except FileNotFoundError:
            pass

    async def raw(self, path: str) -> bytes:
        """The stored bytes at `path` as they are (sealed or not): for inspection and tests."""
        return await self._get(path)

    async def _exists(self, path: str) -> bool:
        try:
            await _obstore().head_async(self.store, path)
        except FileNotFoundError:
            return False
        except Exception as exc:
            raise ArchiveError(f"archive {self.where}: cannot read {path}: {exc}") from exc
        return True

    async def _get(self, path: str) -> bytes:
        try:
            res = await _obstore().get_async(self.store, path)
            return bytes(await res.bytes_async())
        except FileNotFoundError:
            raise
        except Exception as exc:
            raise ArchiveError(f"archive {self.where}: cannot read {path}: {exc}") from exc

    async def _list(self, prefix: str) -> list[str]:
        try:
            metas = await _obstore().list(self.store, prefix=prefix).collect_async()
        except Exception as exc:
            raise ArchiveError(f"archive {self.where}: cannot list {prefix}: {exc}") from exc
        return sorted(m["path"] for m in metas)

    # -- indexes ------------------------------------------------------------------------------

    async def index_versions(self, session_id: str) -> list[str]:
        """Paths of the session's index versions, oldest first."""
        return [p for p in await self._list(session_dir(session_id) + "/") if _is_index(p)]

    async def index(self, session_id: str) -> dict[str, Any] | None:
        """The latest index version of `session_id`, or None if it was never archived."""
        paths = await self.index_versions(session_id)
        if not paths:
            return None
        return await self._read_index(paths[-1])

    async def _read_index(self, path: str) -> dict[str, Any]:
        data = await self._get(path)
        if self.sealer is not None:
            data = self.sealer.open(data, path)
        doc = orjson.loads(data)
        if not isinstance(doc, dict) or doc.get("format") != INDEX_FORMAT:
            raise ArchiveError(f"archive {path} is not a Governor archive index")
        doc["_sha256"] = sha256(data)
        return doc

    async def write_index(self, session_id: str, doc: dict[str, Any]) -> bool:
        """Write version `doc["version"]`; False if that version exists (another writer won)."""
        path = f"{session_dir(session_id)}/index-{int(doc['version']):08d}.json"
        data = canonical({k: v for k, v in doc.items() if not k.startswith("_")})
        body = self.sealer.seal(data, path) if self.sealer else data
        try:
            await _obstore().put_async(self.store, path, body, mode="create")
        except _already_exists():
            return False
        except Exception as exc:
            raise ArchiveError(f"archive {self.where}: cannot write {path}: {exc}") from exc
        return True

    async def indexed_sessions(self) -> list[str]:
        """Every session directory's latest index path (for retention)."""
        latest: dict[str, str] = {}
        for p in await self._list("sessions/"):
            if _is_index(p):
                latest[p.rsplit("/", 1)[0]] = p  # sorted: the last one wins
        return sorted(latest.values())


def _is_index(path: str) -> bool:
    name = path.rsplit("/", 1)[-1]
    return name.startswith("index-") and name.endswith(".json")


# -- archiving a session ------------------------------------------------------------------------


@dataclass
class ArchiveResult:
    """What one archive pass did: the index version now current and the blobs it added."""

    session_id: str
    version: int
    added: list[dict[str, Any]] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.added)


def row_hash(row: Mapping[str, Any]) -> str:
    return sha256(canonical(row))


async def archive_session(
    archive: Archive,
    session_id: str,
    sections: Mapping[str, list[dict[str, Any]]],
    histories: Iterable[Mapping[str, Any]] = (),
    *,
    now: float,
) -> ArchiveResult:
    """Archive what is new of `session_id`: rows not in its earlier blobs, histories not stored.

    `sections` as `ledger.session_record.session_record` returns; `histories` as
    `{"workflow_id", "run_id", "history": {...}}`. Idempotent: a second pass over the same rows
    adds nothing. Raises SessionErased for an erased session, ArchiveError if the store fails.
    """
    for _ in range(_INDEX_RACE_RETRIES):
        idx = await archive.index(session_id)
        if idx is not None and idx.get("erased"):
            raise SessionErased(f"session {session_id!r} was erased from the archive")
        have = list(idx["objects"]) if idx else []
        seen_rows = await _archived_row_hashes(archive, have)
        fresh = {
            name: [r for r in rows if row_hash(r) not in seen_rows.get(name, set())]
            for name, rows in sections.items()
        }
        added: list[dict[str, Any]] = []
        kind = "addendum" if any(o["kind"] != "history" for o in have) else "record"
        for chunk in _chunks(fresh):
            doc = {"format": RECORD_FORMAT, "session_id": session_id, "kind": kind,
                   "sections": chunk}
            added.append(await _put(archive, doc, kind, now, chunk))
        known = {o["sha256"] for o in have}
        for h in histories:
            doc = {"format": HISTORY_FORMAT, "session_id": session_id,
                   "workflow_id": h["workflow_id"], "run_id": h["run_id"],
                   "history": h["history"]}
            entry = await _put(archive, doc, "history", now, None)
            entry["run_id"] = h["run_id"]
            if entry["sha256"] not in known:
                added.append(entry)
        added = [a for a in added if a["sha256"] not in known]
        version = int(idx["version"]) if idx else 0
        if not added:
            return ArchiveResult(session_id, version)
        new = {
            "format": INDEX_FORMAT,
            "session_id": session_id,
            "version": version + 1,
            "ts": now,
            "prev_sha256": idx["_sha256"] if idx else None,
            "objects": have + added,
            "tombstones": list(idx.get("tombstones", [])) if idx else [],
            "erased": False,
        }
        if await archive.write_index(session_id, new):
            return ArchiveResult(session_id, version + 1, added)
    raise ArchiveError(f"session {session_id!r}: index kept changing under this writer")


async def _put(
    archive: Archive, doc: dict[str, Any], kind: str, now: float,
    chunk: Mapping[str, list[Any]] | None,
) -> dict[str, Any]:
    data = canonical(doc)
    digest, _ = await archive.put_blob(data)
    entry: dict[str, Any] = {"sha256": digest, "kind": kind, "ts": now, "bytes": len(data)}
    if chunk is not None:
        entry["rows"] = {k: len(v) for k, v in chunk.items() if v}
    return entry


def _chunks(fresh: Mapping[str, list[dict[str, Any]]]) -> list[dict[str, list[dict[str, Any]]]]:
    """Sections split into objects of at most MAX_ROWS_PER_OBJECT rows; [] if nothing is new."""
    out: list[dict[str, list[dict[str, Any]]]] = []
    cur: dict[str, list[dict[str, Any]]] = {}
    n = 0
    for name, rows in fresh.items():
        for r in rows:
            if n == MAX_ROWS_PER_OBJECT:
                out.append(cur)
                cur, n = {}, 0
            cur.setdefault(name, []).append(r)
            n += 1
    if n:
        out.append(cur)
    return out


async def _archived_row_hashes(
    archive: Archive, objects: list[dict[str, Any]]
) -> dict[str, set[str]]:
    seen: dict[str, set[str]] = {}
    for o in objects:
        if o["kind"] == "history":
            continue
        doc = orjson.loads(await archive.get_blob(o["sha256"]))
        for name, rows in doc.get("sections", {}).items():
            seen.setdefault(name, set()).update(row_hash(r) for r in rows)
    return seen


# -- reading a session back -------------------------------------------------------------------


@dataclass
class ArchivedSession:
    """A session as the archive holds it: merged sections, the workflow histories, the index."""

    session_id: str
    sections: dict[str, list[dict[str, Any]]]
    histories: list[dict[str, Any]]
    index: dict[str, Any]


async def load_session(archive: Archive, session_id: str) -> ArchivedSession | None:
    """Merge every blob of the session (later versions of a row win); None if never archived.
    An erased session comes back with empty sections and its tombstones in `index`."""
    idx = await archive.index(session_id)
    if idx is None:
        return None
    merged: dict[str, dict[str, dict[str, Any]]] = {}
    runs: dict[str, dict[str, Any]] = {}
    for o in idx["objects"]:
        try:
            doc = orjson.loads(await archive.get_blob(o["sha256"]))
        except FileNotFoundError:
            raise ArchiveError(
                f"archive object {o['sha256']} listed by {session_id!r}'s index is missing: "
                "deleted outside Governor"
            ) from None
        if o["kind"] == "history":
            run = str(doc.get("run_id"))
            events = len((doc.get("history") or {}).get("events") or [])
            old = runs.get(run)
            if old is None or events >= len(old["history"].get("events") or []):
                runs[run] = {k: doc[k] for k in ("workflow_id", "run_id", "history")}
            continue
        for name, rows in doc.get("sections", {}).items():
            keys = ROW_KEYS.get(name)
            bucket = merged.setdefault(name, {})
            for r in rows:
                k = "|".join(str(r.get(c)) for c in keys) if keys and all(
                    c in r for c in keys) else row_hash(r)
                bucket[k] = r
    sections = {name: list(rows.values()) for name, rows in merged.items()}
    for name in ROW_KEYS:
        sections.setdefault(name, [])
    for name in ("calls", "guardrail_events", "runbook_steps"):
        sections[name].sort(key=lambda r: (float(r.get("ts") or 0), str(r.get("call_id", ""))))
    histories = sorted(runs.values(), key=_history_start)
    return ArchivedSession(session_id, sections, histories, idx)


def _history_start(h: Mapping[str, Any]) -> str:
    events = (h.get("history") or {}).get("events") or []
    return str(events[0].get("eventTime", "")) if events else ""


# -- deletion -------------------------------------------------------------------------------


async def erase(
    archive: Archive, session_id: str, *, reason: str, actor: str, cause: str, now: float,
    ref: str | None = None,
) -> dict[str, Any]:
    """Delete every blob of `session_id` and write an index version that says what went and
    why (`cause`: 'retention' or 'erasure'; `ref`: the deletion's reference, which the alerts
    that named the session now carry instead, audit.erasure). Returns the tombstone.
    Idempotent: erasing an erased session adds nothing. A session never archived gets a
    tombstone too (so it never will be)."""
    if cause not in ("retention", "erasure"):
        raise ValueError("cause must be 'retention' or 'erasure'")
    for _ in range(_INDEX_RACE_RETRIES):
        idx = await archive.index(session_id)
        if idx is not None and idx.get("erased"):
            return dict(idx["tombstones"][-1]) if idx.get("tombstones") else {}
        objects = list(idx["objects"]) if idx else []
        tomb = {
            "ts": now,
            "cause": cause,
            "actor": actor,
            "reason": reason,
            **({"ref": ref} if ref else {}),
            "removed": [
                {k: o[k] for k in ("sha256", "kind", "bytes", "rows", "run_id") if k in o}
                for o in objects
            ],
        }
        await asyncio.gather(*(archive.delete_blob(o["sha256"]) for o in objects))
        new = {
            "format": INDEX_FORMAT,
            "session_id": session_id,
            "version": (int(idx["version"]) if idx else 0) + 1,
            "ts": now,
            "prev_sha256": idx["_sha256"] if idx else None,
            "objects": [],
            "tombstones": [*(idx.get("tombstones", []) if idx else []), tomb],
            "erased": True,
        }
        if await archive.write_index(session_id, new):
            return tomb
    raise ArchiveError(f"session {session_id!r}: index kept changing under this writer")


async def expired_sessions(archive: Archive, retention_days: float, now: float) -> list[str]:
    """Session ids whose newest archived blob is older than `retention_days`."""
    cutoff = now - retention_days * 86400.0
    out = []
    for path in await archive.indexed_sessions():
        idx = await archive._read_index(path)
        objects = idx.get("objects") or []
        if idx.get("erased") or not objects:
            continue
        if max(float(o.get("ts") or 0) for o in objects) < cutoff:
            out.append(str(idx["session_id"]))
    return out
