"""prometheus_client's multiprocess mode as ``creditgate serve --workers N`` runs it: the shared
directory's life, and a scrape of live and dead workers (real processes, children of the test
as workers are of the server's supervisor)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from gateway import multiprocess
from gateway.settings import ConfigError
from tests.support.scrapes import series, text_of, total

WORKER = """
import sys
from gateway.metrics import Metrics
metrics = Metrics()
metrics.requests("/api/x/", "charged").inc(2)
metrics.open_reservations.inc()
metrics.flush()  # as the app's lifespan does every second
print("ready", flush=True)
sys.stdin.read()
"""
"""A worker: two calls counted, one reservation open; it runs until its stdin closes."""


@pytest.fixture(autouse=True)
def no_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    """The test process never runs in multiprocess mode, whatever a test leaves behind."""
    monkeypatch.delenv(multiprocess.VARIABLE, raising=False)


def test_the_directory_starts_empty_is_held_by_one_server_and_goes_at_exit(
    tmp_path: Path,
) -> None:
    left = tmp_path / "creditgate-8080"
    left.mkdir()
    (left / "counter_4242.db").write_bytes(b"a killed server's counts")
    with multiprocess.shared_directory(tmp_path, 8080) as path:
        assert path == left and not list(path.glob("*.db"))
        assert os.environ[multiprocess.VARIABLE] == str(path)
        with pytest.raises(ConfigError, match="in use by another creditgate serve on port 8080"):
            with multiprocess.shared_directory(tmp_path, 8080):
                pass
        with multiprocess.shared_directory(tmp_path, 8081) as other:  # another port: its own
            assert other != path
    assert not path.exists() and multiprocess.VARIABLE not in os.environ


def test_a_directory_that_cannot_be_made_stops_the_start(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    with pytest.raises(ConfigError, match="give --metrics-dir a writable directory"):
        with multiprocess.shared_directory(tmp_path / "a-file", 8080):
            pass


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[tuple[Path, list[subprocess.Popen[str]]]]:
    env = os.environ | {multiprocess.VARIABLE: str(tmp_path)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    try:
        for proc in procs:
            assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
        yield tmp_path, procs
    finally:
        for proc in procs:
            proc.kill()
            proc.communicate()


def test_a_scrape_sums_every_worker_and_forgets_the_live_gauges_of_the_dead(
    workers: tuple[Path, list[subprocess.Popen[str]]],
) -> None:
    path, (first, second) = workers
    registry = CollectorRegistry()
    registry.register(multiprocess.Workers(str(path), supervisor=os.getpid()))

    text = text_of(registry)
    assert total(text, "creditgate_requests_total") == 4
    assert total(text, "creditgate_open_reservations") == 2
    pids = series(text, "process_cpu_seconds_total", "pid")
    assert set(pids) == {(str(os.getpid()),), (str(first.pid),), (str(second.pid),)}
    assert total(text, "process_resident_memory_bytes", pid=str(first.pid)) > 0

    first.send_signal(signal.SIGKILL)  # a zombie until reaped: dead all the same
    deadline = time.monotonic() + 10
    while multiprocess.child_of(first.pid, os.getpid()):
        assert time.monotonic() < deadline
        time.sleep(0.01)

    text = text_of(registry)
    assert total(text, "creditgate_requests_total") == 4  # counts never go back
    assert total(text, "creditgate_open_reservations") == 1
    pids = series(text, "process_cpu_seconds_total", "pid")
    assert set(pids) == {(str(os.getpid()),), (str(second.pid),)}
    assert not list(path.glob(f"gauge_livesum_{first.pid}.db"))
