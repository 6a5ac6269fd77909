#!/usr/bin/env python3
"""W3 emulated big machine: W1 as it runs in a container that reports more CPUs than its quota. The
harness runs it with a pool of 16 (--pool) and OPENBLAS/OMP/MKL_NUM_THREADS=16, the numbers such a
program reads from os.cpu_count() and its libraries, and without CORRAL_CPUS: a tool that limits
threads must find the real budget itself. Prints one BENCH_RESULT JSON line."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _qr_pool  # noqa: E402

if __name__ == "__main__":
    _qr_pool.run("W3", __doc__)
