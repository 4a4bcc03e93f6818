"""Disk full and a read-only home under a running gateway: bob's gateway keeps its home on a 1 MiB tmpfs that the
test fills, then remounts read-only, while E2E phones call bob through it. The call running when the disk fills
keeps its media both ways; later calls still work with a known contact and log one clear line per failed store
write; and once there is room again the store takes writes again. Needs root (mount); the tmpfs is unmounted
in teardown.
"""

from __future__ import annotations

import contextlib
import errno
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.faults import contacts, long_speech, udp_ports, wait_until
from tests.support.phones import PhoneProc, start_caller, voipgw_argv
from tests.support.requires import requires
from tests.testbed import capture
from tests.testbed.baresip import Baresip
from tests.testbed.gateway_proc import spawn_gateway, stop_with_snapshot
from tests.testbed.ports import reserve_block

pytestmark = [pytest.mark.integration, pytest.mark.faults, pytest.mark.interop, requires("baresip")]

TMPFS_SIZE = "1m"
CALL_TIMEOUT_S = 40.0
NO_ANSWER_S = 6.0
"""The callers' ringing limit: a gateway that cannot answer must not hold the test for the default 30 s."""
FLOW_PACKETS = 100
"""RTP packets each way (2 s) that must still flow after the disk filled."""


@contextlib.contextmanager
def small_tmpfs(path: Path) -> Iterator[Path]:
    path.mkdir(mode=0o700, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={TMPFS_SIZE},mode=0700", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False, timeout=30)


def fill(path: Path) -> Path:
    """Write zeros into ``path/filler`` until the file system is full (ENOSPC)."""
    filler = path / "filler"
    chunk = b"\0" * 65536
    with filler.open("wb", buffering=0) as f:
        while True:
            try:
                f.write(chunk)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
                chunk = chunk[: len(chunk) // 2]
                if not chunk:
                    break
    return filler


def flowing(cap: capture.RawCapture, src: set[int], dst: set[int]) -> int:
    return sum(1 for p in cap.packets if p.src_port in src and p.dst_port in dst and p.rtp() is not None)


def call(workdir: Path, name: str, gw_port: int, clip: Path, seconds: float) -> PhoneProc:
    return start_caller(
        workdir, name, f"sip:bob@127.0.0.1:{gw_port}", "--play", str(clip), "--duration", f"{seconds:g}",
        "--no-answer-timeout", f"{NO_ANSWER_S:g}", tap=False,
    )  # fmt: skip


def finished(phone: PhoneProc) -> dict[str, object]:
    rc = phone.wait(CALL_TIMEOUT_S)
    summary = phone.summary()
    phone.stop()
    return {"rc": rc, **summary}


@contextlib.contextmanager
def ext4_remounting_ro(path: Path, workdir: Path) -> Iterator[Callable[[], object]]:
    """An 8 MiB ext4 image on a loop device at ``path``, mounted errors=remount-ro; yields the trigger that makes
    the kernel remount it read-only under the running process (ext4's own test hook: what a disk error does)."""
    image = workdir / "home.img"
    with image.open("wb") as f:
        f.truncate(8 << 20)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], check=True, timeout=60)
    dev = subprocess.run(["losetup", "-f", "--show", str(image)], check=True, capture_output=True, text=True)
    loop = dev.stdout.strip()
    try:
        path.mkdir(mode=0o700)
        subprocess.run(["mount", "-o", "errors=remount-ro", loop, str(path)], check=True, timeout=30)
        try:
            path.chmod(0o700)
            hook = Path("/sys/fs/ext4") / Path(loop).name / "trigger_fs_error"
            yield lambda: hook.write_text("voipgw fault test\n")
        finally:
            subprocess.run(["umount", "-l", str(path)], check=False, timeout=30)
    finally:
        subprocess.run(["losetup", "-d", loop], check=False, timeout=30)


@pytest.fixture(params=["disk-full", "read-only"])
def faulty_home(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[Path, Callable[[], object], Callable[[], None] | None]]:
    """(home, make the fault happen, undo it while running, or None: a file system remounted read-only after an
    error needs an fsck and a remount first)."""
    home = tmp_path / "b-home"
    if request.param == "disk-full":
        with small_tmpfs(home):
            yield home, lambda: fill(home), lambda: (home / "filler").unlink()
    else:
        with ext4_remounting_ro(home, tmp_path) as trigger:
            yield home, trigger, None


def test_a_running_call_survives_a_full_or_read_only_home(
    tmp_path: Path, faulty_home: tuple[Path, Callable[[], object], Callable[[], None] | None]
) -> None:
    home, fault, undo = faulty_home
    kind = "disk full" if undo is not None else "read-only"
    clip = long_speech(tmp_path / "speech-long.wav", repeats=3)
    port = reserve_block(1)
    gw = None
    with (
        Baresip(tmp_path, user="bob", play=clip) as bob,
        capture.RawCapture(1024, 65535) as cap,
    ):
        try:
            gw, snap = spawn_gateway(tmp_path, "gw-b", home, port, "--user", f"bob=sip:bob@127.0.0.1:{bob.sip_port}")
            store = home / "users" / "bob"

            # 1. The fault strikes during a call: its media carries on both ways, and it ends normally.
            alice = call(tmp_path, "alice", port[0], clip, 8)
            try:
                wait_until(lambda: "shown as '[" in gw.log(), "the call to be up", CALL_TIMEOUT_S)
                a_ports, g_ports = udp_ports(alice.proc.pid), udp_ports(gw.proc.pid)
                wait_until(lambda: flowing(cap, g_ports, a_ports) > 20, "media to alice", 20)
                fault()
                to_a, to_g = flowing(cap, g_ports, a_ports), flowing(cap, a_ports, g_ports)
                wait_until(
                    lambda: (
                        flowing(cap, g_ports, a_ports) >= to_a + FLOW_PACKETS
                        and flowing(cap, a_ports, g_ports) >= to_g + FLOW_PACKETS
                    ),
                    f"media both ways after the fault ({kind})",
                    20,
                )
                during = finished(alice)
            finally:
                alice.stop()
            assert during["rc"] == 0 and during["state"] == "ended", during
            assert during["security"] == "secure, unverified" and during["frames_refused"] == 0, during

            # 2. A known contact calls again: the call works, the store write that fails is one clear line.
            again = finished(call(tmp_path, "alice", port[0], clip, 3))
            assert again["rc"] == 0 and again["security"] == "secure, unverified", again
            line = f"could not record the call with alice@127.0.0.1 in the contact store: cannot write {store}"
            wait_until(lambda: line in gw.log(), "the store error line", 10)

            # 3. A first contact cannot be pinned: no call (fail closed), the reason names the file, the gateway
            # stays up.
            carol = finished(call(tmp_path, "carol", port[0], clip, 3))
            print(f"{kind}: first contact: rc {carol['rc']}, {carol['state']}, {carol['security']}, {carol['reason']}")
            assert carol["rc"] != 0 and carol["security"] != "secure, unverified", carol
            # ... and at once: a final 503 that says why, not ringing until the caller's own timeout.
            assert carol["reason"].startswith("503") and "contact store: store-unwritable" in carol["reason"], carol
            assert f"cannot write {store / 'contacts.db'}" in gw.log().split("carol@127.0.0.1")[-1], gw.log()[-3000:]
            assert gw.proc.poll() is None, gw.log()

            if undo is not None:
                # 4. Room again: the next first contact is stored, without a restart.
                undo()
                carol = finished(call(tmp_path, "carol", port[0], clip, 3))
                assert carol["rc"] == 0 and carol["security"] == "secure, unverified", carol
                assert {c["aor"] for c in contacts(store)} == {"alice@127.0.0.1", "carol@127.0.0.1"}
            snapshot = stop_with_snapshot(gw, snap)
            print([(c["remote_aor"], c["security"], c["reason"]) for c in snapshot["finished"]])
        finally:
            if gw is not None:
                gw.stop()
            port.release()


def test_a_read_only_or_full_home_at_start_up_is_one_line(tmp_path: Path) -> None:
    """The same faults before the gateway starts: it refuses with one line that names what it cannot write."""
    home = tmp_path / "home"
    argv = voipgw_argv(home, "gateway", "--listen", "127.0.0.1:0", "--user", "bob=sip:bob@127.0.0.1:9")
    with small_tmpfs(home):
        spawn = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_until(lambda: (home / "users" / "bob" / "contacts.db").exists(), "the first start's store", 20)
        finally:
            spawn.terminate()
            spawn.wait(20)
        subprocess.run(["mount", "-o", "remount,ro", str(home)], check=True, timeout=30)
        out = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        print("read-only home:", out.stderr.strip())
        assert out.returncode != 0 and "Traceback" not in out.stderr, out.stderr
        assert out.stderr.startswith(f"voipgw: contact store of bob: cannot write {home}/users/bob/contacts.db: ")
    with small_tmpfs(home):
        fill(home)
        out = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        print("full home:", out.stderr.strip())
        assert out.returncode != 0 and "Traceback" not in out.stderr, out.stderr
        assert out.stderr.strip() == f"voipgw: identity of bob in {home}/users/bob: [Errno 28] No space left on device"
