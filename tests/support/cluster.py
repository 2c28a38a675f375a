"""Throwaway Redis Clusters of 3 masters and 3 replicas, as an operator runs them.

``RedisClusterNodes`` starts one on free ports in a folder (no persistence, node timeout 2 s
so a failover takes seconds, not the default 15), and gives the tests an operator's levers:
SIGKILL a master (its replica takes over), reshard slots with ``redis-cli --cluster
reshard``. The session fixture ``cluster_ports`` is one shared, healthy cluster for the
tests that only need one; a test that breaks its cluster starts its own (``fresh_cluster``).
Every node is killed at the end.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import pytest
from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot

from gateway.credits.client import cluster_client

CLUSTER_MASTERS = 3
REPLICAS_PER_MASTER = 1
NODE_TIMEOUT_MS = 2000
STARTUP_S = 60.0


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


def cluster_slot_of(key: str) -> int:
    """The slot a key lives in (its hash tag's, as Redis computes it)."""
    return int(key_slot(key.encode()))


def cli(port: int, *args: str, timeout: float = 10) -> str:
    """``redis-cli`` against one node; its standard output ('' if the node is down)."""
    try:
        done = subprocess.run(
            ["redis-cli", "-h", "127.0.0.1", "-p", str(port), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return ""
    return done.stdout


def wait_until(what: str, ok: Callable[[], bool], *, within: float = STARTUP_S) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if ok():
            return
        time.sleep(0.05)
    raise RuntimeError(f"redis cluster: {what} did not happen within {within} s")


@dataclass(frozen=True)
class Node:
    """One line of ``CLUSTER NODES``."""

    node_id: str
    port: int
    master: bool
    slots: list[tuple[int, int]]

    def holds(self, slot: int) -> bool:
        return any(low <= slot <= high for low, high in self.slots)


@dataclass
class RedisClusterNodes:
    """The nodes of one local cluster: ports, processes, and the operator's levers."""

    folder: Path
    ports: list[int] = field(default_factory=list)
    procs: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def seeds(self) -> str:
        """``CREDITGATE_REDIS_URL`` naming every node as a seed."""
        return ",".join(f"redis://127.0.0.1:{port}" for port in self.ports)

    def start(self) -> None:
        count = CLUSTER_MASTERS * (1 + REPLICAS_PER_MASTER)
        self.ports = [_free_port_pair() for _ in range(count)]
        for port in self.ports:
            self._spawn(port)
        for port in self.ports:
            wait_until(f"node {port} answering", lambda p=port: "PONG" in cli(p, "PING"))
        create = subprocess.run(
            ["redis-cli", "--cluster", "create", *(f"127.0.0.1:{p}" for p in self.ports)]
            + ["--cluster-replicas", str(REPLICAS_PER_MASTER), "--cluster-yes"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if create.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed: {create.stdout[-500:]}")
        self.wait_healthy()

    def _spawn(self, port: int) -> None:
        with open(self.folder / f"{port}.log", "wb") as log:
            self.procs[port] = subprocess.Popen(
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
                    "--cluster-node-timeout",
                    str(NODE_TIMEOUT_MS),
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    str(self.folder),
                ],  # fmt: skip
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def alive(self) -> list[int]:
        return [port for port, proc in self.procs.items() if proc.poll() is None]

    def nodes(self) -> list[Node]:
        """The cluster as a live node sees it (failed nodes left out)."""
        for port in self.alive():
            text = cli(port, "CLUSTER", "NODES")
            if text:
                break
        else:
            raise RuntimeError("no cluster node answers")
        found = []
        for line in text.splitlines():
            parts = line.split()
            if "fail" in parts[2] or "noaddr" in parts[2]:
                continue
            slots = []
            for item in parts[8:]:
                if item.startswith("["):
                    continue  # a slot being migrated
                low, _, high = item.partition("-")
                slots.append((int(low), int(high or low)))
            port = int(parts[1].split("@")[0].rsplit(":", 1)[1])
            found.append(Node(parts[0], port, "master" in parts[2], slots))
        return found

    def masters(self) -> list[Node]:
        return [node for node in self.nodes() if node.master and node.slots]

    def master_of(self, slot: int) -> Node:
        return next(node for node in self.masters() if node.holds(slot))

    def wait_healthy(self, *, within: float = STARTUP_S) -> None:
        """Every live node says ``cluster_state:ok``, the slots are on live masters only, and
        every other live node is a replica in sync.

        A node killed a moment ago still looks like a master holding slots, and the replicas
        of a cluster just created still look like masters without slots: neither is healthy
        (a test that kills a master then would kill one without a replica)."""

        def ok() -> bool:
            alive = set(self.alive())
            if not all("cluster_state:ok" in cli(p, "CLUSTER", "INFO") for p in alive):
                return False
            nodes = self.nodes()
            masters = [node for node in nodes if node.master and node.slots]
            if len(masters) != CLUSTER_MASTERS or any(m.port not in alive for m in masters):
                return False
            return all(
                not node.master and "master_link_status:up" in cli(node.port, "INFO", "replication")
                for node in nodes
                if node.port in alive and node not in masters
            )

        wait_until("a healthy cluster", ok, within=within)

    def kill(self, port: int) -> None:
        """SIGKILL one node, as a crash would."""
        self.procs[port].send_signal(signal.SIGKILL)
        self.procs[port].wait(10)

    def reshard(self, source: Node, target: Node, slots: int) -> subprocess.CompletedProcess[str]:
        """Move ``slots`` slots (the lowest of ``source``'s) to ``target``, keys included."""
        return subprocess.run(
            ["redis-cli", "--cluster", "reshard", f"127.0.0.1:{target.port}"]
            + ["--cluster-from", source.node_id, "--cluster-to", target.node_id]
            + ["--cluster-slots", str(slots), "--cluster-yes", "--cluster-pipeline", "100"],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
        for proc in self.procs.values():
            proc.wait(timeout=10)


def _have_redis() -> None:
    if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
        pytest.skip("redis-server / redis-cli not on PATH: cannot start a Redis Cluster")


@pytest.fixture(scope="session")
def cluster_ports(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[int]]:
    """The ports of a healthy 3-master, 3-replica Redis Cluster, shared by the session."""
    _have_redis()
    nodes = RedisClusterNodes(tmp_path_factory.mktemp("redis-cluster"))
    try:
        nodes.start()
        yield nodes.ports
    finally:
        nodes.stop()


@pytest.fixture
def fresh_cluster(tmp_path: Path) -> Iterator[RedisClusterNodes]:
    """A cluster of this test's own, for a test that fails it over or reshards it."""
    _have_redis()
    folder = tmp_path / "redis-cluster"
    folder.mkdir()
    nodes = RedisClusterNodes(folder)
    try:
        nodes.start()
        yield nodes
    finally:
        nodes.stop()


@pytest.fixture
async def cluster_redis(cluster_ports: list[int]) -> AsyncIterator[RedisCluster]:
    """The gateway's RedisCluster client (``client.cluster_client``) on the session's cluster,
    every primary emptied."""
    client = cast(RedisCluster, cluster_client([f"redis://127.0.0.1:{cluster_ports[0]}/0"]))
    await client.initialize()
    await client.flushdb(target_nodes=RedisCluster.PRIMARIES)
    yield client
    await client.aclose()
