"""The erasure code of the in-call post-quantum ratchet (docs/PROTOCOL.md §B.12): ``ZfecCoder`` implements
``ratchet.pq_chunks.ErasureCoder`` with zfec. It owns nothing else.

Why zfec: it is maintained (Tahoe-LAFS ships on it), a small C extension with wheels, systematic (the first ``k``
shares are the data itself, so a loss-free path decodes by concatenation), and its code is exactly specified: the
Vandermonde-matrix Reed-Solomon code over GF(2^8) of Rizzo's fec (2^8 field polynomial 0x11d), turned systematic,
so an independent implementation can produce the same shares (§B.12 names it). pyeclib needs liberasurecode
(a system library) and reedsolo is a pure-Python byte-stream codec for error correction, not erasure of blocks.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence

import zfec


@functools.lru_cache(maxsize=8)
def _encoder(k: int, n: int) -> zfec.Encoder:
    return zfec.Encoder(k, n)  # building the systematic matrix costs about as much as encoding: once per (k, n)


@functools.lru_cache(maxsize=8)
def _decoder(k: int, n: int) -> zfec.Decoder:
    return zfec.Decoder(k, n)


class ZfecCoder:
    """A systematic (k, n) erasure code over equal byte blocks: zfec's ``Encoder(k, n)`` / ``Decoder(k, n)``."""

    def encode(self, blocks: Sequence[bytes], n: int) -> list[bytes]:
        k = len(blocks)
        return [bytes(s) for s in _encoder(k, n).encode(list(blocks), list(range(n)))]

    def decode(self, shares: Mapping[int, bytes], k: int, n: int) -> list[bytes]:
        if len(shares) < k:
            raise ValueError(f"{len(shares)} shares, {k} needed")
        indexes = sorted(shares)[:k]
        return [bytes(b) for b in _decoder(k, n).decode([shares[i] for i in indexes], indexes)]
