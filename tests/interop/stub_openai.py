"""A stub OpenAI-compatible server: what vLLM's OpenAI server answers when it serves LoRA
adapters under their own model names (``--lora-modules cardiology=... radiology=...``).

``POST /v1/chat/completions``, plain or streamed (SSE, with ``stream_options.include_usage``).
Every answer reports 12 prompt tokens (8 of them cached) and 7 completion tokens. The model
``broken`` answers 500, for the error path. A request that offers tools and holds no ``tool``
message yet is answered with one call of the first tool (an agent's first step). Runs in a
thread of the test process; ``stub_openai_server(served=[...])`` appends one entry per chat
completion asked of it (the calls the client really made: model, stream, the status answered).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

#: the answer each served model gives (cardiology answers JSON, radiology plain text)
ANSWERS = {
    "cardiology": '{"diagnosis": "I21.9", "confidence": 0.82}',
    "radiology": "No acute cardiopulmonary findings.",
}
USAGE = {
    "prompt_tokens": 12,
    "completion_tokens": 7,
    "total_tokens": 19,
    "prompt_tokens_details": {"cached_tokens": 8},
}


def _chunks(text: str) -> list[str]:
    words = text.split(" ")
    return [w + (" " if i < len(words) - 1 else "") for i, w in enumerate(words)]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:
        pass

    def _json(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        req = json.loads(self.rfile.read(length) or b"{}")
        if self.path.rstrip("/") != "/v1/chat/completions":
            self._json(404, {"error": {"message": f"no route {self.path}"}})
            return
        model = req.get("model", "")
        served = getattr(self.server, "served", None)
        if served is not None:
            status = 200 if model in ANSWERS else 500
            served.append({"model": model, "stream": bool(req.get("stream")), "status": status})
        if model not in ANSWERS:
            self._json(500, {"error": {"message": f"model {model!r} failed", "type": "server"}})
            return
        answer = ANSWERS[model]
        tool_call = _tool_call(req)
        created = int(time.time())
        rid = f"chatcmpl-{model}-{created}"
        if not req.get("stream"):
            message: dict[str, Any] = {"role": "assistant", "content": answer}
            if tool_call:
                message = {"role": "assistant", "content": None, "tool_calls": [tool_call]}
            self._json(
                200,
                {
                    "id": rid,
                    "object": "chat.completion",
                    "created": created,
                    "model": model,
                    "choices": [
                        {
                            "index": 0,
                            "message": message,
                            "finish_reason": "tool_calls" if tool_call else "stop",
                        }
                    ],
                    "usage": USAGE,
                },
            )
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

        def send(obj: dict[str, Any] | str) -> None:
            payload = obj if isinstance(obj, str) else json.dumps(obj)
            data = f"data: {payload}\n\n".encode()
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            self.wfile.flush()

        base = {"id": rid, "object": "chat.completion.chunk", "created": created, "model": model}
        time.sleep(0.05)  # time to first token: a stream's TTFT is visibly > 0
        if tool_call:
            delta = {
                "role": "assistant",
                "content": None,
                "tool_calls": [{"index": 0, **tool_call}],
            }
            send({**base, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]})
            send({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]})
        else:
            for i, piece in enumerate(_chunks(answer)):
                delta = {"content": piece}
                if i == 0:
                    delta["role"] = "assistant"
                send({**base, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]})
                time.sleep(0.01)
            send({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
        if (req.get("stream_options") or {}).get("include_usage"):
            send({**base, "choices": [], "usage": USAGE})
        send("[DONE]")
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()


def _tool_call(req: dict[str, Any]) -> dict[str, Any] | None:
    """The call of the first offered tool, when no tool result is in the messages yet."""
    tools = req.get("tools") or []
    if not tools or any(m.get("role") == "tool" for m in req.get("messages") or []):
        return None
    fn = tools[0].get("function") or {}
    params = ((fn.get("parameters") or {}).get("properties") or {}).keys()
    return {
        "id": "call_1",
        "type": "function",
        "function": {
            "name": fn.get("name", "tool"),
            "arguments": json.dumps(dict.fromkeys(params, "chest x-ray")),
        },
    }


@contextmanager
def stub_openai_server(served: list[dict[str, Any]] | None = None) -> Iterator[str]:
    """Serve on 127.0.0.1 (a free port); yields the base URL (``http://127.0.0.1:N/v1``).
    ``served``, when given, receives one entry per chat completion asked for."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.served = served  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()
