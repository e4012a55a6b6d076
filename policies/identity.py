"""The identity envelope: who is calling and what the call is attributed to.

The key decides user, team and role; headers only add what the key leaves open, and a header that
contradicts the key is refused rather than silently believed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from policies.clients import client_session_header, client_tool
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
    client: str | None = None  # the client tool recognised from its headers (`claude-code`, …)

    def get(self, name: str) -> str | None:
        """Metadata by canonical name (`project`, `workflow_tag` …), for rule matching."""
        return getattr(self, name, None)  # type: ignore[no-any-return]

    @property
    def is_admin(self) -> bool:
        return self.role in ("admin", "oncall")


_SUFFIXES = {
    "project": "Project", "team": "Team", "user-id": "User-ID", "session-id": "Session-ID",
    "workflow-tag": "Workflow-Tag", "environment": "Environment", "cost-center": "Cost-Center",
}  # fmt: skip
_PREFIXES = {"x-governor-": "X-Governor-", "x-tfy-": "X-TFY-"}
# Every identity header's lower-case name -> (its suffix, its name as callers spell it): one
# dict lookup per header on the hot path instead of prefix tests and string building.
_IDENTITY_HEADERS = {
    prefix + suffix: (suffix, shown + spelt)
    for prefix, shown in _PREFIXES.items()
    for suffix, spelt in _SUFFIXES.items()
}


# The same names as ASGI servers deliver them (lower-case bytes): a request's other headers are
# passed over without decoding them.
IDENTITY_HEADER_NAMES = frozenset(name.encode("latin-1") for name in _IDENTITY_HEADERS)


def header_display(name: str) -> str:
    """An identity header's name as the caller spelt it (servers lower-case it on the wire)."""
    hit = _IDENTITY_HEADERS.get(name.lower())
    return hit[1] if hit is not None else name


# The 400s of `check_identity_headers`: logged and counted like a refused key (proxy.errors).
HEADER_REFUSALS = frozenset({"duplicate_identity_header", "conflicting_identity_headers"})


def _short(value: str) -> str:
    return repr(value if len(value) <= 64 else value[:61] + "...")


def check_identity_headers(pairs: Iterable[tuple[str, str]]) -> None:
    """Refuse (400) an identity header sent twice, or a Governor header and its X-TFY alias that
    disagree; the message names the headers as sent. Other headers are not looked at."""
    seen_names: set[str] = set()
    by_suffix: dict[str, tuple[str, str]] = {}
    for name, value in pairs:
        low = name.lower()
        hit = _IDENTITY_HEADERS.get(low)
        if hit is None:
            continue
        suffix, shown = hit
        if low in seen_names:
            raise Refusal(
                400, "duplicate_identity_header",
                f"header {shown} is sent more than once; send it once",
            )  # fmt: skip
        seen_names.add(low)
        prev = by_suffix.get(suffix)
        if prev is not None and prev[1].strip() != value.strip():
            raise Refusal(
                400, "conflicting_identity_headers",
                f"headers {header_display(prev[0])} ({_short(prev[1])}) and {shown} "
                f"({_short(value)}) disagree; send one of them",
            )  # fmt: skip
        by_suffix[suffix] = (low, value)


def _header_named(headers: Mapping[str, str], suffix: str) -> tuple[str | None, str]:
    """(value, the header name it came from as the caller spelt it)."""
    for prefix in ("x-governor-", "x-tfy-"):
        name = prefix + suffix
        v = headers.get(name)
        if v is not None:
            return (v.strip() or None), _IDENTITY_HEADERS[name][1]
    return None, _IDENTITY_HEADERS["x-governor-" + suffix][1]


_MAX_META = 256


def resolve_identity(key: ApiKey, headers: Mapping[str, str], settings: Settings) -> Identity:
    """Combine a key with the request's metadata headers (names lower-cased)."""
    project, project_header = _header_named(headers, "project")
    for suffix, bound in (("user-id", key.user), ("team", key.team)):
        claimed, shown = _header_named(headers, suffix)
        if claimed is not None and claimed != bound:
            raise Refusal(
                403,
                "identity_conflict",
                f"header {shown} says {_short(claimed)} but this API key is "
                f"bound to {bound!r}; drop the header or use a key for {_short(claimed)}",
            )
    if key.project is not None:
        if project is not None and project != key.project:
            raise Refusal(
                403,
                "identity_conflict",
                f"header {project_header} says {_short(project)} but this API key is bound to "
                f"project {key.project!r}; drop the header or use a key for that project",
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
    environment, environment_header = _header_named(headers, "environment")
    if key.environment is not None:
        environment = key.environment
    session_id, session_header = _header_named(headers, "session-id")
    if session_id is None:
        # Coding agents send their own session id; it is the session, bound to this key.
        session_id, client_header = client_session_header(headers, settings.client_session_headers)
        session_header = client_header or session_header
    workflow_tag, tag_header = _header_named(headers, "workflow-tag")
    cost_center, cost_header = _header_named(headers, "cost-center")
    for shown, val in (
        (project_header, project),
        (session_header, session_id),
        (tag_header, workflow_tag),
        (cost_header, cost_center),
        (environment_header, environment),
    ):
        if val is not None and len(val) > _MAX_META:
            # Named as the caller sent it (an X-TFY alias, a coding agent's own header).
            raise Refusal(400, "invalid_header", f"{shown} is longer than {_MAX_META} characters")
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
        client=client_tool(headers),
    )
