"""The sample array types every audio module shares (one definition, so a codec and a player agree on them).

Types only: no code, no imports beyond numpy.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

Pcm = npt.NDArray[np.int16]
"""Signed 16-bit mono samples (48 kHz on a media stream, the codec's own rate inside a codec)."""
Floats = npt.NDArray[np.float64]
"""Samples as floats while filtering or resampling (scaled as the function that returns them says)."""
