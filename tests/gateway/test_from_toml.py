"""The gateway run from its TOML file as an operator runs it, on loopback: two gateways register their users to a
real Kamailio with digest auth, calls between plain baresip phones are routed by Kamailio's location table (no
static routes) in both directions, `voipgw gateway status` shows a live call, /metrics counts real calls, and
SIGTERM hangs up and unregisters. Start-up mistakes are one line and exit status 2."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.config_gateway import (
    CALL_TIMEOUT_S,
    GATEWAY_BLOCK,
    PASSWORDS,
    REGISTER_RECOVERY_S,
    GatewayProc,
    options_status,
    sip_request,
    start_config_gateway,
    user,
    wait_idle,
    wait_live_call,
    write_config,
    zone_tables,
)
from tests.support.phones import voipgw_argv
from tests.support.requires import requires
from tests.support.restartable_kamailio import RestartableKamailio
from tests.testbed import speech
from tests.testbed.baresip import Baresip
from tests.testbed.kamailio import Kamailio
from tests.testbed.ports import reserve_block

pytestmark = [pytest.mark.integration, pytest.mark.interop, requires("kamailio", "baresip", "sox")]


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Long enough that no call ends by itself: the test hangs up (or stops a gateway) when it wants.
    return speech.make_variant(tmp_path_factory.mktemp("gwops") / "speech8k.wav", 8000)


@pytest.fixture
def site(tmp_path: Path, clip: Path) -> Iterator[dict[str, Any]]:
    """Kamailio (digest auth) + gateway A fronting baresip alice + gateway B fronting baresip bob."""
    with (
        Kamailio(tmp_path, users=PASSWORDS, auth=True) as pbx,
        Baresip(tmp_path, user="alice", play=clip, codecs=("PCMU",)) as alice,
        Baresip(tmp_path, user="bob", play=clip, codecs=("PCMU",)) as bob,
    ):
        gws: list[GatewayProc] = []
        try:
            gws.append(start_config_gateway(tmp_path, "gwa", pbx.addr, {"alice": user("alice", alice)}, metrics=True))
            gws.append(start_config_gateway(tmp_path, "gwb", pbx.addr, {"bob": user("bob", bob)}, log_format="text"))
            yield {"pbx": pbx, "alice": alice, "bob": bob, "gwa": gws[0], "gwb": gws[1], "dir": tmp_path}
        finally:
            for gw in gws:
                gw.stop()


def test_two_gateways_register_and_call_each_other_through_the_pbx_location_table(site: dict[str, Any]) -> None:
    pbx: Kamailio = site["pbx"]
    alice: Baresip = site["alice"]
    bob: Baresip = site["bob"]
    gwa: GatewayProc = site["gwa"]
    gwb: GatewayProc = site["gwb"]
    snap_a = gwa.wait_registered()
    gwb.wait_registered()
    reg = snap_a["registrations"][0]
    assert reg["user"] == "alice" and reg["aor"] == "alice@127.0.0.1" and reg["granted_s"] == 60, reg
    # The PBX's location table now routes each user to its gateway (which answers OPTIONS itself).
    assert options_status(pbx.addr, "alice") == 200 and options_status(pbx.addr, "bob") == 200

    # alice -> bob: dialled at gateway A as a bare extension; A has no route for bob, only the PBX knows him.
    alice.dial(f"sip:bob@127.0.0.1:{gwa.sip_port}")
    shown = bob.wait_event("CALL_ESTABLISHED", timeout=CALL_TIMEOUT_S)
    alice.wait_event("CALL_ESTABLISHED", timeout=CALL_TIMEOUT_S)
    live = wait_live_call(gwa)
    assert live["direction"] == "outbound" and live["remote_aor"] == "bob@127.0.0.1", live
    assert live["security"] == "secure, unverified" and live["sas"], live
    # Label first, then the signed AOR's user part (never the From display name "Alice" the PBX relays).
    assert shown.raw["peerdisplayname"] == f"[NEW {live['sas']}] alice", shown.raw
    table = gwa.status()
    assert table.returncode == 0, table.stderr
    row = next(line for line in table.stdout.splitlines() if "bob@127.0.0.1" in line)
    for cell in ("alice", "outbound", "secure, unverified", live["sas"], "pcmu>opus"):
        assert cell in row, table.stdout
    assert "registered" in table.stdout and "Active calls (1)" in table.stdout, table.stdout
    inbound = wait_live_call(gwb)
    assert inbound["direction"] == "inbound" and inbound["remote_aor"] == "alice@127.0.0.1"
    assert inbound["sas"] == live["sas"]
    alice.hangup()
    alice.wait_event("CALL_CLOSED", timeout=CALL_TIMEOUT_S)
    bob.wait_event("CALL_CLOSED", timeout=CALL_TIMEOUT_S)
    wait_idle(gwa, 1)

    # bob -> alice, the other way round.
    bob.dial(f"sip:alice@127.0.0.1:{gwb.sip_port}")
    shown = alice.wait_event("CALL_ESTABLISHED", timeout=CALL_TIMEOUT_S)
    back = wait_live_call(gwb)
    assert back["direction"] == "outbound" and back["security"] == "secure, unverified", back
    assert shown.raw["peerdisplayname"] == f"[E2E {back['sas']}] bob", shown.raw  # A pinned bob's key above
    bob.hangup()
    bob.wait_event("CALL_CLOSED", timeout=CALL_TIMEOUT_S)
    alice.wait_event("CALL_CLOSED", timeout=CALL_TIMEOUT_S)
    done = wait_idle(gwa, 2)
    assert [c["direction"] for c in done["finished"]] == ["outbound", "inbound"], done["finished"]

    # Each fronted user has its own identity and contact store, which the ordinary CLI reads.
    alice_dir = gwa.home / "users" / "alice"
    assert (alice_dir / "identity.pem").stat().st_mode & 0o777 == 0o600
    assert (gwa.home / "users").stat().st_mode & 0o777 == 0o700
    contacts = subprocess.run(
        voipgw_argv(alice_dir, "contacts", "--json"), capture_output=True, text=True, timeout=30, check=True
    )
    (known,) = json.loads(contacts.stdout)
    assert known["aor"] == "bob@127.0.0.1" and known["local_aor"] == "alice@127.0.0.1" and known["calls"] == 2, known

    m = gwa.metrics()
    assert m['voipgw_calls_total{security="secure_unverified"}'] == 2, m
    assert m['voipgw_calls_active{security="secure_unverified"}'] == 0
    assert m["voipgw_transcoded_calls_total"] == 2 and m["voipgw_transcoding_calls_active"] == 0
    sealed = sum(c["outside_frames_sealed"] for c in done["finished"])
    opened = sum(c["outside_frames_opened"] for c in done["finished"])
    assert m["voipgw_frames_sealed_total"] == sealed > 50 and m["voipgw_frames_opened_total"] == opened > 50, m
    assert m["voipgw_registrations"] == 1

    # A third call is up when gateway A is told to stop: both phones get the hang-up, A leaves the PBX.
    alice.dial(f"sip:bob@127.0.0.1:{gwa.sip_port}")
    bob.wait_event("CALL_ESTABLISHED", timeout=CALL_TIMEOUT_S)
    wait_live_call(gwa)
    live_metrics = gwa.metrics()
    assert live_metrics['voipgw_calls_active{security="secure_unverified"}'] == 1, live_metrics
    assert live_metrics["voipgw_transcoding_calls_active"] == 1
    assert live_metrics["voipgw_frames_sealed_total"] > sealed, "a call in progress is counted while it runs"
    assert gwa.terminate() == 0, gwa.log()
    alice.wait_event("CALL_CLOSED", timeout=CALL_TIMEOUT_S)
    bob.wait_event("CALL_CLOSED", timeout=CALL_TIMEOUT_S)
    assert options_status(pbx.addr, "alice") == 404, "alice is still registered after SIGTERM"
    assert options_status(pbx.addr, "bob") == 200
    log = gwa.log()
    records = [json.loads(line) for line in log.splitlines() if line.strip()]  # --log-format json: every line
    assert all({"ts", "level", "logger", "message"} <= set(r) for r in records), log
    assert "registration of alice@127.0.0.1: unregistered (200 OK)" in log, log
    assert "gateway shutdown" in log and '"gateway stopped"' in log, log
    assert not gwa.sock.exists(), "the control socket outlived the gateway"
    gone = gwa.status()
    assert gone.returncode == 1 and gone.stderr.strip().startswith("voipgw: no gateway running"), gone.stderr
    wait_idle(gwb, 3)
    assert gwb.terminate() == 0, gwb.log()
    assert options_status(pbx.addr, "bob") == 404
    assert "registration of bob@127.0.0.1: unregistered (200 OK)" in gwb.log()


def test_a_call_to_a_plain_phone_behind_the_pbx_is_refused_and_counted(tmp_path: Path, site: dict[str, Any]) -> None:
    """carol (an Opus phone, so the codec is not what fails) registers to the PBX herself, without a gateway:
    under the default policy gateway A refuses her plain answer, alice gets 488, and the metrics count a refused
    call and its reason."""
    pbx: Kamailio = site["pbx"]
    alice: Baresip = site["alice"]
    gwa: GatewayProc = site["gwa"]
    clip48k = speech.make_variant(tmp_path / "speech48k.wav", 48000, seconds=5.0)
    with Baresip(
        tmp_path,
        user="carol",
        play=clip48k,
        srate=48000,
        codecs=("opus",),
        registrar=f"127.0.0.1:{pbx.port}",
        password=PASSWORDS["carol"],
    ) as carol:
        carol.wait_registered()
        gwa.wait_registered()
        alice.dial(f"sip:carol@127.0.0.1:{gwa.sip_port}")
        closed = alice.wait_event("CALL_CLOSED", timeout=CALL_TIMEOUT_S)
    assert closed.param == "488 Not Acceptable Here", closed
    snap = wait_idle(gwa, 1)
    assert snap["finished"][0]["security"] == "refused", snap["finished"]
    m = gwa.metrics()
    assert m['voipgw_calls_total{security="refused"}'] == 1, m
    assert m['voipgw_handshake_failures_total{reason="no_key_exchange"}'] == 1, m
    assert m["voipgw_frames_sealed_total"] == 0


# --- start-up mistakes ------------------------------------------------------------------------------------------


def run_gateway(tmp_path: Path, tables: dict[str, dict[str, Any]], *extra: str) -> subprocess.CompletedProcess[str]:
    config = write_config(tmp_path / "gw.toml", tables)
    argv = voipgw_argv(tmp_path / "home", "gateway", "--config", str(config), *extra)
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


def one_line_exit_2(out: subprocess.CompletedProcess[str]) -> str:
    assert out.returncode == 2, (out.returncode, out.stderr)
    assert "Traceback" not in out.stderr, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    return lines[0]


def test_startup_mistakes_are_one_line_and_exit_2(tmp_path: Path) -> None:
    with (
        Kamailio(tmp_path, users=PASSWORDS, auth=True) as pbx,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent,
        reserve_block(GATEWAY_BLOCK) as free,
    ):
        taken.bind(("127.0.0.1", 0))
        silent.bind(("127.0.0.1", 0))
        zones = zone_tables(free)
        good: dict[str, dict[str, Any]] = {
            "gateway": {"control_socket": str(tmp_path / "gw.sock")},
            "inside": zones["inside"],
            "outside": {"registrar": f"127.0.0.1:{pbx.port}", **zones["outside"]},
            "users.alice": {"outside_aor": "alice@127.0.0.1", "password": PASSWORDS["alice"]},
        }

        def variant(**changes: dict[str, Any]) -> dict[str, dict[str, Any]]:
            tables = {k: dict(v) for k, v in good.items()}
            for key, table in changes.items():
                tables[key.replace("__", ".")] = {**tables.get(key.replace("__", "."), {}), **table}
            return tables

        cases = [
            (variant(inside={"lisen": "127.0.0.1:5070"}), "voipgw: unknown setting 'inside.lisen' (see config/"),
            (
                {k: v for k, v in good.items() if k != "users.alice"},
                "voipgw: users: no fronted user (add a [users.NAME] table with outside_aor)",
            ),
            (
                variant(users__bob={"password": "x"}),
                "voipgw: users.bob.outside_aor: missing (the user's address at the PBX",
            ),
            (
                variant(inside={"listen": f"127.0.0.1:{taken.getsockname()[1]}"}),
                f"voipgw: inside.listen: 127.0.0.1:{taken.getsockname()[1]} (UDP) is already in use by another process",
            ),
            (
                variant(outside={"listen": f"127.0.0.1:{taken.getsockname()[1]}"}),
                f"voipgw: outside.listen: 127.0.0.1:{taken.getsockname()[1]} (UDP) is already in use",
            ),
            (
                variant(outside={"listen": f"127.0.0.1:{free[0]}"}),
                f"voipgw: outside.listen: 127.0.0.1:{free[0]} is inside.listen too; each zone needs its own socket",
            ),
            (
                variant(inside={"auth": True}),
                "voipgw: users.alice.inside_password: missing (inside.auth is on by default",
            ),
            (
                variant(outside={"registrar": "pbx.invalid:5060"}),
                "voipgw: outside.registrar: cannot resolve 'pbx.invalid'",
            ),
            (
                variant(outside={"registrar": f"127.0.0.1:{silent.getsockname()[1]}"}),
                f"voipgw: outside.registrar: 127.0.0.1:{silent.getsockname()[1]} does not answer SIP",
            ),
        ]
        for tables, expected in cases:
            line = one_line_exit_2(run_gateway(tmp_path, tables))
            assert line.startswith(expected), (line, expected)
        line = one_line_exit_2(run_gateway(tmp_path, good, "--listen", "127.0.0.1:5070"))
        assert line == "voipgw: --listen: not with --config (set it in the config file)"
        # The same file, corrected, starts (and SIGTERM stops it with status 0).
        argv = voipgw_argv(tmp_path / "home", "gateway", "--config", str(write_config(tmp_path / "ok.toml", good)))
        with (tmp_path / "ok.log").open("wb") as log:
            proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 20
            while "gateway listening on" not in (tmp_path / "ok.log").read_text():
                assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "ok.log").read_text()
                time.sleep(0.05)
            # A second gateway on the same file and home refuses in one line, and never claims to be listening.
            second = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
            assert second.returncode == 2, second.stderr
            assert "listening" not in second.stderr, second.stderr
            assert second.stderr.strip().splitlines()[-1].startswith("voipgw: "), second.stderr
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(20) == 0, (tmp_path / "ok.log").read_text()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)


@pytest.mark.parametrize("inside_auth", [True, False], ids=["inside-auth", "no-inside-auth"])
def test_phones_register_to_their_gateway(tmp_path: Path, clip: Path, inside_auth: bool) -> None:
    """No static contacts: baresip alice and bob REGISTER to their own gateway, and alice's call reaches bob
    through both gateways and the PBX. With inside.auth, REGISTER and INVITE are challenged and a wrong inside
    password is refused; without it, a call is alice's only from where alice registered. A call to a phone that
    has unregistered gets 480."""
    inside_pw = {"alice": "alice-inside-pw", "bob": "bob-inside-pw"}
    auth = {"inside": {"auth": inside_auth, "realm": "office"}}
    with Kamailio(tmp_path, users=PASSWORDS, auth=True) as pbx:
        gws: list[GatewayProc] = []
        try:
            for gw_name, name in (("gwa", "alice"), ("gwb", "bob")):
                table = {
                    "outside_aor": f"{name}@127.0.0.1",
                    "password": PASSWORDS[name],
                    "inside_password": inside_pw[name],
                }
                gws.append(start_config_gateway(tmp_path, gw_name, pbx.addr, {name: table}, extra=auth))
            gwa, gwb = gws
            assert gwa.status_json()["inside"] == [{"user": "alice", "state": "not registered"}]
            with (
                Baresip(
                    tmp_path,
                    user="alice",
                    play=clip,
                    registrar=f"127.0.0.1:{gwa.sip_port}",
                    password=inside_pw["alice"],
                ) as alice,
                Baresip(
                    tmp_path, user="bob", play=clip, registrar=f"127.0.0.1:{gwb.sip_port}", password=inside_pw["bob"]
                ) as bob,
            ):
                alice.wait_registered()
                bob.wait_registered()
                phone = gwa.status_json()["inside"][0]
                assert phone["state"] == "registered" and phone["source"] == f"127.0.0.1:{alice.sip_port}", phone
                assert "Inside phones (1)" in gwa.status().stdout
                gwa.wait_registered()
                gwb.wait_registered()
                alice.dial(f"sip:bob@127.0.0.1:{gwa.sip_port}")
                shown = bob.wait_event("CALL_ESTABLISHED", timeout=CALL_TIMEOUT_S)
                live = wait_live_call(gwa)
                assert live["security"] == "secure, unverified", live
                assert shown.raw["peerdisplayname"] == f"[NEW {live['sas']}] alice", shown.raw
                alice.hangup()
                alice.wait_event("CALL_CLOSED", timeout=CALL_TIMEOUT_S)
                bob.wait_event("CALL_CLOSED", timeout=CALL_TIMEOUT_S)
                wait_idle(gwa, 1)
                # Someone else on the LAN claims to be alice and dials out through gateway A.
                forged = sip_request(
                    ("127.0.0.1", gwa.sip_port), "INVITE", f"sip:bob@127.0.0.1:{gwa.sip_port}", "alice"
                )
                if inside_auth:
                    assert forged == 401, "an INVITE claiming an inside user must prove it"
                    wrong_dir = tmp_path / "wrong"
                    wrong_dir.mkdir()
                    with Baresip(
                        wrong_dir, user="alice", play=clip, registrar=f"127.0.0.1:{gwa.sip_port}", password="guess"
                    ) as mallory:
                        mallory.wait_reg_state("ERR", timeout=15.0)
                else:
                    # Not from alice's registered address, so not alice's call; and the inside listener takes
                    # calls from its own users only (an inbound call arrives on the outside one).
                    assert forged == 403
                assert len(gwa.status_json()["finished"]) == 1, "nothing was placed outside"
                bob.stop()  # baresip un-REGISTERs as it quits
                deadline = time.monotonic() + 15
                while gwb.status_json()["inside"][0]["state"] != "not registered":
                    assert time.monotonic() < deadline, gwb.status_json()["inside"]
                    time.sleep(0.2)
                alice.dial(f"sip:bob@127.0.0.1:{gwa.sip_port}")
                closed = alice.wait_event("CALL_CLOSED", timeout=CALL_TIMEOUT_S)
                assert closed.param.startswith("480 "), closed
        finally:
            for gw in gws:
                gw.stop()


def wait_registration_state(gw: GatewayProc, state: str, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        reg = dict(gw.status_json()["registrations"][0])
        if reg["state"] == state:
            return reg
        if time.monotonic() > deadline:
            raise AssertionError(f"{gw.name} registration never {state}: {reg}\n{gw.log()[-3000:]}")
        time.sleep(0.1)


@pytest.mark.faults
def test_the_registrations_recover_after_a_pbx_outage_and_calls_work_again(tmp_path: Path, clip: Path) -> None:
    """The PBX grants 4 s (refreshed every 2.4 s), goes down (its location table is lost), and comes back on the
    same port: the gateways show the failure, re-register with backoff, and a new call goes through."""
    pbx = RestartableKamailio(tmp_path, users=PASSWORDS, auth=True, max_expires=4)
    pbx.start()
    gws: list[GatewayProc] = []
    try:
        with (
            Baresip(tmp_path, user="alice", play=clip) as alice,
            Baresip(tmp_path, user="bob", play=clip) as bob,
        ):
            gws.append(start_config_gateway(tmp_path, "gwa", pbx.addr, {"alice": user("alice", alice)}, metrics=True))
            gws.append(start_config_gateway(tmp_path, "gwb", pbx.addr, {"bob": user("bob", bob)}))
            gwa, gwb = gws
            assert gwa.wait_registered()["registrations"][0]["granted_s"] == 4
            gwb.wait_registered()
            pbx.halt()
            failed = wait_registration_state(gwa, "failed", timeout=20.0)
            # Kamailio's host answers with ICMP port unreachable: the attempt ends at once as 503, not after 32 s
            assert failed["last_error"].startswith("503 ") and "ICMP port unreachable" in failed["last_error"], failed
            assert gwa.metrics()["voipgw_registrations"] == 0
            t_up = time.monotonic()
            pbx.start()  # same port, empty location table
            wait_registration_state(gwa, "registered", timeout=REGISTER_RECOVERY_S)
            wait_registration_state(gwb, "registered", timeout=REGISTER_RECOVERY_S)
            print(f"both gateways registered again {time.monotonic() - t_up:.1f} s after the PBX came back")
            assert gwa.metrics()["voipgw_registrations"] == 1
            assert options_status(pbx.addr, "bob") == 200
            alice.dial(f"sip:bob@127.0.0.1:{gwa.sip_port}")
            bob.wait_event("CALL_ESTABLISHED", timeout=CALL_TIMEOUT_S)
            assert wait_live_call(gwa)["security"] == "secure, unverified"
            alice.hangup()
            bob.wait_event("CALL_CLOSED", timeout=CALL_TIMEOUT_S)
    finally:
        for gw in gws:
            gw.stop()
        pbx.stop()
