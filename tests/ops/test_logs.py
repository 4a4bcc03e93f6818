"""Structured gateway logs: JSON lines with extra fields, readable text, and no key material in either."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import logging
import os
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from voipgw.ops.logs import REDACTED, LogFormat, redact_text, setup_logging

KEY = os.urandom(32)


def ours(output: str, logger: str) -> list[str]:
    """The lines written by ``logger``: the root handler also receives whatever else the process logs meanwhile
    (asyncio reporting a task collected from an earlier test, for one), which these tests must not count."""
    return [line for line in output.splitlines() if f'"logger": "{logger}"' in line or f" {logger}: " in line]


@pytest.fixture
def capture() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    stream = io.StringIO()
    try:
        yield stream
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])


def test_json_lines_carry_ts_level_logger_message_and_extras(
    capture: io.StringIO,
) -> None:
    stream = capture
    setup_logging("json", stream=stream)
    log = logging.getLogger("voipgw.gateway")
    log.info(
        "call %s secure", "c1", extra={"call_id": "c1@gw", "sas": "4XJ9", "frames": 12, "security": LogFormat.JSON}
    )
    log.debug("not shown at INFO")
    try:
        raise ValueError("bad\nthing")
    except ValueError:
        log.exception("failed", extra={"call_id": "c2"})
    lines = ours(stream.getvalue(), "voipgw.gateway")
    assert len(lines) == 2, "one JSON object per line, even with a multi-line traceback"
    first, second = (json.loads(line) for line in lines)
    assert first["level"] == "INFO" and first["logger"] == "voipgw.gateway" and first["message"] == "call c1 secure"
    assert first["ts"].endswith("Z") and first["ts"][10] == "T"
    assert first["call_id"] == "c1@gw" and first["sas"] == "4XJ9" and first["frames"] == 12
    assert first["security"] == "json"
    assert second["level"] == "ERROR" and "ValueError: bad" in second["exc"] and second["call_id"] == "c2"


def test_text_format_and_setup_is_idempotent(capture: io.StringIO) -> None:
    stream = capture
    setup_logging(LogFormat.TEXT, stream=io.StringIO())
    setup_logging(LogFormat.TEXT, stream=stream)
    logging.getLogger("voipgw.x").warning("hello", extra={"call_id": "c1", "peer": "Eve\nFAKE LINE", "e": ""})
    out = "\n".join(ours(stream.getvalue(), "voipgw.x")) + "\n"
    assert out.count("\n") == 1, "a second setup replaces the handler, and a peer's newline is quoted"
    assert " WARNING voipgw.x: hello call_id=c1 " in out
    assert 'peer="Eve\\nFAKE LINE"' in out and 'e=""' in out
    with pytest.raises(ValueError, match="expected 'text' or 'json'"):
        setup_logging("xml", stream=stream)


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_key_material_never_reaches_the_output(capture: io.StringIO, fmt: str) -> None:
    stream = capture
    setup_logging(fmt, stream=stream)
    secrets = [KEY.hex(), KEY.hex().upper(), base64.b64encode(KEY).decode(), base64.urlsafe_b64encode(KEY).decode()]
    log = logging.getLogger("voipgw.gateway")
    log.info(
        "rekey",
        extra={
            "call_id": "a" * 40,  # Call-IDs are kept: the operator correlates calls with them
            "root": KEY.hex(),
            "raw": KEY,
            "nested": {"list": [base64.b64encode(KEY).decode()], "peer": "bob@pbx.test"},
            "password": "hunter2",
            "identity_key": "short",
            "note": f"chain {base64.urlsafe_b64encode(KEY).decode()} stepped",
            "safety_number": "12345 67890 12345 67890 12345 67890 12345 67890 12345 67890 12345 67890",
            "digits": "1" * 60,
            "path": "/var/lib/voipgw/identities/alice_at_pbx_example_org.key",
        },
    )
    log.info("key %s and %s", KEY.hex(), KEY.hex().upper())
    out = stream.getvalue()
    for secret in [*secrets, "hunter2", "short", repr(KEY)]:
        assert secret not in out
    assert out.count(REDACTED) >= 8
    for kept in (
        "a" * 40,
        "bob@pbx.test",
        "12345 67890",
        "1" * 60,
        "/var/lib/voipgw/identities/alice_at_pbx_example_org.key",
    ):
        assert kept in out
    if fmt == "json":
        first, second = (json.loads(line) for line in ours(out, "voipgw.gateway"))
        assert first["root"] == REDACTED and first["raw"] == REDACTED and first["password"] == REDACTED
        assert first["nested"] == {"list": [REDACTED], "peer": "bob@pbx.test"}
        assert first["note"] == f"chain {REDACTED} stepped"
        assert second["message"] == f"key {REDACTED} and {REDACTED}"


def test_redact_text_shapes() -> None:
    assert redact_text("deadbeef" * 4) == REDACTED  # 128 bits of hex
    assert redact_text("deadbeef" * 3) == "deadbeef" * 3  # shorter than any key we hold
    assert redact_text("x=" + "AbCd0123" * 4 + "==") == f"x={REDACTED}"
    assert redact_text("sip:alice@example.org;transport=udp") == "sip:alice@example.org;transport=udp"
    assert redact_text("Alice [E2E 4XJ9]") == "Alice [E2E 4XJ9]"
    assert redact_text("reason=HandshakeSignatureInvalid") == "reason=HandshakeSignatureInvalid"
    assert redact_text("/var/lib/voipgw/identities/alice_at_pbx") == "/var/lib/voipgw/identities/alice_at_pbx"


def test_hex_glued_to_a_word_is_still_redacted() -> None:
    assert redact_text("xkey" + KEY.hex() + "zz") == f"xkey{REDACTED}zz"


@settings(max_examples=200, deadline=None, derandomize=True)
@given(
    seed=st.binary(max_size=16),
    size=st.sampled_from([32, 48, 64]),
    encoding=st.sampled_from(["hex", "HEX", "b64", "b64url"]),
    before=st.text(st.characters(codec="ascii"), max_size=20),
    after=st.text(st.characters(codec="ascii"), max_size=20),
)
def test_property_encoded_keys_are_redacted(seed: bytes, size: int, encoding: str, before: str, after: str) -> None:
    # Keys are uniformly random: derive them from the seed rather than let hypothesis shrink to b"\0" * 32.
    key = hashlib.shake_256(seed).digest(size)
    encoded = {
        "hex": key.hex(),
        "HEX": key.hex().upper(),
        "b64": base64.b64encode(key).decode(),
        "b64url": base64.urlsafe_b64encode(key).decode().rstrip("="),
    }[encoding]
    out = redact_text(f"{before} {encoded} {after}")
    assert encoded not in out
    # No 16-byte window of the key survives either.
    assert all(encoded[i : i + 32] not in out for i in range(0, len(encoded) - 32))


def test_setup_replaces_other_root_handlers(capture: io.StringIO) -> None:
    stream = capture
    plain = io.StringIO()
    logging.getLogger().addHandler(logging.StreamHandler(plain))
    setup_logging("json", stream=stream)
    logging.getLogger("voipgw.t").warning("once", extra={"secret": "hunter2"})
    assert plain.getvalue() == "", "an unfiltered handler would bypass the redaction"
    assert json.loads(ours(stream.getvalue(), "voipgw.t")[0])["secret"] == REDACTED
    kept = io.StringIO()
    logging.getLogger().addHandler(logging.StreamHandler(kept))
    setup_logging("json", stream=stream, replace=False)
    logging.getLogger("voipgw.t").warning("twice")
    assert "twice" in kept.getvalue()
