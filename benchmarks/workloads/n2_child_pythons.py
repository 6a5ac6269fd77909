#!/usr/bin/env python3
"""N2 child Pythons: a program without pools that runs short Python children one after another with
subprocess, as build scripts and test drivers do (`python -c pass` by default: the worst case, a child that
does nothing but start). Under `python -m corral` every child joins the budget before its own code runs
(docs/children.md), which costs it corral's start-up; the target is the same as N1's: within 3% of plain
python. Prints one BENCH_RESULT JSON line (milliseconds per child)."""

import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common  # noqa: E402


def main():
    p = _common.parser(__doc__, impls=("stdlib",), pool=False)  # no pool to replace or size
    p.add_argument("--children", type=_common.positive_int, default=40, help="children started per pass")
    p.add_argument("--child-code", default="pass", help="what each child runs (python -c)")
    args = p.parse_args()
    command = [sys.executable, "-c", args.child_code]

    def one_pass():
        for _ in range(args.children):
            subprocess.run(command, check=True)

    seconds = _common.timed_passes(args.passes, one_pass)
    joined = "CORRAL_CHILDREN" in os.environ  # whether the children join the budget (under the runner)
    _common.emit("N2", args.impl, 1, sum(seconds) * 1e3 / (args.passes * args.children), "ms", passes=seconds,
                 children=args.children, child_code=args.child_code, children_join=joined)


if __name__ == "__main__":
    main()
