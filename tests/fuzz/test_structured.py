"""Structure-aware fuzzing where random bytes rarely get deep: key announcements, configs, contacts, control.

Each property states what the parser owes its caller: a typed rejection with a message, or a value that the
rest of the program can use (a config that passes its own validation, a document that imports).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from ratchet.errors import FrameError, UnknownEpoch
from ratchet.frame import NO_PEER_EPOCH, SAS_REVEAL_LEN, TLV_SAS_REVEAL
from tests.fuzz.targets import _contacts_doc, _pair, announcement_body, control, key_announcement
from tests.support.handshake_fixtures import T0
from voipgw.config import ConfigError as PhoneConfigError
from voipgw.config import phone_config_from_mapping
from voipgw.ops.config import ConfigError as GatewayConfigError
from voipgw.ops.config import gateway_config_from_mapping
from voipgw.store.contacts import ContactStore
from voipgw.store.export import MalformedExport, export_document, parse_document

pytestmark = pytest.mark.hardening

EXAMPLES = int(os.environ.get("VOIPGW_FUZZ_EXAMPLES", "150"))
"""Per property; make fuzz raises it for a long run."""
LOW_ORDER_X25519 = [
    bytes(32),
    (1).to_bytes(32, "little"),
    bytes.fromhex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800"),
    bytes.fromhex("5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157"),
    (2**255 - 19 - 1).to_bytes(32, "little"),
    (2**255 - 19).to_bytes(32, "little"),
    b"\xff" * 32,
]
U16 = st.one_of(st.sampled_from([0, 1, 2, 7, 8, 9, NO_PEER_EPOCH]), st.integers(0, 0xFFFF))
U32 = st.one_of(st.sampled_from([0, 1, 2, 3, 50, 2**31, 2**32 - 1]), st.integers(0, 2**32 - 1))
PUBLIC = st.one_of(st.sampled_from(LOW_ORDER_X25519), st.binary(min_size=32, max_size=32))
TLV = st.one_of(
    st.builds(announcement_body, U16, U16, U32, PUBLIC),
    st.builds(lambda v: bytes([TLV_SAS_REVEAL, SAS_REVEAL_LEN]) + v, st.binary(min_size=16, max_size=16)),
    st.builds(lambda t, v: bytes([t, len(v)]) + v, st.integers(0, 255), st.binary(max_size=40)),
)


@settings(max_examples=EXAMPLES, deadline=None)
@given(st.lists(TLV, min_size=1, max_size=5).map(b"".join))
def test_authenticated_key_announcements_of_any_shape_are_refused_or_applied_never_crash(body: bytes) -> None:
    """A keyed but hostile peer announces whatever it likes (low-order keys, epoch jumps, odd counters)."""
    key_announcement(body)


def test_unauthenticated_next_epoch_frames_cost_no_dh_at_all() -> None:
    """Frames claiming the next epoch with an announcement-sized body: no authenticated announcement, no chain, so
    each is refused as unknown-epoch before any key work, and the genuine stream goes on."""
    tx, rx = _pair(b"flood")
    rx.open(tx.seal(b"\x00" * 40, T0), T0)
    flood = 500
    for i in range(flood):
        block = announcement_body(1, 0, 1 + i, bytes([i % 251 + 1]) * 32)
        header = ((1 << 28) | ((1 + i) << 14)).to_bytes(4, "big")
        try:
            rx.open(header + bytes([len(block)]) + block + b"\x55" * 50, T0 + 0.5)
        except FrameError:
            pass
    refused = rx.stats.refused
    assert refused == {UnknownEpoch.reason: flood}
    assert rx.opener.dh_computations == 0
    assert rx.open(tx.seal(b"\x01" * 40, T0 + 0.52), T0 + 0.52) == b"\x01" * 40


# --- configuration mappings ------------------------------------------------------------------------------------

SCALARS = st.one_of(
    st.integers(-(2**63), 2**63 - 1),
    st.sampled_from([0, 1, -1, 20, 5060, 65535, 65536, 2**31]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.text(max_size=30),
    st.sampled_from(["require", "opportunistic", "x25519", "127.0.0.1:5060", "[::1]:5", "a@b", "", "text", "json"]),
)
TOML_VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner))
PHONE_KEYS = [
    "aor",
    "display_name",
    "listen_host",
    "listen_port",
    "rtp_host",
    "policy",
    "registrar",
    "proxy",
    "username",
    "password",
    "register_expires",
    "no_answer_timeout_s",
    "suites",
    "max_skew_s",
    "interval_ms",
    "frames_per_key",
    "per_frame_keys",
    "dh_interval_s",
    "media_max_skew_ms",
    "bind_call_id",
    "accept_any_callee",
    "key_change_policy",
    "e2e",
    "unknown_key",
]


def _finite_floats_only(config: Any) -> None:
    for name in ("max_skew_s", "no_answer_timeout_s", "dh_interval_s"):
        value = getattr(config, name)
        assert math.isfinite(value) and value >= 0, f"{name}={value} accepted"


@pytest.mark.integration  # takes seconds
@settings(max_examples=EXAMPLES * 2, deadline=None)
@given(st.dictionaries(st.sampled_from(PHONE_KEYS), TOML_VALUES, max_size=8))
@example({"max_skew_s": math.nan})  # TOML has nan and inf: found by this test (freshness check disabled)
@example({"dh_interval_s": math.nan})  # (in-call DH steps silently off)
@example({"no_answer_timeout_s": math.inf})
def test_phone_config_mapping_is_valid_or_a_config_error(data: dict[str, Any]) -> None:
    data.setdefault("aor", "alice@example.org")
    try:
        config = phone_config_from_mapping(data)
    except PhoneConfigError as exc:
        assert str(exc)
        return
    _finite_floats_only(config)
    assert config.handshake is not None  # a config that loads must also build its protocol objects
    assert config.media is not None


GATEWAY_BASE: dict[str, Any] = {
    "outside": {"registrar": "127.0.0.1:5060"},
    "users": {"alice": {"outside_aor": "alice@pbx.example.org", "password": "x"}},
}
GATEWAY_PATHS = [
    ("gateway", "policy"),
    ("gateway", "log_format"),
    ("gateway", "control_socket"),
    ("inside", "listen"),
    ("inside", "auth"),
    ("inside", "realm"),
    ("inside", "rtp_host"),
    ("outside", "registrar"),
    ("outside", "proxy"),
    ("outside", "listen"),
    ("outside", "register_expires"),
    ("outside", "identity_dir"),
    ("outside", "bind_call_id"),
    ("metrics", "enabled"),
    ("metrics", "address"),
    ("users", "alice"),
    ("users", "b@d"),
    ("destinations", None),
    ("gateway", None),
]


@pytest.mark.integration  # takes seconds
@settings(max_examples=EXAMPLES * 2, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(GATEWAY_PATHS), TOML_VALUES), max_size=5))
def test_gateway_config_mapping_is_valid_or_a_config_error(edits: list[tuple[tuple[str, str | None], Any]]) -> None:
    data: dict[str, Any] = json.loads(json.dumps(GATEWAY_BASE))
    for (table, key), value in edits:
        if key is None:
            data[table] = value
        else:
            if not isinstance(data.get(table), dict):
                data[table] = {}
            data[table][key] = value
    try:
        gateway_config_from_mapping(data, Path("/tmp"))
    except GatewayConfigError as exc:
        assert str(exc)


# --- contacts import -------------------------------------------------------------------------------------------

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=70),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner, max_size=3),
    max_leaves=10,
)
VALID_DOC = json.loads(_contacts_doc())


def _paths(obj: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out += _paths(v, (*prefix, i))
    return out


DOC_PATHS = _paths(VALID_DOC)[1:]


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.sampled_from(DOC_PATHS), JSON_VALUES | st.just(None)), min_size=1, max_size=3))
def test_contacts_documents_with_any_field_replaced_are_refused_or_import(edits: list[tuple[Any, Any]]) -> None:
    doc = json.loads(json.dumps(VALID_DOC))
    for path, value in edits:
        node = doc
        try:
            for step in path[:-1]:
                node = node[step]
            node[path[-1]] = value
        except (KeyError, IndexError, TypeError):
            continue
    try:
        records = parse_document(doc)
    except MalformedExport as exc:
        assert str(exc)
        return
    with tempfile.TemporaryDirectory() as home, ContactStore(Path(home)) as store:
        added, merged, conflicts = store.import_contacts(records, skip_conflicts=False)
        assert (added, merged, conflicts) == (len(records), 0, [])
        again = parse_document(json.loads(json.dumps(export_document(store, now=T0))))
        assert [(c.aor, c.name) for c, _ in again] == [(c.aor, c.name) for c, _ in records]


# --- control socket --------------------------------------------------------------------------------------------


@settings(max_examples=EXAMPLES, deadline=None)
@given(JSON_VALUES | st.dictionaries(st.sampled_from(["cmd", "args", "CMD"]), JSON_VALUES, max_size=3))
def test_control_requests_of_any_json_shape_get_one_json_line(request: Any) -> None:
    control(json.dumps(request).encode())
