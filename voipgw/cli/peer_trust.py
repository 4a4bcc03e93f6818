"""What the side *whose* key changed may learn (issue 15, item 2), and only what is true: the peer refused the call
for a key change (its 488 Warning or BYE/CANCEL Reason: "call refused for a key change"), or its BYE says it saw a
changed key and went on unverified (``key_change_policy = "warn"``). Both texts come from the peer's messages,
which the PBX could forge: they are shown as what the other side says, never as a verdict of our own."""

from __future__ import annotations

from voipgw.call import CallRecord, Security
from voipgw.negotiate import KEY_CHANGE_REFUSED

PEER_SAW_KEY_CHANGE = "voipgw: the other side saw a changed identity key for you and went on unverified"
"""The BYE Reason of a phone that hangs up a call it ran marked "key changed" (no comma: the Reason's text ends at
the first one). The same phone also says it inside the encryption from the call's first frames (NOTICE,
``Notice.KEY_CHANGE_SEEN``), which reaches a peer that hangs up first too and which the PBX cannot forge or strip."""


def hangup_reason(rec: CallRecord) -> str | None:
    """Our BYE's Reason when we hang up: tell the peer we saw its key change (it cannot know otherwise)."""
    return PEER_SAW_KEY_CHANGE if rec.security is Security.KEY_CHANGED else None


def peer_refused_our_key(rec: CallRecord) -> bool:
    """The peer refused the call for a key change: a key of ours it had on record differs from the one we use."""
    return rec.trust_warning is None and rec.reason is not None and KEY_CHANGE_REFUSED in rec.reason


def peer_saw_our_key_change(rec: CallRecord) -> bool:
    """The peer said so inside the encryption (NOTICE, from its first frames), or in its BYE's Reason."""
    return rec.peer_saw_key_change or (rec.reason is not None and PEER_SAW_KEY_CHANGE in rec.reason)


def security_text(rec: CallRecord, security: str) -> str:
    """The summary's security: never a bare "secure, verified" when the peer says it does not trust our key."""
    if peer_saw_our_key_change(rec):
        return f"{security} on your side; NOT verified on the other side (it saw a changed key for you)"
    if peer_refused_our_key(rec):
        return f"{security} (the other side refused your key)"
    return security


def peer_key_notice(rec: CallRecord) -> str | None:
    """The lines for the side whose key changed, or None. No ``accept-key`` advice: that is the other side's
    command, about our key; we can only compare safety numbers with it."""
    peer = rec.remote_aor
    if peer_refused_our_key(rec):
        return (
            f"{peer} refused the call for a key change: it has another identity key on record for you ({rec.local_aor})"
            f". If you rotated or reinstalled your key, that is expected: compare your new safety number with {peer} "
            f"over another channel (voipgw fingerprint {peer}); {peer} then accepts or verifies your new key. If you "
            "did not, someone may be impersonating you or intercepting the call."
        )
    if peer_saw_our_key_change(rec):
        return (
            f"{peer} saw a CHANGED identity key for you ({rec.local_aor}) on this call and went on unverified. "
            f"Compare your safety number with {peer} over another channel (voipgw fingerprint {peer}); {peer} then "
            "accepts or verifies your key."
        )
    return None
