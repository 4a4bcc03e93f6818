"""What an eavesdropper on the PBX side gets from a captured call: asserts that no RTP stream decodes to the
reference speech in any codec a PBX might assume, and that no RFC 4733 digit is readable."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from tests.testbed.capture import CapturedPacket, looks_like_plain_audio, plain_dtmf

MAX_EAVESDROP_CORRELATION = 0.3
MAX_EAVESDROP_WINDOWED = 0.6
"""As tests/gateway/test_topology.py: random bytes decoded as Opus stay under these; plaintext scores > 0.9."""
CODECS = (None, "opus", "PCMU")
"""None: by payload type (static ones as G.711, dynamic ones as Opus)."""


def assert_nothing_decodes(packets: Iterable[CapturedPacket], reference: Path, *, min_packets: int) -> int:
    """At least ``min_packets`` RTP packets were captured and none of it is speech or a digit; returns how many."""
    rtp = [p for p in packets if p.rtp() is not None]
    assert len(rtp) >= min_packets, f"only {len(rtp)} RTP packets captured (wanted {min_packets})"
    for codec in CODECS:
        verdict = looks_like_plain_audio(rtp, reference, codec)
        assert verdict.streams or min_packets == 0, f"no RTP stream long enough to judge: {verdict}"
        for stream in verdict.streams:
            assert stream.correlation < MAX_EAVESDROP_CORRELATION, (codec, stream)
            assert stream.windowed_correlation < MAX_EAVESDROP_WINDOWED, (codec, stream)
    assert plain_dtmf(rtp) == ""
    return len(rtp)
