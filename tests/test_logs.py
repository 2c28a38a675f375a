"""Log lines: text by default, one JSON object per line with CREDITGATE_LOG_FORMAT=json."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import alembic
import pytest

from gateway.logs import ACCESS_LOGGER, configure_logging, formatter
from gateway.settings import HANDOFF, ConfigError, Settings


def record(**extra: object) -> logging.LogRecord:
    made = logging.LogRecord(
        "creditgate.proxy", logging.WARNING, __file__, 1, "reserve failed: %s", ("x",), None
    )
    for name, value in extra.items():
        setattr(made, name, value)
    return made


def test_json_lines_carry_the_fields_and_the_extras() -> None:
    line = formatter("json").format(record(request_id="r1", account="acme", status=503))
    fields = json.loads(line)
    assert fields["level"] == "WARNING" and fields["logger"] == "creditgate.proxy"
    assert fields["message"] == "reserve failed: x"
    assert (fields["request_id"], fields["account"], fields["status"]) == ("r1", "acme", 503)
    assert "time" in fields


def test_text_lines_by_default() -> None:
    line = formatter("text").format(record(request_id="r1"))
    assert line.endswith("WARNING creditgate.proxy request_id=r1 reserve failed: x")


def test_the_format_is_a_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CREDITGATE_LOG_FORMAT", "json")
    assert Settings.load().log_format == "json"
    monkeypatch.setenv("CREDITGATE_LOG_FORMAT", "xml")
    with pytest.raises(ConfigError, match="log_format"):
        Settings.load()


def db_upgrade(tmp_path: Path, *flags: str, **env: str) -> str:
    """What ``creditgate [flags] db upgrade`` logs (its stderr) on a new SQLite store."""
    done = subprocess.run(
        [sys.executable, "-m", "gateway.cli", *flags, "db", "upgrade"],
        env={
            "PATH": os.environ["PATH"],
            "CREDITGATE_DATABASE_URL": f"sqlite:///{tmp_path}/store.db",
            **env,
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stderr


def test_a_command_logs_json_when_asked(tmp_path: Path) -> None:
    stderr = db_upgrade(tmp_path, CREDITGATE_LOG_FORMAT="json")
    lines = [json.loads(line) for line in stderr.splitlines()]
    assert any(line["logger"].startswith("alembic") for line in lines), stderr
    assert all(line["request_id"] == "-" for line in lines)


@pytest.mark.parametrize("level", ["INFO", "DEBUG"])
def test_alembics_plugin_lines_only_at_debug(tmp_path: Path, level: str) -> None:
    """Alembic 1.18+ logged the set-up of each of its plugins at INFO: seven lines before
    every migration, at the top of ``make demo``'s output. The migrations themselves stay."""
    stderr = db_upgrade(tmp_path, "--log-level", level)
    assert "Running upgrade" in stderr
    if level == "INFO":
        assert "alembic.runtime.plugins" not in stderr, stderr
    elif tuple(int(n) for n in alembic.__version__.split(".")[:2]) >= (1, 18):
        assert "alembic.runtime.plugins" in stderr, stderr


def test_the_access_line_is_a_setting_and_its_own_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    """On by ``CREDITGATE_ACCESS_LOG`` (or ``serve --access-log``, also for the workers),
    and written at INFO whatever the level of the rest."""
    monkeypatch.setenv("CREDITGATE_ACCESS_LOG", "1")
    assert Settings.load().access_log is True
    monkeypatch.setenv("CREDITGATE_ACCESS_LOG", "0")
    assert Settings.load().access_log is False
    access = logging.getLogger(ACCESS_LOGGER)
    root = logging.getLogger()
    saved = root.level, access.level
    try:
        configure_logging("WARNING")
        assert not root.isEnabledFor(logging.INFO)
        assert access.isEnabledFor(logging.INFO)
    finally:
        root.setLevel(saved[0])
        access.setLevel(saved[1])


def test_the_level_is_a_setting_that_reaches_the_workers(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """``--log-level`` did not reach ``serve --workers N``: each worker built its settings
    from the environment and logged at INFO. The level is a setting now, handed over to them
    with the rest of the settings ``serve`` validated."""
    from gateway.app import app_from_env

    monkeypatch.setenv("CREDITGATE_LOG_LEVEL", "debug")
    assert Settings.load().log_level == "DEBUG"
    monkeypatch.setenv("CREDITGATE_LOG_LEVEL", "loud")
    with pytest.raises(ConfigError, match="log_level"):
        Settings.load()
    monkeypatch.setenv("CREDITGATE_REDIS_URL", "embedded")
    monkeypatch.setenv("CREDITGATE_DATABASE_URL", f"sqlite:///{tmp_path / 'store.db'}")
    root = logging.getLogger()
    saved = root.level
    try:
        monkeypatch.setenv(HANDOFF, "")  # restored after the test
        monkeypatch.setenv("CREDITGATE_LOG_LEVEL", "debug")
        # What `serve --log-level error --workers 2` does:
        dataclasses.replace(Settings.load(), log_level="ERROR").hand_over()
        monkeypatch.setenv("CREDITGATE_LOG_LEVEL", "loud")  # not read: the settings are handed
        app_from_env()
        assert root.level == logging.ERROR
    finally:
        root.setLevel(saved)
