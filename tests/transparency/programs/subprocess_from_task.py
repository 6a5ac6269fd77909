"""Processes started from pool tasks: their signal mask, Popen.terminate() of `sleep 30`, SIGINT to a
python child, an exit status, and the signal mask of the pool thread itself."""
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.pool import ThreadPool


def child_mask():
    return subprocess.run(["grep", "SigBlk", "/proc/self/status"], capture_output=True, text=True).stdout.strip()


def try_signal(cmd, how):
    p = subprocess.Popen(cmd)
    time.sleep(0.5)
    p.send_signal(how)
    try:
        p.wait(timeout=5)
        return f"{how.name}: child ended, rc={p.returncode}"
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
        return f"{how.name}: IGNORED by the child (had to SIGKILL it)"


def thread_mask():
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, [])
    names = sorted((getattr(s, 'name', str(s)) for s in blocked), key=lambda n: (n.isdigit(), n))
    return f"{len(blocked)} blocked {names[:6]}"


def exit_status():
    return subprocess.run([sys.executable, "-c", "import sys; sys.exit(7)"]).returncode


def output():
    return subprocess.check_output(["echo", "hello from echo"], text=True).strip()


if __name__ == "__main__":
    print("main thread mask:", thread_mask())
    with ThreadPoolExecutor(2) as ex:
        print("pool thread mask:", ex.submit(thread_mask).result())
        print("child's", ex.submit(child_mask).result())
        print(ex.submit(try_signal, ["sleep", "30"], signal.SIGTERM).result())
        print(ex.submit(try_signal, [sys.executable, "-c", "import time; time.sleep(30)"], signal.SIGINT).result())
        print("child exit status:", ex.submit(exit_status).result())
        print("child output:", ex.submit(output).result())
    with ThreadPool(2) as pool:
        print("ThreadPool thread mask:", pool.apply(thread_mask))
        print("ThreadPool child's", pool.apply(child_mask))
        print("ThreadPool", pool.apply(try_signal, (["sleep", "30"], signal.SIGTERM)))
