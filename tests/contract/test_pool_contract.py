"""multiprocessing.pool.ThreadPool's API, as the stdlib behaves (see conftest.py)."""

import signal
import threading
import time
import traceback

import pytest


def square(x):
    return x * x


def add(a, b):
    return a + b


def fail_on_three(x):
    if x == 3:
        raise ValueError(f"bad value {x}")
    return x


def raise_lookup():
    raise LookupError("from the task")


def test_apply_passes_args_and_kwargs(Pool):
    with Pool(2) as pool:
        assert pool.apply(add, (2, 3)) == 5
        assert pool.apply(add, (), {"a": "x", "b": "y"}) == "xy"


def test_map_keeps_order(Pool):
    with Pool(4) as pool:
        assert pool.map(square, range(100)) == [x * x for x in range(100)]
        assert pool.map(square, []) == []


@pytest.mark.parametrize("chunksize", [1, 3, 7, 200])
def test_map_with_chunksize(Pool, chunksize):
    with Pool(3) as pool:
        assert pool.map(square, range(50), chunksize) == [x * x for x in range(50)]


def test_map_accepts_a_generator(Pool):
    with Pool(2) as pool:
        assert pool.map(square, (x for x in range(10))) == [x * x for x in range(10)]


def test_starmap(Pool):
    with Pool(2) as pool:
        assert pool.starmap(add, [(1, 2), (3, 4), ("a", "b")]) == [3, 7, "ab"]
        res = pool.starmap_async(add, [(i, i) for i in range(20)], chunksize=4)
        assert res.get(timeout=10) == [2 * i for i in range(20)]


def test_imap_is_ordered_and_lazy_results(Pool):
    with Pool(3) as pool:
        assert list(pool.imap(square, range(30))) == [x * x for x in range(30)]
        assert list(pool.imap(square, range(30), chunksize=4)) == [x * x for x in range(30)]
        it = pool.imap(square, range(5))
        assert it.next(timeout=10) == 0
        assert next(it) == 1


def test_imap_unordered_has_every_result(Pool):
    with Pool(3) as pool:
        assert sorted(pool.imap_unordered(square, range(30))) == [x * x for x in range(30)]
        assert sorted(pool.imap_unordered(square, range(30), chunksize=5)) == [x * x for x in range(30)]


def test_imap_raises_at_the_failing_item(Pool):
    with Pool(2) as pool:
        it = pool.imap(fail_on_three, range(6))
        assert [next(it) for _ in range(3)] == [0, 1, 2]
        with pytest.raises(ValueError, match="bad value 3"):
            next(it)
        assert list(it) == [4, 5]


def test_apply_async_callback(Pool):
    got = []
    done = threading.Event()

    def callback(value):
        got.append(value)
        done.set()

    with Pool(2) as pool:
        res = pool.apply_async(square, (7,), callback=callback)
        assert res.get(timeout=10) == 49
        assert done.wait(10)
        assert got == [49]
        assert res.ready() and res.successful()


def test_apply_async_error_callback(Pool):
    errors = []
    with Pool(2) as pool:
        res = pool.apply_async(raise_lookup, error_callback=errors.append)
        res.wait(10)
        assert res.ready()
        assert not res.successful()
        with pytest.raises(LookupError, match="from the task"):
            res.get()
    assert len(errors) == 1 and isinstance(errors[0], LookupError)


def test_successful_before_ready_raises(Pool):
    gate = threading.Event()
    with Pool(1) as pool:
        res = pool.apply_async(gate.wait, (10,))
        with pytest.raises(ValueError):
            res.successful()
        gate.set()
        assert res.get(timeout=10) is True


def test_get_timeout(Pool):
    import multiprocessing

    gate = threading.Event()
    with Pool(1) as pool:
        res = pool.apply_async(gate.wait, (10,))
        with pytest.raises(multiprocessing.TimeoutError):
            res.get(timeout=0.05)
        gate.set()
        assert res.get(timeout=10) is True


def test_map_async_callbacks(Pool):
    got, errors = [], []
    with Pool(2) as pool:
        res = pool.map_async(square, range(10), callback=got.append)
        assert res.get(timeout=10) == [x * x for x in range(10)]
        bad = pool.map_async(fail_on_three, range(10), chunksize=2, error_callback=errors.append)
        with pytest.raises(ValueError):
            bad.get(timeout=10)
        bad.wait(10)
    pool.join()
    assert got == [[x * x for x in range(10)]]
    assert len(errors) == 1 and isinstance(errors[0], ValueError)


def test_map_raises_the_tasks_exception(Pool):
    with Pool(2) as pool:
        with pytest.raises(ValueError, match="bad value 3"):
            pool.map(fail_on_three, range(10))
        # The pool still works after a failed map.
        assert pool.map(square, range(3)) == [0, 1, 4]


def test_exception_keeps_the_original_traceback(Pool):
    with Pool(2) as pool:
        with pytest.raises(LookupError) as info:
            pool.apply(raise_lookup)
        names = [frame.name for frame in traceback.extract_tb(info.value.__traceback__)]
        assert "raise_lookup" in names
        with pytest.raises(ValueError) as info:
            pool.map(fail_on_three, range(5))
        names = [frame.name for frame in traceback.extract_tb(info.value.__traceback__)]
        assert "fail_on_three" in names


def test_initializer_runs_before_tasks_in_the_worker_thread(Pool):
    local = threading.local()
    calls = []
    lock = threading.Lock()

    def init(tag):
        with lock:
            calls.append(tag)
        local.tag = tag

    def read_tag(_):
        return local.tag

    with Pool(3, initializer=init, initargs=("ready",)) as pool:
        assert pool.map(read_tag, range(30)) == ["ready"] * 30
    assert calls and set(calls) == {"ready"}


def test_close_then_join_finishes_pending_work(Pool):
    results = []
    pool = Pool(2)
    for i in range(10):
        pool.apply_async(time.sleep, (0.01,), callback=lambda _, i=i: results.append(i))
    pool.close()
    pool.join()
    assert sorted(results) == list(range(10))


def test_submitting_after_close_raises_value_error(Pool):
    pool = Pool(2)
    pool.close()
    with pytest.raises(ValueError):
        pool.apply_async(square, (1,))
    with pytest.raises(ValueError):
        pool.map(square, [1])
    pool.join()


def test_join_before_close_raises_value_error(Pool):
    pool = Pool(2)
    with pytest.raises(ValueError):
        pool.join()
    pool.terminate()
    pool.join()


def test_terminate_is_prompt_and_rejects_new_work(Pool):
    pool = Pool(2)
    pool.map(square, range(4))
    start = time.monotonic()
    pool.terminate()
    pool.join()
    assert time.monotonic() - start < 5
    with pytest.raises(ValueError):
        pool.apply_async(square, (1,))


def test_context_manager_terminates(Pool):
    with Pool(2) as pool:
        assert pool.apply(square, (3,)) == 9
    with pytest.raises(ValueError):
        pool.apply_async(square, (1,))


def test_processes_means_tasks_in_flight(Pool):
    # n tasks meeting at a barrier of n: only possible when the pool keeps n in flight.
    n = 6
    barrier = threading.Barrier(n)
    with Pool(n) as pool:
        assert pool.map(lambda _: barrier.wait(timeout=10) >= 0, range(n), chunksize=1) == [True] * n


def test_processes_validation(Pool):
    with pytest.raises(ValueError):
        Pool(0)
    with pytest.raises(TypeError):
        Pool(2, initializer=42)


def test_default_processes_is_positive(Pool):
    with Pool() as pool:
        assert pool.map(square, range(5)) == [0, 1, 4, 9, 16]


def test_callback_error_does_not_hang_get(Pool):
    with Pool(1) as pool:
        res = pool.map_async(square, range(3))
        assert res.get(timeout=10) == [0, 1, 4]


def test_ctrl_c_interrupts_a_waiting_caller_promptly(Pool):
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signals reach the main thread only")
    with Pool(1) as pool:
        timer = threading.Timer(0.2, signal.pthread_kill, (threading.main_thread().ident, signal.SIGINT))
        start = time.monotonic()
        timer.start()
        with pytest.raises(KeyboardInterrupt):
            pool.apply(time.sleep, (1.0,))
        assert time.monotonic() - start < 0.9
        timer.join()
        assert pool.apply(square, (5,)) == 25
