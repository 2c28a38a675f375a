"""The operators' usage history across accounts, under /admin (behind the admin token).

- ``GET /admin/usage/history?from=&to=&group=day|route|key|account&account=ID&format=``:
  every account's usage (or one account's with ``account``), bucketed;
- ``GET /admin/usage/top?from=&to=&limit=&format=``: the accounts that spent the most;
- ``GET /admin/usage/ledger?from=&to=&account=ID&format=``: the movements of the range.

Reads only: no Idempotency-Key, nothing changes. Parameters as ``gateway.accounts.history``.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from gateway.accounts import csvexport, validation
from gateway.accounts import history as usage
from gateway.admin.handlers import admin_endpoint, services_of

CSV_TYPE = "text/csv; charset=utf-8"


def _account(request: Request) -> str | None:
    given = request.query_params.get("account")
    return None if given is None else validation.account_id(given, field="account")


def _csv(body: str, name: str) -> Response:
    headers = {"Content-Disposition": f'attachment; filename="{name}.csv"'}
    return Response(body, media_type=CSV_TYPE, headers=headers)


async def usage_history(request: Request) -> Response:
    wanted = usage.history_query(
        request.query_params, groupings=("day", "route", "key", "account"), extra=("account",)
    )
    buckets = await usage.usage_history(services_of(request), wanted, account_id=_account(request))
    if wanted.format == "csv":
        rows = map(usage.history_row, buckets)
        return _csv(csvexport.document(usage.HISTORY_COLUMNS, rows), f"usage-{wanted.grouping}")
    return JSONResponse({"success": True, **usage.history_view(wanted, buckets)})


async def top_accounts(request: Request) -> Response:
    wanted = usage.history_query(request.query_params, groupings=("account",))
    top = await usage.top_accounts(services_of(request), wanted)
    if wanted.format == "csv":
        return _csv(csvexport.document(usage.HISTORY_COLUMNS, map(usage.history_row, top)), "top")
    return JSONResponse({"success": True, **usage.history_view(wanted, top)})


async def ledger_export(request: Request) -> Response:
    wanted = usage.history_query(request.query_params, groupings=("day",), extra=("account",))
    rows = usage.ledger_rows(services_of(request), wanted, account_id=_account(request))
    if wanted.format == "csv":
        return StreamingResponse(
            csvexport.stream(usage.LEDGER_COLUMNS, (usage.ledger_row(r) async for r in rows)),
            media_type=CSV_TYPE,
            headers={"Content-Disposition": 'attachment; filename="ledger.csv"'},
        )
    entries = []
    async for record in rows:
        entries.append(usage.ledger_entry_view(record))
        if len(entries) == wanted.limit:
            break
    await rows.aclose()
    return JSONResponse(
        {
            "success": True,
            "from": usage.iso(wanted.start),
            "to": usage.iso(wanted.end),
            "entries": entries,
        }
    )


def usage_routes() -> list[Route]:
    return [
        Route("/usage/history", admin_endpoint(usage_history), methods=["GET"]),
        Route("/usage/top", admin_endpoint(top_accounts), methods=["GET"]),
        Route("/usage/ledger", admin_endpoint(ledger_export), methods=["GET"]),
    ]
