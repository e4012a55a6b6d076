"""The six panels of the second seed, computed from the ledger.

    panels = await compute_panels(store, Filters(since, until, team=…), [1, 3], config=gw.config)

Every surface renders these values (web page, `governor report`, the JSON route), so they
cannot disagree. `config` (the gateway's `GatewayConfig`) supplies the price catalog (tiers,
standard-tier alternatives), budgets, loop-detector settings and routing for rollback diffs;
without it panels 2 and 4 leave budget and tier columns empty. `now` is `filters.until`.

No panel has a user column or orders people: users are counted per team, tool and day.
"""

from __future__ import annotations

import asyncio
import heapq
import math
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from controlroom import queries as q
from controlroom import rollups
from controlroom.drift import drift_alerts, rollback_diff, version_drifts
from controlroom.leverage import TagLeverage, ai_leverage_score
from controlroom.model import Action, Chart, Filters, Panel, Series, Table
from ledger.store import LedgerStore
from policies.budgets import usd_ceiling
from policies.config.models import ModelPrice, Settings
from policies.loops import rate_baseline
from policies.pricing import call_cost, rates
from policies.windows import calendar_window

PANELS = (1, 2, 3, 4, 5, 6)
BASELINE_DAYS = 7
MAX_ROWS = 200  # rows per table: a panel is read by people
HOOK_ORDER = ("request-input", "tool-output", "request-output", "tool-input")
_BUDGET_COLUMNS = {"project", "team", "workflow_tag", "environment"}


def _r(x: float, n: int = 4) -> float:
    return round(float(x), n)


def _day(d: int) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(d * 86400))


def days_in(f: Filters) -> list[int]:
    """UTC day numbers the range [since, until) touches."""
    first, last = int(f.since // 86400), math.ceil(f.until / 86400) - 1
    return list(range(first, max(first, last) + 1))


@dataclass
class _Ctx:
    store: LedgerStore
    f: Filters
    config: Any  # GatewayConfig | None
    cache: dict[str, Any] = field(default_factory=dict)

    @property
    def settings(self) -> Settings:
        return self.config.settings if self.config is not None else Settings()

    @property
    def prices(self) -> dict[str, ModelPrice]:
        return dict(self.config.prices) if self.config is not None else {}

    async def baselines(self) -> dict[str | None, tuple[float, str]]:
        """Per workflow tag: (p95 baseline tokens/h, source) as the loop detector decides it,
        from the sessions of the previous 7 days that were over before the live window (the
        sessions being judged never set their own bar)."""
        if "baselines" not in self.cache:
            st = self.settings
            until = self.f.until - st.loop_window_seconds
            by = await q.session_p95(self.store, until - BASELINE_DAYS * 86400, until,
                                     st.loop_window_seconds)
            out: dict[str | None, tuple[float, str]] = {}
            for tag in set(by) | set(st.loop_baselines):
                observed, n = by.get(tag, (None, 0))
                out[tag] = rate_baseline(observed, n, st.loop_min_sessions,
                                         st.loop_baselines.get(tag) if tag else None,
                                         st.loop_default_baseline_tokens_per_hour)
            self.cache["baselines"] = out
        return self.cache["baselines"]  # type: ignore[no-any-return]

    async def baseline(self, tag: str | None) -> tuple[float, str]:
        b = (await self.baselines()).get(tag)
        if b is not None:
            return b
        st = self.settings
        return rate_baseline(None, 0, st.loop_min_sessions,
                             st.loop_baselines.get(tag) if tag else None,
                             st.loop_default_baseline_tokens_per_hour)

    async def flag_baselines(self, peak: dict[str | None, float]) -> dict[str | None, float]:
        """Per workflow tag of `peak` (the highest tokens per hour of the tag's sessions to be
        scored): a baseline that gives each of those sessions the leverage score's loop flag
        (`tokens_per_hr > 3 x p95_baseline`) the tag's baseline (`baseline`) gives it.

        The flag needs no p95, only whether it is below peak / 3: a configured or default
        baseline is known, and an observed p95 is at least a bound exactly when fewer than
        ceil(0.95 n) of the tag's sessions are below it (one counting pass, no ranking). Then
        that bound stands in (it flags none, as the baseline does); only a tag whose p95 may
        be lower is ranked (`baselines`). Computed with the other panels, the baselines are
        at hand and used as they are."""
        if "baselines" in self.cache:
            return {t: (await self.baseline(t))[0] for t in peak}
        st = self.settings
        out: dict[str | None, float] = {}
        bounds: dict[str | None, float] = {}
        for tag, top in peak.items():
            configured = st.loop_baselines.get(tag) if tag else None
            if configured is not None and configured > 0:
                out[tag] = configured
                continue
            bound = top / 3
            while 3 * bound < top:  # 3 x bound >= top in float arithmetic, as the score's
                bound = math.nextafter(bound, math.inf)
            bounds[tag] = bound
        if not bounds:
            return out
        if len(bounds) > 64:  # one CASE branch per tag: past that, rank them all
            return {t: (await self.baseline(t))[0] for t in peak}
        until = self.f.until - st.loop_window_seconds
        counts = await q.sessions_below(self.store, until - BASELINE_DAYS * 86400, until,
                                        st.loop_window_seconds, bounds)
        for tag, bound in bounds.items():
            n, below = counts.get(tag, (0, 0))
            if n < st.loop_min_sessions:  # the default applies, whatever the p95
                out[tag] = rate_baseline(None, 0, st.loop_min_sessions, None,
                                         st.loop_default_baseline_tokens_per_hour)[0]
            elif below < (n * 95 + 99) // 100:  # the p95 is at least the bound
                out[tag] = bound
            else:
                return {t: (await self.baseline(t))[0] for t in peak}
        return out

    async def part(self, name: str) -> rollups.Rolled:
        """One rollup of the range (`calls`, `users` or `sessions`; prompts: `prompt_groups`),
        read once per computation."""
        key = "rolled:" + name
        if key not in self.cache:
            self.cache[key] = await rollups.read(self.store, self.f, (name,))
        return self.cache[key]  # type: ignore[no-any-return]

    async def prompt_groups(self) -> list[tuple[Any, ...]]:
        """(vm, model, version, tag, fingerprint, calls, sum input, min input, first ts) per
        hour, of virtual models served by two or more model versions in the range."""
        if "groups" not in self.cache:
            versions: dict[str, set[tuple[str, str]]] = defaultdict(set)
            served: dict[str, int] = defaultdict(int)
            for k, v in (await self.part("calls")).calls.items():
                if k[9] == "allowed":
                    versions[k[6]].add((k[7], k[8]))
                    served[k[6]] += v[0]
            vms = sorted(vm for vm, v in versions.items() if len(v) > 1)
            groups: list[tuple[Any, ...]] = []
            if vms:
                r = await rollups.read(self.store, self.f, ("prompts",), prompt_models=vms,
                                       prompt_calls=sum(served[vm] for vm in vms))
                groups = [(*k[1:], *v) for k, v in r.prompts.items()]
            self.cache["groups"] = groups
        return self.cache["groups"]  # type: ignore[no-any-return]


async def compute_panels(
    store: LedgerStore,
    filters: Filters,
    panels: list[int] | None = None,
    *,
    config: Any = None,
) -> list[Panel]:
    """The requested panels (all six by default), in number order. ValueError for a panel
    number outside 1-6 or a range with `until <= since`."""
    wanted = sorted(set(panels or PANELS))
    bad = [p for p in wanted if p not in PANELS]
    if bad:
        raise ValueError(f"panel numbers are 1-6, got {bad}")
    if not filters.until > filters.since:
        raise ValueError("the range must have until > since")
    await q.ensure_indexes(store)
    await refresh_rollups(store)
    ctx = _Ctx(store, filters, config)
    build = {1: adoption, 2: burn_rate, 3: runaway, 4: premium, 5: safety, 6: outcome_join}
    return [await build[n](ctx) for n in wanted]


REFRESH_EVERY = 30.0  # seconds between rollup refreshes by one store's readers


async def refresh_rollups(store: LedgerStore, now: float | None = None) -> None:
    """Roll the hours closed since the last refresh (at most every `REFRESH_EVERY` s)."""
    lock = store.__dict__.setdefault("_rollups_lock", asyncio.Lock())
    async with lock:  # concurrent pages wait for one refresh instead of rolling twice
        mono = time.monotonic()
        if mono - getattr(store, "_rollups_refreshed", -1e9) < REFRESH_EVERY:
            return
        await rollups.refresh(store, now)
        store._rollups_refreshed = time.monotonic()  # type: ignore[attr-defined]


# -- 1. adoption ---------------------------------------------------------------------------------


async def adoption(ctx: _Ctx) -> Panel:
    f = ctx.f
    users: dict[tuple[int, str, str], set[str]] = defaultdict(set)
    team_users: dict[str, set[str]] = defaultdict(set)
    for hour, team, _project, _tag, tool, user in (await ctx.part("users")).users:
        users[(int(hour // 86400), team, tool or "(unrecognised)")].add(user)
        team_users[team].add(user)
    heads = {t: len(u) for t, u in team_users.items()}
    days = days_in(f)
    per: dict[tuple[str, str], int] = defaultdict(int)  # (team, tool) -> sum of daily users
    daily: dict[str, dict[int, int]] = defaultdict(lambda: defaultdict(int))
    for (day, team, tool), us in users.items():
        per[(team, tool)] += len(us)
        daily[tool][day] += len(us)
    nd = len(days)
    table = Table("Adoption by tool x team (mean daily active engineers, % of the team's "
                  "engineers active in the range)",
                  ["team", "tool", "avg_daily_active_users", "adoption_pct"])
    for (team, tool) in sorted(per):
        avg = per[(team, tool)] / nd
        table.rows.append([team, tool, _r(avg, 2), _r(100 * avg / heads[team], 2)])
    total = sum(heads.values())
    overall = {tool: 100 * sum(d.values()) / nd / total for tool, d in daily.items()} if total \
        else {}
    gap = Table("Gap between tools (percentage points below the most adopted tool)",
                ["tool", "adoption_pct", "gap_pp"])
    best = max(overall.values(), default=0.0)
    for tool in sorted(overall):
        gap.rows.append([tool, _r(overall[tool], 2), _r(best - overall[tool], 2)])
    chart = Chart("Daily active engineers by tool", "line", "engineers",
                  [Series(tool, [(_day(d), float(daily[tool].get(d, 0))) for d in days])
                   for tool in sorted(daily)])
    actions = []
    gap_pp = 0.0
    if len(overall) >= 2:
        hi = max(sorted(overall), key=lambda t: overall[t])
        lo = min(sorted(overall), key=lambda t: overall[t])
        gap_pp = overall[hi] - overall[lo]
        actions.append(Action("question", f"{lo} vs {hi}",
                              f"{lo} adoption is {gap_pp:.0f} percentage points below {hi}: "
                              "is it tooling friction or use-case fit? (a question for a "
                              "sprint, not a ranking)"))
    return Panel(1, "Adoption", "How many engineers use AI tools each day, by tool and team?",
                 "executive",
                 figures={"engineers_active": total, "teams": len(heads), "tools": len(overall),
                          "days": nd, "gap_pp": _r(gap_pp, 2)},
                 tables=[table, gap], charts=[chart], actions=actions)


# -- 2. burn rate --------------------------------------------------------------------------------


def _budget_match(budget: Any) -> dict[str, str] | None:
    scope = budget.scope
    if scope.subjects or scope.keys or not set(scope.metadata) <= _BUDGET_COLUMNS:
        return None
    return dict(scope.metadata)


async def burn_rate(ctx: _Ctx) -> Panel:
    f, st = ctx.f, ctx.settings
    untagged = st.untagged_project
    rolled = await ctx.part("calls")
    acc: dict[str, list[float]] = defaultdict(lambda: [0, 0, 0.0])
    src: dict[tuple[str, str, str], list[float]] = defaultdict(lambda: [0, 0.0])
    day_cost: dict[tuple[int, str], float] = defaultdict(float)
    for k, v in rolled.calls.items():
        a = acc[k[2]]
        a[0] += v[0]
        a[1] += v[1]
        a[2] += v[6]
        day_cost[(int(k[0] // 86400), k[2])] += v[6]
        if k[2] == untagged:
            sa = src[(k[1], k[4], k[5])]
            sa[0] += v[0]
            sa[1] += v[6]
    rows = sorted(((p, int(a[0]), int(a[1]), a[2]) for p, a in acc.items()),
                  key=lambda r: (-r[3], r[0]))
    total = sum(r[3] for r in rows)
    budgets = Table("Budgets: used in the current window, forecast to its end",
                    ["budget", "scope", "window", "ceiling_usd", "spent_usd", "used_pct",
                     "forecast_usd", "forecast_pct"])
    by_project: dict[str, list[Any]] = {}
    actions: list[Action] = []
    for b in (ctx.config.budgets if ctx.config is not None else ()):
        match = _budget_match(b)
        if match is None:
            continue
        ws, we = calendar_window(f.until - 1e-6, b.window)
        spent = await rollups.spend(ctx.store, ws, f.until, match)
        elapsed = max(f.until - ws, 1.0)
        forecast = spent / elapsed * (we - ws)
        used = 100 * spent / b.ceiling_usd
        fpct = 100 * forecast / b.ceiling_usd
        scope = ",".join(f"{k}={v}" for k, v in sorted(match.items())) or "global"
        row = [b.id, scope, b.window, _r(b.ceiling_usd, 6), _r(spent), _r(used, 2),
               _r(forecast), _r(fpct, 2)]
        budgets.rows.append(row)
        if set(match) == {"project"}:
            by_project.setdefault(match["project"], row)
        if fpct > 100:
            actions.append(Action("review", b.id,
                                  f"budget {b.id} is forecast at {fpct:.0f}% of its "
                                  f"{usd_ceiling(b.ceiling_usd)} {b.window} ceiling: review the "
                                  "premium-model panel for routing wins, or raise the ceiling"))
    table = Table("Spend by project", ["project", "calls", "tokens", "cost_usd", "share_pct",
                                       "budget", "budget_used_pct", "forecast_pct", "note"])
    for project, calls, tokens, cost in rows:
        b = by_project.get(project)
        note = ("no project header: cannot be attributed, budgeted or joined to an outcome"
                if project == untagged else "")
        table.rows.append([project, int(calls), int(tokens or 0), _r(cost or 0),
                           _r(100 * float(cost or 0) / total, 2) if total else 0.0,
                           b[0] if b else None, b[5] if b else None, b[7] if b else None, note])
    src_rows = sorted(((t, tool, env, int(a[0]), a[1]) for (t, tool, env), a in src.items()),
                      key=lambda r: (-r[4], r[0], r[1], r[2]))
    sources = Table(f"{untagged} spend: where it comes from (team, tool, environment)",
                    ["team", "tool", "environment", "calls", "cost_usd"])
    for team, tool, env, calls, cost in src_rows:
        sources.rows.append([team, tool or "(unrecognised)", env or "", int(calls), _r(cost)])
    untagged_cost = sum(float(r[4] or 0) for r in src_rows)
    if untagged_cost > 0:
        actions.append(Action("yaml", "gateway-settings",
                              f"# ${untagged_cost:,.2f} of spend has no project: require the "
                              "header (after a grace period)\n type: gateway-settings\n"
                              "-require_project_header: false\n+require_project_header: true"))
    series: dict[str, dict[int, float]] = defaultdict(dict)
    for (day, project), cost in day_cost.items():
        series[project][day] = cost
    chart = Chart("Daily spend by project", "line", "USD",
                  [Series(p, [(_day(d), _r(series[p].get(d, 0.0))) for d in days_in(f)])
                   for p in sorted(series)])
    return Panel(2, "Project burn rate", "Where is the money going, and which spend cannot be "
                 "attributed?", "executive",
                 figures={"total_cost_usd": _r(total), "untagged_cost_usd": _r(untagged_cost),
                          "untagged_share_pct": _r(100 * untagged_cost / total, 2) if total
                          else 0.0, "projects": len(rows)},
                 tables=[table, budgets, sources], charts=[chart], actions=actions)


# -- 3. runaway agents ---------------------------------------------------------------------------


async def runaway(ctx: _Ctx) -> Panel:
    f, st = ctx.f, ctx.settings
    window, mult = st.loop_window_seconds, st.loop_multiplier
    live = await q.live_sessions(ctx.store, f, window)
    status = await q.session_status(ctx.store, [r[0] for r in live])
    rows = []
    for sid, tag, team, project, tokens, _last in live:
        rate = float(tokens or 0) * 3600.0 / window
        base, source = await ctx.baseline(tag)
        st_ = status.get(sid, "open")
        rows.append([sid, tag, team, project, int(tokens or 0), _r(rate, 1), _r(base, 1), source,
                     _r(rate / base, 2), st_, rate > mult * base and st_ == "open"])
    rows.sort(key=lambda r: (not r[10], -r[8], r[0]))
    table = Table(f"Live sessions (a call in the last {window:.0f} s): token rate vs "
                  f"{mult:g}x the p95 of their workflow tag",
                  ["session_id", "workflow_tag", "team", "project", "tokens_in_window",
                   "tokens_per_hr", "p95_baseline", "baseline_source", "x_baseline", "status",
                   "runaway"], rows[:MAX_ROWS])
    actions = [Action("kill_session", r[0],
                      f"{r[5]:,.0f} tokens/h is {r[8]:.1f}x the p95 of `{r[1] or '(no tag)'}`: "
                      f"PUT /gateway/sessions/{r[0]}/kill (runbook runaway_agent)")
               for r in rows if r[10]]
    alerts = Table("Runbook alerts (runaway_agent)", ["alert_key", "status", "session_id",
                                                      "opened_ts", "runbook"])
    for key, astatus, labels, opened in await q.runaway_alerts(ctx.store, f.until - 7 * 86400):
        try:
            sid = orjson.loads(labels).get("session_id", "")
        except (orjson.JSONDecodeError, AttributeError):
            sid = ""
        alerts.rows.append([key, astatus, sid, _r(opened, 3), f"/gateway/alerts/{key}"])
    return Panel(3, "Runaway-agent detector", "Which agents are looping right now?", "oncall",
                 figures={"live_sessions": len(rows),
                          "runaway_sessions": sum(1 for r in rows if r[10]),
                          "window_seconds": window, "multiplier": mult},
                 tables=[table, alerts], actions=actions)


# -- 4. premium-model review queue + tokenizer drift ---------------------------------------------


def standard_alternative(ctx: _Ctx, vm: str, model: str) -> str | None:
    """The standard-tier model a premium call could route to: the virtual model's `cheaper`
    target when it is not premium, else the catalog's cheapest standard model of the same
    provider (then of any provider)."""
    prices = ctx.prices
    cfg = ctx.config.virtual_models.get(vm) if ctx.config is not None else None
    if cfg is not None and cfg.cheaper is not None:
        p = prices.get(cfg.cheaper.model)
        if p is not None and p.tier != "premium":
            return cfg.cheaper.model
    own = prices.get(model)
    std = [p for p in prices.values() if p.tier == "standard"]
    same = [p for p in std if own is not None and p.provider == own.provider]
    pick = sorted(same or std, key=lambda p: (p.input_per_mtok + p.output_per_mtok, p.model))
    return pick[0].model if pick else None


async def premium(ctx: _Ctx) -> Panel:
    prices = ctx.prices
    st = ctx.settings
    by_version: dict[tuple[Any, ...], list[float]] = defaultdict(lambda: [0] * 7)
    for k, v in (await ctx.part("calls")).calls.items():
        if k[9] == "blocked":
            continue
        a = by_version[(k[3] or None, k[6], k[7], k[8])]
        for i, j in enumerate((0, 2, 3, 4, 5, 6, 7)):
            a[i] += v[j]
    # repeated input (within the hour) per (tag, vm, model, version): what a cached prefix serves
    repeated = {k: v[6] for k, v in by_version.items()}
    spend = [(*k, *v[:6]) for k, v in by_version.items()]
    groups = await ctx.prompt_groups()
    agg: dict[tuple[Any, ...], list[float]] = {}
    for tag, vm, model, version, n, inp, out, cr, cw, cost in spend:
        price = prices.get(model)
        if price is None or price.tier != "premium":
            continue
        key = (tag, vm, model)
        a = agg.setdefault(key, [0, 0.0, 0.0, 0, 0, 0.0])
        alt = standard_alternative(ctx, vm, model)
        alt_cost = call_cost(prices[alt], None, int(inp), int(out), int(cr), int(cw)) \
            if alt else float(cost or 0)
        r_in, _, r_cr, _ = rates(price, version)
        a[0] += int(n)
        a[1] += float(cost or 0)
        a[2] += float(cost or 0) - alt_cost
        a[3] += int(cr or 0)
        a[4] += int(inp or 0) + int(cr or 0)
        a[5] += repeated.get((tag, vm, model, version), 0) * max(r_in - r_cr, 0) / 1e6
    table = Table("Premium-tier spend by workflow tag: projected savings (catalog prices)",
                  ["workflow_tag", "virtual_model", "model", "calls", "cost_usd",
                   "standard_model", "routing_saving_usd", "observed_cache_read_pct",
                   "caching_saving_usd"])
    keys = sorted(agg, key=lambda k: (-agg[k][1], str(k[0]), k[1], k[2]))
    for tag, vm, model in keys:
        a = agg[(tag, vm, model)]
        table.rows.append([tag, vm, model, int(a[0]), _r(a[1]),
                           standard_alternative(ctx, vm, model), _r(a[2]),
                           _r(100 * a[3] / a[4], 2) if a[4] else 0.0, _r(a[5])])
    drifts = version_drifts(groups)
    alerting = {(d.virtual_model, d.to_version) for d in
                drift_alerts(drifts, st.tokenizer_drift_pct, st.tokenizer_drift_min_prompts)}
    drift = Table("Tokenizer drift: input tokens per call by model version on identical prompts",
                  ["virtual_model", "from_version", "to_version", "common_prompts",
                   "input_tokens_before", "input_tokens_after", "drift_pct", "alert"])
    actions: list[Action] = []
    for d in drifts:
        over = (d.virtual_model, d.to_version) in alerting
        drift.rows.append([d.virtual_model, d.from_version, d.to_version, d.common_prompts,
                           _r(d.tokens_before, 1), _r(d.tokens_after, 1), _r(d.drift_pct, 2),
                           over])
        if over:
            vm_cfg = ctx.config.virtual_models.get(d.virtual_model) if ctx.config else None
            actions.append(Action("yaml", d.virtual_model,
                                  rollback_diff(d, vm_cfg.model_dump() if vm_cfg else None)))
    total_premium = sum(a[1] for a in agg.values())
    routing = sum(a[2] for a in agg.values())
    caching = sum(a[5] for a in agg.values())
    if routing > 0 and keys:
        tag, vm, model = keys[0]
        actions.insert(0, Action("review", f"{tag or '(no tag)'} on {vm}",
                                 f"`{tag or '(no tag)'}` spends ${agg[keys[0]][1]:,.2f} on "
                                 f"{model}; {standard_alternative(ctx, vm, model)} would cost "
                                 f"${agg[keys[0]][2]:,.2f} less: check its accuracy on the "
                                 "standard tier, then route it there (a YAML diff)"))
    return Panel(4, "Premium-model review queue", "Which premium-model usage is justified, and "
                 "what does the same prompt cost on each model version?", "engineering",
                 figures={"premium_cost_usd": _r(total_premium),
                          "routing_saving_usd": _r(routing), "caching_saving_usd": _r(caching),
                          "max_drift_pct": _r(max((d.drift_pct for d in drifts), default=0.0),
                                              2),
                          "drift_threshold_pct": st.tokenizer_drift_pct},
                 tables=[table, drift], actions=actions)


# -- 5. safety review ----------------------------------------------------------------------------


def risk_class(hook: str, detector: str, action: str) -> str:
    """`risk` when something sensitive got through (allowed anything; a secret merely flagged;
    an injection flagged in tool output, i.e. reaching the model), else `noise` (handled:
    redacted or blocked, or a finding recorded for tuning)."""
    if action == "allowed":
        return "risk"
    if detector == "secrets" and action == "flagged":
        return "risk"
    if detector == "prompt_injection" and action == "flagged" and hook == "tool-output":
        return "risk"
    return "noise"


async def safety(ctx: _Ctx) -> Panel:
    rows = await q.guardrail_matrix(ctx.store, ctx.f)
    order = {h: i for i, h in enumerate(HOOK_ORDER)}
    rows.sort(key=lambda r: (order.get(r[0], 9), r[1], r[2]))
    table = Table("Guardrail events by hook x detector x action",
                  ["hook", "detector", "action", "events", "sessions", "class", "attention"])
    actions: list[Action] = []
    allowed_secrets = 0
    for hook, detector, action, n, sessions in rows:
        cls = risk_class(hook, detector, action)
        attention = ""
        if detector == "secrets" and action == "allowed":
            allowed_secrets += int(n)
            attention = "ACT NOW: a secret reached downstream — rotate it, switch secrets to mutate"
        table.rows.append([hook, detector, action, int(n), int(sessions), cls, attention])
    if allowed_secrets:
        actions.append(Action("yaml", "guardrails secrets",
                              "# runbook secret_leaked: rotate the credential, then redact "
                              "secrets instead of letting them through\n detector: secrets\n"
                              "-mode: validate\n+mode: mutate"))
    risk = sum(r[3] for r in table.rows if r[5] == "risk")
    total = sum(r[3] for r in table.rows)
    return Panel(5, "Safety review", "Which guardrail events are noise, and which are real risk?",
                 "engineering",
                 figures={"events": total, "risk_events": risk, "noise_events": total - risk,
                          "allowed_secrets": allowed_secrets},
                 tables=[table], actions=actions)


# -- 6. outcome join + leverage ------------------------------------------------------------------


async def session_inputs(ctx: _Ctx) -> list[dict[str, Any]]:
    """The sessions of the range that can score above 0 (those with an outcome; see
    `controlroom.leverage`) and those rolled on the fly, with the score's inputs, `score`,
    `workflow_tag`, `team`, `outcome_events`. Every session's tag and cost are counted in
    `ctx.cache["per_tag"]` ({tag or '': [sessions, cost]}).

    The three reads (session rollups, guardrail blocks, outcomes) are independent and run at
    once on their own connections; then the tags' baselines as far as the loop flag needs
    them (`_Ctx.flag_baselines`); the score is `ai_leverage_score`, once per session, over
    inputs counted in one pass over the outcome rows."""
    f, st = ctx.f, ctx.settings
    summary, blocks, outcome_rows = await asyncio.gather(
        rollups.session_summary(ctx.store, f), q.session_guardrail_blocks(ctx.store, f),
        q.outcomes_in_range(ctx.store, f))
    ctx.cache["per_tag"] = summary.per_tag
    per = summary.rows  # sessions with an outcome, and those with calls rolled on the fly
    outs: dict[str, list[tuple[Any, ...]]] = defaultdict(list)
    # per session: [incidents_resolved, prs_merged, tickets_closed, evals, sum of pass rates]
    counts: dict[str, list[Any]] = {}
    slot = {"incident_resolved": 0, "pr_merged": 1, "ticket_closed": 2}
    for row in outcome_rows:
        sid, kind = row[1], row[2]
        if sid not in per:
            continue  # a session without calls in the range: nothing to join it to
        outs[sid].append(row)
        c = counts.get(sid)
        if c is None:
            c = counts[sid] = [0, 0, 0, 0, 0.0]
        i = slot.get(kind)
        if i is not None:
            c[i] += 1
        elif kind == "eval" and row[3] is not None:
            c[3] += 1
            c[4] += float(row[3])
    window = st.loop_window_seconds
    rates: dict[str, float] = {}
    peak: dict[str | None, float] = {}
    for sid, v in per.items():
        rate = rates[sid] = v[4] * 3600.0 / max(v[9] - v[8], window)
        tag = v[0] or None
        if rate > peak.get(tag, -1.0):
            peak[tag] = rate
    bases = await ctx.flag_baselines(peak)
    empty: list[tuple[Any, ...]] = []
    sessions = []
    for sid, (tag, team, _p, calls, _tk, cost, inp, cr, _first, last, bh, rh, rt) in \
            per.items():
        s = {
            "session_id": sid, "workflow_tag": tag or None, "team": team, "calls": calls,
            "budget_limit_hits": bh, "rate_limit_hits": rh,
            "guardrail_blocks": blocks.get(sid, 0),
            "retry_token_count": rt,
            "unused_context_ratio": inp / (inp + cr) if calls >= 2 and inp + cr else 0.0,
            "tokens_per_hr": rates[sid],
            "p95_baseline": bases[tag or None],
            "total_cost_usd": cost,
            "last_ts": last,
            "outcome_events": outs.get(sid, empty),
        }
        c = counts.get(sid)
        if c is not None:
            s.update(incidents_resolved=c[0], prs_merged=c[1], tickets_closed=c[2], evals=c[3],
                     eval_pass_rate=c[4] / c[3] if c[3] else 0)
        s["score"] = ai_leverage_score(s)
        sessions.append(s)
    return sessions


async def outcome_join(ctx: _Ctx) -> Panel:
    sessions = await session_inputs(ctx)
    # per kind: event ids, session ids, cost of those sessions; with the sessions that have an
    # outcome, their event ids and cost, in one pass (one session's kinds each count it once)
    kinds: dict[str, list[Any]] = {}
    with_outcome: list[dict[str, Any]] = []
    events: set[str] = set()
    joined_cost = 0.0
    for s in sessions:
        evs = s["outcome_events"]
        if not evs:
            continue
        with_outcome.append(s)
        sid, cost = s["session_id"], s["total_cost_usd"]
        joined_cost += cost
        counted: set[str] = set()
        for x in evs:
            events.add(x[0])
            k = kinds.get(x[2])
            if k is None:
                k = kinds[x[2]] = [set(), set(), 0.0]
            k[0].add(x[0])
            if x[2] not in counted:
                counted.add(x[2])
                k[1].add(sid)
                k[2] += cost
    per_kind = Table("Outcomes joined to sessions by session id: cost per outcome",
                     ["kind", "outcomes", "sessions", "sessions_cost_usd",
                      "cost_per_outcome_usd"])
    for kind in sorted(kinds):
        ev, ss, cost = kinds[kind]
        per_kind.rows.append([kind, len(ev), len(ss), _r(cost), _r(cost / len(ev))])
    per_tag: dict[str, list[Any]] = ctx.cache["per_tag"]
    total_cost = sum(v[1] for v in per_tag.values())
    n_sessions = sum(v[0] for v in per_tag.values())
    recent = heapq.nsmallest(50, with_outcome, key=lambda s: (-s["last_ts"], s["session_id"]))
    joins = Table("Sessions → outcomes (most recent 50)",
                  ["session_id", "workflow_tag", "team", "cost_usd", "outcomes", "score"])
    for s in recent:
        names = ", ".join(sorted({f"{x[2]} {x[0]}" for x in s["outcome_events"]}))
        joins.rows.append([s["session_id"], s["workflow_tag"], s["team"],
                           _r(s["total_cost_usd"]), names[:500], _r(s["score"], 2)])
    lev = Table("Leverage by workflow tag (top 10 patterns; mean of per-session scores)",
                ["workflow_tag", "mean_score", "sessions", "cost_usd", "outcomes"])
    top = tag_leverage(per_tag, sessions, 10)
    for t in top:
        lev.rows.append([t.workflow_tag, _r(t.mean_score, 2), t.sessions, _r(t.cost_usd),
                         t.outcomes])
    chart = Chart("Mean leverage score by workflow tag", "bar", "score (0-100)",
                  [Series("leverage", [(t.workflow_tag, _r(t.mean_score, 2)) for t in top])])
    actions = []
    if top:
        actions.append(Action("review", top[-1].workflow_tag,
                              f"`{top[-1].workflow_tag}` has the lowest leverage of the top "
                              f"patterns ({top[-1].mean_score:.1f}): redesign, new guardrails, "
                              "or stop paying for it"))
    return Panel(6, "Outcome join", "Did the usage ship anything, and at what cost per outcome?",
                 "executive",
                 figures={"sessions": n_sessions, "sessions_with_outcome": len(with_outcome),
                          "outcomes": len(events),
                          "cost_per_outcome_usd": _r(joined_cost / len(events)) if events
                          else None,
                          "spend_with_outcome_pct": _r(100 * joined_cost / total_cost, 2)
                          if total_cost else 0.0},
                 tables=[per_kind, lev, joins], charts=[chart], actions=actions)


def tag_leverage(per_tag: dict[str, list[Any]], scored: list[dict[str, Any]],
                 top: int) -> list[TagLeverage]:
    """`leverage.by_workflow_tag` over every session of the range, where only `scored` sessions
    were scored: the others have no outcome and score exactly 0, so they add to the count and
    the cost of their tag and nothing to its score."""
    acc: dict[str, list[Any]] = {(t or "(untagged)"): [0.0, n, cost, 0]
                                 for t, (n, cost) in per_tag.items()}
    for s in scored:
        a = acc.setdefault(s["workflow_tag"] or "(untagged)", [0.0, 0, 0.0, 0])
        a[0] += s["score"]
        a[3] += int(s.get("incidents_resolved", 0) + s.get("prs_merged", 0)
                    + s.get("tickets_closed", 0) + s.get("evals", 0))
    rows = [TagLeverage(t, a[0] / a[1], int(a[1]), a[2], a[3]) for t, a in acc.items() if a[1]]
    rows.sort(key=lambda r: (-r.mean_score, r.workflow_tag))
    return rows[:top]


def panel_numbers(spec: Sequence[int] | None) -> list[int]:
    return sorted(set(spec or PANELS))
