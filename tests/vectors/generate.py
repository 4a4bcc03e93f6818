"""``make vectors`` / ``python -m tests.vectors.generate``: rewrite every committed test-vector file."""

from __future__ import annotations

import sys

from tests.vectors import gen_dtmf, gen_frames, gen_handshake, gen_inband, gen_pq


def main() -> int:
    gen_handshake.write()
    gen_frames.main()
    gen_dtmf.main()
    gen_inband.main()  # after gen_handshake: it chunks handshake.json's offers and answers
    gen_pq.main()
    return 0


if __name__ == "__main__":
    sys.exit(main())
