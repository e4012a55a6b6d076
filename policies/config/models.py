"""Pydantic models of every config kind, in the YAML shapes of the seeds.

Each YAML document names its kind with `type:`; a config directory is the union of its documents.
"""

from __future__ import annotations

import re
from functools import cached_property
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from policies.clients import DEFAULT_CLIENT_SESSION_HEADERS
from policies.config.outcomes import OutcomeWebhooks

_WINDOW = re.compile(r"^(\d+)\s*(s|m|h|d|w)$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}

# Identity metadata: canonical short names and every header spelling that means them.
METADATA_FIELDS = (
    "project",
    "team",
    "user",
    "session_id",
    "workflow_tag",
    "environment",
    "cost_center",
)
_HEADER_SUFFIX = {
    "project": "project",
    "team": "team",
    "user-id": "user",
    "user": "user",
    "session-id": "session_id",
    "workflow-tag": "workflow_tag",
    "environment": "environment",
    "cost-center": "cost_center",
}


def canonical_metadata_key(name: str) -> str:
    """Map `X-TFY-Project`, `X-Governor-Project`, `project` … to `project`."""
    low = name.strip().lower()
    for prefix in ("x-governor-", "x-tfy-"):
        if low.startswith(prefix):
            low = low[len(prefix) :]
            break
    low = low.replace("_", "-")
    if low in _HEADER_SUFFIX:
        return _HEADER_SUFFIX[low]
    raise ValueError(
        f"unknown metadata key {name!r}; use one of X-Governor-Project, -Team, -User-ID, "
        "-Session-ID, -Workflow-Tag, -Environment, -Cost-Center (or the X-TFY- aliases)"
    )


def window_seconds(window: str) -> int:
    m = _WINDOW.match(window.strip())
    if not m:
        raise ValueError(f"window {window!r} must look like 30s, 5m, 1h, 1d or 1w")
    n = int(m.group(1))
    if n <= 0:
        raise ValueError("window must be positive")
    return n * _UNIT_SECONDS[m.group(2)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MetadataMatch(_Strict):
    """`when:` / `scope:` selectors: every listed metadata value must match."""

    metadata: dict[str, str] = Field(default_factory=dict)
    subjects: dict[str, str] = Field(default_factory=dict)
    keys: list[str] = Field(default_factory=list)  # API key ids (`id` in gateway-api-keys)

    @field_validator("metadata")
    @classmethod
    def _canonical(cls, v: dict[str, str]) -> dict[str, str]:
        return {canonical_metadata_key(k): str(val) for k, val in v.items()}

    @field_validator("subjects")
    @classmethod
    def _subjects(cls, v: dict[str, str]) -> dict[str, str]:
        for k in v:
            if k not in ("type", "user", "team", "role"):
                raise ValueError(f"unknown subject field {k!r}; use type, user, team or role")
        if "type" in v and v["type"] not in ("user", "service"):
            raise ValueError("subjects.type must be 'user' or 'service'")
        return v


BreachAction = Annotated[str, Field(pattern=r"^(hard_block|queue_then_429|fallback_to_[\w.\-]+)$")]
ExceedAction = Annotated[
    str, Field(pattern=r"^(hard_block|fallback_to_cheaper|fallback_to_[\w.\-]+)$")
]
RateScope = Literal[
    "global", "session", "user", "team", "project", "workflow_tag", "model", "key"
]


class Limit(_Strict):
    tokens: int | None = Field(default=None, gt=0)
    requests: int | None = Field(default=None, gt=0)
    window: str

    @field_validator("window")
    @classmethod
    def _window(cls, v: str) -> str:
        window_seconds(v)
        return v

    @model_validator(mode="after")
    def _one(self) -> Limit:
        if self.tokens is None and self.requests is None:
            raise ValueError("limit needs tokens or requests (or both)")
        return self

    @cached_property
    def seconds(self) -> int:
        # Read for every applicable rule of every call: parsed once per (frozen) config object.
        return window_seconds(self.window)


class RateLimitRule(_Strict):
    id: str
    when: MetadataMatch = Field(default_factory=MetadataMatch)
    limit: Limit
    scope: RateScope = "global"
    on_breach: BreachAction = "hard_block"
    queue_timeout_ms: int = Field(default=2000, ge=0, le=60000)


class RateLimitConfig(_Strict):
    type: Literal["gateway-rate-limit-config"]
    name: str
    rules: list[RateLimitRule]


class BudgetAlert(_Strict):
    at_pct: float = Field(gt=0, le=1000)
    notify: list[str] = Field(default_factory=list)


class Budget(_Strict):
    id: str
    scope: MetadataMatch = Field(default_factory=MetadataMatch)
    ceiling_usd: float = Field(gt=0)
    window: Literal["daily", "weekly", "monthly"]
    alerts: list[BudgetAlert] = Field(default_factory=list)
    on_exceed: ExceedAction = "hard_block"


class BudgetConfig(_Strict):
    type: Literal["gateway-budget-config"]
    name: str
    budgets: list[Budget]


class Target(_Strict):
    provider: str
    model: str
    timeout_ms: int = Field(default=60000, gt=0, le=600000)

    @property
    def key(self) -> str:
        return f"{self.provider}/{self.model}"


class CircuitBreakerConfig(_Strict):
    failure_threshold: int = Field(default=5, gt=0)
    window_seconds: float = Field(default=60, gt=0)
    cooldown_seconds: float = Field(default=30, gt=0)


class RouteRule(_Strict):
    """One weighted/prioritised target. `timeout_ms` may sit on the rule (as in the seed's
    routing-config.yaml) or inside `target:`; either way it ends up on the target."""

    id: str
    weight: float = Field(default=1, ge=0)
    priority: int = 0
    target: Target
    timeout_ms: int | None = Field(default=None, gt=0, le=600000)

    @model_validator(mode="after")
    def _timeout_on_target(self) -> RouteRule:
        if self.timeout_ms is None:
            return self
        inner = self.target.timeout_ms if "timeout_ms" in self.target.model_fields_set else None
        if inner is not None and inner != self.timeout_ms:
            raise ValueError(
                f"timeout_ms is set on the rule ({self.timeout_ms}) and inside target ({inner}); "
                "keep one"
            )
        # Frozen model: the one place a validated rule is completed before anyone sees it.
        object.__setattr__(
            self, "target", self.target.model_copy(update={"timeout_ms": self.timeout_ms})
        )
        return self


class RoutingConfig(_Strict):
    """A virtual model: `name` is what callers put in `model`."""

    type: Literal["gateway-load-balancing-config"]
    name: str
    rule_type: Literal["weight-based", "priority-based"] = "weight-based"
    rules: list[RouteRule] = Field(min_length=1)
    fallbacks: list[Target] = Field(default_factory=list)
    circuit_breaker: CircuitBreakerConfig = Field(default_factory=CircuitBreakerConfig)
    retries: int = Field(default=1, ge=0, le=5)
    # Between retries of one target: exponential backoff from `retry_backoff_ms` (with jitter),
    # or the provider's Retry-After; a wait longer than `retry_max_wait_ms` moves on to the next
    # target instead.
    retry_backoff_ms: int = Field(default=100, ge=0, le=10000)
    retry_max_wait_ms: int = Field(default=3000, ge=0, le=60000)
    cheaper: Target | None = None
    description: str = ""
    # Other names callers may use for this virtual model: the provider model ids coding agents
    # send by default (`claude-haiku-4-5-20251001`, `gpt-5-codex`, …).
    aliases: list[str] = Field(default_factory=list)


class VersionPrice(_Strict):
    version: str
    input_per_mtok: float | None = Field(default=None, ge=0)
    output_per_mtok: float | None = Field(default=None, ge=0)
    cache_read_per_mtok: float | None = Field(default=None, ge=0)
    cache_write_per_mtok: float | None = Field(default=None, ge=0)
    max_output_tokens: int | None = Field(default=None, gt=0)
    tokenizer: str | None = None


class ModelPrice(_Strict):
    model: str
    provider: str | None = None
    tier: Literal["premium", "standard", "economy"] = "standard"
    input_per_mtok: float = Field(ge=0)
    output_per_mtok: float = Field(ge=0)
    cache_read_per_mtok: float | None = Field(default=None, ge=0)
    cache_write_per_mtok: float | None = Field(default=None, ge=0)
    # The model's own output maximum: fills max_tokens where the target requires it and the
    # caller set none (Anthropic). Never a reservation estimate.
    max_output_tokens: int | None = Field(default=None, gt=0)
    versions: list[VersionPrice] = Field(default_factory=list)


class PricingCatalog(_Strict):
    type: Literal["gateway-pricing-catalog"]
    name: str = "pricing"
    models: list[ModelPrice]


Role = Literal["developer", "service", "metrics", "oncall", "admin", "auditor", "viewer"]
# Roles whose keys read or scrape but never call models: `metrics` scrapes /metrics, `auditor`
# reads, exports, replays and verifies session records, `viewer` reads the control room.
NON_CALLING_ROLES: frozenset[str] = frozenset({"metrics", "auditor", "viewer"})


class ApiKey(_Strict):
    """A key as stored: only its hash. `project` binds the key; `default_project` only defaults."""

    id: str
    hash: str = Field(pattern=r"^sha256:[0-9a-f]{64}$")
    user: str
    team: str
    role: Role = "developer"
    project: str | None = None
    default_project: str | None = None
    environment: str | None = None

    @property
    def subject_type(self) -> str:
        return "service" if self.role == "service" else "user"

    @property
    def is_admin(self) -> bool:
        return self.role in ("admin", "oncall")


class ApiKeysConfig(_Strict):
    type: Literal["gateway-api-keys"]
    name: str = "keys"
    keys: list[ApiKey]


class Provider(_Strict):
    name: str
    protocol: Literal["openai", "anthropic"]
    base_url: str
    api_key_env: str | None = None
    api_key: str | None = None
    simulated: bool = False


class ProvidersConfig(_Strict):
    type: Literal["gateway-providers"]
    name: str = "providers"
    providers: list[Provider]


OutageAction = Literal["serve", "refuse"]


class LimitsOutagePolicy(_Strict):
    """What a replica does, per kind of limit, once the lease it holds is spent and the shared
    limit store (the ledger's PostgreSQL) cannot be reached. `serve`: decide on the replica's
    own counters (each replica admits up to the whole limit); `refuse`: 503."""

    # Default `serve` for all: a database blip must not become an LLM outage (the ledger's
    # journal and last known state keep the gateway answering), and each replica still
    # enforces every ceiling on its own counters. `budgets: refuse` trades that for money safety.
    budgets: OutageAction = "serve"
    tokens: OutageAction = "serve"
    requests: OutageAction = "serve"


# One show, export or replay (over HTTP, or `governor audit` on the ledger directly) reads at
# most this many calls of a session; an export answers at most this many bundle bytes (defaults
# of the settings). MOST_EXPORT_CALLS caps the setting: show and replay hold a session's whole
# record in memory (~1 KB a call as dicts, more as the replay route's JSON).
MAX_EXPORT_CALLS = 200_000
MOST_EXPORT_CALLS = 1_000_000
MAX_EXPORT_BYTES = 256 * 1024 * 1024


class ArchiveSettings(_Strict):
    """Where ended sessions' records go (`audit.archive`), how long they stay, whether sealed.

    `url`: None is the embedded default, a directory `archive/` under the data dir; otherwise
    `s3://bucket/prefix`, `gs://bucket/prefix`, `az://account/container/prefix` or `file:///dir`.
    Credentials come from the provider's usual environment variables (AWS_ACCESS_KEY_ID, …).
    `endpoint` names an S3-compatible server (MinIO, Ceph …); `allow_http` permits http:// there.
    """

    enabled: bool = True
    url: str | None = Field(default=None, max_length=1024)
    endpoint: str | None = Field(default=None, max_length=1024)
    region: str | None = Field(default=None, max_length=64)
    allow_http: bool = False
    # Proxy sessions have no end of their own: one idle this long is archived (a later call
    # adds a linked object). Workflow sessions are archived when their workflow ends.
    idle_seconds: float = Field(default=3600, gt=0)
    # Archived sessions older than this are deleted, leaving a tombstone; None keeps them.
    retention_days: float | None = Field(default=None, gt=0)
    # AES-256-GCM at rest with the 32-byte key in this environment variable.
    encrypt: bool = False
    key_env: str = Field(default="GOVERNOR_ARCHIVE_KEY", pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
    sweep_seconds: float = Field(default=60, gt=0)  # how often the archive job looks
    # The one bound on a session's calls that one show, export or replay reads (the admin
    # routes and `governor audit show|export|replay` on the ledger): more is refused before any
    # row is read (routes: 413 `export_too_large` / `session_too_large`; CLI: `error:`, exit 1).
    # An export answers at most `max_export_bytes` bundle bytes.
    max_export_calls: int = Field(default=MAX_EXPORT_CALLS, gt=0, le=MOST_EXPORT_CALLS)
    max_export_bytes: int = Field(default=MAX_EXPORT_BYTES, gt=0, le=512 * 1024 * 1024)


class Settings(_Strict):
    type: Literal["gateway-settings"] = "gateway-settings"
    name: str = "settings"
    require_project_header: bool = False
    untagged_project: str = "UNTAGGED"
    store_text: bool = False
    max_body_bytes: int = Field(default=4 * 1024 * 1024, gt=0)
    loop_repeat_threshold: int = Field(default=5, ge=2)
    # Loop detection (both paths): a session's tokens/hour over `loop_window_seconds` above
    # `loop_multiplier` x the p95 baseline of its workflow tag (or the default baseline while
    # fewer than `loop_min_sessions` sessions back it).
    loop_multiplier: float = Field(default=3.0, gt=1)
    loop_window_seconds: float = Field(default=600, gt=0)
    loop_default_baseline_tokens_per_hour: float = Field(default=100_000, gt=0)
    loop_min_sessions: int = Field(default=5, ge=1)
    # Two signals, two defaults. `loop_action` answers repeated identical prompts and a rate
    # above a trusted baseline (an observed p95 backed by `loop_min_sessions` sessions, or one
    # set in `loop_baselines`); against the default baseline the rate signal does
    # `loop_rate_untrusted_action` (alert: no real session of the tag set that number).
    loop_action: Literal["alert", "throttle", "kill"] = "kill"
    loop_rate_untrusted_action: Literal["alert", "throttle", "kill"] = "alert"
    loop_baselines: dict[str, float] = Field(default_factory=dict)  # workflow tag -> tokens/h

    @field_validator("loop_baselines")
    @classmethod
    def _positive_baselines(cls, v: dict[str, float]) -> dict[str, float]:
        for tag, val in v.items():
            if val <= 0:
                raise ValueError(f"loop_baselines[{tag!r}] must be a positive tokens/hour")
        return v
    loop_throttle_seconds: float = Field(default=30, ge=0)
    # Reservations: a call without `max_tokens` reserves this many output tokens until
    # `output_estimate_min_samples` calls of its virtual model were seen, then their p95.
    output_estimate_default_tokens: int = Field(default=1024, gt=0, le=1_000_000)
    output_estimate_min_samples: int = Field(default=20, ge=1)
    # Shared limits (PostgreSQL ledgers): a lease is at most this fraction of a ceiling and at
    # most `shared_lease_share` of what is left, never less than the call needs.
    shared_lease_fraction: float = Field(default=0.05, gt=0, le=1)
    shared_lease_share: float = Field(default=0.25, gt=0, le=1)
    limits_outage_policy: LimitsOutagePolicy = Field(default_factory=LimitsOutagePolicy)
    # Budget spend re-read from the ledger this often (0: only at start). Replicas and the
    # workflow worker each count in memory; this is how they see each other's spend.
    budget_sync_seconds: float = Field(default=5, ge=0)
    # Hostile-input bounds (README "Bounds on hostile input"); each breach is a clear 4xx.
    body_timeout_seconds: float = Field(default=30, gt=0)
    max_json_depth: int = Field(default=64, ge=4, le=200)
    max_headers: int = Field(default=100, ge=10)
    max_header_bytes: int = Field(default=32 * 1024, ge=1024)
    max_idempotency_key_chars: int = Field(default=255, ge=16, le=1024)
    # Bytes of request bodies the process buffers at once while they arrive, across all
    # connections (a body that would pass it: 503 `gateway_busy`, Retry-After 1). At least
    # `max_body_bytes`, so the largest body allowed can always be received on its own.
    max_body_bytes_in_flight: int = Field(default=256 * 1024 * 1024, gt=0)
    # Open client connections per proxy process; one past it is answered 503 `gateway_busy`
    # (Retry-After 1) and closed before any of its request is read. Each open connection may
    # hold a request head (64 KiB) and ~64 KiB of unread body, so this bounds what connections
    # themselves can pin (~1.3 GB at the default), whatever callers open.
    max_connections: int = Field(default=10_000, ge=1)
    # Per-caller memory: a session's in-memory state is forgotten after this long without a call
    # (the ledger keeps everything); Idempotency-Key records are kept this long, at most this
    # many, and an answer larger than `idempotency_max_response_bytes` is not kept at all.
    session_idle_seconds: float = Field(default=3600, gt=0)
    # ... and at most this many sessions are tracked (the least recently active forgotten first);
    # at most this many killed or closed sessions are held (the ledger keeps every one, and a
    # session not known here is looked up there once).
    max_sessions: int = Field(default=100_000, ge=10)
    max_killed_sessions: int = Field(default=100_000, ge=10)
    # At most this many rate-limit counters (rule, scope value, window) are held, the least
    # recently used out first; one evicted while its window is live is read back from the
    # ledger on its next use (one query), so a limit holds through an eviction.
    max_rate_counters: int = Field(default=100_000, ge=10)
    idempotency_ttl_seconds: float = Field(default=24 * 3600, gt=0)
    idempotency_max_records: int = Field(default=10_000, ge=1)
    idempotency_max_response_bytes: int = Field(default=1024 * 1024, ge=1024)
    # /metrics: a key with the `metrics` (or `admin`) role, or this scrape token (its hash, as
    # `governor keys hash` prints), unless `metrics_public: true`. Caller-supplied label values
    # (project) are the ones the config names plus this allow-list; anything else is `other`.
    metrics_public: bool = False
    metrics_token_hash: str | None = Field(default=None, pattern=r"^sha256:[0-9a-f]{64}$")
    metrics_label_allowlist: list[str] = Field(default_factory=list, max_length=1000)
    # Sessions on governor_session_tokens_per_hour (top N above their baseline): the one metric
    # with a session id, bounded by this N (for the runaway_agent rule in Prometheus).
    alert_top_sessions: int = Field(default=20, ge=0, le=1000)
    # Embedded alerts hand firings and resolutions to Temporal in the background: at most
    # `alert_max_running` at once, then up to `alert_max_queued` waiting per rule (one per alert
    # key: a repeat merges into the one waiting) and `alert_max_queued_total` across all rules;
    # past either, a new key callers choose (a session, a project) is dropped, logged and
    # counted in governor_alerts_dropped_total{bound} (alerts/README.md).
    alert_max_running: int = Field(default=32, ge=1, le=1000)
    alert_max_queued: int = Field(default=1000, ge=0, le=100_000)
    alert_max_queued_total: int = Field(default=5000, ge=0, le=100_000)
    # Used as the session id when no X-Governor-Session-ID (or X-TFY-Session-ID) is sent: the
    # ids coding agents already send. An empty list turns the fallback off.
    client_session_headers: tuple[str, ...] = DEFAULT_CLIENT_SESSION_HEADERS
    # Responses API built-in tools (web_search, file_search, …) no target can run: `refuse`
    # the call (400 unsupported_tool), or `drop` them from what the model is offered.
    responses_hosted_tools: Literal["refuse", "drop"] = "refuse"
    archive: ArchiveSettings = Field(default_factory=ArchiveSettings)
    # Outcome webhooks (README "Control room"): GitHub and ticketing tools; secrets in env vars.
    outcome_webhooks: OutcomeWebhooks = Field(default_factory=OutcomeWebhooks)
    # Tokenizer drift: a virtual model's newer model version using more than this % more input
    # tokens than the previous version on the same prompts (at least `tokenizer_drift_min_prompts`
    # prompt fingerprints seen on both) raises the `tokenizer_drift` alert.
    tokenizer_drift_pct: float = Field(default=10.0, gt=0, le=1000)
    tokenizer_drift_min_prompts: int = Field(default=20, ge=1)

    @field_validator("client_session_headers")
    @classmethod
    def _lower_headers(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        out = tuple(h.strip().lower() for h in v)
        for h in out:
            if not h or not all(c.isalnum() or c in "-_" for c in h):
                raise ValueError(f"{h!r} is not an HTTP header name")
        return out

    @model_validator(mode="after")
    def _body_budget_holds_a_body(self) -> Settings:
        if self.max_body_bytes_in_flight < self.max_body_bytes:
            raise ValueError(
                f"max_body_bytes_in_flight ({self.max_body_bytes_in_flight}) must be at least "
                f"max_body_bytes ({self.max_body_bytes}): no body that large could be received"
            )
        return self


KINDS: dict[str, type[BaseModel]] = {
    "gateway-rate-limit-config": RateLimitConfig,
    "gateway-budget-config": BudgetConfig,
    "gateway-load-balancing-config": RoutingConfig,
    "gateway-pricing-catalog": PricingCatalog,
    "gateway-api-keys": ApiKeysConfig,
    "gateway-providers": ProvidersConfig,
    "gateway-settings": Settings,
}
