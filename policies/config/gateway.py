"""The whole gateway config: every document of a directory, validated as one.

Built from already-read text (the caller does the file I/O), so it stays pure and the same
function serves `governor config check`, start-up and atomic reload.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from pydantic import BaseModel, ValidationError

from policies.config.models import (
    KINDS,
    ApiKey,
    ApiKeysConfig,
    Budget,
    BudgetConfig,
    ModelPrice,
    PricingCatalog,
    Provider,
    ProvidersConfig,
    RateLimitConfig,
    RateLimitRule,
    RoutingConfig,
    Settings,
    Target,
)
from policies.config.yamlsource import ConfigError, ConfigErrors, YamlDoc, parse_yaml
from policies.routing import find_fallback


@dataclass(frozen=True)
class GatewayConfig:
    settings: Settings = field(default_factory=Settings)
    keys_by_hash: dict[str, ApiKey] = field(default_factory=dict)
    providers: dict[str, Provider] = field(default_factory=dict)
    virtual_models: dict[str, RoutingConfig] = field(default_factory=dict)
    model_aliases: dict[str, str] = field(default_factory=dict)  # alias -> virtual model name
    prices: dict[str, ModelPrice] = field(default_factory=dict)
    rate_limits: tuple[RateLimitRule, ...] = ()
    budgets: tuple[Budget, ...] = ()
    extra: dict[str, tuple[BaseModel, ...]] = field(default_factory=dict)
    sources: tuple[str, ...] = ()

    @cached_property
    def keys_by_id(self) -> dict[str, ApiKey]:
        """Keys by id: a ledger row names the key that made the call, and its subject type
        and role (which the ledger does not hold) are the key's."""
        return {k.id: k for k in self.keys_by_hash.values()}


def _field_name(loc: tuple[Any, ...]) -> str:
    return ".".join(str(p) for p in loc) or "(document)"


def validate_doc(doc: YamlDoc, kinds: dict[str, type[BaseModel]]) -> BaseModel:
    data = doc.data
    if not isinstance(data, dict):
        raise ConfigErrors(
            [
                ConfigError(
                    doc.file,
                    doc.start_line,
                    None,
                    "a config document must be a mapping with a `type:` key",
                )
            ]
        )
    kind = data.get("type")
    if kind is None and "alerts" in data:
        kind = "gateway-alert-rules"  # the seed's tfy-ai-alerts.yaml has no `type:`
    model = kinds.get(kind) if isinstance(kind, str) else None
    if model is None:
        raise ConfigErrors(
            [
                ConfigError(
                    doc.file,
                    doc.line_of(("type",)),
                    "type",
                    f"unknown config type {kind!r}; expected one of {', '.join(sorted(kinds))}",
                )
            ]
        )
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errs = []
        for e in exc.errors():
            loc = tuple(
                p for p in e["loc"] if not (isinstance(p, str) and p.startswith("function-"))
            )
            msg = e["msg"].removeprefix("Value error, ")
            errs.append(ConfigError(doc.file, doc.line_of(loc), _field_name(loc), msg))
        raise ConfigErrors(errs) from None


def build_config(
    files: Iterable[tuple[str, str]],
    extra_kinds: dict[str, type[BaseModel]] | None = None,
    env: Mapping[str, str] | None = None,
) -> GatewayConfig:
    """Validate every document of every (filename, text) pair; raise all errors at once."""
    kinds = {**KINDS, **(extra_kinds or {})}
    errors: list[ConfigError] = []
    parsed: list[tuple[YamlDoc, BaseModel]] = []
    sources: list[str] = []
    for name, text in files:
        sources.append(name)
        try:
            docs = parse_yaml(text, name, env)
        except ConfigError as exc:
            errors.append(exc)
            continue
        except ConfigErrors as exc:
            errors.extend(exc.errors)
            continue
        for doc in docs:
            if doc.data is None:
                continue
            try:
                parsed.append((doc, validate_doc(doc, kinds)))
            except ConfigErrors as exc:
                errors.extend(exc.errors)
    if errors:
        raise ConfigErrors(errors)
    return _assemble(parsed, tuple(sources))


def _assemble(parsed: list[tuple[YamlDoc, BaseModel]], sources: tuple[str, ...]) -> GatewayConfig:
    errors: list[ConfigError] = []
    settings = Settings()
    keys: dict[str, ApiKey] = {}
    key_ids: set[str] = set()
    providers: dict[str, Provider] = {}
    vms: dict[str, RoutingConfig] = {}
    prices: dict[str, ModelPrice] = {}
    rate_rules: list[RateLimitRule] = []
    budgets: list[Budget] = []
    extra: dict[str, list[BaseModel]] = {}
    seen_settings: YamlDoc | None = None
    where: dict[str, tuple[YamlDoc, tuple[Any, ...]]] = {}
    alert_names: dict[str, YamlDoc] = {}
    judges: list[tuple[YamlDoc, tuple[Any, ...], Any]] = []
    # Guardrail classifier ids are one namespace across documents (their verdict caches,
    # events and metrics are keyed by id): id -> (doc, path) of its first definition.
    classifier_ids: dict[str, tuple[YamlDoc, tuple[Any, ...]]] = {}

    def dup(doc: YamlDoc, path: tuple[Any, ...], what: str) -> None:
        errors.append(ConfigError(doc.file, doc.line_of(path), _field_name(path), what))

    for doc, m in parsed:
        if isinstance(m, Settings):
            if seen_settings is not None:
                dup(
                    doc,
                    ("type",),
                    f"second gateway-settings document (first in {seen_settings.file})",
                )
            settings, seen_settings = m, doc
        elif isinstance(m, ApiKeysConfig):
            for i, k in enumerate(m.keys):
                if k.id in key_ids or k.hash in keys:
                    dup(doc, ("keys", i, "id"), f"duplicate api key {k.id!r}")
                key_ids.add(k.id)
                keys[k.hash] = k
        elif isinstance(m, ProvidersConfig):
            for i, p in enumerate(m.providers):
                if p.name in providers:
                    dup(doc, ("providers", i, "name"), f"duplicate provider {p.name!r}")
                providers[p.name] = p
        elif isinstance(m, RoutingConfig):
            if m.name in vms:
                dup(doc, ("name",), f"duplicate virtual model {m.name!r}")
            vms[m.name] = m
            where[f"vm:{m.name}"] = (doc, ())
        elif isinstance(m, PricingCatalog):
            for i, mp in enumerate(m.models):
                if mp.model in prices:
                    dup(doc, ("models", i, "model"), f"duplicate price for model {mp.model!r}")
                prices[mp.model] = mp
        elif isinstance(m, RateLimitConfig):
            for i, r in enumerate(m.rules):
                if any(x.id == r.id for x in rate_rules):
                    dup(doc, ("rules", i, "id"), f"duplicate rate-limit rule id {r.id!r}")
                rate_rules.append(r)
                where[f"rl:{r.id}"] = (doc, ("rules", i))
        elif isinstance(m, BudgetConfig):
            for i, b in enumerate(m.budgets):
                if any(x.id == b.id for x in budgets):
                    dup(doc, ("budgets", i, "id"), f"duplicate budget id {b.id!r}")
                budgets.append(b)
                where[f"b:{b.id}"] = (doc, ("budgets", i))
        else:
            kind = str(getattr(m, "type", type(m).__name__))
            extra.setdefault(kind, []).append(m)
            for i, c in enumerate(getattr(m, "classifiers", ())):  # guardrail classifiers
                first_c = classifier_ids.setdefault(c.id, (doc, ("classifiers", i, "id")))
                if first_c[0] is not doc:  # within one document the model itself refuses it
                    fdoc, fpath = first_c
                    dup(doc, ("classifiers", i, "id"),
                        f"duplicate classifier id {c.id!r} (first in "
                        f"{fdoc.file}:{fdoc.line_of(fpath)})")
                if getattr(c, "llm_judge", None) is not None:
                    judges.append((doc, ("classifiers", i, "llm_judge"), c.llm_judge))
            rules = getattr(m, "alerts", ()) if kind == "gateway-alert-rules" else ()
            for i, r in enumerate(rules):
                first = alert_names.setdefault(r.name, doc)
                if first is not doc:
                    dup(doc, ("alerts", i, "name"),
                        f"duplicate alert name {r.name!r} (first in {first.file})")

    # Cross-references: a route to nowhere or an unpriced model is a config bug, not a runtime one.
    for name, vm in vms.items():
        doc, _ = where[f"vm:{name}"]
        targets: list[tuple[tuple[Any, ...], Target]] = [
            (("rules", i, "target"), r.target) for i, r in enumerate(vm.rules)
        ]
        targets += [(("fallbacks", i), t) for i, t in enumerate(vm.fallbacks)]
        if vm.cheaper is not None:
            targets.append((("cheaper",), vm.cheaper))
        for path, t in targets:
            if t.provider not in providers:
                dup(
                    doc,
                    (*path, "provider"),
                    f"provider {t.provider!r} is not defined in any gateway-providers document",
                )
            if t.model not in prices:
                dup(
                    doc,
                    (*path, "model"),
                    f"model {t.model!r} has no price in the gateway-pricing-catalog",
                )

    aliases: dict[str, str] = {}
    for name, vm in vms.items():
        doc, _ = where[f"vm:{name}"]
        for i, alias in enumerate(vm.aliases):
            if alias in vms and alias != name:
                dup(doc, ("aliases", i), f"alias {alias!r} is the name of a virtual model")
            elif alias in aliases and aliases[alias] != name:
                dup(doc, ("aliases", i),
                    f"alias {alias!r} already names virtual model {aliases[alias]!r}")
            elif alias != name:
                aliases[alias] = name

    def unroutable(name: str) -> bool:
        return find_fallback(name, vms, prices) == (None, None)

    why = (
        "names no virtual model, no model on any route, and no priced model with a "
        "provider, so it cannot be routed"
    )
    def unknown_keys(sel_keys: list[str], doc: YamlDoc, path: tuple[Any, ...]) -> None:
        for i, k in enumerate(sel_keys):
            if k not in key_ids:
                dup(doc, (*path, "keys", i),
                    f"API key id {k!r} is not defined in any gateway-api-keys document")

    for r in rate_rules:
        if r.when.keys:
            doc, path = where[f"rl:{r.id}"]
            unknown_keys(r.when.keys, doc, (*path, "when"))
    for b in budgets:
        if b.scope.keys:
            doc, path = where[f"b:{b.id}"]
            unknown_keys(b.scope.keys, doc, (*path, "scope"))
    for r in rate_rules:
        if r.on_breach.startswith("fallback_to_") and unroutable(r.on_breach[12:]):
            doc, path = where[f"rl:{r.id}"]
            dup(doc, (*path, "on_breach"), f"{r.on_breach}: {r.on_breach[12:]!r} {why}")
    for b in budgets:
        tgt = b.on_exceed[12:]
        if b.on_exceed.startswith("fallback_to_") and tgt != "cheaper" and unroutable(tgt):
            doc, path = where[f"b:{b.id}"]
            dup(doc, (*path, "on_exceed"), f"{b.on_exceed}: {tgt!r} {why}")
    for doc, path, j in judges:
        if j.key_id not in key_ids:
            dup(doc, (*path, "key_id"),
                f"API key id {j.key_id!r} is not defined in any gateway-api-keys document")
        if j.model not in vms and j.model not in aliases:
            dup(doc, (*path, "model"), f"{j.model!r} is not a virtual model or an alias of one")
    if errors:
        raise ConfigErrors(errors)
    return GatewayConfig(
        settings=settings,
        keys_by_hash=keys,
        providers=providers,
        virtual_models=vms,
        model_aliases=aliases,
        prices=prices,
        rate_limits=tuple(rate_rules),
        budgets=tuple(budgets),
        extra={k: tuple(v) for k, v in extra.items()},
        sources=sources,
    )
