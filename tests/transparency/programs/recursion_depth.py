"""The recursion depth a task can use: the limit, a recursion to limit-60 inside a task (fine under plain
python), and the same inside a task started while another task of the pool waits deep in recursion."""
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.pool import ThreadPool


def depth_possible(target):
    def down(k):
        return 0 if k == 0 else 1 + down(k - 1)
    try:
        return down(target) == target
    except RecursionError:
        return False


def max_depth():
    n = 0
    def down():
        nonlocal n
        n += 1
        down()
    try:
        down()
    except RecursionError:
        pass
    return n


def waits_deep(ex, depth):
    # recurse `depth` frames, then wait on a task of the same pool that needs depth too
    def down(k):
        if k == 0:
            return ex.submit(depth_possible, sys.getrecursionlimit() - 60).result(timeout=10)
        return down(k - 1)
    return down(depth)


if __name__ == "__main__":
    limit = sys.getrecursionlimit()
    print("recursion limit in main:", limit)
    main_max = max_depth()
    with ThreadPoolExecutor(4) as ex:
        print("limit inside a task:", ex.submit(sys.getrecursionlimit).result())
        print("recursion to limit-60 inside a task:", ex.submit(depth_possible, limit - 60).result())
        task_max = ex.submit(max_depth).result()
        # plain: a pool thread has a few more frames below the task than the main thread has
        print("max depth in a task within 30 frames of main's:", abs(task_max - main_max) <= 30)
        results = [f.result() for f in [ex.submit(waits_deep, ex, limit - 200) for _ in range(2)]]
        print("task started while others wait 800 deep reaches limit-60:", results)
    with ThreadPool(4) as pool:
        print("ThreadPool: recursion to limit-60 inside a task:", pool.apply(depth_possible, (limit - 60,)))
    sys.setrecursionlimit(20000)
    with ThreadPoolExecutor(2) as ex:
        print("after setrecursionlimit(20000), limit in a task:", ex.submit(sys.getrecursionlimit).result())
        print("recursion to 15000 inside a task:", ex.submit(depth_possible, 15000).result())
    t = threading.Thread(target=lambda: print("plain thread reaches 15000:", depth_possible(15000)))
    t.start()
    t.join()
