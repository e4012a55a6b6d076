"""Reference versions of guardrail checks as first written, for tests that hold faster rewrites
to the same answers."""

from __future__ import annotations

from policies.guardrails import checks


def placeholder_as_written(value: str) -> bool:
    """`checks.placeholder` as written before its word search was split from its shape checks
    (every check is a placeholder, so their order leaves the answer as it is)."""
    low = value.lower()
    if checks.PLACEHOLDER_WORD.search(low) is not None:
        return True
    if low in ("password", "passwd", "secret", "token", "pass", "pwd", "undefined", "true",
               "false"):  # fmt: skip
        return True
    if low.startswith("$") or low.startswith("%") or low.startswith("@"):
        return True
    if not low or not (rest := low.replace(low[0], "")) or not rest.replace(rest[0], ""):
        return True  # at most two distinct characters
    if low.endswith("here"):
        return True
    if low.startswith("<") or ("<" in low and ">" in low) or checks._TEMPLATE.search(low):
        return True
    if low[0] in "/~.\\" or low[1:3] == ":\\":
        m = checks._FILE_PATH.fullmatch(low)
        if m is not None and "." in low.rsplit("/", 1)[-1].rsplit("\\", 1)[-1]:
            return True
    return False
