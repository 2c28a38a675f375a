"""``creditgate accounts ...`` and ``creditgate keys ...`` run in-process on real Redis."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from gateway.cli import main
from gateway.credits import keys
from gateway.credits.outboxes import event_fields

Run = Callable[..., tuple[int, str, str]]


@pytest.fixture
def cli(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    redis_url: str,
    store_url: str,
) -> Iterator[Run]:
    """Run ``creditgate ARGS`` with the test Redis (flushed) and store; (code, out, err)."""
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    client.flushdb()
    monkeypatch.chdir(tmp_path)  # no stray .env or creditgate.db
    monkeypatch.setenv("CREDITGATE_REDIS_URL", redis_url)
    monkeypatch.setenv("CREDITGATE_DATABASE_URL", store_url)
    monkeypatch.delenv("CREDITGATE_ADMIN_TOKEN", raising=False)

    def run(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = main(["--log-level", "WARNING", *args])
        out, err = capsys.readouterr()
        return code, out, err

    yield run
    client.close()


def run_json(cli: Run, *args: str) -> Any:
    code, out, err = cli(*args, "--json")
    assert code == 0, err
    return json.loads(out)


@pytest.mark.parametrize("store_kind", ["sqlite", "postgresql"])
def test_create_show_grant_as_json(cli: Run, store_kind: str) -> None:
    created = run_json(cli, "accounts", "create", "--id", "cli-1", "--email", "a@example.com")
    assert created["apiKey"].startswith("cg_")
    assert created["account"]["credits"] == 5

    granted = run_json(cli, "accounts", "grant", "cli-1", "10", "--reason", "goodwill")
    assert granted["account"]["bonusCredits"] == 10

    listed = run_json(cli, "accounts", "list", "--limit", "1")
    assert [a["id"] for a in listed["accounts"]] == ["cli-1"] and listed["next"] == "cli-1"
    assert run_json(cli, "accounts", "list", "--after", "cli-1") == {"accounts": [], "next": None}

    shown = run_json(cli, "accounts", "show", "cli-1")["account"]
    assert (shown["creditsRemaining"], shown["email"]) == (15, "a@example.com")
    assert [k["id"] for k in shown["keys"]] == [created["keyId"]]


def test_tables_by_default(cli: Run) -> None:
    code, out, _ = cli("accounts", "create", "--id", "cli-t", "--tier", "pro", "--months", "2")
    assert code == 0
    assert "api key (shown once" in out and "cg_" in out
    assert "subscriptionTier" in out and "pro" in out

    code, out, _ = cli("accounts", "list")
    lines = out.splitlines()
    assert code == 0 and lines[0].split() == ["id", "email", "tier", "createdAt"]
    assert lines[1].split()[:3] == ["cli-t", "-", "pro"]

    code, out, _ = cli("keys", "list", "cli-t")
    assert code == 0 and "prefix" in out.splitlines()[0] and "default" in out


def test_tier_changes(cli: Run) -> None:
    run_json(cli, "accounts", "create", "--id", "cli-s")
    up = run_json(cli, "accounts", "upgrade", "cli-s", "--tier", "enterprise", "--months", "1")
    assert up["account"]["credits"] == 1000
    end = up["account"]["subscriptionEndsAt"]
    renewed = run_json(cli, "accounts", "renew", "cli-s", "--months", "3", "--reason", "paid")
    assert renewed["account"]["subscriptionEndsAt"] > end
    down = run_json(cli, "accounts", "downgrade", "cli-s", "--reason", "request")
    assert (down["account"]["subscriptionTier"], down["account"]["credits"]) == ("free", 5)


def test_changes_are_attributed_to_the_cli(cli: Run, redis_url: str) -> None:
    run_json(cli, "accounts", "create", "--id", "cli-r")
    run_json(cli, "accounts", "grant", "cli-r", "3", "--reason", "ticket 9")
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        entries: list[tuple[str, dict[str, str]]] = client.xrange(  # type: ignore[assignment]
            keys.account_keys("cli-r").outbox
        )
    finally:
        client.close()
    notes = [(f["kind"], f["note"]) for f in (event_fields(e) for _, e in entries)]
    assert notes == [("open", "cli: account created"), ("grant", "cli: ticket 9")]


def test_keys_create_and_revoke(cli: Run) -> None:
    run_json(cli, "accounts", "create", "--id", "cli-k")
    made = run_json(cli, "keys", "create", "cli-k", "--name", "ci")
    assert made["apiKey"].startswith("cg_")
    revoked = run_json(cli, "keys", "revoke", "cli-k", made["keyId"])
    assert revoked["key"]["revokedAt"] is not None and revoked["key"]["name"] == "ci"
    listed = run_json(cli, "keys", "list", "cli-k")["keys"]
    assert sorted(k["revokedAt"] is None for k in listed) == [False, True]


def test_keys_with_limits_created_changed_cleared_and_listed(cli: Run) -> None:
    run_json(cli, "accounts", "create", "--id", "cli-l")
    made = run_json(
        cli,
        "keys",
        "create",
        "cli-l",
        "--name",
        "ci",
        "--expires-at",
        "2099-01-31T00:00:00Z",
        "--credit-limit",
        "50",
        "--rpm",
        "30",
        "--route",
        "/api/projects/",
        "--route",
        "/api/review",
    )
    assert made["key"]["routes"] == ["/api/projects", "/api/review"]
    key_id = made["keyId"]
    changed = run_json(
        cli, "keys", "update", "cli-l", key_id, "--no-credit-limit", "--rpm", "5", "--no-expiry"
    )["key"]
    assert (changed["creditLimit"], changed["requestsPerMinute"], changed["expiresAt"]) == (
        None,
        5,
        None,
    )
    assert changed["routes"] == ["/api/projects", "/api/review"]
    assert run_json(cli, "keys", "update", "cli-l", key_id, "--all-routes")["key"]["routes"] is None

    code, out, _ = cli("keys", "list", "cli-l")
    assert code == 0
    header, *rows = out.splitlines()
    assert {"creditLimit", "requestsPerMinute", "expiresAt", "routes"} <= set(header.split())
    (row,) = [r for r in rows if r.startswith(key_id)]
    assert " 5 " in row

    code, _, err = cli("keys", "update", "cli-l", key_id, "--rpm", "0")
    assert code == 1 and "'requestsPerMinute' must be between 1 and" in err
    with pytest.raises(SystemExit) as exc:  # a limit set and cleared at once
        cli("keys", "update", "cli-l", key_id, "--rpm", "5", "--no-rpm")
    assert exc.value.code == 2


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("accounts", "create", "--tier", "gold"), ["'tier'", "unknown tier"]),
        (("accounts", "create", "--id", "a|b"), ["'id'"]),
        (("accounts", "create", "--email", "nope"), ["'email'"]),
        (("accounts", "create", "--months", "2"), ["'months'", "paid tier"]),
        (("accounts", "grant", "cli-b", "0", "--reason", "x"), ["'credits'"]),
        (("accounts", "grant", "cli-b", "1000001", "--reason", "x"), ["'credits'"]),
        (("accounts", "grant", "cli-b", "5", "--reason", " "), ["'reason'", "empty"]),
        (("accounts", "upgrade", "cli-b", "--tier", "free", "--months", "1"), ["'tier'"]),
        (("accounts", "upgrade", "cli-b", "--tier", "pro", "--months", "40"), ["'months'"]),
        (("accounts", "renew", "cli-b", "--months", "1"), ["conflict", "no subscription"]),
        (("accounts", "create", "--id", "cli-b"), ["conflict", "exists"]),
        (("accounts", "show", "ghost"), ["not_found", "ghost"]),
        (("accounts", "grant", "ghost", "1", "--reason", "x"), ["not_found"]),
        (("accounts", "downgrade", "ghost"), ["not_found"]),
        (("keys", "create", "ghost"), ["not_found"]),
        (("keys", "revoke", "cli-b", "key_nope"), ["not_found"]),
        (("accounts", "list", "--limit", "0"), ["--limit"]),
    ],
)
def test_invalid_or_unknown_exit_1_with_the_api_message(
    cli: Run, args: tuple[str, ...], words: list[str]
) -> None:
    assert cli("accounts", "create", "--id", "cli-b")[0] == 0
    code, out, err = cli(*args)
    assert code == 1 and out == ""
    for word in words:
        assert word in err


@pytest.mark.parametrize(
    "args",
    [
        ("accounts",),
        ("accounts", "grant", "x", "many", "--reason", "r"),
        ("accounts", "grant", "x", "5"),
        ("accounts", "upgrade", "x", "--tier", "pro"),
        ("keys", "revoke", "x"),
        ("accounts", "frobnicate"),
    ],
)
def test_usage_errors_exit_2(cli: Run, args: tuple[str, ...]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli(*args)
    assert exc.value.code == 2


# -- Idempotency-Key ---------------------------------------------------------------------------


def test_a_grant_retried_with_its_idempotency_key_grants_once(cli: Run) -> None:
    run_json(cli, "accounts", "create", "--id", "cli-i")
    grant = ("accounts", "grant", "cli-i", "10", "--reason", "retry", "--idempotency-key", "g-1")
    code, first, err = cli(*grant, "--json")
    assert code == 0 and "replayed" not in err
    code, again, err = cli(*grant, "--json")
    assert code == 0 and again == first  # --json prints the API's body, as it did the first time
    assert "replayed" in err and "nothing changed" in err
    assert run_json(cli, "accounts", "show", "cli-i")["account"]["bonusCredits"] == 10

    # Without the flag, each command is a request of its own (a new key each).
    for _ in range(2):
        run_json(cli, "accounts", "grant", "cli-i", "1", "--reason", "again")
    assert run_json(cli, "accounts", "show", "cli-i")["account"]["bonusCredits"] == 12

    code, _, err = cli(
        "accounts", "grant", "cli-i", "11", "--reason", "x", "--idempotency-key", "g-1"
    )
    assert code == 1 and "idempotency_mismatch" in err


def test_a_replayed_create_says_its_key_is_not_shown_again(cli: Run) -> None:
    create = ("accounts", "create", "--id", "cli-c", "--idempotency-key", "new-c")
    code, first, _ = cli(*create)
    shown = "api key (shown once, store it now): "
    (secret,) = [line.removeprefix(shown) for line in first.splitlines() if shown in line]
    code, again, _ = cli(*create)
    assert code == 0 and secret.startswith("cg_") and secret not in again
    assert "not shown again" in again and "revoke it" in again


@pytest.mark.parametrize("key", ["", "k" * 256, "café"])
def test_a_malformed_idempotency_key_exits_1(cli: Run, key: str) -> None:
    run_json(cli, "accounts", "create", "--id", "cli-m")
    code, _, err = cli("accounts", "grant", "cli-m", "1", "--reason", "r", "--idempotency-key", key)
    assert code == 1 and "--idempotency-key must be 1 to 255 printable ASCII characters" in err


def test_a_write_redis_could_not_take_names_its_key_for_a_safe_retry(
    cli: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CREDITGATE_REDIS_URL", "redis://127.0.0.1:1/0")  # nothing listens
    code, _, err = cli("accounts", "grant", "cli-u", "5", "--reason", "r")
    assert code == 1 and "unavailable" in err
    assert "retry with --idempotency-key cli-" in err
    code, _, err = cli("accounts", "downgrade", "cli-u", "--idempotency-key", "mine 1")
    assert code == 1 and "retry with --idempotency-key 'mine 1'" in err


# -- paging ------------------------------------------------------------------------------------


def test_a_list_table_says_how_to_get_the_next_page(cli: Run) -> None:
    for account in ("page-a", "page-b", "page-c"):
        run_json(cli, "accounts", "create", "--id", account)
    code, out, _ = cli("accounts", "list", "--limit", "2")
    assert code == 0
    rows = [line.split()[0] for line in out.splitlines()[1:] if line.strip()]
    assert rows[:2] == ["page-a", "page-b"]
    assert out.rstrip().splitlines()[-1] == (
        "next: page-b  (the next page: creditgate accounts list --limit 2 --after page-b)"
    )

    code, out, _ = cli("accounts", "list", "--limit", "2", "--after", "page-b")
    assert code == 0 and "page-c" in out and "next:" not in out
    assert run_json(cli, "accounts", "list", "--limit", "2")["next"] == "page-b"
