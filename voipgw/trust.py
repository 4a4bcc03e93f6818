"""The trust policy: what a call does with the peer's (already signature-checked) identity key. TOFU on first
contact, an in-memory fast path for known contacts, loud key-change verdicts with a configurable policy.

It decides and records; it never verifies signatures (the handshake did) and never prompts (the CLI does).

QR payloads (text, byte mode, shown by ``voipgw fingerprint --qr`` and ``voipgw id show --qr``):

* safety number: ``voipgw-sn:1:<60 digits>:<AOR A>:<AOR B>``. AOR A is the stable id of the first 30 digits and
  AOR B of the last 30 (the side whose 30 digits sort lower comes first, as in the number itself). AORs are in
  normal form and percent-encoded (RFC 3986, everything but unreserved characters, ``@``, ``[`` and ``]``), so
  ``:`` never appears inside one. A scanner accepts it only if the digits equal the safety number it computes
  itself and the two AORs are {its own, the peer's}.
* identity: ``voipgw-id:1:<AOR>:<66 hex digits of the 33-byte identity key>:<30 fingerprint digits>``.
"""

from __future__ import annotations

import enum
import statistics
import tempfile
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, unquote

from ratchet.aor import normalize_aor
from ratchet.errors import MalformedAor
from ratchet.fingerprint import format_safety_number, side_fingerprint
from ratchet.identity import IdentityKey
from voipgw.lookalike import look_alike
from voipgw.store.contacts import EVENT_SAS_MISMATCH, Contact, ContactStore, VerifyMethod, checked_key

DEFAULT_CACHE_SIZE = 256
"""Contacts whose key and verification state stay in memory (the most-called ones are loaded at start)."""
SN_QR_PREFIX = "voipgw-sn:1:"
ID_QR_PREFIX = "voipgw-id:1:"
_AOR_SAFE = "@[]"


class TrustState(enum.StrEnum):
    FIRST_CONTACT = "first-contact"
    KNOWN = "known"
    KEY_CHANGED = "key-changed"


class TrustAction(enum.StrEnum):
    ALLOW = "allow"
    BLOCK = "block"


class KeyChangePolicy(enum.StrEnum):
    """``key_change_policy``: what a call does when the peer's key is not the one we know."""

    BLOCK = "block"
    WARN = "warn"
    BLOCK_IF_VERIFIED = "block-if-verified"
    """The default: block if the old key was verified, warn otherwise."""

    def action(self, old_verified: bool) -> TrustAction:
        if self is KeyChangePolicy.BLOCK or (self is KeyChangePolicy.BLOCK_IF_VERIFIED and old_verified):
            return TrustAction.BLOCK
        return TrustAction.ALLOW


@dataclass(frozen=True, slots=True)
class TrustVerdict:
    """What the phone shows, logs and does for one call's remote identity."""

    remote_aor: str
    """Normal form of the peer's AOR."""
    state: TrustState
    verified: bool
    """True only when this very key was verified (a changed key never is)."""
    action: TrustAction
    safety_number: str
    """60 digits for (our key, our AOR, their key, their AOR); render with ``format_safety_number``."""
    previous_safety_number: str | None
    """KEY_CHANGED only: the safety number with the old key."""
    previous_key_first_seen: float | None
    """KEY_CHANGED only: when the old key was first seen (Unix time)."""
    reason: str
    """One line, ASCII, for logs and a SIP Warning header."""
    warning: str | None
    """KEY_CHANGED only: the multi-line warning for a human (old/new safety numbers, first-seen date, what to do)."""
    cached: bool = False
    """True when the in-memory fast path answered (no SQLite read beyond ``PRAGMA data_version``)."""

    @property
    def allowed(self) -> bool:
        return self.action is TrustAction.ALLOW


@dataclass(slots=True)
class _Entry:
    key: bytes
    key_side: str
    verified: bool
    verified_method: VerifyMethod | None
    verified_at: float | None


def _day(ts: float | None) -> str:
    return "unknown" if ts is None else time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(ts))


def combine_sides(side_a: str, side_b: str) -> str:
    """The 60-digit safety number from two 30-digit sides (lower first), as ``ratchet.fingerprint`` does."""
    return side_a + side_b if side_a < side_b else side_b + side_a


class TrustStore:
    """Trust decisions over a ``ContactStore`` in ``home``, with an LRU of known contacts. Thread-safe.

    The cache is checked against ``PRAGMA data_version`` (a shared-memory read that moves when another process
    commits) and, only when that moved, against the store's trust generation (bumped by key changes,
    verification, forget, import; not by call counters), so a verify/forget from the CLI is seen on the next call.
    """

    def __init__(
        self,
        home: Path,
        *,
        policy: KeyChangePolicy = KeyChangePolicy.BLOCK_IF_VERIFIED,
        cache_size: int = DEFAULT_CACHE_SIZE,
        warm: bool = True,
    ) -> None:
        self.store = ContactStore(home)
        self.policy = KeyChangePolicy(policy)
        self._cache_size = max(0, cache_size)
        self._cache: OrderedDict[str, _Entry] = OrderedDict()
        self._local_sides: dict[tuple[bytes, str], str] = {}
        self._local_seen: set[tuple[bytes, str]] = set()
        self._lock = threading.Lock()
        self._data_version = self.store.data_version()
        self._generation = self.store.trust_generation()
        if warm and self._cache_size:
            for contact in reversed(self.store.most_called(self._cache_size)):
                self._remember(contact)

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> TrustStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the seam the phone calls ---------------------------------------------------------------------------

    def evaluate(
        self, local_aor: str, remote_aor: str, remote_key: bytes, *, local_key: bytes, now: float
    ) -> TrustVerdict:
        """Decide on ``remote_key`` (33-byte serialized, signature already verified by the handshake) for a call
        between ``local_aor`` (us, with ``local_key``) and ``remote_aor``. First contact and key changes are
        written to the store before this returns; a known contact with the same key writes nothing."""
        local_aor, remote_aor = normalize_aor(local_aor), normalize_aor(remote_aor)
        remote_key, local_key = bytes(remote_key), bytes(local_key)
        local_side = self._local_side(local_key, local_aor)
        with self._lock:
            self._refresh()
            entry = self._cache.get(remote_aor)
            if entry is not None and entry.key == remote_key:
                self._cache.move_to_end(remote_aor)
                return self._known(remote_aor, entry, local_side, cached=True)
        contact = self.store.get(remote_aor)
        if contact is None:
            checked_key(remote_key)
            contact, inserted = self.store.add_first_contact(remote_aor, remote_key, local_aor=local_aor, now=now)
            if inserted:
                self._after_own_write()
                return self._first(remote_aor, contact, local_side, self._resembled(remote_aor))
        if remote_key == contact.identity_key:
            if contact.changed_at is None:
                entry = self._remember(contact)
                return self._known(remote_aor, entry, local_side, cached=False)
            return self._still_changed(remote_aor, contact, local_side)
        return self._changed(remote_aor, contact, remote_key, local_side, now)

    def pinned(self, remote_aor: str) -> bool:
        """True when the store holds a key for ``remote_aor`` (known, verified, or with a blocked change): such a
        contact must encrypt end to end whatever the policy, until the user forgets it (``voipgw forget``)."""
        aor = normalize_aor(remote_aor)
        with self._lock:
            self._refresh()
            if aor in self._cache:
                return True
        return self.store.get(aor) is not None

    def record_call(self, local_aor: str, remote_aor: str, remote_key: bytes, *, local_key: bytes, now: float) -> bool:
        """Count an established call (last seen, call count, our AOR). False if ``remote_key`` is not the
        contact's current key (a blocked or superseded key is never counted)."""
        local_aor = normalize_aor(local_aor)
        seen = (bytes(local_key), local_aor)
        counted = self.store.record_call(
            remote_aor,
            remote_key,
            local_aor=local_aor,
            local_key=None if seen in self._local_seen else local_key,
            now=now,
        )
        self._local_seen.add(seen)
        return counted

    def mark_verified(self, remote_aor: str, remote_key: bytes, method: VerifyMethod, *, now: float) -> Contact:
        """The user confirmed ``remote_key`` (SAS match in a call, safety number, QR). KeyMismatch if the key is
        neither the current nor the pending key any more."""
        contact = self.store.mark_verified(remote_aor, remote_key, method, now=now)
        self._forget_entry(contact.aor)
        self._after_own_write()
        return contact

    def record_sas_mismatch(self, remote_aor: str, remote_key: bytes, *, now: float, detail: str = "") -> None:
        """The users said the SAS did not match (the call is hung up by the caller of this): the event is
        stored for ``voipgw fingerprint`` and the key loses any verified flag."""
        aor = normalize_aor(remote_aor)
        self.store.add_event(aor, EVENT_SAS_MISMATCH, key=bytes(remote_key), detail=detail, now=now)
        self._forget_entry(aor)
        self._after_own_write()

    # -- helpers for the CLI --------------------------------------------------------------------------------

    def safety_number(self, contact: Contact, local_aor: str, local_key: bytes, *, pending: bool = False) -> str:
        """The 60 digits with ``contact``'s current key (or its pending key)."""
        side = contact.key_side
        if pending:
            if contact.pending_key is None:
                raise ValueError("no pending key")
            side = side_fingerprint(contact.pending_key, contact.aor.encode())
        return combine_sides(self._local_side(bytes(local_key), normalize_aor(local_aor)), side)

    def cache_clear(self) -> None:
        with self._lock:
            self._cache.clear()

    # -- internals ------------------------------------------------------------------------------------------

    def _local_side(self, key: bytes, aor: str) -> str:
        side = self._local_sides.get((key, aor))
        if side is None:
            side = side_fingerprint(key, aor.encode())
            self._local_sides[(key, aor)] = side
        return side

    def _refresh(self) -> None:
        version = self.store.data_version()
        if version == self._data_version:
            return
        self._data_version = version
        generation = self.store.trust_generation()
        if generation != self._generation:
            self._generation = generation
            self._cache.clear()

    def _after_own_write(self) -> None:
        """Adopt the generation our own write produced, unless another process also committed meanwhile (then
        the next ``_refresh`` compares generations as usual). Our own commits never move our data_version."""
        with self._lock:
            generation = self.store.trust_generation()
            if self.store.data_version() == self._data_version:
                self._generation = generation

    def _remember(self, contact: Contact) -> _Entry:
        entry = _Entry(
            contact.identity_key, contact.key_side, contact.verified, contact.verified_method, contact.verified_at
        )
        if self._cache_size and contact.changed_at is None and contact.pending_key is None:
            with self._lock:
                self._cache[contact.aor] = entry
                self._cache.move_to_end(contact.aor)
                while len(self._cache) > self._cache_size:
                    self._cache.popitem(last=False)
        return entry

    def _forget_entry(self, aor: str) -> None:
        with self._lock:
            self._cache.pop(aor, None)

    def _known(self, aor: str, entry: _Entry, local_side: str, *, cached: bool) -> TrustVerdict:
        if entry.verified:
            how = f"verified ({entry.verified_method or 'unknown'}, {_day(entry.verified_at)})"
        else:
            how = "not verified: compare the safety number or the SAS"
        return TrustVerdict(
            remote_aor=aor,
            state=TrustState.KNOWN,
            verified=entry.verified,
            action=TrustAction.ALLOW,
            safety_number=combine_sides(local_side, entry.key_side),
            previous_safety_number=None,
            previous_key_first_seen=None,
            reason=f"known contact {aor}, same key, {how}",
            warning=None,
            cached=cached,
        )

    def _resembled(self, aor: str) -> Contact | None:
        """A known contact whose AOR ``aor`` is a look-alike of (``voipgw.lookalike``): read only for first
        contacts, so the cost of listing the contacts is paid once per new peer."""
        others = {c.aor: c for c in self.store.contacts() if c.aor != aor}
        found = look_alike(aor, others)
        return others[found] if found is not None else None

    def _first(self, aor: str, contact: Contact, local_side: str, resembled: Contact | None = None) -> TrustVerdict:
        self._remember(contact)
        reason = f"first contact with {aor}: key trusted on first use, not verified (compare the safety number)"
        warning = None
        if resembled is not None:
            what = "a verified contact" if resembled.verified else "a known contact"
            # escaped: the point is that the two addresses only look the same (a Cyrillic "а" shows as "\u0430")
            shown = aor.encode("ascii", "backslashreplace").decode()
            reason = f"first contact with {shown}, which LOOKS LIKE {resembled.aor} ({what}) but is another address"
            warning = (
                f"WARNING: {shown} LOOKS LIKE {resembled.aor} ({what}), but it is a different address with a "
                f"key never seen before.\nThis is how an impostor borrows the trust you gave {resembled.aor}. "
                f"Do not treat this caller as {resembled.aor} unless you verify it (compare the SAS or the "
                f"safety number over another channel)."
            )
        return TrustVerdict(
            remote_aor=aor,
            state=TrustState.FIRST_CONTACT,
            verified=False,
            action=TrustAction.ALLOW,
            safety_number=combine_sides(local_side, contact.key_side),
            previous_safety_number=None,
            previous_key_first_seen=None,
            reason=reason,
            warning=warning,
        )

    def _changed_verdict(
        self,
        aor: str,
        local_side: str,
        new_side: str,
        old_side: str,
        old_first_seen: float,
        old_verified: bool,
        action: TrustAction,
    ) -> TrustVerdict:
        new_number = combine_sides(local_side, new_side)
        old_number = combine_sides(local_side, old_side)
        was = "verified" if old_verified else "not verified"
        if action is TrustAction.BLOCK:
            outcome = f"call blocked (key_change_policy={self.policy}) until 'voipgw accept-key {aor}'"
            todo = f"The call was refused. Once you are sure, accept the new key: voipgw accept-key {aor}"
        else:
            outcome = f"call allowed, marked key changed and unverified (key_change_policy={self.policy})"
            todo = f"The call goes on UNVERIFIED. To acknowledge the change: voipgw accept-key {aor}"
        warning = "\n".join(
            [
                f"WARNING: the identity key of {aor} has CHANGED.",
                f"  old safety number: {format_safety_number(old_number)}",
                f"                     (old key first seen {_day(old_first_seen)}, {was})",
                f"  new safety number: {format_safety_number(new_number)}",
                f"This happens when {aor} reinstalls or rotates the key, or when someone intercepts the call.",
                f"Compare the new safety number with {aor} over another channel: voipgw verify {aor}",
                todo,
            ]
        )
        return TrustVerdict(
            remote_aor=aor,
            state=TrustState.KEY_CHANGED,
            verified=False,
            action=action,
            safety_number=new_number,
            previous_safety_number=old_number,
            previous_key_first_seen=old_first_seen,
            reason=f"identity key of {aor} changed (old key first seen {_day(old_first_seen)}, {was}); {outcome}",
            warning=warning,
        )

    def _changed(self, aor: str, contact: Contact, key: bytes, local_side: str, now: float) -> TrustVerdict:
        checked_key(key)
        action = self.policy.action(contact.verified)
        if action is TrustAction.BLOCK:
            self.store.set_pending(aor, key, now=now)
            new_side = side_fingerprint(key, aor.encode())
        else:
            new_side = self.store.replace_key(
                aor, key, now=now, why=f"key changed; call allowed by key_change_policy={self.policy}"
            ).key_side
        self._forget_entry(aor)
        self._after_own_write()
        return self._changed_verdict(
            aor, local_side, new_side, contact.key_side, contact.key_first_seen, contact.verified, action
        )

    def _still_changed(self, aor: str, contact: Contact, local_side: str) -> TrustVerdict:
        """The key that replaced an older one under ``warn``; loud until the user verifies or accepts it."""
        history = self.store.history(aor)
        if not history:  # imported without history: nothing older to show, so it is an ordinary known key
            return self._known(aor, self._remember(contact), local_side, cached=False)
        old = history[-1]
        old_side = side_fingerprint(old.identity_key, aor.encode())
        return self._changed_verdict(
            aor, local_side, contact.key_side, old_side, old.first_seen, old.was_verified, TrustAction.ALLOW
        )


# --- QR payloads ---------------------------------------------------------------------------------------------


class MalformedQrPayload(ValueError):
    pass


def safety_number_qr(local_aor: str, local_key: bytes, remote_aor: str, remote_key: bytes) -> str:
    local_aor, remote_aor = normalize_aor(local_aor), normalize_aor(remote_aor)
    local = (side_fingerprint(local_key, local_aor.encode()), local_aor)
    remote = (side_fingerprint(remote_key, remote_aor.encode()), remote_aor)
    first, second = sorted((local, remote))
    return f"{SN_QR_PREFIX}{first[0]}{second[0]}:{quote(first[1], safe=_AOR_SAFE)}:{quote(second[1], safe=_AOR_SAFE)}"


def parse_safety_number_qr(text: str) -> tuple[str, str, str]:
    """``(60 digits, AOR A, AOR B)`` from a scanned payload; MalformedQrPayload for anything else."""
    text = text.strip()
    if not text.startswith(SN_QR_PREFIX):
        raise MalformedQrPayload(f"not a voipgw safety-number payload (it must start with {SN_QR_PREFIX!r})")
    parts = text[len(SN_QR_PREFIX) :].split(":")
    if len(parts) != 3 or len(parts[0]) != 60 or not parts[0].isascii() or not parts[0].isdigit():
        raise MalformedQrPayload("a safety-number payload is 60 digits and two AORs separated by ':'")
    try:
        aor_a, aor_b = (
            normalize_aor(unquote(parts[1], errors="strict")),
            normalize_aor(unquote(parts[2], errors="strict")),
        )
    except (MalformedAor, UnicodeDecodeError) as exc:
        raise MalformedQrPayload(f"bad AOR in the payload: {exc}") from None
    return parts[0], aor_a, aor_b


def identity_qr(aor: str, key: bytes) -> str:
    aor = normalize_aor(aor)
    key = checked_key(key)
    return f"{ID_QR_PREFIX}{quote(aor, safe=_AOR_SAFE)}:{key.hex()}:{side_fingerprint(key, aor.encode())}"


# --- benchmark -----------------------------------------------------------------------------------------------


def bench_evaluate(rounds: int = 200, home: Path | None = None) -> dict[str, float]:
    """Median ``evaluate`` latency in microseconds for a cached known contact, a known contact outside the
    cache, and a first contact (TOFU insert, fsync included). ``voipgw bench call`` reports these."""
    rounds = max(3, rounds)
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(home) if home is not None else Path(tmp)
        me = IdentityKey.generate().public.serialize()
        peers = [IdentityKey.generate().public.serialize() for _ in range(rounds)]
        now = time.time()
        with TrustStore(base, cache_size=DEFAULT_CACHE_SIZE, warm=False) as trust:
            first: list[float] = []
            for i, key in enumerate(peers):
                t0 = time.perf_counter()
                trust.evaluate("me@bench.invalid", f"peer{i}@bench.invalid", key, local_key=me, now=now)
                first.append(time.perf_counter() - t0)
            cached: list[float] = []
            uncached: list[float] = []
            for i in range(rounds):
                aor = f"peer{i}@bench.invalid"
                trust.cache_clear()
                t0 = time.perf_counter()
                trust.evaluate("me@bench.invalid", aor, peers[i], local_key=me, now=now)
                uncached.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                verdict = trust.evaluate("me@bench.invalid", aor, peers[i], local_key=me, now=now)
                cached.append(time.perf_counter() - t0)
                assert verdict.cached
            record: list[float] = []
            for i in range(min(rounds, 50)):
                t0 = time.perf_counter()
                trust.record_call("me@bench.invalid", f"peer{i}@bench.invalid", peers[i], local_key=me, now=now)
                record.append(time.perf_counter() - t0)
    return {
        "trust_evaluate_us_cached_known": statistics.median(cached) * 1e6,
        "trust_evaluate_us_known_uncached": statistics.median(uncached) * 1e6,
        "trust_evaluate_us_first_contact": statistics.median(first) * 1e6,
        "trust_record_call_us": statistics.median(record) * 1e6,
    }
