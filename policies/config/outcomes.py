"""Config of the outcome webhooks (`outcome_webhooks:` in `gateway-settings`) and the
payload paths they read. Pure: models and a path walker, no I/O."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

OutcomeKind = Literal["pr_merged", "ticket_closed", "incident_resolved", "eval"]
KINDS: tuple[str, ...] = ("pr_merged", "ticket_closed", "incident_resolved", "eval")

_STEP = re.compile(r"([^.\[\]]+)|\[(\d{1,6})\]|\[([A-Za-z0-9_\-]{1,64})=([^\]]{0,128})\]")


def parse_path(path: str) -> list[tuple[str, Any]]:
    """`a.b[0].c[id=7]` -> [("key","a"), ("key","b"), ("index",0), ("key","c"),
    ("match",("id","7"))]; ValueError for anything else."""
    steps: list[tuple[str, Any]] = []
    pos = 0
    while pos < len(path):
        if path[pos] == "." and steps:
            pos += 1
        m = _STEP.match(path, pos)
        if not m or m.end() == pos:
            raise ValueError(f"path {path!r} is not dotted names, [n] or [key=value]")
        if m.group(1) is not None:
            steps.append(("key", m.group(1)))
        elif m.group(2) is not None:
            steps.append(("index", int(m.group(2))))
        else:
            steps.append(("match", (m.group(3), m.group(4))))
        pos = m.end()
    if not steps or len(steps) > 16:
        raise ValueError(f"path {path!r} must have 1-16 steps")
    return steps


def value_at(doc: Any, path: str) -> Any:
    """The value at `path` in `doc`, or None where any step is missing."""
    node = doc
    for kind, arg in parse_path(path):
        if kind == "key":
            node = node.get(arg) if isinstance(node, dict) else None
        elif kind == "index":
            node = node[arg] if isinstance(node, list) and arg < len(node) else None
        else:
            k, want = arg
            node = next((x for x in node if isinstance(x, dict) and str(x.get(k)) == want),
                        None) if isinstance(node, list) else None
        if node is None:
            return None
    return node


# -- config (gateway-settings `outcome_webhooks:`) -----------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class GitHubWebhook(_Strict):
    """`POST /gateway/outcomes/github`: the secret (in an environment variable, never in the
    file) verifies `X-Hub-Signature-256`."""

    secret_env: str = Field(min_length=1, max_length=128)


class TicketWebhook(_Strict):
    """`POST /gateway/outcomes/webhooks/{name}`: a ticketing tool's webhook (Zendesk, Jira …).

    Paths are dotted (`ticket.custom_fields[id=360001].value`, `issue.fields.customfield_10042`,
    `items[0].id`): a name, `[n]` (list index) or `[key=value]` (the list item whose `key` is
    `value`). `auth`: `hmac-sha256` (hex HMAC of the body in `signature_header`, an optional
    `sha256=` prefix: Jira, GitHub-style), `zendesk` (base64 HMAC of the
    `X-Zendesk-Webhook-Signature-Timestamp` header + body in `X-Zendesk-Webhook-Signature`) or
    `token` (the secret itself in `signature_header`, e.g. `Authorization: Bearer …`).
    """

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")
    kind: OutcomeKind = "ticket_closed"
    auth: Literal["hmac-sha256", "zendesk", "token"] = "hmac-sha256"
    secret_env: str = Field(min_length=1, max_length=128)
    signature_header: str = "x-hub-signature-256"
    session_id_path: str = Field(min_length=1, max_length=256)
    event_id_path: str = Field(min_length=1, max_length=256)
    url_path: str | None = Field(default=None, max_length=256)
    ts_path: str | None = Field(default=None, max_length=256)
    pass_rate_path: str | None = Field(default=None, max_length=256)
    # Only payloads whose value at `when_path` is one of `when_in` are outcomes (e.g.
    # ticket.status in [solved, closed]); others are acknowledged and ignored.
    when_path: str | None = Field(default=None, max_length=256)
    when_in: tuple[str, ...] = ()

    @field_validator("signature_header")
    @classmethod
    def _lower(cls, v: str) -> str:
        v = v.strip().lower()
        if not v or not all(c.isalnum() or c in "-_" for c in v):
            raise ValueError(f"{v!r} is not an HTTP header name")
        return v

    @field_validator("session_id_path", "event_id_path", "url_path", "ts_path",
                     "pass_rate_path", "when_path")
    @classmethod
    def _path(cls, v: str | None) -> str | None:
        if v is not None:
            parse_path(v)
        return v


class OutcomeWebhooks(_Strict):
    github: GitHubWebhook | None = None
    tickets: tuple[TicketWebhook, ...] = Field(default=(), max_length=32)


