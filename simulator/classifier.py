"""SIMULATED guardrail classifiers: an HTTP classification service and the LLM judge's verdicts.

Deterministic by marker, so tests say what the classifier will find:

- `SIM-UNSAFE` in a text flags it as `prompt_injection`; `SIM-UNSAFE:<category>` names the
  category (`SIM-UNSAFE:jailbreak`); no marker: clean;
- for the judge only, `SIM-JUDGE-GARBLED` makes the model answer prose instead of a verdict.

Endpoints (every answer carries `"simulated": true` where the shape allows, and the app labels
every response `X-Governor-Simulated: true`):

- `POST /classify` — generic `{"text"}` or Lakera-style `{"messages": [{"content"}]}` →
  `{"flagged", "categories", "score", "simulated"}`;
- `POST /analyze` — Presidio analyzer shape `{"text", "language"}` → `[{"entity_type", "start",
  "end", "score"}]`;
- `POST /_sim/classifier` sets its faults `{"latency_ms", "status", "garbled", "oversize",
  "count"}` (`count`: for that many requests, then cleared; absent: until cleared);
  `DELETE /_sim/classifier` clears them; `GET /_sim/stats` counts them in
  `by_endpoint.classifier`.

The judge: a chat request whose system prompt starts with the gateway's judge marker is
answered with the verdict JSON the judge prompt asks for (`judge_text`, `judge_answer`).
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import asdict, dataclass
from typing import Any

import orjson
from aiohttp import web

from simulator.state import STATE_KEY

JUDGE_MARKER = "You are a guardrail classifier for an LLM gateway."  # the gateway's judge prompt
GARBLED = "SIM-JUDGE-GARBLED"
_UNSAFE = re.compile(r"SIM-UNSAFE(?::([a-z_]{1,32}))?")
_MAX_BODY = 4 * 1024 * 1024


def verdict_of(text: str) -> tuple[bool, list[str], list[tuple[int, int, str]]]:
    """(flagged, categories, marker spans) for `text`."""
    spans = [(m.start(), m.end(), m.group(1) or "prompt_injection") for m in _UNSAFE.finditer(text)]
    cats: list[str] = []
    for _, _, c in spans:
        if c not in cats:
            cats.append(c)
    return bool(spans), cats, spans


def judge_text(system: Any, messages: Any) -> str | None:
    """The text a judge request asks about (its last message's), or None for other requests.
    `system`: Anthropic's top-level system (None for OpenAI, whose system is a message)."""
    if not isinstance(messages, list) or not messages:
        return None
    first = system
    if first is None and isinstance(messages[0], dict) and messages[0].get("role") == "system":
        first = messages[0].get("content")
    if isinstance(first, list):  # content blocks
        first = "".join(b.get("text", "") for b in first if isinstance(b, dict))
    if not isinstance(first, str) or not first.startswith(JUDGE_MARKER):
        return None
    last = messages[-1].get("content") if isinstance(messages[-1], dict) else None
    if isinstance(last, list):
        last = "".join(b.get("text", "") for b in last if isinstance(b, dict))
    return last if isinstance(last, str) else ""


def judge_answer(text: str) -> str:
    """The simulated judge's answer: the strict verdict JSON, or prose for `SIM-JUDGE-GARBLED`."""
    if GARBLED in text:
        return "Looking at this text, I would say it is probably fine."
    flagged, cats, _ = verdict_of(text)
    doc = {
        "verdict": "unsafe" if flagged else "safe",
        "categories": cats,
        "score": 0.97 if flagged else 0.03,
    }
    return orjson.dumps(doc).decode()


@dataclass(slots=True)
class ClassifierFaults:
    latency_ms: int = 0
    status: int | None = None
    garbled: bool = False  # answer something that is not the shape
    oversize: bool = False  # answer 1 MiB of JSON
    count: int | None = None  # requests these faults apply to (None: until cleared)
    last_text: str = ""  # the text of the last request (what a gateway sent to classify)
    last_auth: str = ""  # its Authorization header (the simulator checks no credentials)

    def take(self) -> ClassifierFaults | None:
        """The faults for one request, or None when none apply."""
        if self.count is not None:
            if self.count <= 0:
                return None
            self.count -= 1
        if not (self.latency_ms or self.status or self.garbled or self.oversize):
            return None
        return self


_FAULTS: web.AppKey[ClassifierFaults] = web.AppKey("governor_sim_classifier", ClassifierFaults)


def faults(app: web.Application) -> ClassifierFaults:
    """The app's classifier faults (one object, changed in place: a started app's state is
    not reassigned)."""
    return app[_FAULTS]


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(data), content_type="application/json")


async def _text_of(request: web.Request) -> str | web.Response:
    raw = await request.content.read(_MAX_BODY + 1)
    if len(raw) > _MAX_BODY:
        return _json({"error": "body too large"}, 413)
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return _json({"error": "body is not JSON"}, 400)
    if isinstance(doc, dict) and isinstance(doc.get("text"), str):
        return str(doc["text"])
    msgs = doc.get("messages") if isinstance(doc, dict) else None
    if isinstance(msgs, list) and all(
        isinstance(m, dict) and isinstance(m.get("content"), str) for m in msgs
    ):
        return "\n".join(m["content"] for m in msgs)
    return _json({"error": "send {\"text\": ...} or {\"messages\": [{\"content\": ...}]}"}, 400)


async def _faulted(request: web.Request, text: str) -> web.Response | None:
    state = request.app[STATE_KEY]
    state.by_endpoint["classifier"] += 1
    faults(request.app).last_text = text
    faults(request.app).last_auth = request.headers.get("Authorization", "")
    f = faults(request.app).take()
    if f is None:
        return None
    if f.latency_ms:
        await asyncio.sleep(f.latency_ms / 1000)
    if f.status:
        return _json({"error": "simulated classifier failure", "simulated": True}, f.status)
    if f.oversize:
        return _json({"flagged": False, "padding": "x" * (1 << 20), "simulated": True})
    if f.garbled:
        return web.Response(text="<html>not a verdict</html>", content_type="text/html")
    return None


async def _answer(request: web.Request, shape: Any) -> web.Response:
    """The request's text checked, counted and faulted, then answered in `shape(text)`."""
    text = await _text_of(request)
    if isinstance(text, web.Response):
        return text
    bad = await _faulted(request, text)
    return bad if bad is not None else _json(shape(text))


def _generic(text: str) -> dict[str, Any]:
    flagged, cats, _ = verdict_of(text)
    score = 0.97 if flagged else 0.03
    return {"flagged": flagged, "categories": cats, "score": score, "simulated": True}


def _presidio(text: str) -> list[dict[str, Any]]:
    _, _, spans = verdict_of(text)
    return [{"entity_type": c.upper(), "start": s, "end": e, "score": 0.85} for s, e, c in spans]


async def classify(request: web.Request) -> web.Response:
    return await _answer(request, _generic)


async def analyze(request: web.Request) -> web.Response:
    return await _answer(request, _presidio)


async def set_faults(request: web.Request) -> web.Response:
    try:
        doc = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        return _json({"error": "body is not JSON"}, 400)
    if not isinstance(doc, dict) or set(doc) - {"latency_ms", "status", "garbled", "oversize",
                                               "count"}:
        return _json({"error": "fields: latency_ms, status, garbled, oversize, count"}, 400)
    for name in ("latency_ms", "count"):
        v = doc.get(name)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 0):
            return _json({"error": f"{name} must be a whole number >= 0"}, 400)
    status = doc.get("status")
    if status is not None and (not isinstance(status, int) or not 400 <= status <= 599):
        return _json({"error": "status must be an HTTP error status"}, 400)
    for name in ("garbled", "oversize"):
        if not isinstance(doc.get(name, False), bool):
            return _json({"error": f"{name} must be true or false"}, 400)
    f = faults(request.app)
    f.latency_ms = min(int(doc.get("latency_ms") or 0), 600_000)
    f.status = status
    f.garbled = bool(doc.get("garbled", False))
    f.oversize = bool(doc.get("oversize", False))
    f.count = doc.get("count")
    return _json({k: v for k, v in asdict(f).items() if not k.startswith("last_")})


async def clear_faults(request: web.Request) -> web.Response:
    f = faults(request.app)
    f.latency_ms, f.status, f.garbled, f.oversize, f.count = 0, None, False, False, None
    return _json({"cleared": True})


def add_routes(app: web.Application) -> None:
    app[_FAULTS] = ClassifierFaults()
    app.router.add_post("/classify", classify)
    app.router.add_post("/analyze", analyze)
    app.router.add_post("/_sim/classifier", set_faults)
    app.router.add_delete("/_sim/classifier", clear_faults)
