"""Typed failures of the protocol core: one exception class per reason, each with a stable ``reason`` code.

Callers branch on the class (or log ``reason``); messages never contain key material.
"""

from __future__ import annotations


class RatchetError(Exception):
    """Base class of every protocol failure."""

    reason = "error"

    def __init__(self, detail: str = "") -> None:
        super().__init__(f"{self.reason}: {detail}" if detail else self.reason)
        self.detail = detail


# --- handshake (call setup) -------------------------------------------------------------------------------


class HandshakeError(RatchetError):
    """The offer or answer cannot be accepted."""

    reason = "handshake"


class MalformedHandshake(HandshakeError):
    reason = "malformed-handshake"


class UnsupportedVersion(HandshakeError):
    reason = "unsupported-version"


class UnsupportedSuite(HandshakeError):
    reason = "unsupported-suite"


class HybridRequired(UnsupportedSuite):
    """Local policy requires the post-quantum hybrid suite and the peer did not offer or choose it."""

    reason = "hybrid-required"


class DowngradeDetected(HandshakeError):
    reason = "downgrade"


class BadSignature(HandshakeError):
    reason = "bad-signature"


class IdentityMismatch(HandshakeError):
    reason = "identity-mismatch"


class StaleTimestamp(HandshakeError):
    reason = "stale-timestamp"


class FutureTimestamp(HandshakeError):
    reason = "future-timestamp"


class ReplayedNonce(HandshakeError):
    reason = "replayed-nonce"


class BadParameters(HandshakeError):
    """Negotiated media parameters out of the accepted range."""

    reason = "bad-parameters"


class MalformedIdentityKey(MalformedHandshake):
    """A serialized identity key has the wrong length, an unknown type byte or an invalid point."""

    reason = "malformed-identity-key"


class MalformedAor(MalformedHandshake):
    """An AOR / SIP URI cannot be normalized, or a signed AOR is not in normal form."""

    reason = "malformed-aor"


class CallIdMismatch(HandshakeError):
    """The offer was signed for another SIP Call-ID than the dialog it arrived in."""

    reason = "call-id-mismatch"


class OfferHashMismatch(HandshakeError):
    """A validly signed answer that answers some other offer than ours."""

    reason = "offer-hash-mismatch"


class HandshakeClosed(HandshakeError):
    """The offerer already completed or was closed; its ephemeral secrets are gone."""

    reason = "handshake-closed"


# --- identity files -----------------------------------------------------------------------------------------


class IdentityFileError(RatchetError):
    """A stored identity key cannot be loaded."""

    reason = "identity-file"


class MalformedIdentityFile(IdentityFileError):
    reason = "malformed-identity-file"


class PassphraseRequired(IdentityFileError):
    reason = "passphrase-required"


class WrongPassphrase(IdentityFileError):
    reason = "wrong-passphrase"


# --- media frames -----------------------------------------------------------------------------------------


class FrameError(RatchetError):
    """A received frame was refused. Receiver state is unchanged."""

    reason = "frame"


class MalformedFrame(FrameError):
    reason = "malformed-frame"


class WrongSuite(FrameError):
    reason = "wrong-suite"


class ReplayedFrame(FrameError):
    reason = "replayed"


class StaleFrame(FrameError):
    """The frame's time interval is older than the skew window allows."""

    reason = "stale-interval"


class FutureFrame(FrameError):
    """The frame's time interval is further ahead than the skew window allows."""

    reason = "future-interval"


class UnknownEpoch(FrameError):
    """The frame belongs to a ratchet epoch whose key has not been received (or has expired)."""

    reason = "unknown-epoch"


class TooFarAhead(FrameError):
    """The frame counter jumps further than the bounded skip allows."""

    reason = "too-far-ahead"


class ExpiredKey(FrameError):
    """A late frame whose message key was already dropped (age or count bound)."""

    reason = "expired-key"


class KeyDesync(FrameError):
    """Authentication failed and the key-check value differs: the peers' keys disagree."""

    reason = "key-desync"


class TamperedFrame(FrameError):
    """Authentication failed although the key-check value matched: the frame was altered."""

    reason = "tampered"


class ExtensionError(FrameError):
    """An authenticated frame carried an invalid in-band extension (ratchet key, SAS reveal)."""

    reason = "bad-extension"


class SealError(RatchetError):
    """The local side cannot seal (payload too large, session closed)."""

    reason = "seal"


# --- in-call post-quantum ratchet (PROTOCOL.md §B.12) ---------------------------------------------------------
# A refused PQ chunk never refuses the frame that carried it (the frame authenticated; its audio plays): the
# session counts the reason (``RatchetStats.pq_refused``) and drops what the chunk would have changed.


class PqChunkError(RatchetError):
    """An authenticated PQ_CHUNK (or the message it completed) cannot be used."""

    reason = "pq-chunk"


class MalformedPqChunk(PqChunkError):
    """The chunk's value is not ``u8 head ‖ u8 index ‖ 12 bytes``."""

    reason = "pq-malformed-chunk"


class ConflictingPqChunk(PqChunkError):
    """A share index of a message arrived twice with different bytes: the partial message is dropped and the
    exchange refused (an honest sender never does it)."""

    reason = "pq-conflicting-chunk"


class PqDigestMismatch(PqChunkError):
    """The reconstructed message does not match the digest inside it (shares of different messages, or forged)."""

    reason = "pq-digest-mismatch"


class BadPqKey(PqChunkError):
    """A verified encapsulation key that ML-KEM-768 refuses (a buggy or hostile peer)."""

    reason = "pq-bad-key"


class UnexpectedPqChunk(PqChunkError):
    """A ciphertext chunk for an exchange we are not running, or a chunk of an exchange refused earlier."""

    reason = "pq-unexpected-chunk"


class PqPartialEvicted(PqChunkError):
    """A newer exchange of the peer replaced an incomplete partial message (bounded memory: one per kind)."""

    reason = "pq-partial-evicted"


class UnknownPqExchange(PqChunkError):
    """A RATCHET_KEY_PQ names an exchange whose secret we do not hold: the step is ignored (never acked)."""

    reason = "pq-unknown-exchange"


# --- key exchange in the media path (in-band, docs/PROTOCOL.md §C.6) --------------------------------------


class InbandError(RatchetError):
    """An in-band key-exchange packet was refused. Nothing in it is trusted either way: a reassembled message
    still goes through ``answer_offer`` / ``accept_answer``."""

    reason = "inband"


class MalformedInband(InbandError):
    """Not a well-formed chunk: too short, wrong prefix, version or kind, index/count/length out of range, or data
    of the wrong length."""

    reason = "inband-malformed"


class InbandConflict(InbandError):
    """A chunk disagrees with its transfer's earlier chunks (other data at one index, or another count, total
    length or kind); the partial transfer is dropped."""

    reason = "inband-conflict"


class InbandHashMismatch(InbandError):
    """A complete set of chunks whose message does not hash to its transfer id; the transfer is dropped."""

    reason = "inband-hash-mismatch"
