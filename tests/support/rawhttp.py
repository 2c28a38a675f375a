"""HTTP/1.1 on raw sockets, for what no client library would send: oversized and unfinished
request heads, pipelined requests, and the peak memory of the server that reads them."""

from __future__ import annotations

import select
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

TIMEOUT_S = 10.0
CLOSE_S = 1.0


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes


@dataclass(slots=True)
class Exchange:
    """What one connection did: bytes sent, answers read, and whether the server closed it."""

    sent: int = 0
    answers: list[Answer] = field(default_factory=list)
    closed: bool = False


def connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=TIMEOUT_S)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def request(target: str, headers: list[tuple[str, str]], method: str = "GET") -> bytes:
    """A complete head without a body (``Host`` is the caller's to give)."""
    lines = [f"{method} {target} HTTP/1.1", *(f"{name}: {value}" for name, value in headers)]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def read_answers(sock: socket.socket, count: int, *, close_s: float = CLOSE_S) -> Exchange:
    """Read ``count`` answers (each with a Content-Length), then whether the server closes the
    connection within ``close_s`` (its keep-alive timeout is longer; 0: not waited for)."""
    done = Exchange()
    buffer = b""
    deadline = time.monotonic() + TIMEOUT_S
    while len(done.answers) < count:
        answer, buffer = _parse(buffer)
        if answer is not None:
            done.answers.append(answer)
            continue
        chunk = _recv(sock, deadline)
        if not chunk:
            done.closed = chunk is not None
            return done
        buffer += chunk
    done.closed = not buffer and close_s > 0 and _recv(sock, time.monotonic() + close_s) == b""
    return done


def send_until_answered(
    sock: socket.socket, first: bytes, filler: bytes, *, total: int, pause_s: float = 0.0
) -> Exchange:
    """Send ``first``, then ``filler`` again and again, up to ``total`` bytes, stopping as soon
    as the server answers or closes; then read its answer. The head is never finished."""
    sent = 0
    pending = memoryview(first)
    sock.setblocking(False)
    deadline = time.monotonic() + 60
    try:
        while sent < total and time.monotonic() < deadline:
            readable, writable, _ = select.select([sock], [sock], [], 1.0)
            if readable:
                break  # an answer (or the close) has come: a client would stop sending
            if not writable:
                continue
            if not pending:
                pending = memoryview(filler)
            try:
                count = sock.send(pending[: total - sent])
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += count
            pending = pending[count:]
            if pause_s:
                time.sleep(pause_s)
    finally:
        sock.setblocking(True)
        sock.settimeout(TIMEOUT_S)
    done = read_answers(sock, 1)
    done.sent = sent
    return done


def _parse(buffer: bytes) -> tuple[Answer | None, bytes]:
    head, sep, rest = buffer.partition(b"\r\n\r\n")
    if not sep:
        return None, buffer
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    if len(rest) < length:
        return None, buffer
    return Answer(int(status_line.split()[1]), headers, rest[:length]), rest[length:]


def _recv(sock: socket.socket, deadline: float) -> bytes | None:
    """What comes next; b"" when the server closed (or reset) the connection, None when
    nothing came before the deadline."""
    sock.settimeout(max(0.01, deadline - time.monotonic()))
    try:
        return sock.recv(65536)
    except ConnectionResetError:
        return b""
    except TimeoutError:
        return None


def _status_kb(pid: int, field_name: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field_name} for process {pid}")


class PeakMemory:
    """The most a process's resident memory rose above its start, in kB (Linux): the peak is
    reset at the start (``/proc/<pid>/clear_refs``), so a rise that was freed again counts."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        Path(f"/proc/{pid}/clear_refs").write_text("5")
        self.start_kb = _status_kb(pid, "VmRSS")

    def rise_kb(self) -> int:
        return _status_kb(self.pid, "VmHWM") - self.start_kb
