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
