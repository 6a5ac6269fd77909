#!/usr/bin/env python3
"""`make bench` (bench-report): what `python -m corral report` costs the program it samples.

The seed's demo (benchmarks/workloads/w1_balanced.py, make demo's sizes) runs under `python -m corral`
and under `python -m corral report -q` (default interval), and plain against `report --plain -q`,
interleaved, --reps times each. Reported per pair: the medians of the workload's own timing (its
BENCH_RESULT value) and their ratio (the overhead), and the sampler's own CPU time (the report
process's, while it sampled: "sampler_cpu_s" of the JSON) as a share of the run's wall time.
Writes DIR/report-overhead.json and prints a table. The target the docs state (docs/report.md,
"Overhead"): under 2% at the default interval.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(1, str(HERE / "workloads"))

import _common  # noqa: E402
import configs  # noqa: E402
import machine as machine_info  # noqa: E402

SCRIPT = HERE / "workloads" / "w1_balanced.py"


def timed(python: str, runner: list[str], args: list[str]) -> tuple[float, float | None]:
    """(the workload's own time, the sampler's CPU seconds or None without a report)."""
    report_json = None
    if "report" in runner:
        fd, report_json = tempfile.mkstemp(suffix=".json")
        os.close(fd)
        runner = [*runner, "--json", report_json]
    out = subprocess.run([python, *runner, str(SCRIPT), *args], env=configs.base_environment(),
                         capture_output=True, text=True, timeout=600)
    result = _common.read_result(out.stdout) if out.returncode == 0 else None
    if result is None:
        raise RuntimeError(f"{' '.join(runner)} failed: {configs.last_line(out.stderr or out.stdout)}")
    sampler = None
    if report_json:
        data = json.loads(Path(report_json).read_text())
        os.unlink(report_json)
        run = data["runs"][0]  # the sampler's CPU time (the report process's, while it sampled) per wall second
        sampler = run["sampler_cpu_s"] / run["wall_s"]
    return result["value"], sampler


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="the cost of python -m corral report on the seed's demo")
    p.add_argument("--reps", type=int, default=5, help="runs of each configuration (default 5)")
    p.add_argument("--quick", action="store_true", help="tiny arrays, one rep: checks the harness (not speed)")
    p.add_argument("--out", default=str(HERE / "results"), help="folder for report-overhead.json")
    opts = p.parse_args(argv)
    if opts.reps < 1:
        p.exit(2, "report_overhead.py: --reps must be at least 1\n")
    python = sys.executable
    machine = machine_info.describe(python)
    budget = machine["budget"]
    arrays, side, passes, reps = (4 * budget, 64, 1, 1) if opts.quick else (32 * budget, 256, 3, opts.reps)
    args = ["--arrays", str(arrays), "--n", str(side), "--passes", str(passes)]
    pairs = [("python -m corral", ["-m", "corral"], ["-m", "corral", "report", "-q"]),
             ("plain python", [], ["-m", "corral", "report", "--plain", "-q"])]
    print(f"report overhead on {machine_info.summary_line(machine)}; demo: {arrays} arrays of {side}x{side}, "
          f"{passes} pass(es), {reps} rep(s), interleaved")
    rows = []
    for label, without, with_report in pairs:
        base, sampled, sampler_cpu = [], [], []
        for _ in range(reps):
            base.append(timed(python, without, args)[0])
            value, cpu = timed(python, with_report, args)
            sampled.append(value)
            sampler_cpu.append(cpu)
        row = {"config": label, "without_s": statistics.median(base), "with_report_s": statistics.median(sampled),
               "sampler_cpu_share": statistics.median(sampler_cpu), "runs": {"without": base, "with": sampled}}
        row["overhead"] = row["with_report_s"] / row["without_s"] - 1
        rows.append(row)
        print(f"  {label:<18} without {row['without_s']:.3f} s  with report {row['with_report_s']:.3f} s  "
              f"overhead {100 * row['overhead']:+.1f}%  sampler CPU {100 * row['sampler_cpu_share']:.1f}% of wall")
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    name = "report-overhead-quick.json" if opts.quick else "report-overhead.json"
    (out / name).write_text(json.dumps({"machine": machine, "when": time.strftime("%Y-%m-%d %H:%M:%S"),
                                        "args": args, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
