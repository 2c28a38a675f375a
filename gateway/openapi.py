"""Small builders of OpenAPI 3.1 fragments, shared by the documents' parts.

The web app assembles the whole document (``gateway.web.openapi``); each front end describes
its own paths with these (``gateway.admin.openapi``), so neither imports the other.
"""

from __future__ import annotations

from typing import Any

Schema = dict[str, Any]

TIME: Schema = {"type": ["string", "null"], "format": "date-time"}


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def json_content(schema: Schema, description: str) -> Schema:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def error_refs(*statuses: int) -> dict[str, Schema]:
    return {str(s): {"$ref": f"#/components/responses/E{s}"} for s in statuses}


def ok(name: str, fields: Schema, status: int = 200, description: str = "Done.") -> Schema:
    schema = {
        "type": "object",
        "required": ["success", *fields],
        "properties": {"success": {"const": True}, **fields},
    }
    return {str(status): json_content(schema, description)}


def json_body(
    properties: Schema, required: list[str] | None = None, *, optional: bool = False
) -> Schema:
    schema: Schema = {"type": "object", "additionalProperties": False, "properties": properties}
    if required:
        schema["required"] = required
    return {"required": not optional, "content": {"application/json": {"schema": schema}}}


def query(name: str, schema: Schema, description: str) -> Schema:
    """An optional query parameter."""
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": schema,
        "description": description,
    }


RANGE_PARAMS: list[Schema] = [
    query(
        "from",
        {"type": "string"},
        "ISO 8601 date or date-time, UTC (default: 30 days before 'to').",
    ),
    query(
        "to",
        {"type": "string"},
        "ISO 8601, excluded (default: now); at most 366 days after 'from'.",
    ),
    query("format", {"enum": ["json", "csv"]}, "csv: an attachment, formula-safe cells."),
]

CSV_CONTENT: Schema = {"text/csv": {"schema": {"type": "string"}}}

_COUNTS: Schema = {
    "requests": {"type": "integer"},
    "creditsCharged": {"type": "integer", "description": "Taken minus given back."},
    "creditsRefunded": {"type": "integer"},
    "tokens": {"type": "integer"},
}


def history_operation(
    summary: str, security: str, groupings: list[str], bucket_field: str | None, *extra: Schema
) -> Schema:
    """A usage history read: JSON buckets and totals, or CSV (``?format=csv``)."""
    bucket: Schema = {"type": "object", "properties": dict(_COUNTS)}
    if bucket_field is not None:
        bucket["properties"][bucket_field] = {"type": ["string", "null"]}
    schema = {
        "type": "object",
        "required": ["success", "from", "to", "group", "buckets", "totals"],
        "properties": {
            "success": {"const": True},
            "from": {"type": "string", "format": "date-time"},
            "to": {"type": "string", "format": "date-time"},
            "group": {"enum": groupings},
            "buckets": {"type": "array", "items": bucket},
            "totals": {"type": "object", "properties": dict(_COUNTS)},
        },
    }
    params = [*RANGE_PARAMS, *extra]
    if len(groupings) > 1:
        params.append(query("group", {"enum": groupings}, "The buckets (default: the first)."))
    answer = json_content(schema, "The buckets, and their totals.")
    answer["content"].update(CSV_CONTENT)
    return {
        "tags": ["admin" if security == "adminToken" else "user"],
        "summary": summary,
        "security": [{security: []}],
        "parameters": params,
        "responses": {"200": answer, **error_refs(400, 401, 503)},
    }


def ledger_range_operation(summary: str, security: str, *extra: Schema) -> Schema:
    """A ledger export: the range's movements, oldest first (JSON: the first ``limit``)."""
    entries = {
        "type": "object",
        "required": ["success", "from", "to", "entries"],
        "properties": {
            "success": {"const": True},
            "from": {"type": "string"},
            "to": {"type": "string"},
            "entries": {"type": "array", "items": {"type": "object"}},
        },
    }
    answer = json_content(entries, "The movements, oldest first.")
    answer["content"].update(CSV_CONTENT)
    limit = query("limit", {"type": "integer", "minimum": 1, "maximum": 100}, "JSON rows.")
    return {
        "tags": ["admin" if security == "adminToken" else "user"],
        "summary": summary,
        "security": [{security: []}],
        "parameters": [*RANGE_PARAMS, limit, *extra],
        "responses": {"200": answer, **error_refs(400, 401, 503)},
    }
