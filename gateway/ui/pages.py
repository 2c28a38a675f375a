"""Rendering the pages: Jinja2 templates, the security headers, cookies, CSRF, static files.

Every page answers with a strict Content-Security-Policy: scripts and styles only from this
origin's ``/ui/static/`` (no inline script), forms post only here, no framing. A page is never
cached (it may hold a key shown once). A write is accepted only with its session's CSRF token
(a hidden form field) and, when the browser sends one, an ``Origin`` of this host.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from gateway.errors import CreditgateError, NotFound, PayloadTooLarge

if TYPE_CHECKING:
    from jinja2 import Environment

HERE = Path(__file__).parent
STATIC = HERE / "static"
STATIC_FILES = frozenset({"ui.js", "ui.css"})

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",  # "no-referrer" would make Origin "null"
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
}


@functools.cache
def templates() -> Environment:
    """The templates, loaded at the first page: a serving process that shows none never
    imports Jinja2 (``tests/test_imports.py``)."""
    from jinja2 import Environment, FileSystemLoader, select_autoescape

    return Environment(
        loader=FileSystemLoader(HERE / "templates"),
        autoescape=select_autoescape(["html"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )


_compiled = False


async def templates_compiled() -> None:
    """Import Jinja2 and compile every template in a thread, once per process: some 0.1 s of
    work that, in the event loop's thread, would hold every request the worker serves."""
    global _compiled
    if not _compiled:
        await asyncio.to_thread(lambda: [templates().get_template(n) for n in TEMPLATES])
        _compiled = True


TEMPLATES = tuple(sorted(path.name for path in (HERE / "templates").glob("*.html")))

Endpoint = Callable[[Request], Awaitable[Response]]


def route(path: str, endpoint: Endpoint, methods: list[str]) -> Route:
    """A page's route (no OpenAPI entry): its endpoint runs once ``templates_compiled``."""

    async def compiled_first(request: Request) -> Response:
        await templates_compiled()
        return await endpoint(request)

    return Route(path, compiled_first, methods=methods, include_in_schema=False)


def render(name: str, status: int = 200, **context: Any) -> HTMLResponse:
    html = templates().get_template(name).render(**context)
    return HTMLResponse(html, status_code=status, headers=SECURITY_HEADERS)


def redirect(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303, headers=SECURITY_HEADERS)


def set_session_cookie(
    response: Response, request: Request, name: str, token: str, *, path: str, ttl_s: int
) -> None:
    response.set_cookie(
        name,
        token,
        max_age=ttl_s,
        path=path,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


def clear_session_cookie(response: Response, request: Request, name: str, *, path: str) -> None:
    response.delete_cookie(
        name, path=path, httponly=True, samesite="strict", secure=request.url.scheme == "https"
    )


def same_origin(request: Request) -> bool:
    """False when the browser says the form came from another site."""
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        return origin is None
    host = request.headers.get("host", "")
    return origin.split("://", 1)[-1] == host


async def static_file(request: Request) -> Response:
    name = request.path_params["name"]
    if name not in STATIC_FILES:
        raise NotFound(f"no static file {name!r}")
    response = FileResponse(STATIC / name)
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Cache-Control"] = "no-cache"
    return response


def static_routes() -> list[Route]:
    return [Route("/ui/static/{name}", static_file, methods=["GET"], include_in_schema=False)]


class CsrfRefused(CreditgateError):
    """A page's write without its session's CSRF token, or from another site."""

    code, status = "csrf_refused", 403


FORM_LIMIT = 16_384
"""The largest form read (a reason, a name, a token: far less)."""


async def form(request: Request) -> dict[str, str]:
    """A posted ``application/x-www-form-urlencoded`` form, each field's last value."""
    return dict(await _pairs(request))


async def form_values(request: Request, name: str) -> list[str]:
    """Every value of one field of the posted form (checkboxes of one name), in order."""
    return [value for field, value in await _pairs(request) if field == name]


async def _pairs(request: Request) -> list[tuple[str, str]]:
    body = await request.body()  # read once: Starlette keeps it for a second look
    if len(body) > FORM_LIMIT:
        raise PayloadTooLarge(f"the form is over {FORM_LIMIT} bytes")
    return parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)
