"""``make fuzz``: coverage-guided fuzzing (atheris/libFuzzer) of every target, each in its own bounded process.

    python -m tests.fuzz.run [--seconds S] [TARGET ...]

Each target starts from its valid seeds (tests/fuzz/targets.py) plus the regression corpus, runs S seconds,
and writes any crasher to tests/fuzz/corpus/<target>/crash-<sha1>; tests/fuzz/test_corpus.py replays those.
"""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
import tempfile
from pathlib import Path

CORPUS = Path(__file__).resolve().parent / "corpus"
RSS_LIMIT_MB = 1024
"""libFuzzer's memory bound per target: more than this for one input is a finding (memory must stay bounded)."""
INPUT_TIMEOUT_S = 5
"""libFuzzer's per-input bound: an input that takes longer is a hang."""


def _child(name: str, seconds: int, work: Path) -> None:
    """Inside the fuzzing process: instrument our code, then hand control to libFuzzer (never returns)."""
    import atheris

    with atheris.instrument_imports(include=["ratchet", "voipgw", "tests.fuzz"]):
        from tests.fuzz import targets

    target = targets.TARGETS[name]

    def one_input(data: bytes) -> None:
        target(data[: targets.MAX_INPUT])

    out = CORPUS / name
    out.mkdir(parents=True, exist_ok=True)
    atheris.Setup(
        [
            sys.argv[0],
            str(work),
            f"-max_total_time={seconds}",
            f"-rss_limit_mb={RSS_LIMIT_MB}",
            f"-timeout={INPUT_TIMEOUT_S}",
            f"-artifact_prefix={out}/",
            "-print_final_stats=1",
        ],
        one_input,
    )
    atheris.Fuzz()


def _seed_dir(name: str, work: Path) -> None:
    from tests.fuzz.targets import seeds

    for data in seeds()[name]:
        (work / hashlib.sha1(data).hexdigest()).write_bytes(data)
    for old in sorted((CORPUS / name).glob("*")) if (CORPUS / name).is_dir() else []:
        (work / old.name).write_bytes(old.read_bytes())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=int, default=60, help="fuzzing time per target (default 60)")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    p.add_argument("targets", nargs="*", help="default: all (see TARGETS in tests/fuzz/targets.py)")
    args = p.parse_args(argv)
    if args.child:  # before importing the targets: atheris must instrument them as they load
        _child(args.child, args.seconds, args.work)
        return 0
    from tests.fuzz.targets import TARGETS

    unknown = set(args.targets) - set(TARGETS)
    if unknown:
        p.error(f"unknown target(s): {', '.join(sorted(unknown))}")
    failed = []
    for name in args.targets or sorted(TARGETS):
        with tempfile.TemporaryDirectory(prefix=f"fuzz-{name}-") as tmp:
            work = Path(tmp)
            _seed_dir(name, work)
            print(f"== {name}: {args.seconds} s", flush=True)
            cmd = [sys.executable, "-m", "tests.fuzz.run", "--child", name, "--seconds", str(args.seconds)]
            rc = subprocess.run([*cmd, "--work", str(work)], timeout=args.seconds + 120, check=False).returncode
            if rc != 0:
                failed.append(name)
    print("crashers:" if failed else "no crashers", *failed)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
