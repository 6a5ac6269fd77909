#!/usr/bin/env python3
"""`make demo`: the seed's oversubscription demo, plain Python against `python -m corral`.

    pool = ThreadPool(os.cpu_count())
    for _ in range(3):
        pool.map(np.linalg.qr, arrays)

runs twice in fresh interpreters, once as written and once under `python -m corral`, first as is and
then as in a container that claims 16 CPUs (pool of 16, OPENBLAS/OMP/MKL_NUM_THREADS=16). Prints each
pass, the totals and their ratio. Where the corral runner is not built yet it runs plain only and says
so. The script timed is benchmarks/workloads/w1_balanced.py (W1 and W3 of the benchmark suite).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(1, str(HERE / "workloads"))

import _common  # noqa: E402
import configs  # noqa: E402
import machine as machine_info  # noqa: E402
from workload_specs import emulated_cpus  # noqa: E402

SCRIPT = HERE / "workloads" / "w1_balanced.py"


def timed(python: str, runner: list[str], args: list[str], env_extra: dict[str, str]) -> dict:
    env = configs.base_environment()
    env.update(env_extra)
    out = subprocess.run([python, *runner, str(SCRIPT), *args], env=env, capture_output=True, text=True,
                         timeout=600)
    result = _common.read_result(out.stdout) if out.returncode == 0 else None
    if result is None:
        raise RuntimeError(f"{' '.join(runner) or 'plain'} run failed: {configs.last_line(out.stderr or out.stdout)}")
    return result


def row(label: str, result: dict) -> str:
    passes = "  ".join(f"{p:7.3f} s" for p in result["passes"])
    return f"  {label:<22} {passes}   total {result['value']:7.3f} s"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="the seed's demo, plain against python -m corral")
    p.add_argument("--quick", action="store_true", help="tiny arrays, one pass: checks the demo runs (not speed)")
    opts = p.parse_args(argv)
    python = sys.executable
    machine = machine_info.describe(python)
    budget = machine["budget"]
    corral_missing = configs.runner_error(python, ["-m", "corral"])
    arrays, side, passes = (4 * budget, 64, 1) if opts.quick else (32 * budget, 256, 3)
    print(f"corral demo on {machine_info.summary_line(machine)}")
    print(f"ThreadPool(...).map(np.linalg.qr, {arrays} arrays of {side}x{side}), {passes} pass(es):\n")

    claimed = emulated_cpus(budget)
    scenarios = [
        (f"as is (pool of os.cpu_count() = {machine['logical_cpus']}, library defaults)", [], {}),
        (f"container claiming {claimed} CPUs (pool of {claimed}, OPENBLAS/OMP/MKL_NUM_THREADS={claimed})",
         ["--pool", str(claimed)],
         {name: str(claimed) for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")}),
    ]
    for title, extra_args, env in scenarios:
        args = ["--arrays", str(arrays), "--n", str(side), "--passes", str(passes), *extra_args]
        print(title)
        plain = timed(python, [], args, env)
        print(row("python", plain))
        if corral_missing is None:
            under_corral = timed(python, ["-m", "corral"], args, env)
            print(row("python -m corral", under_corral))
            ratio = plain["value"] / under_corral["value"]
            verdict = "faster" if ratio >= 1 else "slower"
            print(f"  corral is {ratio if ratio >= 1 else 1 / ratio:.2f}x {verdict} than plain\n")
        else:
            print("  python -m corral       not available yet\n")

    if corral_missing is not None:
        print(f"The corral column is not available yet: {corral_missing}\n")
    info = subprocess.run([python, "-m", "corral", "info"], capture_output=True, text=True, timeout=60)
    print("$ python -m corral info")
    print((info.stdout or info.stderr).rstrip() or f"(exit {info.returncode}, no output)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
