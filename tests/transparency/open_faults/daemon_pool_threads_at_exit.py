"""Programs that end while a multiprocessing ThreadPool (never closed) still runs tasks: its worker
threads are daemon threads, and python ends them as it shuts down, some of them waiting for the GIL,
a permit or a sleep. Plain python exits 0 every time; each such program here runs as a child (under
the runner, a child Python runs under corral too), several times, since the race is at exit."""
import subprocess
import sys

PROGRAMS = {
    "blas": (
        "import numpy as np\n"
        "from multiprocessing.pool import ThreadPool\n"
        "p = ThreadPool(4)\n"
        "a = np.ones((200, 200))\n"
        "for _ in range(16):\n"
        "    p.apply_async(np.linalg.qr, (a,))\n"
    ),
    "sleep": (
        "import time\n"
        "from multiprocessing.pool import ThreadPool\n"
        "p = ThreadPool(8)\n"
        "for i in range(32):\n"
        "    p.apply_async(time.sleep, (0.001 * (i % 5),))\n"
    ),
}

for name, code in PROGRAMS.items():
    codes = [subprocess.run([sys.executable, "-c", code]).returncode for _ in range(4)]
    print(name, codes)
