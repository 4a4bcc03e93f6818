"""The signed 0-RTT handshake: round trips in both suites, every refusal reason, clock skew, replay, MITM."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from ratchet import errors
from ratchet.fingerprint import safety_number
from ratchet.handshake import (
    AnswerMessage,
    HandshakeConfig,
    NonceCache,
    Offerer,
    OfferMessage,
    answer_offer,
    decode_attribute,
    encode_attribute,
)
from ratchet.params import Direction, FrameSuite, Role, SendParams, SessionKeys, Suite
from ratchet.sas import compute_sas, verify_sas_reveal
from tests.support.handshake_fixtures import (
    ALICE,
    ALICE_AOR,
    BOB,
    BOB_AOR,
    CALL_ID,
    CLASSICAL,
    HYBRID,
    MALLORY,
    T0,
    answer,
    fixed_identity,
    make_offerer,
    resign_answer,
    resign_offer,
)
from voipgw.sdp import SdpError, build_sdp, opus_codec, parse_sdp


def _assert_mirrored(a: SessionKeys, b: SessionKeys) -> None:
    assert a.role is Role.OFFERER and b.role is Role.ANSWERER
    assert a.suite is b.suite
    assert a.transcript_hash == b.transcript_hash
    assert a.call_id == b.call_id == CALL_ID
    assert (a.local_aor, a.remote_aor) == (b.remote_aor, b.local_aor) == (ALICE_AOR, BOB_AOR)
    assert a.local_identity == b.remote_identity == ALICE.public.serialize()
    assert a.remote_identity == b.local_identity == BOB.public.serialize()
    assert a.send_root == b.recv_root and a.recv_root == b.send_root
    assert a.send_chain == b.recv_chain and a.recv_chain == b.send_chain
    assert a.send_time_secret == b.recv_time_secret and a.recv_time_secret == b.send_time_secret
    assert a.send_stream_salt == b.recv_stream_salt and a.recv_stream_salt == b.send_stream_salt
    assert a.send_params == b.recv_params and a.recv_params == b.send_params
    assert a.sas_seed == b.sas_seed and a.sas_commitment == b.sas_commitment
    assert a.answer_sas_commitment == b.answer_sas_commitment != a.sas_commitment
    assert a.interval_ms == b.interval_ms
    # The two directions and the three key kinds are all distinct.
    secrets = [a.send_root, a.recv_root, a.send_chain, a.recv_chain, a.send_time_secret, a.recv_time_secret]
    assert len({bytes(s) for s in [*secrets, a.sas_seed]}) == 7
    assert all(isinstance(s, bytearray) and len(s) == 32 for s in secrets)
    assert a.send_direction is Direction.OFFERER_TO_ANSWERER and b.send_direction is Direction.ANSWERER_TO_OFFERER


@pytest.mark.parametrize(
    ("offer_suites", "answer_suites", "expected"),
    [
        (CLASSICAL, CLASSICAL, Suite.X25519),
        (CLASSICAL, HYBRID, Suite.X25519),
        (HYBRID, CLASSICAL, Suite.X25519),
        (HYBRID, HYBRID, Suite.X25519_MLKEM768),
    ],
)
def test_round_trip_derives_mirrored_keys(
    offer_suites: frozenset[Suite], answer_suites: frozenset[Suite], expected: Suite
) -> None:
    offerer = make_offerer(offer_suites, send_params=SendParams(frames_per_key=7))
    answer_wire, bob_keys = answer(
        offerer.offer_bytes,
        suites=answer_suites,
        expected_remote_aor='"Alice" <sip:alice@Atlanta.example:5060;transport=udp>;tag=1',
        call_id=CALL_ID,
        send_params=SendParams(frames_per_key=1, per_frame_keys=True, frame_suite=FrameSuite.AES256_GCM_128),
    )
    alice_keys = offerer.accept_answer(answer_wire, T0 + 0.2, expected_remote_aor="<sip:bob@biloxi.example>")
    assert alice_keys.suite is expected
    _assert_mirrored(alice_keys, bob_keys)
    assert alice_keys.send_params == SendParams(frames_per_key=7)
    assert bob_keys.send_params.per_frame_keys and bob_keys.send_params.frame_suite is FrameSuite.AES256_GCM_128
    assert alice_keys.sas_secret is not None and bob_keys.sas_secret is not None
    r, s = alice_keys.sas_secret, bob_keys.sas_secret
    assert verify_sas_reveal(bob_keys.sas_commitment, r, Role.OFFERER)
    assert verify_sas_reveal(alice_keys.answer_sas_commitment, s, Role.ANSWERER)
    assert AnswerMessage.parse(answer_wire).sas_commitment == alice_keys.answer_sas_commitment
    assert compute_sas(alice_keys.sas_seed, r, s) == compute_sas(bob_keys.sas_seed, r, s)
    assert (AnswerMessage.parse(answer_wire).mlkem_ct is not None) == (expected is Suite.X25519_MLKEM768)


def test_independent_calls_get_independent_keys() -> None:
    keys = []
    for _ in range(2):
        offerer = make_offerer()
        wire, _ = answer(offerer.offer_bytes)
        keys.append(offerer.accept_answer(wire, T0 + 0.2))
    assert keys[0].send_chain != keys[1].send_chain
    assert keys[0].send_stream_salt != keys[1].send_stream_salt


def test_sdp_rendering_round_trip() -> None:
    # Through the SDP code production runs: voipgw.sdp finds the a=voipgw line, ratchet decodes its value.
    offerer = make_offerer(HYBRID)
    value = encode_attribute(offerer.offer_bytes)
    assert "=" not in value
    sdp = build_sdp("127.0.0.1", 4000, [opus_codec(96)], handshake=value)
    assert sdp.count("a=voipgw:") == 1 and f"\r\na=voipgw:{value}\r\n" in sdp
    found = parse_sdp(sdp).handshake
    assert found is not None and decode_attribute(found) == offerer.offer_bytes
    assert parse_sdp(build_sdp("127.0.0.1", 4000, [opus_codec(96)])).handshake is None
    with pytest.raises(SdpError) as exc:
        parse_sdp(f"{sdp}a=voipgw:{value}\r\n")
    assert exc.value.reason == "sdp-duplicate-handshake"


@pytest.mark.parametrize("value", ["AQ==", "AQ*B", "A", "AR", "AQI=", "A Q", "x" * 9000])
def test_bad_base64_is_malformed(value: str) -> None:
    # "AR" carries stray low bits (non-canonical for b"\x01"); padding and foreign characters are refused.
    with pytest.raises(errors.MalformedHandshake):
        decode_attribute(value)


def test_decode_attribute_inverts_encode() -> None:
    for n in range(0, 40):
        data = bytes(range(n))
        assert decode_attribute(encode_attribute(data)) == data


# --- refusals, one per reason ---


def test_swapped_offer_ephemeral_is_bad_signature() -> None:
    """MITM 1: replacing the ephemeral key (keeping Alice's identity and signature) breaks the signature."""
    offer = make_offerer().offer_bytes
    msg = OfferMessage.parse(offer)
    evil = X25519PrivateKey.generate().public_key().public_bytes_raw()
    tampered = msg.body().replace(msg.x25519, evil) + msg.signature
    with pytest.raises(errors.BadSignature):
        answer(tampered)


def test_swapped_answer_ephemeral_is_bad_signature() -> None:
    offerer = make_offerer()
    wire, _ = answer(offerer.offer_bytes)
    msg = AnswerMessage.parse(wire)
    evil = X25519PrivateKey.generate().public_key().public_bytes_raw()
    with pytest.raises(errors.BadSignature):
        offerer.accept_answer(msg.body().replace(msg.x25519, evil) + msg.signature, T0 + 0.2)


def test_stripping_the_hybrid_suite_breaks_the_offer_signature() -> None:
    msg = OfferMessage.parse(make_offerer(HYBRID).offer_bytes)
    stripped = OfferMessage(**{**msg.__dict__, "suite_mask": int(Suite.X25519), "mlkem_ek": None})
    with pytest.raises(errors.BadSignature):
        answer(stripped.to_bytes())


def test_signature_by_another_identity_is_refused() -> None:
    msg = OfferMessage.parse(make_offerer().offer_bytes)
    forged = msg.body() + MALLORY.sign(b"voipgw-v1 offer\x00" + msg.body())
    with pytest.raises(errors.BadSignature):
        answer(forged)


@pytest.mark.parametrize("version", [0, 1, 2, 4, 255])
def test_unsupported_version(version: int) -> None:
    """A version-2 (or any other) offer and answer are refused before any other check, with both versions named."""
    offer = bytearray(make_offerer().offer_bytes)
    offer[0] = version
    with pytest.raises(errors.UnsupportedVersion) as info:
        answer(bytes(offer))
    assert info.value.reason == "unsupported-version"
    assert f"version {version}; this endpoint speaks version 3 only" in str(info.value)
    offerer = make_offerer()
    wire = bytearray(answer(offerer.offer_bytes)[0])
    wire[0] = version
    with pytest.raises(errors.UnsupportedVersion, match=f"peer speaks voipgw protocol version {version};"):
        offerer.accept_answer(bytes(wire), T0 + 0.2)
    assert not offerer.closed


@pytest.mark.parametrize(
    "mutate",
    [
        lambda b: b"",
        lambda b: b[:10],
        lambda b: b[:-1],
        lambda b: b + b"\x00",
        lambda b: b[:1] + b"\x02" + b[2:],  # an answer's type byte
        lambda b: b[:1] + b"\x07" + b[2:],  # unknown type
        lambda b: b[:2] + b"\x05" + b[3:],  # unknown suite bit
        lambda b: b[:2] + b"\x00" + b[3:],  # empty suite mask
        lambda b: b[:3] + b"\x08" + b[4:],  # reserved flag bit
        lambda b: b[:3] + b"\x04" + b[4:],  # frame suite 2 does not exist
    ],
)
def test_malformed_offers(mutate: object) -> None:
    offer = make_offerer().offer_bytes
    with pytest.raises(errors.MalformedHandshake):
        answer(mutate(offer))  # type: ignore[operator]


def test_malformed_identity_key_type_byte() -> None:
    offer = bytearray(make_offerer().offer_bytes)
    offset = 1 + 1 + 1 + 1 + 2 + 4 + 8 + 16 + 16
    assert offer[offset] == 0x01
    offer[offset] = 0x05
    with pytest.raises(errors.MalformedIdentityKey):
        OfferMessage.parse(bytes(offer))


def test_unnormalized_signed_aor_is_malformed() -> None:
    msg = OfferMessage.parse(make_offerer().offer_bytes)
    bad = OfferMessage(**{**msg.__dict__, "offerer_aor": "Alice@ATLANTA.example"})
    with pytest.raises(errors.MalformedAor):
        OfferMessage.parse(bad.to_bytes())


def test_answer_choosing_two_suites_is_malformed() -> None:
    offerer = make_offerer()
    wire = bytearray(answer(offerer.offer_bytes)[0])
    wire[2] = 0x03
    with pytest.raises(errors.MalformedHandshake):
        offerer.accept_answer(bytes(wire), T0 + 0.2)


def test_offer_passed_as_answer_is_malformed() -> None:
    offerer = make_offerer()
    with pytest.raises(errors.MalformedHandshake):
        offerer.accept_answer(offerer.offer_bytes, T0 + 0.2)


def test_degenerate_ephemeral_key_is_refused() -> None:
    offer = resign_offer(make_offerer().offer_bytes, ALICE, x25519=bytes(32))
    with pytest.raises(errors.MalformedHandshake):
        answer(offer)


def test_invalid_mlkem_encapsulation_key_is_refused() -> None:
    offer = resign_offer(make_offerer(HYBRID).offer_bytes, ALICE, mlkem_ek=b"\xff" * 1184)
    with pytest.raises(errors.MalformedHandshake):
        answer(offer)


# --- freshness ---


@pytest.mark.parametrize("skew", [30.0, 60.0])
def test_offer_clock_skew_window(skew: float) -> None:
    offer = make_offerer(now=T0).offer_bytes
    for now in (T0 - skew, T0 + skew, T0):
        answer(offer, now=now, max_skew_s=skew)  # edges of the window are accepted
    with pytest.raises(errors.StaleTimestamp):
        answer(offer, now=T0 + skew + 0.002, max_skew_s=skew)
    with pytest.raises(errors.FutureTimestamp):
        answer(offer, now=T0 - skew - 0.002, max_skew_s=skew)


def test_answer_clock_skew_window() -> None:
    offerer = make_offerer(now=T0, max_skew_s=60.0)
    wire, _ = answer(offerer.offer_bytes, now=T0)
    with pytest.raises(errors.StaleTimestamp):
        offerer.accept_answer(wire, T0 + 60.002)
    with pytest.raises(errors.FutureTimestamp):
        offerer.accept_answer(wire, T0 - 60.002)
    offerer.accept_answer(wire, T0 + 60.0)


# --- replay ---


def test_replayed_offer_is_refused() -> None:
    cache = NonceCache(max_skew_s=60.0)
    offer = make_offerer().offer_bytes
    answer(offer, cache=cache)
    with pytest.raises(errors.ReplayedNonce):
        answer(offer, now=T0 + 30, cache=cache)
    answer(offer, cache=NonceCache())  # another endpoint's cache has not seen it


def test_nonce_cache_expiry_and_bound() -> None:
    cache = NonceCache(max_skew_s=10.0, max_entries=3)
    cache.check_and_add(b"a" * 16, 1000, now=1.0)
    with pytest.raises(errors.ReplayedNonce):
        cache.check_and_add(b"a" * 16, 1000, now=20.9)
    cache.check_and_add(b"a" * 16, 1000, now=21.0)  # expired after 2 x max_skew
    for i, n in enumerate((b"b", b"c")):
        cache.check_and_add(n * 16, 2000 + i, now=22.0)
    assert len(cache) == 3
    cache.check_and_add(b"d" * 16, 5000, now=22.0)  # evicts the oldest ("a", timestamp 1000)
    assert len(cache) == 3
    with pytest.raises(errors.ReplayedNonce):  # evicted, but the floor still refuses it
        cache.check_and_add(b"a" * 16, 1000, now=22.0)
    with pytest.raises(errors.ReplayedNonce):
        cache.check_and_add(b"d" * 16, 5000, now=22.0)


def test_nonce_is_recorded_only_after_the_signature_verifies() -> None:
    cache = NonceCache()
    offer = make_offerer().offer_bytes
    forged = offer[:-1] + bytes([offer[-1] ^ 1])
    with pytest.raises(errors.BadSignature):
        answer(forged, cache=cache)
    assert len(cache) == 0
    answer(offer, cache=cache)


# --- identities, Call-ID, parameters ---


def test_offerer_aor_must_match_sip_from() -> None:
    offer = make_offerer().offer_bytes
    with pytest.raises(errors.IdentityMismatch):
        answer(offer, expected_remote_aor="sip:carol@atlanta.example")


def test_callee_aor_must_be_ours_unless_accept_any() -> None:
    offer = make_offerer(remote_aor="sip:carol@biloxi.example").offer_bytes
    with pytest.raises(errors.IdentityMismatch):
        answer(offer)
    _, keys = answer(offer, accept_any_callee=True)
    assert keys.local_aor == BOB_AOR


def test_answerer_aor_must_match_the_callee() -> None:
    offerer = make_offerer()
    carol = fixed_identity("carol")
    wire, _ = answer(offerer.offer_bytes, identity=carol, local_aor="carol@biloxi.example", accept_any_callee=True)
    with pytest.raises(errors.IdentityMismatch):
        offerer.accept_answer(wire, T0 + 0.2)
    with pytest.raises(errors.IdentityMismatch):
        offerer.accept_answer(wire, T0 + 0.2, expected_remote_aor="sip:dave@biloxi.example")
    forwarded = make_offerer(accept_any_callee=True)
    wire, _ = answer(forwarded.offer_bytes, identity=carol, local_aor="carol@biloxi.example", accept_any_callee=True)
    assert forwarded.accept_answer(wire, T0 + 0.2).remote_aor == "carol@biloxi.example"


def test_call_id_must_match_the_dialog() -> None:
    offer = make_offerer().offer_bytes
    with pytest.raises(errors.CallIdMismatch):
        answer(offer, call_id="another-call@atlanta.example")


@pytest.mark.parametrize(
    "changes",
    [
        {"interval_ms": 19},
        {"interval_ms": 60_001},
        {"send_params": SendParams(frames_per_key=0)},
        {"send_params": SendParams(frames_per_key=1025)},
    ],
)
def test_offer_parameters_out_of_range(changes: dict[str, object]) -> None:
    offer = resign_offer(make_offerer().offer_bytes, ALICE, **changes)
    with pytest.raises(errors.BadParameters):
        answer(offer)


def test_answer_parameters_checked() -> None:
    offerer = make_offerer()
    wire, _ = answer(offerer.offer_bytes)
    with pytest.raises(errors.BadParameters):
        offerer.accept_answer(resign_answer(wire, BOB, interval_ms=3000), T0 + 0.2)
    with pytest.raises(errors.BadParameters):
        offerer.accept_answer(resign_answer(wire, BOB, send_params=SendParams(frames_per_key=0)), T0 + 0.2)


def test_config_validation() -> None:
    with pytest.raises(ValueError):
        HandshakeConfig(suites=frozenset({Suite.X25519_MLKEM768}))
    with pytest.raises(errors.BadParameters):
        HandshakeConfig(interval_ms=5)
    with pytest.raises(errors.BadParameters):
        HandshakeConfig(send_params=SendParams(frames_per_key=2000))


# --- suites and downgrade ---


def test_offer_without_mandatory_suite_is_unsupported() -> None:
    offer = resign_offer(make_offerer(HYBRID).offer_bytes, ALICE, suite_mask=int(Suite.X25519_MLKEM768))
    with pytest.raises(errors.UnsupportedSuite):
        answer(offer)


def test_answer_picking_a_weaker_common_suite_is_a_downgrade() -> None:
    offerer = make_offerer(HYBRID)
    wire, _ = answer(offerer.offer_bytes, suites=CLASSICAL)
    # The answerer (or a MITM holding its key) claims hybrid support yet picks x25519.
    downgraded = resign_answer(wire, BOB, supported_mask=0x03)
    with pytest.raises(errors.DowngradeDetected):
        offerer.accept_answer(downgraded, T0 + 0.2)
    offerer.accept_answer(wire, T0 + 0.2)  # honest: the answerer really supports only x25519


def test_answer_choosing_a_suite_nobody_offered_is_a_downgrade() -> None:
    offerer = make_offerer(CLASSICAL)
    wire, _ = answer(offerer.offer_bytes)
    bogus = resign_answer(wire, BOB, chosen_suite=Suite.X25519_MLKEM768, mlkem_ct=bytes(1088))
    with pytest.raises(errors.DowngradeDetected):
        offerer.accept_answer(bogus, T0 + 0.2)
    hybrid_offerer = make_offerer(HYBRID)
    wire, _ = answer(hybrid_offerer.offer_bytes)
    not_supported = resign_answer(wire, BOB, supported_mask=0x01)
    with pytest.raises(errors.DowngradeDetected):
        hybrid_offerer.accept_answer(not_supported, T0 + 0.2)


def test_answer_to_another_offer_is_refused() -> None:
    first, second = make_offerer(), make_offerer()
    wire, _ = answer(second.offer_bytes)
    with pytest.raises(errors.OfferHashMismatch):
        first.accept_answer(wire, T0 + 0.2)


# --- offerer life cycle and key hygiene ---


def test_refused_answer_leaves_offerer_usable_then_closes() -> None:
    offerer = make_offerer()
    wire, _ = answer(offerer.offer_bytes)
    with pytest.raises(errors.BadSignature):
        offerer.accept_answer(wire[:-1] + bytes([wire[-1] ^ 0x01]), T0 + 0.2)
    assert not offerer.closed
    offerer.accept_answer(wire, T0 + 0.2)
    assert offerer.closed and offerer._eph is None and offerer._mlkem is None
    with pytest.raises(errors.HandshakeClosed):
        offerer.accept_answer(wire, T0 + 0.2)


def test_close_drops_secrets() -> None:
    offerer = make_offerer(HYBRID)
    secret = offerer._sas_secret
    assert secret is not None
    offerer.close()
    assert offerer.closed and offerer._mlkem is None and bytes(secret) == bytes(16)
    wire, _ = answer(offerer.offer_bytes)
    with pytest.raises(errors.HandshakeClosed):
        offerer.accept_answer(wire, T0 + 0.2)


def test_reprs_show_no_secrets() -> None:
    offerer = make_offerer()
    wire, bob_keys = answer(offerer.offer_bytes)
    alice_keys = offerer.accept_answer(wire, T0 + 0.2)
    texts = [repr(alice_keys), repr(bob_keys), repr(offerer), repr(ALICE), repr(ALICE.public)]
    texts += [repr(OfferMessage.parse(offerer.offer_bytes)), repr(AnswerMessage.parse(wire))]
    secrets = [alice_keys.send_chain, alice_keys.recv_root, alice_keys.sas_seed, alice_keys.sas_secret]
    for text in texts:
        for s in secrets:
            assert s is not None
            assert bytes(s).hex()[:16] not in text and str(bytes(s)) not in text
    alice_keys.wipe()
    assert bytes(alice_keys.send_chain) == bytes(32)


# --- man in the middle ---


@pytest.mark.parametrize("relay_commitment", [False, True])
def test_mitm_with_own_identities_gets_different_sas_and_safety_numbers(relay_commitment: bool) -> None:
    """Mallory answers Alice as "bob" and calls Bob as "alice", each leg signed by one of her own keys."""
    m_to_alice, m_to_bob = fixed_identity("mallory-as-bob"), fixed_identity("mallory-as-alice")
    alice = make_offerer()
    alice_offer = OfferMessage.parse(alice.offer_bytes)
    # Leg 2: Mallory's own offer to Bob, claiming Alice's AOR.
    mallory = Offerer(
        m_to_bob,
        ALICE_AOR,
        BOB_AOR,
        CALL_ID,
        HandshakeConfig(),
        T0,
        sas_secret=bytes(16) if not relay_commitment else None,
    )
    offer_to_bob = mallory.offer_bytes
    if relay_commitment:  # copy Alice's commitment so that Alice's reveal can be relayed to Bob
        offer_to_bob = resign_offer(offer_to_bob, m_to_bob, sas_commitment=alice_offer.sas_commitment)
    _wire_to_mallory, bob_keys = answer(offer_to_bob, expected_remote_aor=ALICE_AOR)
    # Leg 1: Mallory answers Alice, claiming Bob's AOR.
    wire_to_alice, _mallory_keys_to_alice = answer_offer(
        m_to_alice, BOB_AOR, alice.offer_bytes, HandshakeConfig(), T0 + 0.1, NonceCache(), ALICE_AOR
    )
    alice_keys = alice.accept_answer(wire_to_alice, T0 + 0.2)  # signatures are all valid...
    assert alice_keys.remote_aor == BOB_AOR and bob_keys.remote_aor == ALICE_AOR
    assert alice_keys.sas_secret is not None and bob_keys.sas_secret is not None
    r_alice, s_bob = bytes(alice_keys.sas_secret), bytes(bob_keys.sas_secret)
    s_mallory = bytes(_mallory_keys_to_alice.sas_secret or b"")
    alice_sas = compute_sas(alice_keys.sas_seed, r_alice, s_mallory)
    if relay_commitment:
        assert verify_sas_reveal(bob_keys.sas_commitment, r_alice, Role.OFFERER)
        bob_sas = compute_sas(bob_keys.sas_seed, r_alice, s_bob)
    else:
        assert not verify_sas_reveal(bob_keys.sas_commitment, r_alice, Role.OFFERER)  # relaying r is detected
        bob_sas = compute_sas(bob_keys.sas_seed, bytes(16), s_bob)
    assert alice_sas != bob_sas  # ...but the users read different SAS
    alice_sn = safety_number(
        alice_keys.local_identity, b"alice@atlanta.example", alice_keys.remote_identity, b"bob@biloxi.example"
    )
    bob_sn = safety_number(
        bob_keys.local_identity, b"bob@biloxi.example", bob_keys.remote_identity, b"alice@atlanta.example"
    )
    assert alice_sn != bob_sn
    honest = safety_number(
        ALICE.public.serialize(), b"alice@atlanta.example", BOB.public.serialize(), b"bob@biloxi.example"
    )
    assert alice_sn != honest and bob_sn != honest


def test_identities_are_bound_by_the_signature_not_by_the_claim() -> None:
    """Mallory cannot pass her offer off as Alice's key: the identity field is signed and reported."""
    offer = resign_offer(make_offerer().offer_bytes, MALLORY)
    _, keys = answer(offer)
    assert keys.remote_identity == MALLORY.public.serialize() != ALICE.public.serialize()


def test_the_package_and_the_wire_name_the_same_protocol_version() -> None:
    import ratchet
    from ratchet import messages

    assert ratchet.PROTOCOL_VERSION == messages.VERSION == 3
    assert make_offerer().offer_bytes[0] == 3


# --- forking: one offer, several answers (one per early dialog) ---------------------------------------------


def test_a_forked_offer_accepts_each_early_dialogs_answer_once_with_its_own_keys() -> None:
    """A proxy forks alice's INVITE to two of bob's devices: each answers with its own keys; the offer accepts
    both (``forks=2``), never the same answer twice (two sessions with one key would reuse nonces), and then
    drops its ephemeral secrets."""
    from ratchet.handshake import MAX_FORKS
    from ratchet.identity import IdentityKey

    alice, bob1, bob2 = IdentityKey.generate(), IdentityKey.generate(), IdentityKey.generate()
    cfg, now = HandshakeConfig(), 1_800_000_000.0
    offerer = Offerer(alice, "alice@x.org", "bob@x.org", "c1", cfg, now, forks=2)
    a1, _ = answer_offer(bob1, "bob@x.org", offerer.offer_bytes, cfg, now, NonceCache(60))
    a2, _ = answer_offer(bob2, "bob@x.org", offerer.offer_bytes, cfg, now, NonceCache(60))
    k1 = offerer.accept_answer(a1, now)
    assert not offerer.closed
    with pytest.raises(errors.ReplayedNonce):
        offerer.accept_answer(a1, now)  # a retransmitted 183: never a second session with the same keys
    k2 = offerer.accept_answer(a2, now)
    assert offerer.closed  # both forks keyed: the ephemeral secrets are gone
    assert bytes(k1.send_chain) != bytes(k2.send_chain) and k1.remote_identity != k2.remote_identity
    assert bytes(k1.sas_secret or b"") == bytes(k2.sas_secret or b"")  # one r, revealed to each fork
    with pytest.raises(errors.HandshakeClosed):
        offerer.accept_answer(a2, now)
    with pytest.raises(ValueError):
        Offerer(alice, "alice@x.org", "bob@x.org", "c1", cfg, now, forks=MAX_FORKS + 1)
