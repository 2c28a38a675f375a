"""Two stub LLM backends, a code generator and a code reviewer, that only accept signed calls.

They answer the way an LLM backend does, so the gateway has something real to charge:

- ``POST /api/projects/start-workflow`` and ``POST /api/review/generate``: JSON
  ``{"success": true, "result": ..., "usage": {"prompt_tokens", "completion_tokens",
  "total_tokens"}}``, the tokens derived from the request body's size (``token_usage``), so a
  test knows what the gateway must charge.
- ``POST /api/projects/stream`` and ``POST /api/review/stream`` (or ``?stream=true`` on the
  two above): Server-Sent Events, several ``data:`` chunks spaced by ``delay_ms`` (query,
  default 50), a final chunk carrying ``usage``, then ``data: [DONE]``.
- ``GET /api/projects/`` / ``GET /api/projects/{id}`` and ``GET /api/review/{id}``: small JSON
  without a body ``usage``; they report ``X-Tokens-Used`` as a header instead.
- ``POST <any prefix>/chat/completions``: OpenAI's chat-completion shape, so SDKs can be
  pointed at a gateway route (the demo's ``/v1/``). With ``"stream": true``, chunks as OpenAI
  sends them: the text in ``choices[0].delta``, a chunk with ``finish_reason: "stop"``, then,
  only when the body asks ``"stream_options": {"include_usage": true}``, a last chunk with
  ``choices: []`` and the ``usage`` (every chunk before it carrying ``"usage": null``), then
  ``data: [DONE]``.

To provoke failures by hand: ``X-Demo-Fail: <status>`` (400-599) answers that status with a
JSON error; ``X-Demo-Delay: <seconds>`` (at most 60) waits before answering, to try the
gateway's timeouts and client disconnects. Every answer echoes the verified account and
request id, so a caller can see what the gateway sent.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.signing import GatewaySignatureMiddleware, VerifiedRequest

BYTES_PER_TOKEN = 4
STREAM_CHUNKS = 5
DEFAULT_STREAM_DELAY_MS = 50
MAX_DEMO_DELAY_S = 60.0
GET_TOKENS = 120

Handler = Callable[[Request], Awaitable[Response]]


def token_usage(body: bytes) -> dict[str, int]:
    """What a call with this request body consumes: deterministic, from its size."""
    prompt = max(1, -(-len(body) // BYTES_PER_TOKEN))
    completion = 2 * prompt + 40
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def _caller(request: Request) -> dict[str, Any]:
    verified: VerifiedRequest | None = getattr(request.state, "gateway", None)
    if verified is None:
        return {}
    return {"account": verified.account, "requestId": verified.request_id, "tier": verified.tier}


def _prompt(body: bytes) -> str:
    try:
        data = json.loads(body) if body else {}
    except ValueError:
        return body.decode("utf-8", "replace")[:200]
    if isinstance(data, dict):
        for key in ("prompt", "code", "description", "input"):
            if isinstance(data.get(key), str):
                return str(data[key])[:200]
        messages = data.get("messages")
        if isinstance(messages, list) and messages and isinstance(messages[-1], dict):
            return str(messages[-1].get("content", ""))[:200]
    return ""


def _chunks(kind: str, prompt: str) -> list[str]:
    subject = prompt or "your request"
    if kind == "codegen":
        return [
            f"# Plan for: {subject}\n",
            "def main() -> None:\n",
            "    steps = ['scaffold', 'implement', 'test']\n",
            "    for step in steps:\n",
            "        print(step)\n",
        ][:STREAM_CHUNKS]
    return [
        f"Review of: {subject}\n",
        "1. Names say what things are.\n",
        "2. Consider a test for the empty input.\n",
        "3. The error path should log the request id.\n",
        "Verdict: approve with comments.\n",
    ][:STREAM_CHUNKS]


def _wants_stream(request: Request, body: bytes) -> bool:
    if request.query_params.get("stream", "").lower() in ("1", "true", "yes"):
        return True
    try:
        data = json.loads(body) if body else None
    except ValueError:
        return False
    return isinstance(data, dict) and data.get("stream") is True


def _sse(payload: dict[str, Any] | str) -> bytes:
    text = payload if isinstance(payload, str) else json.dumps(payload)
    return f"data: {text}\n\n".encode()


def _include_usage(body: bytes) -> bool:
    """Whether an OpenAI request asks for the streamed ``usage`` (``stream_options``)."""
    try:
        data = json.loads(body) if body else None
    except ValueError:
        return False
    options = data.get("stream_options") if isinstance(data, dict) else None
    return isinstance(options, dict) and options.get("include_usage") is True


def _stream(request: Request, kind: str, body: bytes, *, openai: bool = False) -> Response:
    usage = token_usage(body)
    with_usage = openai and _include_usage(body)
    try:
        delay = float(request.query_params.get("delay_ms", DEFAULT_STREAM_DELAY_MS)) / 1000
    except ValueError:
        delay = DEFAULT_STREAM_DELAY_MS / 1000
    delay = min(max(delay, 0.0), 5.0)
    chunks = _chunks(kind, _prompt(body))
    created = int(time.time())

    async def events() -> AsyncIterator[bytes]:
        for index, text in enumerate(chunks):
            if index:
                await asyncio.sleep(delay)
            if openai:
                yield _sse(_openai_chunk(text, created, finish=None, with_usage=with_usage))
            else:
                yield _sse({"index": index, "delta": text})
        await asyncio.sleep(delay)
        if openai:
            yield _sse(_openai_chunk("", created, finish="stop", with_usage=with_usage))
            if with_usage:
                last = _openai_chunk("", created, finish=None, with_usage=True)
                yield _sse(last | {"choices": [], "usage": usage})
        else:
            yield _sse({"index": len(chunks), "done": True, "usage": usage, **_caller(request)})
        yield _sse("[DONE]")

    return StreamingResponse(
        events(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


def _openai_chunk(
    text: str, created: int, *, finish: str | None, with_usage: bool
) -> dict[str, Any]:
    delta = {"role": "assistant", "content": text} if finish is None else {}
    chunk: dict[str, Any] = {
        "id": "chatcmpl-demo",
        "object": "chat.completion.chunk",
        "created": created,
        "model": "creditgate-demo",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    if with_usage:
        chunk["usage"] = None
    return chunk


def _generate(kind: str) -> Handler:
    async def handler(request: Request) -> Response:
        body = await request.body()
        if _wants_stream(request, body):
            return _stream(request, kind, body)
        result = "".join(_chunks(kind, _prompt(body)))
        return JSONResponse(
            {"success": True, "result": result, "usage": token_usage(body), **_caller(request)}
        )

    return handler


def _streaming(kind: str) -> Handler:
    async def handler(request: Request) -> Response:
        return _stream(request, kind, await request.body())

    return handler


def _item(kind: str) -> Handler:
    async def handler(request: Request) -> Response:
        item_id = request.path_params.get("item_id", "")
        if item_id:
            data: dict[str, Any] = {"id": item_id, "kind": kind, "status": "done"}
        else:
            data = {"items": [{"id": f"{kind}-{n}", "status": "done"} for n in (1, 2, 3)]}
        return JSONResponse(
            {"success": True, **data, **_caller(request)},
            headers={"X-Tokens-Used": str(GET_TOKENS)},
        )

    return handler


async def _chat_completions(request: Request) -> Response:
    body = await request.body()
    if _wants_stream(request, body):
        return _stream(request, "codegen", body, openai=True)
    return JSONResponse(
        {
            "id": "chatcmpl-demo",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": "creditgate-demo",
            "choices": [
                {
                    "index": 0,
                    "message": {
                        "role": "assistant",
                        "content": "".join(_chunks("codegen", _prompt(body))),
                    },
                    "finish_reason": "stop",
                }
            ],
            "usage": token_usage(body),
        }
    )


class DemoFaults:
    """ASGI middleware honouring ``X-Demo-Fail`` and ``X-Demo-Delay``, for manual testing."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            headers = {
                k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]
            }
            delay = _number(headers.get("x-demo-delay"))
            if delay is not None and delay > 0:
                await asyncio.sleep(min(delay, MAX_DEMO_DELAY_S))
            status = _number(headers.get("x-demo-fail"))
            if status is not None and 400 <= status <= 599:
                response = JSONResponse(
                    {
                        "success": False,
                        "error": "demo_failure",
                        "message": f"X-Demo-Fail asked for {int(status)}",
                    },
                    status_code=int(status),
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _number(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        return None


def _app(prefix: str, kind: str, generate_path: str, secret: bytes) -> ASGIApp:
    routes = [
        Route(f"{prefix}{generate_path}", _generate(kind), methods=["POST"]),
        Route(f"{prefix}stream", _streaming(kind), methods=["POST"]),
        Route("/{base:path}/chat/completions", _chat_completions, methods=["POST"]),
        Route(f"{prefix}{{item_id}}", _item(kind), methods=["GET"]),
    ]
    if kind == "codegen":
        routes.append(Route(prefix, _item(kind), methods=["GET"]))
    return GatewaySignatureMiddleware(DemoFaults(Starlette(routes=routes)), secret)


def codegen_app(secret: bytes) -> ASGIApp:
    """The code-generation backend (``/api/projects/``), signature-checked."""
    return _app("/api/projects/", "codegen", "start-workflow", secret)


def review_app(secret: bytes) -> ASGIApp:
    """The code-review backend (``/api/review/``), signature-checked."""
    return _app("/api/review/", "review", "generate", secret)
