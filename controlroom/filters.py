"""The control room's filters from a request's query: time range, team, project, workflow tag.

The one parser of every surface: the web page (`/control-room`), the JSON route
(`GET /gateway/control-room/panels`) and `governor report` (which sends the same names), so a
query means the same range and panels everywhere.

Pure: `now` is passed in. Every value a caller sends is bounded and checked here, so a bad
filter is a `FilterError` (a 400 page, a 400 JSON refusal or a CLI usage error), never an
exception deeper down.

Query parameters (each at most once):
- `until`: a duration back from now (`30m`, `24h`, `7d`, `2w`), an ISO 8601 date/time
  (`2026-11-01`, `2026-11-01T12:00`, `2026-11-01T12:00:00+01:00`; no zone = UTC) or unix
  seconds (`1764460800`); default now; at most a day in the future.
- `since`: the same forms, a duration counted back from `until` (`since=7d&until=2026-11-20`
  is the week before 20 November); default `7d`. The range is at most 366 days, after 2000.
- `team`, `project`, `workflow_tag` (alias `tag`): exact values, 1-128 printable characters.
- `panel` (alias `panels`): panel numbers 1-6, comma-separated (all six when absent).
- `view`: `all` (default), `executive`, `oncall` or `engineering` (the seed's metric layers).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal, Protocol, TypeVar

from controlroom.model import Filters
from policies.config.models import window_seconds

DEFAULT_SINCE = "7d"
MAX_RANGE_S = 366 * 86400  # one year and a day: longer ranges are a report, not a page
MAX_TEXT = 128
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC).timestamp()
PANEL_NUMBERS = (1, 2, 3, 4, 5, 6)
View = Literal["all", "executive", "oncall", "engineering"]
VIEWS: tuple[View, ...] = ("all", "executive", "oncall", "engineering")
PARAMS = ("since", "until", "team", "project", "workflow_tag", "panel", "view")
ALIASES = {"tag": "workflow_tag", "panels": "panel"}  # the JSON route's first names
ACCEPTED = (*PARAMS, *ALIASES)


class HasLayer(Protocol):
    @property
    def layer(self) -> str: ...


class FilterError(ValueError):
    """A filter value the control room cannot use; the message says which and why."""


@dataclass(frozen=True)
class PageQuery:
    """What one control-room request asks for: the panels' `Filters`, which panels, which
    layer view, and the raw texts to show back in the filter form."""

    filters: Filters
    panels: list[int] | None
    view: View
    form: dict[str, str]


def parse_time(text: str, now: float, name: str) -> float:
    """Unix seconds of a duration back from `now`, unix seconds, or an ISO 8601 date/time (UTC
    when no zone)."""
    t = text.strip()
    if not t or len(t) > 40:
        raise FilterError(f"`{name}` must be a duration like 7d or an ISO date; got {len(t)} chars")
    if t[-1] in "smhdw" and t[:-1].strip().isdigit():
        try:
            return now - window_seconds(t)
        except ValueError as exc:
            raise FilterError(f"`{name}`: {exc}") from None
    if t.replace(".", "", 1).isdigit() and t.isascii() and len(t) >= 9:
        return float(t)  # unix seconds (an ISO date has dashes; a year alone is 4 digits)
    try:
        dt = datetime.fromisoformat(t)
    except ValueError:
        raise FilterError(
            f"`{name}` must be a duration (30m, 24h, 7d, 2w) or an ISO 8601 date/time "
            "(2026-11-01 or 2026-11-01T12:00Z)"
        ) from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


def _text(value: str, name: str) -> str | None:
    v = value.strip()
    if not v:
        return None
    if len(v) > MAX_TEXT:
        raise FilterError(f"`{name}` must be at most {MAX_TEXT} characters")
    if not v.isprintable():
        raise FilterError(f"`{name}` must not contain control characters")
    return v


def canonical(query: Mapping[str, str]) -> dict[str, str]:
    """`query` under the canonical names (`tag` -> `workflow_tag`, `panels` -> `panel`).
    FilterError for an unknown name or a name given under both spellings."""
    unknown = sorted(set(query) - set(ACCEPTED))
    if unknown:
        raise FilterError(f"unknown filter; use {', '.join(PARAMS)}")
    out = {k: v for k, v in query.items() if k in PARAMS}
    for alias, name in ALIASES.items():
        if alias in query:
            if name in query:
                raise FilterError(f"give `{name}` or `{alias}`, not both")
            out[name] = query[alias]
    return out


def parse_panels(text: str) -> list[int] | None:
    """Panel numbers from `1`, `1,3` (sorted, once each); None (all six) when empty."""
    t = text.strip()
    if not t:
        return None
    parts = t.split(",")
    if len(parts) > 6 or not all(x.strip() in {str(n) for n in PANEL_NUMBERS} for x in parts):
        raise FilterError("`panel` must be panel numbers from 1 to 6, comma-separated")
    return sorted({int(x) for x in parts})


def parse_page_query(query: Mapping[str, str], now: float) -> PageQuery:
    """`PageQuery` from query parameters already split into one value each. Raises
    `FilterError` with a sentence a person can act on (unknown names included)."""
    query = canonical(query)
    since_text = query.get("since", "").strip() or DEFAULT_SINCE
    until_text = query.get("until", "").strip()
    until = parse_time(until_text, now, "until") if until_text else now
    since = parse_time(since_text, until, "since")  # a duration counts back from `until`
    if since < EARLIEST or until < EARLIEST:
        raise FilterError("the time range must start after 2000-01-01")
    if until > now + 86400:
        raise FilterError("`until` must not be more than a day in the future")
    if since >= until:
        raise FilterError("`since` must be before `until`")
    if until - since > MAX_RANGE_S:
        raise FilterError("the time range must be at most 366 days")
    p = query.get("panel", "").strip()
    panels = parse_panels(p)
    view = query.get("view", "").strip() or "all"
    if view not in VIEWS:
        raise FilterError(f"`view` must be one of {', '.join(VIEWS)}")
    filters = Filters(
        since=since,
        until=until,
        team=_text(query.get("team", ""), "team"),
        project=_text(query.get("project", ""), "project"),
        workflow_tag=_text(query.get("workflow_tag", ""), "workflow_tag"),
    )
    form = {
        "since": since_text,
        "until": until_text,
        "team": filters.team or "",
        "project": filters.project or "",
        "workflow_tag": filters.workflow_tag or "",
        "panel": ",".join(str(n) for n in panels) if panels else "",
        "view": view,
    }
    return PageQuery(filters=filters, panels=panels, view=view, form=form)  # type: ignore[arg-type]


L = TypeVar("L", bound=HasLayer)


def in_view(panels: Sequence[L], view: str) -> list[L]:
    """The panels of one metric layer (`all`: every panel), so an executive view carries no
    on-call panel and the reverse."""
    return list(panels) if view == "all" else [p for p in panels if p.layer == view]
