"""What the ledger keeps of a prompt or completion: a hash and a size, and text only by opt-in.

A sha256 lets an auditor prove two calls sent the same prompt (and the loop detector spot
repeats) without the ledger ever holding secrets or personal data in clear.
"""

from __future__ import annotations

import hashlib
from typing import Any


def hash_text(text: str) -> tuple[str, int]:
    """(sha256 hex digest, UTF-8 byte length) of `text`."""
    data = text.encode("utf-8", "surrogatepass")
    return hashlib.sha256(data).hexdigest(), len(data)


def content_fields(prompt: str, completion: str, *, store_text: bool = False) -> dict[str, Any]:
    """The call-row fields describing prompt and completion, ready to merge into a row."""
    p_hash, p_bytes = hash_text(prompt)
    c_hash, c_bytes = hash_text(completion)
    return {
        "prompt_sha256": p_hash,
        "prompt_bytes": p_bytes,
        "completion_sha256": c_hash,
        "completion_bytes": c_bytes,
        "prompt_text": prompt if store_text else None,
        "completion_text": completion if store_text else None,
    }
