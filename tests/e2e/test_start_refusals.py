"""Misconfigurations stop ``creditgate serve`` and ``creditgate sync`` before they start, each
with a message naming it: nothing falls back silently (a typo'd variable, no Redis chosen, a
store never migrated)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from store.database import head_revision
from tests.support.processes import CREDITGATE, creditgate_env


def creditgate(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CREDITGATE, *args],
        env=creditgate_env({"CREDITGATE_DATABASE_URL": f"sqlite:///{tmp_path}/store.db", **env}),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("command", [["serve", "--port", "0"], ["sync", "--once"]])
def test_a_mistyped_variable_is_refused(tmp_path: Path, redis_url: str, command: list[str]) -> None:
    done = creditgate(tmp_path, *command, CREDITGATE_REDIS_ULR=redis_url)
    assert done.returncode == 2, done.stderr
    assert (
        "unknown variable CREDITGATE_REDIS_ULR; did you mean CREDITGATE_REDIS_URL?" in done.stderr
    )


@pytest.mark.parametrize(
    ("command", "name"),
    [(["serve", "--port", "0"], "creditgate serve"), (["sync", "--once"], "creditgate sync")],
)
def test_no_redis_is_refused_not_replaced_by_an_embedded_one(
    tmp_path: Path, command: list[str], name: str
) -> None:
    done = creditgate(tmp_path, *command)
    assert done.returncode == 2, done.stderr
    assert f"{name} needs CREDITGATE_REDIS_URL" in done.stderr


@pytest.mark.parametrize(
    ("command", "name"),
    [(["serve", "--port", "0"], "creditgate serve"), (["sync", "--once"], "creditgate sync")],
)
def test_an_unmigrated_store_is_refused_until_db_upgrade(
    tmp_path: Path, redis_url: str, command: list[str], name: str
) -> None:
    done = creditgate(tmp_path, *command, CREDITGATE_REDIS_URL=redis_url)
    assert done.returncode == 2, done.stderr
    assert f"{name}: the store's schema is empty (never migrated)" in done.stderr
    assert f"needs revision {head_revision()}: run `creditgate db upgrade`" in done.stderr

    upgraded = creditgate(tmp_path, "db", "upgrade")
    assert upgraded.returncode == 0, upgraded.stderr
    if command[0] == "sync":
        synced = creditgate(tmp_path, *command, CREDITGATE_REDIS_URL=redis_url)
        assert synced.returncode == 0, synced.stderr
