"""Test helper: a sipp UAC scenario that plays the bundled speech as PCMU RTP (from a pcap it writes), for the
tests that push many calls of real speech through gateways. Writes only below the given work directory."""

from __future__ import annotations

from pathlib import Path

from tests.testbed import speech
from tests.testbed.sipp import render_scenario, write_rtp_pcap
from voipgw.audio.g711 import ulaw_encode
from voipgw.audio.pcm import Pcm
from voipgw.audio.wav import read_wav

RATE = 8000
FRAME = 160
"""Samples in one 20 ms PCMU frame."""


def pcmu_speech_scenario(workdir: Path, seconds: float) -> tuple[Pcm, Path]:
    """The first ``seconds`` of the speech at 8 kHz (what a listener should hear back) and the scenario file that
    makes the UAC send it, one PCMU frame every 20 ms."""
    pcm = read_wav(speech.make_variant(workdir / "speech8k.wav", RATE, seconds=seconds), RATE)
    frames = [ulaw_encode(pcm[i : i + FRAME]) for i in range(0, len(pcm) - FRAME + 1, FRAME)]
    pcap = write_rtp_pcap(workdir / "speech-pcmu.pcap", frames, payload_type=0)
    return pcm, render_scenario("uac_pcap_pcmu", workdir / "uac_pcap_pcmu.xml", PCAP=str(pcap))
