"""``gateway.listening``: the workers of ``serve --workers N`` each on a socket of their own
(``SO_REUSEPORT``), and a port another server holds refused at once."""

from __future__ import annotations

import pickle
import socket

import pytest

from gateway import listening


def test_a_worker_unpickles_a_listening_socket_of_its_own_on_the_same_port() -> None:
    with listening.worker_sockets("127.0.0.1", 0) as sockets:
        assert sockets == [] and sockets.port > 0  # the supervisor listens on nothing
        # What uvicorn's supervisor does for each worker it spawns.
        first, second = (pickle.loads(pickle.dumps(sockets)) for _ in range(2))
        [one], [two] = first, second
        try:
            assert one.fileno() != two.fileno()
            assert one.getsockname() == two.getsockname() == ("127.0.0.1", sockets.port)
            one.listen()
            two.listen()
            with socket.create_connection(("127.0.0.1", sockets.port), timeout=5):
                pass  # one of the two took it
        finally:
            one.close()
            two.close()


def test_a_port_another_server_listens_on_is_refused() -> None:
    with socket.create_server(("127.0.0.1", 0)) as other:
        port = other.getsockname()[1]
        with pytest.raises(OSError), listening.worker_sockets("127.0.0.1", port):
            pass


def test_two_servers_never_share_a_port() -> None:
    # SO_REUSEPORT alone would let a second `serve --workers N` join the first's port and
    # take half its connections; the plain bind first refuses it.
    with listening.worker_sockets("127.0.0.1", 0) as first:
        [worker] = pickle.loads(pickle.dumps(first))
        worker.listen()
        try:
            with pytest.raises(OSError), listening.worker_sockets("127.0.0.1", first.port):
                pass
        finally:
            worker.close()
