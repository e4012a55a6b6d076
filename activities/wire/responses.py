"""The OpenAI Responses API (`POST /v1/responses`) as a chat completions call, and back.

Codex CLI speaks only this API, and it is the default of the OpenAI Agents SDK and the Vercel AI
SDK's `openai(model)`. Governor governs it exactly like a chat call by translating the request
to the chat completions form (which the router already sends to either protocol's targets),
then the answer — whole or streamed — back into a `response` object and `response.*` events.

Stated policy: Governor stores no responses. `store` is accepted and answered as `false`;
`previous_response_id`, `conversation` and `item_reference` items (which need stored state) are
refused with a 400 that says to send the whole conversation. Reasoning items from an earlier
turn are dropped: no target can take another model's reasoning back. Built-in tools
(`web_search`, `file_search`, `computer_use_preview`, `code_interpreter`, …) run inside OpenAI's
platform, not at any target: refused with a 400 naming the tool.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator
from typing import Any, Literal

import orjson

from activities.wire.errors import WireError
from activities.wire.sse import SSEParser
from activities.wire.usage import obj

Json = dict[str, Any]

# A custom (free-form) tool becomes a function with one string argument, and back.
CUSTOM_INPUT = "input"
# A namespace's tools become functions named `<namespace>__<tool>` (names allow no dots).
NAMESPACE_SEP = "__"
# Built-in tools a request declares: refused (400), or dropped from what the model is offered.
HostedPolicy = Literal["refuse", "drop"]
_STATEFUL = ("previous_response_id", "conversation")
_PASSED = ("temperature", "top_p", "parallel_tool_calls", "user", "safety_identifier",
           "prompt_cache_key", "service_tier", "metadata")


def _new_id(prefix: str) -> str:
    return prefix + os.urandom(12).hex()


def _text_of_parts(content: object, where: str) -> str:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise WireError(f"{where} must be a string or an array of content parts")
    texts = []
    for i, part in enumerate(content):
        if not isinstance(part, dict) or not isinstance(part.get("text"), str):
            raise WireError(f"{where}[{i}] must be a text part here")
        texts.append(part["text"])
    return "\n".join(texts)


def _chat_parts(content: object, where: str) -> str | list[Json]:
    """Responses message content (string or input_* / output_text parts) as chat content."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise WireError(f"{where} must be a string or an array of content parts")
    parts: list[Json] = []
    for i, part in enumerate(content):
        at = f"{where}[{i}]"
        if not isinstance(part, dict):
            raise WireError(f"{at} must be an object")
        kind = part.get("type")
        if kind in ("input_text", "output_text", "text"):
            text = part.get("text")
            if not isinstance(text, str):
                raise WireError(f"{at}.text must be a string")
            parts.append({"type": "text", "text": text})
        elif kind == "refusal":
            parts.append({"type": "text", "text": str(part.get("refusal", ""))})
        elif kind == "input_image":
            url = part.get("image_url")
            if not isinstance(url, str) or not url:
                raise WireError(f"{at}: only input_image with an image_url can be forwarded "
                                "(file_id needs OpenAI's file store)")
            image: Json = {"url": url}
            if part.get("detail"):
                image["detail"] = part["detail"]
            parts.append({"type": "image_url", "image_url": image})
        elif kind == "input_file":
            data = part.get("file_data")
            if not isinstance(data, str) or not data:
                raise WireError(f"{at}: only input_file with inline file_data can be forwarded")
            file: Json = {"file_data": data}
            if part.get("filename"):
                file["filename"] = part["filename"]
            parts.append({"type": "file", "file": file})
        else:
            raise WireError(f"{at}: content part type {kind!r} is not supported")
    if all(p["type"] == "text" for p in parts):
        return "".join(p["text"] for p in parts) if len(parts) == 1 else parts
    return parts


def _output_text(output: object, where: str) -> str:
    if isinstance(output, str):
        return output
    if isinstance(output, list):
        return _text_of_parts(
            [p if isinstance(p, dict) and "text" in p else {"text": ""} for p in output], where
        )
    raise WireError(f"{where} must be a string or an array of content parts")


def _chat_tools(tools: object, hosted: HostedPolicy) -> tuple[list[Json], set[str]]:
    """(chat tools, names of custom tools). A namespace's function tools are flattened as
    `<namespace>__<name>`; built-in (hosted) tools are refused, or dropped by policy."""
    if not isinstance(tools, list):
        raise WireError("tools must be an array")
    out: list[Json] = []
    custom: set[str] = set()
    flat: list[tuple[str, Any]] = []
    for i, tool in enumerate(tools):
        if isinstance(tool, dict) and tool.get("type") == "namespace":
            ns, inner = tool.get("name"), tool.get("tools")
            if not isinstance(ns, str) or not ns or not isinstance(inner, list):
                raise WireError(f"tools[{i}]: a namespace needs a name and a tools array")
            for j, sub in enumerate(inner):
                if not isinstance(sub, dict) or sub.get("type", "function") != "function":
                    raise WireError(f"tools[{i}].tools[{j}] must be a function tool")
                flat.append((f"tools[{i}].tools[{j}]",
                             {**sub, "name": f"{ns}{NAMESPACE_SEP}{sub.get('name')}"}))
        else:
            flat.append((f"tools[{i}]", tool))
    for at, tool in flat:
        if not isinstance(tool, dict):
            raise WireError(f"{at} must be an object")
        kind = tool.get("type")
        name = tool.get("name")
        if kind in ("function", "custom"):
            if not isinstance(name, str) or not name:
                raise WireError(f"{at}.name must be a non-empty string")
            fn: Json = {"name": name}
            if tool.get("description"):
                fn["description"] = tool["description"]
            if kind == "function":
                params = tool.get("parameters")
                fn["parameters"] = (
                    params if isinstance(params, dict) else {"type": "object", "properties": {}}
                )
                if tool.get("strict") is not None:
                    fn["strict"] = bool(tool["strict"])
            else:
                custom.add(name)
                fn["parameters"] = {
                    "type": "object",
                    "properties": {CUSTOM_INPUT: {"type": "string"}},
                    "required": [CUSTOM_INPUT],
                }
            out.append({"type": "function", "function": fn})
        elif hosted == "drop":
            continue  # the model is simply not offered a tool no target can run
        else:
            raise WireError(
                f"{at}: built-in tool {kind!r} runs inside OpenAI's platform and no target "
                "of this gateway can run it; remove it or use a function tool (or set "
                "responses_hosted_tools: drop in the gateway settings)",
                "unsupported_tool",
            )
    return out, custom


def _chat_tool_choice(choice: object) -> object:
    if choice is None or choice in ("auto", "none", "required"):
        return choice
    if isinstance(choice, dict) and choice.get("type") in ("function", "custom"):
        name = choice.get("name")
        if not isinstance(name, str) or not name:
            raise WireError("tool_choice.name must be a non-empty string")
        return {"type": "function", "function": {"name": name}}
    if isinstance(choice, dict) and choice.get("type") == "allowed_tools":
        mode = choice.get("mode")
        return "required" if mode == "required" else "auto"
    raise WireError("tool_choice must be auto, none, required or a function choice")


def _response_format(text: object) -> Json | None:
    if not isinstance(text, dict):
        return None
    fmt = text.get("format")
    if not isinstance(fmt, dict) or fmt.get("type") in (None, "text"):
        return None
    if fmt["type"] == "json_object":
        return {"type": "json_object"}
    if fmt["type"] == "json_schema":
        schema = fmt.get("schema")
        if not isinstance(schema, dict):
            raise WireError("text.format.schema must be a JSON schema object")
        js: Json = {"name": fmt.get("name") or "response", "schema": schema}
        if fmt.get("strict") is not None:
            js["strict"] = bool(fmt["strict"])
        if fmt.get("description"):
            js["description"] = fmt["description"]
        return {"type": "json_schema", "json_schema": js}
    raise WireError(f"text.format.type {fmt['type']!r} is not one of text, json_object, "
                    "json_schema")


def _append_call(messages: list[Json], call: Json) -> None:
    """Consecutive calls belong to one assistant turn (parallel tool calls)."""
    last = messages[-1] if messages else None
    if last is not None and last["role"] == "assistant":
        last.setdefault("tool_calls", []).append(call)
    else:
        messages.append({"role": "assistant", "content": None, "tool_calls": [call]})


def responses_to_chat(body: Json, hosted: HostedPolicy = "refuse") -> tuple[Json, set[str]]:
    """A Responses API request as a chat completions request (and the custom tool names)."""
    if not isinstance(body, dict):
        raise WireError("request body must be a JSON object")
    for key in _STATEFUL:
        if body.get(key) not in (None, ""):
            raise WireError(
                f"{key} is not supported: this gateway stores no responses (store is always "
                "false); send the whole conversation in `input`",
                "unsupported_parameter",
            )
    model = body.get("model")
    messages: list[Json] = []
    instructions = body.get("instructions")
    if isinstance(instructions, str) and instructions:
        messages.append({"role": "system", "content": instructions})
    elif instructions is not None and not isinstance(instructions, str):
        raise WireError("instructions must be a string")
    raw_input = body.get("input")
    if isinstance(raw_input, str):
        items: list[Any] = [{"role": "user", "content": raw_input}]
    elif isinstance(raw_input, list):
        items = raw_input
    else:
        raise WireError("input must be a string or an array of input items")
    for i, item in enumerate(items):
        where = f"input[{i}]"
        if not isinstance(item, dict):
            raise WireError(f"{where} must be an object")
        kind = item.get("type", "message")
        if kind == "message":
            role = item.get("role")
            if role not in ("user", "assistant", "system", "developer"):
                raise WireError(f"{where}.role must be user, assistant, system or developer")
            content = _chat_parts(item.get("content"), f"{where}.content")
            if role == "developer":
                role = "system"
            if role == "system" and not isinstance(content, str):
                content = _text_of_parts(content, f"{where}.content")
            messages.append({"role": role, "content": content})
        elif kind in ("function_call", "custom_tool_call"):
            call_id, name = item.get("call_id"), item.get("name")
            if not isinstance(call_id, str) or not call_id or not isinstance(name, str):
                raise WireError(f"{where} needs a string call_id and name")
            ns = item.get("namespace")
            if isinstance(ns, str) and ns:
                name = f"{ns}{NAMESPACE_SEP}{name}"
            if kind == "function_call":
                args = item.get("arguments")
                if not isinstance(args, str):
                    raise WireError(f"{where}.arguments must be a string of JSON")
            else:
                args = orjson.dumps({CUSTOM_INPUT: str(item.get("input", ""))}).decode()
            _append_call(messages, {"id": call_id, "type": "function",
                                    "function": {"name": name, "arguments": args}})
        elif kind in ("function_call_output", "custom_tool_call_output"):
            call_id = item.get("call_id")
            if not isinstance(call_id, str) or not call_id:
                raise WireError(f"{where}.call_id must be a non-empty string")
            output = _output_text(item.get("output", ""), f"{where}.output")
            messages.append({"role": "tool", "tool_call_id": call_id, "content": output})
        elif kind == "reasoning":
            continue  # another turn's reasoning: no target can take it back
        elif kind == "item_reference":
            ref = item.get("id")
            if isinstance(ref, str) and ref.startswith("rs_"):
                continue  # a reference to a reasoning item: dropped like the item itself
            raise WireError(
                f"{where}: item_reference needs stored responses, which this gateway does not "
                "keep; send the referenced item itself",
                "unsupported_parameter",
            )
        else:
            raise WireError(f"{where}: input item type {kind!r} cannot be forwarded to a model")
    if not any(m["role"] != "system" for m in messages):
        raise WireError("input must contain at least one user, assistant or tool item")
    out: Json = {"model": model, "messages": messages}
    custom: set[str] = set()
    if body.get("tools"):
        out["tools"], custom = _chat_tools(body["tools"], hosted)
        if not out["tools"]:
            del out["tools"]
        choice = _chat_tool_choice(body.get("tool_choice"))
        if choice is not None and "tools" in out:
            out["tool_choice"] = choice
    limit = body.get("max_output_tokens")
    if limit is not None:
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
            raise WireError("max_output_tokens must be a positive integer")
        out["max_completion_tokens"] = limit
    for key in _PASSED:
        if body.get(key) is not None:
            out[key] = body[key]
    reasoning = body.get("reasoning")
    if isinstance(reasoning, dict) and isinstance(reasoning.get("effort"), str):
        out["reasoning_effort"] = reasoning["effort"]
    fmt = _response_format(body.get("text"))
    if fmt is not None:
        out["response_format"] = fmt
    if body.get("stream") is True:
        out["stream"] = True
        out["stream_options"] = {"include_usage": True}
    return out, custom


# ---------------------------------------------------------------- answers


def response_usage(usage: object) -> Json:
    u = usage if isinstance(usage, dict) else {}
    prompt = int(u.get("prompt_tokens") or 0)
    completion = int(u.get("completion_tokens") or 0)
    pd, cd = obj(u.get("prompt_tokens_details")), obj(u.get("completion_tokens_details"))
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": int(pd.get("cached_tokens") or 0)},
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": int(cd.get("reasoning_tokens") or 0)},
        "total_tokens": prompt + completion,
    }


def _call_item(call_id: str, name: str, arguments: str, custom: set[str], status: str) -> Json:
    ns, sep, short = name.partition(NAMESPACE_SEP)
    if sep and short and name not in custom:
        item = _call_item(call_id, short, arguments, custom, status)
        item["namespace"] = ns
        return item
    if name in custom:
        try:
            args = orjson.loads(arguments) if arguments else {}
        except orjson.JSONDecodeError:
            args = {}
        value = args.get(CUSTOM_INPUT, arguments) if isinstance(args, dict) else arguments
        return {"type": "custom_tool_call", "id": _new_id("ctc_"), "call_id": call_id,
                "name": name, "input": value if isinstance(value, str) else str(value),
                "status": status}
    return {"type": "function_call", "id": _new_id("fc_"), "call_id": call_id, "name": name,
            "arguments": arguments, "status": status}


class ResponseShell:
    """The fields of a `response` object that echo the request."""

    def __init__(self, body: Json) -> None:
        self.id = _new_id("resp_")
        self.created_at = int(time.time())
        self.body = body

    def envelope(self, status: str, model: str, output: list[Json], usage: Json | None,
                 incomplete: str | None = None) -> Json:
        b = self.body
        text = b.get("text") if isinstance(b.get("text"), dict) else {"format": {"type": "text"}}
        return {
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "status": status,
            "background": False,
            "error": None,
            "incomplete_details": {"reason": incomplete} if incomplete else None,
            "instructions": b.get("instructions"),
            "max_output_tokens": b.get("max_output_tokens"),
            "model": model or b.get("model"),
            "output": output,
            "parallel_tool_calls": b.get("parallel_tool_calls", True),
            "previous_response_id": None,
            "reasoning": {"effort": None, "summary": None},
            "store": False,
            "temperature": b.get("temperature", 1.0),
            "text": text,
            "tool_choice": b.get("tool_choice", "auto"),
            "tools": b.get("tools") or [],
            "top_p": b.get("top_p", 1.0),
            "truncation": "disabled",
            "usage": usage,
            "user": b.get("user"),
            "metadata": b.get("metadata") or {},
        }


def chat_to_response(doc: Json, shell: ResponseShell, custom: set[str]) -> Json:
    """A chat completion as a completed (or incomplete) `response` object."""
    choices = doc.get("choices")
    choice = choices[0] if isinstance(choices, list) and choices else {}
    message = choice.get("message") if isinstance(choice, dict) else None
    message = message if isinstance(message, dict) else {}
    output: list[Json] = []
    text = message.get("content")
    if isinstance(text, str) and text:
        output.append(_message_item(_new_id("msg_"), text, "completed"))
    for call in message.get("tool_calls") or []:
        fn = call.get("function") if isinstance(call, dict) else None
        if isinstance(fn, dict):
            output.append(_call_item(str(call.get("id") or _new_id("call_")),
                                     str(fn.get("name") or ""), str(fn.get("arguments") or ""),
                                     custom, "completed"))
    finish = choice.get("finish_reason") if isinstance(choice, dict) else None
    incomplete = "max_output_tokens" if finish == "length" else None
    return shell.envelope("incomplete" if incomplete else "completed", str(doc.get("model") or ""),
                          output, response_usage(doc.get("usage")), incomplete)


def _message_item(item_id: str, text: str, status: str) -> Json:
    return {"type": "message", "id": item_id, "status": status, "role": "assistant",
            "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}]}


class ChatToResponseStream:
    """Chat completion chunks (SSE bytes) in, `response.*` events (SSE bytes) out."""

    def __init__(self, shell: ResponseShell, custom: set[str]) -> None:
        self.shell = shell
        self.custom = custom
        self.parser = SSEParser()
        self.seq = 0
        self.model = ""
        self.output: list[Json] = []
        self.text_item: Json | None = None  # the open message item
        self.text = ""
        self.calls: dict[int, Json] = {}  # chat tool-call index -> open item
        self.finish_reason: str | None = None
        self.usage: Json | None = None
        self.started = False
        self.done = False

    def _event(self, kind: str, payload: Json) -> bytes:
        payload = {"type": kind, **payload, "sequence_number": self.seq}
        self.seq += 1
        return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"

    def _start(self, out: list[bytes]) -> None:
        if self.started:
            return
        self.started = True
        shell = self.shell.envelope("in_progress", self.model, [], None)
        out.append(self._event("response.created", {"response": shell}))
        out.append(self._event("response.in_progress", {"response": shell}))

    def feed(self, chunk: bytes) -> bytes:
        out: list[bytes] = []
        for ev in self.parser.feed(chunk):
            self._on(ev.data, out)
        return b"".join(out)

    def _on(self, data: bytes, out: list[bytes]) -> None:
        if self.done:
            return
        if data == b"[DONE]":
            self._finish(out)
            return
        try:
            doc = orjson.loads(data)
        except orjson.JSONDecodeError:
            return
        if not isinstance(doc, dict):
            return
        if isinstance(doc.get("error"), dict):
            self._fail(doc["error"], out)
            return
        if doc.get("model"):
            self.model = str(doc["model"])
        self._start(out)
        if isinstance(doc.get("usage"), dict):
            self.usage = response_usage(doc["usage"])
        for choice in doc.get("choices") or []:
            if not isinstance(choice, dict):
                continue
            delta = obj(choice.get("delta"))
            content = delta.get("content")
            if isinstance(content, str) and content:
                self._text_delta(content, out)
            for call in delta.get("tool_calls") or []:
                if isinstance(call, dict):
                    self._call_delta(call, out)
            if choice.get("finish_reason"):
                self.finish_reason = str(choice["finish_reason"])

    def _text_delta(self, text: str, out: list[bytes]) -> None:
        if self.text_item is None:
            self.text_item = {"type": "message", "id": _new_id("msg_"), "status": "in_progress",
                              "role": "assistant", "content": []}
            self.output.append(self.text_item)
            idx = len(self.output) - 1
            out.append(self._event("response.output_item.added",
                                   {"output_index": idx, "item": self.text_item}))
            out.append(self._event("response.content_part.added", {
                "item_id": self.text_item["id"], "output_index": idx, "content_index": 0,
                "part": {"type": "output_text", "text": "", "annotations": []}}))
        self.text += text
        out.append(self._event("response.output_text.delta", {
            "item_id": self.text_item["id"], "output_index": self.output.index(self.text_item),
            "content_index": 0, "delta": text, "logprobs": []}))

    def _call_delta(self, call: Json, out: list[bytes]) -> None:
        index = call.get("index", 0)
        fn = obj(call.get("function"))
        item = self.calls.get(index)
        if item is None:
            name = str(fn.get("name") or "")
            call_id = str(call.get("id") or _new_id("call_"))
            item = _call_item(call_id, name, "", self.custom, "in_progress")
            item["_args"] = ""
            item["_name"] = name
            self.calls[index] = item
            self.output.append(item)
            out.append(self._event("response.output_item.added", {
                "output_index": len(self.output) - 1, "item": _public(item)}))
        piece = fn.get("arguments")
        if isinstance(piece, str) and piece:
            item["_args"] += piece
            if item["type"] == "function_call":
                out.append(self._event("response.function_call_arguments.delta", {
                    "item_id": item["id"], "output_index": self.output.index(item),
                    "delta": piece}))

    def _close_items(self, out: list[bytes]) -> None:
        if self.text_item is not None:
            item = self.text_item
            idx = self.output.index(item)
            part = {"type": "output_text", "text": self.text, "annotations": [], "logprobs": []}
            out.append(self._event("response.output_text.done", {
                "item_id": item["id"], "output_index": idx, "content_index": 0,
                "text": self.text, "logprobs": []}))
            out.append(self._event("response.content_part.done", {
                "item_id": item["id"], "output_index": idx, "content_index": 0, "part": part}))
            item.update(status="completed", content=[part])
            out.append(self._event("response.output_item.done",
                                   {"output_index": idx, "item": item}))
        for item in self.calls.values():
            idx = self.output.index(item)
            args = item.pop("_args")
            done = _call_item(item["call_id"], item.pop("_name"), args, self.custom, "completed")
            done["id"] = item["id"]
            item.clear()
            item.update(done)
            if item["type"] == "function_call":
                out.append(self._event("response.function_call_arguments.done", {
                    "item_id": item["id"], "output_index": idx, "name": item["name"],
                    "arguments": args}))
            else:
                out.append(self._event("response.custom_tool_call_input.done", {
                    "item_id": item["id"], "output_index": idx, "input": item["input"]}))
            out.append(self._event("response.output_item.done",
                                   {"output_index": idx, "item": item}))

    def _finish(self, out: list[bytes]) -> None:
        self._start(out)
        self._close_items(out)
        self.done = True
        incomplete = "max_output_tokens" if self.finish_reason == "length" else None
        resp = self.shell.envelope("incomplete" if incomplete else "completed", self.model,
                                   self.output, self.usage, incomplete)
        kind = "response.incomplete" if incomplete else "response.completed"
        out.append(self._event(kind, {"response": resp}))

    def _fail(self, error: Json, out: list[bytes]) -> None:
        self._start(out)
        self.done = True
        code = str(error.get("code") or "upstream_error")
        message = str(error.get("message") or "the upstream stream failed")
        out.append(self._event("error", {"code": code, "message": message, "param": None}))
        resp = self.shell.envelope("failed", self.model, self.output, self.usage)
        resp["error"] = {"code": code, "message": message}
        out.append(self._event("response.failed", {"response": resp}))

    def finish(self) -> bytes:
        """At the end of the chat stream: close the response if the chunks did not."""
        out: list[bytes] = []
        for ev in self.parser.flush():
            self._on(ev.data, out)
        if not self.done:
            self._fail({"code": "upstream_stream_interrupted",
                        "message": "the stream ended before the response completed"}, out)
        return b"".join(out)


def _public(item: Json) -> Json:
    return {k: v for k, v in item.items() if not k.startswith("_")}


async def response_events(chat_stream: AsyncIterator[bytes], shell: ResponseShell,
                          custom: set[str]) -> AsyncIterator[bytes]:
    """Relay a governed chat stream as Responses API events; closes the chat stream."""
    conv = ChatToResponseStream(shell, custom)
    try:
        async for piece in chat_stream:
            out = conv.feed(piece)
            if out:
                yield out
        tail = conv.finish()
        if tail:
            yield tail
    finally:
        await chat_stream.aclose()  # type: ignore[attr-defined]
