"""Tasks that wait on each other in ways only the kernel and the GIL see: a lock polled with a short
timeout while its holder sleeps, a queue polled the same way, short tasks beside long pure-Python ones,
and a chain of busy-waits on flags. Plain python's threads take turns at the GIL every 5 ms, so each
of these makes progress within milliseconds; a pool that lets only budget-many threads run must let a
waiting task in while the budget's cores are idle, or it stalls until a task ends. Every bound below is
generous beside plain python's milliseconds and shorter than corral's starvation limit (1 s).
The pools have 4-6 threads: more than the 2 CPUs of the machines the suite runs on. The pure-Python
parts need the machine to themselves: corral lets a waiting task in there because a core idles, which
another program's threads would take (docs/permits.md, "No thread waits for ever")."""
# transparency: alone
import concurrent.futures as cf
import queue
import threading
import time

SOON = 0.6  # seconds


def lock_polling():
    """A task holds a lock across a sleep (its permit goes back) while three tasks poll the lock
    with 1 ms timeouts: the holder must get to run again when its sleep ends."""
    lock = threading.Lock()
    waits = []

    def holder():
        for _ in range(3):
            with lock:
                time.sleep(0.03)
            time.sleep(0.005)

    def poller():
        for _ in range(3):
            t = time.monotonic()
            while not lock.acquire(timeout=0.001):
                pass
            waits.append(time.monotonic() - t)
            lock.release()
            time.sleep(0.005)

    with cf.ThreadPoolExecutor(4) as ex:
        fs = [ex.submit(holder)] + [ex.submit(poller) for _ in range(3)]
        cf.wait(fs, timeout=20)
    return len(waits) == 9 and max(waits) < SOON


def queue_polling():
    """A consumer task polls a SimpleQueue with 5 ms timeouts; the producer sleeps between puts."""
    q = queue.SimpleQueue()
    gaps = []

    def producer():
        for i in range(5):
            time.sleep(0.02)
            q.put((i, time.monotonic()))

    def consumer():
        got = 0
        while got < 5:
            try:
                _, put_at = q.get(timeout=0.005)
            except queue.Empty:
                continue
            gaps.append(time.monotonic() - put_at)
            got += 1

    with cf.ThreadPoolExecutor(4) as ex:
        fs = [ex.submit(consumer) for _ in range(2)]  # the second consumer gives up at the end
        p = ex.submit(producer)
        p.result(timeout=20)
        q.put((None, time.monotonic()))  # the second consumer's fifth item: ends at once
        for _ in range(4):
            q.put((None, time.monotonic()))
        cf.wait(fs, timeout=20)
    return len(gaps) == 10 and max(gaps) < SOON


def spin(stop, seconds):
    end = time.monotonic() + seconds
    while not stop.is_set() and time.monotonic() < end:
        pass


def short_beside_long():
    """Two long pure-Python tasks run; two short ones submitted after them end within SOON."""
    stop = threading.Event()
    with cf.ThreadPoolExecutor(4) as ex:
        longs = [ex.submit(spin, stop, 3.0) for _ in range(2)]
        time.sleep(0.05)
        shorts = [ex.submit(spin, threading.Event(), 0.01) for _ in range(2)]
        done, _ = cf.wait(shorts, timeout=SOON)
        stop.set()
        cf.wait(longs + shorts, timeout=20)
    return len(done)


def spin_chain():
    """Task i busy-waits until task i-1 sets its flag; the last submitted must run first. Each link
    must follow the one before within SOON."""
    n = 5
    flags = [threading.Event() for _ in range(n + 1)]  # link i waits for flag i-1, then sets flag i
    set_at = [time.monotonic()] + [None] * n
    flags[0].set()
    give_up = time.monotonic() + 20

    def link(i):
        while not flags[i - 1].is_set():
            if time.monotonic() > give_up:
                return
        set_at[i] = time.monotonic()
        flags[i].set()

    with cf.ThreadPoolExecutor(n) as ex:
        fs = [ex.submit(link, i) for i in reversed(range(1, n + 1))]
        cf.wait(fs, timeout=30)
    if None in set_at:
        return False
    return max(b - a for a, b in zip(set_at, set_at[1:])) < SOON


if __name__ == "__main__":
    # Each waits here with is_set() in a pure-Python loop: the flag check needs the GIL, not a wait.
    print("a polled lock's holder runs again when its sleep ends:", lock_polling())
    print("a polled queue gets each item soon after its put:", queue_polling())
    print("short tasks done beside two long pure-Python ones:", short_beside_long())
    print("each link of a chain of busy-waits follows the one before soon:", spin_chain())
