"""SIGINT from outside while the main thread waits on ThreadPool.map over CPU-bound tasks; the program
catches KeyboardInterrupt, reports it, terminates the pool and exits 5; atexit runs."""
# transparency: rc=5 sigint-after-ready=0.5 max-exit-seconds=10
import atexit
import sys
from multiprocessing.pool import ThreadPool

atexit.register(lambda: print("atexit ran", flush=True))


def spin(_):
    n = 0
    for i in range(2_000_000):
        n += i
    return n


pool = ThreadPool(4)
try:
    print("READY", flush=True)
    pool.map(spin, range(150))  # ~15 s of work: far more than the harness waits
    print("not reached")
except KeyboardInterrupt:
    print("caught KeyboardInterrupt in main", flush=True)
    pool.terminate()
    pool.join()
    print("pool terminated and joined")
    sys.exit(5)
