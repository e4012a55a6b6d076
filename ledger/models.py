"""The ledger's tables, all in one module so the schema is read (and extended) in one place.

Times are float epoch seconds UTC: the same numbers `policies/` computes windows from, so a
row's `ts` falls in exactly the window the live decision used. Counters that can grow without
bound (tokens, bytes, calls) are BIGINT so PostgreSQL never overflows where SQLite would not.

To add a table: define it here and append it to `LEDGER_TABLES`; `LedgerStore` creates exactly
those tables (and nothing else that happens to share `SQLModel.metadata`).
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Index, Table, UniqueConstraint
from sqlmodel import Field, SQLModel


def _big(default: int = 0) -> Column[int]:
    return Column(BigInteger, nullable=False, default=default)


class CallRecord(SQLModel, table=True):
    """One governed LLM call; `call_id` is the idempotency key (written exactly once)."""

    __tablename__ = "calls"
    __table_args__ = (
        Index("ix_calls_session_id", "session_id"),
        Index("ix_calls_ts", "ts"),
        Index("ix_calls_project_ts", "project", "ts"),
    )

    call_id: str = Field(primary_key=True)
    ts: float
    path: str  # 'proxy' | 'workflow'
    key_id: str = ""
    user: str = ""
    team: str = ""
    project: str = "UNTAGGED"
    session_id: str | None = None
    # Nullable like the identity envelope's optional metadata, so NULL means "not given".
    workflow_tag: str | None = None
    environment: str | None = None
    cost_center: str | None = None
    # HMAC (deployment salt) of the request body of a call made with an Idempotency-Key: a
    # key reused after a restart or on another replica is checked against it. NULL otherwise.
    request_fingerprint: str | None = None
    client_tool: str | None = None  # recognised client (`claude-code`, `codex`, …), or NULL
    protocol: str  # 'openai' | 'anthropic'
    virtual_model: str = ""
    provider: str = ""
    model: str = ""
    model_version: str = ""
    decision: str  # 'allowed' | 'fallback' | 'blocked' | 'error'
    fallback_reason: str | None = None
    status_code: int = 0
    error_code: str | None = None
    stream: bool = False
    input_tokens: int = Field(default=0, sa_column=_big())
    output_tokens: int = Field(default=0, sa_column=_big())
    cache_read_tokens: int = Field(default=0, sa_column=_big())
    cache_write_tokens: int = Field(default=0, sa_column=_big())
    cost_usd: float = 0.0
    latency_ms: float = 0.0
    upstream_ms: float = 0.0
    prompt_sha256: str = ""
    prompt_bytes: int = Field(default=0, sa_column=_big())
    completion_sha256: str = ""
    completion_bytes: int = Field(default=0, sa_column=_big())
    # Only filled when the deployment opts in (store_text); otherwise hashes and sizes only.
    prompt_text: str | None = None
    completion_text: str | None = None
    # The config version that decided the call (`config_versions.version_id`), and the inputs
    # of its decisions that are not in that config (compact JSON, `audit.decisions`).
    config_version: str | None = None
    decision_record: str | None = None


class SessionRecord(SQLModel, table=True):
    """Running totals per session, maintained in the same transaction as the calls they count."""

    __tablename__ = "sessions"

    session_id: str = Field(primary_key=True)
    kind: str = ""  # 'proxy' | 'workflow'; '' while only a kill has named the session
    user: str = ""
    team: str = ""
    project: str = ""
    workflow_tag: str | None = None
    status: str = "open"  # 'open' | 'killed' | 'closed'
    created_ts: float
    updated_ts: float
    calls: int = Field(default=0, sa_column=_big())
    tokens: int = Field(default=0, sa_column=_big())
    cost_usd: float = 0.0


# A `kills` row with this actor is a close, not a kill: it travels to every replica the same
# way (their kill poll), and each refuses the session as `session_closed`.
CLOSE_ACTOR = "governor:close"
CLOSE_REASON = "closed by its owner"


class KillRecord(SQLModel, table=True):
    """The audit record of a kill: who, when, why. One per session, so a kill is idempotent.
    A row whose actor is `CLOSE_ACTOR` records a close (final like a kill)."""

    __tablename__ = "kills"

    id: int | None = Field(default=None, primary_key=True)
    session_id: str = Field(unique=True)
    actor: str
    reason: str
    ts: float


class SessionOwnerRecord(SQLModel, table=True):
    """Who a session belongs to: the key that opened it. The first recorded claim wins.

    `grant_digest` is a digest of the identity and policy the gateway resolved for a workflow
    session (`POST /gateway/sessions`); a session activity whose input does not match it is
    refused.
    Proxy sessions (claimed by their first call) leave it empty. Never a key or a key hash.
    """

    __tablename__ = "session_owners"

    session_id: str = Field(primary_key=True)
    key_id: str
    user: str = ""
    team: str = ""
    ts: float
    grant_digest: str = ""


class StreamStartRecord(SQLModel, table=True):
    """A stream that sent its 200: recorded at the first byte, before the call row exists.

    The call row (appended when the stream ends) settles it; a start with no call row after
    its runtime restarted is settled then as `interrupted`. Nothing here is ever updated.
    """

    __tablename__ = "stream_starts"
    __table_args__ = (Index("ix_stream_starts_runtime", "runtime"),)

    call_id: str = Field(primary_key=True)
    runtime: str  # the journal directory's name: the replica that served the stream
    ts: float
    row: str  # the call row as it would be written if the stream ended now (JSON)


class BudgetAlertRecord(SQLModel, table=True):
    """A budget threshold that fired; the unique key makes it fire once per window."""

    __tablename__ = "budget_alerts"
    __table_args__ = (
        UniqueConstraint("budget_id", "window_key", "at_pct", name="uq_budget_alert_once"),
    )

    id: int | None = Field(default=None, primary_key=True)
    budget_id: str
    window_key: str
    at_pct: float
    spent_usd: float
    ceiling_usd: float
    ts: float


class GuardrailEventRecord(SQLModel, table=True):
    """One guardrail finding at one hook of one call: what was found and done, never the value.

    `(call_id, hook, seq)` is the idempotency key: a replayed journal or a retried workflow
    activity offers the same events again and they are stored once.
    """

    __tablename__ = "guardrail_events"
    __table_args__ = (
        UniqueConstraint("call_id", "hook", "seq", name="uq_guardrail_event_once"),
        Index("ix_guardrail_events_ts", "ts"),
        Index("ix_guardrail_events_session_id", "session_id"),
    )

    id: int | None = Field(default=None, primary_key=True)
    ts: float
    call_id: str
    hook: str  # request-input | request-output | tool-input | tool-output
    seq: int = 0  # order of the event within its call and hook
    detector: str  # secrets | pii | prompt_injection
    type: str  # e.g. aws_access_key, email, instruction_override
    action: str  # allowed | flagged | redacted | blocked
    rule_id: str = ""
    fingerprint: str = ""  # HMAC of the matched value under the deployment's salt
    session_id: str | None = None
    project: str = "UNTAGGED"
    workflow_tag: str | None = None
    model: str = ""
    # A classifier detector's verdict as compact JSON (flagged, categories, score, error,
    # cached, ms, judge_call_id): read back by audits instead of running the classifier again.
    verdict: str | None = None


class LimitCounterRecord(SQLModel, table=True):
    """One limit in one window, shared by every replica (PostgreSQL ledgers).

    `used` is what the replicas have spent *or hold as leases* of this limit's headroom; a
    replica takes a lease with one atomic `UPDATE ... RETURNING`, so the leases of all replicas
    together never exceed `ceiling`. `last_grant` is what the latest lease statement granted.
    """

    __tablename__ = "limit_counters"
    __table_args__ = (Index("ix_limit_counters_expires_at", "expires_at"),)

    limit_key: str = Field(primary_key=True)
    ceiling: float
    used: float = 0.0
    last_grant: float = 0.0
    expires_at: float  # the window's end: the row can go once it has passed


class AlertRecord(SQLModel, table=True):
    """One runbook run of one alert: `alert_key` is the deduplication key (rule + identifying
    labels), `run_id` the Temporal run; `summary` ends as who did what."""

    __tablename__ = "alerts"
    __table_args__ = (Index("ix_alerts_key", "alert_key"),)

    id: int | None = Field(default=None, primary_key=True)
    run_id: str = Field(unique=True)
    alert_key: str
    name: str
    labels: str = "{}"  # JSON
    sources: str = ""  # comma-separated: embedded, alertmanager
    severity: str = ""
    status: str = "firing"  # firing | resolved | closed
    opened_ts: float
    updated_ts: float
    closed_ts: float | None = None
    repeats: int = 0
    incident: str | None = None
    summary: str = ""


class RunbookStepRecord(SQLModel, table=True):
    """One thing that happened in a runbook: a step waiting, approved, done, escalated …"""

    __tablename__ = "runbook_steps"
    __table_args__ = (
        UniqueConstraint("run_id", "step", "phase", name="uq_runbook_step_once"),
    )

    id: int | None = Field(default=None, primary_key=True)
    run_id: str
    alert_key: str
    step: int
    action: str
    phase: str  # waiting | approved | acknowledged | escalated | timed_out | done | failed
    actor: str = ""
    result: str = ""
    ts: float


class SilenceRecord(SQLModel, table=True):
    """Suppresses a rule or a label match, in both alert sources, until `expires_ts`."""

    __tablename__ = "silences"

    id: int | None = Field(default=None, primary_key=True)
    rule: str | None = None
    matchers: str = "{}"  # JSON
    expires_ts: float
    actor: str
    comment: str = ""
    created_ts: float


class OverrideRecord(SQLModel, table=True):
    """A runtime policy override a runbook made; every replica applies the active ones."""

    __tablename__ = "overrides"

    id: int | None = Field(default=None, primary_key=True)
    idem_key: str = Field(unique=True)  # alert run + step: a retried activity adds it once
    kind: str  # guardrail_mode | budget_behaviour | require_project_header
    target: str = ""
    value: str = ""
    actor: str = ""
    alert_key: str = ""
    yaml_diff: str = ""
    created_ts: float
    cleared_ts: float | None = None
    cleared_by: str | None = None


class NotificationRecord(SQLModel, table=True):
    """A delivered notification; `idem_key` (alert run + step + target) makes it recognisable."""

    __tablename__ = "notifications"

    id: int | None = Field(default=None, primary_key=True)
    idem_key: str = Field(unique=True)
    target: str
    ok: bool = True
    detail: str = ""
    ts: float


class AlertCounterRecord(SQLModel, table=True):
    """A running total an embedded alert compares with its threshold across replicas (each
    adds its own share with one upsert), e.g. `untagged_spend:<project>:<UTC day>` in USD."""

    __tablename__ = "alert_counters"
    __table_args__ = (Index("ix_alert_counters_expires_at", "expires_at"),)

    counter_key: str = Field(primary_key=True)
    total: float = 0.0
    expires_at: float  # epoch seconds after which the row can go


class ArchivedSessionRecord(SQLModel, table=True):
    """Where a session's archive stands: the ledger's view of `audit.archive`, so the archive
    job finds sessions that ended (or went idle) and are not archived yet, or gained rows since.

    `seen_updated_ts` is the session row's `updated_ts` when it was last archived; `erased`
    marks a session whose archive was deleted (retention or erasure): it is never re-archived.
    """

    __tablename__ = "archived_sessions"
    __table_args__ = (
        Index("ix_archived_sessions_archived_ts", "erased", "archived_ts"),
        Index("ix_archived_sessions_history_due", "history_due_ts"),
    )

    session_id: str = Field(primary_key=True)
    archived_ts: float  # when its newest archive object was written (retention counts from it)
    seen_updated_ts: float = 0.0
    index_version: int = 0
    objects: int = 0
    erased: bool = False
    # A workflow session archived from inside its workflow (before it closed): when; its final
    # history, with the completion event, is still to be archived. NULL: nothing due.
    history_due_ts: float | None = None


class ChainRecord(SQLModel, table=True):
    """One link of a replica's tamper-evident chain over the ledger (`ledger.chain`).

    Appended in the same transaction as the row change it covers, never updated. `id` is global
    insertion order (the latest state of a row shared by replicas is its highest-id link);
    `(chain_id, seq)` is the chain's own order. One link per transaction: `members` (canonical
    JSON) lists the rows it covers as `[tbl, record_key, op, digest, note]`, and `tbl` and `op`
    are then `*`. A single-row transaction's link (and every link of a ledger written before
    members existed) is per-row: `members` NULL and the row in `tbl`, `record_key`, `op`,
    `digest`, `note`. `op` is `put` (the row as it now is: `digest` is SHA-256 of its canonical
    form) or `tombstone` (the row was deleted on purpose: `note` is the JSON
    `{"actor", "reason"}`). `hash` = SHA-256 over `prev_hash` and every other field.
    """

    __tablename__ = "ledger_chain"
    __table_args__ = (
        UniqueConstraint("chain_id", "seq", name="uq_ledger_chain_seq"),
        Index("ix_ledger_chain_ts", "ts"),
        # No index by record key: every call writes a link, and an index keyed by random
        # record keys made that write the proxy's costliest; `audit.verify` builds its own
        # lookup by key when it runs (ledger.store._DROPPED_INDEXES).
    )

    id: int | None = Field(default=None, primary_key=True)
    chain_id: str
    seq: int = Field(sa_column=_big())
    ts: float
    tbl: str
    record_key: str  # canonical JSON list of the row's key values
    op: str  # put | tombstone
    digest: str = ""
    note: str = ""
    prev_hash: str
    hash: str
    # The rows a transaction's link covers (`ledger.chain.links`); NULL for a per-row link.
    # Added after the chain shipped: nullable, so an older ledger gains it at start.
    members: str | None = None


class ChainHeadRecord(SQLModel, table=True):
    """The checkpointed head of each chain: its last seq and hash, moved with every append, so
    links cut off the end of a chain are named (`governor audit verify`)."""

    __tablename__ = "chain_heads"

    chain_id: str = Field(primary_key=True)
    seq: int = Field(sa_column=_big())
    hash: str
    ts: float


class OutcomeRecord(SQLModel, table=True):
    """One outcome event (merged PR, closed ticket, resolved incident, eval) joined to one
    session: an event naming several sessions is one row per session, all with its `event_id`.

    `(event_id, session_id)` is the idempotency key: a webhook redelivered or a POST retried
    adds nothing. `session_id` is '' for an event that named no session (kept, joins nothing).
    """

    __tablename__ = "outcomes"
    __table_args__ = (
        Index("ix_outcomes_session_id", "session_id"),
        Index("ix_outcomes_ts", "ts"),
    )

    event_id: str = Field(primary_key=True)
    session_id: str = Field(primary_key=True, default="")
    kind: str  # pr_merged | ticket_closed | incident_resolved | eval
    source: str = ""  # github | zendesk | jira | api | …
    url: str = ""
    ts: float  # when the outcome happened (merged_at, closed_at …), epoch seconds
    pass_rate: float | None = None  # eval only: 0.0-1.0
    actor: str = ""  # the key id (API) or webhook name that reported it
    received_ts: float


class ConfigVersionRecord(SQLModel, table=True):
    """A configuration the gateway applied (start, reload, runtime override), stored once.

    `version_id` is "cv-" + the first 16 hex digits of the sha256 of `body`, the canonical JSON
    of the applied config with secrets removed (`audit.versions`); the first insert wins."""

    __tablename__ = "config_versions"

    version_id: str = Field(primary_key=True)
    ts: float
    source: str  # 'start' | 'reload' | 'override'
    body: str


class StateTransitionRecord(SQLModel, table=True):
    """One state change of an audited row, appended (never updated) in the transaction that
    makes it: a session's status (open -> closed/killed), an alert's status (firing ->
    resolved/closed), an override cleared (`cleared_by`). The summary row holds the current
    value; `audit.verify` checks it against the row's latest transition."""

    __tablename__ = "state_transitions"

    id: int | None = Field(default=None, primary_key=True)  # append order
    transition_id: str = Field(unique=True)  # uuid4 hex
    tbl: str  # sessions | alerts | overrides
    record_key: str = Field(index=True)  # the row's chain record key, e.g. '["s-1"]'
    attribute: str  # status | cleared_by
    old: str | None = None  # None: the row did not exist, or the attribute was unset
    new: str
    actor: str | None = None  # who, where known (a kill's actor, an override's clearer)
    ts: float


class LedgerMetaRecord(SQLModel, table=True):
    """Facts about the ledger itself, one row per `name`, written once by the first opener:
    `salt_check` is HMAC-SHA256(the deployment's salt, a fixed label) in hex
    (`ledger.salt_check`), so a replica opened with another salt is refused at start."""

    __tablename__ = "ledger_meta"

    name: str = Field(primary_key=True)
    value: str
    ts: float


def _table(model: type[SQLModel]) -> Table:
    return model.__table__  # type: ignore[attr-defined,no-any-return]


CALLS = _table(CallRecord)
SESSIONS = _table(SessionRecord)
SESSION_OWNERS = _table(SessionOwnerRecord)
STREAM_STARTS = _table(StreamStartRecord)
KILLS = _table(KillRecord)
BUDGET_ALERTS = _table(BudgetAlertRecord)
GUARDRAIL_EVENTS = _table(GuardrailEventRecord)
LIMIT_COUNTERS = _table(LimitCounterRecord)
ALERTS = _table(AlertRecord)
RUNBOOK_STEPS = _table(RunbookStepRecord)
SILENCES = _table(SilenceRecord)
OVERRIDES = _table(OverrideRecord)
NOTIFICATIONS = _table(NotificationRecord)
ALERT_COUNTERS = _table(AlertCounterRecord)
ARCHIVED_SESSIONS = _table(ArchivedSessionRecord)
LEDGER_CHAIN = _table(ChainRecord)
CHAIN_HEADS = _table(ChainHeadRecord)
OUTCOMES = _table(OutcomeRecord)
CONFIG_VERSIONS = _table(ConfigVersionRecord)
STATE_TRANSITIONS = _table(StateTransitionRecord)
LEDGER_META = _table(LedgerMetaRecord)

LEDGER_TABLES: tuple[Table, ...] = (
    CALLS,
    SESSIONS,
    KILLS,
    BUDGET_ALERTS,
    GUARDRAIL_EVENTS,
    SESSION_OWNERS,
    STREAM_STARTS,
    LIMIT_COUNTERS,
    ALERTS,
    RUNBOOK_STEPS,
    SILENCES,
    OVERRIDES,
    NOTIFICATIONS,
    ALERT_COUNTERS,
    ARCHIVED_SESSIONS,
    LEDGER_CHAIN,
    CHAIN_HEADS,
    OUTCOMES,
    CONFIG_VERSIONS,
    STATE_TRANSITIONS,
    LEDGER_META,
)
