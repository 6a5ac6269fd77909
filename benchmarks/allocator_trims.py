#!/usr/bin/env python3
"""How much of a workload's time is glibc giving freed memory back and faulting it in again.

    .venv/bin/python benchmarks/allocator_trims.py [--reps 7] [--passes 20] [--workload W7|W1|W3|W6]

glibc gives every thread its own malloc arena and trims an arena's free top (madvise MADV_DONTNEED)
when a free leaves it at least the trim threshold, which follows the largest block that was freed
from mmap (twice the mmap threshold: about 1.06 MB once numpy frees a 512 KiB array). W7's tasks each
take about 1.1 MB in three arrays and give it back: whether their arena trims after every task (and
every task then faults ~250 pages in again) or keeps the memory depends on a few small blocks placed
near the top of the arena, so two programs that run the same tasks can fall on either side. This runs
the hand-tuned setting and corral interleaved, each as it is and with the thresholds pinned
(MALLOC_MMAP_THRESHOLD_=4 MiB, MALLOC_TRIM_THRESHOLD_=8 MiB: no arena trims, no dynamic threshold), and
prints each one's median time, minor page faults and CPU time (the children's getrusage, no perf
needed). The pinned pair measures the pools alone; the difference between the pairs is the allocator.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
WORKLOADS = os.path.join(HERE, "workloads")
PINNED = {"MALLOC_MMAP_THRESHOLD_": str(4 << 20), "MALLOC_TRIM_THRESHOLD_": str(8 << 20)}
BLAS_ONE = {v: "1" for v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")}
TOLD_16 = {v: "16" for v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")}
# make bench's sizes and its hand-tuned winners on 2 CPUs (benchmarks/results/2cpu-vm.md): script, its
# arguments, the hand-tuned setting's, corral's and the environment of both (W3: libraries told 16 CPUs;
# the hand-tuned setting overrides it with BLAS 1), and whether a higher value is better.
SCRIPTS = {
    "W1": ("w1_balanced.py", ["--arrays", "64", "--n", "256"], ["--pool", "2"], [], {}, False),
    "W3": ("w3_emulated_big_machine.py", ["--arrays", "64", "--n", "256"], ["--pool", "2"], ["--pool", "16"],
           TOLD_16, False),
    "W6": ("w6_io_compute.py", ["--tasks", "60", "--wait-ms", "5", "--n", "551"], ["--pool", "8"], [], {}, True),
    "W7": ("w7_nested.py", ["--outer-tasks", "4", "--inner-arrays", "8", "--n", "256"],
           ["--pool", "2", "--inner-pool", "2"], [], {}, False),
}


def run_once(cmd: list[str], env: dict[str, str]) -> dict:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(cmd, env=env, cwd=WORKLOADS, capture_output=True, text=True, check=False)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    line = next((x for x in done.stdout.splitlines() if x.startswith("BENCH_RESULT ")), None)
    if done.returncode != 0 or line is None:
        sys.exit(f"allocator_trims: {' '.join(cmd)} failed (exit {done.returncode}):\n{done.stderr[-2000:]}")
    return {"value": json.loads(line.split(" ", 1)[1])["value"],
            "faults": after.ru_minflt - before.ru_minflt,
            "cpu": (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
            "sys": after.ru_stime - before.ru_stime}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workload", choices=sorted(SCRIPTS), default="W7")
    p.add_argument("--reps", type=int, default=7, help="interleaved runs of each configuration")
    p.add_argument("--passes", type=int, default=20, help="passes per run (make bench runs 1-3)")
    args = p.parse_args()
    script, sizes, hand, mine, told, higher_is_better = SCRIPTS[args.workload]
    base = [script, *sizes, "--passes", str(args.passes)]
    plain_env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")} | told
    configs = {
        "hand-tuned": ([sys.executable, *base, *hand], {**plain_env, **BLAS_ONE}),
        "corral": ([sys.executable, "-m", "corral", *base, *mine], plain_env),
        "hand-tuned, pinned": ([sys.executable, *base, *hand], {**plain_env, **BLAS_ONE, **PINNED}),
        "corral, pinned": ([sys.executable, "-m", "corral", *base, *mine], {**plain_env, **PINNED}),
    }
    results: dict[str, list[dict]] = {name: [] for name in configs}
    for _ in range(args.reps):
        for name, (cmd, env) in configs.items():
            results[name].append(run_once(cmd, env))
    print(f"{args.workload}, {args.passes} passes a run, {args.reps} interleaved runs each (medians):")
    unit = "per s" if higher_is_better else "seconds"
    print(f"{'configuration':<20} {unit:>8} {'page faults':>12} {'CPU s':>7} {'sys s':>7}")
    med = {name: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for name, rs in results.items()}
    for name, m in med.items():
        print(f"{name:<20} {m['value']:>8.3f} {m['faults']:>12.0f} {m['cpu']:>7.2f} {m['sys']:>7.2f}")
    for suffix in ("", ", pinned"):
        ratio = med["hand-tuned" + suffix]["value"] / med["corral" + suffix]["value"]
        if higher_is_better:
            ratio = 1 / ratio
        print(f"corral against hand-tuned{suffix or ' (as they are)'}: {ratio:.2f}x")


if __name__ == "__main__":
    main()
