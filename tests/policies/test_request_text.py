"""The normalised request text: parts joined as the model reads them; redaction mapped back."""

from __future__ import annotations

from typing import Any

from policies.guardrails import DETECTORS, scan
from policies.request_text import (
    anthropic_output_view,
    redacted_pieces,
    request_view,
    with_texts,
)

AWS = "AKIAZ7Q3M4N5P6R2T8VW"


def _parts(*texts: str) -> list[dict[str, Any]]:
    return [{"type": "text", "text": t} for t in texts]


def test_adjacent_text_parts_form_one_segment_per_message_and_hook() -> None:
    body = {"messages": [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": _parts("AKIA", "Z7Q3M4N5P6R2T8VW")},
        {"role": "tool", "content": "result"},
    ]}  # fmt: skip
    view = request_view("openai", body)
    assert [(s.hook, s.text) for s in view.segments] == [
        ("request-input", "be brief"),
        ("request-input", AWS),
        ("tool-output", "result"),
    ]
    assert view.text == f"be brief\n{AWS}\nresult"


def test_an_image_between_text_parts_separates_them() -> None:
    content = [*_parts("one"), {"type": "image_url", "image_url": {"url": "x"}}, *_parts("two")]
    view = request_view("openai", {"messages": [{"role": "user", "content": content}]})
    assert [s.text for s in view.segments] == ["one", "two"]


def test_anthropic_tool_results_are_tool_output_segments_of_their_own() -> None:
    body = {"system": "sys", "messages": [{"role": "user", "content": [
        *_parts("a"), {"type": "tool_result", "tool_use_id": "t", "content": _parts("r1", "r2")},
        *_parts("b"),
    ]}]}  # fmt: skip
    view = request_view("anthropic", body)
    assert [(s.hook, s.text) for s in view.segments] == [
        ("request-input", "sys"), ("request-input", "a"), ("tool-output", "r1r2"),
        ("request-input", "b"),
    ]  # fmt: skip


def test_a_finding_across_parts_is_redacted_in_each_part_it_covers() -> None:
    body = {"messages": [{"role": "user", "content": _parts("key AKIA", "Z7Q3M4N5P6R2T8VW ok")}]}
    seg = request_view("openai", body).segments[0]
    found = [(f.start, f.end, f.type) for f in scan(seg.text, DETECTORS, b"s")]
    new = with_texts(body, redacted_pieces(seg, found))
    assert new["messages"][0]["content"] == _parts("key [REDACTED:aws_access_key]", " ok")
    assert body["messages"][0]["content"] == _parts("key AKIA", "Z7Q3M4N5P6R2T8VW ok")


def test_malformed_shapes_are_skipped() -> None:
    assert request_view("openai", {"messages": "nope"}).segments == ()
    body: Any = {"messages": [None, {"role": 5, "content": [3, {"type": "text", "text": 4}]}]}
    assert request_view("anthropic", body).text == ""


def test_an_anthropic_answer_joins_adjacent_text_blocks_and_a_tool_call_separates_them() -> None:
    content: Any = [
        *_parts("a", "b"), {"type": "thinking", "thinking": "hm", "signature": "s"},
        *_parts("c"), {"type": "tool_use", "id": "t", "name": "f", "input": {"x": "AKIA"}},
        *_parts("d", "e"), None, "f",
    ]  # fmt: skip
    segs = anthropic_output_view(content)
    assert [(s.hook, s.text) for s in segs] == [
        ("request-output", "ab"), ("request-output", "c"), ("request-output", "de"),
        ("request-output", "f"),
    ]  # fmt: skip
    assert [p.path for p in segs[2].pieces] == [("content", 5, "text"), ("content", 6, "text")]
    assert anthropic_output_view("not a list") == [] and anthropic_output_view(None) == []
