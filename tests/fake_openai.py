"""A small OpenAI-compatible HTTP server on loopback whose answers a test scripts.

Each request takes the next behaviour from ``server.script`` (then ``"ok"``):

- ``"ok"``: a normal answer; streams end with a usage chunk, as OpenAI and vLLM send;
- ``"tools"``: a tool call, streamed OpenAI's way (name once, arguments in pieces);
- ``"429"``: rate limited, with ``Retry-After: 0``;
- ``"500"``: a server error;
- ``"401"``: a rejected key;
- ``"broken"``: a stream that sends its first chunk (no text) and drops the connection;
- ``"broken-mid"``: the same after the first piece of text;
- ``"hang"``: waits ``hang_s`` seconds before answering.

Requests are recorded (path, headers, JSON body) in ``server.requests``.
"""

from __future__ import annotations

import base64
import json
import threading
import time
import zlib
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

ANSWER = ["Hello", " from", " the", " fake", " server."]
USAGE = {"prompt_tokens": 11, "completion_tokens": 5, "total_tokens": 16}


def tiny_png() -> bytes:
    """A valid 1×1 PNG."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return len(data).to_bytes(4, "big") + body + zlib.crc32(body).to_bytes(4, "big")

    header = (1).to_bytes(4, "big") * 2 + bytes([8, 2, 0, 0, 0])
    pixels = zlib.compress(b"\x00\xff\x00\x00")
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    )


class FakeOpenAI(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.script: deque[str] = deque()
        self.requests: list[dict[str, Any]] = []
        self.hang_s = 5.0
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"

    def start(self) -> FakeOpenAI:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


class _Handler(BaseHTTPRequestHandler):
    server: FakeOpenAI
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _json(self, status: int, data: Any, headers: dict[str, str] | None = None) -> None:
        body = json.dumps(data).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def _sse(self, chunks: list[dict[str, Any]], *, drop_after: int | None = None) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Connection", "close")
        self.end_headers()
        for i, chunk in enumerate(chunks):
            if drop_after is not None and i == drop_after:
                self.wfile.flush()
                self.connection.shutdown(2)  # mid-stream: the connection just goes
                return
            self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
            self.wfile.flush()
        self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()
        self.close_connection = True

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", 0))
        body = json.loads(self.rfile.read(length) or b"{}")
        self.server.requests.append(
            {"path": self.path, "headers": dict(self.headers), "body": body}
        )
        behaviour = self.server.script.popleft() if self.server.script else "ok"
        if behaviour == "hang":
            time.sleep(self.server.hang_s)
            behaviour = "ok"
        if behaviour == "429":
            self._json(429, {"error": {"message": "Rate limit reached"}}, {"Retry-After": "0"})
            return
        if behaviour == "500":
            self._json(500, {"error": {"message": "The server had an error"}})
            return
        if behaviour == "401":
            self._json(401, {"error": {"message": "Incorrect API key provided"}})
            return
        if self.path.endswith("/embeddings"):
            texts = body["input"] if isinstance(body["input"], list) else [body["input"]]
            data = [
                {"object": "embedding", "index": i, "embedding": [float(len(t)), 1.0, 0.5]}
                for i, t in enumerate(texts)
            ]
            self._json(
                200,
                {
                    "object": "list",
                    "data": data,
                    "model": body["model"],
                    "usage": {"prompt_tokens": 7 * len(texts), "total_tokens": 7 * len(texts)},
                },
            )
            return
        if self.path.endswith("/images/generations"):
            image = base64.b64encode(tiny_png()).decode()
            self._json(200, {"created": 0, "data": [{"b64_json": image}] * body.get("n", 1)})
            return
        self._chat(body, behaviour)

    def _chat(self, body: dict[str, Any], behaviour: str) -> None:
        model = body.get("model", "fake")
        base = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 0, "model": model}
        if behaviour == "tools-same-index":  # Ollama numbers every parallel call 0
            chunks = [
                {
                    **base,
                    "choices": [
                        {
                            "index": 0,
                            "delta": {
                                "role": "assistant",
                                "tool_calls": [
                                    {
                                        "index": 0,
                                        "id": f"call_{n}",
                                        "type": "function",
                                        "function": {
                                            "name": "read",
                                            "arguments": json.dumps({"path": n}),
                                        },
                                    }
                                ],
                            },
                            "finish_reason": None,
                        }
                    ],
                }
                for n in ("a", "b")
            ]
            chunks.append(
                {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]}
            )
            chunks.append({**base, "choices": [], "usage": USAGE})
            self._sse(chunks)
            return
        if behaviour == "tools":
            args = ['{"ci', 'ty": "Pa', 'ris"}']
            if not body.get("stream"):
                message = {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": "".join(args)},
                        }
                    ],
                }
                self._json(
                    200,
                    {
                        **base,
                        "object": "chat.completion",
                        "usage": USAGE,
                        "choices": [
                            {"index": 0, "message": message, "finish_reason": "tool_calls"}
                        ],
                    },
                )
                return
            chunks = [
                {
                    **base,
                    "choices": [
                        {
                            "index": 0,
                            "delta": {
                                "role": "assistant",
                                "tool_calls": [
                                    {
                                        "index": 0,
                                        "id": "call_1",
                                        "type": "function",
                                        "function": {"name": "get_weather", "arguments": ""},
                                    }
                                ],
                            },
                            "finish_reason": None,
                        }
                    ],
                }
            ]
            chunks += [
                {
                    **base,
                    "choices": [
                        {
                            "index": 0,
                            "delta": {"tool_calls": [{"index": 0, "function": {"arguments": a}}]},
                            "finish_reason": None,
                        }
                    ],
                }
                for a in args
            ]
            chunks.append(
                {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]}
            )
            chunks.append({**base, "choices": [], "usage": USAGE})
            self._sse(chunks)
            return
        if not body.get("stream"):
            message = {"role": "assistant", "content": "".join(ANSWER)}
            self._json(
                200,
                {
                    **base,
                    "object": "chat.completion",
                    "usage": USAGE,
                    "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
                },
            )
            return
        chunks = [
            {
                **base,
                "choices": [{"index": 0, "delta": {"role": "assistant"}, "finish_reason": None}],
            }
        ]
        chunks += [
            {**base, "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]}
            for piece in ANSWER
        ]
        chunks.append({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
        include_usage = (body.get("stream_options") or {}).get("include_usage")
        if include_usage:
            chunks.append({**base, "choices": [], "usage": USAGE})
        drop = {"broken": 1, "broken-mid": 2}.get(behaviour)
        self._sse(chunks, drop_after=drop)
