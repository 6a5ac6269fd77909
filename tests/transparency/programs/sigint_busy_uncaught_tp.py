"""SIGINT from outside while the main thread waits on a future of busy CPU tasks, with a non-daemon
plain thread and a pool left without shutdown: uncaught KeyboardInterrupt, atexit runs, death by SIGINT."""
# transparency: rc=-2 sigint-after-ready=0.5 max-exit-seconds=10 stderr-tail=1
import atexit
import threading
import time
from concurrent.futures import ThreadPoolExecutor

atexit.register(lambda: print("atexit ran", flush=True))
stop = threading.Event()


def spin(seconds):
    t = time.perf_counter()
    while time.perf_counter() - t < seconds and not stop.is_set():
        sum(range(1000))
    return seconds


atexit.register(stop.set)  # too late to matter: python joins the pool threads before atexit runs
ex = ThreadPoolExecutor(3)
futs = [ex.submit(spin, 3.0) for _ in range(3)] + [ex.submit(spin, 0.01) for _ in range(50)]
print("READY", flush=True)
futs[0].result()
print("not reached")
