"""SIGINT from outside while the main thread waits on ThreadPoolExecutor.map over sleeping tasks: the
program ends promptly by SIGINT, atexit handlers run, a file written before is flushed."""
# transparency: rc=-2 sigint-after-ready=0.5 max-exit-seconds=10 stderr-tail=1
import atexit
import time
from concurrent.futures import ThreadPoolExecutor

atexit.register(lambda: print("atexit ran", flush=True))
f = open("before_sigint.txt", "w")
f.write("written before SIGINT\n")
with ThreadPoolExecutor(4) as ex:
    print("READY", flush=True)
    for _ in ex.map(time.sleep, [0.2] * 400):  # 20 s of work in all
        pass
print("not reached")
