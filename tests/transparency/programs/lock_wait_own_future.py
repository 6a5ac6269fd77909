"""A task holds a threading.Lock (or RLock) that other tasks of its pool take, and waits on a future of
that pool meanwhile (ThreadPoolExecutor and multiprocessing.pool.ThreadPool). Plain python: no deadlock
(the others wait on their own threads), never two holders at once."""
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor, TimeoutError
from multiprocessing.pool import ThreadPool
import multiprocessing

holders = 0
violations = 0
count_lock = threading.Lock()


def enter():
    global holders, violations
    with count_lock:
        holders += 1
        violations += holders > 1


def leave():
    global holders
    with count_lock:
        holders -= 1


def spin(seconds):
    t = time.perf_counter()
    while time.perf_counter() - t < seconds:
        pass


def other(lock):
    with lock:
        enter()
        spin(0.001)
        leave()


def outer_tpe(ex, lock):
    with lock:
        enter()
        f = ex.submit(spin, 0.02)
        time.sleep(0.005)
        f.result()
        leave()


def outer_tp(pool, lock):
    with lock:
        enter()
        r = pool.apply_async(spin, (0.02,))
        time.sleep(0.005)
        r.get()
        leave()


def hung(what):
    print(f"{what}: HUNG (no progress for 5 s)", flush=True)
    os._exit(3)


def rounds_tpe(lock, n=25):
    with ThreadPoolExecutor(8) as ex:
        for _ in range(n):
            fs = [ex.submit(outer_tpe, ex, lock)]
            time.sleep(0.003)
            fs += [ex.submit(other, lock) for _ in range(4)]
            try:
                for f in fs:
                    f.result(timeout=5)
            except TimeoutError:
                hung(f"ThreadPoolExecutor {type(lock).__name__}")


def rounds_tp(lock, n=25):
    with ThreadPool(8) as pool:
        for _ in range(n):
            rs = [pool.apply_async(outer_tp, (pool, lock))]
            time.sleep(0.003)
            rs += [pool.apply_async(other, (lock,)) for _ in range(4)]
            try:
                for r in rs:
                    r.get(timeout=5)
            except multiprocessing.TimeoutError:
                hung(f"ThreadPool {type(lock).__name__}")


if __name__ == "__main__":
    for name, runner in (("ThreadPoolExecutor", rounds_tpe), ("ThreadPool", rounds_tp)):
        # RLock first: its violations show before a Lock hang ends the run.
        for make in (threading.RLock, threading.Lock):
            violations = 0
            runner(make())
            print(f"{name} {make.__name__}: 25 rounds done, mutual-exclusion violations={violations}", flush=True)
