"""The log file in ``<home>``: created 0600 on the first line, only in an existing home, moved aside past its size
bound."""

from __future__ import annotations

import logging
from pathlib import Path

from voipgw.cli.main import LOG_FILENAME, MAX_LOG_BYTES, HomeLogHandler


def _record(text: str) -> logging.LogRecord:
    return logging.LogRecord("voipgw.cli", logging.WARNING, __file__, 1, text, None, None)


def test_log_file_is_private_bounded_and_never_creates_the_home(tmp_path: Path) -> None:
    missing = HomeLogHandler(tmp_path / "no-home")
    missing.emit(_record("dropped"))
    assert not (tmp_path / "no-home").exists()
    (tmp_path / LOG_FILENAME).write_bytes(b"x" * (MAX_LOG_BYTES + 1))
    handler = HomeLogHandler(tmp_path)
    try:
        handler.emit(_record("first line"))
    finally:
        handler.close()
    log = tmp_path / LOG_FILENAME
    assert log.read_text().rstrip().endswith("WARNING voipgw.cli: first line") and log.stat().st_size < 200
    assert log.stat().st_mode & 0o777 == 0o600
    assert (tmp_path / f"{LOG_FILENAME}.1").stat().st_size == MAX_LOG_BYTES + 1
