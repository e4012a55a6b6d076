"""The identity envelope: the key binds, headers only fill in, contradictions are refused."""

from __future__ import annotations

from typing import Any

import pytest

from policies.config.models import ApiKey, Settings
from policies.identity import resolve_identity
from policies.refusals import Refusal

HASH = "sha256:" + "ab" * 32


def key(**kw: Any) -> ApiKey:
    data: dict[str, Any] = {"id": "k1", "hash": HASH, "user": "u_ada", "team": "search"}
    data.update(kw)
    return ApiKey.model_validate(data)


def refusal(k: ApiKey, headers: dict[str, str], settings: Settings | None = None) -> Refusal:
    with pytest.raises(Refusal) as exc:
        resolve_identity(k, headers, settings or Settings())
    return exc.value


# --- what the key binds --------------------------------------------------------------------------


def test_user_team_and_role_come_from_the_key() -> None:
    i = resolve_identity(key(role="oncall"), {}, Settings())
    assert (i.key_id, i.user, i.team, i.role) == ("k1", "u_ada", "search", "oncall")
    assert i.subject_type == "user" and i.is_admin


def test_a_service_key_is_a_service_subject() -> None:
    i = resolve_identity(key(role="service"), {}, Settings())
    assert i.subject_type == "service" and not i.is_admin


@pytest.mark.parametrize("header", ["x-governor-user-id", "x-tfy-user-id"])
def test_a_user_header_that_contradicts_the_key_is_refused(header: str) -> None:
    r = refusal(key(), {header: "u_mallory"})
    assert (r.status, r.code) == (403, "identity_conflict")
    assert "u_mallory" in r.message and "u_ada" in r.message


@pytest.mark.parametrize("header", ["x-governor-team", "x-tfy-team"])
def test_a_team_header_that_contradicts_the_key_is_refused(header: str) -> None:
    r = refusal(key(), {header: "ads"})
    assert (r.status, r.code) == (403, "identity_conflict")


def test_headers_that_agree_with_the_key_are_accepted() -> None:
    i = resolve_identity(key(), {"x-tfy-user-id": "u_ada", "x-governor-team": "search"}, Settings())
    assert (i.user, i.team) == ("u_ada", "search")


@pytest.mark.parametrize("header", ["x-governor-project", "x-tfy-project"])
def test_a_project_header_that_contradicts_a_bound_key_is_refused(header: str) -> None:
    from policies.identity import header_display

    r = refusal(key(project="intern-sandbox"), {header: "platform-search"})
    assert (r.status, r.code) == (403, "identity_conflict")
    assert "intern-sandbox" in r.message
    assert header_display(header) in r.message  # the header named as the caller sent it


def test_a_bound_key_gets_its_project_with_or_without_the_header() -> None:
    k = key(project="intern-sandbox")
    assert resolve_identity(k, {}, Settings()).project == "intern-sandbox"
    same = {"x-governor-project": "intern-sandbox"}
    assert resolve_identity(k, same, Settings()).project == "intern-sandbox"


def test_key_environment_beats_the_environment_header() -> None:
    i = resolve_identity(key(environment="production"), {"x-tfy-environment": "dev"}, Settings())
    assert i.environment == "production"


# --- what headers add ----------------------------------------------------------------------------


def test_project_header_in_either_spelling() -> None:
    assert resolve_identity(key(), {"x-tfy-project": "p1"}, Settings()).project == "p1"
    assert resolve_identity(key(), {"x-governor-project": "p2"}, Settings()).project == "p2"


def test_governor_spelling_wins_over_tfy_spelling() -> None:
    h = {"x-governor-project": "gov", "x-tfy-project": "tfy"}
    assert resolve_identity(key(), h, Settings()).project == "gov"


def test_metadata_headers_fill_the_envelope() -> None:
    h = {
        "x-governor-session-id": "sess-1",
        "x-tfy-workflow-tag": "classify-intent",
        "x-governor-environment": "production",
        "x-tfy-cost-center": "cc-42",
    }
    i = resolve_identity(key(), h, Settings())
    assert (i.session_id, i.workflow_tag, i.environment, i.cost_center) == (
        "sess-1",
        "classify-intent",
        "production",
        "cc-42",
    )
    assert i.get("workflow_tag") == "classify-intent"


def test_header_values_are_trimmed_and_blank_means_absent() -> None:
    i = resolve_identity(
        key(), {"x-governor-session-id": "  s1 ", "x-tfy-project": "  "}, Settings()
    )
    assert i.session_id == "s1"
    assert i.project == "UNTAGGED"


def test_no_session_header_means_no_session() -> None:
    assert resolve_identity(key(), {}, Settings()).session_id is None


# --- project defaults ----------------------------------------------------------------------------


def test_default_project_applies_only_without_a_header() -> None:
    k = key(default_project="platform-search")
    assert resolve_identity(k, {}, Settings()).project == "platform-search"
    assert resolve_identity(k, {"x-tfy-project": "other"}, Settings()).project == "other"


def test_no_project_anywhere_is_untagged() -> None:
    assert resolve_identity(key(), {}, Settings()).project == "UNTAGGED"
    custom = Settings(untagged_project="NO-PROJECT")
    assert resolve_identity(key(), {}, custom).project == "NO-PROJECT"


def test_require_project_header_refuses_a_call_without_one() -> None:
    r = refusal(key(), {}, Settings(require_project_header=True))
    assert (r.status, r.code) == (400, "project_required")
    assert "X-Governor-Project" in r.message


def test_require_project_header_is_satisfied_by_header_default_or_binding() -> None:
    s = Settings(require_project_header=True)
    assert resolve_identity(key(), {"x-tfy-project": "p"}, s).project == "p"
    assert resolve_identity(key(default_project="d"), {}, s).project == "d"
    assert resolve_identity(key(project="b"), {}, s).project == "b"


# --- bad headers ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "header",
    [
        "x-governor-project",
        "x-tfy-session-id",
        "x-governor-workflow-tag",
        "x-tfy-cost-center",
        "x-governor-environment",
    ],
)
def test_an_overlong_metadata_header_is_refused(header: str) -> None:
    from policies.identity import header_display

    r = refusal(key(), {header: "x" * 257})
    assert (r.status, r.code) == (400, "invalid_header")
    assert "256" in r.message
    # Named as the caller sent it: X-TFY-Session-ID, not its X-Governor-Session-ID alias.
    assert header_display(header) in r.message
    other = "X-TFY-" if header.startswith("x-governor-") else "X-Governor-"
    assert other not in r.message


def test_an_overlong_client_session_header_is_named_as_sent() -> None:
    r = refusal(key(), {"x-claude-code-session-id": "x" * 257})
    assert (r.status, r.code) == (400, "invalid_header")
    assert "x-claude-code-session-id" in r.message and "X-Governor" not in r.message


def test_a_header_of_exactly_the_maximum_length_is_accepted() -> None:
    i = resolve_identity(key(), {"x-governor-session-id": "s" * 256}, Settings())
    assert i.session_id == "s" * 256
