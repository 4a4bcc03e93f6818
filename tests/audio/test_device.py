"""Sound devices: without one (the norm here) every entry point raises a friendly NoAudioDevice."""

from __future__ import annotations

import subprocess
import sys

import pytest

from voipgw.audio.device import (
    AudioDeviceError,
    Microphone,
    NoAudioDevice,
    Speaker,
    check_audio_devices,
    find_device,
)


@pytest.mark.parametrize("kind", ["input", "output"])
def test_missing_named_device_is_a_typed_friendly_error(kind: str) -> None:
    with pytest.raises(NoAudioDevice) as info:
        find_device(kind, "voipgw-no-such-device")
    err = info.value
    assert isinstance(err, AudioDeviceError) and err.kind == kind
    message = str(err)
    assert "\n" not in message and "--play" in message and "--record" in message


@pytest.mark.parametrize("cls", [Microphone, Speaker])
def test_default_device_opens_or_fails_friendly(cls: type[Microphone] | type[Speaker]) -> None:
    try:
        dev = cls()
    except NoAudioDevice as exc:
        assert "--play" in str(exc)
    else:  # a machine with a sound card: the device must also close cleanly
        dev.close()


def test_check_audio_devices_needs_nothing_when_files_are_used() -> None:
    check_audio_devices(need_input=False, need_output=False)
    with pytest.raises(NoAudioDevice):
        check_audio_devices(need_input=True, need_output=False, device="voipgw-no-such-device")


def test_no_device_message_without_traceback() -> None:
    script = (
        "import sys\n"
        "from voipgw.audio.device import NoAudioDevice, check_audio_devices\n"
        "try:\n"
        "    check_audio_devices(True, True, device='voipgw-no-such-device')\n"
        "except NoAudioDevice as exc:\n"
        "    print(f'voipgw: {exc}', file=sys.stderr)\n"
        "    sys.exit(2)\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.startswith("voipgw: no audio input device found")
