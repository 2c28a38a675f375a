"""A throwaway 3-master Redis Cluster for the tests that ask for it (`cluster_redis`).

The cluster runs on free ports in a temp dir, without persistence, for the whole session; it
is started only by the tests that ask for it and always killed at the end.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from redis.asyncio.cluster import RedisCluster

CLUSTER_MASTERS = 3
STARTUP_S = 30.0


def _free_port_pair() -> int:
    """A free port whose cluster bus port (+10000) is free too."""
    for _ in range(100):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port + 10000 > 65535:
            continue
        try:
            with socket.socket() as bus:
                bus.bind(("127.0.0.1", port + 10000))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port pair for a cluster node")


def _cli(port: int, *args: str) -> str:
    done = subprocess.run(
        ["redis-cli", "-h", "127.0.0.1", "-p", str(port), *args],
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    return done.stdout


def _wait(what: str, ok: object) -> None:
    deadline = time.monotonic() + STARTUP_S
    while time.monotonic() < deadline:
        if callable(ok) and ok():
            return
        time.sleep(0.05)
    raise RuntimeError(f"redis cluster: {what} did not happen within {STARTUP_S}s")


@pytest.fixture(scope="session")
def cluster_ports(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[int]]:
    """The ports of a fresh 3-master Redis Cluster, torn down after the session."""
    if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
        pytest.skip("redis-server / redis-cli not on PATH: cannot start a Redis Cluster")
    folder: Path = tmp_path_factory.mktemp("redis-cluster")
    procs: list[subprocess.Popen[bytes]] = []
    ports = [_free_port_pair() for _ in range(CLUSTER_MASTERS)]
    try:
        for port in ports:
            log = open(folder / f"{port}.log", "wb")
            procs.append(
                subprocess.Popen(
                    [
                        "redis-server",
                        "--port",
                        str(port),
                        "--bind",
                        "127.0.0.1",
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        f"nodes-{port}.conf",
                        "--save",
                        "",
                        "--appendonly",
                        "no",
                        "--dir",
                        str(folder),
                    ],  # fmt: skip
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
            log.close()
        for port in ports:
            _wait(f"node {port} answering", lambda p=port: "PONG" in _cli(p, "PING"))
        create = subprocess.run(
            ["redis-cli", "--cluster", "create", *(f"127.0.0.1:{p}" for p in ports)]
            + ["--cluster-replicas", "0", "--cluster-yes"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if create.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed: {create.stdout[-500:]}")
        for port in ports:
            _wait(
                f"cluster_state:ok on {port}",
                lambda p=port: "cluster_state:ok" in _cli(p, "CLUSTER", "INFO"),
            )
        yield ports
    finally:
        for proc in procs:
            proc.kill()
        for proc in procs:
            proc.wait(timeout=10)


@pytest.fixture
async def cluster_redis(cluster_ports: list[int]) -> AsyncIterator[RedisCluster]:
    """A redis.asyncio RedisCluster client on the session's cluster, every primary emptied."""
    client = RedisCluster(host="127.0.0.1", port=cluster_ports[0], decode_responses=True)
    await client.initialize()
    await client.flushdb(target_nodes=RedisCluster.PRIMARIES)
    yield client
    await client.aclose()
