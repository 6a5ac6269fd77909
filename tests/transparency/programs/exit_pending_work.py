"""The program's last line leaves a ThreadPoolExecutor with pending work and no shutdown (and a
ThreadPool without close): python finishes the executor's work before atexit handlers run; the tasks'
file output is complete."""
import atexit
import threading
import time
from concurrent.futures import ThreadPoolExecutor

done = []
lock = threading.Lock()


def task(i):
    time.sleep(0.02)
    with open(f"task_{i:02d}.txt", "w") as out:  # one file per task: the set of files is comparable
        out.write(f"task {i} done\n")
    with lock:
        done.append(i)


def report():
    print("atexit: tasks finished before atexit:", len(done), flush=True)
    print("atexit: threads other than main still alive:",
          [t.name.split("_")[0] for t in threading.enumerate() if t is not threading.main_thread()], flush=True)


atexit.register(report)
ex = ThreadPoolExecutor(3)
for i in range(40):
    ex.submit(task, i)
print("main: submitted 40, finished so far < 40:", len(done) < 40, flush=True)
# no shutdown, no with-block: the interpreter's exit must finish the work
