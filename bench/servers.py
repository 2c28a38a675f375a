"""The processes the proxy benchmark measures and measures with: nginx, Redis, a Redis Cluster,
and what ``/proc`` says of a process tree.

Each server is started by the benchmark on a free loopback port, with its files in a temp dir,
and killed at the end; nothing is installed. A missing program stops the run with the Debian
package that provides it.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

START_TIMEOUT_S = 30.0
PACKAGES = {"nginx": "nginx-light", "wrk": "wrk", "redis-server": "redis-server"}
PACKAGES["redis-cli"] = "redis-tools"

NGINX_CONF = """\
daemon off;
worker_processes 1;
pid {tmp}/nginx.pid;
error_log stderr error;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    keepalive_requests 1000000;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{
            default_type application/json;
            return 200 '{{"id": "bench", "usage": {{"total_tokens": 42}}}}';
        }}
    }}
}}
"""
"""One worker answering every request with a small JSON body carrying ``usage``, as an LLM
backend would: the gateway buffers it, reads the tokens and adds ``creditInfo``."""


def require(*programs: str) -> None:
    """Stop the run, naming the package to install, if a program is not on PATH."""
    missing = [p for p in programs if shutil.which(p) is None]
    if missing:
        packages = " ".join(sorted({PACKAGES.get(p, p) for p in missing}))
        raise SystemExit(
            f"bench: {', '.join(missing)} not found on PATH; install it first "
            f"(Debian: apt-get install -y {packages}). The benchmark installs nothing itself."
        )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_listening(port: int, proc: subprocess.Popen[bytes], name: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"bench: the {name} exited with {proc.returncode} during start")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"bench: the {name} did not listen on {port} within {START_TIMEOUT_S} s")


@contextmanager
def spawn(
    name: str,
    argv: list[str],
    port: int,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> Iterator[subprocess.Popen[bytes]]:
    """``argv`` running until the block ends, once it listens on ``port``."""
    proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=subprocess.DEVNULL)
    try:
        wait_listening(port, proc, name)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def nginx(tmp: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """An nginx backend of its own: (base URL, the master process)."""
    require("nginx")
    port = free_port()
    folder = tmp / "nginx"
    folder.mkdir()
    (folder / "nginx.conf").write_text(NGINX_CONF.format(tmp=folder, port=port))
    argv = ["nginx", "-p", str(folder), "-c", str(folder / "nginx.conf"), "-e", "stderr"]
    with spawn("nginx", argv, port) as proc:
        yield f"http://127.0.0.1:{port}", proc


def _redis_argv(port: int, folder: Path, *extra: str) -> list[str]:
    argv = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(folder)]
    return [*argv, "--save", "", "--appendonly", "no", *extra]


@dataclass(frozen=True, slots=True)
class Redis:
    """A Redis server or cluster the benchmark started: a URL (a seed), processes, ports."""

    url: str
    pids: list[int]
    ports: list[int]

    def reads(self) -> int:
        """How many times the servers read from a client socket (``total_reads_processed``):
        one per pipeline a client sends, so per request, the round trips it cost Redis."""
        total = 0
        for port in self.ports:
            for line in _cli(port, "INFO", "stats").splitlines():
                if line.startswith("total_reads_processed:"):
                    total += int(line.split(":")[1])
        return total


@contextmanager
def redis(tmp: Path) -> Iterator[Redis]:
    """A Redis of its own (so its CPU is the gateway's alone)."""
    require("redis-server", "redis-cli")
    port = free_port()
    folder = tmp / f"redis-{port}"
    folder.mkdir()
    with spawn("redis", _redis_argv(port, folder), port) as proc:
        yield Redis(f"redis://127.0.0.1:{port}/0", [proc.pid], [port])


def _free_port_pair() -> int:
    """A free port whose cluster bus port (+10000) is free too."""
    for _ in range(100):
        port = free_port()
        if port + 10000 > 65535:
            continue
        try:
            with socket.socket() as bus:
                bus.bind(("127.0.0.1", port + 10000))
        except OSError:
            continue
        return port
    raise SystemExit("bench: no free port pair for a Redis Cluster node")


def _cli(port: int, *args: str) -> str:
    done = subprocess.run(
        ["redis-cli", "-h", "127.0.0.1", "-p", str(port), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return done.stdout


@contextmanager
def redis_cluster(tmp: Path, masters: int = 3) -> Iterator[Redis]:
    """A Redis Cluster of ``masters`` primaries and no replicas, started as
    ``tests/support/cluster.py`` does."""
    require("redis-server", "redis-cli")
    ports = [_free_port_pair() for _ in range(masters)]
    with ExitStack() as stack:
        pids = []
        for port in ports:
            folder = tmp / f"cluster-{port}"
            folder.mkdir()
            argv = _redis_argv(port, folder, "--cluster-enabled", "yes")
            argv += ["--cluster-config-file", str(folder / "nodes.conf")]
            pids.append(stack.enter_context(spawn("cluster node", argv, port)).pid)
        create = ["--cluster", "create", *(f"127.0.0.1:{p}" for p in ports)]
        _cli(ports[0], *create, "--cluster-replicas", "0", "--cluster-yes")
        deadline = time.monotonic() + START_TIMEOUT_S
        while not all("cluster_state:ok" in _cli(p, "CLUSTER", "INFO") for p in ports):
            if time.monotonic() > deadline:
                raise SystemExit("bench: the Redis Cluster did not reach cluster_state:ok")
            time.sleep(0.1)
        yield Redis(f"redis://127.0.0.1:{ports[0]}/0", pids, ports)


# --- /proc ------------------------------------------------------------------------------


def _stat(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def tree(pid: int) -> list[int]:
    """``pid`` and its descendants (a uvicorn supervisor and its workers)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                children.setdefault(int(_stat(int(entry))[1]), []).append(int(entry))
            except (OSError, IndexError):
                continue
    found, todo = [], [pid]
    while todo:
        found.append(current := todo.pop())
        todo += children.get(current, [])
    return found


def cpu_s(pids: list[int]) -> float:
    """User + system CPU seconds the processes have used."""
    total = 0
    for pid in pids:
        try:
            fields = _stat(pid)
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    """A process's resident memory (``VmRSS``) or its peak (``VmHWM``), in MB; 0 if gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0
