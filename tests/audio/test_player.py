"""ArrayPlayer at the end of its array: it stops (None) by default, or goes on with silence and says it finished."""

from __future__ import annotations

import numpy as np

from voipgw.audio.opus import FRAME_SAMPLES
from voipgw.audio.sources import ArrayPlayer


def test_player_ends_or_goes_on_with_silence() -> None:
    clip = np.full(FRAME_SAMPLES + 10, 1000, dtype=np.int16)
    plain, padded = ArrayPlayer(clip), ArrayPlayer(clip, then_silence=True)
    for player in (plain, padded):
        first, second = player.read_frame(), player.read_frame()
        assert first is not None and second is not None
        assert int(first[0]) == 1000 and int(second[9]) == 1000 and int(second[10]) == 0
        assert not player.finished
    assert plain.read_frame() is None and plain.finished
    for _ in range(3):
        frame = padded.read_frame()
        assert frame is not None and len(frame) == FRAME_SAMPLES and not frame.any()
    assert padded.finished
    padded.close()
    assert padded.read_frame() is None  # closed: nothing more
