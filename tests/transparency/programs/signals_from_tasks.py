"""Signals delivered while pools run: a SIGUSR1 handler in main counts signals that pool tasks send to
the process; SIGALRM (signal.alarm) interrupts a main thread waiting on a busy pool; a handler that
raises ends the wait."""
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor

got = []
signal.signal(signal.SIGUSR1, lambda s, f: got.append(s))


def send():
    os.kill(os.getpid(), signal.SIGUSR1)
    return True


class Alarm(Exception):
    pass


def on_alarm(s, f):
    raise Alarm()


with ThreadPoolExecutor(2) as ex:
    for i in range(3):
        ex.submit(send).result()
        deadline = time.monotonic() + 10
        while len(got) <= i and time.monotonic() < deadline:
            time.sleep(0.01)
    print("SIGUSR1 sent from tasks, handled in main:", len(got))
    signal.signal(signal.SIGALRM, on_alarm)
    busy = ex.submit(time.sleep, 3)
    signal.setitimer(signal.ITIMER_REAL, 0.3)
    t = time.monotonic()
    try:
        busy.result()
        print("alarm: not delivered")
    except Alarm:
        print("alarm interrupted the wait on a busy future:", time.monotonic() - t < 2.5)
    print("main thread's mask:", sorted(s.name for s in signal.pthread_sigmask(signal.SIG_BLOCK, [])))
