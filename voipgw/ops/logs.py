"""Structured logging for the gateway: ``text`` or ``json`` (one object per line) on one handler, with a filter
that redacts anything shaped like key material. It formats what it is given; it must never add secrets to a record.
"""

from __future__ import annotations

import enum
import json
import logging
import re
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, TextIO

REDACTED = "[redacted]"
# Field names whose values are secrets whatever they look like.
_SECRET_NAME = re.compile(r"(^|_)(key|keys|secret|password|passwd|passphrase|seed|private|token|psk)(_|$)", re.I)
# 128 bits or more as hex (with at least one letter, so long decimal numbers such as safety numbers stay readable)
# or as base64/base64url: mixed case plus a digit or symbol, or plus many capitals, so that lower-case paths and
# CamelCase error names stay readable while a random 32-byte key escapes less than once in 10^7.
# Hex runs are matched even inside longer words, so "key" + hex glued together still loses the hex.
_HEX = re.compile(r"(?=[0-9a-fA-F]*[a-fA-F])[0-9a-fA-F]{32,}")
_B64 = re.compile(r"(?<![A-Za-z0-9+/_-])[A-Za-z0-9+/_-]{22,}={0,2}(?![A-Za-z0-9+/=_-])")
# Raw bytes of 16 or more are never logged: that is the size of the smallest key or nonce we handle.
_MIN_SECRET_BYTES = 16
# Call-IDs are routing identifiers the operator needs to correlate calls, and often long hex.
_NEVER_REDACTED = frozenset({"call_id"})
_MAX_DEPTH = 4

# Attributes every LogRecord has; everything else on a record came from ``extra=``.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}


class LogFormat(enum.Enum):
    TEXT = "text"
    JSON = "json"


def _looks_b64_key(token: str) -> bool:
    body = token.rstrip("=")
    upper = sum(c.isupper() for c in body)
    if not upper or not any(c.islower() for c in body):
        return False
    return any(c.isdigit() or c in "+/_-" for c in body) or upper >= len(body) // 4


def redact_text(text: str) -> str:
    """``text`` with every hex or base64 run long enough to be a key replaced by ``[redacted]``."""
    # base64 first: a mixed-case token can also be all hex digits, and must lose its "=" padding with the rest.
    text = _B64.sub(lambda m: REDACTED if _looks_b64_key(m.group(0)) else m.group(0), text)
    return _HEX.sub(REDACTED, text)


def redact_value(value: Any, depth: int = 0) -> Any:
    if isinstance(value, bytes | bytearray | memoryview):
        return REDACTED if len(value) >= _MIN_SECRET_BYTES else value
    if isinstance(value, str):
        return redact_text(value)
    if depth >= _MAX_DEPTH:
        return value if isinstance(value, int | float | bool) or value is None else REDACTED
    if isinstance(value, Mapping):
        return {k: (REDACTED if _SECRET_NAME.search(str(k)) else redact_value(v, depth + 1)) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [redact_value(v, depth + 1) for v in value]
    return value


def extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}


class RedactKeyMaterialFilter(logging.Filter):
    """Rewrites each record's extra fields (and its message arguments) so key-shaped values never reach a handler.

    Install it on the handler, not a logger, so it also sees records from every child logger.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        for name, value in extra_fields(record).items():
            if name in _NEVER_REDACTED:
                continue
            setattr(record, name, REDACTED if _SECRET_NAME.search(name) else redact_value(value))
        if record.args:
            if isinstance(record.args, Mapping):
                record.args = {k: redact_value(v) for k, v in record.args.items()}
            else:
                record.args = tuple(redact_value(v) for v in record.args)
        if isinstance(record.msg, str):
            record.msg = redact_text(record.msg)
        return True


def _timestamp(record: logging.LogRecord) -> str:
    return datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, enum.Enum):
        return _jsonable(value.value)
    return str(value)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``ts``, ``level``, ``logger``, ``message``, then the record's extra fields."""

    def format(self, record: logging.LogRecord) -> str:
        obj: dict[str, Any] = {
            "ts": _timestamp(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name, value in extra_fields(record).items():
            if name not in obj:
                obj[name] = _jsonable(value)
        if record.exc_info:
            obj["exc"] = self.formatException(record.exc_info)
        return json.dumps(obj, ensure_ascii=False, allow_nan=False, default=str)


class TextFormatter(logging.Formatter):
    """``TS LEVEL logger: message key=value ...`` for a human at a terminal or journald."""

    def format(self, record: logging.LogRecord) -> str:
        parts = [_timestamp(record), record.levelname, f"{record.name}:", record.getMessage()]
        for name, value in extra_fields(record).items():
            text = str(value)
            # Quote anything with spaces or control characters, so a peer's string cannot forge a log line.
            plain = text and all(c.isprintable() and not c.isspace() for c in text)
            parts.append(f"{name}={text if plain else json.dumps(text)}")
        line = " ".join(parts)
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class _OpsHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Marks the handler we installed, so calling :func:`setup_logging` again replaces it instead of doubling lines."""


def setup_logging(
    fmt: LogFormat | str = LogFormat.TEXT,
    level: int | str = logging.INFO,
    stream: TextIO | None = None,
    replace: bool = True,
) -> logging.Handler:
    """Route every logger through one redacting handler in ``fmt`` on ``stream`` (default stderr); returns it.

    ``replace`` removes the root logger's other handlers (such as the CLI's ``basicConfig`` one): a second,
    unfiltered handler would print every line twice and bypass the redaction.
    """
    try:
        fmt = LogFormat(fmt)
    except ValueError:
        raise ValueError(f"log format: expected 'text' or 'json', got {fmt!r}") from None
    handler = _OpsHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt is LogFormat.JSON else TextFormatter())
    handler.addFilter(RedactKeyMaterialFilter())
    root = logging.getLogger()
    for old in [h for h in root.handlers if replace or isinstance(h, _OpsHandler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    return handler
