"""What the example agents share: connecting to the `governor up` embedded default."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from governor.sdk.client import GovernorClient

CONFIG_DIR = Path(os.environ.get("GOVERNOR_CONFIG_DIR", Path(__file__).parents[1] / "config"))
API_KEY = os.environ.get("GOVERNOR_API_KEY", "gk-dev-developer")


async def connect() -> GovernorClient:
    """TEMPORAL_ADDRESS (default 127.0.0.1:7233) is where `governor up` runs Temporal."""
    try:
        return await GovernorClient.connect(config_dir=CONFIG_DIR)
    except Exception as exc:
        addr = os.environ.get("TEMPORAL_ADDRESS", "127.0.0.1:7233")
        sys.exit(
            f"cannot reach Temporal at {addr} ({type(exc).__name__}: {exc}); "
            "start `governor up` in another terminal first"
        )


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
