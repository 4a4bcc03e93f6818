"""``voipgw completion``: the generated bash script, loaded in a real bash, completes commands, sub-commands and
options the way ``--help`` lists them."""

from __future__ import annotations

import subprocess
import sys

import pytest


def complete(words: list[str]) -> list[str]:
    """What bash offers for the last word of ``words`` with voipgw's completion loaded."""
    line = " ".join(words)
    script = (
        f"source <({sys.executable} -m voipgw.cli.main completion bash)\n"
        f"COMP_WORDS=({line}); COMP_CWORD={len(words) - 1}; COMP_LINE='{line}'; COMP_POINT={len(line)}\n"
        "_shtab_voipgw; printf '%s\\n' \"${COMPREPLY[@]}\"\n"
    )
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


@pytest.mark.parametrize(
    ("words", "expected"),
    [
        (["voipgw", "con"], {"contacts"}),
        (["voipgw", "hi"], {"history"}),
        (["voipgw", "gateway", "st"], {"status"}),
        (["voipgw", "call", "--dur"], {"--duration"}),
        (["voipgw", "completion", "z"], {"zsh"}),
    ],
)
def test_bash_completes_commands_and_options(words: list[str], expected: set[str]) -> None:
    assert set(complete(words)) == expected


def test_an_unknown_shell_is_one_line() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "voipgw.cli.main", "completion", "fish"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2 and "invalid choice: 'fish'" in done.stderr and "Traceback" not in done.stderr
