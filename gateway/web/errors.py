"""Errors as the web app's JSON answers: the handlers for Starlette's ``exception_handlers``."""

from __future__ import annotations

import logging

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from gateway.errors import CreditgateError, error_body, error_response

log = logging.getLogger("creditgate.app")


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    message = str(exc.detail)
    if exc.status_code in (404, 405):
        message = f"no route for {request.method} {request.url.path}"
    return JSONResponse(error_body(code, message), status_code=exc.status_code)


async def _internal_error(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return JSONResponse(error_body("internal_error", "internal error"), status_code=500)


EXCEPTION_HANDLERS = {
    CreditgateError: error_response,
    HTTPException: _http_error,
    Exception: _internal_error,
}
