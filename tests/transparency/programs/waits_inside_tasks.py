"""concurrent.futures.wait, as_completed, a done-callback that sets an Event, and Condition/Barrier
waits, all used from inside tasks of the same pool."""
import threading
import time
from concurrent.futures import ThreadPoolExecutor, wait, as_completed, FIRST_COMPLETED, ALL_COMPLETED


def work(i):
    time.sleep(0.01 * (i % 3))
    return i * i


def uses_wait(ex):
    fs = [ex.submit(work, i) for i in range(6)]
    done, pending = wait(fs, timeout=10, return_when=ALL_COMPLETED)
    first_done, _ = wait([ex.submit(work, 1)], timeout=10, return_when=FIRST_COMPLETED)
    return len(done), len(pending), len(first_done), sorted(f.result() for f in done)


def uses_as_completed(ex):
    fs = [ex.submit(work, i) for i in range(6)]
    return sorted(f.result() for f in as_completed(fs, timeout=10))


def uses_callback_event(ex):
    ev = threading.Event()
    f = ex.submit(work, 4)
    f.add_done_callback(lambda _f: ev.set())
    return ev.wait(timeout=10), f.result()


def uses_barrier(ex, n):
    barrier = threading.Barrier(n + 1, timeout=10)
    fs = [ex.submit(barrier.wait) for _ in range(n)]
    barrier.wait()
    return len({f.result() for f in fs}) == n


def uses_condition(ex):
    cond = threading.Condition()
    box = []
    def producer():
        time.sleep(0.02)
        with cond:
            box.append(1)
            cond.notify_all()
    f = ex.submit(producer)
    with cond:
        ok = cond.wait_for(lambda: box, timeout=10)
    f.result()
    return bool(ok)


if __name__ == "__main__":
    with ThreadPoolExecutor(16) as ex:
        print("wait:", ex.submit(uses_wait, ex).result(timeout=15))
        print("as_completed:", ex.submit(uses_as_completed, ex).result(timeout=15))
        print("done-callback sets Event:", ex.submit(uses_callback_event, ex).result(timeout=15))
        print("barrier of 6 tasks + waiter task:", ex.submit(uses_barrier, ex, 6).result(timeout=15))
        print("condition:", ex.submit(uses_condition, ex).result(timeout=15))
        many = [ex.submit(uses_as_completed, ex) for _ in range(4)]
        print("4 tasks using as_completed at once:", [f.result(timeout=15) == [0, 1, 4, 9, 16, 25] for f in many])
