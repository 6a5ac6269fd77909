"""A task a pool's idle thread would take is taken, as plain python's threads take it, whatever the CPU
budget: it is RUNNING, `Future.cancel()` cannot stop it, `shutdown(cancel_futures=True)` and
`ThreadPool.terminate()` drop only the tasks no thread holds, and a task asyncio stops waiting for still
runs to its end. Each pool below has more threads than the machine has CPUs, all computing (with the GIL
released) until the program says stop, so that no task can end before the program has looked."""
import asyncio
import concurrent.futures as cf
import hashlib
import threading
import time
from multiprocessing.pool import ThreadPool

THREADS = 8  # above the 2-4 CPUs of the machines the suite runs on
DATA = bytes(256 * 1024)  # hashlib lets the GIL go for data this size
done_lock = threading.Lock()
# Free threads take queued tasks at once; this is ample for it on a loaded machine, and shorter than
# corral's starvation limit (1 s), after which a task kept from its thread would overdraw a permit.
SOON = 0.9


def compute_until(stop, done=None, i=None):
    while not stop.is_set():
        hashlib.sha256(DATA).digest()
    if done is not None:
        with done_lock:
            done.append(i)
    return i


def wait_until(predicate, seconds=20):
    """Whether `predicate()` came true within `seconds` (polled every 10 ms)."""
    end = time.monotonic() + seconds
    while not predicate() and time.monotonic() < end:
        time.sleep(0.01)
    return predicate()


# A task starts as soon as a thread is free; then cancel() finds it running.
stop = threading.Event()
with cf.ThreadPoolExecutor(THREADS) as ex:
    fs = [ex.submit(compute_until, stop, None, i) for i in range(THREADS)]
    print("ThreadPoolExecutor: all started:", wait_until(lambda: all(f.running() for f in fs), SOON))
    print("ThreadPoolExecutor: cancelled of", THREADS, "started:", sum(f.cancel() for f in fs))
    stop.set()
    print("ThreadPoolExecutor: every result:", [f.result(timeout=20) for f in fs] == list(range(THREADS)))

# shutdown(cancel_futures=True) drops the queued tasks only: THREADS started, THREADS queued.
stop = threading.Event()
ex = cf.ThreadPoolExecutor(THREADS)
done = []
fs = [ex.submit(compute_until, stop, done, i) for i in range(2 * THREADS)]
print("shutdown: started before it:", wait_until(lambda: sum(f.running() for f in fs) == THREADS, SOON))
ex.shutdown(wait=False, cancel_futures=True)
stop.set()
ex.shutdown(wait=True)
print("shutdown(cancel_futures=True): ran", len(done), "cancelled", sum(f.cancelled() for f in fs))

# ThreadPool.terminate(): tasks its threads took still run to their end (threads cannot be stopped).
stop = threading.Event()
done = []
pool = ThreadPool(THREADS)
results = [pool.apply_async(compute_until, (stop, done, i)) for i in range(THREADS)]
# every task handed to the workers' queue, and taken from it by a thread
print("ThreadPool: all taken:", wait_until(lambda: pool._taskqueue.empty() and pool._inqueue.empty(), SOON))
time.sleep(0.05)
pool.terminate()
stop.set()
print("ThreadPool.terminate(): tasks that ran:", wait_until(lambda: len(done) == THREADS) and len(done))


# asyncio: wait_for's timeout cancels the asyncio future; the executor's task, already running, still
# ends and leaves its mark.
async def main():
    stop = threading.Event()
    loop = asyncio.get_running_loop()
    ex = cf.ThreadPoolExecutor(THREADS)
    finished = []
    waits = [asyncio.wait_for(loop.run_in_executor(ex, compute_until, stop, finished, i), 1.0)
             for i in range(THREADS)]
    outcomes = await asyncio.gather(*waits, return_exceptions=True)
    print("asyncio: timed out:", sum(isinstance(o, asyncio.TimeoutError) for o in outcomes))
    stop.set()
    ex.shutdown(wait=True)
    print("asyncio: executor tasks that still ran:", len(finished))


asyncio.run(main())
