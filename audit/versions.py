"""Config versions: every configuration a runtime applies gets a content-hash id, stored once.

A version's body is the canonical JSON of the applied `GatewayConfig` (sorted keys, compact):
settings, keys (as stored: ids and hashes), providers, virtual models, aliases, prices, rate
limits, budgets, the other documents (guardrails, alerts, notification targets) and the source
file names. Secrets never reach it: every value under a secret-bearing field (`api_key`,
`url`, `headers`, `token`, `password`, `secret`, `authorization` …) is replaced by
`"sha256:" + hex digest` of its JSON, so two configs that differ only in a secret still get
different ids, and the body can be shown to an auditor.

`version_id` = "cv-" + sha256(body)[:16] (hex). Computed when a config is applied (start,
`POST /gateway/config/reload`, a runtime override), never per call: a call row only copies the
id its runtime holds. `config_from_body` rebuilds the parts of the config the pure policy core
reads (`decide()`, `plan_route()`), so a past call can be re-decided on the version that decided it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import re
from dataclasses import dataclass
from typing import Any

import orjson
from pydantic import BaseModel

from ledger.models import CONFIG_VERSIONS
from ledger.store import LedgerStore
from policies.config.gateway import GatewayConfig
from policies.config.models import (
    ApiKey,
    Budget,
    ModelPrice,
    Provider,
    RateLimitRule,
    RoutingConfig,
    Settings,
)

log = logging.getLogger("governor.audit")

SOURCES = ("start", "reload", "override")
PREFIX = "cv-"
# Field names whose values are secrets or may carry one (a webhook URL holds its token).
_SECRET_FIELD = re.compile(
    r"^(api_key|url|headers|token|password|secret|authorization|credentials|webhook)$"
    r"|_(secret|token|password|api_key)$",
    re.IGNORECASE,
)
VERSION_ID = re.compile(r"^cv-[0-9a-f]{16}$")


@dataclass(frozen=True, slots=True)
class ConfigVersion:
    version_id: str
    body: str  # canonical JSON, secrets hashed


def _digest(value: Any) -> str:
    return "sha256:" + hashlib.sha256(orjson.dumps(value, option=orjson.OPT_SORT_KEYS)).hexdigest()


def _scrub(value: Any) -> Any:
    """A JSON value with every secret-bearing field's value replaced by its digest."""
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if v is not None and isinstance(k, str) and _SECRET_FIELD.search(k):
                out[k] = v if isinstance(v, str) and v.startswith("sha256:") else _digest(v)
            else:
                out[k] = _scrub(v)
        return out
    if isinstance(value, list | tuple):
        return [_scrub(v) for v in value]
    return value


def _dump(m: BaseModel) -> Any:
    return m.model_dump(mode="json")


def canonical(config: GatewayConfig) -> dict[str, Any]:
    """The applied config as plain JSON data, secrets hashed (see the module docstring)."""
    doc = {
        "settings": _dump(config.settings),
        "keys": sorted((_dump(k) for k in config.keys_by_hash.values()), key=lambda k: k["id"]),
        "providers": {n: _dump(p) for n, p in config.providers.items()},
        "virtual_models": {n: _dump(v) for n, v in config.virtual_models.items()},
        "model_aliases": dict(config.model_aliases),
        "prices": {n: _dump(p) for n, p in config.prices.items()},
        "rate_limits": [_dump(r) for r in config.rate_limits],
        "budgets": [_dump(b) for b in config.budgets],
        "extra": {k: [_dump(d) for d in docs] for k, docs in config.extra.items()},
        "sources": list(config.sources),
    }
    return _scrub(doc)  # type: ignore[no-any-return]


def version_of(config: GatewayConfig) -> ConfigVersion:
    """The config's version: milliseconds for a large config, so only at apply time."""
    body = orjson.dumps(canonical(config), option=orjson.OPT_SORT_KEYS).decode()
    return ConfigVersion(PREFIX + hashlib.sha256(body.encode()).hexdigest()[:16], body)


def config_from_body(body: str | dict[str, Any]) -> GatewayConfig:
    """The policy-relevant config of a stored version (raises ValueError on a damaged body).

    Rebuilt: settings, keys, providers (secrets stay hashed), virtual models, aliases, prices,
    rate limits, budgets, sources. The other documents (guardrails, alerts) are not: the policy
    core's `decide()` and `plan_route()` do not read them, and guardrail verdicts are recorded.
    """
    try:
        d = orjson.loads(body) if isinstance(body, str) else body
        keys = [ApiKey.model_validate(k) for k in d.get("keys", [])]
        return GatewayConfig(
            settings=Settings.model_validate(d.get("settings") or {}),
            keys_by_hash={k.hash: k for k in keys},
            providers={n: Provider.model_validate(p) for n, p in d.get("providers", {}).items()},
            virtual_models={
                n: RoutingConfig.model_validate(v) for n, v in d.get("virtual_models", {}).items()
            },
            model_aliases=dict(d.get("model_aliases", {})),
            prices={n: ModelPrice.model_validate(p) for n, p in d.get("prices", {}).items()},
            rate_limits=tuple(RateLimitRule.model_validate(r) for r in d.get("rate_limits", [])),
            budgets=tuple(Budget.model_validate(b) for b in d.get("budgets", [])),
            sources=tuple(d.get("sources", [])),
        )
    except (orjson.JSONDecodeError, AttributeError, TypeError, ValueError) as exc:
        raise ValueError(f"config version body cannot be read: {exc}") from None


async def record_version(
    store: LedgerStore, version: ConfigVersion, source: str, ts: float
) -> None:
    """Store a version once (a second insert of the same id is a no-op, first `ts` wins)."""
    if source not in SOURCES:
        raise ValueError(f"config version source must be one of {SOURCES}, got {source!r}")
    q = (
        store._insert(CONFIG_VERSIONS)
        .values(version_id=version.version_id, ts=ts, source=source, body=version.body)
        .on_conflict_do_nothing(index_elements=["version_id"])
        .returning(*CONFIG_VERSIONS.c)
    )
    async with store._chained() as conn:  # a new version is a link of the audit chain
        row = (await conn.execute(q)).mappings().first()
        if row is not None:
            await store.chain_append(conn, [(CONFIG_VERSIONS.name, dict(row), "put", "")])


async def load_versions(store: LedgerStore, ids: list[str]) -> dict[str, dict[str, Any]]:
    """The stored versions among `ids`: id -> {version_id, ts, source, body}."""
    want = sorted({i for i in ids if i})
    if not want:
        return {}
    q = CONFIG_VERSIONS.select().where(CONFIG_VERSIONS.c.version_id.in_(want))
    return {r["version_id"]: r for r in await store._fetch(q)}


MAX_PENDING = 64  # distinct versions waiting for the database (a long outage keeps the newest)


class AppliedVersions:
    """The versions one runtime applied and has not stored yet: stored by a background task
    that retries while the database is down (a version is re-derived from the same config
    at the next start anyway, so the bound only drops ids of configs no longer in force)."""

    def __init__(self) -> None:
        self.pending: dict[str, tuple[ConfigVersion, str, float]] = {}
        self._task: asyncio.Task[None] | None = None

    def applied(self, config: GatewayConfig, source: str, ts: float) -> str:
        """The config's version id; remembered to be stored (call at apply time only)."""
        v = version_of(config)
        self.pending.setdefault(v.version_id, (v, source, ts))
        while len(self.pending) > MAX_PENDING:
            del self.pending[next(iter(self.pending))]
        return v.version_id

    async def flush(self, store: LedgerStore) -> None:
        """Store every pending version; raises what the database raised (the rest stay)."""
        for vid, (v, source, ts) in list(self.pending.items()):
            await record_version(store, v, source, ts)
            self.pending.pop(vid, None)

    def flush_soon(self, store: LedgerStore) -> None:
        """Store the pending versions in the background (no-op without a running loop)."""
        if self._task is not None and not self._task.done():
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._task = loop.create_task(self._flush_until_done(store), name="config-versions")

    async def _flush_until_done(self, store: LedgerStore) -> None:
        wait = 0.5
        while self.pending:
            try:
                await self.flush(store)
            except Exception as exc:  # a down database: keep them, try again
                log.warning("config versions not stored yet: %s", type(exc).__name__)
                await asyncio.sleep(wait)
                wait = min(wait * 2, 30.0)

    async def close(self, store: LedgerStore) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        with contextlib.suppress(Exception):
            await self.flush(store)
