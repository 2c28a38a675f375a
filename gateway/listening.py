"""One listening socket per worker of ``creditgate serve --workers N``, each bound with
``SO_REUSEPORT`` to the server's address.

uvicorn's supervisor binds one socket and hands it to every worker, and each worker accepts
from it as it happens to wake: under a burst of new connections (a load balancer opening its
pool, a benchmark's 50 at once) one worker takes most of them, and a keep-alive connection
stays where it landed. Counted with ``ss`` during ``wrk -c50`` on two workers: 36 / 14,
12 / 38, 46 / 4. With a socket of its own per worker, the kernel spreads new connections over
the workers by their addresses.

The supervisor stays uvicorn's (its restarts, health checks and signals). It pickles the
sockets it hands to each worker it spawns; ``WorkerSockets`` unpickles in the worker as a
socket the worker binds for itself. The supervisor holds one more, bound and never listening,
so the port stays this server's for as long as it runs; the kernel hands connections only to
listening sockets.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


def bind(host: str, port: int, *, reuse_port: bool) -> socket.socket:
    """A TCP socket bound to ``host``:``port`` (IPv6 when the host has a colon), as uvicorn
    binds its own (``SO_REUSEADDR``), and with ``SO_REUSEPORT`` when asked."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except BaseException:
        sock.close()
        raise
    return sock


class WorkerSockets(list[socket.socket]):
    """What the supervisor hands each worker: empty in the supervisor; in a worker, pickled
    there, one socket of the worker's own on the same address."""

    def __init__(self, host: str, port: int) -> None:
        super().__init__()
        self.host = host
        self.port = port

    def __reduce__(self) -> tuple[Any, ...]:
        return _own_socket, (self.host, self.port)


def _own_socket(host: str, port: int) -> list[socket.socket]:
    """In a worker: its socket (uvicorn makes it listen)."""
    return [bind(host, port, reuse_port=True)]


@contextmanager
def worker_sockets(host: str, port: int) -> Iterator[WorkerSockets]:
    """The workers' sockets on ``host``:``port`` (0: a free port, the same for all). Raises
    ``OSError`` at once when the port is taken, by any server: a plain bind first, which
    even another ``SO_REUSEPORT`` server's socket refuses, so two servers never share one."""
    if port:
        bind(host, port, reuse_port=False).close()
    held = bind(host, port, reuse_port=True)
    try:
        yield WorkerSockets(host, held.getsockname()[1])
    finally:
        held.close()
