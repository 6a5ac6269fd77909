"""How numpy's bundled OpenBLAS (pthreads build) behaves with concurrent callers and changing thread counts.

Measures, with .venv numpy:
  1. throughput: C Python threads (1, 2, 8) each running np.linalg.qr / matmul on 256x256 in a loop for
     a fixed time, for OpenBLAS counts 1, 2 and 8 (set process-wide through
     corral._core.set_native_process_limit): calls per second;
  2. safety: the count flipped between 1 and 8 while other threads are inside calls (results checked
     against a reference, the process must not crash);
  3. in-flight: a long matmul started with count 2 whose count drops to 1 midway: does it finish at
     count-2 or count-1 speed (does the running call read the new count)?

    .venv/bin/python benchmarks/openblas_concurrency.py [--quick] [--json out.json]
"""

import argparse
import json
import os
import statistics
import sys
import threading
import time

import numpy as np

import corral
from corral import _core


def openblas():
    found = [p for p in corral.native_pools() if p["library"] == "openblas"]
    if not found:
        sys.exit("numpy's OpenBLAS is not loaded")
    return found[0]


def set_count(n):
    _core.set_native_process_limit(n)
    assert openblas()["num_threads"] == n


def rate(callers, fn, seconds):
    """Calls per second when `callers` threads each call fn() in a loop for about `seconds`.

    A fixed time rather than a fixed amount of work: oversubscribed OpenBLAS can take seconds per call.
    """
    deadline = time.perf_counter() + seconds
    done = [0] * callers

    def loop(i):
        while time.perf_counter() < deadline:
            fn()
            done[i] += 1

    start = time.perf_counter()
    threads = [threading.Thread(target=loop, args=(i,)) for i in range(callers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(done) / (time.perf_counter() - start)


def throughput(callers_list, counts, seconds):
    rng = np.random.default_rng(0)
    a = rng.standard_normal((256, 256))
    rows = []
    for callers in callers_list:
        for count in counts:
            set_count(count)
            np.linalg.qr(a)  # let OpenBLAS start its threads outside the timing
            qr = rate(callers, lambda: np.linalg.qr(a), seconds)
            mm = rate(callers, lambda: a @ a, seconds)
            rows.append({"callers": callers, "openblas_threads": count, "qr_per_s": qr, "matmul_per_s": mm})
            print(f"  callers={callers} openblas={count}: qr {qr:8.1f}/s   matmul {mm:8.1f}/s", flush=True)
    return rows


def flip_while_busy(seconds, callers):
    """Flip the count 1 <-> 8 as fast as possible while `callers` threads run checked matmuls."""
    rng = np.random.default_rng(1)
    a = rng.standard_normal((384, 384))
    q = rng.standard_normal((256, 256))
    reference_mm = a @ a
    reference_r = np.abs(np.linalg.qr(q)[1])
    stop = threading.Event()
    calls = [0] * callers
    wrong = [0] * callers

    def work(i):
        while not stop.is_set():
            if not np.allclose(a @ a, reference_mm):
                wrong[i] += 1
            if not np.allclose(np.abs(np.linalg.qr(q)[1]), reference_r):
                wrong[i] += 1
            calls[i] += 2

    threads = [threading.Thread(target=work, args=(i,)) for i in range(callers)]
    for t in threads:
        t.start()
    flips = 0
    set_seconds = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        start = time.perf_counter()
        _core.set_native_process_limit(8 if flips % 2 == 0 else 1)
        set_seconds.append(time.perf_counter() - start)
        flips += 1
        time.sleep(0.0005)  # up to ~1000 flips/s: far more often than a scheduler would
    stop.set()
    for t in threads:
        t.join()
    set_count(1)
    return {"callers": callers, "seconds": seconds, "flips": flips, "calls": sum(calls), "wrong_results": sum(wrong),
            "set_median_ms": statistics.median(set_seconds) * 1e3, "set_max_ms": max(set_seconds) * 1e3}


def task_cpu_seconds():
    """CPU seconds per thread of this process, from /proc/self/task/*/stat (utime + stime)."""
    ticks = os.sysconf("SC_CLK_TCK")
    result = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            result[int(tid)] = (int(fields[11]) + int(fields[12])) / ticks
        except OSError:
            pass
    return result


def in_flight(size, repeats):
    """A matmul long enough to change the count while it runs: old or new count for the rest of it?"""
    rng = np.random.default_rng(2)
    a = rng.standard_normal((size, size))
    main = threading.get_native_id()

    def one(start_count, change_to, delay):
        set_count(start_count)
        a @ a  # warm: threads started, pages touched
        before = task_cpu_seconds()
        changer = None
        set_done = []

        def change():
            _core.set_native_process_limit(change_to)
            set_done.append(time.perf_counter())

        if change_to is not None:
            changer = threading.Timer(delay, change)
            changer.start()
        start = time.perf_counter()
        a @ a
        finished = time.perf_counter()
        if changer:
            changer.join()
        after = task_cpu_seconds()
        helpers = sum(after[t] - before.get(t, 0.0) for t in after if t != main)
        # Did the setter return before the call finished (or wait for it)? Seconds, negative: before.
        set_after_end = set_done[0] - finished if set_done else float("nan")
        return finished - start, helpers, set_after_end

    out = {}
    for name, args in {
        "count 2 throughout": (2, None, 0),
        "count 1 throughout": (1, None, 0),
        "2, set to 1 after 20% of the call": (2, 1, None),
        "1, set to 2 after 20% of the call": (1, 2, None),
    }.items():
        start_count, change_to, delay = args
        if delay is None:
            delay = 0.2 * out.get("count 2 throughout" if start_count == 2 else "count 1 throughout")["wall_s"]
        walls, helpers, set_after_end = zip(*(one(start_count, change_to, delay) for _ in range(repeats)))
        out[name] = {"wall_s": statistics.median(walls), "helper_cpu_s": statistics.median(helpers),
                     "set_returned_after_call_end_ms": statistics.median(set_after_end) * 1e3}
        extra = ""
        if change_to is not None:
            extra = f", the set returned {out[name]['set_returned_after_call_end_ms']:+.1f} ms after the call ended"
        print(f"  {name:36s}: {out[name]['wall_s'] * 1e3:7.1f} ms wall, "
              f"{out[name]['helper_cpu_s'] * 1e3:6.0f} ms CPU in other threads{extra}", flush=True)
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats and a shorter flip test")
    parser.add_argument("--json", help="write the figures here as JSON")
    args = parser.parse_args()

    blas = openblas()
    print(f"OpenBLAS {blas['version']} ({blas['threading_layer']}) at {blas['path']}; "
          f"{os.cpu_count()} CPUs, affinity {len(os.sched_getaffinity(0))}, "
          f"load average {os.getloadavg()[0]:.1f} (other processes compete for the same cores)", flush=True)
    original = _core.capture_native_limits("process")
    results = {"openblas": blas, "cpus": len(os.sched_getaffinity(0)), "loadavg_start": os.getloadavg()[0]}
    try:
        print("1. throughput: calls per second, all callers together (256x256)")
        results["throughput"] = throughput([1, 2, 8], [1, 2, 8], 1.0 if args.quick else 3.0)
        print("2. count flipped 1 <-> 8 while threads are inside calls")
        results["flip"] = []
        for callers in (2, 8):
            r = flip_while_busy(2.0 if args.quick else 5.0, callers)
            results["flip"].append(r)
            print(f"  callers={callers}: {r['flips']} flips, {r['calls']} checked calls, "
                  f"{r['wrong_results']} wrong results, no crash; one set took {r['set_median_ms']:.2f} ms "
                  f"(median), {r['set_max_ms']:.0f} ms (max)", flush=True)
        print("3. count changed during one long call (matmul)")
        results["in_flight"] = in_flight(1024 if args.quick else 2048, 3 if args.quick else 5)
    finally:
        _core.restore_native_limits(original)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({**results, "loadavg_end": os.getloadavg()[0]}, f, indent=1)


if __name__ == "__main__":
    main()
