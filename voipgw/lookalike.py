"""Look-alike AORs: is a new caller's address a confusable variant of a contact the user already knows (a case
variant, or Unicode homoglyphs such as Cyrillic "а" for Latin "a", "1" or "I" for "l")?

A first contact whose AOR looks like a known (or verified) one is how an impostor borrows trust the user gave
somebody else: it gets a loud warning instead of a quiet "first contact". The comparison is on *skeletons* in the
spirit of Unicode TR39 §4: NFKC, then each character mapped to the smallest (case-folded) ASCII character it is
confusable with, per the Unicode confusables data shipped by ``confusable_homoglyphs`` (a maintained package with
the data and its updater; the standard library has none). Two AORs are look-alikes when they differ but share a
skeleton, before or after case folding. Multi-character confusables ("rn" for "m") are not mapped: TR39's full
table is not in that package. Pure functions; the data is read once.
"""

from __future__ import annotations

import functools
import unicodedata
from collections.abc import Iterable

from confusable_homoglyphs import confusables


@functools.lru_cache(maxsize=4096)
def _ascii_glyphs(ch: str) -> frozenset[str]:
    """The case-folded single ASCII characters ``ch`` (in any case) is listed as confusable with, and itself."""
    found = {ch.casefold()} if len(ch.casefold()) == 1 else set()
    for form in {ch, ch.casefold(), ch.lower(), ch.upper()}:
        if len(form) != 1:
            continue
        for entry in confusables.is_confusable(form, greedy=True, preferred_aliases=[]) or ():
            for glyph in entry["homoglyphs"]:
                c = glyph["c"]
                if len(c) == 1 and c.isascii() and c.isprintable():
                    found.add(c.casefold())
    return frozenset(found)


@functools.lru_cache(maxsize=4096)
def _prototype(ch: str) -> str:
    """The smallest ASCII character reachable from ``ch`` through the confusables data (the data's classes are
    not closed: Cyrillic "о" lists "o", "o" lists "0"), else ``ch`` case-folded."""
    seen: set[str] = set()
    frontier = set(_ascii_glyphs(ch))
    while frontier and len(seen) < 32:  # the classes are small; bounded whatever the data says
        c = frontier.pop()
        if c in seen:
            continue
        seen.add(c)
        if c.isascii():
            frontier |= _ascii_glyphs(c) - seen
    ascii_ones = [c for c in seen if c.isascii()]
    return min(ascii_ones) if ascii_ones else ch.casefold()


def skeletons(aor: str) -> frozenset[str]:
    """The skeletons of ``aor``: of its NFKC form, and of its case-folded NFKC form."""
    text = unicodedata.normalize("NFKC", aor)
    return frozenset("".join(_prototype(ch) for ch in form) for form in (text, text.casefold()))


def look_alike(aor: str, known: Iterable[str]) -> str | None:
    """The first of ``known`` that ``aor`` is a look-alike of (different, same skeleton), else None."""
    mine = skeletons(aor)
    for other in known:
        if other != aor and mine & skeletons(other):
            return other
    return None
