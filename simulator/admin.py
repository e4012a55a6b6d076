"""`/_sim/*` admin endpoints and `GET /v1/models`: runtime faults, request counts, catalog."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
from aiohttp import web

from simulator.errors import anthropic_error, openai_error
from simulator.faults import FaultSpecError, rule_from_json
from simulator.state import STATE_KEY, SimState

JSON = "application/json"
_CATALOG_CREATED = 1_735_689_600  # 2025-01-01: fixed, so the listing is deterministic


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(data), content_type=JSON)


async def add_faults(request: web.Request) -> web.Response:
    """Body: one rule object or a list of them; each applies to `count` requests."""
    state = request.app[STATE_KEY]
    try:
        data = orjson.loads(await request.read())
    except orjson.JSONDecodeError as exc:
        return _json({"error": f"body is not JSON: {exc}"}, 400)
    items = data if isinstance(data, list) else [data]
    try:
        rules = [rule_from_json(item) for item in items]
    except FaultSpecError as exc:
        return _json({"error": str(exc)}, 400)
    for rule in rules:
        if rule.model is not None and rule.model not in state.index:
            return _json({"error": f"unknown model '{rule.model}'"}, 400)
    for rule in rules:
        state.faults.add(rule)
    return _json({"rules": [rule.to_json() for rule in state.faults.rules]})


async def list_faults(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    return _json({"rules": [rule.to_json() for rule in state.faults.rules]})


async def clear_faults(request: web.Request) -> web.Response:
    """Clears every rule, or only those for `?model=`."""
    cleared = request.app[STATE_KEY].faults.clear(request.query.get("model"))
    return _json({"cleared": cleared})


async def get_stats(request: web.Request) -> web.Response:
    return _json(request.app[STATE_KEY].stats())


async def reset_stats(request: web.Request) -> web.Response:
    request.app[STATE_KEY].reset_stats()
    return _json({"reset": True})


async def reset_all(request: web.Request) -> web.Response:
    """Back to a fresh simulator: no rules, no counts, empty prompt cache."""
    state = request.app[STATE_KEY]
    state.faults.clear()
    state.reset_stats()
    state.cache.clear()
    return _json({"reset": True})


def catalog_body(state: SimState) -> bytes:
    """The model list in a shape both SDKs read: OpenAI's list plus Anthropic's fields."""
    created_at = datetime.fromtimestamp(_CATALOG_CREATED, UTC).isoformat().replace("+00:00", "Z")
    data = [
        {
            "id": name,
            "object": "model",
            "created": _CATALOG_CREATED,
            "owned_by": spec.provider,
            "type": "model",
            "display_name": f"{name} (simulated)",
            "created_at": created_at,
            "version": spec.version,
            "tokenizer_factor": spec.tokenizer_factor,
        }
        for name, spec in state.config.models.items()
    ]
    return orjson.dumps(
        {
            "object": "list",
            "data": data,
            "has_more": False,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
        }
    )


def _authorized(request: web.Request) -> bool:
    auth = request.headers.get("Authorization", "")
    if auth.startswith("Bearer ") and auth[7:].strip():
        return True
    return bool(request.headers.get("x-api-key", "").strip())


def _unauthorized(request: web.Request) -> web.Response:
    if "anthropic-version" in request.headers:
        return anthropic_error(401, "authentication_error", "x-api-key header is required")
    return openai_error(
        401, "You didn't provide an API key.", "invalid_request_error", "missing_api_key"
    )


async def list_models(request: web.Request) -> web.Response:
    if not _authorized(request):
        return _unauthorized(request)
    return web.Response(body=request.app[CATALOG_KEY], content_type=JSON)


async def get_model(request: web.Request) -> web.Response:
    if not _authorized(request):
        return _unauthorized(request)
    name = request.match_info["model"]
    for item in orjson.loads(request.app[CATALOG_KEY])["data"]:
        if item["id"] == name or item["version"] == name:
            return _json(item)
    if "anthropic-version" in request.headers:
        return anthropic_error(404, "not_found_error", f"model: {name}")
    return openai_error(
        404, f"The model `{name}` does not exist.", code="model_not_found", param="model"
    )


CATALOG_KEY: web.AppKey[bytes] = web.AppKey("governor_sim_catalog", bytes)
