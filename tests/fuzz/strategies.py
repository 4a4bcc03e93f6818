"""Hypothesis strategies for the fuzz targets: random bytes, and valid seeds with a few structure-aware mutations."""

from __future__ import annotations

from hypothesis import strategies as st

TOKENS = (
    b"\x00",
    b"\xff",
    b"\x7f",
    b"\x80",
    b"\r\n",
    b"\n",
    b"\r\n\r\n",
    b":",
    b";",
    b",",
    b"=",
    b" ",
    b'"',
    b"[",
    b"]",
    b"{",
    b"}",
    b"-1",
    b"0",
    b"65536",
    b"4294967296",
    b"99999999999999999999",
    b"1e400",
    b"NaN",
    b"null",
    b"true",
    b"\xc3\xa9",
    b"\xed\xa0\x80",
    b"\xb2",
    b"%00",
    b"%ff",
    b"a=voipgw:",
    b"Content-Length: 9999",
    b"m=audio 0 RTP/AVP 111",
    b"\\u0000",
)


@st.composite
def mutated(draw: st.DrawFn, seeds: list[bytes]) -> bytes:
    """One seed with 1-4 edits: bit flips, byte overwrites, token inserts, deletions, truncation, duplication."""
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.integers(0, 5))
        pos = draw(st.integers(0, len(data)))
        if op == 0 and data:
            i = pos % len(data)
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif op == 1 and data:
            data[pos % len(data)] = draw(st.integers(0, 255))
        elif op == 2:
            data[pos:pos] = draw(st.sampled_from(TOKENS) | st.binary(min_size=1, max_size=16))
        elif op == 3:
            del data[pos : pos + draw(st.integers(1, 64))]
        elif op == 4:
            del data[pos:]
        else:
            end = min(len(data), pos + draw(st.integers(1, 256)))
            data[pos:pos] = data[pos:end] * draw(st.integers(1, 8))
    return bytes(data)


def inputs(seeds: list[bytes]) -> st.SearchStrategy[bytes]:
    return st.one_of(st.binary(max_size=2048), mutated(seeds))
