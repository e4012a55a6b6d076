"""Guardrails over a streamed completion: catch a secret even when it arrives split in chunks.

The guard holds back the last `HOLD` characters (longer than any multi-word pattern), extended
back to the start of an unfinished token (a key is one token however long) and to the start of
any match that could still grow (an unterminated private key block). Everything before that
point can no longer be part of a new match, so it is scanned once and emitted. Scans run on a
small window (held text plus a little emitted context), every `STEP` characters, never over the
whole accumulated stream; while nothing can be emitted, the next scan waits until the held text
has doubled (linear cost on a stream that is one long token).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from policies.guardrails.config import GuardrailsConfig
from policies.guardrails.engine import Finding, redact, scan
from policies.guardrails.evaluate import _RANK, GuardrailEvent, decide, detectors_of

HOLD = 96
STEP = 32
CONTEXT = 64
MAX_HOLD = 16384


@dataclass(frozen=True, slots=True)
class StreamVerdict:
    action: str  # allowed | flagged | redacted | blocked, for the stream so far
    text: str  # what may be sent to the client now (may be empty)
    events: list[GuardrailEvent] = field(default_factory=list)  # new since the last verdict
    blocking_event: GuardrailEvent | None = None
    # The model's text `text` was made of (the characters released by this verdict) and the
    # redactions applied to it, `(start, end, type)` in `raw`, in order, non-overlapping: a
    # caller that sends one stream's text in several parts (Anthropic text blocks) writes each
    # redaction back part by part (`policies.request_text.redacted_pieces`).
    raw: str = ""
    spans: tuple[tuple[int, int, str], ...] = ()


class StreamGuard:
    """Feed model deltas in, send `verdict.text` out; stop the stream when a verdict blocks."""

    def __init__(
        self, config: GuardrailsConfig, hook: str, metadata: dict[str, str], salt: bytes
    ) -> None:
        self._hook = hook
        self._rules = config.rules_for(hook, metadata)
        self._detectors = detectors_of(self._rules)
        self._salt = salt
        self._buf = ""
        self._ctx = ""
        self._next_scan = HOLD + STEP
        self._action = "allowed"
        self._blocking: GuardrailEvent | None = None

    @property
    def blocked(self) -> bool:
        return self._blocking is not None

    def feed(self, delta: str) -> StreamVerdict:
        if self._blocking is not None:
            return StreamVerdict("blocked", "", [], self._blocking)
        if not self._rules:
            return StreamVerdict("allowed", delta, raw=delta)
        self._buf += delta
        if len(self._buf) < self._next_scan:
            return StreamVerdict(self._action, "")
        return self._emit(final=False)

    def finish(self) -> StreamVerdict:
        """Flush what is held back, scanning it as complete text."""
        if self._blocking is not None:
            return StreamVerdict("blocked", "", [], self._blocking)
        if not self._rules or not self._buf:
            return StreamVerdict(self._action, "")
        return self._emit(final=True)

    def _cut(self, window: str, base: int, findings: list[Finding]) -> int:
        n = len(window)
        cut = n - HOLD
        forced = n - base > MAX_HOLD
        if not forced:
            while cut > base and not window[cut - 1].isspace() and not window[cut].isspace():
                cut -= 1
        for f in findings:
            if (f.end > cut or not _complete(f, window)) and not (forced and f.start < cut):
                cut = min(cut, f.start)
        return max(cut, base)

    def _emit(self, final: bool) -> StreamVerdict:
        window = self._ctx + self._buf
        base = len(self._ctx)
        findings = [f for f in scan(window, self._detectors, self._salt) if f.start >= base]
        cut = len(window) if final else self._cut(window, base, findings)
        done = [f for f in findings if f.end <= cut]
        pairs, action = decide(self._hook, self._rules, done)
        events = [e for _, e in pairs]
        if _RANK[action] > _RANK[self._action]:
            self._action = action
        if action == "blocked":
            self._blocking = next(e for e in events if e.action == "blocked")
            self._buf = ""
            return StreamVerdict("blocked", "", events, self._blocking)
        redacted = [
            Finding(f.detector, f.type, f.start - base, f.end - base, f.fingerprint)
            for f, e in pairs
            if e.action == "redacted"
        ]
        raw = window[base:cut]
        out = redact(raw, redacted)
        spans: list[tuple[int, int, str]] = []
        for f in sorted(redacted, key=lambda f: f.start):
            if not spans or f.start >= spans[-1][1]:  # as `redact` applies them
                spans.append((f.start, f.end, f.type))
        self._ctx = window[max(0, cut - CONTEXT) : cut]
        self._buf = window[cut:]
        if cut == base:
            # Nothing could be emitted (one long unfinished token): rescan after the held text
            # has doubled, not every STEP characters, so a stream of `sk-sk-…` or `aaaa…` costs a
            # constant number of scans per character instead of one scan per STEP (it took
            # ~80 ms per KB). The MAX_HOLD cut still comes at MAX_HOLD.
            n = len(self._buf)
            self._next_scan = min(max(n + STEP, 2 * n), MAX_HOLD + 1)
        else:
            self._next_scan = HOLD + STEP
        return StreamVerdict(self._action, out, events, raw=raw, spans=tuple(spans))


def _complete(f: Finding, window: str) -> bool:
    """A private key block is final only once its END line has arrived."""
    if f.type not in ("private_key", "gcp_service_account_key"):
        return True
    return "-----END" in window[f.start : f.end]
