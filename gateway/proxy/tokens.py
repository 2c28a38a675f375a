"""How many tokens a backend's answer reports: the contract's order of precedence.

1. a JSON body's ``usage.total_tokens``; 2. the final SSE event carrying ``usage``;
3. the ``X-Tokens-Used`` response header; 4. ``cost x TOKENS_PER_CREDIT``.
Only non-negative integers count; anything else falls through to the next source.
"""

from __future__ import annotations

import json

from gateway.settings import TOKENS_PER_CREDIT

MAX_TOKENS = 10**12


def estimate(cost: int) -> int:
    return cost * TOKENS_PER_CREDIT


def from_header(value: str | None) -> int | None:
    if value is None:
        return None
    value = value.strip()
    if not value.isdigit() or len(value) > 13:
        return None
    return int(value)


def from_document(document: object) -> int | None:
    """``usage.total_tokens`` of a parsed JSON document, when it is a sane integer."""
    if not isinstance(document, dict):
        return None
    usage = document.get("usage")
    if not isinstance(usage, dict):
        return None
    total = usage.get("total_tokens")
    if isinstance(total, bool) or not isinstance(total, int) or not 0 <= total <= MAX_TOKENS:
        return None
    return total


class SseUsage:
    """Follows an SSE stream chunk by chunk and keeps the last event's ``usage.total_tokens``.

    Only complete ``data:`` lines mentioning ``usage`` are parsed, so a long stream of text
    deltas costs a substring search per line, not a JSON parse.
    """

    __slots__ = ("_partial", "tokens")

    def __init__(self) -> None:
        self._partial = b""
        self.tokens: int | None = None

    def feed(self, chunk: bytes) -> None:
        data = self._partial + chunk
        lines = data.split(b"\n")
        self._partial = lines.pop()
        if len(self._partial) > 1_048_576:  # a line this long is not an event we can read
            self._partial = b""
        for line in lines:
            self._line(line.rstrip(b"\r"))

    def close(self) -> None:
        if self._partial:
            self._line(self._partial.rstrip(b"\r"))
            self._partial = b""

    def _line(self, line: bytes) -> None:
        if not line.startswith(b"data:") or b"usage" not in line:
            return
        try:
            document = json.loads(line[5:])
        except ValueError:
            return
        tokens = from_document(document)
        if tokens is not None:
            self.tokens = tokens
