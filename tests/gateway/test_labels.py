"""The ringing label scheme (voipgw.gateway.labels): one table of what each call state shows, and properties over
any name the far side or the PBX could choose."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from voipgw.call import Security
from voipgw.gateway.labels import (
    DISPLAY_WIDTH,
    MIN_NAME_SHOWN,
    TAGS,
    LabelKind,
    choose_kind,
    clean_name,
    identity_headers,
    label_text,
    shown_for,
)
from voipgw.gateway.statuses import outside_failure_warning
from voipgw.trust import TrustState

S, T, K = Security, TrustState, LabelKind

TABLE = [
    # security, trust state, SAS, AOR -> kind, display text
    (S.SECURE_VERIFIED, T.KNOWN, "4xj9", "alice@example.org", K.VERIFIED, "[SAFE 4xj9] alice"),
    (S.SECURE_UNVERIFIED, T.KNOWN, "4xj9", "alice@example.org", K.KNOWN, "[E2E 4xj9] alice"),
    (S.SECURE_UNVERIFIED, T.FIRST_CONTACT, "4xj9", "alice@example.org", K.FIRST_CONTACT, "[NEW 4xj9] alice"),
    (S.SECURE_UNVERIFIED, None, "4xj9", "alice@example.org", K.FIRST_CONTACT, "[NEW 4xj9] alice"),
    (S.KEY_CHANGED, T.KEY_CHANGED, "4xj9", "alice@example.org", K.KEY_CHANGED, "[!KEY 4xj9] alice"),
    (S.KEY_CHANGED, T.KEY_CHANGED, None, "alice@example.org", K.KEY_CHANGED, "[!KEY] alice"),
    (S.NOT_SECURE, None, None, "dave@example.org", K.NOT_SECURE, "[INSECURE] dave"),
    (S.NOT_SECURE, None, "4xj9", "dave@example.org", K.NOT_SECURE, "[INSECURE] dave"),
    (S.PENDING, None, None, "dave@example.org", K.NOT_SECURE, "[INSECURE] dave"),
    (S.SECURE_UNVERIFIED, T.KNOWN, None, "alice@example.org", K.UNVERIFIABLE, "[NO SAS] alice"),
    (S.SECURE_VERIFIED, T.KNOWN, None, "alice@example.org", K.UNVERIFIABLE, "[NO SAS] alice"),
    (S.SECURE_UNVERIFIED, T.FIRST_CONTACT, "NOT!", "alice@example.org", K.UNVERIFIABLE, "[NO SAS] alice"),
    (S.SECURE_UNVERIFIED, T.KNOWN, "4xj9", "[E2E 4xj9]@example.org", K.KNOWN, "[E2E 4xj9] E2E 4xj9"),
    (S.SECURE_UNVERIFIED, T.KNOWN, "4xj9", "\u202e\u200b[]@example.org", K.KNOWN, "[E2E 4xj9] unknown"),
    (S.NOT_SECURE, None, None, "example.org", K.NOT_SECURE, "[INSECURE] example.org"),
]


@pytest.mark.parametrize(("security", "trust", "sas", "aor", "kind", "text"), TABLE)
def test_label_table(security: Security, trust: TrustState | None, sas: str | None, aor: str, kind: LabelKind,
                     text: str) -> None:  # fmt: skip
    shown = shown_for(security, trust, sas, aor)
    assert (shown.kind, shown.text) == (kind, text)
    assert shown.text.startswith(shown.label)


def test_every_label_is_distinct_and_leaves_room_for_a_name_on_a_16_character_display() -> None:
    labels = {kind: label_text(kind, "4xj9") for kind in LabelKind}
    assert len(set(labels.values())) == len(LabelKind)
    assert len({TAGS[k] for k in LabelKind}) == len(LabelKind)  # distinct without the SAS too
    for kind, label in labels.items():
        assert len(label) + 1 + MIN_NAME_SHOWN <= DISPLAY_WIDTH, (kind, label)
    assert label_text(LabelKind.NOT_SECURE, "4xj9") == "[INSECURE]"  # the plain call has no SAS to show
    assert "E2E" not in label_text(LabelKind.UNVERIFIABLE, None)  # never plain E2E without a SAS


def test_contact_name_comes_first_and_is_cleaned_too() -> None:
    shown = shown_for(S.SECURE_UNVERIFIED, T.KNOWN, "4xj9", "a7@example.org", contact_name="Alice [E2E 4XJ9]  \x1b")
    assert shown.text == "[E2E 4xj9] Alice E2E 4XJ9"
    assert shown_for(S.SECURE_UNVERIFIED, T.KNOWN, "4xj9", "a7@example.org", contact_name="  ").text == "[E2E 4xj9] a7"


@pytest.mark.parametrize(
    ("security", "trust", "sas", "text"),
    [
        (S.SECURE_VERIFIED, T.KNOWN, "4xj9", "[SAFE 4xj9] Alice Smith"),
        (S.SECURE_UNVERIFIED, T.KNOWN, "4xj9", "[E2E 4xj9] Alice Smith"),
        (S.KEY_CHANGED, T.KEY_CHANGED, "4xj9", "[!KEY 4xj9] Alice Smith"),
        (S.SECURE_UNVERIFIED, T.KNOWN, None, "[NO SAS] Alice Smith"),
        (S.NOT_SECURE, None, None, "[INSECURE] a7"),  # in the clear nothing signed the AOR: never the local name
        (S.PENDING, None, None, "[INSECURE] a7"),
        (S.REFUSED, None, None, "[INSECURE] a7"),
    ],
)
def test_the_local_name_follows_the_label_only_when_the_aor_was_signed(
    security: Security, trust: TrustState | None, sas: str | None, text: str
) -> None:
    assert shown_for(security, trust, sas, "a7@example.org", contact_name="Alice Smith").text == text


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("Alice [E2E 4XJ9]" + " " * 40, "Alice E2E 4XJ9"),
        ("Alice\t\r\n[E2E\x00 4XJ9]", "Alice E2E 4XJ9"),
        ("\u202eevil\u202c \u2066x\u2069", "evil x"),  # bidi overrides and isolates
        ("\uff3bE2E 4xj9\uff3d Bob", "E2E 4xj9 Bob"),  # full-width brackets
        ("\u27e6E2E\u27e7 \u3010NEW\u3011", "E2E NEW"),  # other scripts' brackets
        ('a"b\\c<d>e`f{g}(h)', "abcdefgh"),
        ("x" * 100, "x" * 32),
        ("", ""),
        (None, ""),
    ],
)
def test_clean_name(raw: str | None, clean: str) -> None:
    assert clean_name(raw) == clean


def test_identity_headers_carry_the_label_for_desk_phones() -> None:
    pai, rpid = identity_headers("[NEW 4xj9] bob", "bob@example.org", "called")
    assert pai == ("P-Asserted-Identity", '"[NEW 4xj9] bob" <sip:bob@example.org>')
    assert rpid == ("Remote-Party-ID", '"[NEW 4xj9] bob" <sip:bob@example.org>;party=called;screen=yes;privacy=off')
    assert identity_headers("[INSECURE] x", 'x>@h"\r\n', "calling") == ()


TAG_RE = re.compile(r"\[(" + "|".join(re.escape(t) for t in TAGS.values()) + r")[^\]]*\]")


@settings(max_examples=400, deadline=None)
@given(
    security=st.sampled_from(list(Security)),
    trust=st.sampled_from([None, *TrustState]),
    sas=st.one_of(st.none(), st.text(max_size=6), st.sampled_from(["4xj9", "ab12"])),
    user=st.text(),
    contact=st.one_of(st.none(), st.text()),
)
def test_no_name_can_show_another_label(
    security: Security, trust: TrustState | None, sas: str | None, user: str, contact: str | None
) -> None:
    """Whatever the names (the signed AOR's user part, the contact name; the From display name is never used),
    the text starts with the chosen label and holds no other label, nor any bracket after it."""
    shown = shown_for(security, trust, sas, f"{user}@example.org", contact_name=contact)
    assert shown.kind is choose_kind(security, trust, sas)
    assert shown.text.startswith(shown.label + " ")
    rest = shown.text[len(shown.label) :]
    assert not TAG_RE.search(rest) and not set(rest) & set('[]"<>')
    assert [m.group(0) for m in TAG_RE.finditer(shown.text)] == [shown.label]
    assert all(ch.isprintable() for ch in shown.text)


@given(st.text())
def test_clean_name_is_idempotent_and_printable(text: str) -> None:
    once = clean_name(text)
    assert clean_name(once) == once and all(ch.isprintable() for ch in once)


@pytest.mark.parametrize(
    ("reason", "says_no_voipgw"),
    [
        ("488 Not Acceptable Here", True),
        ("606 Not Acceptable", True),
        ("415 Unsupported Media Type", True),
        ("488 Not Acceptable Here (voipgw: bad-signature: the offer's signature does not verify)", False),
        ("486 Busy Here", False),
        ("404 Not Found", False),
        ("the peer answered without the voipgw key exchange; hung up (policy: require)", False),
    ],
)
def test_a_refusal_by_a_far_end_without_voipgw_says_so(reason: str, says_no_voipgw: bool) -> None:
    warning = outside_failure_warning(reason)
    assert warning.startswith(f"voipgw gateway: outside leg: {reason}")
    assert ("the far end has no voipgw" in warning) is says_no_voipgw
