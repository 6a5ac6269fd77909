"""Two versions of corral on the same workloads, interleaved, on the same machine: `python -m corral`
with an older corral package (a directory holding its `corral/`, put first on PYTHONPATH) against the
installed one, each workload with make bench's arguments. Prints medians and new speed / old speed.

    python benchmarks/ab_versions.py OLD_DIR [--reps 5] [--only W1,W3] [--passes 20] [--new-env VAR=VALUE ...]

Make OLD_DIR from an old commit: `git worktree add /tmp/old <commit> && cd /tmp/old && make setup`,
then OLD_DIR=/tmp/old/.venv/lib/python3.11/site-packages."""
import argparse
import json
import os
import statistics
import subprocess
import sys
W = os.path.join(os.path.dirname(os.path.abspath(__file__)), "workloads")
PY = sys.executable
C16 = {v: "16" for v in ("LOKY_MAX_CPU_COUNT", "MKL_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                         "PYTHON_CPU_COUNT")}
CASES = [
    ("W1", [], "w1_balanced.py --arrays 64 --n 256 --passes 3", {}),
    ("W2", [], "w2_unbalanced.py --arrays 64 --n 256 --big 2000 --passes 1", {}),
    ("W3", [], "w3_emulated_big_machine.py --arrays 64 --n 256 --passes 2 --pool 16", C16),
    ("W4-fork", [], "w4_processes.py --start-method fork --tasks 16 --batch 4 --n 256 --passes 3", {}),
    ("W4-spawn", [], "w4_processes.py --start-method spawn --tasks 16 --batch 4 --n 256 --passes 3", {}),
    ("W4-claimed", ["--force"], "w4_processes.py --start-method fork --tasks 16 --batch 4 --n 256 --passes 3", C16),
    ("W5", [], "w5_io_bound.py --tasks 160 --delay-ms 20 --passes 2", {}),
    ("W6", [], "w6_io_compute.py --tasks 60 --wait-ms 5 --passes 2 --n 551", {}),  # n: make bench's calibration here
    ("W7", [], "w7_nested.py --outer-tasks 4 --inner-arrays 8 --n 256 --passes 2", {}),
    ("W8", [], "w8_overhead.py --tasks 100000 --passes 1", {}),
    ("W11", [], "w11_imap.py --items 1000000 --passes 1", {}),
    ("W10-2w-balanced", [], "w10_dask.py --workers 2 --threads 1 --kind balanced --tasks 32 --n 384 --passes 2", {}),
    ("W10-2w-unbalanced", [], "w10_dask.py --workers 2 --threads 1 --kind unbalanced --tasks 32 --n 384 --big 1000 "
     "--bigs 3 --calls 4 --passes 2", {}),
    ("W10-1w-balanced", [], "w10_dask.py --workers 1 --threads 2 --kind balanced --tasks 32 --n 384 --passes 2", {}),
    ("W10-1w-unbalanced", [], "w10_dask.py --workers 1 --threads 2 --kind unbalanced --tasks 32 --n 384 --big 1000 "
     "--bigs 3 --calls 4 --passes 2", {}),
    # The real-library workloads and the program without pools at make bench's sizes (2 CPUs).
    ("R1-threading-2", [], "r1_grid_search.py --backend threading --n-jobs 2 --samples 1500 --max-iter 15 --cv 3", {}),
    ("R1-loky-2", [], "r1_grid_search.py --backend loky --n-jobs 2 --samples 1500 --max-iter 15 --cv 3", {}),
    ("R2", [], "r2_estimators.py --samples 4000 --copies 2", {}),
    ("R3", [], "r3_dask_matmul.py --n 2000 --chunk 500", {}),
    ("R4", [], "r4_scipy_linalg.py --arrays 64 --n 256", {}),
    ("R5", [], "r5_scipy_optimize.py --tasks 32 --rows 2000", {}),
    ("R6", [], "r6_pandas_groupby.py --tasks 16 --rows 60000", {}),
    ("N1", [], "n1_no_pools.py --scale 1.0 --matmul-n 800 --matmuls 5 --passes 3", {}),
    ("N2", [], "n2_child_pythons.py --children 40 --passes 3", {}),
]
ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
ap.add_argument("old_dir")
ap.add_argument("--reps", type=int, default=5)
ap.add_argument("--only", type=lambda s: s.split(","), default=None)
ap.add_argument("--passes", type=int, default=None,
                help="passes per run instead of make bench's, for workloads that take --passes (less noise)")
ap.add_argument("--new-env", action="append", default=[], metavar="VAR=VALUE",
                help="set for the new version's runs only (e.g. OPENBLAS_THREAD_TIMEOUT=4)")
args = ap.parse_args()
reps, only = args.reps, args.only
NEW_ENV = dict(item.split("=", 1) for item in args.new_env)
def run(opts, cmd, extra, old):
    env = {k: v for k, v in os.environ.items() if not k.startswith("CORRAL_")}
    env.update(extra)
    env.pop("PYTHONPATH", None)
    if old:
        env["PYTHONPATH"] = args.old_dir
    else:
        env.update(NEW_ENV)
    words = cmd.split()
    if args.passes is not None and "--passes" in words:
        words[words.index("--passes") + 1] = str(args.passes)
    out = subprocess.run([PY, "-m", "corral", *opts, *words], cwd=W, env=env, capture_output=True, text=True,
                         timeout=300)
    for line in out.stdout.splitlines():
        if line.startswith("BENCH_RESULT"):
            d = json.loads(line.split(" ", 1)[1])
            return d["value"], d["unit"]
    raise RuntimeError(out.stderr[-2000:])
for name, opts, cmd, extra in CASES:
    if only and name not in only:
        continue
    old, new = [], []
    for _ in range(reps):
        v, unit = run(opts, cmd, extra, True)
        old.append(v)
        v, unit = run(opts, cmd, extra, False)
        new.append(v)
    mo, mn = statistics.median(old), statistics.median(new)
    better = mn / mo if unit.endswith("/s") else mo / mn
    print(f"{name:11s} old {mo:10.4g} new {mn:10.4g} {unit:8s} new speed / old speed = {better:.2f}  "
          f"(old {min(old):.4g}-{max(old):.4g}, new {min(new):.4g}-{max(new):.4g})", flush=True)
