"""threading.local inside tasks: a value a task set is still its own after it waited on another task of
the pool (which sets the same local), and an initializer's per-thread value is there in every task."""
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.pool import ThreadPool

local = threading.local()


def child(i):
    local.value = ("child", i)
    time.sleep(0.001)
    return local.value == ("child", i)


def parent(ex, i):
    local.value = ("parent", i)
    ok_child = ex.submit(child, i).result()
    time.sleep(0.001)
    return ok_child and local.value == ("parent", i)


def init():
    local.conn = "connection"


def uses_conn(_):
    time.sleep(0.002)
    return getattr(local, "conn", None) == "connection"


def tp_parent(pool, i):
    local.value = ("parent", i)
    ok_child = pool.apply_async(child, (i,)).get()
    return ok_child and local.value == ("parent", i)


if __name__ == "__main__":
    results = []
    with ThreadPoolExecutor(16) as ex:  # batches of 8 parents: plain python has a thread for each child
        for batch in range(6):
            results += [f.result() for f in [ex.submit(parent, ex, 8 * batch + i) for i in range(8)]]
    print("ThreadPoolExecutor: tasks whose local survived a wait:", sum(results), "of", len(results))
    with ThreadPoolExecutor(4, initializer=init) as ex:
        results = list(ex.map(uses_conn, range(100)))
    print("ThreadPoolExecutor(initializer): tasks that saw the initializer's local:", sum(results), "of", len(results))
    results = []
    with ThreadPool(16) as pool:
        for batch in range(6):
            results += [r.get() for r in [pool.apply_async(tp_parent, (pool, 8 * batch + i)) for i in range(8)]]
    print("ThreadPool: tasks whose local survived a wait:", sum(results), "of", len(results))
    with ThreadPool(4, initializer=init) as pool:
        results = pool.map(uses_conn, range(100))
    print("ThreadPool(initializer): tasks that saw the initializer's local:", sum(results), "of", len(results))
    main_value = getattr(local, "value", "unset")
    print("main thread's local after all that:", main_value)
