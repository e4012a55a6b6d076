"""Provider wire protocols: SSE, usage, OpenAI <-> Anthropic translation, error bodies.

Pure and hot-path: no I/O, orjson only. Modules: `sse`, `usage`, `translate` (requests and
responses; re-exports the stream converters of `stream_translate`), `errors`, `mapping`, `bridge`
(one call between a caller's protocol and a target's, including `StreamRelay`).
"""
