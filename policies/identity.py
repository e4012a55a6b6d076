"""The identity envelope: who is calling and what the call is attributed to.

The key decides user, team and role; headers only add what the key leaves open, and a header that
contradicts the key is refused rather than silently believed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from policies.config.models import ApiKey, Settings
from policies.refusals import Refusal


@dataclass(frozen=True, slots=True)
class Identity:
    key_id: str
    user: str
    team: str
    role: str
    subject_type: str
    project: str
    session_id: str | None = None
    workflow_tag: str | None = None
    environment: str | None = None
    cost_center: str | None = None

    def get(self, name: str) -> str | None:
        """Metadata by canonical name (`project`, `workflow_tag` …), for rule matching."""
        return getattr(self, name, None)  # type: ignore[no-any-return]

    @property
    def is_admin(self) -> bool:
        return self.role in ("admin", "oncall")


def _header(headers: Mapping[str, str], suffix: str) -> str | None:
    v = headers.get("x-governor-" + suffix)
    if v is None:
        v = headers.get("x-tfy-" + suffix)
    if v is None:
        return None
    v = v.strip()
    return v or None


_MAX_META = 256


def resolve_identity(key: ApiKey, headers: Mapping[str, str], settings: Settings) -> Identity:
    """Combine a key with the request's metadata headers (names lower-cased)."""
    project = _header(headers, "project")
    for suffix, bound in (("user-id", key.user), ("team", key.team)):
        claimed = _header(headers, suffix)
        if claimed is not None and claimed != bound:
            raise Refusal(
                403,
                "identity_conflict",
                f"header X-Governor-{suffix.title()} says {claimed!r} but this API key is "
                f"bound to {bound!r}; drop the header or use a key for {claimed!r}",
            )
    if key.project is not None:
        if project is not None and project != key.project:
            raise Refusal(
                403,
                "identity_conflict",
                f"this API key is bound to project {key.project!r}; it cannot be used "
                f"for project {project!r}",
            )
        project = key.project
    if project is None:
        if settings.require_project_header and key.default_project is None:
            raise Refusal(
                400,
                "project_required",
                "this gateway requires an X-Governor-Project (or X-TFY-Project) header "
                "so spend can be attributed; add it and retry",
            )
        project = key.default_project or settings.untagged_project
    environment = _header(headers, "environment")
    if key.environment is not None:
        environment = key.environment
    session_id = _header(headers, "session-id")
    workflow_tag = _header(headers, "workflow-tag")
    cost_center = _header(headers, "cost-center")
    for name, val in (
        ("Project", project),
        ("Session-ID", session_id),
        ("Workflow-Tag", workflow_tag),
        ("Cost-Center", cost_center),
        ("Environment", environment),
    ):
        if val is not None and len(val) > _MAX_META:
            raise Refusal(
                400, "invalid_header", f"X-Governor-{name} is longer than {_MAX_META} characters"
            )
    return Identity(
        key_id=key.id,
        user=key.user,
        team=key.team,
        role=key.role,
        subject_type=key.subject_type,
        project=project,
        session_id=session_id,
        workflow_tag=workflow_tag,
        environment=environment,
        cost_center=cost_center,
    )
