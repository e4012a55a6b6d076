"""Filters from the query: durations, ISO dates, bounds, and a clear error for the rest."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from controlroom.filters import FilterError, parse_page_query

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC).timestamp()


def test_defaults_are_the_last_seven_days_all_panels_all_layers():
    q = parse_page_query({}, NOW)
    assert q.filters.since == NOW - 7 * 86400 and q.filters.until == NOW
    assert q.panels is None and q.view == "all"
    assert (q.filters.team, q.filters.project, q.filters.workflow_tag) == (None, None, None)


def test_durations_dates_and_exact_matches():
    q = parse_page_query({"since": "2026-11-01", "until": "2026-11-02T06:00+06:00",
                          "team": " platform ", "project": "UNTAGGED",
                          "workflow_tag": "code-review", "panel": "3", "view": "oncall"}, NOW)
    assert q.filters.since == datetime(2026, 11, 1, tzinfo=UTC).timestamp()
    assert q.filters.until == datetime(2026, 11, 2, 0, 0, tzinfo=UTC).timestamp()
    assert (q.filters.team, q.filters.project, q.filters.workflow_tag) == (
        "platform", "UNTAGGED", "code-review")
    assert q.panels == [3] and q.view == "oncall"
    assert parse_page_query({"since": "90m"}, NOW).filters.since == NOW - 5400
    assert parse_page_query({"since": "1764460800.5"}, NOW).filters.since == 1764460800.5
    q = parse_page_query({"since": "2w", "until": "1d"}, NOW)
    assert (q.filters.since, q.filters.until) == (NOW - 15 * 86400, NOW - 86400)


@pytest.mark.parametrize("query", [
    {"since": "soon"}, {"since": "0h"}, {"since": "1y"}, {"since": "9" * 50 + "d"},
    {"since": "2026-11-30T11:00", "until": "2026-11-30T10:00"}, {"since": "367d"},
    {"until": "2026-12-05"},
    {"since": "1990-01-01"}, {"since": "123456789"}, {"since": "1e9"}, {"panel": "0"},
    {"panel": "x"}, {"view": "ceo"}, {"panel": "1,,2"}, {"panels": "1,7"}, {"panel": "1;2"},
    {"panel": ",".join(["1"] * 7)}, {"tag": "a", "workflow_tag": "b"},
    {"panels": "1", "panel": "2"},
    {"team": "a" * 129}, {"project": "a\nb"}, {"workflow_tag": "\x00"}, {"colour": "red"},
])
def test_bad_values_raise_a_filter_error_with_a_sentence(query):
    with pytest.raises(FilterError) as e:
        parse_page_query(query, NOW)
    assert len(str(e.value)) > 10


def test_since_counts_back_from_until_so_a_duration_is_the_window_before_it():
    until = datetime(2026, 11, 20, tzinfo=UTC).timestamp()
    q = parse_page_query({"since": "7d", "until": "2026-11-20"}, NOW)
    assert (q.filters.since, q.filters.until) == (until - 7 * 86400, until)
    q = parse_page_query({"since": "24h", "until": str(int(until))}, NOW)
    assert (q.filters.since, q.filters.until) == (until - 86400, until)


def test_the_json_routes_names_are_aliases_of_the_pages():
    a = parse_page_query({"tag": "code-review", "panels": "3,1,3"}, NOW)
    b = parse_page_query({"workflow_tag": "code-review", "panel": "1,3"}, NOW)
    assert a == b
    assert a.filters.workflow_tag == "code-review" and a.panels == [1, 3]
    assert a.form["workflow_tag"] == "code-review" and a.form["panel"] == "1,3"


def test_one_view_keeps_only_its_layers_panels():
    from controlroom.filters import in_view
    from tests.controlroom.sample_panels import sample_panels

    panels = sample_panels()
    assert in_view(panels, "all") == panels
    for view in ("executive", "oncall", "engineering"):
        kept = in_view(panels, view)
        assert kept and all(p.layer == view for p in kept)
        assert len(kept) == sum(1 for p in panels if p.layer == view)
