"""Guardrails: pure detection and redaction of secrets, PII and prompt injection at four hooks.

`scan`/`redact` are the detectors; `evaluate` applies a `gateway-guardrails-config` at one hook;
`StreamGuard` does the same over a streamed completion. Classifier detectors (an HTTP service,
an LLM judge) are configured in the same document: `policies.guardrails.classifiers`.
"""

from policies.guardrails.config import GuardrailRule, GuardrailsConfig, load_guardrails
from policies.guardrails.engine import DETECTORS, Finding, fingerprint, redact, scan
from policies.guardrails.evaluate import GuardrailEvent, HookResult, evaluate
from policies.guardrails.stream import StreamGuard, StreamVerdict

__all__ = [
    "DETECTORS",
    "Finding",
    "GuardrailEvent",
    "GuardrailRule",
    "GuardrailsConfig",
    "HookResult",
    "StreamGuard",
    "StreamVerdict",
    "evaluate",
    "fingerprint",
    "load_guardrails",
    "redact",
    "scan",
]
