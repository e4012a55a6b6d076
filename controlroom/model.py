"""What a control-room panel is, independent of how it is computed or drawn.

Every surface (the web page at `/control-room`, `governor report` as table, JSON or CSV) renders
these same values, so the page and the report cannot disagree. Values are plain JSON types.

Layers keep the seed's three metric audiences apart: `executive` (spend, adoption, outcomes;
no retry counts), `oncall` (live sessions, kills, breakers; no eval rates), `engineering`
(waste, drift, guardrail detail).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Layer = Literal["executive", "oncall", "engineering"]
Cell = str | int | float | bool | None


@dataclass(frozen=True)
class Filters:
    """Which calls a panel reads: a time range (unix seconds, [since, until)) and exact matches."""

    since: float
    until: float
    team: str | None = None
    project: str | None = None
    workflow_tag: str | None = None


@dataclass
class Table:
    """A table: `columns` names, `rows` of cells in column order."""

    title: str
    columns: list[str]
    rows: list[list[Cell]] = field(default_factory=list)


@dataclass
class Series:
    """One named line or bar group: points are (x, y); x is a label or a unix time."""

    name: str
    points: list[tuple[str | float, float]] = field(default_factory=list)


@dataclass
class Chart:
    """A chart drawn server-side as SVG: `kind` bar (x labels) or line (x unix times, or
    labels such as days drawn evenly in order)."""

    title: str
    kind: Literal["bar", "line"]
    unit: str
    series: list[Series] = field(default_factory=list)


@dataclass
class Action:
    """What the panel suggests doing; `kind` names a page action (e.g. `kill_session`) or `yaml`
    (a config diff to apply), `target` what it applies to, `detail` the text or diff."""

    kind: str
    target: str
    detail: str


@dataclass
class Panel:
    """One of the seed's six panels: its number, the question it answers, its audience layer,
    headline figures, tables, charts and suggested actions."""

    number: int
    title: str
    question: str
    layer: Layer
    figures: dict[str, Cell] = field(default_factory=dict)
    tables: list[Table] = field(default_factory=list)
    charts: list[Chart] = field(default_factory=list)
    actions: list[Action] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)
