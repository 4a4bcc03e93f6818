"""``voipgw call`` and ``voipgw listen``: the softphone, with a live status line and a summary at hang-up."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import getpass
import json
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from ratchet.aor import normalize_aor
from ratchet.errors import MalformedAor
from ratchet.fingerprint import format_safety_number
from voipgw.audio.device import NoAudioDevice
from voipgw.audio.pcm import Pcm
from voipgw.audio.sources import ArrayPlayer, AudioSink, AudioSource, MemorySink, SilenceSource, WavRecorder
from voipgw.audio.wav import WavError, read_wav
from voipgw.call import CallRecord, CallState, Security
from voipgw.cli.errors import CliError
from voipgw.cli.passphrase import unlock_identity
from voipgw.cli.peer_trust import (
    hangup_reason,
    peer_key_notice,
    peer_refused_our_key,
    peer_saw_our_key_change,
    security_text,
)
from voipgw.cli.progress import CallerProgress, never_keyed, outcome_line
from voipgw.cli.ringing import REFUSALS, Decision, ring_by_hand
from voipgw.cli.style import loud
from voipgw.config import DEFAULT_PHONE_CONFIG, ConfigError, PhoneConfig, load_phone_config, parse_hostport
from voipgw.media import MediaError
from voipgw.media_health import Degraded
from voipgw.phone import ActiveCall, IncomingCall, Phone, RegistrationFailed
from voipgw.rtp.dtmf import DEFAULT_DURATION_MS, DtmfError, check_digits, digit_train
from voipgw.store.contacts import VerifyMethod
from voipgw.store.errors import ContactStoreError
from voipgw.store.history import CallEntry, Direction, add_call
from voipgw.store.replay import replay_cache
from voipgw.trust import TrustStore

log = logging.getLogger("voipgw.cli")

EXIT_CALL_FAILED = 1
"""The command ran and failed: the call was refused, failed or ended abnormally; the registrar refused us."""
EXIT_USAGE = 2
"""The command could not start: bad arguments or configuration, an unusable identity or contact store, an address
that cannot be bound (argparse's own usage errors are 2 as well)."""
EXIT_NO_AUDIO = 3
EXIT_CODES_EPILOG = (
    "exit status: 0 the call(s) ended normally; 1 a call failed or was refused, or the registrar refused us; "
    "2 usage or configuration error (bad arguments, configuration, identity, contact store, or an address that "
    "cannot be bound: nothing was attempted); 3 no audio device (use --play/--record)"
)
PEER_SAS_MISMATCH = "voipgw: the other side reported that the SAS did not match (possible man in the middle)"
"""The BYE Reason of a user who pressed ``x``: the other side exits 1 with a loud line (no comma: the Reason's text
ends at the first one)."""
USER_SAS_MISMATCH = "the SAS did not match (reported by the user): possible man in the middle"
TAIL_S = 0.6
"""After the played file ends, keep the call up this long so the last frames reach the peer's jitter buffer."""


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--config",
        type=Path,
        help=f"TOML configuration (see config/phone.example.toml); default: <home>/{DEFAULT_PHONE_CONFIG} if present",
    )
    p.add_argument("--listen", metavar="HOST:PORT", help="SIP address to bind (default 127.0.0.1:5080)")
    p.add_argument("--aor", help="our address of record (default: USER@HOST of --listen)")
    p.add_argument("--policy", choices=("require", "opportunistic"), help="security policy (default require)")
    p.add_argument(
        "--no-inband",
        action="store_true",
        help="never run the key exchange in the media path (when a PBX strips a=voipgw from the SDP)",
    )
    p.add_argument("--registrar", metavar="HOST:PORT", help="register here and send calls through it")
    p.add_argument(
        "--transport",
        choices=("auto", "udp", "tcp", "tls"),
        help="SIP transport (default auto: TCP for requests over 1300 bytes; tcp or tls: only that one)",
    )
    p.add_argument("--username", help="digest user name")
    p.add_argument("--password", help="digest password")
    p.add_argument(
        "--play",
        type=Path,
        metavar="FILE.wav",
        help="send this file instead of the microphone, then silence (call without --duration hangs up when the file "
        "ends; otherwise the call stays up until --duration or a hang-up)",
    )
    p.add_argument(
        "--record",
        type=Path,
        metavar="FILE.wav",
        help="record what we hear instead of playing it (mode 0600, written as the call goes; with listen, "
        "later calls go to FILE-2.wav, FILE-3.wav...: never overwritten)",
    )
    p.add_argument("--summary-json", type=Path, metavar="FILE", help="write the call summary as JSON here")
    p.add_argument("--tap-wire", type=Path, metavar="FILE", help=argparse.SUPPRESS)  # demo: raw RTP payloads
    p.add_argument("--plain", action="store_true", help=argparse.SUPPRESS)  # baseline: no key exchange at all
    p.add_argument("--send-dtmf", metavar="DIGITS", help="send these DTMF digits (0-9 * # A-D) once the call is up")
    p.add_argument("--dtmf-duration", type=int, default=DEFAULT_DURATION_MS, metavar="MS", help=argparse.SUPPRESS)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    c = sub.add_parser("call", help="place an end-to-end encrypted call", epilog=EXIT_CODES_EPILOG)
    c.add_argument("uri", metavar="SIP_URI", help="whom to call, e.g. sip:bob@127.0.0.1:5082")
    c.add_argument("--duration", type=float, metavar="S", help="hang up after S seconds")
    c.add_argument("--no-answer-timeout", type=float, metavar="S", help="give up ringing after S seconds")
    _common(c)
    c.set_defaults(func=run_call)
    li = sub.add_parser("listen", help="wait for calls and answer them", epilog=EXIT_CODES_EPILOG)
    li.add_argument(
        "--auto-answer",
        action="store_true",
        help="answer at once (otherwise, on a terminal: ring and show who calls until you press a to answer, r to "
        "reject (603) or b for busy (486); without a terminal: ring --answer-after seconds, then answer)",
    )
    li.add_argument("--once", action="store_true", help="exit after the first call ends")
    li.add_argument(
        "--answer-after",
        type=float,
        metavar="S",
        help="ring S seconds, then answer without asking (default: ask on a terminal; else 0 with --auto-answer, "
        "1 without)",
    )
    _common(li)
    li.set_defaults(func=run_listen)


def phone_config(args: argparse.Namespace) -> PhoneConfig:
    overrides: dict[str, Any] = {
        "no_answer_timeout_s": getattr(args, "no_answer_timeout", None),
        "policy": args.policy,
        "registrar": args.registrar,
        "username": args.username,
        "password": args.password,
        "e2e": False if args.plain else None,
        "transport": args.transport,
        "inband": False if args.no_inband else None,
    }
    if args.listen:
        try:
            overrides["listen_host"], overrides["listen_port"] = parse_hostport(args.listen, "--listen")
        except ConfigError as exc:
            raise CliError(str(exc), EXIT_USAGE) from None
    path = args.config
    if path is None and (args.home / DEFAULT_PHONE_CONFIG).is_file():
        path = args.home / DEFAULT_PHONE_CONFIG  # the default config file, read only when present
        log.info("configuration from %s", path)
    try:
        base_host = overrides.get("listen_host") or "127.0.0.1"
        overrides["aor"] = args.aor
        defaults = {} if args.config else {"aor": f"{getpass.getuser()}@{base_host}"}
        return load_phone_config(path, overrides, defaults)
    except ConfigError as exc:
        raise CliError(f"configuration: {exc}", EXIT_USAGE) from None


@functools.lru_cache(maxsize=4)
def _played_pcm(path: Path) -> Pcm:
    """Read and resample a --play file once per process (a listener answers many calls; ~40 ms each time)."""
    try:
        return read_wav(path)
    except (WavError, OSError) as exc:
        raise CliError(f"--play {path}: {exc}", EXIT_USAGE) from None


def audio_io(args: argparse.Namespace) -> tuple[AudioSource, AudioSink]:
    """Files if either --play or --record is given (the other side is silence / discarded), else devices."""
    if args.play is None and args.record is None:
        from voipgw.audio.device import Microphone, Speaker

        try:
            return Microphone(), Speaker()
        except NoAudioDevice as exc:
            raise CliError(f"{exc}", EXIT_NO_AUDIO) from None
    # After the --play file, silence: the call stays up (until --duration, a hang-up, or for `call` without
    # --duration a short tail) and the peer keeps receiving media, so it never hangs up for lack of it.
    source: AudioSource = (
        ArrayPlayer(_played_pcm(args.play), then_silence=True) if args.play is not None else SilenceSource()
    )
    sink: AudioSink = MemorySink()
    if args.record is not None:
        path = recording_path(args.record, getattr(args, "recorded_calls", 0))
        try:
            sink = WavRecorder(path)
        except OSError as exc:
            raise CliError(f"--record {path}: cannot write it ({exc.strerror or exc})", EXIT_USAGE) from None
        args.recorded_calls = getattr(args, "recorded_calls", 0) + 1
    return source, sink


def recording_path(path: Path, calls_before: int) -> Path:
    """The file for the next recording: ``path`` for the first call of this process, then the first free one of
    ``NAME-2.wav``, ``NAME-3.wav``..., so a listener never overwrites an earlier call (or an earlier run's)."""
    if calls_before == 0:
        return path
    n = 2
    while (candidate := path.with_name(f"{path.stem}-{n}{path.suffix}")).exists():
        n += 1
    return candidate


def check_record_path(path: Path) -> None:
    """Refuse a --record file that cannot be written, before anything is dialled or announced (exit status 2):
    a directory, a missing parent, or one where creating the file fails (read-only, permissions, immutable)."""
    if path.is_dir():
        raise CliError(f"--record {path}: is a directory (give a file name, e.g. {path / 'call.wav'})", EXIT_USAGE)
    parent = path.parent
    if not parent.is_dir():
        raise CliError(f"--record {path}: directory {parent} does not exist", EXIT_USAGE)
    existed = path.exists()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | getattr(os, "O_NOFOLLOW", 0), 0o600)
    except OSError as exc:
        raise CliError(f"--record {path}: cannot write it ({exc.strerror or exc})", EXIT_USAGE) from None
    os.close(fd)
    if not existed:
        path.unlink(missing_ok=True)  # a probe only: the file appears when a call is answered


def check_devices(args: argparse.Namespace) -> None:
    """Without --play/--record, refuse to start (exit status 3) when there is no microphone or speaker: a listener
    must not announce itself and then fail its first call."""
    if args.play is None and args.record is None:
        from voipgw.audio.device import check_audio_devices

        try:
            check_audio_devices(need_input=True, need_output=True)
        except NoAudioDevice as exc:
            raise CliError(f"{exc}", EXIT_NO_AUDIO) from None


def peer_text(rec: CallRecord, name: str | None) -> str:
    """``Alice Smith <alice@example.org>`` with the user's own ``name`` for the contact, only once the key exchange
    signed the AOR (a call in the clear, or not yet answered, shows the AOR alone: anyone can write a From)."""
    if rec.answered_by is not None:
        # Never the dialled contact's name: someone else signed the answer (issue 15, misbinding).
        return f"{rec.remote_aor} FORWARDED to {rec.answered_by}"
    if rec.called_as is not None:
        return f"{rec.remote_aor} (called {rec.called_as}: forwarded here)"
    return f"{name} <{rec.remote_aor}>" if name and rec.secure else rec.remote_aor


def status_line(call: ActiveCall, name: str | None = None) -> str:
    """``[00:12] established | secure, unverified | Alice Smith <alice@example.org> | SAS ...``: the security state
    comes before the peer (``peer_text``)."""
    rec = call.record
    elapsed = time.time() - rec.started_at if rec.started_at else 0.0
    st = call.stats()
    sas = f"SAS {rec.sas} ({' '.join(rec.sas_words or ())})" if rec.sas else "SAS pending"
    security = rec.security.value
    peer = peer_text(rec, name)
    degraded = rec.health.summary()
    return (
        f"[{int(elapsed) // 60:02d}:{int(elapsed) % 60:02d}] {rec.state.value if rec.state else '-'} | "
        f"{security} | {peer} | {sas} | sent {st['frames_sent']} recv {st['frames_received']} "
        f"refused {st['frames_refused']}" + (f" | {degraded}" if degraded else "")
    )


def summary(call: ActiveCall, phone: Phone) -> dict[str, Any]:
    rec = call.record
    out: dict[str, Any] = {
        "call_id": rec.call_id,
        "direction": rec.direction,
        "local_aor": rec.local_aor,
        "remote_aor": rec.remote_aor,
        "state": rec.state.value if rec.state else None,
        "security": rec.security.value,
        "reason": rec.reason,
        "suite": rec.suite,
        "key_exchange": rec.key_exchange.value,
        "call_id_bound": rec.call_id_bound,
        "key_exchange_note": rec.key_exchange_note,
        "inband_ms": rec.inband_ms,
        "codec": rec.codec,
        "sas": rec.sas,
        "sas_words": list(rec.sas_words) if rec.sas_words else None,
        "safety_number": rec.safety_number,
        "trust_state": rec.trust_state,
        "trust_warning": rec.trust_warning,
        "forwarded": rec.forwarding,
        "verified": rec.security is Security.SECURE_VERIFIED,
        "remote_identity": rec.remote_identity.hex() if rec.remote_identity else None,
        "setup_ms": rec.setup_ms,
        "handshake_ms": rec.handshake_ms,
        "duration_s": (rec.ended_at or time.time()) - rec.started_at if rec.started_at else 0.0,
        "never_keyed": never_keyed(rec),
        "peer_refused_our_key": peer_refused_our_key(rec),
        "peer_saw_our_key_change": peer_saw_our_key_change(rec),
    }
    if out["peer_refused_our_key"] or out["peer_saw_our_key_change"]:
        out["security_text"] = security_text(rec, rec.security.value)
    out.update(call.stats())
    return out


def print_summary(data: dict[str, Any]) -> None:
    print(
        f"call {data['direction']} {data['local_aor']} -> {data['remote_aor']}: {data['state']}",
        file=sys.stderr,
    )
    if data["reason"]:
        print(f"  reason: {data['reason']}", file=sys.stderr)
    if data.get("forwarded"):
        print(f"  {data['forwarded']}", file=sys.stderr)
    security = "none (no key exchange took place)" if data.get("never_keyed") else data["security"]
    security = data.get("security_text") or security
    detail = ", ".join(x for x in (data["suite"], data.get("key_exchange_note")) if x)
    print(f"  security: {security}" + (f" ({detail})" if detail else ""), file=sys.stderr)
    if data["sas"]:
        print(f"  SAS: {data['sas']} ({' '.join(data['sas_words'])})", file=sys.stderr)
    if data["safety_number"]:
        print(f"  safety number: {format_safety_number(data['safety_number'])}", file=sys.stderr)
    seen = data.get("degraded", {}).get("seen", [])
    if seen:
        texts = "; ".join(Degraded(value).text for value in seen)
        print(f"  DEGRADED during the call: {texts}", file=sys.stderr)
    print(
        f"  frames: sent {data['frames_sent']}, received {data['frames_received']}, opened {data['frames_opened']}, "
        f"refused {data['frames_refused']} {data['refused_by_reason'] or ''}",
        file=sys.stderr,
    )
    if data.get("pq_epochs"):
        print(f"  post-quantum epochs completed during the call: {data['pq_epochs']}", file=sys.stderr)


class _Ui:
    """Status output (a rewritten line on a terminal, a line every few seconds otherwise) and, on a terminal,
    the in-call verification keys: ``v`` = the SAS matched, ``x`` = it did not (hang up, record a warning)."""

    def __init__(self, phone: Phone, quiet: bool = False) -> None:
        self.phone = phone
        self.quiet = quiet
        """--quiet: no live status line (warnings, the SAS and the summary are still shown)."""
        self.tty = sys.stderr.isatty()
        self.keys = sys.stdin.isatty() and phone.trust is not None
        self._last = 0.0
        self._sas_told = False
        self._warned = False
        self._saved_tty: list[Any] | None = None
        self._call: ActiveCall | None = None
        self._dtmf_shown = 0
        self._name: str | None = None
        self._named = False

    def __enter__(self) -> _Ui:
        if self.keys:
            import termios
            import tty

            fd = sys.stdin.fileno()
            self._saved_tty = termios.tcgetattr(fd)
            tty.setcbreak(fd)
            asyncio.get_running_loop().add_reader(fd, self._on_key)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._saved_tty is not None:
            import termios

            fd = sys.stdin.fileno()
            asyncio.get_running_loop().remove_reader(fd)
            termios.tcsetattr(fd, termios.TCSADRAIN, self._saved_tty)
            self._saved_tty = None

    def _on_key(self) -> None:
        key = os.read(sys.stdin.fileno(), 1).decode(errors="replace").lower()
        call = self._call
        if call is None or call.record.sas is None or not call.record.secure or call.record.finished:
            return
        rec, trust = call.record, self.phone.trust
        assert trust is not None and rec.remote_identity is not None
        if key == "v":
            try:
                trust.mark_verified(rec.party, rec.remote_identity, VerifyMethod.SAS, now=time.time())
            except Exception as exc:
                print(f"\ncould not mark {rec.party} verified: {exc}", file=sys.stderr, flush=True)
                return
            rec.secure_as(Security.SECURE_VERIFIED)
            print(f"\n{rec.party} marked verified (SAS {rec.sas} matched).", file=sys.stderr, flush=True)
        elif key == "x":
            with contextlib.suppress(Exception):
                trust.record_sas_mismatch(rec.party, rec.remote_identity, now=time.time(), detail=f"SAS {rec.sas}")
            rec.reason = USER_SAS_MISMATCH
            print(
                f"\nSAS mismatch with {rec.party}: hanging up. Someone may be intercepting this call; compare "
                f"safety numbers in person (voipgw fingerprint {rec.party}) before trusting this contact.",
                file=sys.stderr,
                flush=True,
            )
            log.warning("call %s: the user reported an SAS mismatch with %s", rec.call_id, rec.party)
            call.hangup(PEER_SAS_MISMATCH)

    def _peer_name(self, call: ActiveCall) -> str | None:
        """The user's own name for the signed remote AOR, read once per call (None: none, or not sealed yet)."""
        rec = call.record
        if not self._named and rec.secure and self.phone.trust is not None:
            self._named = True
            try:
                contact = self.phone.trust.store.get(rec.party)
            except Exception as exc:  # a store failure costs the name, never the call's status line
                log.warning("call %s: no local name for %s: %s", rec.call_id, rec.party, exc)
                contact = None
            self._name = None if contact is None else contact.name
        return self._name if rec.secure else None

    def update(self, call: ActiveCall, final: bool = False) -> None:
        self._call = call
        rec = call.record
        for digit in call.dtmf_received[self._dtmf_shown :]:
            line = f"dtmf: {digit}"
            print("\r" + line.ljust(100) if self.tty else line, file=sys.stderr, flush=True)
        self._dtmf_shown = len(call.dtmf_received)
        if rec.trust_warning and not self._warned:
            self._warned = True
            print("\n" + loud(f"*** WARNING ***\n{rec.trust_warning}", sys.stderr) + "\n", file=sys.stderr, flush=True)
        if rec.sas and not self._sas_told and (rec.safety_number or final):
            self._sas_told = True
            verified = rec.security is Security.SECURE_VERIFIED
            if self.keys and not verified:
                how = "press v if it matches, x if it does not"
            elif verified:
                how = "this contact is already verified"
            else:
                how = f"if it does not match, hang up; to verify: voipgw verify {rec.remote_aor}"
            text = (
                f"SAS {rec.sas} / {' '.join(rec.sas_words or ())}: read it aloud; the other side must see the same "
                f"({how}).\nSafety number with {rec.remote_aor}: {format_safety_number(rec.safety_number or '')}"
            )
            print("\n" + text, file=sys.stderr, flush=True)
            log.info("call %s: %s", rec.call_id, text.replace("\n", "; "))
        now = time.monotonic()
        if self.quiet:
            return
        if self.tty:
            line = status_line(call, self._peer_name(call))
            print("\r" + line.ljust(100), end="\n" if final else "", file=sys.stderr, flush=True)
        elif final or now - self._last >= 2.0:
            self._last = now
            print(status_line(call, self._peer_name(call)), file=sys.stderr, flush=True)


async def _follow(
    call: ActiveCall, stop: asyncio.Event, until: float | None, ui: _Ui, *, end_after: ArrayPlayer | None = None
) -> None:
    """Run the UI until the call ends, the stop event fires, ``until`` (monotonic) passes, or (with ``end_after``,
    a --play file) a short tail after that file was played out."""
    while not call.done.is_set():
        call.poll_session_events()
        ui.update(call)
        if until is None and end_after is not None and end_after.finished:
            until = time.monotonic() + TAIL_S
        if stop.is_set() or (until is not None and time.monotonic() >= until):
            call.hangup(hangup_reason(call.record))
            break
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(call.done.wait(), 0.25)
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(call.done.wait(), 5.0)
    ui.update(call, final=True)


def _record_history(call: ActiveCall, phone: Phone, data: dict[str, Any]) -> None:
    """Add the call to ``voipgw history`` and its summary line to the log file; a store failure costs the history
    entry (logged), never the call's exit status."""
    log.info(
        "call %s %s %s -> %s: %s; security %s; SAS %s; reason %s", data["call_id"], data["direction"],
        data["local_aor"], data["remote_aor"], data["state"], data["security"], data["sas"], data["reason"],
    )  # fmt: skip
    if phone.trust is None:
        return
    rec = call.record
    entry = CallEntry(
        at=rec.started_at or time.time(), direction=Direction(data["direction"]), local_aor=data["local_aor"] or "",
        remote_aor=data["remote_aor"] or "", state=data["state"] or "-", security=data["security"],
        reason=data["reason"] or "", sas=data["sas"], sas_words=tuple(data["sas_words"] or ()),
        verified=bool(data["verified"]), duration_s=float(data["duration_s"]), call_id=data["call_id"] or "",
    )  # fmt: skip
    try:
        add_call(phone.trust.store, entry)
    except Exception as exc:
        log.warning("call %s: not added to the call history: %s", data["call_id"], exc)


def sas_mismatch(rec: CallRecord) -> bool:
    """The SAS did not match: this user pressed ``x``, or the peer's BYE says its user did (the call exits 1)."""
    return rec.reason is not None and (USER_SAS_MISMATCH in rec.reason or PEER_SAS_MISMATCH in rec.reason)


def _finish(call: ActiveCall, phone: Phone, args: argparse.Namespace) -> dict[str, Any]:
    data = summary(call, phone)
    rec = call.record
    if rec.reason is not None and PEER_SAS_MISMATCH in rec.reason:
        text = (
            f"*** {rec.remote_aor} reported that the SAS did NOT match ***\nSomeone may be intercepting your calls "
            f"with {rec.remote_aor}. Compare safety numbers in person (voipgw fingerprint {rec.remote_aor}) before "
            "trusting this contact."
        )
        print("\n" + loud(text, sys.stderr), file=sys.stderr, flush=True)
        # INFO: the log file keeps it; the terminal shows it once, above
        log.info("call %s: %s reported an SAS mismatch (its BYE says so)", rec.call_id, rec.remote_aor)
    notice = peer_key_notice(rec)
    if notice is not None:
        print("\n" + loud(notice, sys.stderr), file=sys.stderr, flush=True)
        log.info("call %s: %s", rec.call_id, notice)  # the log file's copy (the terminal shows it once, above)
    print_summary(data)
    _record_history(call, phone, data)
    if args.summary_json is not None:
        args.summary_json.write_text(json.dumps(data, indent=2) + "\n")
    if args.tap_wire is not None and call.wire_tap is not None:
        with args.tap_wire.open("wb") as fh:
            for payload in call.wire_tap:
                fh.write(len(payload).to_bytes(2, "big") + payload)
    return data


def check_dtmf_args(args: argparse.Namespace) -> None:
    """Refuse bad --send-dtmf digits or duration before any call is placed (exit status 2)."""
    if args.send_dtmf is None:
        return
    try:
        args.send_dtmf = check_digits(args.send_dtmf)
        digit_train("0", args.dtmf_duration)
    except DtmfError as exc:
        raise CliError(f"--send-dtmf: {exc}", EXIT_USAGE) from None


def send_dtmf(call: ActiveCall, args: argparse.Namespace) -> None:
    """Queue --send-dtmf on an established call; a peer without telephone-event costs a line, not the call."""
    if not args.send_dtmf:
        return
    try:
        call.send_dtmf(args.send_dtmf, args.dtmf_duration)
    except MediaError as exc:
        print(f"cannot send DTMF: {exc}", file=sys.stderr, flush=True)


def _install_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)


def _load_identity(args: argparse.Namespace) -> Any:
    home: Path = args.home
    try:
        home.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise CliError(f"cannot create the home directory {home}: {exc.strerror or exc}", EXIT_USAGE) from None
    return unlock_identity(home, code=EXIT_USAGE)  # asks for the passphrase on a terminal if the key needs one


def _open_trust(args: argparse.Namespace, config: PhoneConfig) -> TrustStore:
    try:
        return TrustStore(args.home, policy=config.key_change_policy)
    except ContactStoreError as exc:
        raise CliError(f"contact store: {exc}", EXIT_USAGE) from None


async def _start_phone(
    config: PhoneConfig, identity: Any, trust: TrustStore | None = None, home: Path | None = None
) -> Phone:
    """Bind and (if configured) register; a refused or silent registrar is one clear line, not a traceback.
    ``home``: the offer replay cache is kept there, shared with other processes on it (``voipgw.store.replay``)."""
    phone = Phone(config, identity, trust, replay_cache(home, config.max_skew_s))
    try:
        await phone.start()
    except OSError as exc:
        raise CliError(
            f"cannot bind SIP on {config.listen_host}:{config.listen_port}: {exc.strerror}", EXIT_USAGE
        ) from None
    except RegistrationFailed as exc:
        await phone.stop()
        where = f"{config.registrar[0]}:{config.registrar[1]}" if config.registrar else "the registrar"
        hint = " (check --username/--password)" if exc.code in (401, 403, 407) else ""
        raise CliError(f"registration of {phone.aor} at {where} failed: {exc}{hint}") from None
    return phone


def check_uri(uri: str) -> None:
    """Refuse a target that is not a SIP URI or address before anything starts (exit status 2)."""
    try:
        normalize_aor(uri)
    except MalformedAor as exc:
        raise CliError(
            f"{uri!r} is not a SIP URI ({exc.detail or 'malformed'}); "
            "e.g. sip:bob@example.org or sip:bob@127.0.0.1:5082",
            EXIT_USAGE,
        ) from None


async def _call_main(args: argparse.Namespace) -> int:
    check_uri(args.uri)
    config = phone_config(args)
    if args.record is not None:
        check_record_path(args.record)
    check_dtmf_args(args)
    identity = _load_identity(args)
    source, sink = audio_io(args)
    stop = asyncio.Event()
    _install_signals(stop)
    trust = _open_trust(args, config)
    try:
        phone = await _start_phone(config, identity, trust, args.home)
    except BaseException:
        trust.close()
        raise
    # A caller takes no calls: any INVITE reaching its port is answered 486 Busy Here at once, never queued
    # until exit (where the stack would end it with 487, a status RFC 3261 keeps for CANCELled requests).
    busy = asyncio.ensure_future(phone.refuse_while_busy())
    try:
        placing = asyncio.ensure_future(
            phone.place_call(args.uri, source=source, sink=sink, tap_wire=args.tap_wire is not None)
        )
        stopper = asyncio.ensure_future(stop.wait())
        progress = CallerProgress(args.uri, config.no_answer_timeout_s)
        t0, rang = time.monotonic(), False
        while not (placing.done() or stopper.done()):
            pending = phone.pending
            if pending is not None and pending.record.state is CallState.EARLY:
                pending.poll_session_events()  # the far side's SAS reveal, once its phone rings
            rang = rang or (pending is not None and pending.record.state in (CallState.RINGING, CallState.EARLY))
            for line in progress.update(None if pending is None else pending.record, time.monotonic() - t0):
                if not args.quiet:
                    print(line, file=sys.stderr, flush=True)
            await asyncio.wait({placing, stopper}, timeout=0.2, return_when=asyncio.FIRST_COMPLETED)
        if not placing.done():  # interrupted while ringing: CANCEL, then collect the outcome
            phone.cancel_pending()
        stopper.cancel()
        call = await placing
        rang = rang or call.record.sas is not None
        closing = outcome_line(call.record, rang) if call.record.state is not CallState.ESTABLISHED else None
        if closing is not None:
            print(closing, file=sys.stderr, flush=True)
        with _Ui(phone, args.quiet) as ui:
            if call.record.state is CallState.ESTABLISHED:
                send_dtmf(call, args)
                until = time.monotonic() + args.duration if args.duration else None
                played = source if isinstance(source, ArrayPlayer) and until is None else None
                await _follow(call, stop, until, ui, end_after=played)
            elif call.record.trust_warning:
                ui.update(call, final=True)
        data = _finish(call, phone, args)
        return 0 if data["state"] == "ended" and not sas_mismatch(call.record) else EXIT_CALL_FAILED
    finally:
        busy.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await busy
        phone.refuse_queued()
        await phone.stop()
        trust.close()
        source.close()
        sink.close()


async def _listen_main(args: argparse.Namespace) -> int:
    config = phone_config(args)
    check_dtmf_args(args)
    identity = _load_identity(args)
    if args.play is not None:
        _played_pcm(args.play)  # fail early on a bad file, and keep it out of every call's setup time
    if args.record is not None:
        check_record_path(args.record)
    stop = asyncio.Event()
    _install_signals(stop)
    trust = _open_trust(args, config)
    try:
        check_devices(args)  # after the identity and store checks (their errors come first), before announcing
        phone = await _start_phone(config, identity, trust, args.home)
    except BaseException:
        trust.close()
        raise
    assert phone.stack is not None
    print(
        f"listening as {phone.aor} on sip:{config.listen_host}:{phone.stack.local_port}",
        file=sys.stderr,
        flush=True,
    )
    status = 0
    busy: asyncio.Future[None] | None = None
    next_calls: list[IncomingCall] = []
    try:
        while not stop.is_set():
            if next_calls:
                incoming = next_calls.pop(0)
            else:
                getter = asyncio.ensure_future(phone.next_incoming())
                stopper = asyncio.ensure_future(stop.wait())
                await asyncio.wait({getter, stopper}, return_when=asyncio.FIRST_COMPLETED)
                stopper.cancel()
                if not getter.done():
                    getter.cancel()
                    break
                incoming = getter.result()
            # One call at a time: any INVITE arriving meanwhile is answered 486 Busy Here at once (RFC 3261
            # 21.4.24), never left queued until the call ends. With --once the listener stays busy until it exits;
            # otherwise an INVITE that arrives once this call is over (while it is being cleaned up) is the next call.
            busy = asyncio.ensure_future(phone.refuse_while_busy(incoming, None if args.once else next_calls))
            try:
                status = await _handle_incoming(phone, incoming, args, stop)
            except CliError:
                raise
            except Exception as exc:  # one bad call must never take the listener down
                log.error("call %s from %s failed: %s", incoming.call_id, incoming.from_aor, exc, exc_info=True)
                with contextlib.suppress(Exception):
                    incoming.reject(500, "Server Internal Error", f"voipgw: internal error: {type(exc).__name__}")
                status = EXIT_CALL_FAILED
            finally:
                if not args.once:
                    busy.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await busy
            if args.once:
                break
    finally:
        if busy is not None and args.once:
            phone.refuse_queued()
        await phone.stop()
        if busy is not None:
            busy.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await busy
        trust.close()
    return status


async def _handle_incoming(phone: Phone, incoming: IncomingCall, args: argparse.Namespace, stop: asyncio.Event) -> int:
    """Ring, answer or refuse one incoming call and follow it to the end; returns the exit status it implies."""
    print(f"incoming call from {incoming.from_aor}", file=sys.stderr, flush=True)
    source = sink = None
    decision, gone = Decision.ANSWER, None
    if args.answer_after is None and not args.auto_answer and sys.stdin.isatty():
        decision, gone = await ring_by_hand(phone, incoming, stop)  # a person decides: a, r, b
    else:  # no terminal to ask (or told when to answer): ring --answer-after seconds (default 1), then answer
        delay = args.answer_after if args.answer_after is not None else (0.0 if args.auto_answer else 1.0)
        gone = await phone.ring(incoming, delay) if delay > 0 else None  # the caller may CANCEL while we ring
        decision = Decision.GONE if gone is not None else Decision.ANSWER
    if decision is Decision.GONE:
        call = phone.missed(incoming, f"cancelled by the caller ({gone})")
        print(f"{call.record.remote_aor} gave up before the call was answered ({gone})", file=sys.stderr, flush=True)
    elif decision is not Decision.ANSWER:
        refusal = REFUSALS[decision]
        call = await phone.decline(incoming, refusal.code, refusal.phrase)
        print(f"not answered: {call.record.remote_aor} was sent {refusal.code} {refusal.phrase}", file=sys.stderr,
              flush=True)  # fmt: skip
    else:
        try:
            source, sink = audio_io(args)
        except CliError as exc:  # e.g. the sound card went away since start-up: refuse this call, keep listening
            log.error("call %s from %s refused: %s", incoming.call_id, incoming.from_aor, exc)
            incoming.reject(480, "Temporarily Unavailable", "voipgw: the callee's audio device is unavailable")
            return EXIT_CALL_FAILED
        call = await phone.answer(incoming, source=source, sink=sink, tap_wire=args.tap_wire is not None)
    if call.record.state is CallState.ESTABLISHED:
        send_dtmf(call, args)
        with _Ui(phone, args.quiet) as ui:
            await _follow(call, stop, None, ui)
    elif call.record.trust_warning:
        with _Ui(phone, args.quiet) as ui:
            ui.update(call, final=True)
    data = _finish(call, phone, args)
    for closer in (source, sink):
        if closer is not None:
            closer.close()
    declined = decision in (Decision.REJECT, Decision.BUSY)  # the user's own choice: the listener did its job
    return 0 if (data["state"] == "ended" and not sas_mismatch(call.record)) or declined else EXIT_CALL_FAILED


def _run(coro: Any) -> int:
    try:
        import uvloop

        return int(uvloop.run(coro))
    except ImportError:  # pragma: no cover - uvloop is a dependency, but stay usable without it
        return int(asyncio.run(coro))


def run_call(args: argparse.Namespace) -> int:
    return _run(_call_main(args))


def run_listen(args: argparse.Namespace) -> int:
    return _run(_listen_main(args))
