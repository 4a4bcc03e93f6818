"""One complete handshake (offer, answer, accept) for the benchmark, with fresh identities each time."""

from __future__ import annotations


def handshake_once(hybrid: bool) -> None:
    raise NotImplementedError
