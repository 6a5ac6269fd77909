"""Run the C++ scheduler benchmarks (corral against oneTBB) and print corral/TBB ratios.

    python benchmarks/run_cpp.py [BENCH_BINARY] [--repetitions N] [--threads 1,2] [--filter REGEX]

BENCH_BINARY defaults to build/cpp-bench/bench_scheduler (the `bench` preset). Results go to
benchmarks/results/cpp.json (Google Benchmark's JSON); the table uses the median of the repetitions.
For each pair the ratio is corral / TBB of the figure that matters: time per task (fib), time per
index (parallel_for_empty), latency (wake_latency): lower is better; busy fraction (blocking_mix):
higher is better.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_BINARY = ROOT / "build" / "cpp-bench" / "bench_scheduler"
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "cpp.json"

# workload -> (figure, unit, lower_is_better)
FIGURES = {
    "fib": ("ns_per_task", "ns/task", True),
    "fib_cpu": ("cpu_ns_per_task", "CPU ns/task", True),
    "parallel_for_empty": ("ns_per_index", "ns/index", True),
    "parallel_for_empty_cpu": ("cpu_ns_per_index", "CPU ns/index", True),
    "wake_latency": ("real_time", "us", True),
    "blocking_mix": ("busy", "busy", False),
}
NAME = re.compile(r"^(?P<workload>[a-z_]+)/(?P<impl>corral|tbb)/(?P<threads>\d+)(?:/(?P<size>\d+))?")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("binary", nargs="?", default=str(DEFAULT_BINARY))
    parser.add_argument("--out", default=str(DEFAULT_OUT))
    parser.add_argument("--repetitions", type=int, default=3)
    parser.add_argument("--threads", default=None, help="thread counts, e.g. 1,2,4 (CORRAL_BENCH_THREADS)")
    parser.add_argument("--filter", default=None, help="--benchmark_filter regex")
    parser.add_argument("--min-time", default=None, help="--benchmark_min_time (seconds)")
    parser.add_argument("--table-only", action="store_true", help="print the table of an existing --out file")
    return parser.parse_args(argv)


def run(args: argparse.Namespace) -> None:
    binary = Path(args.binary)
    if not binary.is_file():
        sys.exit(f"run_cpp.py: no benchmark binary at {binary} (build the `bench` preset, or pass the path)")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    command = [str(binary), "--benchmark_format=json", f"--benchmark_out={out}", "--benchmark_out_format=json",
               f"--benchmark_repetitions={args.repetitions}", "--benchmark_report_aggregates_only=false"]
    if args.filter:
        command.append(f"--benchmark_filter={args.filter}")
    if args.min_time:
        command.append(f"--benchmark_min_time={args.min_time}")
    env = dict(os.environ)
    if args.threads:
        env["CORRAL_BENCH_THREADS"] = args.threads
    print("running:", " ".join(command), file=sys.stderr)
    subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL)


def figure(entry: dict, workload: str) -> float:
    key, _, _ = FIGURES[workload]
    if key == "real_time":
        scale = {"ns": 1e-3, "us": 1.0, "ms": 1e3, "s": 1e6}[entry.get("time_unit", "ns")]
        return float(entry["real_time"]) * scale
    return float(entry[key])


def table(path: Path) -> str:
    data = json.loads(path.read_text())
    medians: dict[tuple, float] = {}
    spread: dict[tuple, tuple[float, float]] = {}
    samples: dict[tuple, list[float]] = {}
    for entry in data["benchmarks"]:
        match = NAME.match(entry["name"])
        if not match or entry.get("error_occurred"):
            continue
        key = (match["workload"], match["impl"], int(match["threads"]), int(match["size"] or 0))
        workloads = [match["workload"]]
        if match["workload"] + "_cpu" in FIGURES and FIGURES[match["workload"] + "_cpu"][0] in entry:
            workloads.append(match["workload"] + "_cpu")  # the same run, seen as CPU time
        for workload in workloads:
            key = (workload,) + key[1:]
            if entry.get("run_type") == "aggregate":
                if entry.get("aggregate_name") == "median":
                    medians[key] = figure(entry, workload)
            else:
                samples.setdefault(key, []).append(figure(entry, workload))
    for key, values in samples.items():
        values.sort()
        medians.setdefault(key, values[len(values) // 2])
        spread[key] = (values[0], values[-1])

    context = data.get("context", {})
    runs = max((len(v) for v in samples.values()), default=0)
    lines = [f"host {context.get('host_name', '?')}, {context.get('num_cpus', '?')} CPUs, "
             f"load average {context.get('load_avg', '?')}; medians of {runs} runs"]
    lines.append(f"{'workload':<20}{'threads':>8}{'size':>11}  {'corral':>12}  {'tbb':>12}  {'corral/tbb':>10}  unit")
    keys = sorted({(w, t, s) for (w, _, t, s) in medians}, key=lambda k: (list(FIGURES).index(k[0]), k[1], k[2]))
    for workload, threads, size in keys:
        ours = medians.get((workload, "corral", threads, size))
        theirs = medians.get((workload, "tbb", threads, size))
        unit = FIGURES[workload][1]
        ratio = f"{ours / theirs:10.2f}" if ours is not None and theirs else f"{'-':>10}"
        def fmt(v):
            return f"{v:12.3f}" if v is not None else f"{'-':>12}"
        lines.append(f"{workload:<20}{threads:>8}{size or '':>11}  {fmt(ours)}  {fmt(theirs)}  {ratio}  {unit}")
    lines.append("ratio < 1 is better for corral except blocking_mix (busy fraction: higher is better)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if not args.table_only:
        run(args)
    print(table(Path(args.out)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
