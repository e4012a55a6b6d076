"""The SDK resolves a session's identity exactly as the proxy does: the key decides."""

from __future__ import annotations

from pathlib import Path

import pytest

from activities.config_source import load_config_dir
from governor.sdk.client import GovernanceRefused, resolve_identity

CONFIG = load_config_dir(Path(__file__).resolve().parents[2] / "examples" / "config", env={})


def test_a_key_bound_project_cannot_be_overridden_by_the_caller() -> None:
    with pytest.raises(GovernanceRefused) as e:
        resolve_identity(CONFIG, "gk-dev-intern", project="platform-search")
    assert e.value.code == "identity_conflict"
    assert resolve_identity(CONFIG, "gk-dev-intern").project == "intern-sandbox"


def test_user_and_team_come_from_the_key_and_metadata_from_the_caller() -> None:
    ident = resolve_identity(CONFIG, "gk-dev-developer", project="p1", workflow_tag="t1",
                             session_id="s1")
    assert (ident.user, ident.team, ident.project, ident.workflow_tag, ident.session_id) == (
        "u_dev", "data-platform", "p1", "t1", "s1")


def test_an_unknown_key_is_refused() -> None:
    with pytest.raises(GovernanceRefused) as e:
        resolve_identity(CONFIG, "nope")
    assert e.value.code == "invalid_api_key"
