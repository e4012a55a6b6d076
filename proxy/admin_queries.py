"""The query parameters of every admin route (`/gateway/…`): one table, checked once by the admin
dispatcher before the route runs (README "Admin queries": known parameters only).

A route taking no parameter refuses any query string with a 400 `invalid_request`, as a route
taking some refuses a name it does not know. A method and path no route serves is not in the
table: the dispatcher answers it 404 (or the route family 405) whatever its query.
"""

from __future__ import annotations

from controlroom.filters import ACCEPTED

ANY = "*"  # one path segment of the caller's: a session id, alert key, override or event id
NONE: frozenset[str] = frozenset()
SESSION_LIST = frozenset({"limit", "status", "project"})
ALERT_LIST = frozenset({"status"})
AUDIT_VERIFY = frozenset({"since"})
AUDIT_SHOW = frozenset({"offset", "limit"})
PANELS = frozenset(ACCEPTED)

# (methods, path segments after /gateway, accepted names); the first match wins.
ROUTES: tuple[tuple[tuple[str, ...], tuple[str, ...], frozenset[str]], ...] = (
    (("GET",), ("sessions",), SESSION_LIST),
    (("POST",), ("sessions",), NONE),
    (("GET",), ("sessions", ANY), NONE),
    (("PUT", "POST"), ("sessions", ANY, "kill"), NONE),
    (("POST",), ("sessions", ANY, "chat"), NONE),
    (("POST",), ("sessions", ANY, "tool"), NONE),
    (("POST",), ("sessions", ANY, "close"), NONE),
    (("GET",), ("sessions", ANY, "status"), NONE),
    (("POST",), ("config", "reload"), NONE),
    (("GET",), ("alerts",), ALERT_LIST),
    (("POST",), ("alerts", "alertmanager"), NONE),
    (("GET", "POST"), ("alerts", "silences"), NONE),
    (("GET",), ("alerts", ANY), NONE),
    (("POST",), ("alerts", ANY, "ack"), NONE),
    (("POST",), ("alerts", ANY, "approve"), NONE),
    (("POST",), ("alerts", ANY, "resolve"), NONE),
    (("GET", "DELETE"), ("overrides",), NONE),
    (("DELETE",), ("overrides", ANY), NONE),
    (("GET",), ("audit", "verify"), AUDIT_VERIFY),
    (("GET",), ("audit", "sessions", ANY), AUDIT_SHOW),
    (("GET",), ("audit", "sessions", ANY, "decisions"), NONE),
    (("GET",), ("audit", "sessions", ANY, "export"), NONE),
    (("POST",), ("audit", "sessions", ANY, "erase"), NONE),
    (("GET",), ("control-room", "panels"), PANELS),
    (("POST",), ("outcomes",), NONE),
    (("POST",), ("outcomes", "github"), NONE),
    (("POST",), ("outcomes", "webhooks", ANY), NONE),
    (("GET",), ("outcomes", ANY), NONE),
)


def accepted_query(method: str, parts: list[str]) -> frozenset[str] | None:
    """The names the route at `method` `/gateway/<parts…>` accepts; None when no route serves
    it. `parts` are the path's segments after `gateway`, unquoted."""
    for methods, pattern, names in ROUTES:
        if (
            method in methods
            and len(pattern) == len(parts)
            and all(p == ANY or p == s for p, s in zip(pattern, parts, strict=True))
        ):
            return names
    return None
