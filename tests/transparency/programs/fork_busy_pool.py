"""os.fork() while a thread pool has work in flight: the child exits normally and promptly (sys.exit(0),
atexit runs), and can make and use a new pool; the parent's pool finishes its work."""
import atexit
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.pool import ThreadPool


def wait_child(pid, limit=8):
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.02)
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    return f"HUNG (alive after {limit} s, killed)"


def child_body(kind):
    atexit.register(lambda: print(f"  child ({kind}): atexit ran", flush=True))
    with ThreadPoolExecutor(2) as ex2:
        r = sum(ex2.map(lambda x: x * x, range(10)))
    with ThreadPool(2) as tp:
        r2 = sum(tp.map(lambda x: x + 1, range(10)))
    print(f"  child ({kind}): new pools give {r} {r2}", flush=True)
    sys.exit(0)


for kind in ("ThreadPoolExecutor", "ThreadPool"):
    if kind == "ThreadPoolExecutor":
        pool = ThreadPoolExecutor(2)
        busy = [pool.submit(time.sleep, 1.0) for _ in range(3)]
    else:
        pool = ThreadPool(2)
        busy = [pool.apply_async(time.sleep, (1.0,)) for _ in range(3)]
    time.sleep(0.2)
    sys.stdout.flush()
    pid = os.fork()
    if pid == 0:
        child_body(kind)
    print(f"{kind}: child exit status:", wait_child(pid), flush=True)
    # a child that does nothing at all but exit
    pid = os.fork()
    if pid == 0:
        sys.exit(0)
    print(f"{kind}: idle child exit status:", wait_child(pid), flush=True)
    if kind == "ThreadPoolExecutor":
        print(f"{kind}: parent's work done:", [f.result(timeout=20) for f in busy])
        pool.shutdown()
    else:
        print(f"{kind}: parent's work done:", [r.get(timeout=20) for r in busy])
        pool.close()
        pool.join()
