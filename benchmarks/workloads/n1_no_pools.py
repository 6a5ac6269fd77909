#!/usr/bin/env python3
"""N1 no pools: a program without any pool, its BLAS/LAPACK calls in a main-thread loop, as most numpy
scripts are: np.linalg.qr on 128x128 (x200), 256x256 (x60) and 512x512 (x10) matrices (issue 12's case),
then the seed's single-threaded-Python loop of matmuls that OpenBLAS runs on every core. Under
`python -m corral` it must run as fast as under plain python (target: within 3%). Prints one BENCH_RESULT
JSON line (seconds) whose `answer` (a checksum of the R factors and products) the harness compares with
plain python's."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common  # noqa: E402

QR_LOOPS = ((128, 200), (256, 60), (512, 10))  # side, calls


def main():
    p = _common.parser(__doc__, impls=("stdlib",), pool=False)  # no pool to replace or size
    p.add_argument("--scale", type=float, default=1.0, help="multiplies every loop's number of calls")
    p.add_argument("--matmul-n", type=_common.positive_int, default=1000, help="side of the matmul loop's matrices")
    p.add_argument("--matmuls", type=_common.positive_int, default=10, help="matmuls in the loop")
    args = p.parse_args()

    import numpy as np

    rng = np.random.default_rng(args.seed)
    qr_inputs = [(rng.standard_normal((n, n)), max(1, round(calls * args.scale))) for n, calls in QR_LOOPS]
    a = rng.standard_normal((args.matmul_n, args.matmul_n)) / args.matmul_n ** 0.5
    checksum: list = []

    def one_pass():
        total = 0.0
        for matrix, calls in qr_inputs:
            for _ in range(calls):
                total += float(np.abs(np.diag(np.linalg.qr(matrix, mode="r"))).sum())
        b = a
        for _ in range(args.matmuls):
            b = a @ b
        checksum.append(total + float(np.abs(b).sum()))

    seconds = _common.timed_passes(args.passes, one_pass)
    _common.emit("N1", args.impl, 1, sum(seconds), "s", passes=seconds, answer=checksum[-1])


if __name__ == "__main__":
    main()
