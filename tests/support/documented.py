"""Checking answers against the OpenAPI document: the documented operation of a request, and
the schemathesis checks an answer must pass."""

from __future__ import annotations

import re
from typing import Any

from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


def operation_of(schema: Any, method: str, path: str) -> tuple[Any, dict[str, str]]:
    """The documented operation serving ``method path``, and its path parameters."""
    bare = path.split("?")[0]
    for result in schema.get_all_operations():
        op = result.ok()
        pattern = re.sub(r"\\\{([^}]*)\\\}", r"(?P<\1>[^/]+)", re.escape(op.path))
        found = re.fullmatch(pattern, bare)
        if op.method.upper() == method and found:
            return op, found.groupdict()
    raise AssertionError(f"{method} {bare} is not documented")
