"""What corral's thread pools add to the stdlib's contract (tests/contract/): the budget bounds the
tasks running at once, not the tasks in flight; waits give up their permit; a waiting task never runs
another task on its own thread; no thread waits for a permit for ever."""

import hashlib
import textwrap
import threading
import time
import traceback

import pytest

import corral
import corral._core  # noqa: F401 (corral._core below: the package does not import it on its own)

from _helpers import run_python

# Run in a child so that the process's permit table gets the budget under test.
BUDGET_PROBE = textwrap.dedent("""\
    import hashlib, json, sys, threading, time
    import corral

    DATA = bytes(256 * 1024)  # hashlib lets the GIL go for data this size

    lock = threading.Lock()
    waiting = running = max_waiting = max_running = 0

    def task(_):
        global waiting, running, max_waiting, max_running
        with lock:
            waiting += 1
            max_waiting = max(max_waiting, waiting)
        time.sleep(0.05)                   # a wait: holds no permit
        with lock:
            waiting -= 1
            running += 1
            max_running = max(max_running, running)
        end = time.perf_counter() + 0.02   # work, the GIL released: holds a permit and a core
        while time.perf_counter() < end:   # (pure Python would leave a core idle beside another
            hashlib.sha256(DATA).digest()  # task's: the idle-core rule would let a third in)
        with lock:
            running -= 1

    pool_type = getattr(corral, sys.argv[1])
    with pool_type(8) as pool:
        list(pool.map(task, range(32)))
    print(json.dumps({"max_waiting": max_waiting, "max_running": max_running,
                      "slots": corral._core.permits()}))
""")


def probe(args, env_cpus=None, pool="ThreadPool"):
    env = {} if env_cpus is None else {"CORRAL_CPUS": str(env_cpus)}
    out = run_python([*args, pool], env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    import json

    return json.loads(out.stdout)


@pytest.mark.parametrize("pool", ["ThreadPool", "ThreadPoolExecutor"])
def test_running_tasks_stay_within_the_budget_while_all_are_in_flight(tmp_path, pool):
    script = tmp_path / "probe.py"
    script.write_text(BUDGET_PROBE)
    result = probe([str(script)], env_cpus=1, pool=pool)
    assert result["slots"] == 1
    assert result["max_waiting"] == 8   # processes / max_workers tasks in flight
    assert result["max_running"] == 1   # but only budget-many running


def test_cpus_option_sets_the_budget_of_the_runner(tmp_path):
    script = tmp_path / "probe.py"
    script.write_text(BUDGET_PROBE)
    result = probe(["-m", "corral", "-p", "2", str(script)])
    assert result["slots"] == 2
    assert result["max_waiting"] == 8
    assert 1 <= result["max_running"] <= 2


def test_nested_submit_and_wait_when_the_pool_has_room():
    # As with the stdlib: a task may wait on tasks of its own pool while threads are free for them.
    with corral.ThreadPoolExecutor(6) as ex:
        def outer(depth):
            if depth == 0:
                return 0
            return 1 + ex.submit(outer, depth - 1).result(timeout=30)

        assert ex.submit(outer, 5).result(timeout=30) == 5

    with corral.ThreadPool(2) as pool:
        def parent():
            return pool.apply_async(sum, ([1, 2, 3],)).get(timeout=30)

        assert pool.apply(parent) == 6


def test_a_waiting_task_never_runs_another_task_on_its_thread():
    # The task that waits keeps its thread to itself: the tasks it waits for run on the pool's other
    # threads, never nested inside its wait (same stack depth as any task).
    with corral.ThreadPoolExecutor(3) as ex:
        def inner():
            return threading.get_ident(), len(traceback.extract_stack())

        def outer():
            futures = [ex.submit(inner) for _ in range(20)]
            return threading.get_ident(), [f.result(timeout=30) for f in futures]

        outer_ident, inner_results = ex.submit(outer).result(timeout=60)
        assert outer_ident not in {ident for ident, _ in inner_results}
        depth_of_a_plain_task = ex.submit(inner).result(timeout=10)[1]
        assert {depth for _, depth in inner_results} == {depth_of_a_plain_task}


def test_tasks_run_on_the_pools_own_threads_holding_a_permit():
    with corral.ThreadPoolExecutor(2) as ex:
        ident, in_task = ex.submit(lambda: (threading.get_ident(), corral._core.in_permit_task())).result(timeout=10)
        assert in_task is True
        assert ident in {t.ident for t in ex._threads}
    assert corral._core.in_permit_task() is False
    with corral.ThreadPool(2) as pool:
        ident = pool.apply(threading.get_ident)
        assert ident in {t.ident for t in pool._pool}


def test_a_holder_that_spins_on_a_flag_cannot_starve_the_task_that_sets_it(tmp_path):
    # One permit: the spinner holds it and waits for a flag that only the other task sets, a wait no
    # sampler can see. Plain threads make progress here; the starvation limit lets the setter run.
    script = tmp_path / "spin.py"
    script.write_text(textwrap.dedent("""\
        import threading, time, corral
        flag = threading.Event()
        def spinner():
            while not flag.is_set():
                pass
            return "spun"
        with corral.ThreadPoolExecutor(2) as ex:
            first = ex.submit(spinner)
            time.sleep(0.1)
            second = ex.submit(flag.set)
            print(first.result(timeout=30), corral._core.permit_stats()["overdrafts"] >= 1)
    """))
    out = run_python([str(script)], env={"CORRAL_CPUS": "1"}, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["spun", "True"]


def test_traceback_names_the_function_that_raised():
    def deep_failure():
        raise KeyError("deep")

    with corral.ThreadPoolExecutor(2) as ex:
        exc = ex.submit(deep_failure).exception(timeout=10)
    assert [f.name for f in traceback.extract_tb(exc.__traceback__)][-1] == "deep_failure"


def test_blocking_is_a_context_manager_and_a_decorator():
    @corral.blocking
    def wait_decorated(event):
        return event.wait(10)

    @corral.blocking()
    def wait_called(event):
        return event.wait(10)

    with corral.blocking():
        pass  # off a worker: nothing to give up, and no error
    gate = threading.Event()
    with corral.ThreadPoolExecutor(4) as ex:
        futures = [ex.submit(wait_decorated, gate), ex.submit(wait_called, gate)]
        time.sleep(0.05)
        gate.set()
        assert [f.result(timeout=10) for f in futures] == [True, True]
    assert wait_decorated.__name__ == "wait_decorated"


def test_a_blocking_scope_left_on_another_thread_is_a_clear_error_and_leaves_the_task_its_permit():
    scope = corral.blocking()

    def task():
        with scope:  # the task's pause
            errors = []

            def leave_elsewhere():
                try:
                    scope.__exit__(None, None, None)
                except RuntimeError as exc:
                    errors.append(str(exc))

            other = threading.Thread(target=leave_elsewhere)
            other.start()
            other.join()
        return errors, corral._core.in_permit_task()

    with corral.ThreadPoolExecutor(1) as ex:
        errors, in_task = ex.submit(task).result(timeout=10)
    assert errors == ["corral.blocking(): exited without a matching entry on this thread "
                      "(exited twice, or on a thread that did not enter it)"]
    assert in_task  # its own exit ended the pause: the task holds a permit again


def test_sleeping_tasks_are_not_throttled_by_the_budget():
    # 32 tasks that only sleep: with the waits announced, the pool is as fast as its 32 threads.
    def nap(_):
        time.sleep(0.05)

    start = time.perf_counter()
    with corral.ThreadPool(32) as pool:
        pool.map(nap, range(64), chunksize=1)
    elapsed = time.perf_counter() - start
    assert elapsed < 0.05 * 2 * 3, f"64 naps of 50 ms on 32 in flight took {elapsed:.2f} s"


NATIVE_PROBE = textwrap.dedent("""\
    from multiprocessing.pool import ThreadPool
    import threadpoolctl, numpy
    def blas_threads(_):
        return max(p["num_threads"] for p in threadpoolctl.threadpool_info() if p["user_api"] == "blas")
    for size in (1, 2, 4):
        with ThreadPool(size) as pool:
            print(size, sorted(set(pool.map(blas_threads, range(8), chunksize=1))))
    import time
    time.sleep(0.05)  # the last task puts the process-wide limit back just after its result is out
    print("main", blas_threads(None))
""")


@pytest.mark.parametrize("options, expected", [
    (["--mode", "static"], {"1": "[2]", "2": "[1]", "4": "[1]"}),  # budget // pool size
    (["--no-native"], {"1": "[2]", "2": "[2]", "4": "[2]"}),      # left alone
])
def test_native_limits_in_tasks(options, expected):
    pytest.importorskip("numpy")
    pytest.importorskip("threadpoolctl")
    env = {"OPENBLAS_NUM_THREADS": "2"}  # what a 2-CPU machine gives every task
    out = run_python(["-m", "corral", "-p", "2", *options, "-c", NATIVE_PROBE], env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = dict(line.split(" ", 1) for line in out.stdout.splitlines())
    assert {k: lines[k] for k in expected} == expected
    assert lines["main"] == "2"  # outside tasks, the process's own setting is back


def test_static_mode_divides_the_permit_tables_count():
    # B in docs/native.md is the permit count, which a Dask worker sets to its share: a static pool of 1
    # then gets that count, not the budget read again (2 with -p 2).
    pytest.importorskip("numpy")
    pytest.importorskip("threadpoolctl")
    probe = "from corral import _permits\n_permits.set_permits(1)\n" + NATIVE_PROBE
    out = run_python(["-m", "corral", "-p", "2", "--mode", "static", "-c", probe],
                     env={"OPENBLAS_NUM_THREADS": "2"}, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = dict(line.split(" ", 1) for line in out.stdout.splitlines())
    assert (lines["1"], lines["2"], lines["main"]) == ("[1]", "[1]", "2")


LONE_TASK_PROBE = textwrap.dedent("""\
    import concurrent.futures, threadpoolctl, numpy
    def blas_threads(_=None):
        return max(p["num_threads"] for p in threadpoolctl.threadpool_info() if p["user_api"] == "blas")
    a = numpy.ones((64, 64))
    for _ in range(5):
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda _: (a @ a).sum(), range(200)))
        with concurrent.futures.ThreadPoolExecutor(1) as pool:  # a task alone, right after the pool
            print(pool.submit(blas_threads).result())
""")


def test_a_task_alone_right_after_a_pool_gets_the_whole_budget_at_once():
    """The dynamic rule's raise delay (docs/native.md) is for the next task of a map; once the pool
    before is gone (its threads kept no permit), a lone task gets budget-many threads as it starts."""
    pytest.importorskip("numpy")
    pytest.importorskip("threadpoolctl")
    env = {"OPENBLAS_NUM_THREADS": "2"}
    out = run_python(["-m", "corral", "-p", "2", "-c", LONE_TASK_PROBE], env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["2"] * 5


NEXT_TASK_PROBE = textwrap.dedent("""\
    import concurrent.futures, sys, threading, time, threadpoolctl, numpy
    def blas_threads(_=None):
        return max(p["num_threads"] for p in threadpoolctl.threadpool_info() if p["user_api"] == "blas")
    both = threading.Barrier(2)
    def together(_):
        both.wait()  # the two tasks run beside each other: they share the cores
        count = blas_threads()
        both.wait()  # neither ends before both read: the count is raised 2 ms after one ends
        return count
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        for other_pool_shut_down in [False, True] * 5:
            other = concurrent.futures.ThreadPoolExecutor(1)  # made before: only its shutdown falls in the delay
            shared = list(pool.map(together, range(2)))
            if other_pool_shut_down:  # an unrelated pool's shutdown says nothing of this pool's next task
                other.shutdown()
            next_task = pool.submit(blas_threads).result()  # submitted as the two ended, as dask does
            time.sleep(0.05)
            later = pool.submit(blas_threads).result()  # long after: a lone task
            print(other_pool_shut_down, shared, next_task, later)
""")


def test_the_next_task_of_a_pool_whose_tasks_just_shared_the_cores_starts_with_one_thread():
    """A scheduler that submits a task as another ends (dask's threaded one) finds both pool threads idle for
    a moment: the next task starts alone, but more follow at once, and with B threads it would crowd them
    (R3: 5% of a pass). The raise delay covers it as it covers the next chunk of a map (docs/native.md);
    another pool's shutdown does not end it; a task long after gets the whole budget."""
    pytest.importorskip("numpy")
    pytest.importorskip("threadpoolctl")
    env = {"OPENBLAS_NUM_THREADS": "2"}
    out = run_python(["-m", "corral", "-p", "2", "-c", NEXT_TASK_PROBE], env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    rounds = [line.split(" ", 1) for line in out.stdout.splitlines()]
    assert len(rounds) == 10
    assert all(rest.startswith("[1, 1] ") and rest.endswith(" 2") for _, rest in rounds), rounds
    # The next task came within the delay (a stall of the machine past 2 ms may give it 2 now and then).
    for kind in ("False", "True"):
        assert any(k == kind and rest == "[1, 1] 1 2" for k, rest in rounds), rounds


LOADED_WHILE_TASKS_RUN_PROBE = textwrap.dedent("""\
    import concurrent.futures, ctypes, threading, time, threadpoolctl
    ctypes.CDLL("libgomp.so.1")  # an OpenMP runtime first (scikit-learn, torch...): tasks set limits from the start
    go = threading.Event()
    def blas_threads():
        return max(p["num_threads"] for p in threadpoolctl.threadpool_info() if p["user_api"] == "blas")
    def load_numpy():
        import numpy  # OpenBLAS, found while the task that waits is still counted
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        waiting = pool.submit(go.wait)
        time.sleep(0.05)
        pool.submit(load_numpy).result()
        print(pool.submit(blas_threads).result())  # beside the waiting task
        go.set()
        waiting.result()
    print(blas_threads())  # every task has ended: OpenBLAS's own setting is back
""")


def test_a_library_loaded_while_tasks_run_gets_their_count_and_its_own_back():
    """The process-wide count stays as it is while tasks start with the same count; a library found since
    (OpenBLAS loaded by a task) must get it too at the next start, and its own setting back at the end."""
    pytest.importorskip("numpy")
    pytest.importorskip("threadpoolctl")
    env = {"OPENBLAS_NUM_THREADS": "2"}
    out = run_python(["-m", "corral", "-p", "2", "-c", LOADED_WHILE_TASKS_RUN_PROBE], env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["1", "2"]


QUEUE_SIGNAL_PROBE = textwrap.dedent("""\
    from corral._work_queue import WorkQueue
    class Sub(WorkQueue):
        pass
    for make, value in ((WorkQueue, 5), (Sub, object())):
        q = make()
        q._signal = value
        try:
            q.put(1)
        except TypeError as e:
            print(type(q).__name__, "TypeError:", e)
""")


def test_a_work_queue_whose_signal_was_replaced_raises_instead_of_crashing():
    out = run_python(["-c", QUEUE_SIGNAL_PROBE], timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [
        f"{name} TypeError: corral's work queue: _signal is not a WorkSignal" for name in ("WorkQueue", "Sub")]


LIBRARY_LOADED_LATER_PROBE = textwrap.dedent("""\
    import concurrent.futures, sys, threadpoolctl
    arrived, read = [], []
    def blas_threads(_):
        # Both running, then OpenBLAS's process-wide count is the latest start's. Spun, not a Barrier: a task
        # that waits gives its permit back, and the other may then take the cores alone for a moment.
        arrived.append(1)
        while len(arrived) < 2:
            pass
        count = max(p["num_threads"] for p in threadpoolctl.threadpool_info() if p["user_api"] == "blas")
        read.append(1)
        while len(read) < 2:  # neither ends (and leaves the other alone) before both read
            pass
        return count
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        assert sum(pool.map(abs, range(1000))) == 499500  # no library loaded: nothing to limit
        assert "numpy" not in sys.modules
        import numpy  # OpenBLAS now, between two maps of the same pool threads
        print(list(pool.map(blas_threads, range(2))))
""")


def test_tasks_limit_a_library_loaded_after_tasks_that_found_none():
    """Tasks that start with no BLAS/OpenMP library loaded set no limits (docs/native.md, "No library, no
    limits"); the pool's threads must still find a library loaded later and limit it."""
    pytest.importorskip("numpy")
    pytest.importorskip("threadpoolctl")
    env = {"OPENBLAS_NUM_THREADS": "2"}
    out = run_python(["-m", "corral", "-p", "2", "-c", LIBRARY_LOADED_LATER_PROBE], env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[0] == "[1, 1]"


BURST_PROBE = textwrap.dedent("""\
    import sys, threadpoolctl
    import sklearn.ensemble  # loads scikit-learn's OpenMP runtime (libgomp)
    import concurrent.futures, multiprocessing.pool
    def openmp_threads(_):
        return max(p["num_threads"] for p in threadpoolctl.threadpool_info() if p["user_api"] == "openmp")
    if sys.argv[1] == "executor":
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            print(list(pool.map(openmp_threads, range(8))))
    else:
        with multiprocessing.pool.ThreadPool(2) as pool:
            print(pool.map(openmp_threads, range(8), chunksize=1))
""")


@pytest.mark.parametrize("pool", ["executor", "threadpool"])
def test_the_first_task_of_a_burst_does_not_take_the_whole_budget(pool):
    """A task's OpenMP team keeps the count its task started with; the first task of a map starts
    alone, but its siblings are queued: it must not get budget-many threads (docs/native.md)."""
    pytest.importorskip("sklearn")
    pytest.importorskip("threadpoolctl")
    # An executor's first task waits at most 1 ms for its submitter's next put: a stall of the machine longer
    # than that (CI on 3.14 once) gives it 2. Without the wait it gets 2 in every run, so three tries still
    # tell the rule from its absence.
    seen = []
    for _ in range(3):
        out = run_python(["-m", "corral", "-p", "2", "-c", BURST_PROBE, pool], env={"OMP_NUM_THREADS": "2"},
                         timeout=120)
        assert out.returncode == 0, out.stderr
        seen.append(out.stdout.strip())
        if seen[-1] == str([1] * 8):
            break
    assert seen[-1] == str([1] * 8), seen


def test_unannounced_waits_do_not_throttle_the_pool():
    # A sleep bound before corral wrapped time.sleep: nothing announces it. The permit monitor sees the
    # task threads asleep outside futex and lends their permits, so 32 in flight still means 32 waiting.
    raw_sleep = getattr(time.sleep, "__corral_original__", time.sleep)

    def nap(_):
        raw_sleep(0.02)

    budget = corral._core.permits()
    lends_before = corral._core.permit_stats()["lends"]
    start = time.perf_counter()
    with corral.ThreadPool(32) as pool:
        pool.map(nap, range(320), chunksize=1)
    elapsed = time.perf_counter() - start
    throttled = 320 * 0.02 / budget
    assert elapsed < throttled / 3, f"took {elapsed:.2f} s; throttled to the budget it takes {throttled:.2f} s"
    assert corral._core.permit_stats()["lends"] > lends_before
    # Every lend settled; the pool's threads end after its `with` block (ThreadPool does not join
    # them), and a thread keeping its permit for a next task gives it back as it ends, or the
    # monitor hands it on within milliseconds (docs/permits.md, "Kept permits").
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        stats = corral._core.permit_stats()
        if (stats["lent"], stats["held"], stats["holders"], stats["kept"]) == (0, 0, 0, 0):
            break
        time.sleep(0.01)
    assert (stats["lent"], stats["held"], stats["holders"], stats["kept"]) == (0, 0, 0, 0)


def _held_peak_of(task, tasks=64, threads=8):
    """The most permits held at once while `threads` threads run `tasks` calls of task()."""
    peak = 0

    def run(_):
        nonlocal peak
        task()
        peak = max(peak, corral._core.permit_stats()["held"])

    with corral.ThreadPool(threads) as pool:
        pool.map(run, range(tasks), chunksize=1)
    return peak


def _compute_for(seconds):
    """Computes with the GIL released (hashlib lets it go for data this size) for `seconds`."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        hashlib.sha256(_DATA).digest()


_DATA = bytes(256 * 1024)


def test_tasks_that_compute_get_no_extra_permits():
    # Their threads keep every core of the budget busy: nobody is let in over it (the idle-core rule
    # sees no idle core, and the monitor lends nothing: a thread waiting for the GIL between two
    # hashes sleeps in futex, but never long).
    assert _held_peak_of(lambda: _compute_for(0.01)) == corral._core.permits()


def test_pure_python_tasks_taking_turns_at_the_gil_are_let_in_while_a_core_idles():
    # Two of them use one core between them, as under plain python; with no task ending for 50 ms the
    # idle-core rule lets the other threads' tasks in, one per 50 ms, as plain python runs them
    # (docs/permits.md, "No thread waits for ever").
    def spin():
        end = time.perf_counter() + 0.4
        while time.perf_counter() < end:
            pass

    budget = corral._core.permits()
    before = corral._core.permit_stats()["idle_admissions"]
    peak = _held_peak_of(spin, tasks=4, threads=4)
    if budget == 1:  # one GIL-bound holder uses the whole budget: no core idles
        assert peak == 1
    else:
        assert peak > budget
        assert corral._core.permit_stats()["idle_admissions"] > before


def test_sleeping_while_holding_a_lock_does_not_deadlock():
    # The sleeper gives its permit away; the holders then block on its lock. When it wakes it needs a
    # permit back, and the holders will not reach a task boundary: the permit monitor must lend.
    lock = threading.Lock()
    counter = []

    def locked_nap(i):
        with lock:
            time.sleep(0.005)
            counter.append(i)

    with corral.ThreadPool(8) as pool:
        result = pool.map_async(locked_nap, range(40), chunksize=1)
        assert result.get(timeout=60) == [None] * 40
    assert sorted(counter) == list(range(40))


THREAD_START_UNDER_A_LOCK = """\
import threading, corral
# ThreadPoolExecutor.submit starts its threads holding a module-wide lock; a task that makes a pool
# does so inside its own task. Here the first task holds `lock` across a Thread.start while the second
# waits for the one permit, then blocks on `lock`.
lock = threading.Lock()
def starter():
    with lock:
        t = threading.Thread(target=abs, args=(1,))
        before = corral._core.permit_stats()["acquires"]
        t.start()
        after = corral._core.permit_stats()["acquires"]
    t.join()
    return after - before
def blocker():
    with lock:
        return 0
with corral.ThreadPoolExecutor(2) as ex:
    first = ex.submit(starter)
    second = ex.submit(blocker)
    print(first.result(timeout=60), second.result(timeout=60), corral._core.permit_stats()["lends"])
"""


def test_starting_a_thread_keeps_the_tasks_permit():
    # Thread.start waits for the new thread's first instructions: a short wait that keeps the permit
    # (docs/permits.md, "Short waits"). Given back, the permit went to the blocker, which then blocked on
    # the starter's lock holding it, and the starter could not take a permit back until the monitor lent
    # the blocker's (20 ms each time then; a pool per outer task at budget 1 ran at half speed).
    out = run_python(["-c", THREAD_START_UNDER_A_LOCK], env={"CORRAL_CPUS": "1"}, timeout=120)
    assert out.returncode == 0, out.stderr
    taken_during_start, _, lends = map(int, out.stdout.split())
    assert taken_during_start == 0, "the starter gave its permit back and took one again"
    assert lends == 0, "the monitor had to lend a permit held by a thread blocked on the starter's lock"


SHUTDOWN_WITH_TASKS_QUEUED = """\
import corral
def outer(i):
    with corral.ThreadPoolExecutor(2) as inner:  # its end joins threads that still have tasks to run
        futures = [inner.submit(pow, i, k) for k in range(8)]
    return sum(f.result() for f in futures)
with corral.ThreadPoolExecutor(2) as ex:
    results = list(ex.map(outer, range(6)))
print(results == [sum(i ** k for k in range(8)) for i in range(6)], corral._core.permit_stats()["lends"])
"""


def test_a_task_that_joins_threads_gives_its_permit_back():
    # Thread.join (an executor's shutdown) waits for threads that need a permit to finish their tasks: at a
    # budget of 1 the joiner's permit is the one they need. It is given back at once, not lent by the
    # monitor after it sees the joiner asleep (docs/permits.md, "Waits that give the permit back").
    out = run_python(["-c", SHUTDOWN_WITH_TASKS_QUEUED], env={"CORRAL_CPUS": "1"}, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "0"]


def test_producers_and_consumers_in_one_pool():
    import queue

    q = queue.Queue(maxsize=2)

    def produce(n):
        for i in range(n):
            q.put(i)
        return n

    def consume(n):
        return sum(q.get(timeout=30) for _ in range(n))

    with corral.ThreadPoolExecutor(6) as ex:
        consumers = [ex.submit(consume, 50) for _ in range(3)]
        producers = [ex.submit(produce, 50) for _ in range(3)]
        assert [f.result(timeout=60) for f in producers] == [50] * 3
        assert sum(f.result(timeout=60) for f in consumers) == 3 * sum(range(50))


def test_waiting_for_the_pool_from_its_own_task_is_an_error_not_a_hang():
    ex = corral.ThreadPoolExecutor(2)
    with pytest.raises(RuntimeError, match="cannot join current thread"):  # the stdlib's own error
        ex.submit(ex.shutdown, wait=True).result(timeout=10)
    ex.shutdown(wait=True)


@pytest.mark.parametrize("user_value, expected", [("1", "[1]"), ("8", "[2]")])
def test_a_users_thread_variable_is_an_upper_bound_on_task_threads(user_value, expected):
    # A pool of one gets the whole budget (2) for its task, unless the user asked for fewer threads:
    # the lower of the two wins (docs/architecture.md, invariant 5).
    pytest.importorskip("numpy")
    pytest.importorskip("threadpoolctl")
    env = {"OPENBLAS_NUM_THREADS": "2", "OMP_NUM_THREADS": user_value}
    out = run_python(["-m", "corral", "-p", "2", "-c", NATIVE_PROBE], env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = dict(line.split(" ", 1) for line in out.stdout.splitlines())
    assert lines["1"] == expected


def test_no_thread_of_corrals_outlives_the_pools(tmp_path):
    # After the pools are done, the process has the threads plain python would have: a later fork()
    # (3.12+ warns about forking a multi-threaded process) or a thread count sees nothing of ours.
    script = tmp_path / "threads.py"
    script.write_text(textwrap.dedent("""\
        import os, time
        from concurrent.futures import ThreadPoolExecutor
        import numpy
        def os_threads():
            return len(os.listdir("/proc/self/task"))
        before = os_threads()
        with ThreadPoolExecutor(4) as ex:
            list(ex.map(lambda a: numpy.linalg.qr(a), [numpy.ones((64, 64))] * 40))
        deadline = time.monotonic() + 5
        while os_threads() > before and time.monotonic() < deadline:
            time.sleep(0.05)
        print(os_threads() - before)
    """))
    # OpenBLAS's own threads exist under plain python too: count them in `before` (numpy imported).
    plain = run_python([str(script)], timeout=60)
    under_corral = run_python(["-m", "corral", str(script)], timeout=60)
    assert plain.returncode == 0 and under_corral.returncode == 0, plain.stderr + under_corral.stderr
    assert under_corral.stdout.strip() == plain.stdout.strip() == "0"


@pytest.mark.parametrize("make", [lambda: threading.Semaphore(0), lambda: corral._core.IdleCount()],
                         ids=["stdlib", "corral"])
def test_the_idle_counter_behaves_as_the_stdlibs_semaphore(make):
    # ThreadPoolExecutor._idle_semaphore: corral's is C++, with threading.Semaphore(0)'s semantics.
    sem = make()
    assert sem.acquire(timeout=0) is False
    assert sem.acquire(blocking=False) is False
    sem.release()
    sem.release(2)
    assert [sem.acquire(timeout=0) for _ in range(4)] == [True, True, True, False]
    start = time.monotonic()
    assert sem.acquire(timeout=0.05) is False
    assert time.monotonic() - start >= 0.04
    threading.Timer(0.05, sem.release).start()
    assert sem.acquire(timeout=10) is True
    with pytest.raises(ValueError):
        sem.acquire(blocking=False, timeout=1)
    with pytest.raises(ValueError):
        sem.release(0)
    with corral.ThreadPoolExecutor(2) as ex:
        assert type(ex._idle_semaphore).__name__ == "IdleCount"
        assert list(ex.map(abs, range(-5, 0))) == [5, 4, 3, 2, 1]


FIRST_TASK_WAITS = """\
import ctypes, ctypes.util, corral, numpy
from corral import _permits, _work_queue
def waits(pool_threads):  # `first`: the list run_permitted marks when it takes a pool's first-task turn
    spec = _permits.spec(_permits.DYNAMIC, pool_threads, True, _work_queue.WorkQueue())
    first = spec[2]
    assert corral._core.run_permitted(spec, pow, 2, 10) == 1024
    return first != []
def per_thread_counts():
    return any(p["scope"] == "calling_thread" for p in corral.native_pools())
print(per_thread_counts(), waits(1), waits(2))
ctypes.CDLL(ctypes.util.find_library("gomp"))  # an OpenMP runtime: a per-thread count
print(per_thread_counts(), waits(1), waits(2))
"""


def test_a_first_task_waits_for_its_siblings_only_where_a_team_keeps_its_count():
    # The first task of an executor waits (at most 1 ms, until the submitter's next put) before it decides
    # its BLAS/OpenMP count, because an OpenMP team keeps the count its task started with. Without a
    # per-thread control loaded (numpy's pthreads OpenBLAS follows the demand down call by call) it does
    # not wait, nor in a pool of one thread, whose tasks never run beside each other: an executor made per
    # task spent 1.4 ms a pool, 0.25 ms plain (docs/native.md, "Inner thread counts").
    out = run_python(["-c", FIRST_TASK_WAITS], timeout=120)
    assert out.returncode == 0, out.stderr
    before, after = [line.split() for line in out.stdout.splitlines()]
    assert before == [before[0], "False", before[0]]  # waits in a pool of 2 exactly when a team would keep
    assert after == ["True", "False", "True"]
