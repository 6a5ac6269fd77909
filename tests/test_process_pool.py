"""corral.Pool and corral.ProcessPoolExecutor, observed from inside their workers.

The machine has 2 CPUs: disjoint sets are {0} and {1}; wider partitions are tested through
the factor, more workers than CPUs, and (in C++ and test_partition.py) fake topologies.
Every wait has a timeout: a hang is a failure, not a stuck run.
"""

import concurrent.futures
import multiprocessing
import os
import signal
import sys
import time

import pytest

import corral
from corral import _thread_limits, _worker_share
from corral._process_pool import BrokenProcessPool

CPUS = sorted(os.sched_getaffinity(0))
METHODS = ["fork", "spawn", "forkserver"]
TIMEOUT = 60

try:
    import numpy  # noqa: F401  (loaded before fork: its OpenBLAS must be limited at run time)

    HAVE_NUMPY = True
except ImportError:
    HAVE_NUMPY = False


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    """Tests decide which thread limits the 'user' set."""
    for var in (*_thread_limits.THREAD_LIMIT_VARS, _thread_limits.BUDGET_VAR, _thread_limits.MANAGED_VAR,
                "GOTO_NUM_THREADS"):
        monkeypatch.delenv(var, raising=False)


# --- what runs in the workers ---------------------------------------------------------------

_barrier = None
_seen_by_initializer = None


def _init(barrier, record_affinity=False):
    global _barrier, _seen_by_initializer
    _barrier = barrier
    if record_affinity:
        _seen_by_initializer = sorted(os.sched_getaffinity(0))


def _initial_environment():
    """The environment this process was exec'd with (before any os.environ change)."""
    with open("/proc/self/environ", "rb") as f:
        items = f.read().split(b"\0")
    return dict(item.decode().split("=", 1) for item in items if b"=" in item)


def probe(_=None, import_numpy=HAVE_NUMPY):
    """What corral sees in this worker: the same calls `python -m corral info` makes."""
    if import_numpy:
        import numpy  # noqa: F401
    share = _worker_share.current_share()
    initial = _initial_environment()
    return {
        "pid": os.getpid(),
        "affinity": sorted(os.sched_getaffinity(0)),
        "budget": corral.budget().cpus,
        "env": {v: os.environ.get(v) for v in (*_thread_limits.THREAD_LIMIT_VARS, _thread_limits.BUDGET_VAR)},
        "initial_env": {v: initial.get(v) for v in _thread_limits.THREAD_LIMIT_VARS},
        "native": {p["library"]: p["num_threads"] for p in corral.native_pools()},
        "index": share.index if share else None,
        "initializer_affinity": _seen_by_initializer,
        "nested_plan": [list(s.cpus) for s in _worker_share.plan_shares(2)],
    }


def probe_at_barrier(_=None):
    """Waits until every worker holds one of these tasks, so each worker answers once."""
    _barrier.wait(timeout=TIMEOUT)
    return probe()


def kill_myself(_=None):
    os.kill(os.getpid(), signal.SIGKILL)


def nap(seconds):
    time.sleep(seconds)
    return seconds


def probes_from_pool(pool, workers):
    return pool.map_async(probe_at_barrier, range(workers), chunksize=1).get(TIMEOUT)


def probes_from_executor(executor, workers):
    return list(executor.map(probe_at_barrier, range(workers), timeout=TIMEOUT))


def check_one_cpu_each(probes, *, spawned):
    assert sorted(p["affinity"][0] for p in probes) == CPUS[: len(probes)]
    assert len({p["pid"] for p in probes}) == len(probes)
    for p in probes:
        assert len(p["affinity"]) == 1
        assert p["budget"] == 1  # corral inside the worker sees its share: nesting composes
        assert p["nested_plan"] == [p["affinity"], p["affinity"]]
        assert p["env"]["CORRAL_CPUS"] == "1"
        assert all(p["env"][v] == "1" for v in _thread_limits.THREAD_LIMIT_VARS)
        assert all(n == 1 for n in p["native"].values()), p["native"]
        if spawned:  # the limits were in the environment the interpreter started with
            assert all(p["initial_env"][v] == "1" for v in _thread_limits.THREAD_LIMIT_VARS)


# --- tests ------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
def test_pool_workers_get_disjoint_cpus_and_limits(method):
    ctx = multiprocessing.get_context(method)
    workers = len(CPUS)
    with corral.Pool(workers, initializer=_init, initargs=(ctx.Barrier(workers),), context=ctx) as pool:
        probes = probes_from_pool(pool, workers)
        assert [s.cpus for s in pool.shares] == [(c,) for c in CPUS]
    check_one_cpu_each(probes, spawned=method == "spawn")
    assert sorted(p["index"] for p in probes) == list(range(workers))


@pytest.mark.parametrize("method", METHODS)
def test_executor_workers_get_disjoint_cpus_and_limits(method):
    ctx = multiprocessing.get_context(method)
    workers = len(CPUS)
    with corral.ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init,
                                    initargs=(ctx.Barrier(workers),)) as executor:
        probes = probes_from_executor(executor, workers)
    check_one_cpu_each(probes, spawned=method == "spawn")


def test_user_initializer_runs_after_the_share_is_applied():
    ctx = multiprocessing.get_context("fork")
    with corral.Pool(2, initializer=_init, initargs=(ctx.Barrier(2), True), context=ctx) as pool:
        probes = probes_from_pool(pool, 2)
    for p in probes:
        assert p["initializer_affinity"] == p["affinity"]


def test_factor_widens_every_worker():
    ctx = multiprocessing.get_context("fork")
    with corral.Pool(2, initializer=_init, initargs=(ctx.Barrier(2),), context=ctx, factor=2.0) as pool:
        probes = probes_from_pool(pool, 2)
    for p in probes:
        assert p["affinity"] == CPUS[: min(2, len(CPUS))]
        assert p["env"]["OMP_NUM_THREADS"] == str(len(p["affinity"]))
        assert p["budget"] == len(p["affinity"])


def test_more_workers_than_cpus_spread_evenly():
    ctx = multiprocessing.get_context("fork")
    workers = 2 * len(CPUS)
    with corral.Pool(workers, initializer=_init, initargs=(ctx.Barrier(workers),), context=ctx) as pool:
        probes = probes_from_pool(pool, workers)
    load = {}
    for p in probes:
        assert len(p["affinity"]) == 1 and p["env"]["OMP_NUM_THREADS"] == "1"
        load[p["affinity"][0]] = load.get(p["affinity"][0], 0) + 1
    assert load == {c: 2 for c in CPUS}


def test_pool_replacements_keep_their_share():
    ctx = multiprocessing.get_context("fork")
    workers = len(CPUS)
    with corral.Pool(workers, initializer=_init, initargs=(ctx.Barrier(workers),), context=ctx,
                     maxtasksperchild=1) as pool:
        rounds = [probes_from_pool(pool, workers) for _ in range(3)]
        shares = pool.shares
    pids = [p["pid"] for r in rounds for p in r]
    assert len(set(pids)) == len(pids)  # every task ran in a fresh worker
    for r in rounds:  # and the workers alive together still hold distinct CPUs
        assert sorted(p["affinity"][0] for p in r) == CPUS[:workers]
        for p in r:
            assert p["affinity"] == list(shares[p["index"]].cpus)


def test_executor_replacements_keep_their_share():
    ctx = multiprocessing.get_context("forkserver")
    workers = len(CPUS)
    with corral.ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init,
                                    initargs=(ctx.Barrier(workers),), max_tasks_per_child=1) as executor:
        rounds = [probes_from_executor(executor, workers) for _ in range(2)]
    pids = [p["pid"] for r in rounds for p in r]
    assert len(set(pids)) == len(pids)
    for r in rounds:
        assert sorted(p["affinity"][0] for p in r) == CPUS[:workers]


def probe_limits(_=None):
    """The worker's thread-limit variables and, as threadpoolctl counts them, the threads of the
    BLAS/OpenMP libraries loaded in it (inherited through fork: loaded before the user's value)."""
    from threadpoolctl import threadpool_info

    return {"env": {v: os.environ.get(v) for v in _thread_limits.THREAD_LIMIT_VARS},
            "affinity": sorted(os.sched_getaffinity(0)),
            "threads": {p["internal_api"]: p["num_threads"] for p in threadpool_info()}}


# (OMP_NUM_THREADS the user set, workers: 1 (share: every CPU) or one per CPU (share: 1), force)
# -> what a worker's OMP_NUM_THREADS is
N = str(len(CPUS))
LIMIT_CASES = {
    "above a 1-CPU share: lowered": ("1000", len(CPUS), False, "1"),
    "below a 2-CPU share: kept": ("1", 1, False, "1"),
    "at the share: kept": (N, 1, False, N),
    "force: the share even over a lower value": ("1", 1, True, N),
    "not a number: kept as set": ("auto", len(CPUS), False, "auto"),
}


@pytest.mark.skipif(len(CPUS) < 2, reason="a 2-CPU share needs 2 CPUs")
@pytest.mark.parametrize("method", ["fork", "spawn"])
@pytest.mark.parametrize("case", LIMIT_CASES)
def test_user_thread_limit_is_an_upper_bound(monkeypatch, method, case):
    user, workers, force, expected = LIMIT_CASES[case]
    monkeypatch.setenv("OMP_NUM_THREADS", user)
    share = len(CPUS) // workers
    with corral.Pool(workers, context=multiprocessing.get_context(method), force=force) as pool:
        seen = pool.apply(probe_limits)
    assert len(seen["affinity"]) == share
    assert seen["env"]["OMP_NUM_THREADS"] == expected
    assert seen["env"]["OPENBLAS_NUM_THREADS"] == str(share)  # not set by the user: the share
    if method == "fork" and HAVE_NUMPY:  # OpenBLAS loaded in the parent, before the user's value
        bound = int(expected) if expected.isdigit() else share
        assert seen["threads"].get("openblas") == min(share, bound), seen["threads"]
    assert os.environ["OMP_NUM_THREADS"] == user  # the parent's own environment is untouched
    assert _thread_limits.MANAGED_VAR not in os.environ


def test_thread_limit_decisions():
    user = {"OMP_NUM_THREADS": "16", "MKL_NUM_THREADS": "1", "BLIS_NUM_THREADS": "4,2",
            "NUMBA_NUM_THREADS": "0"}
    env = _thread_limits.environment_for(2, environ=user)
    assert env["OMP_NUM_THREADS"] == "2"  # lowered, and corral's now
    assert "MKL_NUM_THREADS" not in env and "BLIS_NUM_THREADS" not in env and "NUMBA_NUM_THREADS" not in env
    assert env["OPENBLAS_NUM_THREADS"] == "2" and env["CORRAL_CPUS"] == "2"
    assert "OMP_NUM_THREADS" in env[_thread_limits.MANAGED_VAR].split(",")
    assert "MKL_NUM_THREADS" not in env[_thread_limits.MANAGED_VAR].split(",")
    assert _thread_limits.native_limit(2, environ=user) == 1  # MKL_NUM_THREADS=1 bounds loaded libraries
    assert _thread_limits.native_limit(2, environ=user, force=True) == 2
    forced = _thread_limits.environment_for(2, environ=user, force=True)
    assert all(forced[v] == "2" for v in _thread_limits.THREAD_LIMIT_VARS)
    lines = "\n".join(_thread_limits.describe_user_limits(2, environ=user))
    assert "OMP_NUM_THREADS=16: lowered" in lines and "MKL_NUM_THREADS=1: kept" in lines
    assert "BLIS_NUM_THREADS=4,2: kept as you set it" in lines


def test_killed_pool_worker_fails_pending_results_instead_of_hanging():
    ctx = multiprocessing.get_context("fork")
    pool = corral.Pool(2, context=ctx)
    try:
        slow = pool.apply_async(nap, (3,))
        mapped = pool.map_async(nap, [0.01] * 40, chunksize=1)
        killed = pool.apply_async(kill_myself)
        started = time.monotonic()
        with pytest.raises(BrokenProcessPool, match=r"killed by SIGKILL") as info:
            killed.get(TIMEOUT)
        assert "worker process" in str(info.value)
        for result in (slow, mapped):
            try:
                result.get(TIMEOUT)  # done before the kill, or failed by it: never a hang
            except BrokenProcessPool:
                pass
        assert time.monotonic() - started < 20
        with pytest.raises(BrokenProcessPool):
            pool.apply_async(nap, (0,))
    finally:
        pool.terminate()
        pool.join()


def exit_in_task(how):
    """What a library that calls sys.exit() does to the worker running it."""
    if how == "os._exit(0)":
        os._exit(0)
    sys.exit(None if how == "sys.exit()" else 0)


def exit_on_two(x):
    if x == 2:
        sys.exit()
    time.sleep(0.05)
    return x


@pytest.mark.parametrize(("method", "how", "maxtasks"), [
    *(("fork", how, maxtasks) for how in ("sys.exit()", "sys.exit(0)", "os._exit(0)") for maxtasks in (None, 3)),
    ("spawn", "sys.exit()", 3),  # the task mark must reach workers that are not forked
    ("forkserver", "os._exit(0)", 3),
])
def test_pool_worker_exiting_with_code_0_in_a_task_breaks_the_pool(method, how, maxtasks):
    ctx = multiprocessing.get_context(method)
    pool = corral.Pool(2, context=ctx, maxtasksperchild=maxtasks)
    try:
        pending = pool.map_async(nap, [0.3] * 4, chunksize=1)
        lost = pool.apply_async(exit_in_task, (how,))
        with pytest.raises(BrokenProcessPool, match=r"exited with code 0 in the middle of a task"):
            lost.get(TIMEOUT)
        try:
            pending.get(TIMEOUT)  # done before the exit, or failed by it: never a hang
        except BrokenProcessPool:
            pass
        with pytest.raises(BrokenProcessPool):
            pool.apply_async(nap, (0,))
    finally:
        pool.terminate()
        pool.join()


def test_pool_map_with_a_task_calling_sys_exit_fails_instead_of_hanging():
    """The case of pool_worker_exit_code_0_hangs.py: map_async over a task that calls sys.exit()."""
    with corral.Pool(2, context=multiprocessing.get_context("fork")) as pool:
        started = time.monotonic()
        with pytest.raises(BrokenProcessPool):
            pool.map_async(exit_on_two, range(6)).get(TIMEOUT)
        assert time.monotonic() - started < 10


def test_pool_workers_retiring_after_maxtasksperchild_are_not_deaths():
    ctx = multiprocessing.get_context("fork")
    with corral.Pool(2, context=ctx, maxtasksperchild=1) as pool:
        pids = [pool.apply_async(os.getpid).get(TIMEOUT) for _ in range(8)]
        assert len(set(pids)) == 8  # 8 retirements with code 0, each between tasks
        assert pool.apply_async(nap, (0,)).get(TIMEOUT) == 0  # not broken
        pool.close()
        pool.join()  # close() sends every worker home with code 0: not a death either


def test_executor_worker_exiting_with_code_0_is_the_stdlibs_behaviour():
    # os._exit(0): the stdlib's executor sees the worker gone and breaks (BrokenProcessPool);
    # sys.exit() is an exception the stdlib's worker catches and sends back as the task's result.
    for how, error in (("os._exit(0)", BrokenProcessPool), ("sys.exit()", SystemExit)):
        with corral.ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("fork")) as executor:
            with pytest.raises(error):
                executor.submit(exit_in_task, how).result(TIMEOUT)


def test_killed_pool_worker_ends_imap():
    ctx = multiprocessing.get_context("fork")
    with corral.Pool(1, context=ctx) as pool:
        it = pool.imap(kill_myself, range(3))
        with pytest.raises(BrokenProcessPool, match="SIGKILL"):
            it.next(TIMEOUT)


def test_killed_executor_worker_breaks_the_executor():
    with corral.ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("fork")) as executor:
        future = executor.submit(kill_myself)
        with pytest.raises(BrokenProcessPool):
            future.result(TIMEOUT)
        with pytest.raises(BrokenProcessPool):
            executor.submit(nap, 0)


def test_bad_arguments_are_clear_errors():
    with pytest.raises(ValueError, match="factor"):
        corral.Pool(1, factor=0.5)
    with pytest.raises(ValueError, match="at least 1"):
        corral.Pool(0)
    with pytest.raises(ValueError, match="factor"):
        corral.ProcessPoolExecutor(1, factor=float("nan"))
    for factor in ("2", b"2", [2]):  # a number, as documented; the runner converts its -f text itself
        with pytest.raises(TypeError, match="factor"):
            corral.Pool(1, factor=factor)
        with pytest.raises(TypeError, match="factor"):
            corral.ProcessPoolExecutor(1, factor=factor)
    with pytest.raises(ValueError):
        corral.ProcessPoolExecutor(0)


def test_default_size_is_the_budget(monkeypatch):
    monkeypatch.setenv("CORRAL_CPUS", "1")
    with corral.Pool(context=multiprocessing.get_context("fork")) as pool:
        assert pool._processes == 1
    executor = corral.ProcessPoolExecutor()
    assert executor._max_workers == 1
    executor.shutdown()


def test_patch_targets_cover_every_entry_point():
    from corral import _process_pool

    targets = {(owner, name): replacement for owner, name, replacement in _process_pool.patch_targets()}
    assert (multiprocessing.pool, "Pool") not in targets  # the name stays the stdlib's (ThreadPool's base)
    assert targets[(concurrent.futures, "ProcessPoolExecutor")] is corral.ProcessPoolExecutor
    assert targets[(concurrent.futures.process, "ProcessPoolExecutor")] is corral.ProcessPoolExecutor
    context_pool = targets[(multiprocessing.context.BaseContext, "Pool")]
    for owner, name in targets:
        assert hasattr(owner, name)
    ctx = multiprocessing.get_context("fork")
    pool = context_pool(ctx, 1)
    try:
        assert isinstance(pool, corral.Pool)
        assert pool._ctx.base is ctx
        assert pool.apply(abs, (-4,)) == 4
    finally:
        pool.terminate()
        pool.join()


def test_patched_names_keep_the_stdlib_thread_pool_working():
    stdlib_thread_pool = multiprocessing.pool.ThreadPool
    with corral.patch():
        # The stdlib ThreadPool calls its module global Pool.__init__, which the patch redirects for
        # Pool itself only: a thread pool (the stdlib's class, or corral's) gets the stdlib's set-up.
        for cls in (stdlib_thread_pool, multiprocessing.pool.ThreadPool):
            with cls(2) as threads:
                assert threads.map(abs, [-1, -2]) == [1, 2]
                assert not isinstance(threads, corral.Pool)
                assert isinstance(threads, multiprocessing.pool.Pool)  # as under plain python
        with multiprocessing.Pool(1) as pool:  # bound to the default context before the patch
            assert isinstance(pool, corral.Pool)
            assert pool.apply(probe, (None, False))["env"]["CORRAL_CPUS"] == str(len(CPUS))  # one worker: all CPUs
        fork = multiprocessing.get_context("fork")
        with concurrent.futures.ProcessPoolExecutor(1, mp_context=fork) as executor:
            assert isinstance(executor, corral.ProcessPoolExecutor)
