#!/usr/bin/env python3
"""corral's Python benchmark suite: the seeds' workloads under every configuration, side by side.

    .venv/bin/python benchmarks/run.py                    # full suite (make bench-py)
    .venv/bin/python benchmarks/run.py --quick            # small sizes, 1 repetition: proves the harness
    .venv/bin/python benchmarks/run.py --workloads W1,W5 --out /tmp/bench

Every run is a fresh interpreter executing one script of benchmarks/workloads/ (so thread variables are
read before numpy loads, and runners such as `python -m corral` get the script unmodified); the script
prints one BENCH_RESULT JSON line. Within a workload the configurations run round-robin, one run each per
repetition, rotating the order, so that machine noise falls evenly on all of them. Results go to
<out>/<cpus>cpu-<host>[-quick].{md,json,png} and the latest.md (or latest-quick.md) pointer.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parent / "workloads"))

import _common  # noqa: E402
import answers  # noqa: E402
import configs  # noqa: E402
import machine as machine_info  # noqa: E402
import report  # noqa: E402
import stats  # noqa: E402
from workload_specs import WORKLOADS, Setting, Workload, select, thinned  # noqa: E402

QUICK_GRID_POINTS = 3
MIN_REPS = 3  # fewest repetitions the time budget may cut a workload to (a median and a spread still mean something)
# make bench (this suite and the C++ one) must fit 20 minutes on 2 CPUs, start-up and reports included
DEFAULT_TIME_BUDGET_S = 900.0
DEFAULT_OUT = Path(__file__).resolve().parent / "results"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--quick", action="store_true",
                   help="small sizes, 1 repetition, 3 grid points: proves the harness works (not for speed)")
    p.add_argument("--workloads", metavar="W1,W5", default=None,
                   help=f"comma-separated workloads (default all: {', '.join(w.id for w in WORKLOADS)})")
    p.add_argument("--configs", metavar="plain,corral", default=None,
                   help=f"comma-separated configurations (default all: {', '.join(configs.CONFIG_NAMES)})")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="directory for the results (default %(default)s)")
    p.add_argument("--reps", type=int, default=None, help="repetitions per configuration (default 5, quick 1)")
    p.add_argument("--tune-reps", type=int, default=None, help="runs per hand-tuning grid point (default 1)")
    p.add_argument("--timeout", type=float, default=None,
                   help="seconds one run may take before it is stopped and its configuration dropped "
                        "(default 120, quick 60)")
    p.add_argument("--time-budget", type=float, default=None, metavar="S",
                   help=f"seconds the whole run should take: a workload whose repetitions would overrun its "
                        f"share runs fewer (not below {MIN_REPS}); 0 disables (default {DEFAULT_TIME_BUDGET_S:g}, "
                        f"quick 0)")
    p.add_argument("--list", action="store_true", help="list workloads and configurations, and exit")
    args = p.parse_args(argv)
    try:
        args.selected = select(args.workloads, args.quick)
    except ValueError as error:
        p.error(str(error))
    wanted = [c.strip() for c in (args.configs or ",".join(configs.CONFIG_NAMES)).split(",") if c.strip()]
    unknown = [c for c in wanted if c not in configs.CONFIG_NAMES]
    if unknown or not wanted:
        p.error(f"unknown configuration(s) {', '.join(unknown) or args.configs!r}; "
                f"choose from {', '.join(configs.CONFIG_NAMES)}")
    if "plain" not in wanted:
        wanted.insert(0, "plain")  # every ratio is against plain
    args.config_names = [c for c in configs.CONFIG_NAMES if c in wanted]
    args.reps = args.reps if args.reps is not None else (1 if args.quick else 5)
    args.tune_reps = args.tune_reps if args.tune_reps is not None else 1
    args.timeout = args.timeout if args.timeout is not None else (60.0 if args.quick else 120.0)
    for name in ("reps", "tune_reps"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.timeout <= 0:
        p.error("--timeout must be positive")
    if args.time_budget is None:
        args.time_budget = 0.0 if args.quick else DEFAULT_TIME_BUDGET_S
    if args.time_budget < 0:
        p.error("--time-budget must be 0 (no budget) or positive")
    return args


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def execute(launch: configs.Launch, timeout_s: float) -> dict:
    """Run one workload process; its result line, or why there is none. The run gets its own process
    group, so that a timeout or Ctrl-C also ends the pool workers it started."""
    start = time.perf_counter()
    proc = subprocess.Popen(launch.argv, env=launch.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=Path(__file__).resolve().parent.parent, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        return {"ok": False, "timed_out": True, "error": f"timed out after {timeout_s:g} s",
                "wall_s": time.perf_counter() - start}
    except BaseException:
        _kill_group(proc)
        raise
    wall = time.perf_counter() - start
    try:
        result = _common.read_result(stdout) if proc.returncode == 0 else None
        if result is None:
            detail = configs.last_line(stderr or stdout)
            return {"ok": False, "error": f"exit {proc.returncode}: {detail}", "wall_s": wall}
        value = float(result["value"])
    except (ValueError, KeyError, TypeError) as error:
        return {"ok": False, "error": f"unreadable result line: {error}", "wall_s": wall}
    if not value > 0:
        return {"ok": False, "error": f"non-positive result {value}", "wall_s": wall}
    return {"ok": True, "value": value, "wall_s": wall, "result": result}


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.communicate()


def rotated(items: list, shift: int) -> list:
    """The same items starting at a different place each repetition, so none is always first or last."""
    if not items:
        return []
    shift %= len(items)
    return items[shift:] + items[:shift]


def calibrate_w6(python: str, budget: int) -> dict:
    """Matrix side whose matmul takes ~5 ms on one BLAS thread here, measured once for the whole run."""
    env = configs.base_environment()
    env.update({name: "1" for name in configs.BLAS_THREAD_VARS})
    script = next(w for w in WORKLOADS if w.id == "W6").path
    out = subprocess.run([python, str(script), "--calibrate", "5"], env=env, capture_output=True, text=True,
                         timeout=120)
    calibration = _common.read_result(out.stdout) if out.returncode == 0 else None
    if calibration is None:
        raise RuntimeError(f"W6 calibration failed: {configs.last_line(out.stderr or out.stdout)}")
    calibration["ideal_tasks_per_s"] = budget * 1000.0 / calibration["compute_ms"]
    return calibration


def tune(workload: Workload, python: str, args: dict, budget: int, reasons: dict, opts) -> dict:
    """Run the hand-tuning grid round-robin and pick the best point by median."""
    grid = workload.grid(budget)
    if opts.quick:
        grid = thinned(grid, QUICK_GRID_POINTS)
    samples: dict[Setting, list[float]] = {s: [] for s in grid}
    errors: dict[Setting, str] = {}
    for rep in range(opts.tune_reps):
        for setting in rotated(grid, rep):
            if setting in errors and not samples[setting]:
                continue
            launch = configs.plan("hand-tuned", workload, python, args, budget, reasons, tuned=setting)
            outcome = execute(launch, opts.timeout)
            if outcome["ok"]:
                samples[setting].append(outcome["value"])
                log(f"  tune {workload.id} {setting.label():<32} {outcome['value']:.4g} {workload.unit}")
            else:
                errors[setting] = outcome["error"]
                log(f"  tune {workload.id} {setting.label():<32} FAILED {outcome['error']}")
    median = {s: stats.summarize(samples[s])["median"] for s in grid if samples[s]}
    points = [{"setting": s.label(), "samples": samples[s], "error": errors.get(s), "median": median.get(s)}
              for s in grid]
    if not median:
        return {"winner": None, "points": points}
    ran = list(median)
    winner = ran[stats.best_index([median[s] for s in ran], workload.higher_is_better)]
    return {"winner": winner, "winner_label": winner.label(), "points": points}


def affordable_reps(wanted: int, allowance_s: float | None, spent_s: float, rep_cost_s: float) -> int:
    """Repetitions that fit what is left of a workload's time share after its first (never below MIN_REPS,
    never above what was asked)."""
    if allowance_s is None:
        return wanted
    fit = 1 + int(max(0.0, allowance_s - spent_s) // max(rep_cost_s, 1e-3))
    return max(min(wanted, fit), min(MIN_REPS, wanted))


def run_workload(workload: Workload, python: str, budget: int, reasons: dict, opts, calibration,
                 allowance_s: float | None = None) -> dict:
    started = time.perf_counter()
    args = workload.args(budget, opts.quick)
    entry: dict = {"id": workload.id, "title": workload.title, "measures": workload.measures,
                   "unit": workload.unit, "higher_is_better": workload.higher_is_better, "args": args}
    if workload.family == "W6":
        args["--n"] = calibration["n"]
        entry["calibration"] = calibration
        entry["ideal"] = calibration["ideal_tasks_per_s"]
    log(f"{workload.id} {workload.title}: {workload.measures}")

    tuning = None
    if "hand-tuned" in opts.config_names and "hand-tuned" not in workload.not_applicable:
        tuning = tune(workload, python, args, budget, reasons, opts)
    if tuning is not None:
        entry["tuning"] = {"winner": tuning.get("winner_label"), "points": tuning["points"]}

    base_env = configs.base_environment()
    rows: dict[str, dict] = {}
    launches: dict[str, configs.Launch] = {}
    for name in opts.config_names:
        planned = configs.plan(name, workload, python, args, budget, reasons,
                               tuned=tuning["winner"] if tuning else None)
        if isinstance(planned, str):
            rows[name] = {"status": "n/a", "reason": planned, "samples": [], "runs": []}
        else:
            launches[name] = planned
            rows[name] = {"status": "ok", "command": planned.command_line(base_env), "samples": [], "runs": []}
            if name == "hand-tuned":
                rows[name]["setting"] = tuning["winner_label"]

    active = list(launches)
    wanted_reps = planned_reps(workload, opts.reps)
    reps = wanted_reps
    rep = 0
    while rep < reps:
        rep_started = time.perf_counter()
        for name in rotated(active, rep):
            if rows[name].get("dropped") or len(rows[name]["runs"]) >= workload.config_max_reps.get(name, reps):
                continue
            outcome = execute(launches[name], opts.timeout)
            rows[name]["runs"].append(outcome)
            if outcome["ok"]:
                rows[name]["samples"].append(outcome["value"])
                log(f"  rep {rep + 1}/{reps} {name:<17} {outcome['value']:.4g} {workload.unit}")
            else:
                log(f"  rep {rep + 1}/{reps} {name:<17} FAILED {outcome['error']}")
                if outcome.get("timed_out"):
                    rows[name]["dropped"] = True  # a run this slow is not repeated
        if rep == 0:
            now = time.perf_counter()
            reps = affordable_reps(wanted_reps, allowance_s, now - started, now - rep_started)
            if reps < wanted_reps:
                log(f"  {workload.id}: {reps} repetitions instead of {wanted_reps}, to fit the time budget")
        rep += 1
    entry["reps"] = reps
    entry["wanted_reps"] = wanted_reps
    entry["targets"] = [dataclasses.asdict(t) for t in workload.targets]
    if workload.answer_rtol is not None:
        _check_answers(rows, workload.answer_rtol)
    for name, row in rows.items():
        if row["status"] != "ok":
            continue
        failures = [r["error"] for r in row["runs"] if not r["ok"]]
        if not row["samples"]:
            row.update(status="failed", reason=failures[0] if failures else "never ran")
            continue
        row["summary"] = stats.summarize(row["samples"])
        if failures:
            row["note"] = f"{len(failures)} of {len(row['runs'])} runs failed: {failures[0]}"
    _add_ratios(rows, workload.higher_is_better, entry.get("ideal"))
    entry["configs"] = rows
    return entry


def planned_reps(workload: Workload, reps: int) -> int:
    """--reps, capped by the workload's own limit (the costlier real-library workloads)."""
    return min(reps, workload.max_reps) if workload.max_reps else reps


def _check_answers(rows: dict, rtol: float) -> None:
    """Every run's answer against plain python's (its first run): a run that differs fails, with the reason."""
    plain = [r["result"]["answer"] for r in rows.get("plain", {}).get("runs", [])
             if r["ok"] and "answer" in r["result"]]
    if not plain:
        return
    reference = plain[0]
    for name, row in rows.items():
        for run in row.get("runs", []):
            if not run["ok"]:
                continue
            if "answer" not in run["result"]:
                why = "no answer in its result line"
            else:
                why = answers.difference(run["result"]["answer"], reference, rtol)
            if why:
                run.update(ok=False, error=f"result differs from plain python's: {why}")
                row["samples"] = [r["value"] for r in row["runs"] if r["ok"]]
                log(f"  {name}: result differs from plain python's: {why}")


def _add_ratios(rows: dict, higher_is_better: bool, ideal: float | None) -> None:
    references = {ref: rows[ref]["summary"]["median"] for ref in ("plain", "hand-tuned")
                  if ref in rows and "summary" in rows[ref]}
    for row in rows.values():
        if "summary" not in row:
            continue
        median = row["summary"]["median"]
        for ref, value in references.items():
            row[f"vs_{ref.replace('-', '_')}"] = stats.speedup(median, value, higher_is_better)
        if ideal:
            row["of_ideal"] = median / ideal


def _interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)  # like Ctrl-C: the run in flight is ended with its workers
    if opts.list:
        for w in WORKLOADS:
            print(f"{w.id:<9} {w.title:<22} {w.measures}")
        print()
        for c in configs.CONFIGS:
            print(f"{c.name:<17} {c.description}")
        return 0
    started = time.perf_counter()
    python = sys.executable
    log("reading the machine and probing the configurations ...")
    machine = machine_info.describe(python)
    budget = machine["budget"]
    reasons = configs.probe(python)
    log(machine_info.summary_line(machine))
    for name, reason in sorted(reasons.items()):
        log(f"  {name:<30} {'available' if reason is None else reason}")

    calibration = None
    if any(w.family == "W6" for w in opts.selected):
        calibration = calibrate_w6(python, budget)
        log(f"W6 calibration: n={calibration['n']} takes {calibration['compute_ms']:.2f} ms on one BLAS thread")

    results = {
        "machine": machine,
        "settings": {"quick": opts.quick, "reps": opts.reps, "tune_reps": opts.tune_reps,
                     "time_budget_s": opts.time_budget,
                     "timeout_s": opts.timeout, "configs": opts.config_names,
                     "started": time.strftime("%Y-%m-%d %H:%M:%S %Z")},
        "availability": reasons,
        "configs": {c.name: {"label": c.label, "description": c.description} for c in configs.CONFIGS
                    if c.name in opts.config_names},
        "workloads": {},
    }
    for index, workload in enumerate(opts.selected):
        allowance = None
        if opts.time_budget > 0:  # a share of what is left, by the repetitions each workload still to run wants
            left = opts.time_budget - (time.perf_counter() - started)
            wanted = [planned_reps(w, opts.reps) for w in opts.selected[index:]]
            allowance = max(0.0, left) * wanted[0] / sum(wanted)
        results["workloads"][workload.id] = run_workload(workload, python, budget, reasons, opts, calibration,
                                                         allowance)
    results["wall_s"] = time.perf_counter() - started

    stem = machine_info.file_stem(machine) + ("-quick" if opts.quick else "")
    paths = report.write_all(results, opts.out, stem)
    print(report.markdown(results, png_name=paths["png"].name if paths.get("png") else None))
    log(f"wrote {', '.join(str(p) for p in paths.values())} in {results['wall_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
