"""The demo backends: signed calls only, LLM-shaped answers, deterministic usage, SSE."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import httpx
import pytest

from gateway.demo.backends import codegen_app, review_app, token_usage
from gateway.signing import signed_headers

SECRET = b"demo-test-secret"


def _signed(method: str, path: str, **extra: str) -> dict[str, str]:
    headers = signed_headers(
        SECRET, method=method, path=path, account="acct_demo", tier="pro",
        request_id="req-7", credits_remaining=99,
    )  # fmt: skip
    return headers | extra


@pytest.fixture
async def codegen() -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=codegen_app(SECRET))
    async with httpx.AsyncClient(transport=transport, base_url="http://codegen") as client:
        yield client


@pytest.fixture
async def review() -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=review_app(SECRET))
    async with httpx.AsyncClient(transport=transport, base_url="http://review") as client:
        yield client


def test_token_usage_is_deterministic_from_the_body_size() -> None:
    assert token_usage(b"") == {"prompt_tokens": 1, "completion_tokens": 42, "total_tokens": 43}
    assert token_usage(b"x" * 400) == {
        "prompt_tokens": 100,
        "completion_tokens": 240,
        "total_tokens": 340,
    }


async def test_unsigned_calls_are_refused(codegen: httpx.AsyncClient) -> None:
    response = await codegen.post("/api/projects/start-workflow", json={"prompt": "x"})
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_signature"


async def test_generate_answers_json_with_usage(
    codegen: httpx.AsyncClient, review: httpx.AsyncClient
) -> None:
    body = json.dumps({"prompt": "a todo app"}).encode()
    path = "/api/projects/start-workflow"
    response = await codegen.post(path, content=body, headers=_signed("POST", path))
    assert response.status_code == 200
    data = response.json()
    assert data["success"] is True
    assert "a todo app" in data["result"]
    assert data["usage"] == token_usage(body)
    assert (data["account"], data["requestId"]) == ("acct_demo", "req-7")

    path = "/api/review/generate"
    response = await review.post(path, content=body, headers=_signed("POST", path))
    assert response.status_code == 200
    assert response.json()["usage"] == token_usage(body)


def _events(text: str) -> list[str]:
    return [line[len("data: ") :] for line in text.splitlines() if line.startswith("data: ")]


@pytest.mark.parametrize(
    ("path", "query"),
    [("/api/projects/stream", ""), ("/api/projects/start-workflow", "?stream=true&delay_ms=0")],
)
async def test_stream_sends_chunks_then_usage_then_done(
    codegen: httpx.AsyncClient, path: str, query: str
) -> None:
    body = b'{"prompt": "stream me"}'
    response = await codegen.post(path + query, content=body, headers=_signed("POST", path))
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = _events(response.text)
    assert events[-1] == "[DONE]"
    final = json.loads(events[-2])
    assert final["usage"] == token_usage(body)
    assert len(events) >= 4


async def test_get_reports_tokens_in_a_header(
    codegen: httpx.AsyncClient, review: httpx.AsyncClient
) -> None:
    listing = await codegen.get("/api/projects/", headers=_signed("GET", "/api/projects/"))
    assert listing.status_code == 200
    assert len(listing.json()["items"]) == 3
    assert listing.headers["x-tokens-used"] == "120"
    item = await review.get("/api/review/r1", headers=_signed("GET", "/api/review/r1"))
    assert item.json()["id"] == "r1"


async def test_demo_fail_header_answers_that_status(review: httpx.AsyncClient) -> None:
    path = "/api/review/generate"
    response = await review.post(
        path, json={}, headers=_signed("POST", path, **{"X-Demo-Fail": "503"})
    )
    assert response.status_code == 503
    assert response.json()["error"] == "demo_failure"


async def test_chat_completions_in_openai_shape(codegen: httpx.AsyncClient) -> None:
    path = "/api/projects/v1/chat/completions"
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]}).encode()
    response = await codegen.post(path, content=body, headers=_signed("POST", path))
    assert response.status_code == 200
    data = response.json()
    assert data["object"] == "chat.completion"
    assert data["choices"][0]["message"]["role"] == "assistant"
    assert data["usage"] == token_usage(body)

    asked = {"model": "m", "messages": [], "stream": True}
    body = json.dumps(asked | {"stream_options": {"include_usage": True}}).encode()
    streamed = await codegen.post(path + "?delay_ms=0", content=body, headers=_signed("POST", path))
    events = _events(streamed.text)
    assert events[-1] == "[DONE]"
    last = json.loads(events[-2])
    assert last["usage"] == token_usage(body) and last["choices"] == []
    assert json.loads(events[-3])["choices"][0]["finish_reason"] == "stop"
    assert all(json.loads(e)["usage"] is None for e in events[:-2])
    assert json.loads(events[0])["object"] == "chat.completion.chunk"

    body = json.dumps(asked).encode()  # without stream_options, as OpenAI: no usage at all
    streamed = await codegen.post(path + "?delay_ms=0", content=body, headers=_signed("POST", path))
    events = _events(streamed.text)
    assert events[-1] == "[DONE]"
    assert all("usage" not in json.loads(e) for e in events[:-1])
