"""The CI subset of the fault matrix (RELIABILITY.md): each fault on a real 3-node cluster,
with a device fleet and an issuer, checked against the five invariants (and, for F28, the
push devices' rules: checker.py).

Shorter durations and rates than `tocsin-faults --all`; the same invariants. Histories are
kept under pytest's tmp_path for a failed run.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tocsin.faults.scenarios import CI_SUBSET, SCENARIOS, run_scenario


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("fault_id", CI_SUBSET)
async def test_fault_keeps_every_invariant(fault_id: str, tmp_path: Path) -> None:
    missing = SCENARIOS[fault_id].needs()  # root, a tool or a kernel feature this fault uses
    if missing:
        pytest.skip(f"{fault_id} cannot run here: {missing}")
    result = await run_scenario(SCENARIOS[fault_id], tmp_path, ci=True)
    assert result.skipped is None, result.skipped
    assert result.violations == [], f"{fault_id} ({tmp_path}): " + "\n".join(result.violations)
    assert result.acked > 0 and result.lost == 0 and result.duplicated == 0
    # Approvals in flight through the fault: a tenth of the alerts wait for a second person.
    assert result.approved > 0, result.notes
    if SCENARIOS[fault_id].options.push_devices:
        # Every push delivery made (once, as shown); repeats only within the sends in flight.
        assert result.push_expected > 0 and result.push_lost == 0 and result.push_astray == 0, result.notes
        assert result.push_received == result.push_expected + result.push_repeats
        assert result.push_repeats <= result.push_repeat_bound, result.notes


@pytest.mark.slow
@pytest.mark.timeout(300)
async def test_a_cold_restart_of_nodes_of_two_workers_keeps_every_invariant(tmp_path: Path) -> None:
    # F08 (kill everything, restart in random order) with each node a supervisor and two
    # workers: a node's kill takes its whole process group (docs/workers.md).
    result = await run_scenario(SCENARIOS["F08"], tmp_path, ci=True, workers=2)
    assert result.skipped is None, result.skipped
    assert result.violations == [], "F08 with 2 workers (" + str(tmp_path) + "): " + "\n".join(result.violations)
    assert result.acked > 0 and result.lost == 0 and result.duplicated == 0
