"""An uncaught KeyboardInterrupt (Ctrl-C) after writing to a buffered file that is never closed and
registering atexit handlers (one using a pool): python runs the handlers, flushes the file at
finalisation, then dies by SIGINT (returncode -2)."""
# transparency: rc=-2 stderr-tail=1
import atexit
from concurrent.futures import ThreadPoolExecutor

ex = ThreadPoolExecutor(2)
print("squares:", list(ex.map(lambda x: x * x, range(5))))
atexit.register(lambda: print("atexit: first registered, runs last", flush=True))
atexit.register(lambda: print("atexit: second registered, runs first", flush=True))
f = open("kbint_out.txt", "w")
f.write("data written before Ctrl-C\n")  # buffered, never closed
print("stdout line buffered before the interrupt")
raise KeyboardInterrupt
