"""NOTICE (wire v3, PROTOCOL.md §B.2): one side tells the other something about the call inside the encryption,
so a relay can neither forge nor strip it (a SIP Reason header can be both) and it arrives at once, whoever hangs up
first. Used for "I saw a changed identity key for you" (issue 15, item 2)."""

from __future__ import annotations

import pytest

from ratchet.events import Notice, PeerNotice
from ratchet.frame import HEADER_LEN, notice_tlv, parse_control
from ratchet.media_state import NOTICE_FRAMES
from ratchet.session import MediaConfig
from tests.support.media_sim import FRAME_S, make_call, random_loss

P = 120


def test_a_notice_arrives_once_inside_equal_frames_even_with_loss() -> None:
    call = make_call(MediaConfig(dh_interval_s=2.0), payload_size=P)
    call.b.send_notice(Notice.KEY_CHANGE_SEEN)
    call.b.send_notice(Notice.KEY_CHANGE_SEEN)  # idempotent
    call.ba.drop = random_loss(0.3, 5)
    call.run(12.0)
    assert call.of("a", PeerNotice) == [PeerNotice(Notice.KEY_CHANGE_SEEN)]
    assert call.of("b", PeerNotice) == []
    assert call.ba.lengths == call.ab.lengths == {HEADER_LEN + 1 + P + 10}
    # repeated for NOTICE_FRAMES frames on the repeat schedule (first 3, then every 4th; 30 % of them lost here)
    carried = call.ba.carried["notice"]
    assert 0.5 * NOTICE_FRAMES / 4 <= carried <= 3 + NOTICE_FRAMES // 4, carried
    call.ba.drop = random_loss(0.0, 5)
    call.run(NOTICE_FRAMES * FRAME_S)
    assert call.ba.carried["notice"] == carried, "then no more"


def test_the_notice_tlv_codec() -> None:
    assert notice_tlv(1) == b"\x05\x01\x01"
    assert parse_control(notice_tlv(7)).notice == 7  # a code this version does not know is still parsed
    with pytest.raises(ValueError):
        notice_tlv(0)
