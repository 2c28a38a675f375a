"""prometheus_client's multiprocess mode, for ``creditgate serve --workers N``: the workers'
shared directory, and what a scrape must add to the files in it.

With several workers, a scrape reaches any one of them, so each must answer for all. In this
mode prometheus_client keeps every value in a file per process in one directory, named to the
workers by ``PROMETHEUS_MULTIPROC_DIR`` (prometheus_client's own variable, read when a process
imports it), and sums the files at each scrape:

- ``shared_directory``: the server's directory, ``<base>/creditgate-<port>``. Emptied at each
  start (a killed server's files would be summed into the new one's counters), locked while the
  server runs (a second server on the same port must not empty the first's), removed at a clean
  exit. The supervisor sets the variable before it starts the workers.
- ``Workers``: the collector of the worker that answers a scrape. It marks the workers that
  died (``mark_process_dead``: their ``livesum`` gauges, such as the open reservations, stop
  counting; their counters stay, so no count ever goes back), then gives the files' sums and
  every process's ``process_*`` metrics with a ``pid`` label. prometheus_client's
  ``ProcessCollector`` reads one process and its figures cannot be summed (a start time, open
  files), so each live process of the server (the supervisor and its workers) is read from
  ``/proc`` at the scrape: the same series whichever worker answers.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from gateway.settings import ConfigError

VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
PROC = Path("/proc")


def directory() -> str | None:
    """The workers' directory when this process runs in multiprocess mode, else None.

    prometheus_client chose where values live from this same variable when it was imported,
    so the metrics follow that choice rather than a setting of ours.
    """
    return os.environ.get(VARIABLE) or None


@contextlib.contextmanager
def shared_directory(base: Path | None, port: int) -> Iterator[Path]:
    """The empty directory of the workers of a server on ``port``, below ``base`` (default:
    the system's temporary directory), named to them by ``PROMETHEUS_MULTIPROC_DIR``.

    Raises ConfigError when it cannot be made or another server holds it.
    """
    try:
        path = Path(base or tempfile.gettempdir()) / f"creditgate-{port}"
        path.mkdir(parents=True, exist_ok=True)
        lock = (path / ".lock").open("w")
    except OSError as exc:
        raise ConfigError(
            f"cannot make the workers' metrics directory: {exc}; give --metrics-dir a "
            "writable directory"
        ) from exc
    with lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError(
                f"{path} is in use by another creditgate serve on port {port}"
            ) from None
        for stale in path.glob("*.db"):
            stale.unlink()
        os.environ[VARIABLE] = str(path)
        try:
            yield path
        finally:
            os.environ.pop(VARIABLE, None)
            shutil.rmtree(path, ignore_errors=True)


def _worker_pids(path: str) -> set[int]:
    """The processes that wrote to the directory: its files are ``<kind>_<pid>.db``."""
    pids = set()
    for name in os.listdir(path):
        stem, _, pid = name.removesuffix(".db").rpartition("_")
        if stem and name.endswith(".db") and pid.isdigit():
            pids.add(int(pid))
    return pids


def child_of(pid: int, parent: int) -> bool:
    """True while ``pid`` runs as a child of ``parent``: not a zombie (dead, not yet reaped
    by the supervisor), not a later process that took a dead worker's pid."""
    try:
        stat = (PROC / str(pid) / "stat").read_bytes()
    except FileNotFoundError:
        return not PROC.is_dir() and _runs(pid)
    except OSError:
        return False
    state, ppid = stat.rsplit(b")", 1)[1].split()[:2]
    return state not in (b"Z", b"X") and int(ppid) == parent


def _runs(pid: int) -> bool:
    """Without ``/proc``, whether ``pid`` runs is all that can be told."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Workers(Collector):
    """Every worker's figures, for the worker that answers a scrape (module docstring).

    ``supervisor``: the process whose children are the workers (this process's parent).
    """

    def __init__(self, path: str, supervisor: int) -> None:
        self.path = path
        self.supervisor = supervisor
        self._files = MultiProcessCollector(None, path=path)  # type: ignore[no-untyped-call]
        self._processes: dict[int, ProcessCollector] = {}

    def collect(self) -> Iterable[Metric]:
        pids = _worker_pids(self.path)
        alive = sorted(pid for pid in pids if child_of(pid, self.supervisor))
        for dead in pids.difference(alive):
            mark_process_dead(dead, self.path)  # type: ignore[no-untyped-call]
        yield from self._files.collect()  # type: ignore[no-untyped-call]
        yield from self._process_metrics([self.supervisor, *alive])

    def _process_metrics(self, pids: list[int]) -> Iterable[Metric]:
        for gone in set(self._processes).difference(pids):
            del self._processes[gone]
        merged: dict[str, Metric] = {}
        for pid in pids:
            collector = self._processes.get(pid)
            if collector is None:
                collector = self._processes[pid] = ProcessCollector(
                    pid=functools.partial(int, pid), registry=None
                )
            for family in collector.collect():
                into = merged.setdefault(
                    family.name, Metric(family.name, family.documentation, family.type)
                )
                for sample in family.samples:
                    into.add_sample(sample.name, {**sample.labels, "pid": str(pid)}, sample.value)
        return merged.values()
