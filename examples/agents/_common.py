"""What the example agents share: connecting to the `governor up` embedded default.

An agent needs the gateway's URL (GOVERNOR_URL, default the local `governor up`) and its API key
(GOVERNOR_API_KEY, default the development key); identity and policy come from the gateway.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Coroutine
from typing import Any

from governor.sdk.client import GovernanceRefused, GovernorClient

GATEWAY_URL = os.environ.get("GOVERNOR_URL", "http://127.0.0.1:8080")
API_KEY = os.environ.get("GOVERNOR_API_KEY", "gk-dev-developer")


async def connect() -> GovernorClient:
    try:
        return await GovernorClient.connect(GATEWAY_URL, API_KEY)
    except GovernanceRefused as exc:
        sys.exit(f"{exc.message}; start `governor up` in another terminal first")


def answer_text(response: dict[str, Any]) -> str:
    try:
        return str(response["choices"][0]["message"]["content"])
    except (KeyError, IndexError, TypeError):
        return ""


def run(main: Coroutine[Any, Any, int]) -> None:
    """Run `main` and exit with its code, skipping interpreter teardown: Temporal's Rust
    runtime threads can abort a finalizing interpreter (temporalio/sdk-python#300)."""
    code = asyncio.run(main)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
