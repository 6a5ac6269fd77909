#!/usr/bin/env python3
"""Where a run's threads spend their time: samples /proc/<pid>/task/* of a command while it runs.

    .venv/bin/python benchmarks/thread_states.py [--interval-ms 5] [--gdb-at 1.5,3] [--json OUT] -- CMD ...

For every thread of the process (and of its child processes, pool workers included): its CPU time and its
run-delay (time runnable but not running: /proc/.../schedstat, nanoseconds), how often it was seen
runnable (state R), and its role: the main thread, a corral monitor (`corral-*` by name), or, by the
library its stack is in when gdb looks (--gdb-at: seconds after start; a stack snapshot pauses the process
for well under a second), an OpenBLAS or OpenMP worker. Other threads are Python threads (pool threads).
These figures are CPU time and counts, which a busy shared machine disturbs far less than wall time.
A library worker's CPU time while no task needs it is its spin-waiting: compare a configuration with
`threadpool_limits(1)`, where library workers never run.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

# gdb frames that name a library worker's loop, and what to call it.
ROLES = (
    (re.compile(r"blas_thread_server|exec_blas|openblas", re.I), "openblas"),
    (re.compile(r"gomp_|libgomp", re.I), "openmp"),
    (re.compile(r"__kmp|libiomp|libomp", re.I), "openmp"),
    (re.compile(r"tbb", re.I), "tbb"),
)
LIBRARY = re.compile(r" from (\S+)")


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--interval-ms", type=float, default=5.0, help="sampling period (default %(default)s ms)")
    p.add_argument("--gdb-at", default="", help="comma-separated seconds after start at which gdb names the "
                                                "threads' libraries (default: none)")
    p.add_argument("--gdb-new", type=int, default=0, metavar="N",
                   help="also name the libraries of threads alive for 0.2 s that gdb has not seen, at most N times")
    p.add_argument("--timeline-ms", type=float, default=0.0, metavar="MS",
                   help="also print, per MS of the run, how many threads of each role were runnable on average")
    p.add_argument("--json", type=Path, default=None, help="write every thread's figures here")
    p.add_argument("command", nargs=argparse.REMAINDER, help="-- then the command to run")
    args = p.parse_args(argv)
    if args.command and args.command[0] == "--":
        args.command = args.command[1:]
    if not args.command:
        p.error("no command given (put it after --)")
    if args.interval_ms <= 0:
        p.error("--interval-ms must be positive")
    try:
        args.gdb_at = sorted(float(x) for x in args.gdb_at.split(",") if x.strip())
    except ValueError:
        p.error(f"--gdb-at takes seconds, e.g. 1.5,3; got {args.gdb_at!r}")
    return args


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def _children(pid: int) -> list[int]:
    text = _read(f"/proc/{pid}/task/{pid}/children") or ""
    return [int(x) for x in text.split()]


def process_tree(root: int) -> list[int]:
    pids, todo = [], [root]
    while todo:
        pid = todo.pop()
        pids.append(pid)
        todo.extend(_children(pid))
    return pids


def sample(pid: int) -> dict[int, tuple]:
    """tid -> (comm, state, cpu_ticks, run_ns, delay_ns) for every thread of pid now."""
    out = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for name in tids:
        stat = _read(f"/proc/{pid}/task/{name}/stat")
        sched = _read(f"/proc/{pid}/task/{name}/schedstat")
        if not stat or not sched:
            continue
        comm = stat[stat.index("(") + 1:stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2:].split()
        run_ns, delay_ns, _ = (int(x) for x in sched.split())
        out[int(name)] = (comm, fields[0], int(fields[11]) + int(fields[12]), run_ns, delay_ns)
    return out


def gdb_roles(pid: int) -> dict[int, str]:
    """tid -> role ("openblas (libscipy_openblas64_...)", "openmp (libgomp-...)") from one stack snapshot."""
    try:
        out = subprocess.run(["gdb", "-p", str(pid), "-batch", "-ex", "thread apply all bt 12"],
                             capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.TimeoutExpired):
        return {}
    roles, tid, frames = {}, None, []

    def close():
        if tid is None:
            return
        text = "\n".join(frames)
        for pattern, role in ROLES:
            match = pattern.search(text)
            if match:
                libraries = [Path(m).name for m in LIBRARY.findall(text)
                             if pattern.search(Path(m).name) or role in ("openblas", "openmp")]
                library = next((lib for lib in libraries if re.search(r"blas|gomp|omp|tbb", lib)), "")
                roles[tid] = f"{role} ({library.split('.so')[0]})" if library else role
                return

    for line in out.splitlines():
        match = re.match(r"Thread \d+ \(Thread 0x[0-9a-f]+ \(LWP (\d+)\)", line)
        if match:
            close()
            tid, frames = int(match.group(1)), []
        elif line.startswith("#"):
            frames.append(line)
    close()
    return roles


def run(args) -> dict:
    period = args.interval_ms / 1000.0
    start = time.perf_counter()
    proc = subprocess.Popen(args.command)
    threads: dict[tuple[int, int], dict] = {}  # (pid, tid) -> figures
    runnable_hist: dict[int, int] = {}
    timeline: list[tuple[float, list[int]]] = []  # (seconds, runnable tids) per sample
    samples = 0
    roles: dict[int, str] = {}
    gdb_times = list(args.gdb_at)
    gdb_left = args.gdb_new
    looked_at: set[int] = set()
    while proc.poll() is None:
        now = time.perf_counter() - start
        unseen = [t for t in threads.values() if t["tid"] not in looked_at and t["tid"] != t["pid"]
                  and now - t["first_s"] >= 0.2 and now - t["last_s"] < 0.05 and not t["comm"].startswith("corral-")]
        if (gdb_times and now >= gdb_times[0]) or (gdb_left and unseen):
            if gdb_times and now >= gdb_times[0]:
                gdb_times.pop(0)
            else:
                gdb_left -= 1
            for pid in process_tree(proc.pid):
                roles.update(gdb_roles(pid))
            looked_at.update(t["tid"] for t in threads.values())
            continue
        runnable = 0
        running_tids: list[int] = []
        for pid in process_tree(proc.pid):
            for tid, (comm, state, ticks, run_ns, delay_ns) in sample(pid).items():
                t = threads.setdefault((pid, tid), {"pid": pid, "tid": tid, "first_s": now, "samples_r": 0,
                                                    "samples": 0})
                t.update(comm=comm, last_s=now, cpu_ns=run_ns, delay_ns=delay_ns, ticks=ticks)
                t["samples"] += 1
                if state == "R":
                    t["samples_r"] += 1
                    runnable += 1
                    running_tids.append(tid)
        runnable_hist[runnable] = runnable_hist.get(runnable, 0) + 1
        timeline.append((now, running_tids))
        samples += 1
        time.sleep(period)
    wall = time.perf_counter() - start
    for (pid, tid), t in threads.items():
        if tid == pid:
            t["role"] = "main" if pid == proc.pid else "worker main"
        elif t["comm"].startswith("corral-"):
            t["role"] = t["comm"]
        else:
            t["role"] = roles.get(tid, "python or other")
    role_of = {t["tid"]: t["role"].split(" (")[0] for t in threads.values()}
    return {"command": args.command, "returncode": proc.returncode, "wall_s": wall, "samples": samples,
            "runnable_histogram": dict(sorted(runnable_hist.items())),
            "timeline": [(round(at, 4), [role_of.get(tid, "?") for tid in tids]) for at, tids in timeline],
            "threads": sorted(threads.values(), key=lambda t: (t["pid"], t["first_s"], t["tid"]))}


def summary(result: dict) -> str:
    lines = [f"wall {result['wall_s']:.2f} s, exit {result['returncode']}, {result['samples']} samples",
             "runnable threads of the process tree per sample: " + ", ".join(
                 f"{k}: {100 * v / max(1, result['samples']):.0f}%" for k, v in result["runnable_histogram"].items()),
             f"{'pid':>7} {'tid':>7} {'role':<34} {'seen s':>11} {'CPU ms':>8} {'delay ms':>9} {'R %':>5}"]
    totals: dict[str, list[float]] = {}
    for t in result["threads"]:
        lines.append(f"{t['pid']:>7} {t['tid']:>7} {t['role'][:34]:<34} {t['first_s']:5.2f}-{t['last_s']:5.2f} "
                     f"{t['cpu_ns'] / 1e6:8.1f} {t['delay_ns'] / 1e6:9.1f} {100 * t['samples_r'] / t['samples']:5.0f}")
        role = t["role"].split(" (")[0]
        total = totals.setdefault(role, [0, 0.0, 0.0])
        total[0] += 1
        total[1] += t["cpu_ns"] / 1e6
        total[2] += t["delay_ns"] / 1e6
    lines.append("by role: " + "; ".join(f"{role} x{n}: CPU {cpu:.0f} ms, delay {delay:.0f} ms"
                                         for role, (n, cpu, delay) in sorted(totals.items())))
    return "\n".join(lines)


def timeline_text(result: dict, bin_ms: float) -> str:
    """Per bin of the run: the mean number of runnable threads of each role ("openmp 1.9" ...)."""
    bins: dict[int, list] = {}
    for at, roles in result["timeline"]:
        bins.setdefault(int(at * 1000 // bin_ms), []).append(roles)
    lines = [f"runnable threads by role, mean per {bin_ms:g} ms:"]
    for index in sorted(bins):
        counts: dict[str, int] = {}
        for roles in bins[index]:
            for role in roles:
                counts[role] = counts.get(role, 0) + 1
        n = len(bins[index])
        lines.append(f"{index * bin_ms / 1000:7.2f} s  " + "  ".join(
            f"{role} {count / n:.1f}" for role, count in sorted(counts.items())))
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    result = run(args)
    print(summary(result), file=sys.stderr)
    if args.timeline_ms > 0:
        print(timeline_text(result, args.timeline_ms), file=sys.stderr)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
