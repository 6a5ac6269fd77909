"""Thread names and counts: ThreadPoolExecutor-N_M names and thread_name_prefix, len(ex._threads) after
work, len(pool._pool) of a ThreadPool, threading.active_count() before, during and after pools, and the
threads a pool task sees (current_thread type, daemon, main_thread), and which of a new ThreadPool's
threads takes its first task."""
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.pool import ThreadPool


def me():
    t = threading.current_thread()
    return t.name, type(t).__name__, t.daemon, t is threading.main_thread()


def strip_counter(name):
    return re.sub(r"-\d+_\d+$", "-N_M", name)


base = threading.active_count()
print("active threads at start:", base)
with ThreadPoolExecutor(max_workers=3) as ex:
    names = {me_[0] for me_ in ex.map(lambda _: (time.sleep(0.01), me())[1], range(30))}
    print("default names:", sorted({strip_counter(n) for n in names}), "count <= 3:", len(names) <= 3)
    print("a task's thread: type, daemon, is main:", me()[1:], "vs", ex.submit(me).result()[1:])
    print("len(ex._threads) after 30 tasks:", len(ex._threads))
    print("active threads during:", threading.active_count() - base)
print("active threads after shutdown(wait=True):", threading.active_count() - base)

with ThreadPoolExecutor(max_workers=2, thread_name_prefix="worker") as ex:
    names = set(ex.map(lambda _: (time.sleep(0.01), me()[0])[1], range(10)))
    print("prefixed names:", sorted(names))
    print("len(ex._threads):", len(ex._threads), "max_workers:", ex._max_workers)

with ThreadPoolExecutor(max_workers=8) as ex:
    ex.submit(time.sleep, 0.01).result()
    print("after one task, len(ex._threads) <= 1:", len(ex._threads) <= 1)
    list(ex.map(time.sleep, [0.05] * 8))
    print("after 8 concurrent sleeps, len(ex._threads):", len(ex._threads))

with ThreadPool(3) as pool:
    time.sleep(0.05)  # its threads all wait for work
    first = pool.apply(lambda: threading.current_thread())
    print("a new ThreadPool's first task runs on its first thread:", first is pool._pool[0])
    print("len(pool._pool):", len(pool._pool), "processes:", pool._processes)
    names = pool.map(lambda _: me()[0], range(9))
    print("ThreadPool task thread names (prefix):", sorted({n.split("-")[0] for n in names}))
    print("active threads during ThreadPool(3):", threading.active_count() - base)
pool.join()
print("active threads after ThreadPool close+join:", threading.active_count() - base)
print("threading.enumerate() names at end:", sorted(t.name for t in threading.enumerate()))
