#!/usr/bin/env python3
"""W2 unbalanced: W1 with one 2000x2000 array among the small ones (--big). One task is about a hundred
times the others, so whoever runs it should get the BLAS threads the idle pool workers no longer use.
Prints one BENCH_RESULT JSON line."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _qr_pool  # noqa: E402

if __name__ == "__main__":
    _qr_pool.run("W2", __doc__, default_big=2000)
