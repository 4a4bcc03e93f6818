"""The signed zero-round-trip handshake carried in the SDP offer/answer: wire formats, checks, key schedule.

Sans-I/O: bytes and ``now`` in, bytes and :class:`SessionKeys` out. It never reads a clock, touches SIP or
keeps an ephemeral private key past the handshake. docs/protocol/handshake.md is the normative description.

Theory of operation: the offerer builds a signed OFFER (``Offerer``) that goes into the INVITE's SDP; the
answerer checks it and returns a signed ANSWER bound to the offer's hash plus its keys (``answer_offer``); the
offerer checks the answer (``Offerer.accept_answer``) and derives the same keys. Every refusal raises one
:class:`HandshakeError` subclass, in the order documented in the spec.
"""

from __future__ import annotations

import hashlib
import heapq
import math
import os
from dataclasses import dataclass, replace

from cryptography.hazmat.primitives.asymmetric.mlkem import MLKEM768PrivateKey, MLKEM768PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from .aor import normalize_aor
from .errors import (
    BadParameters,
    CallIdMismatch,
    DowngradeDetected,
    FutureTimestamp,
    HandshakeClosed,
    HybridRequired,
    IdentityMismatch,
    MalformedHandshake,
    OfferHashMismatch,
    ReplayedNonce,
    StaleTimestamp,
    UnsupportedSuite,
)
from .identity import IdentityKey
from .kdf import LABEL_CHAIN, LABEL_ROOT, LABEL_SAS, LABEL_TIME, hkdf_expand, hkdf_extract
from .messages import (
    _U64_MAX,
    ANSWER_SIG_CONTEXT,
    DEFAULT_MAX_SKEW_S,
    DEFAULT_NONCE_CACHE_ENTRIES,
    OFFER_SIG_CONTEXT,
    TRANSCRIPT_LABEL,
    AnswerMessage,
    HandshakeConfig,
    OfferMessage,
    _check_interval,
    _check_send_params,
    _ephemeral_x25519,
    _own_nonce,
    _suites_in,
    decode_attribute,
    encode_attribute,
)
from .params import (
    Direction,
    Role,
    SessionKeys,
    Suite,
)
from .sas import SAS_SECRET_LEN, sas_commitment

MAX_FORKS = 8
"""Distinct answers one offer may accept (early dialogs of a forked INVITE): bounded, as each keeps the offer's
ephemeral secrets alive until the call settles."""

# --- replay protection --------------------------------------------------------------------------------------


class NonceCache:
    """Offer nonces seen recently (sans-I/O: ``now`` is passed in). Used by the answerer.

    An entry lives 2 x max_skew after it is recorded, which outlasts the offer's freshness window. The cache
    is bounded: when full, the entry closest to expiry is evicted and the highest timestamp ever evicted
    becomes a floor; offers not newer than the floor are refused as replays, so eviction can cost availability
    under a flood of validly signed offers, but never lets a replay through.
    """

    def __init__(self, max_skew_s: float = DEFAULT_MAX_SKEW_S, max_entries: int = DEFAULT_NONCE_CACHE_ENTRIES):
        if max_entries < 1 or not 0 < max_skew_s < math.inf:
            raise ValueError("bad NonceCache bounds")
        self._ttl = 2.0 * max_skew_s
        self._max = max_entries
        self._entries: dict[bytes, float] = {}
        self._heap: list[tuple[float, bytes, int]] = []  # (expires_at, nonce, timestamp_ms)
        self._floor_ms = -1

    def __len__(self) -> int:
        return len(self._entries)

    def _expire(self, now: float) -> None:
        while self._heap and self._heap[0][0] <= now:
            expires_at, nonce, _ = heapq.heappop(self._heap)
            if self._entries.get(nonce) == expires_at:
                del self._entries[nonce]

    def check_and_add(self, nonce: bytes, timestamp_ms: int, now: float) -> None:
        """Record ``nonce``; raise ReplayedNonce if it (or possibly it, after an eviction) was seen."""
        self._expire(now)
        nonce = bytes(nonce)
        if nonce in self._entries:
            raise ReplayedNonce("offer nonce seen before")
        if timestamp_ms <= self._floor_ms:
            raise ReplayedNonce("offer older than the nonce cache's eviction floor")
        while len(self._entries) >= self._max:
            _, old_nonce, old_ts = heapq.heappop(self._heap)
            if old_nonce in self._entries:
                del self._entries[old_nonce]
                self._floor_ms = max(self._floor_ms, old_ts)
        expires_at = now + self._ttl
        self._entries[nonce] = expires_at
        heapq.heappush(self._heap, (expires_at, nonce, timestamp_ms))


# --- shared checks and the key schedule ---------------------------------------------------------------------


def _timestamp_ms(now: float) -> int:
    ts = int(now * 1000)
    if not 0 <= ts <= _U64_MAX:
        raise ValueError("now is outside the u64 millisecond range")
    return ts


def _check_freshness(timestamp_ms: int, now: float, max_skew_s: float) -> None:
    age_s = now - timestamp_ms / 1000.0
    if age_s > max_skew_s:
        raise StaleTimestamp(f"message is {age_s:.3f} s old (max {max_skew_s} s)")
    if age_s < -max_skew_s:
        raise FutureTimestamp(f"message is {-age_s:.3f} s in the future (max {max_skew_s} s)")


def _check_aor(signed: str, expected: str | None, who: str) -> None:
    if expected is not None and normalize_aor(expected) != signed:
        raise IdentityMismatch(f"{who} signed AOR {signed!r}, SIP says {normalize_aor(expected)!r}")


def transcript_hash(offer_wire: bytes, answer_wire: bytes) -> bytes:
    """TH = SHA-256("voipgw-v2 transcript" ‖ offer wire bytes ‖ answer wire bytes)."""
    return hashlib.sha256(TRANSCRIPT_LABEL + bytes(offer_wire) + bytes(answer_wire)).digest()


@dataclass(repr=False)
class DerivedKeys:
    """The key schedule's output, by direction (o2a = offerer to answerer)."""

    transcript_hash: bytes
    root: dict[Direction, bytearray]
    chain: dict[Direction, bytearray]
    time: dict[Direction, bytearray]
    sas_seed: bytearray

    def __repr__(self) -> str:
        return "DerivedKeys(<secret>)"


def derive_keys(ikm: bytes | bytearray, offer_wire: bytes, answer_wire: bytes) -> DerivedKeys:
    """PRK = HKDF-Extract(salt=TH, ikm); per direction root/chain/time secrets, and the SAS seed."""
    th = transcript_hash(offer_wire, answer_wire)
    prk = bytearray(hkdf_extract(th, bytes(ikm)))
    try:
        root: dict[Direction, bytearray] = {}
        chain: dict[Direction, bytearray] = {}
        time: dict[Direction, bytearray] = {}
        for d in Direction:
            root[d] = bytearray(hkdf_expand(bytes(prk), LABEL_ROOT + d.label, 32))
            chain[d] = bytearray(hkdf_expand(bytes(prk), LABEL_CHAIN + d.label, 32))
            time[d] = bytearray(hkdf_expand(bytes(prk), LABEL_TIME + d.label, 32))
        sas_seed = bytearray(hkdf_expand(bytes(prk), LABEL_SAS, 32))
    finally:
        prk[:] = bytes(len(prk))
    return DerivedKeys(th, root, chain, time, sas_seed)


def _x25519(private: X25519PrivateKey, peer_public: bytes) -> bytearray:
    try:
        return bytearray(private.exchange(X25519PublicKey.from_public_bytes(peer_public)))
    except ValueError as exc:  # all-zero output: a small-order point
        raise MalformedHandshake("degenerate X25519 public key") from exc


def _session_keys(
    *,
    role: Role,
    suite: Suite,
    offer: OfferMessage,
    answer: AnswerMessage,
    derived: DerivedKeys,
    sas_secret: bytearray,
) -> SessionKeys:
    offerer = role is Role.OFFERER
    send_d = Direction.OFFERER_TO_ANSWERER if offerer else Direction.ANSWERER_TO_OFFERER
    recv_d = Direction.ANSWERER_TO_OFFERER if offerer else Direction.OFFERER_TO_ANSWERER
    return SessionKeys(
        suite=suite,
        role=role,
        call_id=offer.call_id,
        local_aor=offer.offerer_aor if offerer else answer.answerer_aor,
        remote_aor=answer.answerer_aor if offerer else offer.offerer_aor,
        local_identity=offer.identity if offerer else answer.identity,
        remote_identity=answer.identity if offerer else offer.identity,
        transcript_hash=derived.transcript_hash,
        interval_ms=offer.interval_ms,
        send_params=offer.send_params if offerer else answer.send_params,
        recv_params=answer.send_params if offerer else offer.send_params,
        send_root=derived.root[send_d],
        recv_root=derived.root[recv_d],
        send_chain=derived.chain[send_d],
        recv_chain=derived.chain[recv_d],
        send_time_secret=derived.time[send_d],
        recv_time_secret=derived.time[recv_d],
        send_stream_salt=offer.nonce if offerer else answer.nonce,
        recv_stream_salt=answer.nonce if offerer else offer.nonce,
        sas_seed=derived.sas_seed,
        sas_commitment=offer.sas_commitment,
        answer_sas_commitment=answer.sas_commitment,
        sas_secret=sas_secret,
    )


# --- offerer ------------------------------------------------------------------------------------------------


class Offerer:
    """The calling side: builds the offer at construction, then accepts one answer (or is closed).

    The keyword arguments after ``now`` inject secrets for deterministic test vectors only; production code
    passes none of them and gets fresh randomness.
    """

    def __init__(
        self,
        identity: IdentityKey,
        local_aor: str,
        remote_aor: str,
        call_id: str,
        config: HandshakeConfig,
        now: float,
        *,
        ephemeral_private: bytes | None = None,
        nonce: bytes | None = None,
        sas_secret: bytes | None = None,
        mlkem_seed: bytes | None = None,
        forks: int = 1,
    ) -> None:
        if not 1 <= forks <= MAX_FORKS:
            raise ValueError(f"forks must be in [1, {MAX_FORKS}]")
        self.forks = forks
        """How many distinct answers this offer may accept: a proxy that forks the INVITE gets one per early
        dialog, each with its own keys (PROTOCOL.md §C.2). The ephemeral secrets live until then, or ``close()``."""
        self._accepted: set[bytes] = set()
        """SHA-256 of each accepted answer: the same answer twice would give two sessions the same keys."""
        self.config = config
        self.local_aor = normalize_aor(local_aor)
        self.remote_aor = normalize_aor(remote_aor)
        self.call_id = call_id
        hybrid = Suite.X25519_MLKEM768 in config.suites
        self._eph: X25519PrivateKey | None = _ephemeral_x25519(ephemeral_private)
        self._mlkem: MLKEM768PrivateKey | None = None
        if hybrid:
            self._mlkem = (
                MLKEM768PrivateKey.from_seed_bytes(mlkem_seed)
                if mlkem_seed is not None
                else MLKEM768PrivateKey.generate()
            )
        secret = bytearray(sas_secret if sas_secret is not None else os.urandom(SAS_SECRET_LEN))
        if len(secret) != SAS_SECRET_LEN:
            raise ValueError("sas_secret must be 16 bytes")
        self._sas_secret: bytearray | None = secret
        own_nonce = _own_nonce(nonce)
        unsigned = OfferMessage(
            suite_mask=config.suite_mask,
            send_params=config.send_params,
            interval_ms=config.interval_ms,
            timestamp_ms=_timestamp_ms(now),
            nonce=bytes(own_nonce),
            sas_commitment=sas_commitment(secret, Role.OFFERER),
            identity=identity.public.serialize(),
            x25519=self._eph.public_key().public_bytes_raw(),
            offerer_aor=self.local_aor,
            callee_aor=self.remote_aor,
            call_id=call_id,
            mlkem_ek=self._mlkem.public_key().public_bytes_raw() if self._mlkem is not None else None,
        )
        self.offer = replace(unsigned, signature=unsigned.sign(identity))
        self.offer_bytes = self.offer.to_bytes()
        self._offer_hash = hashlib.sha256(self.offer_bytes).digest()

    @property
    def closed(self) -> bool:
        return self._eph is None

    def close(self) -> None:
        """Drop the ephemeral secrets (call failed or cancelled). Idempotent."""
        self._eph = None
        self._mlkem = None
        if self._sas_secret is not None:
            self._sas_secret[:] = bytes(len(self._sas_secret))
            self._sas_secret = None

    def accept_answer(self, answer_bytes: bytes, now: float, expected_remote_aor: str | None = None) -> SessionKeys:
        """Check the answer and derive the session keys; the ephemeral secrets are dropped once ``forks`` answers
        were accepted (one, unless the caller expects a forking proxy). The same answer twice is ReplayedNonce.

        ``expected_remote_aor`` defaults to the callee we offered to, unless ``accept_any_callee`` is set.
        A refused answer leaves the offerer usable, so a forged answer cannot kill a call that a genuine
        answer would complete.
        """
        if self._eph is None or self._sas_secret is None:
            raise HandshakeClosed("this offer was already answered or closed")
        digest = hashlib.sha256(answer_bytes).digest()
        if digest in self._accepted:
            raise ReplayedNonce("this answer was already accepted (a retransmission, or a replay)")
        answer = AnswerMessage.parse(answer_bytes)
        answer.verify_signature()
        if answer.offer_hash != self._offer_hash:
            raise OfferHashMismatch("the answer is bound to another offer")
        _check_freshness(answer.timestamp_ms, now, self.config.max_skew_s)
        if expected_remote_aor is None and not self.config.accept_any_callee:
            expected_remote_aor = self.remote_aor
        _check_aor(answer.answerer_aor, expected_remote_aor, "answerer")
        if answer.interval_ms != self.offer.interval_ms:
            raise BadParameters("the answer changed the offer's interval_ms")
        _check_send_params(answer.send_params)
        offer_mask = self.offer.suite_mask
        common = offer_mask & answer.supported_mask
        chosen = int(answer.chosen_suite)
        if not (chosen & offer_mask and chosen & answer.supported_mask) or chosen != max(_suites_in(common)):
            raise DowngradeDetected(
                f"answer chose {answer.chosen_suite.name} from offer 0x{offer_mask:02x} and "
                f"answerer 0x{answer.supported_mask:02x}"
            )
        if self.config.require_hybrid and answer.chosen_suite is not Suite.X25519_MLKEM768:
            raise HybridRequired(f"the answerer chose {answer.chosen_suite.name}; this side requires X25519_MLKEM768")
        ikm = _x25519(self._eph, answer.x25519)
        try:
            if answer.chosen_suite is Suite.X25519_MLKEM768:
                assert self._mlkem is not None and answer.mlkem_ct is not None
                try:
                    ikm += self._mlkem.decapsulate(answer.mlkem_ct)
                except ValueError as exc:
                    raise MalformedHandshake("invalid ML-KEM ciphertext") from exc
            derived = derive_keys(ikm, self.offer_bytes, bytes(answer_bytes))
        finally:
            ikm[:] = bytes(len(ikm))
        keys = _session_keys(
            role=Role.OFFERER,
            suite=answer.chosen_suite,
            offer=self.offer,
            answer=answer,
            derived=derived,
            sas_secret=bytearray(self._sas_secret),
        )
        self._accepted.add(digest)
        if len(self._accepted) >= self.forks:
            self.close()
        return keys

    def __repr__(self) -> str:
        return f"Offerer(to={self.remote_aor!r}, call_id={self.call_id!r}, closed={self.closed})"


# --- answerer -----------------------------------------------------------------------------------------------


def answer_offer(
    identity: IdentityKey,
    local_aor: str,
    offer_bytes: bytes,
    config: HandshakeConfig,
    now: float,
    nonce_cache: NonceCache,
    expected_remote_aor: str | None = None,
    call_id: str | None = None,
    *,
    ephemeral_private: bytes | None = None,
    nonce: bytes | None = None,
    mlkem_encapsulation: tuple[bytes, bytes] | None = None,
    sas_secret: bytes | None = None,
) -> tuple[bytes, SessionKeys]:
    """Check an offer and return ``(answer wire bytes, session keys)``.

    ``expected_remote_aor`` is the SIP From AOR; ``call_id`` the dialog's Call-ID. The keyword-only arguments
    inject secrets for deterministic test vectors (``mlkem_encapsulation`` = (shared secret, ciphertext);
    ``sas_secret`` = the answerer's SAS contribution ``s``, committed to in the answer).
    """
    offer = OfferMessage.parse(offer_bytes)
    offer.verify_signature()
    _check_freshness(offer.timestamp_ms, now, config.max_skew_s)
    _check_aor(offer.offerer_aor, expected_remote_aor, "offerer")
    local = normalize_aor(local_aor)
    if not config.accept_any_callee and offer.callee_aor != local:
        raise IdentityMismatch(f"the offer is for {offer.callee_aor!r}, we are {local!r}")
    if call_id is not None and call_id != offer.call_id:
        raise CallIdMismatch("the offer was signed for another Call-ID")
    _check_interval(offer.interval_ms)
    _check_send_params(offer.send_params)
    if not offer.suite_mask & int(Suite.X25519):
        raise UnsupportedSuite("the offer lacks the mandatory x25519 suite")
    common = offer.suite_mask & config.suite_mask
    if not common:
        raise UnsupportedSuite(f"no common suite (offer 0x{offer.suite_mask:02x}, ours 0x{config.suite_mask:02x})")
    chosen = max(_suites_in(common))
    if config.require_hybrid and chosen is not Suite.X25519_MLKEM768:
        raise HybridRequired(f"the offer has no X25519_MLKEM768 (0x{offer.suite_mask:02x}); this side requires it")
    nonce_cache.check_and_add(offer.nonce, offer.timestamp_ms, now)

    eph = _ephemeral_x25519(ephemeral_private)
    ikm = _x25519(eph, offer.x25519)
    ct: bytes | None = None
    try:
        if chosen is Suite.X25519_MLKEM768:
            assert offer.mlkem_ek is not None
            if mlkem_encapsulation is not None:
                shared, ct = mlkem_encapsulation
            else:
                try:
                    ek = MLKEM768PublicKey.from_public_bytes(offer.mlkem_ek)
                except ValueError as exc:
                    raise MalformedHandshake("invalid ML-KEM encapsulation key") from exc
                shared, ct = ek.encapsulate()
            ikm += shared
            del shared
        own_nonce = _own_nonce(nonce)
        own_sas = bytearray(sas_secret if sas_secret is not None else os.urandom(SAS_SECRET_LEN))
        if len(own_sas) != SAS_SECRET_LEN:
            raise ValueError("sas_secret must be 16 bytes")
        unsigned = AnswerMessage(
            chosen_suite=chosen,
            supported_mask=config.suite_mask,
            send_params=config.send_params,
            interval_ms=offer.interval_ms,
            timestamp_ms=_timestamp_ms(now),
            nonce=bytes(own_nonce),
            sas_commitment=sas_commitment(own_sas, Role.ANSWERER),
            offer_hash=hashlib.sha256(bytes(offer_bytes)).digest(),
            identity=identity.public.serialize(),
            x25519=eph.public_key().public_bytes_raw(),
            answerer_aor=local,
            mlkem_ct=ct,
        )
        body = unsigned.body()
        answer_wire = body + unsigned.sign(identity)
        derived = derive_keys(ikm, bytes(offer_bytes), answer_wire)
    finally:
        ikm[:] = bytes(len(ikm))
        del eph
    answer = AnswerMessage.parse(answer_wire)
    keys = _session_keys(
        role=Role.ANSWERER, suite=chosen, offer=offer, answer=answer, derived=derived, sas_secret=own_sas
    )
    return answer_wire, keys


__all__ = [
    "ANSWER_SIG_CONTEXT",
    "OFFER_SIG_CONTEXT",
    "AnswerMessage",
    "DerivedKeys",
    "HandshakeConfig",
    "NonceCache",
    "OfferMessage",
    "Offerer",
    "answer_offer",
    "decode_attribute",
    "derive_keys",
    "encode_attribute",
    "transcript_hash",
]
