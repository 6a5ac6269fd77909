"""ThreadPoolExecutor(max_workers=1): every task runs on one thread (a sqlite3 connection made in one
task is usable by the next), and used as a lock it admits one task at a time even when its tasks wait on
another pool."""
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor

with ThreadPoolExecutor(max_workers=1) as ex:
    idents = {ex.submit(threading.get_ident).result() for _ in range(50)}
    print("50 sequential tasks ran on", len(idents), "thread(s)")
    conn = ex.submit(sqlite3.connect, ":memory:").result()
    try:
        ex.submit(conn.execute, "create table t (x)").result()
        ex.submit(conn.execute, "insert into t values (1)").result()
        print("sqlite3 rows:", ex.submit(lambda: conn.execute("select count(*) from t").fetchone()[0]).result())
    except sqlite3.ProgrammingError:
        print("sqlite3 connection reused across tasks: ProgrammingError")
    ex.submit(conn.close).result()

inside = 0
most = 0
guard = threading.Lock()
other = ThreadPoolExecutor(4)


def serialized(i):
    global inside, most
    with guard:
        inside += 1
        most = max(most, inside)
    other.submit(time.sleep, 0.005).result()  # waits on another pool while "holding" the 1-worker pool
    time.sleep(0.001)
    with guard:
        inside -= 1
    return i


with ThreadPoolExecutor(max_workers=1) as gate:
    results = [f.result(timeout=30) for f in [gate.submit(serialized, i) for i in range(60)]]
print("1-worker executor as a lock: results in order:", results == list(range(60)), "most inside at once:", most)


def submit_from_many(i):
    return gate2.submit(serialized, i).result(timeout=30)


inside = most = 0
gate2 = ThreadPoolExecutor(max_workers=1)
with ThreadPoolExecutor(8) as callers:
    list(callers.map(submit_from_many, range(40)))
gate2.shutdown()
print("1-worker executor fed from 8 threads: most inside at once:", most)
other.shutdown()
