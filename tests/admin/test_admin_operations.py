"""The table of admin operations: both front ends serve it, entry for entry, and nothing else.

No server and no Redis here: the routes, the parser and the document are read as built, and
a ``Call`` is checked on its own (the operations themselves run in the API and CLI tests).
"""

from __future__ import annotations

import argparse
import re
from typing import Any

import pytest
from starlette.routing import Route

from gateway.admin.cli import call_of
from gateway.admin.openapi import admin_paths
from gateway.admin.operations import API, CLI, OPERATIONS, Call, FrontEnd
from gateway.admin.routes import admin_routes
from gateway.admin.usage import usage_routes
from gateway.cli import build_parser
from gateway.errors import InvalidRequest


def shape(path: str) -> str:
    return re.sub(r"\{[^}]*\}", "{}", path)


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    (action,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    choices: dict[str, argparse.ArgumentParser] = action.choices
    return choices


def test_every_entry_is_served_at_its_route_and_nothing_else_is() -> None:
    served = {
        (method, route.path)
        for route in admin_routes()
        if isinstance(route, Route) and ":path}" not in route.path
        for method in (route.methods or set()) - {"HEAD"}
    }
    reads = {("GET", route.path) for route in usage_routes()}  # read-only, not in the table
    assert served == {(op.method, op.path) for op in OPERATIONS} | reads


def test_every_entry_is_documented_and_every_documented_operation_has_an_entry() -> None:
    documented = {
        (method.upper(), shape(path)) for path, item in admin_paths().items() for method in item
    }
    reads = {("GET", "/admin" + route.path) for route in usage_routes()}
    assert documented == {(op.method, shape("/admin" + op.path)) for op in OPERATIONS} | reads


def test_every_admin_command_is_an_entry_of_the_table() -> None:
    commands = subcommands(build_parser())
    offered = {
        (group, action) for group in ("accounts", "keys") for action in subcommands(commands[group])
    }
    table = {(op.command.group, op.command.action) for op in OPERATIONS if op.command}
    assert offered == table
    assert [op.name for op in OPERATIONS if op.command is None] == ["ledger"]


@pytest.mark.parametrize(
    ("argv", "path", "query", "body"),
    [
        (
            ["accounts", "create", "--id", "a1", "--months", "2"],
            {},
            {},
            {"id": "a1", "tier": "free", "months": 2},
        ),
        (["accounts", "list", "--after", "a1"], {}, {"limit": 100, "after": "a1"}, {}),
        (
            ["accounts", "grant", "a1", "5", "--reason", "r"],
            {"account_id": "a1"},
            {},
            {"credits": 5, "reason": "r"},
        ),
        (["keys", "revoke", "a1", "key_1"], {"account_id": "a1", "key_id": "key_1"}, {}, {}),
    ],
)
async def test_the_flags_given_become_the_apis_request(
    argv: list[str], path: dict[str, Any], query: dict[str, Any], body: dict[str, Any]
) -> None:
    args = build_parser().parse_args(argv)
    (command,) = [
        op.command
        for op in OPERATIONS
        if op.command and (op.command.group, op.command.action) == tuple(argv[:2])
    ]
    made = call_of(command, args)
    assert (made.front, made.path, made.query, await made.body()) == (CLI, path, query, body)


def call(front: FrontEnd, **query: object) -> Call:
    async def body() -> dict[str, Any]:
        raise AssertionError("a page reads no body")

    return Call(front, path={}, query=query, body=body)


def cursor(value: object) -> str:
    return f"checked {value}"


def test_each_front_end_keeps_its_page_limit_and_its_words() -> None:
    assert call(API, limit="200").page("after", cursor, default=100) == (200, None)
    assert call(API).page("after", cursor, default=100) == (100, None)
    assert call(CLI, limit=1000, after="x").page("after", cursor, default=100) == (
        1000,
        "checked x",
    )
    for bad in ("201", "0", "-1", "ten", ""):
        with pytest.raises(
            InvalidRequest, match="^query 'limit' must be an integer between 1 and 200$"
        ):
            call(API, limit=bad).page("after", cursor, default=100)
    for size in (0, 1001):
        with pytest.raises(InvalidRequest, match="^--limit must be between 1 and 1000$"):
            call(CLI, limit=size).page("after", cursor, default=100)
    with pytest.raises(InvalidRequest, match="unknown field"):
        call(API, before="x").page("after", cursor, default=100)


def test_changes_are_attributed_to_the_front_end() -> None:
    assert (call(API).reason("ticket 9"), call(CLI).reason("")) == ("admin: ticket 9", "cli")


def test_every_write_takes_an_idempotency_key_in_both_front_ends_and_no_read_does() -> None:
    commands = subcommands(build_parser())
    paths = admin_paths()
    for op in OPERATIONS:
        writes = op.method in ("POST", "PATCH", "DELETE")
        assert op.writes == writes, op.name
        (item,) = [v for p, v in paths.items() if shape(p) == shape("/admin" + op.path)]
        params = [p["name"] for p in item[op.method.lower()].get("parameters", [])]
        assert ("Idempotency-Key" in params) == writes, op.name
        if op.command is not None:
            parser = subcommands(commands[op.command.group])[op.command.action]
            flags = {s for a in parser._actions for s in a.option_strings}
            assert ("--idempotency-key" in flags) == writes, op.name
