"""The backend-side verifier: what passes, and every way a request must be refused."""

from __future__ import annotations

import hashlib
import hmac

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from gateway.signing import (
    ACCOUNT_HEADER,
    CREDITS_HEADER,
    GATEWAY_HEADERS,
    REQUEST_ID_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    GatewaySignatureMiddleware,
    SignatureError,
    VerifiedRequest,
    sign,
    signed_headers,
    verify,
)

SECRET = b"test-signing-secret"
NOW = 1_790_000_000.0


def _headers(**overrides: str) -> dict[str, str]:
    headers = signed_headers(
        SECRET,
        method="POST",
        path="/api/projects/start-workflow",
        account="acct_1",
        tier="pro",
        request_id="req-1",
        credits_remaining=41,
        now=NOW,
    )
    headers.update(overrides)
    return headers


def test_sign_is_hmac_sha256_over_the_contract_message() -> None:
    expected = hmac.new(
        SECRET, b"1790000000\nPOST\n/api/x\nacct_1\nreq-1", hashlib.sha256
    ).hexdigest()
    got = sign(
        SECRET, timestamp="1790000000", method="post", path="/api/x", account="acct_1",
        request_id="req-1",
    )  # fmt: skip
    assert got == expected
    other = hmac.new(b"another", b"1790000000\nPOST\n/api/x\nacct_1\nreq-1", "sha256").hexdigest()
    for secret, signature in ((b"another", other), (SECRET, expected)):  # each by its own key
        assert sign(
            secret, timestamp="1790000000", method="POST", path="/api/x", account="acct_1",
            request_id="req-1",
        ) == signature  # fmt: skip


def test_verify_accepts_a_signed_request() -> None:
    verified = verify(SECRET, _headers(), "POST", "/api/projects/start-workflow", now=NOW + 10)
    assert verified == VerifiedRequest(
        account="acct_1", tier="pro", request_id="req-1", credits_remaining=41, timestamp=NOW
    )


def test_header_names_are_case_insensitive() -> None:
    lowered = {k.lower(): v for k, v in _headers().items()}
    assert verify(SECRET, lowered, "POST", "/api/projects/start-workflow", now=NOW).account == (
        "acct_1"
    )


@pytest.mark.parametrize(
    ("method", "path", "overrides"),
    [
        ("GET", "/api/projects/start-workflow", {}),
        ("POST", "/api/projects/other", {}),
        ("POST", "/api/projects/start-workflow", {ACCOUNT_HEADER: "acct_2"}),
        ("POST", "/api/projects/start-workflow", {REQUEST_ID_HEADER: "req-2"}),
        ("POST", "/api/projects/start-workflow", {TIMESTAMP_HEADER: str(int(NOW) + 1)}),
    ],
    ids=["method", "path", "account", "request-id", "timestamp"],
)
def test_tampered_requests_are_refused(method: str, path: str, overrides: dict[str, str]) -> None:
    with pytest.raises(SignatureError, match="does not match"):
        verify(SECRET, _headers(**overrides), method, path, now=NOW)


def test_wrong_secret_is_refused() -> None:
    with pytest.raises(SignatureError, match="does not match"):
        verify(b"other", _headers(), "POST", "/api/projects/start-workflow", now=NOW)


@pytest.mark.parametrize("offset", [-301.0, 301.0], ids=["stale", "future"])
def test_timestamps_outside_max_age_are_refused(offset: float) -> None:
    with pytest.raises(SignatureError, match="window"):
        verify(SECRET, _headers(), "POST", "/api/projects/start-workflow", now=NOW - offset)


def test_max_age_is_configurable() -> None:
    path = "/api/projects/start-workflow"
    assert verify(SECRET, _headers(), "POST", path, now=NOW + 299).request_id == "req-1"
    with pytest.raises(SignatureError, match="window"):
        verify(SECRET, _headers(), "POST", path, now=NOW + 11, max_age=10)


@pytest.mark.parametrize("name", GATEWAY_HEADERS)
def test_each_missing_header_is_refused(name: str) -> None:
    headers = _headers()
    del headers[name]
    with pytest.raises(SignatureError, match=f"missing header {name}"):
        verify(SECRET, headers, "POST", "/api/projects/start-workflow", now=NOW)


@pytest.mark.parametrize(
    ("overrides", "why"),
    [
        ({SIGNATURE_HEADER: "zz" * 32}, "not a hex"),
        ({SIGNATURE_HEADER: "ab"}, "not a hex"),
        ({TIMESTAMP_HEADER: "yesterday"}, "not a number"),
        ({TIMESTAMP_HEADER: "nan"}, "not a number"),
        ({CREDITS_HEADER: "many"}, "not an integer"),
    ],
)
def test_malformed_headers_are_refused(overrides: dict[str, str], why: str) -> None:
    with pytest.raises(SignatureError, match=why):
        verify(SECRET, _headers(**overrides), "POST", "/api/projects/start-workflow", now=NOW)


async def _whoami(request: Request) -> JSONResponse:
    verified: VerifiedRequest = request.state.gateway
    return JSONResponse({"account": verified.account, "requestId": verified.request_id})


@pytest.fixture
def client() -> httpx.AsyncClient:
    app = GatewaySignatureMiddleware(
        Starlette(routes=[Route("/api/projects/{rest:path}", _whoami, methods=["POST"])]),
        SECRET,
    )
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://backend")


async def test_middleware_passes_verified_requests_with_state(client: httpx.AsyncClient) -> None:
    headers = signed_headers(
        SECRET, method="POST", path="/api/projects/a b", account="acct_9", tier="free",
        request_id="req-9", credits_remaining=3,
    )  # fmt: skip
    async with client:
        response = await client.post("/api/projects/a%20b?x=1", headers=headers, json={})
    assert response.status_code == 200
    assert response.json() == {"account": "acct_9", "requestId": "req-9"}


async def test_middleware_answers_401_json(client: httpx.AsyncClient) -> None:
    async with client:
        unsigned = await client.post("/api/projects/x", json={})
        forged = await client.post(
            "/api/projects/x", headers=_headers(), json={}
        )  # signed for another path and a long-gone time
    assert unsigned.status_code == 401
    assert unsigned.json() == {
        "success": False,
        "error": "invalid_signature",
        "message": f"missing header {ACCOUNT_HEADER}",
    }
    assert forged.status_code == 401
    assert forged.json()["error"] == "invalid_signature"


def test_empty_secret_is_refused() -> None:
    with pytest.raises(ValueError, match="must not be empty"):
        GatewaySignatureMiddleware(Starlette(), b"")


async def raw_asgi(
    middleware: GatewaySignatureMiddleware,
    scope: dict[str, object],
    incoming: list[dict[str, object]],
) -> list[dict[str, object]]:
    """Run the middleware on one raw ASGI scope; what it sent."""
    sent: list[dict[str, object]] = []

    async def receive() -> dict[str, object]:
        return incoming.pop(0) if incoming else {"type": "http.disconnect"}

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    await middleware(scope, receive, send)  # type: ignore[arg-type]
    return sent


async def test_two_of_a_signed_header_are_refused_whichever_comes_first() -> None:
    reached: list[str] = []

    async def app(scope: object, receive: object, send: object) -> None:
        reached.append("app")

    good = signed_headers(
        SECRET, method="GET", path="/x", account="acct_1", tier="pro",
        request_id="req-1", credits_remaining=1,
    )  # fmt: skip
    raw = [(k.lower().encode(), v.encode()) for k, v in good.items()]
    for doubled in (
        [(b"x-gateway-account", b"acct_other"), *raw],
        [*raw, (b"x-gateway-account", b"acct_1")],
    ):
        scope = {"type": "http", "method": "GET", "path": "/x", "headers": doubled}
        sent = await raw_asgi(GatewaySignatureMiddleware(app, SECRET), scope, [])  # type: ignore[arg-type]
        assert sent[0]["status"] == 401
        assert b"sent more than once" in sent[1]["body"]  # type: ignore[operator]
    assert reached == []


async def test_a_websocket_is_refused_unverified() -> None:
    reached: list[str] = []

    async def app(scope: object, receive: object, send: object) -> None:
        reached.append("app")

    scope = {"type": "websocket", "path": "/ws", "headers": []}
    sent = await raw_asgi(
        GatewaySignatureMiddleware(app, SECRET),  # type: ignore[arg-type]
        scope,
        [{"type": "websocket.connect"}],
    )
    assert sent == [{"type": "websocket.close", "code": 1008, "reason": "not via the gateway"}]
    assert reached == []
