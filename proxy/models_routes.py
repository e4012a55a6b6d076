"""`GET /v1/models` and `GET /v1/models/{id}`: the virtual models (and their aliases) in a shape
both official SDKs parse — OpenAI's `Model` (`id`, `object`, `created`, `owned_by`) and
Anthropic's `ModelInfo` (`id`, `type`, `display_name`, `created_at`) in one object."""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote

from activities.gateway import Gateway
from activities.wire.usage import Protocol
from policies.config.models import RoutingConfig
from policies.refusals import Refusal
from proxy.errors import note_refusal, send_refusal
from proxy.http import Scope, Send, header_map, respond_json
from proxy.llm_routes import bearer

_EPOCH_ISO = "1970-01-01T00:00:00Z"


def caller_protocol(headers: dict[str, str]) -> Protocol:
    """Anthropic SDKs always send `anthropic-version`; everything else gets OpenAI errors."""
    return "anthropic" if "anthropic-version" in headers else "openai"


def model_object(model_id: str, vm: RoutingConfig) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": model_id,
        "object": "model",
        "type": "model",
        "created": 0,
        "created_at": _EPOCH_ISO,
        "owned_by": "governor",
        "display_name": vm.description or vm.name,
        "virtual_model": vm.name,
        "targets": [r.target.key for r in vm.rules],
        "fallbacks": [t.key for t in vm.fallbacks],
    }
    if model_id != vm.name:
        out["alias_of"] = vm.name
    return out


async def handle_models(gw: Gateway, scope: Scope, send: Send) -> None:
    headers = header_map(scope)
    protocol = caller_protocol(headers)
    try:
        gw.authenticate(bearer(headers))
        path: str = scope["path"]
        cfg = gw.config
        if path == "/v1/models":
            data = [model_object(n, vm) for n, vm in sorted(cfg.virtual_models.items())]
            data += [
                model_object(a, cfg.virtual_models[n]) for a, n in sorted(cfg.model_aliases.items())
            ]
            await respond_json(send, 200, {
                "object": "list", "data": data, "has_more": False,
                "first_id": data[0]["id"] if data else None,
                "last_id": data[-1]["id"] if data else None,
            })  # fmt: skip
            return
        model_id = unquote(path.removeprefix("/v1/models/"))
        vm = cfg.virtual_models.get(model_id)
        if vm is None and model_id in cfg.model_aliases:
            vm = cfg.virtual_models[cfg.model_aliases[model_id]]
        if vm is None:
            names = ", ".join(sorted(cfg.virtual_models)) or "(none configured)"
            raise Refusal(404, "model_not_found",
                          f"unknown model {model_id[:200]!r}; this gateway serves: {names}")
        await respond_json(send, 200, model_object(model_id, vm))
    except Refusal as r:
        note_refusal(gw, r, "models", scope)
        await send_refusal(send, protocol, r)
