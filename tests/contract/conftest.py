"""The contract suite: one set of tests run against the stdlib pools and corral's.

Every test takes `Pool` (a multiprocessing.pool.ThreadPool-like class) or `Executor`
(a concurrent.futures.ThreadPoolExecutor-like class); each is parametrized over the
implementations, so a behaviour corral changes shows up as a failure next to the
stdlib's pass.
"""

import concurrent.futures
import multiprocessing.pool

import pytest


def _corral_pool():
    import corral

    return corral.ThreadPool


def _corral_executor():
    import corral

    return corral.ThreadPoolExecutor


POOLS = {"stdlib": lambda: multiprocessing.pool.ThreadPool, "corral": _corral_pool}
EXECUTORS = {"stdlib": lambda: concurrent.futures.ThreadPoolExecutor, "corral": _corral_executor}


@pytest.fixture(params=sorted(POOLS))
def Pool(request):
    return POOLS[request.param]()


@pytest.fixture(params=sorted(EXECUTORS))
def Executor(request):
    return EXECUTORS[request.param]()
