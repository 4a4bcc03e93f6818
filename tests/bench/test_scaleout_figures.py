"""``voipgw.bench.scaleout.marginal_calls_per_core``: the slope it reads from a ramp's steps, as a table."""

from __future__ import annotations

from typing import Any

import pytest

from voipgw.bench.scaleout import marginal_calls_per_core


def _step(calls: int, lost: int, *shares: float) -> dict[str, Any]:
    return {
        "calls": calls,
        "frames_sent": 1000,
        "frames_lost": lost,
        "cpu_share": {f"gateway_b{i}": s for i, s in enumerate(shares, start=1)},
    }


@pytest.mark.parametrize(
    ("steps", "processes", "expected"),
    [
        # 25 more calls for 0.1 more of a core: 250 calls per core, whatever the share at 25 calls was.
        ([_step(25, 0, 0.18), _step(50, 0, 0.28)], 1, 250),
        # Two processes: their shares add up.
        ([_step(25, 0, 0.14, 0.14), _step(50, 0, 0.2, 0.2)], 2, 208),
        # A step that lost frames (not merely late ones) is not used: the slope ends at the last one that delivered.
        ([_step(25, 0, 0.18), _step(50, 0, 0.28), _step(75, 20, 0.30)], 1, 250),
        # Late frames still cost their CPU: a step with no loss counts whatever its lateness.
        ([_step(25, 9, 0.2), _step(75, 0, 0.4)], 1, 250),
        # Fewer than two usable steps, or noise larger than the difference: no figure.
        ([_step(25, 0, 0.18)], 1, None),
        ([_step(25, 0, 0.18), _step(50, 500, 0.3)], 1, None),
        ([_step(25, 0, 0.3), _step(50, 0, 0.28)], 1, None),
        # A step without the processes' shares (it was not measured) is skipped.
        ([_step(25, 0, 0.18), {**_step(50, 0), "cpu_share": {}}, _step(75, 0, 0.38)], 1, 250),
    ],
)
def test_marginal_calls_per_core(steps: list[dict[str, Any]], processes: int, expected: int | None) -> None:
    assert marginal_calls_per_core(steps, processes) == expected
