"""`tocsin drill` on a live local cluster whose dead nodes are restarted."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from click.testing import CliRunner

from tocsin.cli.drill_cmd import drill
from tocsin.cluster.local import LocalCluster
from tocsin.cluster.supervise import supervise
from tocsin.drill import run_drill


async def test_kill_drill_passes_and_the_node_comes_back(tmp_path: Path) -> None:
    local = LocalCluster(tmp_path / "cluster", nodes=3)
    keeper = None
    try:
        await local.start()
        keeper = asyncio.get_running_loop().create_task(supervise(local, period_s=0.5, restart_delay_s=0.2))
        report = await run_drill(local.data_dir / "cluster.json", victim="node2", mode="kill", slo_s=15)
        assert report.ok, report.render()
        names = [s.name for s in report.steps]
        assert "node2 caught up (replays the drill alert)" in names
        assert all(pid for pid in local.pids("node2").values())  # restarted by the supervisor
        assert not (local.spec("node2").data_dir / "hold-down").exists()
    finally:
        if keeper:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper
        await local.stop()


def test_drill_command_fails_plainly_on_a_dead_cluster(tmp_path: Path) -> None:
    local = LocalCluster(tmp_path / "cluster", nodes=3)
    local.write_description()  # described but never started: nothing answers
    result = CliRunner().invoke(drill, ["--cluster", str(local.data_dir / "cluster.json"), "--json"])
    assert result.exit_code == 1
    assert '"ok": false' in result.output
