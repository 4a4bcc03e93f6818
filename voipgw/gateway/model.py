"""What a gateway call is: the B2BUA's settings (translated from the one gateway configuration,
``voipgw.ops.config.GatewayConfig``), one Bridge per call (both legs, its pipes, its counters) and how its security
state was shown to an unmodified phone (what is shown: ``voipgw.gateway.labels``). Data only: no I/O."""

from __future__ import annotations

import asyncio
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from voipgw.call import BridgeState, CallRecord, bridge_state
from voipgw.config import Policy
from voipgw.gateway.inside_media import PLAIN, InsideCrypto
from voipgw.gateway.pipes import OpusRelay, Passthrough, PcmPipe, switch_codec
from voipgw.gateway.sas_keys import SasAction
from voipgw.gateway.zones import Zones
from voipgw.leg import ActiveCall, Spawner
from voipgw.media import MediaStream
from voipgw.ops.config import DestinationRule, choose_policy
from voipgw.rtp.sdes import SrtpMode
from voipgw.sdp import Codec
from voipgw.sip import SipCall, TlsOptions


@dataclass(frozen=True)
class InsideUser:
    """A static inside phone and the outside identity the gateway holds for it."""

    name: str
    """The inside user part (``alice``): inside phones dial as it, outside callers reach it by it."""
    contact: str
    """Where the inside phone listens, e.g. ``sip:alice@127.0.0.1:5062``."""
    outside_aor: str
    """The AOR the gateway signs for on the outside leg, e.g. ``alice@example.org``."""
    display_name: str | None = None
    policy: Policy | None = None
    """Overrides the gateway's default policy for this user's calls (None: the default)."""


@dataclass(frozen=True)
class B2buaSettings:
    """What the B2BUA runs with; ``voipgw.gateway.runtime.b2bua_config`` is the one translation from the gateway
    configuration (the TOML file's, which flag mode builds too)."""

    home: Path
    """Identities and contact stores live in ``<home>/users/<name>/``."""
    users: tuple[InsideUser, ...]
    listen_host: str = "127.0.0.1"
    listen_port: int = 5070
    outside_proxy: tuple[str, int] | None = None
    """Next hop for outside INVITEs (the PBX); None sends them to the target URI's host:port."""
    routes: dict[str, str] = field(default_factory=dict)
    """Outside destination user -> URI, for calls the inside phone dialled at the gateway itself."""
    no_answer_timeout_s: float = 30.0
    sas_wait_s: float = 3.0
    """How long an inbound call waits for the outside caller's SAS reveal; past it the inside phone rings with
    the ``[NO SAS]`` (unverifiable) label, never a plain E2E one."""
    bind_call_id: bool = True
    """Require the signed Call-ID to equal the SIP Call-ID; False behind a B2BUA PBX (each leg its own Call-ID)."""
    inband: bool = True
    """The key exchange in the media path when the PBX strips ``a=voipgw`` (docs/PROTOCOL.md §C.6)."""
    inband_wait_s: float = 2.0
    pq_interval_s: float = 60.0
    """Seconds between our in-call ML-KEM exchanges on hybrid calls (docs/PROTOCOL.md §B.12)."""
    policy: Policy = Policy.REQUIRE
    """``require``: a far end without a voipgw gateway is refused with the reason; ``opportunistic``: such a
    call goes through in the clear, marked ``[NOT SECURE]``."""
    destinations: tuple[DestinationRule, ...] = ()
    outside_transport: str = "udp"
    """SIP transport toward the PBX: "udp", "tcp", "tls" or "auto" (UDP, and TCP for requests over 1300 bytes).
    The inside leg is always UDP. Over "tcp" and "tls" the post-quantum hybrid suite is offered too."""
    outside_tls: TlsOptions | None = None
    """CA bundle or pinned certificate of the PBX, and our own certificate (to accept TLS from the PBX)."""
    outside_require_hybrid: bool = False
    """Refuse outside calls that settle on x25519 alone (needs outside_transport "tcp" or "tls")."""
    inside_srtp: SrtpMode = SrtpMode.OFF
    """``inside.srtp``: SDES-SRTP on the inside leg (off, optional: when the phone does it, required: or 488)."""
    speak_sas: bool = True
    """At the answer, speak the cue's words and the SAS after the tone cue (``voipgw.gateway.announce``); False:
    the tone cue alone (the far end is heard sooner; the caller then learns no SAS)."""
    zones: Zones | None = None
    """The outside zone's own SIP listener and each zone's RTP range (``voipgw.gateway.zones``); None: flag mode,
    one socket for both legs and RTP on any free port of ``listen_host``."""
    media_timeout_s: float = 30.0
    """An answered call one of whose legs receives no RTP this long (while nobody holds) is ended with the reason,
    never left as a dead call. Not shorter: a plain phone with silence suppression may pause its RTP for seconds."""

    def policy_for(self, user: str, destination_aor: str) -> Policy:
        """The first matching destination rule, then the user's own policy, then the default."""
        inside = next((u for u in self.users if u.name == user), None)
        return choose_policy(self.destinations, user, destination_aor, inside.policy if inside else None, self.policy)


def _peer(media: MediaStream | None) -> str | None:
    """Where the inside leg sends its RTP (the phone's address; it never moves)."""
    remote = media.endpoint.remote if media is not None else None
    return f"{remote[0]}:{remote[1]}" if remote is not None else None


@dataclass
class Bridge:
    """One gateway call: the inside (plain) leg, the outside (secure) leg and the two pipes between them."""

    user: InsideUser
    direction: str
    """``outbound`` (inside phone -> outside) or ``inbound`` (outside -> inside phone)."""
    remote_aor: str
    inside_sip: SipCall | None = None
    inside_media: MediaStream | None = None
    inside_codec: str | None = None
    inside_payload: Codec | None = None
    """The inside leg's negotiated codec (kept for re-INVITE answers)."""
    inside_crypto: InsideCrypto = field(default=PLAIN, repr=False)
    """The inside leg's SDES-SRTP keys and our ``a=crypto`` value (PLAIN: plain RTP), kept for re-INVITE answers."""
    inside_savp: bool = False
    """The inside leg's SDP says RTP/SAVP (else RTP/AVP, with our crypto line if SRTP is on: best effort)."""
    inside: CallRecord = field(default_factory=CallRecord)
    """The inside (plain) leg's record: incoming for an outbound bridge, outgoing for an inbound one."""
    outside: ActiveCall | None = None
    background: Spawner = field(default_factory=Spawner)
    """The outside leg's background work (contact-store writes), awaited before the bridge is closed."""
    to_outside: PcmPipe = field(default_factory=PcmPipe)
    to_inside: PcmPipe = field(default_factory=PcmPipe)
    relay_out: OpusRelay = field(default_factory=OpusRelay)
    """Opus frames from the inside phone for the outside leg (pass-through)."""
    relay_in: OpusRelay = field(default_factory=OpusRelay)
    passthrough: Passthrough = field(default_factory=Passthrough)
    failed: bool = False
    """The bridge as a whole did not do its job (refused, cancelled, given up, internal error), whatever its legs
    say; set through :meth:`fail`."""
    reason: str = ""
    policy: str = "require"
    """The policy this call was placed or answered under (per user and destination)."""
    display: str | None = None
    """What the inside phone was shown (``voipgw.gateway.labels``): the From display name of the INVITE ringing it
    (inbound), or the P-Asserted-Identity/Remote-Party-ID of the 200 OK answering it (outbound)."""
    label: str | None = None
    """The kind of that label (a ``LabelKind`` value: verified, known, first-contact, key-changed, not-secure,
    unverifiable)."""
    cue: str | None = None
    """What the inside phone was told at the answer (``voipgw.gateway.announce.Cue``'s value)."""
    sas_told: bool = False
    """The inside phone was given the SAS (on its ringing display, or spoken): only then is ``*1`` taken."""
    sas_check: SasAction | None = None
    """The inside user's SAS key in this call: ``confirm`` (*1, contact verified) or ``mismatch`` (*0, hung up)."""
    ringback_frames: int = 0
    """Inbound: locally generated ringback frames sent (sealed) to the outside caller while the inside phone rang."""
    inside_hold: bool = False
    """The inside phone put the call on hold (its re-INVITE offered sendonly or inactive)."""
    outside_hold: bool = False
    """The far end put the call on hold (re-INVITE on the outside leg)."""
    holds: int = 0
    """Hold and resume re-INVITEs passed from one leg to the other."""
    dtmf_to_outside: int = 0
    """DTMF digits relayed (counted, never recorded: they may be PINs)."""
    dtmf_to_inside: int = 0
    dtmf_dropped: int = 0
    """Digits that could not cross (the other leg negotiated no telephone-event)."""
    inside_sdp: list[int] = field(default_factory=lambda: [secrets.randbelow(1 << 62), 1])
    """The o= session id and version of our SDP on the inside leg (a re-INVITE bumps the version)."""
    outside_sdp: list[int] = field(default_factory=lambda: [secrets.randbelow(1 << 62), 1])
    sas_wait_ms: float | None = None
    """Inbound: from the outside answer to the SAS reveal (the inside phone rings only after it)."""
    refused: bool = False
    """The INVITE was refused at setup (by policy, key exchange, routing): logged once, rate-limited, where refused."""
    started_at: float = field(default_factory=time.time)
    ended_at: float | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def state(self) -> BridgeState:
        """Derived from the two legs' records (see ``voipgw.call.bridge_state``)."""
        outside = self.outside.record if self.outside is not None else None
        return bridge_state(self.inside, outside, failed=self.failed, over=self.ended_at is not None)

    def fail(self, reason: str | None = None) -> None:
        self.failed = True
        if reason is not None:
            self.reason = reason

    @property
    def call_id(self) -> str:
        return self.outside.record.call_id if self.outside is not None else ""

    def rtp_malformed(self) -> dict[str, int]:
        """Datagrams at this call's media sockets (both legs) that were not RTP at all, by reason."""
        out: dict[str, int] = {}
        for media in (self.inside_media, self.outside.media if self.outside is not None else None):
            if media is not None:
                for reason, n in media.endpoint.stats.malformed_by_reason.items():
                    out[reason] = out.get(reason, 0) + n
        return out

    @property
    def inside_srtp(self) -> bool:
        """The inside leg runs SDES-SRTP (``inside.srtp``)."""
        return self.inside_crypto.srtp

    def inside_dropped(self) -> dict[str, int]:
        """Well-formed datagrams the inside leg dropped, by reason: not from the phone's address (``wrong-source``,
        ``wrong-port``), SRTP that did not authenticate (``srtp-auth``, ``srtp-replay``, ``srtp-malformed``)..."""
        media = self.inside_media
        return dict(media.endpoint.stats.refused) if media is not None else {}

    def __post_init__(self) -> None:
        self.inside.direction = "incoming" if self.direction == "outbound" else "outgoing"
        self.to_outside.outside_codec = switch_codec(self.relay_in, self.relay_out, self.passthrough)

    def snapshot(self) -> dict[str, Any]:
        rec = self.outside.record if self.outside is not None else None
        out_media = self.outside.media if self.outside is not None else None
        in_media = self.inside_media
        return {
            "user": self.user.name,
            "direction": self.direction,
            "remote_aor": self.remote_aor,
            "state": self.state.status,
            "reason": self.reason,
            "outside_call_id": rec.call_id if rec else None,
            "inside_call_id": self.inside_sip.call_id if self.inside_sip is not None else None,
            "security": rec.security.value if rec else "pending",
            "sas": rec.sas if rec else None,
            "degraded": rec.health.as_dict() if rec else {"active": [], "seen": []},
            "safety_number": rec.safety_number if rec else None,
            "display": self.display,
            "label": self.label,
            "policy": self.policy,
            "cue": self.cue,
            "sas_check": self.sas_check.value if self.sas_check is not None else None,
            "ringback_frames": self.ringback_frames,
            "hold": {"inside": self.inside_hold, "outside": self.outside_hold, "reinvites": self.holds},
            "dtmf": {
                "to_outside": self.dtmf_to_outside,
                "to_inside": self.dtmf_to_inside,
                "dropped": self.dtmf_dropped,
            },
            "inside_codec": self.inside_codec,
            "inside_srtp": self.inside_srtp,
            "inside_peer": _peer(in_media),
            "inside_dropped": self.inside_dropped(),
            "passthrough": self.passthrough.on,
            "passthrough_frames": {"to_outside": self.relay_out.passed, "to_inside": self.relay_in.passed},
            "pipe_frames_dropped": self.to_outside.dropped + self.to_inside.dropped,
            "outside_codec": rec.codec if rec else None,
            "outside_suite": rec.suite if rec else None,
            "key_exchange": rec.key_exchange.value if rec else "none",
            "call_id_bound": rec.call_id_bound if rec else None,
            "outside_setup_ms": rec.setup_ms if rec else None,
            "sas_wait_ms": self.sas_wait_ms,
            "inside_frames_in": in_media.stats.frames_opened if in_media else 0,
            "inside_frames_out": in_media.stats.frames_sent if in_media else 0,
            "outside_frames_sealed": out_media.stats.frames_sent if out_media else 0,
            "outside_frames_opened": out_media.stats.frames_opened if out_media else 0,
            "outside_frames_refused": out_media.stats.frames_refused if out_media else 0,
            "outside_pq_epochs": self.outside.session.pq_epochs if self.outside and self.outside.session else 0,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
        }
