#!/usr/bin/env python3
"""W9 side by side: four copies of the seed's demo (w1_balanced.py) started at once on the machine, as four
notebooks or four batch jobs would be. Each copy sizes itself for the whole machine; the time until the
last of the four finishes is the result. One BENCH_RESULT JSON line.

    --runner plain    python w1_balanced.py              (each copy: library defaults)
    --runner corral   python -m corral w1_balanced.py    (each copy its own budget: four budgets)
    --runner share    python -m corral --share NAME w1_balanced.py   (one machine share for the four)
    --make            the four as targets of `make -j4` (recipes marked '+', so that make passes its
                      jobserver): under corral each copy draws its permits beyond its first from make's
                      tokens (--runner share is not used there: the jobserver is the share)
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _common  # noqa: E402

DEMO = HERE / "w1_balanced.py"
# A make above the harness (make bench) must not leak into the inner make or the copies.
MAKE_VARS = ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES")


def copy_command(runner: str, share: str, demo_args: list[str]) -> list[str]:
    prefix = {"plain": [], "corral": ["-m", "corral"], "share": ["-m", "corral", "--share", share]}[runner]
    return [sys.executable, *prefix, str(DEMO), *demo_args]


def run_side_by_side(commands: list[list[str]], env: dict[str, str]) -> tuple[float, list[str]]:
    start = time.perf_counter()
    procs = [subprocess.Popen(c, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for c in commands]
    outputs = [p.communicate() for p in procs]
    seconds = time.perf_counter() - start
    for p, (_, err) in zip(procs, outputs):
        _common.check(p.returncode == 0, f"a copy failed (exit {p.returncode}): {err.strip()[-300:]}")
    return seconds, [out for out, _ in outputs]


def run_under_make(commands: list[list[str]], env: dict[str, str], jobs: int) -> tuple[float, list[str]]:
    make = shutil.which("make")
    _common.check(make is not None, "GNU make is not installed")
    with tempfile.TemporaryDirectory(prefix="corral-w9-") as tmp:
        targets = [f"copy{i}" for i in range(len(commands))]
        rules = [f"all: {' '.join(targets)}", ".PHONY: all " + " ".join(targets)]
        for target, command in zip(targets, commands):
            # '+': make treats the recipe as recursive and passes its jobserver to it.
            rules.append(f"{target}:\n\t+@{' '.join(command)} > {target}.out")
        Path(tmp, "Makefile").write_text("\n".join(rules) + "\n")
        start = time.perf_counter()
        out = subprocess.run([make, f"-j{jobs}", "-s", "-C", tmp], env=env, capture_output=True, text=True)
        seconds = time.perf_counter() - start
        _common.check(out.returncode == 0, f"make failed (exit {out.returncode}): {out.stderr.strip()[-300:]}")
        return seconds, [Path(tmp, f"{t}.out").read_text() for t in targets]


def main() -> None:
    p = _common.parser(__doc__.split("\n\n")[0])
    p.add_argument("--runner", choices=("plain", "corral", "share"), default="plain")
    p.add_argument("--make", action="store_true", help="run the copies as targets of make -jCOPIES")
    p.add_argument("--copies", type=_common.positive_int, default=4)
    p.add_argument("--arrays", type=_common.positive_int, default=64)
    p.add_argument("--n", type=_common.positive_int, default=256)
    args = p.parse_args()
    if args.make and args.runner == "share":
        p.error("--make with --runner share: under make the jobserver is the share (use --runner corral)")
    demo_args = ["--arrays", str(args.arrays), "--n", str(args.n), "--passes", str(args.passes)]
    if args.pool:
        demo_args += ["--pool", str(args.pool)]
    share = f"w9-{os.getpid()}"  # a share of this run's own: repetitions never meet
    commands = [copy_command(args.runner, share, demo_args) for _ in range(args.copies)]
    env = {k: v for k, v in os.environ.items() if k not in MAKE_VARS}
    if args.make:
        seconds, outputs = run_under_make(commands, env, args.copies)
    else:
        seconds, outputs = run_side_by_side(commands, env)
    results = [_common.read_result(out) for out in outputs]
    _common.check(all(r is not None for r in results), "a copy printed no result")
    label = ("make -j%d " % args.copies if args.make else "") + args.runner
    _common.emit("W9", label, args.copies, seconds, "s", copies=[r["value"] for r in results],
                 copy_passes=args.passes)


if __name__ == "__main__":
    main()
