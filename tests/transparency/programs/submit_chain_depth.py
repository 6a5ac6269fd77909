"""A chain of tasks, each submitting the next to the same pool and waiting for it (depth 50, pools of
60 threads: plain python has a thread for every link)."""
import sys
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.pool import ThreadPool

DEPTH = 50


def link_tpe(ex, n):
    if n == 0:
        return 0
    return 1 + ex.submit(link_tpe, ex, n - 1).result(timeout=15)


def link_tp(pool, n):
    if n == 0:
        return 0
    return 1 + pool.apply_async(link_tp, (pool, n - 1)).get(timeout=15)


def deep_then_chain(ex, n):
    # each link also recurses 200 frames before submitting: recursion of one link must not eat another's
    def down(k):
        if k == 0:
            return 0 if n == 0 else ex.submit(deep_then_chain, ex, n - 1).result(timeout=15)
        return down(k - 1)
    return 1 + down(200)


if __name__ == "__main__":
    with ThreadPoolExecutor(DEPTH + 10) as ex:
        print("ThreadPoolExecutor chain depth reached:", ex.submit(link_tpe, ex, DEPTH).result(timeout=20))
    with ThreadPool(DEPTH + 10) as pool:
        print("ThreadPool chain depth reached:", pool.apply_async(link_tp, (pool, DEPTH)).get(timeout=20))
    with ThreadPoolExecutor(DEPTH + 10) as ex:
        try:
            got = ex.submit(deep_then_chain, ex, 20).result(timeout=20)
            print("chain of 20 links, each 200 frames deep:", got)
        except RecursionError as e:
            print("chain of 20 links, each 200 frames deep: RecursionError", type(e).__name__)
    sys.stdout.flush()
