"""`when:` / `scope:` selectors: metadata under any header spelling, and subjects."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from policies.config.models import MetadataMatch
from policies.identity import Identity
from policies.matching import matches


def ident(**kw: str | None) -> Identity:
    base: dict[str, str | None] = {
        "key_id": "k1",
        "user": "u_ada",
        "team": "search",
        "role": "developer",
        "subject_type": "user",
        "project": "platform-search",
    }
    base.update(kw)
    return Identity(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "header",
    ["X-TFY-Environment", "X-Governor-Environment", "x-tfy-environment", "environment"],
)
def test_every_spelling_of_a_metadata_header_matches_the_same_field(header: str) -> None:
    sel = MetadataMatch(metadata={header: "production"})
    assert matches(sel, ident(environment="production"))
    assert not matches(sel, ident(environment="staging"))
    assert not matches(sel, ident())


@pytest.mark.parametrize(
    ("header", "field"),
    [
        ("X-TFY-Project", "project"),
        ("X-Governor-Project", "project"),
        ("X-TFY-Team", "team"),
        ("X-Governor-User-ID", "user"),
        ("X-TFY-User-ID", "user"),
        ("X-TFY-Session-ID", "session_id"),
        ("X-Governor-Workflow-Tag", "workflow_tag"),
        ("X-TFY-Workflow-Tag", "workflow_tag"),
        ("X-Governor-Cost-Center", "cost_center"),
    ],
)
def test_header_names_map_to_identity_fields(header: str, field: str) -> None:
    sel = MetadataMatch(metadata={header: "wanted"})
    assert sel.metadata == {field: "wanted"}
    assert matches(sel, ident(**{field: "wanted"}))
    assert not matches(sel, ident(**{field: "other"}))


def test_empty_selector_matches_everyone() -> None:
    assert matches(MetadataMatch(), ident())


def test_every_listed_value_must_match() -> None:
    sel = MetadataMatch(metadata={"X-TFY-Project": "platform-search", "X-TFY-Team": "search"})
    assert matches(sel, ident())
    assert not matches(sel, ident(team="ads"))


def test_subjects_type_distinguishes_users_from_service_accounts() -> None:
    users = MetadataMatch(subjects={"type": "user"})
    services = MetadataMatch(subjects={"type": "service"})
    person = ident()
    robot = ident(role="service", subject_type="service")
    assert matches(users, person) and not matches(users, robot)
    assert matches(services, robot) and not matches(services, person)


def test_subjects_user_team_and_role() -> None:
    assert matches(MetadataMatch(subjects={"user": "u_ada"}), ident())
    assert not matches(MetadataMatch(subjects={"team": "ads"}), ident())
    assert matches(MetadataMatch(subjects={"role": "oncall"}), ident(role="oncall"))


def test_unknown_metadata_header_is_rejected_with_the_accepted_names() -> None:
    with pytest.raises(ValidationError, match="X-Governor-Project"):
        MetadataMatch(metadata={"X-TFY-Colour": "blue"})


def test_unknown_subject_field_and_type_are_rejected() -> None:
    with pytest.raises(ValidationError, match="unknown subject field"):
        MetadataMatch(subjects={"group": "x"})
    with pytest.raises(ValidationError, match="'user' or 'service'"):
        MetadataMatch(subjects={"type": "robot"})
