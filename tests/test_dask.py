"""Dask workers under the budget (corral.dask, docs/children.md "Dask"): a real LocalCluster of worker
processes, observed from inside the workers (client.run, tasks)."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from _helpers import run_python

distributed = pytest.importorskip("distributed")  # requirements-dev.txt: CI fails on the skip

from corral import _dask_worker, _worker_lending, _worker_share  # noqa: E402

# Shared by the scripts below and the in-process tests.
WORKER_SIDE = textwrap.dedent("""\
    import os, signal, time

    def report():
        import corral, threadpoolctl
        from corral import _core
        blas = [p["num_threads"] for p in threadpoolctl.threadpool_info() if p["internal_api"] == "openblas"]
        return {"cpus": sorted(os.sched_getaffinity(0)), "budget": corral.budget().cpus, "permits": _core.permits(),
                "env": {v: os.environ.get(v) for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")},
                "blas": blas}

    def settled(client, workers, timeout=30):
        # Workers re-read the host table every 0.5 s: wait until each has its own CPUs.
        deadline = time.monotonic() + timeout
        while True:
            seen = client.run(report)
            cpus = [c for r in seen.values() for c in r["cpus"]]
            if len(seen) == workers and len(cpus) == len(set(cpus)) == len(os.sched_getaffinity(0)):
                return seen
            if time.monotonic() > deadline:
                raise AssertionError(f"workers never settled: {seen}")
            time.sleep(0.2)

    def blas_in_task(n):
        import numpy as np, threadpoolctl
        a = np.ones((n, n))
        a @ a
        return [p["num_threads"] for p in threadpoolctl.threadpool_info() if p["internal_api"] == "openblas"]

    def blas_together(i):
        # Reads the BLAS count while the other task is surely running too.
        from distributed import Event
        Event(f"started-{i}").set()
        Event(f"started-{1 - i}").wait(30)
        seen = blas_in_task(64)
        Event(f"read-{i}").set()
        Event(f"read-{1 - i}").wait(30)
        return seen

    def inc(x):
        return x + 1

    def fan_out(n):
        from distributed import worker_client
        with worker_client() as client:  # secedes from the worker's pool while it waits
            return sum(client.gather(client.map(inc, range(n))))

    def dies_once(marker):
        if not os.path.exists(marker):
            open(marker, "w").close()
            time.sleep(0.2)
            os.kill(os.getpid(), signal.SIGKILL)  # the worker process, mid-task
        return "rescheduled"
""")

CLUSTER = WORKER_SIDE + textwrap.dedent("""\
    import json, sys
    from dask.distributed import Client, LocalCluster

    def children_left():
        left = []
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                with open(f"/proc/{pid}/stat") as f:
                    if f.read().rsplit(")", 1)[1].split()[1] == str(os.getpid()):
                        left.append(open(f"/proc/{pid}/cmdline").read().replace(chr(0), " ")[:200])
            except OSError:  # ended meanwhile
                pass
        # multiprocessing's resource tracker lives as long as the program, with or without corral.
        return [cmd for cmd in left if "multiprocessing.resource_tracker" not in cmd]

    if __name__ == "__main__":
        workers, threads, marker = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
        out = {}
        with LocalCluster(n_workers=workers, threads_per_worker=threads, processes=True,
                          dashboard_address=None) as cluster, Client(cluster) as client:
            out["workers"] = list(settled(client, workers).values())
            if workers == 1:
                out["lone"] = client.submit(blas_in_task, 256).result()
                out["together"] = client.gather(client.map(blas_together, [0, 1]))
            else:
                out["fan_out"] = client.submit(fan_out, 20).result()
                out["killed"] = client.submit(dies_once, marker).result(timeout=60)
                out["after_kill"] = list(settled(client, workers).values())
                out["sum"] = sum(client.gather(client.map(inc, range(100))))
        out["left"] = children_left()
        print(json.dumps(out))
""")


def _host_table() -> "_dask_worker.HostTable":
    return _dask_worker.HostTable(_dask_worker.table_key(_worker_share.budget_view()))


def _run_cluster(tmp_path, workers, threads, *corral_options):
    (tmp_path / "cluster.py").write_text(CLUSTER)
    r = run_python(["-m", "corral", *corral_options, "cluster.py", str(workers), str(threads),
                    str(tmp_path / "marker")], cwd=tmp_path, timeout=240, prefix=["taskset", "-c", "0,1"])
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.splitlines()[-1])


def test_local_cluster_under_corral_gives_each_worker_its_share(tmp_path):
    out = _run_cluster(tmp_path, 2, 2)
    for seen in (out["workers"], out["after_kill"]):
        assert sorted(w["cpus"] for w in seen) == [[0], [1]]  # disjoint, covering the budget
        for w in seen:
            assert w["budget"] == 1 and w["permits"] == 1
            assert w["env"] == {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
            assert w["blas"] in ([], [1])  # numpy loaded in the worker or not yet
    assert out["fan_out"] == sum(range(1, 21))  # tasks that submit tasks
    assert out["killed"] == "rescheduled"  # the task of the killed worker ran again elsewhere
    assert out["sum"] == sum(range(1, 101))
    assert out["left"] == []  # no worker or nanny process outlives the cluster
    assert _host_table().live() == []  # every slot went back with its process


def test_one_worker_gets_blas_threads_that_follow_its_running_tasks(tmp_path):
    out = _run_cluster(tmp_path, 1, 2)
    (worker,) = out["workers"]
    assert worker["cpus"] == [0, 1] and worker["budget"] == 2 and worker["permits"] == 2
    # Dask's nanny would have set 1 in each; corral leaves the share, and the running tasks decide.
    assert worker["env"] == {"OMP_NUM_THREADS": "2", "OPENBLAS_NUM_THREADS": "2", "MKL_NUM_THREADS": "2"}
    assert out["lone"] == [2]  # a lone task: every CPU of the share
    assert out["together"] == [[1], [1]]  # both threads busy: one each


def test_no_children_leaves_dask_workers_to_dask(tmp_path):
    out = _run_cluster(tmp_path, 1, 2, "--no-children")
    (worker,) = out["workers"]
    assert worker["env"]["OPENBLAS_NUM_THREADS"] == "1"  # Dask's fixed limit
    assert out["lone"] == [1]


def test_in_process_workers_run_their_tasks_under_the_programs_permits(tmp_path):
    script = textwrap.dedent("""\
        import json, os
        from dask.distributed import Client, LocalCluster

        def seen(_):
            from corral import _core
            return _core.in_permit_task(), sorted(os.sched_getaffinity(0))

        if __name__ == "__main__":
            with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as cluster, \\
                    Client(cluster) as client:
                print(json.dumps(client.gather(client.map(seen, range(4)))))
    """)
    (tmp_path / "inproc.py").write_text(script)
    r = run_python(["-m", "corral", "inproc.py"], cwd=tmp_path, timeout=120, prefix=["taskset", "-c", "0,1"])
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads(r.stdout.splitlines()[-1]) == [[True, [0, 1]]] * 4  # permits, and no share narrowing the program


LENDING = WORKER_SIDE + textwrap.dedent("""\
    import json, sys
    from dask.distributed import Client, LocalCluster

    def seen_now():
        r = report()
        return len(r["cpus"]), r["permits"], r["blas"]

    def until(want, timeout=20):
        deadline = time.monotonic() + timeout
        while (now := seen_now()) != want and time.monotonic() < deadline:
            time.sleep(0.001)
        return now

    def borrower(flags):
        import numpy  # noqa: F401 (OpenBLAS loaded: its process-wide count is read)
        borrowed = until((2, 2, [2]))  # the other worker has no task: its CPU is lent
        open(os.path.join(flags, "borrowed"), "w").close()
        while not os.path.exists(os.path.join(flags, "lender-busy")):
            time.sleep(0.001)
        returned = until((1, 1, [1]))  # a task runs there now: its CPU goes back
        open(os.path.join(flags, "returned"), "w").close()
        return borrowed, returned

    def lender(flags):
        while not os.path.exists(os.path.join(flags, "borrowed")):
            time.sleep(0.001)
        open(os.path.join(flags, "lender-busy"), "w").close()
        deadline = time.monotonic() + 20
        while not os.path.exists(os.path.join(flags, "returned")) and time.monotonic() < deadline:
            time.sleep(0.001)
        return seen_now()

    if __name__ == "__main__":
        flags = sys.argv[1]
        with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                          dashboard_address=None) as cluster, Client(cluster) as client:
            settled(client, 2)
            a, b = sorted(client.scheduler_info()["workers"])
            borrowing = client.submit(borrower, flags, workers=[a], pure=False)
            while not os.path.exists(os.path.join(flags, "borrowed")) and not borrowing.done():
                time.sleep(0.01)
            lending = client.submit(lender, flags, workers=[b], pure=False)
            borrowed, returned = borrowing.result()
            out = {"borrowed": borrowed, "returned": returned, "lender": lending.result(),
                   "after": list(settled(client, 2).values()),
                   "sum": sum(client.gather(client.map(inc, range(100))))}
        print(json.dumps(out))
""")


def test_an_idle_workers_cpus_are_lent_to_a_busy_one_and_given_back(tmp_path):
    """docs/children.md, "Lending": a worker with a task running borrows the CPUs of a worker that has
    none (affinity, permits and the BLAS count its task sees), and gives them back when a task starts
    there; with no task running each worker is on its own share again."""
    pytest.importorskip("numpy")
    pytest.importorskip("threadpoolctl")
    (tmp_path / "lending.py").write_text(LENDING)
    (tmp_path / "flags").mkdir()
    r = run_python(["-m", "corral", "lending.py", str(tmp_path / "flags")], cwd=tmp_path, timeout=240,
                   prefix=["taskset", "-c", "0,1"])
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.splitlines()[-1])
    assert out["borrowed"] == [2, 2, [2]]  # the idle worker's CPU, its permit, and OpenBLAS's count
    assert out["returned"] == [1, 1, [1]]
    assert out["lender"][:2] == [1, 1]  # the lender's task runs on its own CPU
    assert sorted(w["cpus"] for w in out["after"]) == [[0], [1]]
    assert out["sum"] == sum(range(1, 101))
    assert _host_table().live() == []


FORKED_CHILD = textwrap.dedent("""\
    import os, sys, time
    from corral import _dask_worker, _worker_share
    table = _dask_worker.HostTable("t", directory=sys.argv[1])
    membership = _dask_worker._new_membership(table, _worker_share.budget_view(), dict(os.environ))
    _dask_worker._membership = membership
    membership.lending.task_started()  # a task runs: its busy lock is held
    if os.fork() == 0:  # the task forks a child that outlives the worker
        time.sleep(60)
        os._exit(0)
    print(table.slot, flush=True)
    os._exit(0)  # the worker ends (as if killed: nothing is released by hand)
""")


def test_a_process_forked_by_a_task_keeps_no_slot_of_its_worker(tmp_path):
    """A child forked by a task shares the worker's open lock files; it must close its copies, or it
    keeps the slot live (and busy, or lent) for good after the worker ends."""
    (tmp_path / "fork.py").write_text(FORKED_CHILD)
    table = _dask_worker.HostTable("t", directory=str(tmp_path))
    worker = subprocess.Popen([sys.executable, str(tmp_path / "fork.py"), str(tmp_path)], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert worker.stdout.readline().strip() == "0"
        assert worker.wait(timeout=30) == 0
        deadline = time.monotonic() + 10
        while table.live() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert table.live() == []  # the child still sleeps; the slot went with its worker
        busy = os.open(str(tmp_path / "t.0.busy"), os.O_RDONLY)
        try:
            import fcntl

            fcntl.flock(busy, fcntl.LOCK_EX | fcntl.LOCK_NB)  # not held by the child either
        finally:
            os.close(busy)
    finally:
        subprocess.run(["pkill", "-f", str(tmp_path / "fork.py")], check=False)


def test_workers_whose_shares_overlap_lend_nothing():
    """More workers than CPUs: shares share CPUs, so a slot's CPUs are not its own to lend."""
    from collections import namedtuple

    share = namedtuple("share", "cpus threads")
    plans = {3: [share((0,), 1), share((1,), 1), share((0,), 1)], 2: [share((0,), 1), share((1,), 1)]}
    assert _worker_lending.lendable(plans[3]) is None
    assert _worker_lending.lendable(plans[2]) == plans[2]


@pytest.fixture
def worker_side(tmp_path, monkeypatch):
    (tmp_path / "worker_side.py").write_text(WORKER_SIDE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", str(tmp_path) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    monkeypatch.delenv("CORRAL_CPUS", raising=False)
    import worker_side

    saved = dict(os.environ)
    yield worker_side
    sys.modules.pop("worker_side", None)
    # Dask's nanny puts OMP/MKL/OPENBLAS_NUM_THREADS=1 into its own process's environment for good.
    os.environ.clear()
    os.environ.update(saved)


def test_the_plugin_puts_a_running_cluster_under_corral(worker_side):
    from dask.distributed import Client, LocalCluster

    import corral.dask

    # OMP_NUM_THREADS=16 is the user's (an upper bound, lowered to the share); OPENBLAS/MKL=1 are Dask's.
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=True, dashboard_address=None,
                      env={"OMP_NUM_THREADS": "16"}) as cluster, Client(cluster) as client:
        before = client.run(worker_side.report)
        (w,) = before.values()
        assert w["env"] == {"OMP_NUM_THREADS": "16", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        client.register_plugin(corral.dask.CorralWorkerPlugin())
        (w,) = worker_side.settled(client, 1).values()
        assert w["budget"] == 2 and w["permits"] == 2
        assert w["env"] == {"OMP_NUM_THREADS": "2", "OPENBLAS_NUM_THREADS": "2", "MKL_NUM_THREADS": "2"}
        assert client.submit(worker_side.blas_in_task, 256).result() == [2]
        assert client.gather(client.map(worker_side.blas_together, [0, 1])) == [[1], [1]]
        assert client.submit(worker_side.fan_out, 10).result() == sum(range(1, 11))


def test_dask_worker_with_the_preload(worker_side, tmp_path):
    dask = os.path.join(os.path.dirname(sys.executable), "dask")
    scheduler_file = str(tmp_path / "scheduler.json")
    common = {"cwd": tmp_path, "stdout": subprocess.DEVNULL, "stderr": subprocess.PIPE, "text": True}
    scheduler = subprocess.Popen([dask, "scheduler", "--scheduler-file", scheduler_file, "--no-dashboard",
                                  "--port", "0"], **common)
    workers = None
    try:
        deadline = time.monotonic() + 60
        while not os.path.exists(scheduler_file):
            assert scheduler.poll() is None and time.monotonic() < deadline, "the scheduler did not start"
            time.sleep(0.1)
        workers = subprocess.Popen([dask, "worker", "--scheduler-file", scheduler_file, "--nworkers", "2",
                                    "--nthreads", "2", "--no-dashboard", "--preload", "corral.dask"], **common)
        from dask.distributed import Client

        with Client(scheduler_file=scheduler_file, timeout=60) as client:
            client.wait_for_workers(2, timeout=60)
            seen = worker_side.settled(client, 2)
            assert sorted(len(w["cpus"]) for w in seen.values()) == [1, 1]
            assert all(w["budget"] == 1 and w["permits"] == 1 for w in seen.values())
            assert sum(client.gather(client.map(worker_side.inc, range(10)))) == sum(range(1, 11))
    finally:
        for proc in (workers, scheduler):
            if proc is not None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=60)
    assert _host_table().live() == []


def test_the_preload_refuses_a_nanny():
    import corral.dask

    with pytest.raises(TypeError, match="worker preload"):
        corral.dask.dask_setup(object())


def test_host_table_slots_follow_live_processes(tmp_path):
    table = _dask_worker.HostTable("t", directory=str(tmp_path))
    assert table.claim() == 0 and table.live() == [0]
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""\
        import sys, time
        from corral import _dask_worker
        t = _dask_worker.HostTable("t", directory={str(tmp_path)!r})
        print(t.claim(), flush=True)
        time.sleep(60)
    """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "1"
        assert table.live() == [0, 1]
    finally:
        holder.kill()  # SIGKILL: no cleanup runs, the kernel drops the lock
        holder.wait()
    assert table.live() == [0]
    table.release()
    assert table.live() == []
