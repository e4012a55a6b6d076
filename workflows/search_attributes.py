"""The search attributes sessions are listed by, from Temporal's UI/CLI as well as Governor's."""

from __future__ import annotations

from temporalio.common import SearchAttributeKey

PROJECT = SearchAttributeKey.for_keyword("GovernorProject")
TEAM = SearchAttributeKey.for_keyword("GovernorTeam")
WORKFLOW_TAG = SearchAttributeKey.for_keyword("GovernorWorkflowTag")
USER = SearchAttributeKey.for_keyword("GovernorUser")
STATUS = SearchAttributeKey.for_keyword("GovernorStatus")

ALL_KEYS = (PROJECT, TEAM, WORKFLOW_TAG, USER, STATUS)


def dev_server_args() -> list[str]:
    """`temporal server start-dev` arguments registering every Governor search attribute."""
    args: list[str] = []
    for k in ALL_KEYS:
        args += ["--search-attribute", f"{k.name}=Keyword"]
    return args
