"""The inside leg's SRTP decisions (voipgw.gateway.inside_media) by ``inside.srtp``: a table of phone offers and
answers, and the SDP lines that carry them (voipgw.sdp)."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest

from voipgw.gateway.inside_media import (
    PLAIN,
    InsideSrtpRefused,
    answer_offer,
    contact_is_tls,
    offer_crypto,
    offer_profile,
    reoffer,
    settle_answer,
)
from voipgw.gateway.runtime import b2bua_config
from voipgw.ops.config import ConfigError, gateway_config_from_mapping
from voipgw.rtp.sdes import SUITE, SrtpMode, new_crypto, parse_crypto
from voipgw.sdp import PCMU_CODEC, SAVP, build_sdp, parse_sdp

PHONE_KEY = bytes(range(30))
GOOD = f"1 {SUITE} inline:{base64.b64encode(PHONE_KEY).decode()}"
OFF, OPTIONAL, REQUIRED = SrtpMode.OFF, SrtpMode.OPTIONAL, SrtpMode.REQUIRED


def _offer(crypto: str | None, savp: bool) -> str:
    return build_sdp("10.0.0.20", 4000, [PCMU_CODEC], crypto=crypto, savp=savp)


@pytest.mark.parametrize(
    ("mode", "crypto", "savp", "outcome"),
    [
        (OFF, None, False, "plain"),
        (OFF, GOOD, False, "plain"),  # best-effort SRTP offer: answered plain
        (OFF, GOOD, True, "refused"),  # SRTP-only offer cannot be answered plain
        (OPTIONAL, None, False, "plain"),
        (OPTIONAL, GOOD, False, "srtp"),
        (OPTIONAL, GOOD, True, "srtp"),
        (OPTIONAL, "1 AES_CM_128_HMAC_SHA1_32 inline:AAAA", False, "plain"),
        (OPTIONAL, "1 AES_CM_128_HMAC_SHA1_32 inline:AAAA", True, "refused"),
        (REQUIRED, None, False, "refused"),
        (REQUIRED, GOOD, True, "srtp"),
        (REQUIRED, GOOD, False, "srtp"),
        (REQUIRED, f"1 {SUITE} inline:AAAA", True, "refused"),
    ],
)
def test_answer_to_a_phone_offer(mode: SrtpMode, crypto: str | None, savp: bool, outcome: str) -> None:
    offer = parse_sdp(_offer(crypto, savp))
    if outcome == "refused":
        with pytest.raises(InsideSrtpRefused) as info:
            answer_offer(mode, offer, over_tls=True)
        assert "inside.srtp" in info.value.why and PHONE_KEY.hex() not in info.value.why
        return
    got = answer_offer(mode, offer, over_tls=True)
    if outcome == "plain":
        assert got == PLAIN and not got.srtp
        return
    assert got.keys is not None and got.keys.remote == PHONE_KEY and got.keys.local != PHONE_KEY
    assert got.attribute is not None
    ours = parse_crypto(got.attribute)
    assert ours.tag == 1 and ours.key_salt == got.keys.local
    answer = parse_sdp(build_sdp("10.0.0.1", 20000, [PCMU_CODEC], crypto=got.attribute, savp=savp))
    assert answer.profile == (SAVP if savp else "RTP/AVP") and answer.crypto == (got.attribute,)


@pytest.mark.parametrize(
    ("mode", "answer_crypto", "outcome"),
    [
        (OFF, None, "plain"),
        (OPTIONAL, None, "plain"),
        (OPTIONAL, "echo", "srtp"),
        (REQUIRED, "echo", "srtp"),
        (REQUIRED, None, "refused"),
        (REQUIRED, "tag2", "refused"),
        (OPTIONAL, "garbage", "refused"),
    ],
)
def test_settle_the_phone_answer(mode: SrtpMode, answer_crypto: str | None, outcome: str) -> None:
    ours = offer_crypto(mode, "sip:alice@10.0.0.20:5061;transport=tls")
    assert (ours is None) is (mode is OFF)
    assert offer_profile(mode) is (mode is REQUIRED)
    theirs = new_crypto(2 if answer_crypto == "tag2" else 1)
    value = {"echo": theirs.render(), "tag2": theirs.render(), "garbage": "1 nonsense"}.get(answer_crypto or "")
    answer = parse_sdp(build_sdp("10.0.0.20", 4000, [PCMU_CODEC], crypto=value, savp=True))
    if outcome == "refused":
        with pytest.raises(InsideSrtpRefused):
            settle_answer(mode, ours, answer)
        return
    got = settle_answer(mode, ours, answer)
    if outcome == "plain":
        assert got == PLAIN
    else:
        assert ours is not None and got.keys is not None
        assert got.keys.local == ours.key_salt and got.keys.remote == theirs.key_salt


@pytest.mark.parametrize(
    ("mode", "over_tls", "outcome"),
    [(REQUIRED, False, "refused"), (REQUIRED, True, "srtp"), (OPTIONAL, False, "srtp"), (OFF, False, "plain")],
)
def test_sdes_offer_over_plain_sip(mode: SrtpMode, over_tls: bool, outcome: str) -> None:
    offer = parse_sdp(_offer(GOOD, False))
    if outcome == "refused":
        with pytest.raises(InsideSrtpRefused, match="SIP over TLS"):
            answer_offer(mode, offer, over_tls)
    else:
        assert answer_offer(mode, offer, over_tls).srtp is (outcome == "srtp")


@pytest.mark.parametrize(
    ("contact", "tls"),
    [
        ("sip:alice@10.0.0.20:5061;transport=tls", True),
        ("sips:alice@10.0.0.20", True),
        ("sip:alice@10.0.0.20:5060", False),
        ("sip:alice@10.0.0.20:5060;transport=udp", False),
    ],
)
def test_offer_to_a_phone_needs_a_tls_contact_under_required(contact: str, tls: bool) -> None:
    assert contact_is_tls(contact) is tls
    if tls:
        assert offer_crypto(REQUIRED, contact) is not None
    else:
        with pytest.raises(InsideSrtpRefused, match="not SIP over TLS"):
            offer_crypto(REQUIRED, contact)
        assert offer_crypto(OPTIONAL, contact) is not None and offer_crypto(OFF, contact) is None


def test_sdp_crypto_lines_parse_and_never_show_in_repr() -> None:
    sdp = _offer(GOOD, True)
    assert "m=audio 4000 RTP/SAVP 0" in sdp and f"a=crypto:{GOOD}" in sdp
    desc = parse_sdp(sdp)
    assert desc.crypto == (GOOD,) and desc.profile == SAVP
    assert GOOD not in repr(desc)
    plain = parse_sdp(build_sdp("10.0.0.20", 4000, [PCMU_CODEC]))
    assert plain.crypto == () and plain.profile == "RTP/AVP"


def test_inside_srtp_config_reaches_the_b2bua(tmp_path: Path) -> None:
    base: dict[str, Any] = {
        "outside": {"registrar": "127.0.0.1:5060"},
        "users": {"a": {"outside_aor": "a@b", "inside_password": "pw"}},
    }
    assert b2bua_config(gateway_config_from_mapping(base), tmp_path).inside_srtp is SrtpMode.OFF
    for mode in SrtpMode:
        cfg = gateway_config_from_mapping({**base, "inside": {"srtp": mode.value}})
        assert cfg.inside.srtp is mode and b2bua_config(cfg, tmp_path).inside_srtp is mode
    for bad in ("on", "", "REQUIRED", True, 1):
        with pytest.raises(ConfigError, match=r"inside\.srtp") as info:
            gateway_config_from_mapping({**base, "inside": {"srtp": bad}})
        assert "\n" not in str(info.value)
    for name in ("gw.crt", "gw.key"):
        (tmp_path / name).write_text("")
    tls = {"tls_cert_file": str(tmp_path / "gw.crt"), "tls_key_file": str(tmp_path / "gw.key")}
    cfg = gateway_config_from_mapping({**base, "inside": {"tls_port": 5061}, "outside": {**base["outside"], **tls}})
    assert b2bua_config(cfg, tmp_path).outside_tls is not None
    assert b2bua_config(cfg, tmp_path).outside_tls.port == 5061  # type: ignore[union-attr]
    for bad_port in (-1, 70000, "5061"):
        with pytest.raises(ConfigError, match=r"inside\.tls_port"):
            gateway_config_from_mapping({**base, "inside": {"tls_port": bad_port}})


def test_a_reoffer_keeps_an_srtp_leg_srtp_and_takes_a_new_phone_key() -> None:
    first = answer_offer(REQUIRED, parse_sdp(_offer(GOOD, True)), over_tls=True)
    assert first.keys is not None
    same = reoffer(first, parse_sdp(_offer(GOOD, True)))
    assert same.keys == first.keys and same.attribute == first.attribute
    new_key = new_crypto(3)
    rekeyed = reoffer(first, parse_sdp(_offer(new_key.render(), True)))
    assert rekeyed.keys is not None and rekeyed.keys.local == first.keys.local
    assert rekeyed.keys.remote == new_key.key_salt
    assert rekeyed.attribute is not None and parse_crypto(rekeyed.attribute).tag == 3
    with pytest.raises(InsideSrtpRefused, match="drops SRTP"):
        reoffer(first, parse_sdp(_offer(None, False)))
    assert reoffer(PLAIN, parse_sdp(_offer(GOOD, True))) == PLAIN  # a plain leg stays plain
