"""Fuzz the admin API of a real gateway process against its own OpenAPI document.

schemathesis draws requests from the document served at /openapi.json: schema-valid ones
(half of them aimed at an account that exists, so the happy paths run too) and
schema-invalid ones. Every answer must be a documented status with a documented body, never
a 5xx. Bounded: 20 examples per operation and mode.

schemathesis's ``negative_data_rejection`` check is not used: the admin token is added to
every request here, which repairs the "missing Authorization" that a negative case may
count as its invalid part, so that check would flag valid requests. Refusal of bad bodies
is asserted case by case in tests/admin/.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.support.gateways import GatewayCluster

EXAMPLES = 20
ACCOUNT = "fuzz-acct"
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


def admin_operations(url: str) -> list[Any]:
    document = httpx.get(f"{url}/openapi.json", timeout=10).json()
    schema = schemathesis.openapi.from_dict(document)
    found = [r.ok() for r in schema.get_all_operations()]  # type: ignore[union-attr]
    return [op for op in found if op.path.startswith("/admin/")]


@pytest.fixture(scope="module")
def target(gateway: GatewayCluster) -> tuple[str, dict[str, str], list[Any]]:
    url = gateway.urls[0]
    headers = {"Authorization": f"Bearer {gateway.env['CREDITGATE_ADMIN_TOKEN']}"}
    made = httpx.post(
        f"{url}/admin/accounts", json={"id": ACCOUNT, "tier": "pro", "months": 1}, headers=headers
    )
    assert made.status_code in (201, 409), made.text
    return url, headers, admin_operations(url)


def test_the_document_covers_the_admin_api(
    target: tuple[str, dict[str, str], list[Any]],
) -> None:
    _, _, operations = target
    assert {(op.method.upper(), op.path) for op in operations} >= {
        ("POST", "/admin/accounts"),
        ("GET", "/admin/accounts/{id}"),
        ("POST", "/admin/accounts/{id}/keys"),
        ("DELETE", "/admin/accounts/{id}/keys/{keyId}"),
        ("POST", "/admin/accounts/{id}/upgrade"),
        ("POST", "/admin/accounts/{id}/downgrade"),
        ("POST", "/admin/accounts/{id}/renew"),
        ("POST", "/admin/accounts/{id}/grant"),
        ("GET", "/admin/accounts/{id}/ledger"),
    }


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_fuzz_admin_answers_stay_inside_the_document(
    target: tuple[str, dict[str, str], list[Any]], mode: GenerationMode
) -> None:
    url, headers, operations = target
    with requests.Session() as session:
        for op in operations:
            strategy = op.as_strategy(generation_mode=mode)

            @settings(
                max_examples=EXAMPLES,
                deadline=None,
                database=None,
                suppress_health_check=list(HealthCheck),
            )
            @given(case=strategy, existing=st.booleans())
            def run(case: Any, existing: bool) -> None:
                if (
                    existing
                    and mode is GenerationMode.POSITIVE
                    and "id" in (case.path_parameters or {})
                ):
                    case.path_parameters["id"] = ACCOUNT
                case.call_and_validate(
                    base_url=url, session=session, headers=headers, checks=CHECKS
                )

            run()
