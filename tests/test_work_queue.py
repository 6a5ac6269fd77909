"""The pools' work queue (bindings/bind_work_queue.cpp, src/corral/_work_queue.py; docs/permits.md, "Taking
tasks"): a pool thread takes a task as the stdlib's does, so the task is RUNNING (cancel() cannot stop it)
and waits for its permit; with more threads than permits, a thread keeps its permit task after task for a
slice (permit_table::default_hand_over_slice) before it hands it to a waiting thread, instead of at every
task's end."""

import hashlib
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
def test_more_threads_than_permits_take_turns_by_slices_not_at_every_tasks_end(kind):
    out = subprocess.run([sys.executable, "-c", HAND_OVERS, kind], capture_output=True, text=True, timeout=120,
                         env={**_env(), "CORRAL_CPUS": "2"})
    assert out.returncode == 0, out.stderr
    acquires, threads = map(int, out.stdout.split())
    # Handed over at every task's end, the 2,000 tasks took 1,900-2,000 permits (measured); by 5 ms slices
    # and at each thread's last task, 65-72 (measured).
    assert acquires < 2000 // 10, f"{acquires} permits taken for 2,000 tasks"
    assert threads == 16  # the stdlib's thread count, unchanged


# A ThreadPoolExecutor(16) on a budget of 2 given 16 tasks that compute with the GIL released: as under plain
# python, every thread takes one at once, so all 16 are RUNNING and none can be cancelled, while only 2 hold
# a permit and 14 wait for one.
EVERY_THREAD_TAKES_ITS_TASK = textwrap.dedent("""
    import hashlib, time
    import corral
    from corral import _core
    DATA = b"x" * 200_000
    def task(seconds):
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            hashlib.sha256(DATA).digest()
        return seconds
    with corral.ThreadPoolExecutor(16) as ex:
        fs = [ex.submit(task, 0.5) for _ in range(16)]
        deadline = time.monotonic() + 10
        while not all(f.running() or f.done() for f in fs) and time.monotonic() < deadline:
            time.sleep(0.005)
        stats = _core.permit_stats()
        print(sum(f.running() or f.done() for f in fs), sum(f.cancel() for f in fs),
              stats["held"] - stats["kept"], stats["waiting"])
        assert [f.result() for f in fs] == [0.5] * 16
""")


def test_every_idle_thread_takes_a_task_at_once_and_it_waits_for_its_permit_running():
    out = subprocess.run([sys.executable, "-c", EVERY_THREAD_TAKES_ITS_TASK], capture_output=True, text=True,
                         timeout=120, env={**_env(), "CORRAL_CPUS": "2"})
    assert out.returncode == 0, out.stderr
    started, cancelled, holding, waiting = map(int, out.stdout.split())
    assert (started, cancelled) == (16, 0)
    assert holding <= 2 and waiting >= 12, out.stdout  # (a task may end, or overdraw, meanwhile)


def _env():
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith("CORRAL_")}


def _spin(seconds):
    """Computes with the GIL released for `seconds` (hashlib lets it go for data this size): the
    thread keeps a core busy, so the idle-core rule lets nobody in beside it."""
    data = bytes(256 * 1024)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        hashlib.sha256(data).digest()


def test_shutdown_cancels_only_the_tasks_no_thread_took_while_another_pool_holds_every_permit():
    # Executor `busy` holds every permit; `idle`'s 4 threads each take one of 8 tasks, as plain python's
    # would, and wait for a permit holding it. shutdown(cancel_futures=True) cancels the 4 queued ones only;
    # the 4 taken run once a permit comes (busy's tasks end, or the starvation limit's overdraft; busy's
    # tasks compute, so the idle-core rule lets nobody in).
    import threading

    permits = _core.permits()
    idle = corral.ThreadPoolExecutor(4)
    everyone = threading.Barrier(4)  # its 4 threads exist and are idle
    assert list(idle.map(lambda x: everyone.wait() * 0 + x, range(4))) == list(range(4))
    busy = corral.ThreadPoolExecutor(permits)
    spinning = [busy.submit(_spin, 1.5) for _ in range(permits)]
    try:
        deadline = time.monotonic() + 5
        while _core.permit_stats()["held"] - _core.permit_stats()["kept"] < permits:
            assert time.monotonic() < deadline, _core.permit_stats()
            time.sleep(0.01)
        tasks = [idle.submit(abs, -1) for _ in range(8)]
        deadline = time.monotonic() + 5
        while sum(f.running() for f in tasks) < 4:
            assert time.monotonic() < deadline, [f._state for f in tasks]
            time.sleep(0.01)
        idle.shutdown(wait=True, cancel_futures=True)
        assert [f.cancelled() for f in tasks] == [False] * 4 + [True] * 4
        assert [f.result() for f in tasks[:4]] == [1] * 4
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
