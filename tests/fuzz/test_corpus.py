"""Every input ever found to break a parser stays a regression test: tests/fuzz/corpus/<target>/<file>.

``make fuzz`` writes new crashers there (crash-<sha1>); a fixed one is kept, renamed for what it found.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fuzz.targets import TARGETS, run

pytestmark = pytest.mark.hardening

CORPUS = Path(__file__).resolve().parent / "corpus"
CASES = sorted(p for p in CORPUS.glob("*/*") if p.is_file() and p.name != "README.md")


def test_corpus_is_not_empty_and_names_real_targets() -> None:
    assert CASES
    assert {p.parent.name for p in CASES} <= set(TARGETS)


@pytest.mark.parametrize("path", CASES, ids=[f"{p.parent.name}/{p.name}" for p in CASES])
def test_regression_input(path: Path) -> None:
    run(path.parent.name, path.read_bytes())
