"""``check_redis``: ``serve`` and ``sync`` refuse a Redis without Functions (before 7.0) at
start, with a message naming it, rather than answer every credit call 503."""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable, Iterator

import pytest

from gateway.services import check_redis
from gateway.settings import ConfigError, Settings


@pytest.fixture
def redis_of_version() -> Iterator[Callable[[str], int]]:
    """Starts a server that answers one client as a Redis of the given version would (``+OK``
    to anything, ``INFO`` with that ``redis_version``); returns its port."""
    threads: list[threading.Thread] = []

    def start(version: str) -> int:
        server = socket.create_server(("127.0.0.1", 0))
        server.settimeout(10)

        def serve() -> None:
            with server:
                conn, _ = server.accept()
                with conn, conn.makefile("rb") as reader:
                    while line := reader.readline():
                        if not line.startswith(b"*"):
                            continue
                        parts = []
                        for _ in range(int(line[1:])):
                            reader.readline()  # $<length>
                            parts.append(reader.readline().strip().upper())
                        if parts[:1] == [b"INFO"]:
                            text = f"# Server\r\nredis_version:{version}\r\n".encode()
                            conn.sendall(b"$%d\r\n%s\r\n" % (len(text), text))
                        else:
                            conn.sendall(b"+OK\r\n")

        threads.append(threading.Thread(target=serve, daemon=True))
        threads[-1].start()
        return int(server.getsockname()[1])

    yield start
    for thread in threads:
        thread.join(timeout=10)


def settings_for(url: str) -> Settings:
    return Settings.load(redis_url=url, signing_secret="s" * 32)


def test_a_redis_before_7_stops_the_start_naming_it(
    redis_of_version: Callable[[str], int],
) -> None:
    port = redis_of_version("6.2.14")
    url = f"redis://user:secret-password@127.0.0.1:{port}/0"
    with pytest.raises(ConfigError) as refused:
        check_redis(settings_for(url), "creditgate serve")
    assert str(refused.value) == (
        f"creditgate serve: the Redis at 127.0.0.1:{port} is version 6.2.14; creditgate needs "
        "Redis 7.0 or later (its credit scripts are a library of Redis Functions)"
    )  # never the URL's password


@pytest.mark.parametrize("version", ["7.0.15", "7.2.4", "8.0.0"])
def test_redis_7_and_later_pass(redis_of_version: Callable[[str], int], version: str) -> None:
    check_redis(settings_for(f"redis://127.0.0.1:{redis_of_version(version)}/0"), "serve")


def test_the_real_redis_passes(redis_url: str) -> None:
    check_redis(settings_for(redis_url), "creditgate serve")


def test_a_redis_not_up_yet_is_logged_not_refused(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="creditgate.services"):
        check_redis(settings_for("redis://127.0.0.1:1/0"), "creditgate serve")
    assert "cannot check the Redis version yet" in caplog.text


def test_the_embedded_redis_is_not_checked() -> None:
    check_redis(settings_for("embedded"), "creditgate serve")
