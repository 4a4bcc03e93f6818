"""Self-tests of the test-bed tools that need no SIP peer: port blocks, speech fixtures, audio correlation,
RTP parsing and the loopback capture's plaintext detector (fed by real UDP sockets on 127.0.0.1)."""

from __future__ import annotations

import os
import socket
import struct
import wave
from pathlib import Path

import numpy as np
import opuslib
import pytest

from tests.testbed import audio_check, ports, speech
from tests.testbed.capture import (
    CapturedPacket,
    RawCapture,
    decode_g711,
    encode_g711,
    looks_like_plain_audio,
    parse_rtp,
    wait_for_packets,
)
from tests.testbed.proc import ManagedProcess, TestbedError

FRAME_8K = 160
FRAME_48K = 960


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("clips")
    return {
        "speech8k": speech.make_variant(d / "speech8k.wav", 8000, seconds=3.0),
        "speech48k": speech.make_variant(d / "speech48k.wav", 48000, seconds=3.0),
        "tone8k": speech.make_tone(d / "tone8k.wav", 8000, 3.0),
    }


# --- ports ----------------------------------------------------------------------------------------


def test_port_blocks_are_disjoint_free_and_locked() -> None:
    with ports.reserve_block(30) as a, ports.reserve_block(30) as b:
        assert set(range(a.first, a.last + 1)).isdisjoint(range(b.first, b.last + 1))
        assert all(ports.port_is_free(p) for p in (a[0], a[29], b[0]))
        # The slot lock is held: nobody (not even this process, through a new descriptor) can take it.
        slot = (a.first - ports.POOL_FIRST) // ports.SLOT_SIZE
        assert ports._lock_slot(slot) is None
        assert a.span(10, 20) == (a.first + 10, a.first + 29)
        with pytest.raises(IndexError):
            a.span(10, 21)
    fd = ports._lock_slot(slot)
    assert fd is not None
    os.close(fd)


def test_port_is_bound_sees_a_bound_udp_socket() -> None:
    with ports.reserve_block(1) as block:
        assert not ports.port_is_bound(block[0], "udp")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", block[0]))
            assert ports.port_is_bound(block[0], "udp")
            assert not ports.port_is_free(block[0])


def test_a_dying_child_fails_the_wait_with_its_log_and_a_deaf_one_is_killed(tmp_path: Path) -> None:
    dying = ManagedProcess(["sh", "-c", "echo boom-from-child; exit 3"], name="dying", log_dir=tmp_path)
    with pytest.raises(TestbedError, match="boom-from-child"):
        dying.wait_until(lambda: False, 10.0, "something that never happens")
    assert dying.stop() == 3
    deaf = ManagedProcess(["sh", "-c", "trap '' TERM; echo up; sleep 30"], name="deaf", log_dir=tmp_path)
    deaf.wait_until(lambda: "up" in deaf.log_text(), 10.0, "start")
    assert deaf.stop(grace=0.2) == -9  # SIGTERM ignored, so SIGKILL
    assert not deaf.alive


# --- speech fixtures and correlation --------------------------------------------------------------


def test_bundled_speech_is_small_16k_mono_and_6_to_8_seconds() -> None:
    path = speech.speech_path()
    assert path.stat().st_size < 300_000
    with wave.open(str(path), "rb") as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (16000, 1, 2)
        assert 6.0 <= w.getnframes() / w.getframerate() <= 8.0


def test_rate_variants_correlate_with_the_original_and_a_tone_does_not(clips: dict[str, Path]) -> None:
    _, rate = audio_check.read_wav(speech.speech_path())
    for name in ("speech8k", "speech48k"):
        sig, sig_rate = audio_check.read_wav(clips[name])
        assert abs(len(sig) / sig_rate - 3.0) < 0.01
        g, w = audio_check.compare_files(speech.speech_path(), clips[name])
        assert g >= 0.99 and w >= 0.99, (name, g, w)
    g, w = audio_check.compare_files(clips["speech8k"], clips["tone8k"])
    assert g < 0.2 and w < 0.2
    assert rate == 16000


def test_correlation_survives_delay_gain_and_noise_but_not_noise_alone(clips: dict[str, Path]) -> None:
    ref, rate = audio_check.read_wav(clips["speech8k"])
    rng = np.random.default_rng(7)
    delayed = np.concatenate([np.zeros(1234), 0.5 * ref, np.zeros(400)])
    noisy = delayed + rng.normal(0.0, 0.005, len(delayed))
    assert audio_check.correlation(ref, noisy) >= 0.95
    assert audio_check.windowed_correlation(ref, noisy, rate) >= 0.95
    noise = rng.normal(0.0, 0.1, len(ref))
    assert audio_check.correlation(ref, noise) < 0.1
    assert audio_check.windowed_correlation(ref, noise, rate) < 0.2


# --- RTP parsing ----------------------------------------------------------------------------------


def _rtp(pt: int, seq: int, ssrc: int, payload: bytes, *, csrc: int = 0, ext: bytes = b"", pad: int = 0) -> bytes:
    b0 = 0x80 | csrc | (0x10 if ext else 0) | (0x20 if pad else 0)
    head = struct.pack("!BBHII", b0, pt, seq, seq * 160, ssrc) + b"\x00\x00\x00\x01" * csrc
    if ext:
        head += struct.pack("!HH", 0xBEDE, len(ext) // 4) + ext
    tail = (b"\x00" * (pad - 1) + bytes([pad])) if pad else b""
    return head + payload + tail


def test_parse_rtp_strips_csrc_extension_and_padding_and_rejects_rtcp() -> None:
    pkt = parse_rtp(_rtp(0, 7, 0x1234, b"hello", csrc=2, ext=b"abcd", pad=3))
    assert pkt is not None
    assert (pkt.payload_type, pkt.seq, pkt.ssrc, pkt.payload) == (0, 7, 0x1234, b"hello")
    rtcp_sr = struct.pack("!BBHI", 0x80, 200, 6, 0x1234) + b"\x00" * 20
    assert parse_rtp(rtcp_sr) is None
    assert parse_rtp(b"\x00\x01\x00\x00" + b"\x00" * 16) is None  # STUN-like, version 0
    assert parse_rtp(b"\x80") is None


def test_g711_round_trip_is_close() -> None:
    x = 0.5 * np.sin(np.arange(800) / 10.0)
    for law in ("PCMU", "PCMA"):
        assert np.max(np.abs(decode_g711(encode_g711(x, law), law) - x)) < 0.02


# --- capture + plaintext detection on real loopback sockets ---------------------------------------


def _send_stream(dst_port: int, payloads: list[bytes], pt: int, ssrc: int) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
        tx.bind(("127.0.0.1", 0))
        for seq, payload in enumerate(payloads):
            tx.sendto(_rtp(pt, seq, ssrc, payload), ("127.0.0.1", dst_port))
        return int(tx.getsockname()[1])


def _opus_packets(path: Path) -> list[bytes]:
    samples, rate = audio_check.read_wav(path)
    assert rate == 48000
    pcm = (np.clip(samples, -1.0, 1.0) * 32767).astype("<i2")
    enc = opuslib.Encoder(48000, 1, "voip")
    return [enc.encode(pcm[i : i + FRAME_48K].tobytes(), FRAME_48K) for i in range(0, len(pcm) - FRAME_48K, FRAME_48K)]


def test_raw_capture_detects_plain_pcmu_and_opus_and_not_ciphertext(clips: dict[str, Path]) -> None:
    ref8, _ = audio_check.read_wav(clips["speech8k"])
    pcmu = encode_g711(ref8, "PCMU")
    pcmu_frames = [pcmu[i : i + FRAME_8K] for i in range(0, len(pcmu), FRAME_8K)]
    opus_frames = _opus_packets(clips["speech48k"])
    rng = np.random.default_rng(1)
    # "Ciphertext": the same opus frames XORed with a keystream, sizes unchanged.
    sealed = [bytes(np.frombuffer(f, np.uint8) ^ rng.integers(0, 256, len(f), np.uint8)) for f in opus_frames]
    with ports.reserve_block(3) as block, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx:
        rx.bind(("127.0.0.1", block[0]))  # a real receiver, so nothing bounces as ICMP
        with RawCapture(block[0], block[0]) as cap:
            _send_stream(block[0], pcmu_frames, 0, 1)
            _send_stream(block[0], opus_frames, 111, 2)
            _send_stream(block[0], sealed, 111, 3)
            total = len(pcmu_frames) + len(opus_frames) + len(sealed)
            assert wait_for_packets(cap, total, timeout=5.0)
        packets = cap.stop()
    assert len(packets) == total  # each datagram once, although lo shows it twice to AF_PACKET
    by_ssrc = {s.ssrc: s for s in looks_like_plain_audio(packets, clips["speech8k"]).streams}
    assert by_ssrc[1].codec == "PCMU" and by_ssrc[1].correlation >= 0.95
    assert by_ssrc[2].codec == "opus" and by_ssrc[2].correlation >= 0.9
    assert by_ssrc[3].correlation < 0.3 and by_ssrc[3].windowed_correlation < 0.3
    only_sealed = [p for p in packets if (r := p.rtp()) is not None and r.ssrc == 3]
    assert looks_like_plain_audio(only_sealed, clips["speech8k"]).correlation < 0.3
    assert looks_like_plain_audio(only_sealed, clips["speech8k"], codec="PCMU").correlation < 0.3


def test_plaintext_verdict_is_zero_without_rtp() -> None:
    junk = [CapturedPacket(1000, 2000, b"\x00" * 40) for _ in range(20)]
    verdict = looks_like_plain_audio(junk, speech.speech_path())
    assert verdict.correlation == 0.0 and verdict.streams == ()
