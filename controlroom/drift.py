"""Tokenizer drift: tokens per request by model *version* on identical prompts.

A virtual model's target moves from one model version to the next (Opus 4.6 -> 4.7); the rate
card may not change while the tokenizer does, so the same prompt costs more. Only prompts seen
under both versions (same prompt fingerprint) are compared, so a change in what people ask
cannot pass for drift. Pure: rows in, findings out.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Drift:
    """Input tokens per call of `to_version` vs `from_version` on `common_prompts` shared
    fingerprints: `drift_pct` = (after / before - 1) x 100."""

    virtual_model: str
    from_model: str
    from_version: str
    to_model: str
    to_version: str
    common_prompts: int
    tokens_before: float
    tokens_after: float
    drift_pct: float


def version_drifts(groups: Iterable[tuple[Any, ...]]) -> list[Drift]:
    """From (virtual_model, model, model_version, _tag, fingerprint, calls, sum_input, _min,
    first_ts) rows: each virtual model's consecutive versions (by first call), compared on the
    fingerprints both saw: the mean over those prompts of each prompt's mean input tokens.
    Pairs with no shared fingerprint are left out."""
    # (vm) -> (model, version) -> fingerprint -> [calls, sum_input]; and first ts per version
    acc: dict[str, dict[tuple[str, str], dict[str, list[int]]]] = {}
    first: dict[tuple[str, str, str], float] = {}
    for vm, model, version, _tag, fp, n, total, _least, ts in groups:
        per = acc.setdefault(vm, {}).setdefault((model, version), {})
        a = per.setdefault(fp, [0, 0])
        a[0] += int(n)
        a[1] += int(total or 0)
        k = (vm, model, version)
        first[k] = min(first.get(k, float(ts)), float(ts))
    out = []
    for vm in sorted(acc):
        versions = sorted(acc[vm], key=lambda mv: (first[(vm, *mv)], mv))
        for old, new in itertools.pairwise(versions):
            a, b = acc[vm][old], acc[vm][new]
            common = a.keys() & b.keys()
            if not common:
                continue
            # each shared prompt weighs the same on both sides: a change in how often each
            # prompt is sent cannot pass for drift
            before = sum(a[k][1] / a[k][0] for k in common) / len(common)
            after = sum(b[k][1] / b[k][0] for k in common) / len(common)
            pct = (after / before - 1.0) * 100.0 if before > 0 else 0.0
            out.append(Drift(vm, old[0], old[1], new[0], new[1], len(common), before, after,
                             pct))
    return out


def drift_alerts(drifts: Iterable[Drift], threshold_pct: float, min_prompts: int) -> list[Drift]:
    """The drifts that should raise `tokenizer_drift`: more than `threshold_pct` more tokens on
    at least `min_prompts` shared prompts."""
    return [d for d in drifts if d.drift_pct > threshold_pct and d.common_prompts >= min_prompts]


def rollback_diff(d: Drift, routing: Mapping[str, Any] | None) -> str:
    """The YAML diff that points the virtual model back at the previous version's model.

    `routing` is the virtual model's config (`RoutingConfig.model_dump()`), when known: every
    rule and fallback on the new model is shown moving back; without it, the generic shape."""
    lines = [f"# gateway-load-balancing-config `{d.virtual_model}`: roll back "
             f"{d.to_model} -> {d.from_model} (+{d.drift_pct:.1f}% tokens on the same prompts)",
             f" name: {d.virtual_model}", " rules:"]
    rules = (routing or {}).get("rules") or []
    moved = False
    for r in rules:
        t = r.get("target", {})
        lines.append(f"   - id: {r.get('id')}")
        if t.get("model") == d.to_model:
            moved = True
            lines.append(f"-    target: {{provider: {t.get('provider')}, model: {d.to_model}}}")
            lines.append(f"+    target: {{provider: {t.get('provider')}, model: {d.from_model}}}")
        else:
            lines.append(f"     target: {{provider: {t.get('provider')}, "
                         f"model: {t.get('model')}}}")
    if not moved:
        lines = [*lines[:3], "   - id: <the rule on the new model>",
                 f"-    target: {{model: {d.to_model}}}", f"+    target: {{model: {d.from_model}}}"]
    return "\n".join(lines)
