"""The calls corral wraps to see a task's waits (time.sleep, select.select, sockets, Condition.wait,
Thread.join) look as the originals do, after a pool has run: a module's function stored on a class stays
unbound (`class Retry: sleep = time.sleep`), repr and pickle are the original's, and tracebacks and the
call stack hold no frame of corral's, inside a task or outside."""
import inspect
import os
import pickle
import pydoc
import select
import socket
import sys
import threading
import time
import traceback
import weakref
from concurrent.futures import ThreadPoolExecutor
from unittest import mock


def retry_class():
    class Retry:  # made after the pool: its attributes are what time.sleep and select.select are then
        sleep = time.sleep
        wait_readable = select.select

        def go(self):
            self.sleep(0.001)
            return self.wait_readable([], [], [], 0)

    return Retry


def frames_of_refused_connect():
    s = socket.socket()
    try:
        s.connect(("127.0.0.1", 1))
    except OSError as exc:
        return [f.name for f in traceback.extract_tb(exc.__traceback__)]
    finally:
        s.close()


def depth_in_a_wait():
    cond = threading.Condition()
    seen = []

    def waiter():
        with cond:
            cond.wait(0.001)
            seen.append(len(traceback.extract_stack()))

    t = threading.Thread(target=waiter)
    t.start()
    t.join()
    return seen[0]


def introspection():
    t = threading.Thread(target=int)
    with mock.patch.object(threading.Thread, "join", autospec=True) as join:
        t.join(5)
    errors = []
    for call in (lambda: t.join(timout=1), lambda: threading.Condition().wait(timout=1), lambda: t.start(1),
                 lambda: select.select([], [], [], "1"), lambda: time.sleep("x")):
        try:
            call()
        except (TypeError, ValueError) as exc:
            errors.append(str(exc))
    return {
        "autospec join recorded the thread": join.call_args_list == [mock.call(t, 5)],
        "isfunction(Thread.join)": inspect.isfunction(threading.Thread.join),
        "isbuiltin(time.sleep)": inspect.isbuiltin(time.sleep),
        "getfile(Thread.join)": os.path.basename(inspect.getfile(threading.Thread.join)),
        "signature(Thread.join)": str(inspect.signature(threading.Thread.join)),
        "weakref(time.sleep)": weakref.ref(time.sleep)() is time.sleep,
        "doc": time.sleep.__doc__.splitlines()[0],
        "help(time.sleep)": pydoc.render_doc(time.sleep).splitlines()[:4],
        "errors": errors,
    }


def report(where):
    print(where, "introspection:", introspection())
    print(where, "Retry().go():", retry_class()().go())
    print(where, "frames of a refused connect:", frames_of_refused_connect())
    print(where, "frames when a thread's Condition.wait returns:", depth_in_a_wait())
    print(where, "repr:", repr(time.sleep), repr(select.select), repr(socket.socket.connect))
    print(where, "pickled time.sleep is time.sleep:", pickle.loads(pickle.dumps(time.sleep)) is time.sleep)
    print(where, "names:", time.sleep.__name__, threading.Condition.wait.__qualname__)
    try:
        time.sleep(-1)
    except ValueError as exc:
        print(where, "sleep(-1):", exc, [f.name for f in traceback.extract_tb(exc.__traceback__)])


if __name__ == "__main__":
    with ThreadPoolExecutor(2) as ex:
        ex.submit(print, "a pool ran").result()
        ex.submit(report, "in a task:").result()
    report("in main:")
    sys.stdout.flush()
