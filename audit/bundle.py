"""`governor audit export`: one session's governed record as a self-contained bundle.

An auditor reads a bundle with any JSON-lines tool; nothing of Governor is needed. Layout
(`BUNDLE_FORMAT` = "governor-audit-bundle/1"), UTF-8, one JSON object per line, `\\n` after each:

    line 1     {"record": "manifest", "data": {
                   "format": "governor-audit-bundle/1",
                   "session_id": str,
                   "created_ts": float,                  epoch seconds UTC
                   "source": "ledger" | "archive",       where the rows were read
                   "time_range": {"first_ts": float|null, "last_ts": float|null},
                                                         over every row's ts (and the history's
                                                         first and last event)
                   "counts": {record type: n},           lines of each type after the manifest
                   "sha256": hex,                        of every byte after line 1
                   "line_sha256": [hex, ...],            of each later line, without its \\n
                   "workflow_ids": [str, ...],
                   "tombstones": [...]                   what the archive deleted and why
               }}
    lines 2..N {"record": TYPE, "data": {...}}, in this order of TYPE:
        session          the `sessions` row (ledger/models.py SessionRecord)
        owner            the `session_owners` row
        config_version   a `config_versions` row that decided some call (version_id, ts,
                         source, body: canonical config JSON without secrets)
        call             a `calls` row, refusals included (decision "blocked"); carries
                         `config_version` and `decision_record` (JSON text) where recorded
        guardrail_event  a `guardrail_events` row: hook, detector, type, action, fingerprint
                         (an HMAC: never the matched value)
        kill             the `kills` row (actor "governor:close" is a close)
        alert            an `alerts` row whose labels name the session
        runbook_step     a `runbook_steps` row of those alerts
        outcome          an `outcomes` row of the session (where that table exists)
        workflow_history {"workflow_id", "run_id", "history": {"events": [...]}}: Temporal's
                         history JSON of one run (oldest run first), as
                         `temporalio.client.WorkflowHistory.from_json(workflow_id, history)`
                         reads it for `Replayer` (what `governor audit replay BUNDLE` uses)

Row values are the ledger's columns unchanged (times are float epoch seconds UTC, costs USD).
`read_bundle` checks the manifest (counts, per-line and whole hashes) and raises BundleError
naming the first line that does not match.
"""

from __future__ import annotations

import hashlib
import io
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import orjson

BUNDLE_FORMAT = "governor-audit-bundle/1"
# Section of the record (ledger.session_record) -> record type in the bundle, in bundle order.
RECORD_TYPES: tuple[tuple[str, str], ...] = (
    ("session", "session"),
    ("owner", "owner"),
    ("config_versions", "config_version"),
    ("calls", "call"),
    ("guardrail_events", "guardrail_event"),
    ("kills", "kill"),
    ("alerts", "alert"),
    ("runbook_steps", "runbook_step"),
    ("outcomes", "outcome"),
)
HISTORY = "workflow_history"
MAX_BUNDLE_BYTES = 512 * 1024 * 1024  # read_bundle refuses larger files


class BundleError(ValueError):
    """A bundle that is not one, or whose lines do not match its manifest."""


def _dumps(doc: Any) -> bytes:
    return orjson.dumps(doc, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS)


def _ts_of(record: str, data: Mapping[str, Any]) -> list[float]:
    out = []
    for k in ("ts", "opened_ts", "closed_ts", "created_ts", "updated_ts"):
        v = data.get(k)
        if isinstance(v, int | float) and not isinstance(v, bool) and v > 0:
            out.append(float(v))
    return out


def _history_times(h: Mapping[str, Any]) -> list[float]:
    from datetime import datetime

    events = (h.get("history") or {}).get("events") or []
    out = []
    for e in (events[:1] + events[-1:]) if events else []:
        t = e.get("eventTime")
        if isinstance(t, str):
            try:
                out.append(datetime.fromisoformat(t.replace("Z", "+00:00")).timestamp())
            except ValueError:
                pass
    return out


class BundleTooLarge(BundleError):
    """The bundle would exceed the byte limit it was written under."""


class BundleWriter:
    """Writes a bundle's lines after the manifest to `out` one at a time (never the whole body
    in memory), hashing as it goes; `manifest()` then returns the manifest line (with its
    `\n`), which goes first. Rows must be added in RECORD_TYPES order, histories last.
    BundleTooLarge once manifest and lines would pass `max_bytes`."""

    def __init__(self, out: BinaryIO, session_id: str, *, max_bytes: int | None = None) -> None:
        self.out = out
        self.session_id = session_id
        self.max_bytes = max_bytes
        self.whole = hashlib.sha256()
        self.line_hashes: list[str] = []
        self.counts: dict[str, int] = {}
        self.first: float | None = None
        self.last: float | None = None
        self.written = 0
        self.workflow_ids: list[str] = []

    def _put(self, rtype: str, data: Any, ts: list[float]) -> None:
        line = _dumps({"record": rtype, "data": data})
        self.written += len(line) + 1 + 67  # the line, its newline, its hash in the manifest
        if self.max_bytes is not None and self.written > self.max_bytes:
            raise BundleTooLarge(
                f"the bundle of {self.session_id!r} is larger than {self.max_bytes} bytes")
        self.out.write(line)
        self.out.write(b"\n")
        self.whole.update(line)
        self.whole.update(b"\n")
        self.line_hashes.append(hashlib.sha256(line).hexdigest())
        self.counts[rtype] = self.counts.get(rtype, 0) + 1
        for t in ts:
            self.first = t if self.first is None or t < self.first else self.first
            self.last = t if self.last is None or t > self.last else self.last

    def row(self, rtype: str, row: Mapping[str, Any]) -> None:
        self._put(rtype, row, _ts_of(rtype, row))

    def history(self, h: Mapping[str, Any]) -> None:
        doc = {"workflow_id": h["workflow_id"], "run_id": h["run_id"], "history": h["history"]}
        self._put(HISTORY, doc, _history_times(h))
        if h["workflow_id"] not in self.workflow_ids:
            self.workflow_ids.append(str(h["workflow_id"]))

    def manifest(self, *, source: str, tombstones: list[dict[str, Any]] | None = None,
                 created_ts: float | None = None) -> bytes:
        doc = {
            "format": BUNDLE_FORMAT,
            "session_id": self.session_id,
            "created_ts": time.time() if created_ts is None else created_ts,
            "source": source,
            "time_range": {"first_ts": self.first, "last_ts": self.last},
            "counts": self.counts,
            "sha256": self.whole.hexdigest(),
            "line_sha256": self.line_hashes,
            "workflow_ids": self.workflow_ids,
            "tombstones": tombstones or [],
        }
        return _dumps({"record": "manifest", "data": doc}) + b"\n"


def write_bundle(
    out: BinaryIO,
    session_id: str,
    sections: Mapping[str, list[dict[str, Any]]],
    histories: Iterable[Mapping[str, Any]] = (),
    *,
    source: str,
    tombstones: list[dict[str, Any]] | None = None,
    created_ts: float | None = None,
    max_bytes: int | None = None,
) -> bytes:
    """A whole record through `BundleWriter`: the lines to `out`, the manifest line returned."""
    w = BundleWriter(out, session_id, max_bytes=max_bytes)
    for section, rtype in RECORD_TYPES:
        for row in sections.get(section, []):
            w.row(rtype, row)
    for h in histories:
        w.history(h)
    return w.manifest(source=source, tombstones=tombstones, created_ts=created_ts)


def build_bundle(
    session_id: str,
    sections: Mapping[str, list[dict[str, Any]]],
    histories: Iterable[Mapping[str, Any]] = (),
    *,
    source: str,
    tombstones: list[dict[str, Any]] | None = None,
    created_ts: float | None = None,
) -> bytes:
    """The bundle's bytes: manifest line, then one line per row and per history run."""
    body = io.BytesIO()
    head = write_bundle(body, session_id, sections, histories, source=source,
                        tombstones=tombstones, created_ts=created_ts)
    return head + body.getvalue()


@dataclass
class Bundle:
    """A bundle read back: its manifest, rows by record type, workflow histories."""

    manifest: dict[str, Any]
    records: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    histories: list[dict[str, Any]] = field(default_factory=list)

    @property
    def session_id(self) -> str:
        return str(self.manifest["session_id"])

    def sections(self) -> dict[str, list[dict[str, Any]]]:
        """Rows by section name, as `ledger.session_record` returns them."""
        return {sec: list(self.records.get(rt, [])) for sec, rt in RECORD_TYPES}


def parse_bundle(raw: bytes) -> Bundle:
    """Check `raw` against its manifest and return it; BundleError says what does not match."""
    if len(raw) > MAX_BUNDLE_BYTES:
        raise BundleError(f"bundle larger than {MAX_BUNDLE_BYTES} bytes")
    head, _sep, body = raw.partition(b"\n")
    try:
        first = orjson.loads(head)
    except orjson.JSONDecodeError:
        raise BundleError("line 1 is not JSON: not an audit bundle") from None
    manifest = first.get("data") if isinstance(first, dict) else None
    if not isinstance(manifest, dict) or first.get("record") != "manifest" or (
        manifest.get("format") != BUNDLE_FORMAT
    ):
        raise BundleError(f"line 1 is not a {BUNDLE_FORMAT} manifest")
    if hashlib.sha256(body).hexdigest() != manifest.get("sha256"):
        raise BundleError("the bundle's lines do not hash to the manifest's sha256: altered")
    lines = body.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    want = manifest.get("line_sha256") or []
    if not isinstance(want, list) or not all(isinstance(h, str) for h in want):
        raise BundleError("the manifest's line_sha256 is not a list of hashes")
    if len(want) != len(lines):
        raise BundleError(f"manifest lists {len(want)} lines, the bundle has {len(lines)}")
    out = Bundle(manifest)
    counts: dict[str, int] = {}
    for n, line in enumerate(lines, start=2):
        if hashlib.sha256(line).hexdigest() != want[n - 2]:
            raise BundleError(f"line {n} does not match its hash in the manifest")
        try:
            doc = orjson.loads(line)
        except orjson.JSONDecodeError:
            raise BundleError(f"line {n} is not JSON") from None
        if not isinstance(doc, dict):
            raise BundleError(f"line {n} is not a {{record, data}} object")
        rtype, data = doc.get("record"), doc.get("data")
        if not isinstance(rtype, str) or not isinstance(data, dict):
            raise BundleError(f"line {n} is not a {{record, data}} object")
        counts[rtype] = counts.get(rtype, 0) + 1
        if rtype == HISTORY:
            out.histories.append(data)
        else:
            out.records.setdefault(rtype, []).append(data)
    if counts != manifest.get("counts"):
        raise BundleError(f"record counts {counts} differ from the manifest's")
    return out


def read_bundle(path: Path) -> Bundle:
    """`parse_bundle` of a file; BundleError for a file too large or unreadable."""
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise BundleError(f"cannot read bundle {path}: {exc.strerror}") from None
    if size > MAX_BUNDLE_BYTES:
        raise BundleError(f"bundle {path} is larger than {MAX_BUNDLE_BYTES} bytes")
    return parse_bundle(path.read_bytes())
