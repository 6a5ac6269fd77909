"""`python -m corral report`: the JSON on programs whose shape is known, the program left untouched
(output, threads, descriptors, exit status, signals), and bad options refused.

Tolerances are wide on purpose and stated at each assert: the runnable count and the CPU-wait share are
the kernel's view of the whole tree, read every 5 ms, on a machine other jobs may share (their load
raises a tree's CPU-wait share, never its runnable count, which counts threads waiting for a CPU too).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from _helpers import run_python

ROOT = Path(__file__).resolve().parent.parent
W1 = ROOT / "benchmarks" / "workloads" / "w1_balanced.py"


def report(tmp_path, *args, env=None, timeout=60):
    out = tmp_path / "report.json"
    proc = run_python(["-m", "corral", "report", "--json", str(out), *args], env=env, timeout=timeout)
    data = json.loads(out.read_text()) if out.exists() else None
    return proc, data


def mean(xs):
    return sum(xs) / len(xs)


def busy_samples(run, lo, hi):
    """Runnable counts of the samples between lo and hi seconds (the program's steady part)."""
    return [r for t, r in zip(run["samples"]["t"], run["samples"]["runnable"]) if lo <= t <= hi]


# --- known shapes ---------------------------------------------------------------------------------

def test_an_idle_program_has_no_runnable_threads(tmp_path):
    proc, data = report(tmp_path, "--plain", "-c", "import time; time.sleep(1.0)")
    assert proc.returncode == 0, proc.stderr
    run = data["runs"][0]
    assert run["mode"] == "plain" and run["exit"] == {"status": 0, "signal": None, "signum": None}
    # Once the interpreter is up (0.3 s in), nothing runs: a stray sample may catch the sampler's neighbour.
    idle = busy_samples(run, 0.4, 0.9)
    assert len(idle) >= 20, "sampled every 5 ms: at least 20 samples in 0.5 s"
    assert mean(idle) <= 0.1
    assert run["figures"]["oversubscribed_share"] == 0
    assert run["cpu_s"] < 0.5 * run["wall_s"]
    assert run["samples"]["threads"][-1] == 1, "the probe thread is not counted"


def test_a_cpu_bound_thread_is_one_runnable_thread_and_cpu_time_is_wall_time(tmp_path):
    code = "import time\nt = time.time()\nwhile time.time() - t < 1.2: pass"
    proc, data = report(tmp_path, "--plain", "-c", code)
    assert proc.returncode == 0, proc.stderr
    run = data["runs"][0]
    busy = busy_samples(run, 0.4, 1.2)
    assert 0.9 <= mean(busy) <= 1.1, "one thread, runnable in (almost) every sample"
    # The thread wanted a CPU the whole 1.2 s: on one (run) or waiting for one (wait, when other jobs
    # share the machine). CPU time as the process counts it (utime+stime) agrees with the scheduler's.
    s = run["samples"]
    assert s["run_s"][-1] + s["wait_s"][-1] >= 0.9 * 1.2
    assert abs(run["cpu_s"] - s["run_s"][-1]) <= 0.1 * s["run_s"][-1] + 0.05
    assert run["figures"]["oversubscribed_share"] <= 0.1
    assert "main thread" in run["runnable_by_group"]


def test_four_busy_child_processes_on_a_budget_of_two_wait_half_the_time(tmp_path):
    code = textwrap.dedent("""\
        import subprocess, sys
        spin = "import time\\nt = time.time()\\nwhile time.time() - t < 1.2: pass"
        children = [subprocess.Popen([sys.executable, "-c", spin]) for _ in range(4)]
        print(sum(c.wait() for c in children))
    """)
    proc, data = report(tmp_path, "--plain", "-c", code, env={"CORRAL_CPUS": "2"})
    assert proc.returncode == 0 and proc.stdout == "0\n", proc.stderr
    run = data["runs"][0]
    assert data["budget"] == 2
    assert len(run["processes"]) == 5, "the program and its four children"
    assert 3.5 <= max(r for r in run["samples"]["runnable"]) <= 5
    # Four runnable threads on at most 2 CPUs (CORRAL_CPUS only names the budget: on a bigger machine they
    # may run on 4 CPUs and wait little, so the wait share is asserted only where there are 2).
    fig = run["figures"]
    assert fig["oversubscribed_share"] >= 0.4
    assert 1.6 <= fig["oversubscribed_by"] <= 2.6
    if len(os.sched_getaffinity(0)) <= 2:
        assert fig["cpu_wait_share"] >= 0.35, "4 threads on 2 CPUs wait about half of the time"
    assert run["runnable_by_group"]["child processes"]


def test_the_demo_is_oversubscribed_plain_and_near_the_budget_under_corral(tmp_path):
    # The seed's demo as a container claiming 4 CPUs would run it on a budget of 2: a pool of 4, OpenBLAS
    # told 2 threads. Plain: up to 4 x 2 threads runnable; corral: 2 tasks at a time, 1 BLAS thread each.
    env = {"CORRAL_CPUS": "2", "OPENBLAS_NUM_THREADS": "2"}
    proc, data = report(tmp_path, "--compare", str(W1), "--pool", "4", "--arrays", "48", "--n", "192",
                        "--passes", "1", env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("BENCH_RESULT") == 2
    plain, under = data["runs"]
    assert (plain["mode"], under["mode"]) == ("plain", "corral")
    p, c = plain["figures"], under["figures"]
    assert p["runnable_max"] >= 5, "plain: more than 4 threads runnable at once"
    # 4 callers share OpenBLAS's one worker thread (one call at a time uses it): 2.9-3.4 runnable on average
    # on 2 quiet cores (the machine's speed and other load move it); corral's is clearly lower in the same run
    assert p["runnable_mean"] > 2.0, "plain: above the budget of 2"
    assert c["runnable_mean"] <= p["runnable_mean"] - 0.3
    # Shares are over the whole run, start-up included, and vary with the machine's other load: 0.44-0.64
    # for plain on 2 quiet cores with 48 arrays. With 24 arrays start-up was most of the run and plain's
    # share 0.21-0.35, once 0.196 in CI: the demo is sized so that its busy part dominates. corral's is at
    # most three quarters of plain's in the same run (0.00-0.04 on a quiet machine; 0.26 against 0.39
    # while benchmarks ran beside the test)
    assert p["oversubscribed_share"] >= 0.2
    assert c["runnable_mean"] <= 2.7, "corral: near the budget (OpenBLAS threads spin a little after a call)"
    assert c["oversubscribed_share"] <= 0.75 * p["oversubscribed_share"]
    assert c["pools"]["max_running"] <= 2 + c["pools"]["overdrafts"]
    # Its 4 threads are there, as plain's, and each takes a task as plain's does: 4 in flight, 2 of them
    # running, the others waiting for a permit (docs/permits.md, "Taking tasks")
    assert under["threads_by_group"]["ThreadPool workers"] == 4
    assert 2 <= c["pools"]["max_in_flight"] <= 4
    # Library thread counts: plain keeps OpenBLAS at 2; corral gives each running task 1 while two run.
    plain_threads = {n for change in plain["libraries"] for lib, n, _ in change["libs"] if lib == "openblas"}
    corral_threads = {n for change in under["libraries"] for lib, n, _ in change["libs"] if lib == "openblas"}
    assert plain_threads == {2}
    assert 1 in corral_threads
    assert plain["threads_by_group"]["ThreadPool workers"] == 4
    assert "corral would change: thread pools (ThreadPool workers of 4 threads)" in proc.stderr
    assert "likely gain" in proc.stderr and "corral against plain" in proc.stderr


def test_an_io_bound_pool_keeps_its_tasks_in_flight_with_few_threads_runnable(tmp_path):
    code = textwrap.dedent("""\
        import time
        from concurrent.futures import ThreadPoolExecutor
        with ThreadPoolExecutor(8) as ex:
            print(sum(ex.map(lambda i: time.sleep(0.05) or i, range(96))))
    """)
    proc, data = report(tmp_path, "-c", code)
    assert proc.returncode == 0 and proc.stdout == f"{sum(range(96))}\n", proc.stderr
    run = data["runs"][0]
    assert run["mode"] == "corral"
    assert mean(busy_samples(run, 0.4, run["wall_s"] - 0.1)) <= 0.5, "sleeping threads are not runnable"
    assert run["figures"]["oversubscribed_share"] <= 0.05
    pools = run["figures"]["pools"]
    assert pools["max_in_flight"] == 8
    assert max(p["paused"] for p in run["permits"]) >= 6, "sleeping tasks gave their permit back"
    assert run["threads_by_group"]["ThreadPoolExecutor-0"] == 8, "the pool's threads, named by the probe"


@pytest.mark.parametrize("n", [1, 2])
def test_library_thread_counts_are_reported(tmp_path, n):
    code = "import numpy, time; time.sleep(0.3)"
    proc, data = report(tmp_path, "--plain", "-c", code, env={"OPENBLAS_NUM_THREADS": str(n)})
    assert proc.returncode == 0, proc.stderr
    run = data["runs"][0]
    counts = {threads for change in run["libraries"] for lib, threads, _ in change["libs"] if lib == "openblas"}
    assert counts == {n}
    # OpenBLAS starts n - 1 workers beside the calling thread (the main thread).
    assert max(run["samples"]["threads"]) == n
    assert "library openblas" in proc.stderr and f"threads {n}" in proc.stderr


# --- the program is untouched ---------------------------------------------------------------------

PROBE_PROGRAM = textwrap.dedent("""\
    import os, sys, threading, atexit, time
    atexit.register(lambda: print("atexit ran"))
    time.sleep(0.1)  # the probe has ticked many times by now
    print(threading.active_count(), [t.name for t in threading.enumerate()], threading.main_thread().name)
    print(sys.argv[1:], os.environ.get("CORRAL_REPORT"), sys.stdin.read())
    fd = os.open(os.devnull, os.O_RDONLY)
    print("first free descriptor", fd)
    print("to stderr", file=sys.stderr)
    sys.exit(int(sys.argv[1]))
""")


@pytest.mark.parametrize("mode", ["--plain", "corral"])
def test_the_program_sees_and_prints_what_it_would_without_the_report(tmp_path, mode):
    script = tmp_path / "prog.py"
    script.write_text(PROBE_PROGRAM)
    runner = [] if mode == "--plain" else ["-m", "corral"]
    expected = subprocess.run([sys.executable, *runner, str(script), "3", "x"], input="in", capture_output=True,
                              text=True, timeout=60)
    opts = ["--plain"] if mode == "--plain" else []
    got = subprocess.run([sys.executable, "-m", "corral", "report", "-q", *opts, str(script), "3", "x"], input="in",
                         capture_output=True, text=True, timeout=60)
    assert expected.returncode == got.returncode == 3
    assert got.stdout == expected.stdout
    assert "1 ['MainThread'] MainThread" in got.stdout
    assert got.stderr == expected.stderr == "to stderr\n"


def test_the_summary_goes_to_stderr_and_the_output_stays_the_programs(tmp_path):
    proc, data = report(tmp_path, "-c", "print('only this')")
    assert proc.stdout == "only this\n"
    assert proc.stderr.startswith("corral report: budget")


def test_a_forked_child_that_exits_normally_is_sampled_and_ends_as_it_would(tmp_path):
    code = textwrap.dedent("""\
        import os, sys, time
        pid = os.fork()
        if pid == 0:
            t = time.time()
            while time.time() - t < 0.5: pass
            sys.exit(3)  # the interpreter's own shutdown, in the child
        print(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
    """)
    proc, data = report(tmp_path, "--interval", "1", "-c", code)
    assert proc.returncode == 0 and proc.stdout == "3\n", proc.stderr
    run = data["runs"][0]
    assert len(run["processes"]) == 2
    assert max(run["samples"]["runnable"]) >= 1 and run["runnable_by_group"].get("child processes")


def test_a_program_that_closes_every_descriptor_keeps_its_files_its_own(tmp_path):
    target = tmp_path / "mine.txt"
    code = textwrap.dedent(f"""\
        import os, time
        os.closerange(3, 4096)
        fds = [os.open({str(target)!r}, os.O_WRONLY | os.O_CREAT) for _ in range(800)]  # reuses the probe's number
        import threading; threading.Thread(target=lambda: None, name="late").start()  # a change the probe sees
        time.sleep(0.1)
        print(sum(os.fstat(fd).st_size for fd in fds))
    """)
    proc, data = report(tmp_path, "--plain", "-c", code)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "0\n" and target.read_text() == "", "nothing of the probe's in the program's file"
    assert data["runs"][0]["samples"]["t"], "the outside view still sampled"


def test_the_probe_has_opened_and_closed_its_own_files_before_the_program_starts(tmp_path):
    # The probe's comm file is the only descriptor it opens for a moment; a program that closes every
    # descriptor and opens its own must never find it open (it would get the probe's name in its file).
    code = textwrap.dedent("""\
        import os
        names = []
        for tid in os.listdir("/proc/self/task"):
            with open(f"/proc/self/task/{tid}/comm") as f:
                names.append(f.read().strip())
        print("corral-probe" in names)
    """)
    for _ in range(3):
        proc, data = report(tmp_path, "--plain", "-c", code)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout == "True\n", "the probe named itself before the program's first line"


def test_a_crash_is_reported_with_its_status_and_traceback(tmp_path):
    proc, data = report(tmp_path, "--plain", "-c", "import time; time.sleep(0.2); 1/0")
    assert proc.returncode == 1
    assert "ZeroDivisionError" in proc.stderr
    assert data["runs"][0]["exit"]["status"] == 1
    assert len(data["runs"][0]["samples"]["t"]) >= 10


def test_a_program_killed_by_a_signal_ends_the_report_by_it(tmp_path):
    code = "import os, signal, time; time.sleep(0.2); os.kill(os.getpid(), signal.SIGTERM)"
    proc, data = report(tmp_path, "-c", code)
    assert proc.returncode == -signal.SIGTERM
    assert data["runs"][0]["exit"]["signal"] == "SIGTERM"


def test_compare_stops_after_a_failed_run_only_when_it_was_interrupted(tmp_path):
    proc, data = report(tmp_path, "--compare", "-c", "raise SystemExit(4)")
    assert proc.returncode == 4
    assert [r["exit"]["status"] for r in data["runs"]] == [4, 4], "both runs ran; their status is the report's"


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupted_program_still_gets_its_report(tmp_path, sig):
    out = tmp_path / "r.json"
    code = "import time\nprint('ready', flush=True)\nwhile True: time.sleep(0.01)"
    env = {k: v for k, v in os.environ.items() if k != "CORRAL_CPUS"}
    proc = subprocess.Popen([sys.executable, "-m", "corral", "report", "--json", str(out), "--compare", "-c", code],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            stdin=subprocess.DEVNULL, start_new_session=True)  # no terminal: signals go to us only
    assert proc.stdout.readline() == "ready\n"
    time.sleep(0.3)
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=30)
    assert proc.returncode == -sig, stderr
    data = json.loads(out.read_text())
    assert len(data["runs"]) == 1, "interrupted during the plain run: the corral run does not start"
    run = data["runs"][0]
    assert run["exit"]["signal"] == signal.Signals(sig).name
    assert run["samples"]["t"][-1] >= 0.3
    if sig == signal.SIGINT:
        assert "KeyboardInterrupt" in stderr, "the program got the SIGINT (python's traceback)"
    assert "corral report: budget" in stderr


def test_the_html_page_is_one_file_with_its_plot(tmp_path):
    page = tmp_path / "r.html"
    proc, data = report(tmp_path, "--compare", "--html", str(page), "-c", "import time; time.sleep(0.2)")
    assert proc.returncode == 0, proc.stderr
    text = page.read_text()
    assert text.count("data:image/png;base64,") == 1
    assert "<title>corral report" in text and "src=\"http" not in text
    assert "plain python" in text and "python -m corral" in text


# --- bad options ----------------------------------------------------------------------------------

@pytest.mark.parametrize("args, words", [
    ([], "nothing to run"),
    (["--interval", "0", "-c", "pass"], "between 0.5 and 10000 ms"),
    (["--interval", "x", "-c", "pass"], "milliseconds"),
    (["--plain", "--compare", "-c", "pass"], "not allowed with"),
    (["no-such-file.py"], "can't open file"),
    (["--json", "/no/such/dir/r.json", "-c", "pass"], "cannot write in"),
    (["--bogus", "-c", "pass"], "unrecognized arguments"),
])
def test_bad_options_are_one_line_and_exit_2(args, words):
    proc = run_python(["-m", "corral", "report", *args])
    assert proc.returncode == 2
    assert words in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stdout == ""


def test_html_without_matplotlib_is_one_line_and_exit_2(tmp_path):
    fake = tmp_path / "fake" / "matplotlib"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('No module named matplotlib')\n")
    proc = run_python(["-m", "corral", "report", "--html", str(tmp_path / "r.html"), "-c", "print(1)"],
                      env={"PYTHONPATH": str(tmp_path / "fake")})
    assert proc.returncode == 2
    assert "pip install 'corral[report]'" in proc.stderr and proc.stderr.count("\n") == 1
    assert proc.stdout == "", "refused before the program ran"


def test_help_names_the_modes_and_options():
    proc = run_python(["-m", "corral", "report", "--help"])
    assert proc.returncode == 0
    for word in ("--plain", "--compare", "--interval", "--json", "--html", "stderr"):
        assert word in proc.stdout


def test_every_json_key_is_documented(tmp_path):
    proc, data = report(tmp_path, "--plain", "-c", "pass")
    doc = (ROOT / "docs" / "report.md").read_text()
    schema = doc[doc.index("## JSON"):doc.index("## Overhead")]
    run = data["runs"][0]
    keys = [*data, *run, *run["samples"], *run["figures"], *run["exit"], *run["figures"]["estimate"],
            *run["processes"][0], *run["probe"]]
    missing = sorted({k for k in keys if f'"{k}"' not in schema})
    assert not missing, f"keys the JSON has and docs/report.md does not name: {missing}"


def test_plain_mode_keeps_child_pythons_plain_even_under_a_corral_above(tmp_path):
    # CORRAL_CHILDREN set by a corral runner above would put the "plain" run's child Pythons under corral
    code = ("import subprocess, sys; print(subprocess.run([sys.executable, '-c', "
            "'import sys; print(\"corral\" in sys.modules)'], capture_output=True, text=True).stdout.strip())")
    out = run_python(["-m", "corral", "report", "--plain", "-q", "-c", code], env={"CORRAL_CHILDREN": "1"},
                     timeout=60, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
