"""The model's input and answer as text, from every convention that carries them.

Beside :mod:`.normalize` (which maps attributes to columns), this is the one place that knows
where each instrumentation puts message content, so that evaluators score the model's answer
and never a request/response envelope. Sources, in priority order:

1. OpenInference: ``llm.input_messages.N.message.{role,content}`` and
   ``llm.output_messages.N.message.content`` (or ``.message.contents.M.message_content.text``);
2. OTel GenAI: ``gen_ai.input.messages`` / ``gen_ai.output.messages``, the structured parts
   format (``[{"role", "parts": [{"type": "text", "content"}]}]``), as a JSON string or a
   structured attribute value;
3. OpenLLMetry's older ``gen_ai.prompt.N.{role,content}`` / ``gen_ai.completion.N.content``;
4. OTel GenAI **log events** joined to the span (``gen_ai.user.message``, ``gen_ai.choice``,
   ...; see :mod:`.logs`);
5. ``input.value`` / ``output.value`` (PrefixScope's own, plain text), unless their
   ``*.mime_type`` says ``application/json``: then it is an envelope, never the answer.

The input is the last user message (what the answer should address); the output is the first
choice's text.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from prefixscope import semconv as k

_OI_MSG = re.compile(r"^llm\.(input|output)_messages\.(\d+)\.message\.(role|content)$")
_OI_PART = re.compile(
    r"^llm\.(input|output)_messages\.(\d+)\.message\.contents\.(\d+)\.message_content\.text$"
)
_LEGACY = re.compile(r"^gen_ai\.(prompt|completion)\.(\d+)\.(role|content)$")
_JSON_MIME = "application/json"


@dataclass(frozen=True, slots=True)
class Messages:
    """What an evaluator needs: the question and the answer (None where nothing usable)."""

    input: str | None
    output: str | None
    source: str | None = None  # the convention the output came from


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value.strip() else None


def _parts_text(parts: Any) -> str | None:
    """Text of a GenAI ``parts`` list (or an OpenAI content array)."""
    if isinstance(parts, str):
        return _text(parts)
    if not isinstance(parts, list):
        return None
    texts = [
        p.get("content") if isinstance(p.get("content"), str) else p.get("text")
        for p in parts
        if isinstance(p, dict) and p.get("type", "text") == "text"
    ]
    joined = "\n".join(t for t in texts if isinstance(t, str))
    return _text(joined)


def _genai_messages(value: Any) -> list[tuple[str | None, str | None]]:
    if isinstance(value, str):
        try:
            value = orjson.loads(value)
        except orjson.JSONDecodeError:
            return []
    if not isinstance(value, list):
        return []
    out = []
    for m in value:
        if isinstance(m, dict):
            content = m.get("parts") if "parts" in m else m.get("content")
            role = m.get("role")
            out.append((role if isinstance(role, str) else None, _parts_text(content)))
    return out


def _indexed(attrs: Mapping[str, Any]) -> dict[str, dict[int, dict[str, Any]]]:
    """OpenInference and legacy GenAI flattened messages: ``{side: {index: {role, content}}}``."""
    out: dict[str, dict[int, dict[str, Any]]] = {}
    for key, value in attrs.items():
        if not (key.startswith("llm.") or key.startswith("gen_ai.")):
            continue
        if m := _OI_MSG.match(key):
            side, idx, field = f"oi_{m.group(1)}", int(m.group(2)), m.group(3)
        elif m := _OI_PART.match(key):
            side, idx, field = f"oi_{m.group(1)}", int(m.group(2)), f"part{int(m.group(3)):06d}"
        elif m := _LEGACY.match(key):
            side = "legacy_input" if m.group(1) == "prompt" else "legacy_output"
            idx, field = int(m.group(2)), m.group(3)
        else:
            continue
        out.setdefault(side, {}).setdefault(idx, {})[field] = value
    return out


def _flat(side: dict[int, dict[str, Any]]) -> list[tuple[str | None, str | None]]:
    msgs = []
    for _, m in sorted(side.items()):
        content = _text(m.get("content"))
        if content is None:
            parts = [v for f, v in sorted(m.items()) if f.startswith("part")]
            content = _text("\n".join(p for p in parts if isinstance(p, str)))
        role = m.get("role")
        msgs.append((role if isinstance(role, str) else None, content))
    return msgs


def _last_user(msgs: list[tuple[str | None, str | None]]) -> str | None:
    for role, content in reversed(msgs):
        if content is not None and role in (None, "user", "human"):
            return content
    return None


def _first(msgs: list[tuple[str | None, str | None]]) -> str | None:
    return next((c for _, c in msgs if c is not None), None)


def _from_events(events: Iterable[tuple[str, Any]]) -> tuple[str | None, str | None]:
    """GenAI log events: the last user message, and the first choice (lowest index)."""
    user: str | None = None
    choices: list[tuple[int, str]] = []
    for name, body in events:
        if isinstance(body, str):
            try:
                body = orjson.loads(body)
            except orjson.JSONDecodeError:
                body = {"content": body}
        if not isinstance(body, dict):
            continue
        if name == "gen_ai.user.message":
            user = _parts_text(body.get("content")) or user
        elif name == "gen_ai.choice":
            msg = body.get("message")
            text = _parts_text(msg.get("content")) if isinstance(msg, dict) else None
            idx = body.get("index")
            if text is not None:
                choices.append((idx if isinstance(idx, int) else 0, text))
    return user, (min(choices)[1] if choices else None)


def extract(attrs: Mapping[str, Any], log_events: Iterable[tuple[str, Any]] = ()) -> Messages:
    """The span's input and output text; ``log_events`` are its ``(event_name, body)``."""
    inp: str | None = None
    out: str | None = None
    source: str | None = None
    flat = _indexed(attrs)
    candidates = (
        ("openinference", _flat(flat.get("oi_input", {})), _flat(flat.get("oi_output", {}))),
        (
            "genai",
            _genai_messages(attrs.get(k.GEN_AI_INPUT_MESSAGES)),
            _genai_messages(attrs.get(k.GEN_AI_OUTPUT_MESSAGES)),
        ),
        (
            "openllmetry",
            _flat(flat.get("legacy_input", {})),
            _flat(flat.get("legacy_output", {})),
        ),
    )
    for name, ins, outs in candidates:
        inp = inp or _last_user(ins)
        if out is None and (text := _first(outs)) is not None:
            out, source = text, name
    ev_in, ev_out = _from_events(log_events)
    inp = inp or ev_in
    if out is None and ev_out is not None:
        out, source = ev_out, "genai_log_events"
    if inp is None and attrs.get(k.INPUT_MIME_TYPE) != _JSON_MIME:
        inp = _text(attrs.get(k.INPUT_VALUE))
    if out is None and attrs.get(k.OUTPUT_MIME_TYPE) != _JSON_MIME:
        out = _text(attrs.get(k.OUTPUT_VALUE))
        source = "value" if out is not None else None
    return Messages(inp, out, source)
