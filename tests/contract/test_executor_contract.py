"""concurrent.futures.ThreadPoolExecutor's API, as the stdlib behaves (see conftest.py)."""

import asyncio
import concurrent.futures as cf
import signal
import threading
import time
import traceback

import pytest


def square(x):
    return x * x


def add(a, b=0):
    return a + b


def raise_lookup():
    raise LookupError("from the task")


def fail_on_three(x):
    if x == 3:
        raise ValueError(f"bad value {x}")
    return x


def test_submit_returns_a_future(Executor):
    with Executor(max_workers=2) as ex:
        fut = ex.submit(add, 2, b=3)
        assert isinstance(fut, cf.Future)
        assert fut.result(timeout=10) == 5
        assert fut.done() and not fut.cancelled() and not fut.running()
        assert fut.exception() is None


def test_is_a_thread_pool_executor(Executor):
    with Executor(2) as ex:
        assert isinstance(ex, cf.Executor)
        assert isinstance(ex, cf.ThreadPoolExecutor)


def test_map_keeps_order(Executor):
    with Executor(4) as ex:
        assert list(ex.map(square, range(50))) == [x * x for x in range(50)]
        assert list(ex.map(add, range(5), range(5))) == [0, 2, 4, 6, 8]
        assert list(ex.map(square, range(20), chunksize=4)) == [x * x for x in range(20)]
        assert list(ex.map(square, [])) == []


def test_map_timeout(Executor):
    gate = threading.Event()
    with Executor(1) as ex:
        it = ex.map(gate.wait, [10], timeout=0.05)
        with pytest.raises(cf.TimeoutError):
            next(it)
        gate.set()


def test_map_raises_when_iterated(Executor):
    with Executor(2) as ex:
        it = ex.map(fail_on_three, range(6))
        assert [next(it) for _ in range(3)] == [0, 1, 2]
        with pytest.raises(ValueError, match="bad value 3"):
            next(it)


def test_exception_keeps_the_original_traceback(Executor):
    with Executor(2) as ex:
        fut = ex.submit(raise_lookup)
        with pytest.raises(LookupError) as info:
            fut.result(timeout=10)
        names = [frame.name for frame in traceback.extract_tb(info.value.__traceback__)]
        assert "raise_lookup" in names
        assert isinstance(fut.exception(), LookupError)


def test_result_timeout(Executor):
    gate = threading.Event()
    with Executor(1) as ex:
        fut = ex.submit(gate.wait, 10)
        with pytest.raises(cf.TimeoutError):
            fut.result(timeout=0.05)
        with pytest.raises(cf.TimeoutError):
            fut.exception(timeout=0.05)
        gate.set()
        assert fut.result(timeout=10) is True


def test_done_callbacks(Executor):
    seen = []
    done = threading.Event()

    def callback(f):
        seen.append(f.result())
        done.set()

    with Executor(2) as ex:
        fut = ex.submit(square, 6)
        fut.add_done_callback(callback)
        assert done.wait(10)
        fut.add_done_callback(lambda f: seen.append("late"))  # runs at once on a done future
    assert seen == [36, "late"]


def test_cancel_a_queued_future(Executor):
    gate = threading.Event()
    with Executor(1) as ex:
        first = ex.submit(gate.wait, 10)
        queued = ex.submit(square, 2)
        assert queued.cancel()
        assert queued.cancelled() and queued.done()
        with pytest.raises(cf.CancelledError):
            queued.result()
        gate.set()
        assert first.result(timeout=10) is True


def test_wait_and_as_completed(Executor):
    with Executor(3) as ex:
        futs = [ex.submit(square, i) for i in range(10)]
        done, not_done = cf.wait(futs, timeout=10)
        assert len(done) == 10 and not not_done
        assert sorted(f.result() for f in cf.as_completed(futs, timeout=10)) == [i * i for i in range(10)]
        first = cf.wait([ex.submit(raise_lookup), ex.submit(time.sleep, 0.5)],
                        return_when=cf.FIRST_EXCEPTION, timeout=10)
        assert len(first.done) >= 1


def test_asyncio_run_in_executor(Executor):
    async def main(ex):
        loop = asyncio.get_running_loop()
        results = await asyncio.gather(*(loop.run_in_executor(ex, square, i) for i in range(8)))
        wrapped = await asyncio.wrap_future(ex.submit(add, 1, 2))
        return results, wrapped

    with Executor(2) as ex:
        assert asyncio.run(main(ex)) == ([i * i for i in range(8)], 3)


def test_asyncio_default_executor(Executor):
    async def main():
        loop = asyncio.get_running_loop()
        loop.set_default_executor(Executor(2))
        return await asyncio.to_thread(square, 9)

    assert asyncio.run(main()) == 81


def test_submit_after_shutdown_raises_runtime_error(Executor):
    ex = Executor(2)
    ex.shutdown()
    with pytest.raises(RuntimeError):
        ex.submit(square, 1)


def test_shutdown_wait_finishes_pending_work(Executor):
    results = []
    ex = Executor(2)
    for i in range(10):
        ex.submit(time.sleep, 0.01).add_done_callback(lambda _, i=i: results.append(i))
    ex.shutdown(wait=True)
    assert sorted(results) == list(range(10))


def test_shutdown_without_wait_returns_at_once(Executor):
    gate = threading.Event()
    ex = Executor(1)
    running = ex.submit(gate.wait, 10)
    start = time.monotonic()
    ex.shutdown(wait=False)
    assert time.monotonic() - start < 1
    gate.set()
    assert running.result(timeout=10) is True


def test_shutdown_cancel_futures(Executor):
    gate = threading.Event()
    ex = Executor(1)
    running = ex.submit(gate.wait, 10)
    while not running.running():
        time.sleep(0.001)
    queued = [ex.submit(square, i) for i in range(5)]
    ex.shutdown(wait=False, cancel_futures=True)
    assert all(f.cancelled() for f in queued)
    gate.set()
    assert running.result(timeout=10) is True
    ex.shutdown(wait=True)


def test_thread_name_prefix(Executor):
    with Executor(1, thread_name_prefix="cowboy") as ex:
        name = ex.submit(lambda: threading.current_thread().name).result(timeout=10)
    assert name.startswith("cowboy")


def test_initializer_runs_in_the_worker_thread(Executor):
    local = threading.local()

    def init(tag):
        local.tag = tag

    with Executor(3, initializer=init, initargs=("ready",)) as ex:
        assert list(ex.map(lambda _: local.tag, range(20))) == ["ready"] * 20


def test_failing_initializer_breaks_the_pool(Executor):
    def init():
        raise OSError("cannot initialize")

    ex = Executor(2, initializer=init)
    fut = ex.submit(square, 2)
    with pytest.raises(cf.thread.BrokenThreadPool):
        fut.result(timeout=10)
    deadline = time.monotonic() + 10
    with pytest.raises(cf.thread.BrokenThreadPool):
        while time.monotonic() < deadline:  # the pool turns broken once the initializer has run
            ex.submit(square, 2).result(timeout=10)
    ex.shutdown()


def test_max_workers_validation(Executor):
    with pytest.raises(ValueError):
        Executor(0)
    with pytest.raises(TypeError):
        Executor(2, initializer=42)


def test_max_workers_means_tasks_in_flight(Executor):
    n = 6
    barrier = threading.Barrier(n)
    with Executor(n) as ex:
        assert list(ex.map(lambda _: barrier.wait(timeout=10) >= 0, range(n))) == [True] * n


def test_ctrl_c_interrupts_a_waiting_caller_promptly(Executor):
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signals reach the main thread only")
    ex = Executor(1)
    fut = ex.submit(time.sleep, 1.0)
    timer = threading.Timer(0.2, signal.pthread_kill, (threading.main_thread().ident, signal.SIGINT))
    start = time.monotonic()
    timer.start()
    with pytest.raises(KeyboardInterrupt):
        fut.result()
    assert time.monotonic() - start < 0.9
    timer.join()
    ex.shutdown(wait=True)


@pytest.mark.requires_python((3, 14))
def test_map_with_buffersize_reads_its_input_lazily(Executor):
    # 3.14: Executor.map(buffersize=n) keeps at most n tasks ahead of the caller.
    taken = []

    def numbers():
        for i in range(100):
            taken.append(i)
            yield i

    with Executor(max_workers=2) as ex:
        results = ex.map(square, numbers(), buffersize=4)
        assert next(results) == 0
        time.sleep(0.1)
        assert len(taken) <= 6  # the first result, and at most buffersize more submitted
        assert list(results) == [i * i for i in range(1, 100)]
    with pytest.raises(ValueError):
        Executor(max_workers=1).map(square, [1], buffersize=0)
