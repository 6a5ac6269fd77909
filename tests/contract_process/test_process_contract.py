"""The process contract: what code written for the stdlib's process pools relies on, run against
the stdlib and against corral, so that corral's pools are drop-in replacements.

Every wait has a timeout: a hang fails the test instead of stopping the run.
"""

import concurrent.futures
import concurrent.futures.process
import multiprocessing
import multiprocessing.pool
import os
import time

import pytest

import corral

TIMEOUT = 60
FORK = multiprocessing.get_context("fork")
SPAWN = multiprocessing.get_context("spawn")

POOLS = {"stdlib": multiprocessing.pool.Pool, "corral": corral.Pool}
EXECUTORS = {"stdlib": concurrent.futures.ProcessPoolExecutor, "corral": corral.ProcessPoolExecutor}


@pytest.fixture(params=sorted(POOLS))
def Pool(request):  # noqa: N802 (stands for the class)
    return POOLS[request.param]


@pytest.fixture(params=sorted(EXECUTORS))
def Executor(request):  # noqa: N802
    return EXECUTORS[request.param]


# --- work done in the workers (module level: spawn pickles them by name) ----------------------

_state = None


def remember(value):
    global _state
    _state = value


def recall(_=None):
    return _state


def square(x):
    return x * x


def add(a, b):
    return a + b


def pid(_=None):
    return os.getpid()


def fail_on_three(x):
    if x == 3:
        raise KeyError(f"bad item {x}")
    return x


def nap(seconds):
    time.sleep(seconds)
    return seconds


def failing_initializer():
    raise RuntimeError("initializer failed")


# --- multiprocessing.Pool ---------------------------------------------------------------------


def test_pool_map_keeps_order(Pool):
    with Pool(2, context=FORK) as pool:
        assert pool.map(square, range(50)) == [x * x for x in range(50)]
        assert pool.map(square, range(50), chunksize=7) == [x * x for x in range(50)]
        assert pool.map(square, []) == []
        assert pool.starmap(add, [(1, 2), (3, 4)]) == [3, 7]
        assert pool.starmap_async(add, [(5, 6)]).get(TIMEOUT) == [11]


def test_pool_imap_and_imap_unordered(Pool):
    with Pool(2, context=FORK) as pool:
        assert list(pool.imap(square, range(20), chunksize=3)) == [x * x for x in range(20)]
        assert sorted(pool.imap_unordered(square, range(20))) == [x * x for x in range(20)]


def test_pool_apply_and_callbacks(Pool):
    got, errors = [], []
    with Pool(2, context=FORK) as pool:
        assert pool.apply(add, (2, 3)) == 5
        result = pool.apply_async(square, (7,), callback=got.append)
        assert result.get(TIMEOUT) == 49 and result.ready() and result.successful()
        failed = pool.apply_async(fail_on_three, (3,), error_callback=errors.append)
        failed.wait(TIMEOUT)
        assert failed.ready() and not failed.successful()
        mapped = pool.map_async(square, [1, 2], callback=got.append)
        mapped.get(TIMEOUT)
    assert got == [49, [1, 4]]
    assert len(errors) == 1 and isinstance(errors[0], KeyError)


def test_pool_exception_carries_the_remote_traceback(Pool):
    with Pool(2, context=FORK) as pool:
        with pytest.raises(KeyError, match="bad item 3") as info:
            pool.map(fail_on_three, range(6))
        assert "fail_on_three" in str(info.value.__cause__)
        assert list(pool.imap(fail_on_three, [1, 2])) == [1, 2]  # the pool is still usable


def test_pool_get_timeout(Pool):
    with Pool(1, context=FORK) as pool:
        result = pool.apply_async(nap, (1,))
        with pytest.raises(multiprocessing.TimeoutError):
            result.get(0.05)
        assert result.get(TIMEOUT) == 1


def test_pool_initializer_runs_in_every_worker(Pool):
    with Pool(2, initializer=remember, initargs=("ready",), context=FORK) as pool:
        assert set(pool.map(recall, range(8), chunksize=1)) == {"ready"}


def test_pool_maxtasksperchild_replaces_workers(Pool):
    with Pool(1, maxtasksperchild=1, context=FORK) as pool:
        pids = [pool.apply(pid) for _ in range(3)]
    assert len(set(pids)) == 3


def test_pool_close_join_and_state_errors(Pool):
    pool = Pool(2, context=FORK)
    result = pool.map_async(nap, [0.05] * 4)
    with pytest.raises(ValueError):
        pool.join()  # still running
    pool.close()
    with pytest.raises(ValueError):
        pool.apply_async(square, (1,))
    pool.join()
    assert result.get(0) == [0.05] * 4  # close lets queued work finish


def test_pool_terminate_is_prompt(Pool):
    pool = Pool(2, context=FORK)
    pool.map_async(nap, [30, 30])
    time.sleep(0.1)
    started = time.monotonic()
    pool.terminate()
    pool.join()
    assert time.monotonic() - started < 10


def test_pool_context_manager_terminates(Pool):
    with Pool(1, context=FORK) as pool:
        assert pool.apply(square, (3,)) == 9
    with pytest.raises(ValueError):
        pool.apply(square, (3,))


def test_pool_with_spawn(Pool):
    with Pool(2, initializer=remember, initargs=(5,), context=SPAWN) as pool:
        assert pool.map(square, range(6)) == [0, 1, 4, 9, 16, 25]
        assert pool.apply(recall) == 5


# --- concurrent.futures.ProcessPoolExecutor ---------------------------------------------------


def test_executor_submit_and_map(Executor):
    with Executor(2, mp_context=FORK) as executor:
        assert executor.submit(add, 2, 3).result(TIMEOUT) == 5
        assert list(executor.map(square, range(30), timeout=TIMEOUT)) == [x * x for x in range(30)]
        assert list(executor.map(add, range(10), range(10), chunksize=4)) == [2 * x for x in range(10)]
        done, _ = concurrent.futures.wait([executor.submit(square, i) for i in range(5)], timeout=TIMEOUT)
        assert sorted(f.result() for f in done) == [0, 1, 4, 9, 16]


def test_executor_exception_carries_the_remote_traceback(Executor):
    with Executor(2, mp_context=FORK) as executor:
        future = executor.submit(fail_on_three, 3)
        with pytest.raises(KeyError) as info:
            future.result(TIMEOUT)
        assert "fail_on_three" in str(info.value.__cause__)
        assert isinstance(future.exception(), KeyError)
        results = executor.map(fail_on_three, range(5))
        assert [next(results), next(results), next(results)] == [0, 1, 2]
        with pytest.raises(KeyError):
            next(results)


def test_executor_map_timeout(Executor):
    with Executor(1, mp_context=FORK) as executor:
        with pytest.raises(concurrent.futures.TimeoutError):
            list(executor.map(nap, [0.5, 0.5], timeout=0.1))


def test_executor_initializer(Executor):
    with Executor(2, mp_context=FORK, initializer=remember, initargs=("ready",)) as executor:
        assert set(executor.map(recall, range(6))) == {"ready"}


def test_executor_failing_initializer_breaks_it(Executor):
    with Executor(1, mp_context=FORK, initializer=failing_initializer) as executor:
        future = executor.submit(square, 2)
        with pytest.raises(concurrent.futures.process.BrokenProcessPool):
            future.result(TIMEOUT)


def test_executor_max_tasks_per_child(Executor):
    with Executor(1, mp_context=SPAWN, max_tasks_per_child=1) as executor:
        pids = [executor.submit(pid).result(TIMEOUT) for _ in range(3)]
    assert len(set(pids)) == 3
    with pytest.raises(ValueError):
        Executor(1, mp_context=FORK, max_tasks_per_child=1)


def test_executor_shutdown_semantics(Executor):
    executor = Executor(1, mp_context=FORK)
    futures = [executor.submit(nap, 0.05) for _ in range(3)]
    executor.shutdown(wait=True)
    assert [f.result(0) for f in futures] == [0.05] * 3  # shutdown(wait) finishes pending work
    with pytest.raises(RuntimeError):
        executor.submit(square, 1)

    executor = Executor(1, mp_context=FORK)
    running = executor.submit(nap, 0.5)
    queued = [executor.submit(nap, 0.5) for _ in range(6)]
    time.sleep(0.2)
    executor.shutdown(wait=True, cancel_futures=True)
    assert running.result(0) == 0.5
    assert any(f.cancelled() for f in queued)
    assert all(f.done() for f in queued)


def test_executor_with_spawn(Executor):
    with Executor(2, mp_context=SPAWN, initializer=remember, initargs=(5,)) as executor:
        assert list(executor.map(square, range(6))) == [0, 1, 4, 9, 16, 25]
        assert executor.submit(recall).result(TIMEOUT) == 5


@pytest.mark.requires_python((3, 14))
@pytest.mark.parametrize("how", ["terminate_workers", "kill_workers"])
def test_executor_terminate_and_kill_workers(Executor, how):
    # 3.14: stop every worker at once. As in the stdlib: queued work is cancelled, work that was running
    # fails with BrokenProcessPool, and nothing waits for the 30 s naps.
    ex = Executor(max_workers=2, mp_context=FORK)
    busy = [ex.submit(nap, 30) for _ in range(4)]
    time.sleep(0.5)
    started = time.monotonic()
    getattr(ex, how)()
    for future in busy:
        with pytest.raises((concurrent.futures.process.BrokenProcessPool, concurrent.futures.CancelledError)):
            future.result(timeout=TIMEOUT)
    assert time.monotonic() - started < 20
    ex.shutdown(wait=True)


@pytest.mark.requires_python((3, 14))
def test_executor_map_with_buffersize(Executor):
    with Executor(max_workers=2, mp_context=FORK) as ex:
        assert list(ex.map(square, range(20), buffersize=3)) == [i * i for i in range(20)]
