"""The pools' work queue (bindings/bind_work_queue.cpp, src/corral/_work_queue.py; docs/permits.md, "Claims"):
a pool thread claims its permit before it takes a task, so a pool with more threads than permits runs task
after task on kept permits instead of handing a permit to a thread that took a task and waits, and a
shutdown is seen at once by threads waiting for a permit."""

import subprocess
import sys
import textwrap
import time

import pytest

import corral
from corral import _core

# 2,000 tasks that release the GIL (sha256 of 200 kB: ~0.1 ms each) on 16 threads, budget 2.
HAND_OVERS = textwrap.dedent("""
    import hashlib, sys
    import corral
    from corral import _core
    DATA = b"x" * 200_000
    def task(x):
        hashlib.sha256(DATA).digest()
        return x
    n = 2000
    before = _core.permit_stats()["acquires"]
    if sys.argv[1] == "executor":
        with corral.ThreadPoolExecutor(16) as ex:
            total = sum(ex.map(task, range(n)))
            threads = len(ex._threads)
    else:
        with corral.ThreadPool(16) as pool:
            total = sum(pool.imap(task, range(n)))
            threads = len(pool._pool)
    assert total == n * (n - 1) // 2
    print(_core.permit_stats()["acquires"] - before, threads)
""")


@pytest.mark.parametrize("kind", ["executor", "pool"])
def test_more_threads_than_permits_run_task_after_task_without_hand_overs(kind):
    out = subprocess.run([sys.executable, "-c", HAND_OVERS, kind], capture_output=True, text=True, timeout=120,
                         env={**_env(), "CORRAL_CPUS": "2"})
    assert out.returncode == 0, out.stderr
    acquires, threads = map(int, out.stdout.split())
    # Taking a task before its permit handed a permit over at nearly every task's end (1,900-2,000 of 2,000
    # measured); claimed first, the threads that hold permits keep them (about 30 takes in all).
    assert acquires < 2000 // 10, f"{acquires} permits taken for 2,000 tasks"
    if kind == "pool":
        assert threads == 16  # the stdlib's thread count, unchanged


# A fresh ThreadPool of 16 threads on a budget of 2: how many of its threads run the first 200 tasks (each
# releases the GIL; map's task thread queues them all at once).
FIRST_TASKS = textwrap.dedent("""
    import hashlib, threading
    import corral
    DATA = b"x" * 200_000
    def task(x):
        hashlib.sha256(DATA).digest()
        return threading.get_ident()
    with corral.ThreadPool(16) as pool:
        ran_on = set(pool.map(task, range(200), chunksize=1))
        print(len(ran_on), len(pool._pool))
""")


def test_a_new_pool_claims_from_each_threads_first_task():
    # Each new thread used to take its first task before its permit: the 16 threads started 16 tasks, 14 of
    # them then waiting for a permit while holding their task (W3's slow first pass). A blocking get() claims
    # from the first task on (docs/permits.md, "Claims"), so the permits' 2 threads run nearly everything.
    # (An executor's workers drain its queue faster than map() submits, so their permits change hands
    # whenever the queue runs dry: not a test of this.)
    out = subprocess.run([sys.executable, "-c", FIRST_TASKS], capture_output=True, text=True, timeout=120,
                         env={**_env(), "CORRAL_CPUS": "2"})
    assert out.returncode == 0, out.stderr
    ran_on, threads = map(int, out.stdout.split())
    assert ran_on <= 6, f"the first 200 tasks ran on {ran_on} of {threads} threads"  # 16 before
    assert threads == 16  # the stdlib's thread count, unchanged


def _env():
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith("CORRAL_")}


def _spin(seconds):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


def test_threads_waiting_for_a_permit_see_a_shutdown_at_once():
    # Executor `busy` holds every permit with long tasks; `idle`'s threads, which ran tasks before, wait for
    # a permit with tasks queued. shutdown(cancel_futures=True) must end them at once, as under plain python,
    # not after `busy` lets a permit go.
    import threading

    permits = _core.permits()
    idle = corral.ThreadPoolExecutor(4)
    everyone = threading.Barrier(4)  # each of its 4 threads has run a task (a thread's first task is taken
    assert list(idle.map(lambda x: everyone.wait() * 0 + x, range(4))) == list(range(4))  # before its permit)
    busy = corral.ThreadPoolExecutor(permits)
    spinning = [busy.submit(_spin, 3.0) for _ in range(permits)]
    try:
        deadline = time.monotonic() + 5
        while _core.permit_stats()["held"] - _core.permit_stats()["kept"] < permits:
            assert time.monotonic() < deadline, _core.permit_stats()
            time.sleep(0.01)
        queued = [idle.submit(abs, -1) for _ in range(8)]
        deadline = time.monotonic() + 5
        while _core.permit_stats()["waiting"] == 0:  # idle's threads wait for a permit, holding no task
            assert time.monotonic() < deadline, _core.permit_stats()
            time.sleep(0.01)
        # Another pool's shutdown marker (any executor shut down or collected meanwhile) must not end these
        # claims: their threads would take tasks without a permit, and the shutdown below wait for one.
        other = corral.ThreadPoolExecutor(1)
        other.submit(abs, -1).result()
        other.shutdown(wait=True)
        time.sleep(0.05)
        t0 = time.monotonic()
        idle.shutdown(wait=True, cancel_futures=True)
        took = time.monotonic() - t0
        assert took < 1.0, f"shutdown took {took:.2f} s while another pool held every permit"
        assert all(f.cancelled() or f.done() for f in queued)
        assert not any(t.is_alive() for t in idle._threads)
    finally:
        busy.shutdown(wait=True)
    assert all(f.result() is None for f in spinning)


def test_the_queue_is_a_simple_queue_to_everyone_else():
    # Outside a pool's threads it is the stdlib's SimpleQueue: FIFO, get_nowait raises queue.Empty,
    # get(timeout=) times out, None goes through.
    import queue

    from corral import _work_queue

    q = _work_queue.WorkQueue()
    assert isinstance(q, queue.SimpleQueue)
    for x in (1, None, "a"):
        q.put(x)
    assert q.qsize() == 3 and not q.empty()
    assert [q.get(), q.get_nowait(), q.get(block=True)] == [1, None, "a"]
    with pytest.raises(queue.Empty):
        q.get_nowait()
    with pytest.raises(queue.Empty):
        q.get(timeout=0.01)
    with pytest.raises(queue.Empty):
        q.get(False)
    q.put_nowait(2)
    assert q.get(block=False) == 2
