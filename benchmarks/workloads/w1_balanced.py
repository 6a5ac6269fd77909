#!/usr/bin/env python3
"""W1 balanced: the seed's demo. A multiprocessing.pool.ThreadPool of os.cpu_count() threads maps
np.linalg.qr over equal arrays (default 64 of 256x256), three passes. Prints one BENCH_RESULT JSON line."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _qr_pool  # noqa: E402

if __name__ == "__main__":
    _qr_pool.run("W1", __doc__)
