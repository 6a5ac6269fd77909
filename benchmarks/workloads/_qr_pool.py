"""The seed's demo, shared by W1-W3: a thread pool maps np.linalg.qr over a list of square arrays.

    pool = ThreadPool(ncpu)
    for _ in range(3):
        pool.map(np.linalg.qr, arrays)

Each task is a LAPACK call that releases the GIL and may start BLAS threads of its own: the two layers
of parallelism that multiply.
"""

from __future__ import annotations

import numpy as np

import _common


def run(workload: str, description: str, default_pool: int | None = None, default_big: int = 0) -> None:
    p = _common.parser(description)
    p.add_argument("--arrays", type=_common.positive_int, default=64, help="number of arrays (tasks per pass)")
    p.add_argument("--n", type=_common.positive_int, default=256, help="side of each array")
    p.add_argument("--big", type=int, default=default_big,
                   help="side of one extra-large array placed in the middle of the list (0: none)")
    args = p.parse_args()
    pool = args.pool or default_pool or _common.cpu_count()

    rng = np.random.default_rng(args.seed)
    arrays = [rng.random((args.n, args.n)) for _ in range(args.arrays)]
    if args.big > 0:
        arrays.insert(len(arrays) // 2, rng.random((args.big, args.big)))

    last: list = []
    with _common.thread_map(args.impl, pool) as pmap:
        def one_pass():
            last[:] = pmap(np.linalg.qr, arrays)

        seconds = _common.timed_passes(args.passes, one_pass)

    _common.check(len(last) == len(arrays), f"{len(last)} results for {len(arrays)} arrays")
    for index in (0, len(arrays) // 2, len(arrays) - 1):
        q, r = last[index]
        _common.check(np.allclose(q @ r, arrays[index]), f"Q @ R differs from array {index}")
    _common.emit(workload, args.impl, pool, sum(seconds), "s", passes=seconds, tasks=len(arrays))
