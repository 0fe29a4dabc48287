"""`tocsin-faults`: run the fault matrix (or part of it) and write the report.

    tocsin-faults --all                  every fault, full durations -> docs/reliability-report.md
    tocsin-faults --only F05,F06         these faults
    tocsin-faults --only F01 --ci        the CI variant (shorter, lower rates)
    tocsin-faults --all --workers 2      every node a supervisor and two workers (docs/workers.md)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

from tocsin.faults.checker import Result
from tocsin.faults.report import render, write
from tocsin.faults.scenarios import SCENARIOS, run_scenario


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tocsin-faults", description=__doc__.split("\n\n")[0])
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--all", action="store_true", help="every fault of the matrix")
    which.add_argument("--only", help="comma separated ids, e.g. F05,F06 (F11 includes its mutation runs, "
                       "F28 its three push runs)")
    which.add_argument("--render", type=Path, metavar="RESULTS_JSON",
                       help="only write the report again from a run's results.json")
    parser.add_argument("--ci", action="store_true", help="the short CI variant of each fault")
    parser.add_argument("--workers", type=int, default=None, metavar="N",
                        help="each node's worker processes (TOCSIN_WORKERS; 0: one per core; default: the node's)")
    parser.add_argument("--workdir", type=Path, default=None, help="where histories and cluster data go")
    parser.add_argument("--report", type=Path, default=Path("docs/reliability-report.md"))
    parser.add_argument("--no-report", action="store_true")
    args = parser.parse_args(argv)
    meta = {k: (s.fault, s.must) for k, s in SCENARIOS.items()}
    if args.render:
        earlier = [Result.from_json(r) for r in json.loads(args.render.read_text())]
        for r in earlier:
            r.mutation = SCENARIOS[r.fault].mutation if r.fault in SCENARIOS else False
        write(args.report, render(earlier, command="tocsin-faults --all", scenarios=meta))
        return 0
    ids = list(SCENARIOS) if args.all else _expand(args.only.split(","))
    unknown = [i for i in ids if i not in SCENARIOS]
    if unknown:
        parser.error(f"unknown fault ids: {', '.join(unknown)}")
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="tocsin-faults-"))
    workdir.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(filename=workdir / "harness.log", level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    results: list[Result] = []
    for fault_id in ids:
        print(f"{fault_id}: {SCENARIOS[fault_id].fault} ...", flush=True)
        started = time.monotonic()
        try:
            result = asyncio.run(run_scenario(SCENARIOS[fault_id], workdir, ci=args.ci, workers=args.workers))
        except Exception as exc:  # a harness error is a failed run, reported as such
            logging.exception("fault run failed")
            result = Result(fault=fault_id, violations=[f"the run itself failed: {exc!r}"[:400]])
            result.duration_s = round(time.monotonic() - started, 1)
        results.append(result)
        print(f"{fault_id}: {result.verdict} in {result.duration_s:.0f} s; acked {result.acked}, lost {result.lost}, "
              f"dup {result.duplicated}, gap {result.max_gap_s} s, recover {result.recover_s} s"
              + (f"; push {result.push_received}/{result.push_expected}, lost {result.push_lost}, astray "
                 f"{result.push_astray}, repeats {result.push_repeats} (bound {result.push_repeat_bound})"
                 if result.push_expected else "")
              + "".join(f"\n    {v}" for v in result.violations[:8]), flush=True)
        (workdir / "results.json").write_text(json.dumps([r.as_json() for r in results], indent=1))
    if not args.no_report:
        command = "tocsin-faults " + " ".join(sys.argv[1:] if argv is None else argv)
        write(args.report, render(results, command=command.strip(), scenarios=meta))
        print(f"report: {args.report}; histories in {workdir}")
    return 0 if not any(r.verdict.startswith("FAIL") for r in results) else 1


def _expand(ids: list[str]) -> list[str]:
    out: list[str] = []
    for i in (x.strip().upper() for x in ids if x.strip()):
        # An id names itself (any case); F11 and F28 also name their variants (F11-mutation, F28-node...).
        found = [k for k in SCENARIOS if k.upper() == i or (i in ("F11", "F28") and k.upper().startswith(i + "-"))]
        out += found or [i]
    return [k for k in SCENARIOS if k in out] if all(k in SCENARIOS for k in out) else out


if __name__ == "__main__":
    sys.exit(main())
