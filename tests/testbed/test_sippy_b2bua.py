"""The Sippy B2BUA test bed does what tests/testbed/sippy_b2bua.py says: each leg has its own Call-ID (and tags,
From host), the SDP (a=voipgw included) crosses byte for byte both ways, also in a re-INVITE, the media is not
relayed, and ACK/re-INVITE/BYE cross on the callee's own Call-ID."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.raw_sip import RawSipUa, hang_up, opus_sdp, reinvite, sdp_media_addr, setup_call, uri_of
from tests.testbed.sippy_b2bua import SippyB2bua

pytestmark = [pytest.mark.integration, pytest.mark.interop]  # sippy is a voipgw dependency: nothing to require

OFFER_ATTR = "a=voipgw:" + "T0ZGRVI" * 200 + "\r\na=x-unknown:kept\r\n"
ANSWER_ATTR = "a=voipgw:" + "QU5TV0VS" * 150 + "\r\n"


@pytest.mark.parametrize("hide_call_id", [True, False])
def test_b2bua_gives_the_callee_its_own_call_id_and_relays_the_sdp_untouched(
    tmp_path: Path, hide_call_id: bool
) -> None:
    with RawSipUa("alice") as alice, RawSipUa("bob") as bob:
        with SippyB2bua(tmp_path, next_hop=("127.0.0.1", bob.sip_port), hide_call_id=hide_call_id) as pbx:
            offer = opus_sdp(alice.rtp_port, OFFER_ATTR)
            answer = opus_sdp(bob.rtp_port, ANSWER_ATTR, session=77)
            call = setup_call(alice, bob, pbx.addr, f"sip:bob@127.0.0.1:{pbx.port}", offer, answer)
            hold = opus_sdp(alice.rtp_port, OFFER_ATTR + "a=sendonly\r\n", session=4243)
            held = opus_sdp(bob.rtp_port, ANSWER_ATTR + "a=recvonly\r\n", session=78)
            re_invite, re_ok = reinvite(call, alice, bob, pbx.addr, hold, held)
            bye = hang_up(call, alice, bob, pbx.addr, cseq_step=2)
            pbx_port = pbx.port
        alice_rtp, bob_rtp = alice.rtp_port, bob.rtp_port

    invite = call.callee_invite
    # Its own Call-ID on the callee's leg, for the INVITE and for in-dialog requests; the caller's comes back to it.
    assert invite.call_id != call.caller_call_id
    if hide_call_id:
        assert call.caller_call_id not in invite.raw  # not even inside another header
    assert (call.caller_call_id + "-b2b_1" == invite.call_id) is not hide_call_id
    assert bye.call_id == invite.call_id
    assert call.caller_ok.call_id == call.caller_call_id
    # A new dialog: the B2BUA's own tags, its Contact, the caller's user at the B2BUA's host.
    assert f"tag={alice.tag}" not in invite.header("From")
    assert uri_of(invite.header("From")) == "sip:alice@127.0.0.1"
    assert uri_of(invite.header("To")) == "sip:bob@127.0.0.1"
    assert uri_of(invite.header("Contact")).endswith(f"127.0.0.1:{pbx_port}")
    # The SDP crosses byte for byte both ways, a=voipgw and unknown attributes included...
    assert invite.body == offer
    assert call.caller_ok.body == answer
    # A re-INVITE (hold) crosses the same way, on the callee's own Call-ID.
    assert re_invite.call_id == invite.call_id and re_invite.body == hold
    assert re_ok.body == held
    # ...so the media goes straight between the endpoints: the B2BUA relays none (no rtpproxy).
    assert sdp_media_addr(invite.body) == ("127.0.0.1", alice_rtp)
    assert sdp_media_addr(call.caller_ok.body) == ("127.0.0.1", bob_rtp)
