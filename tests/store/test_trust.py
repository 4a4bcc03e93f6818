"""The trust policy seam: TOFU, the cached known-contact path, key changes under each policy (never silent),
cache invalidation by other processes, and safety numbers that agree at both ends and across restarts."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from ratchet.fingerprint import safety_number
from ratchet.identity import IdentityKey
from ratchet.params import SessionKeys
from tests.support.handshake_fixtures import BOB as BOB_ID
from tests.support.handshake_fixtures import BOB_AOR, MALLORY, T0, answer, make_offerer
from voipgw.cli.main import main
from voipgw.store.contacts import ContactStore, VerifyMethod
from voipgw.store.keyfile import load_or_create_identity
from voipgw.trust import (
    KeyChangePolicy,
    MalformedQrPayload,
    TrustAction,
    TrustState,
    TrustStore,
    bench_evaluate,
    identity_qr,
    parse_safety_number_qr,
    safety_number_qr,
)

REPO = Path(__file__).resolve().parents[2]
ALICE, BOB = "alice@example.org", "bob@example.org"


def _key() -> bytes:
    return IdentityKey.generate().public.serialize()


def test_first_contact_then_known_fast_path(tmp_path: Path) -> None:
    me, bob = _key(), _key()
    with TrustStore(tmp_path) as trust:
        v = trust.evaluate(ALICE, "sip:bob@Example.org:5060", bob, local_key=me, now=100.0)
        assert (v.state, v.action, v.verified, v.remote_aor) == (
            TrustState.FIRST_CONTACT,
            TrustAction.ALLOW,
            False,
            BOB,
        )
        assert v.safety_number == safety_number(me, ALICE.encode(), bob, BOB.encode())
        assert "first contact" in v.reason and v.warning is None and v.previous_safety_number is None
        v2 = trust.evaluate(ALICE, BOB, bob, local_key=me, now=101.0)
        assert (v2.state, v2.action, v2.verified, v2.cached) == (TrustState.KNOWN, TrustAction.ALLOW, False, True)
        assert v2.safety_number == v.safety_number
        assert trust.record_call(ALICE, BOB, bob, local_key=me, now=102.0)
        trust.mark_verified(BOB, bob, VerifyMethod.SAS, now=103.0)
        v3 = trust.evaluate(ALICE, BOB, bob, local_key=me, now=104.0)
        assert v3.state is TrustState.KNOWN and v3.verified and "verified (sas" in v3.reason
    with TrustStore(tmp_path) as again:  # a restart: warmed from the store, same number, still verified
        v4 = again.evaluate(ALICE, BOB, bob, local_key=me, now=105.0)
        assert v4.cached and v4.verified and v4.safety_number == v.safety_number
        assert again.store.require(BOB).call_count == 1
        assert again.store.local_aors()[0][0] == ALICE


@pytest.mark.parametrize(
    "impostor",
    [
        "\u0430lice@example.org",  # Cyrillic a
        "Alice@example.org",  # a case variant of the user part
        "a1ice@example.org",  # digit one for l
        "alice@examp1e.org",
        "al\u0456ce@example.org",  # Cyrillic i
    ],
)
def test_a_look_alike_of_a_verified_contact_is_a_loud_first_contact(tmp_path: Path, impostor: str) -> None:
    """An impostor's AOR that looks like a verified contact's gets a warning naming that contact, never a quiet
    first contact; a genuinely different AOR does not."""
    me, alice, mallory = _key(), _key(), _key()
    with TrustStore(tmp_path) as trust:
        trust.evaluate(BOB, ALICE, alice, local_key=me, now=100.0)
        trust.mark_verified(ALICE, alice, VerifyMethod.SAS, now=101.0)
        v = trust.evaluate(BOB, impostor, mallory, local_key=me, now=102.0)
        assert v.state is TrustState.FIRST_CONTACT and not v.verified
        assert v.warning is not None and f"LOOKS LIKE {ALICE} (a verified contact)" in v.warning, v.warning
        assert "LOOKS LIKE" in v.reason and v.reason.isascii()  # the difference shows: "\\u0430lice"
        plain = trust.evaluate(BOB, "carol@example.org", _key(), local_key=me, now=103.0)
        assert plain.warning is None and "LOOKS LIKE" not in plain.reason


def test_safety_number_is_the_same_at_both_ends(tmp_path: Path) -> None:
    alice, bob = _key(), _key()
    with TrustStore(tmp_path / "alice") as a, TrustStore(tmp_path / "bob") as b:
        va = a.evaluate(ALICE, BOB, bob, local_key=alice, now=1.0)
        vb = b.evaluate(BOB, ALICE, alice, local_key=bob, now=1.0)
        assert va.safety_number == vb.safety_number
        assert safety_number_qr(ALICE, alice, BOB, bob) == safety_number_qr(BOB, bob, ALICE, alice)
        number, aor_a, aor_b = parse_safety_number_qr(safety_number_qr(ALICE, alice, BOB, bob))
        assert number == va.safety_number and {aor_a, aor_b} == {ALICE, BOB}


@pytest.mark.parametrize(
    ("policy", "verified", "action"),
    [
        (KeyChangePolicy.BLOCK_IF_VERIFIED, True, TrustAction.BLOCK),
        (KeyChangePolicy.BLOCK_IF_VERIFIED, False, TrustAction.ALLOW),
        (KeyChangePolicy.BLOCK, False, TrustAction.BLOCK),
        (KeyChangePolicy.WARN, True, TrustAction.ALLOW),
    ],
)
def test_changed_key_is_loud_and_follows_the_policy(
    tmp_path: Path, policy: KeyChangePolicy, verified: bool, action: TrustAction
) -> None:
    me, old, new = _key(), _key(), _key()
    with TrustStore(tmp_path, policy=policy) as trust:
        first = trust.evaluate(ALICE, BOB, old, local_key=me, now=1_700_000_000.0)
        if verified:
            trust.mark_verified(BOB, old, VerifyMethod.SAFETY_NUMBER, now=1_700_000_001.0)
            assert not trust.evaluate(ALICE, BOB, old, local_key=me, now=1_700_000_002.0).cached  # write dropped it
        assert trust.evaluate(ALICE, BOB, old, local_key=me, now=1_700_000_002.0).cached
        v = trust.evaluate(ALICE, BOB, new, local_key=me, now=1_800_000_000.0)
        assert (v.state, v.action, v.verified) == (TrustState.KEY_CHANGED, action, False)
        assert v.previous_safety_number == first.safety_number
        assert v.safety_number == safety_number(me, ALICE.encode(), new, BOB.encode())
        assert v.previous_key_first_seen == 1_700_000_000.0
        assert "\n" not in v.reason and v.reason.isascii() and "2023-11-14" in v.reason
        assert v.warning is not None and "CHANGED" in v.warning and "2023-11-14" in v.warning
        assert " ".join(v.safety_number[i : i + 5] for i in range(0, 60, 5)) in v.warning
        assert " ".join(first.safety_number[i : i + 5] for i in range(0, 60, 5)) in v.warning
        # the next call with the new key is still loud, and with the same action
        again = trust.evaluate(ALICE, BOB, new, local_key=me, now=1_800_000_001.0)
        assert (again.state, again.action, again.cached) == (TrustState.KEY_CHANGED, action, False)
        contact = trust.store.require(BOB)
        if action is TrustAction.BLOCK:
            # the old key stays current (and verified): the real contact with the old key still gets through
            assert contact.identity_key == old and contact.pending_key == new and contact.verified == verified
            assert not trust.record_call(ALICE, BOB, new, local_key=me, now=1.0)
            back = trust.evaluate(ALICE, BOB, old, local_key=me, now=1_800_000_002.0)
            assert back.state is TrustState.KNOWN and back.verified == verified
        else:
            assert contact.identity_key == new and not contact.verified
            assert [h.identity_key for h in trust.store.history(BOB)] == [old]
        trust.store.accept_change(BOB, now=1_800_000_003.0)
        after = trust.evaluate(ALICE, BOB, new, local_key=me, now=1_800_000_004.0)
        assert (after.state, after.action, after.verified) == (TrustState.KNOWN, TrustAction.ALLOW, False)
        assert old in [h.identity_key for h in trust.store.history(BOB)]


def test_cache_sees_changes_made_by_another_process(tmp_path: Path) -> None:
    me, bob = load_or_create_identity(tmp_path).public.serialize(), _key()  # the CLI computes with this key
    with TrustStore(tmp_path) as trust:
        trust.evaluate(ALICE, BOB, bob, local_key=me, now=1.0)
        assert trust.evaluate(ALICE, BOB, bob, local_key=me, now=2.0).cached
        # a call counted by another connection moves data_version but not the trust generation: still cached
        with ContactStore(tmp_path) as other:
            other.record_call(BOB, bob, local_aor=None, local_key=None, now=3.0)
        assert trust.evaluate(ALICE, BOB, bob, local_key=me, now=4.0).cached
        # the CLI (a real separate process) verifies the contact: the next evaluate must show it
        cli = [sys.executable, "-m", "voipgw.cli.main", "--home", str(tmp_path)]
        digits = trust.evaluate(ALICE, BOB, bob, local_key=me, now=5.0).safety_number
        subprocess.run(
            [*cli, "verify", BOB, "--aor", ALICE, "--safety-number", digits],
            cwd=REPO,
            check=True,
            capture_output=True,
            timeout=60,
        )
        v = trust.evaluate(ALICE, BOB, bob, local_key=me, now=6.0)
        assert v.verified and not v.cached
        # our second connection above was closed; that must not have let the CLI delete the WAL under us
        assert (tmp_path / "contacts.db-wal").exists()
        assert trust.evaluate(ALICE, BOB, bob, local_key=me, now=7.0).cached
        subprocess.run([*cli, "forget", BOB, "--yes"], cwd=REPO, check=True, capture_output=True, timeout=60)
        assert trust.evaluate(ALICE, BOB, bob, local_key=me, now=8.0).state is TrustState.FIRST_CONTACT


def test_lru_keeps_only_the_most_recent_contacts(tmp_path: Path) -> None:
    me = _key()
    keys = {f"c{i}@example.org": _key() for i in range(5)}
    with TrustStore(tmp_path, cache_size=2) as trust:
        for aor, key in keys.items():
            trust.evaluate(ALICE, aor, key, local_key=me, now=1.0)
        hits = [trust.evaluate(ALICE, aor, key, local_key=me, now=2.0).cached for aor, key in keys.items()]
        assert hits == [False, False, False, False, False]  # each lookup evicted the next one in the cycle
        assert trust.evaluate(ALICE, "c4@example.org", keys["c4@example.org"], local_key=me, now=3.0).cached
        assert trust.evaluate(ALICE, "c3@example.org", keys["c3@example.org"], local_key=me, now=3.0).cached


def test_warm_start_loads_the_most_called(tmp_path: Path) -> None:
    me = _key()
    keys = {f"c{i}@example.org": _key() for i in range(4)}
    with TrustStore(tmp_path) as trust:
        for n, (aor, key) in enumerate(keys.items()):
            trust.evaluate(ALICE, aor, key, local_key=me, now=1.0)
            for _ in range(n):
                trust.record_call(ALICE, aor, key, local_key=me, now=2.0)
    with TrustStore(tmp_path, cache_size=2) as trust:
        # most-called first, so a miss cannot evict an entry before it is looked up
        cached = {aor: trust.evaluate(ALICE, aor, keys[aor], local_key=me, now=3.0).cached for aor in reversed(keys)}
    assert cached == {"c0@example.org": False, "c1@example.org": False, "c2@example.org": True, "c3@example.org": True}


def test_qr_payloads_parse_and_refuse_garbage() -> None:
    key = IdentityKey.from_seed(b"\x07" * 32).public.serialize()
    payload = identity_qr("sip:alice@[2001:DB8::1]:5060", key)
    assert payload.startswith("voipgw-id:1:alice@[2001%3Adb8%3A%3A1]:01")
    sn = safety_number_qr("alice@[2001:db8::1]", key, BOB, _key())
    assert parse_safety_number_qr(sn)[1:] in {("alice@[2001:db8::1]", BOB), (BOB, "alice@[2001:db8::1]")}
    for bad in (
        "",
        "voipgw-sn:1:123:a@b:c@d",
        "voipgw-sn:2:" + "1" * 60 + ":a@b:c@d",
        "voipgw-sn:1:" + "1" * 60 + ":a%3Cb:c@d",
    ):
        with pytest.raises(MalformedQrPayload):
            parse_safety_number_qr(bad)


def test_bench_function_reports_the_three_paths() -> None:
    numbers = bench_evaluate(rounds=5)
    assert set(numbers) == {
        "trust_evaluate_us_cached_known",
        "trust_evaluate_us_known_uncached",
        "trust_evaluate_us_first_contact",
        "trust_record_call_us",
    }
    assert all(value > 0 for value in numbers.values())


def _handshake(callee: IdentityKey, now: float) -> tuple[SessionKeys, SessionKeys]:
    offerer = make_offerer(now=now)
    answer_bytes, callee_keys = answer(offerer.offer_bytes, now=now + 0.1, identity=callee, local_aor=BOB_AOR)
    return offerer.accept_answer(answer_bytes, now + 0.2), callee_keys


def _verdict(trust: TrustStore, keys: SessionKeys, now: float) -> Any:
    """Exactly what the phone passes after the handshake verified the signatures."""
    return trust.evaluate(keys.local_aor, keys.remote_aor, keys.remote_identity, local_key=keys.local_identity, now=now)


def test_the_seam_with_real_handshakes_and_an_impostor(tmp_path: Path) -> None:
    caller_keys, callee_keys = _handshake(BOB_ID, T0)
    with TrustStore(tmp_path / "alice") as alice, TrustStore(tmp_path / "bob") as bob:
        va, vb = _verdict(alice, caller_keys, T0), _verdict(bob, callee_keys, T0)
        assert va.state is vb.state is TrustState.FIRST_CONTACT
        expected = safety_number(
            caller_keys.local_identity,
            caller_keys.local_aor.encode(),
            caller_keys.remote_identity,
            caller_keys.remote_aor.encode(),
        )
        assert va.safety_number == vb.safety_number == expected
        alice.mark_verified(BOB_AOR, caller_keys.remote_identity, VerifyMethod.SAS, now=T0 + 1)
        again, _ = _handshake(BOB_ID, T0 + 60)
        assert _verdict(alice, again, T0 + 60).verified
        # Mallory answers as bob with her own (validly signed) key: the verified contact blocks the call
        mitm, _ = _handshake(MALLORY, T0 + 120)
        v = _verdict(alice, mitm, T0 + 120)
        assert (v.state, v.action) == (TrustState.KEY_CHANGED, TrustAction.BLOCK)
        assert v.previous_safety_number == expected and v.safety_number != expected


def test_sas_mismatch_is_recorded_and_unverifies(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TZ", "UTC")  # times are shown in local time: pin the zone
    time.tzset()
    me, bob = load_or_create_identity(tmp_path).public.serialize(), _key()
    with TrustStore(tmp_path) as trust:
        trust.evaluate(ALICE, BOB, bob, local_key=me, now=1.0)
        trust.mark_verified(BOB, bob, VerifyMethod.SAFETY_NUMBER, now=2.0)
        assert trust.evaluate(ALICE, BOB, bob, local_key=me, now=3.0).verified
        trust.record_sas_mismatch(BOB, bob, now=4.0, detail="call abc: users read different SAS")
        assert not trust.evaluate(ALICE, BOB, bob, local_key=me, now=5.0).verified
    assert main(["--home", str(tmp_path), "fingerprint", BOB]) == 0
    assert "WARNING: sas-mismatch reported on 1970-01-01 00:00 UTC: call abc" in capsys.readouterr().out


def test_one_trust_store_shared_by_threads(tmp_path: Path) -> None:
    me = _key()
    keys = [_key() for _ in range(8)]
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            for i in range(30):
                aor = f"c{(n + i) % 8}@example.org"
                v = trust.evaluate(ALICE, aor, keys[(n + i) % 8], local_key=me, now=float(i))
                assert v.allowed and v.state in (TrustState.FIRST_CONTACT, TrustState.KNOWN)
                assert trust.record_call(ALICE, aor, keys[(n + i) % 8], local_key=me, now=float(i))
        except BaseException as exc:  # collected and re-raised by the test thread
            errors.append(exc)

    with TrustStore(tmp_path, cache_size=4) as trust:
        threads = [threading.Thread(target=worker, args=(n,)) for n in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert not errors, errors[0]
        assert sum(c.call_count for c in trust.store.contacts()) == 6 * 30
        assert len(trust.store.contacts()) == 8


def test_a_contact_with_a_stored_key_is_pinned_until_forgotten(tmp_path: Path) -> None:
    """``pinned`` (a known voipgw contact must encrypt) holds from the first contact, across a blocked key change
    and a restart, for any spelling of the AOR, and only ``forget`` (here: by another process's store) lifts it."""
    me, bob = _key(), _key()
    with TrustStore(tmp_path) as trust:
        assert not trust.pinned(BOB)
        trust.evaluate(ALICE, BOB, bob, local_key=me, now=100.0)
        assert trust.pinned(BOB) and trust.pinned("sip:bob@Example.org")
        trust.mark_verified(BOB, bob, VerifyMethod.SAS, now=101.0)
        assert not trust.evaluate(ALICE, BOB, _key(), local_key=me, now=102.0).allowed  # blocked change
        assert trust.pinned(BOB)
    with TrustStore(tmp_path) as again, ContactStore(tmp_path) as other:
        assert again.pinned(BOB)
        other.forget(BOB)
        assert not again.pinned(BOB) and not again.pinned(ALICE)
