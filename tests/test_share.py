"""Machine shares and make's jobserver (docs/share.md): programs side by side draw their permits beyond
their first from one pool; a killed member's permits come back at once; only the owner can open a
share; make's tokens are taken and given back. Permits are counted here through the file's locks
(F_OFD_GETLK), not through corral's own bookkeeping."""

from __future__ import annotations

import fcntl
import json
import os
import pwd
import random
import select
import shutil
import signal
import stat
import struct
import subprocess
import sys
import tempfile
import textwrap
import time

import pytest

import corral
from _helpers import run_python

PERMIT_BASE = 4096  # machine_share.cpp: permit i is byte PERMIT_BASE + i
OTHER_USER = "corral-share-test"

# A member whose pool of `n` threads runs short CPU-bound tasks back to back (holding permits) until
# killed; prints "ready" once its process has drawn `want` permits from the share. With RUNS=k, it
# stops after k more tasks once ready; with FOREVER=1 its tasks never end (it holds its permits firmly:
# no permit between two tasks for another member to draw).
HOLDER = textwrap.dedent("""
    import collections, os, sys, time
    import corral, corral._core as core
    n, want = int(sys.argv[1]), int(sys.argv[2])
    runs = int(os.environ.get("RUNS", "-1"))
    forever = os.environ.get("FOREVER") == "1"
    def spin(_):
        end = time.monotonic() + 0.002
        while forever or time.monotonic() < end:
            pass
    ex = corral.ThreadPoolExecutor(n)
    pending = collections.deque(ex.submit(spin, i) for i in range(4 * n))
    ready = False
    while runs != 0:
        if forever:
            time.sleep(0.005)
        else:
            pending.popleft().result()
            pending.append(ex.submit(spin, 0))
        if not ready and core.permit_stats()["drawn"] >= want:
            print("ready", flush=True)
            ready = True
        if ready and runs > 0:
            runs -= 1
""")


@pytest.fixture
def runtime(tmp_path):
    """A private XDG_RUNTIME_DIR for the test's shares (and its environment for children)."""
    d = tmp_path / "xdg"
    d.mkdir(mode=0o700)
    env = {"XDG_RUNTIME_DIR": str(d), "CORRAL_CPUS": "4"}
    env.pop("MAKEFLAGS", None)
    return d, env


def popen(args, env, **kw):
    full = {k: v for k, v in os.environ.items() if k not in ("CORRAL_CPUS", "CORRAL_SHARE", "MAKEFLAGS")}
    full.update(env)
    return subprocess.Popen([sys.executable, *args], env=full, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, **kw)


def locked_permits(path, size) -> int:
    """Permit bytes some process holds, asked of the kernel through a description of our own."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return 0
    try:
        held = 0
        for i in range(size):
            query = struct.pack("hhqqi4x", fcntl.F_WRLCK, os.SEEK_SET, PERMIT_BASE + i, 1, 0)
            answer = fcntl.fcntl(fd, fcntl.F_OFD_GETLK, query)
            if struct.unpack("hhqqi4x", answer)[0] != fcntl.F_UNLCK:
                held += 1
        return held
    finally:
        os.close(fd)


def info(env) -> dict:
    out = run_python(["-m", "corral", "info", "--json", "--no-numpy"], env=env, check=True)
    return json.loads(out.stdout)["machine_shares"]


def wait_ready(proc, timeout=20.0):
    """Until the member prints "ready" (never blocking past `timeout`)."""
    end = time.monotonic() + timeout
    while (left := end - time.monotonic()) > 0:
        if not select.select([proc.stdout], [], [], left)[0]:
            break
        line = proc.stdout.readline()
        if line.strip() == "ready":
            return
        if not line:
            break
    proc.kill()
    raise AssertionError(f"member not ready within {timeout} s: {proc.stderr.read()[-2000:]}")


def eventually(check, timeout=20.0):
    # Generous: a look may run `python -m corral info` while members spin on both CPUs (CI on 3.13 once
    # missed a member that joined within 5 s). The checks that are about time pass their own timeout.
    end = time.monotonic() + timeout
    while not check():
        if time.monotonic() > end:
            return False
        time.sleep(0.02)
    return True


def members_of(env, name) -> dict:
    shares = info({**env, "CORRAL_SHARE": name})["shares"]
    return {m["pid"]: m["permits"] for m in shares[0].get("members", [])}


# -- names, sizes, errors -------------------------------------------------------------------------------

@pytest.mark.parametrize("args, env, says", [
    (["--share=a/b"], {}, "share name"),
    (["--share=.hidden"], {}, "share name"),
    (["--share=" + "x" * 65], {}, "share name"),
    (["--share", "ok", "--share-size", "0"], {}, "size"),
    (["--share", "ok", "--share-size", "65537"], {}, "size"),
    (["--share", "ok", "--share-size", "two"], {}, "size"),
    (["--share-size", "2"], {}, "--share-size needs --share"),
    ([], {"CORRAL_SHARE": "a b"}, "CORRAL_SHARE"),
    ([], {"CORRAL_SHARE": "ok", "CORRAL_SHARE_SIZE": "-1"}, "CORRAL_SHARE_SIZE:"),
    ([], {"CORRAL_SHARE_SIZE": "abc"}, "CORRAL_SHARE_SIZE:"),  # malformed, share or not (--help says so)
    (["--share="], {}, "--share: a share name"),  # empty: refused, not taken for no share
    (["--share=", "--share-size", "4"], {}, "--share: a share name"),
])
def test_bad_names_and_sizes_exit_2(runtime, args, env, says):
    _, base = runtime
    out = run_python(["-m", "corral", *args, "-c", "print('ran')"], env={**base, **env})
    assert out.returncode == 2, out
    assert "ran" not in out.stdout
    assert says in out.stderr and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def test_api_errors(runtime):
    with pytest.raises(ValueError, match="share name"):
        corral.share("../x")
    with pytest.raises(TypeError):
        corral.share(3)
    with pytest.raises(ValueError, match="size"):
        corral.share("ok", size=0)
    with pytest.raises(TypeError):
        corral.share("ok", size=2.0)
    assert "share" in corral.__all__


def test_bare_share_takes_the_script_not_its_name(runtime, tmp_path):
    _, env = runtime
    script = tmp_path / "prog.py"
    script.write_text("import os; print(os.environ['CORRAL_SHARE'])\n")
    assert run_python(["-m", "corral", "--share", str(script)], env=env).stdout.strip() == "default"
    assert run_python(["-m", "corral", "--share", "jobs", str(script)], env=env).stdout.strip() == "jobs"
    assert run_python(["-m", "corral", "--share=x", str(script)], env=env).stdout.strip() == "x"


# -- joining, info, leaving -----------------------------------------------------------------------------

def test_members_share_one_pool_and_the_last_removes_the_file(runtime):
    xdg, env = runtime
    path = xdg / "corral" / "t.share"
    a = popen(["-m", "corral", "--share", "t", "--share-size", "3", "-c", HOLDER, "3", "3"], {**env, "FOREVER": "1"})
    try:
        wait_ready(a)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
        # A second member (the environment's CORRAL_SHARE, as a child inherits it) runs on its own
        # first permit only: the share's 3 are A's.
        b = popen(["-c", HOLDER, "2", "0"], {**env, "CORRAL_SHARE": "t"})
        try:
            wait_ready(b)
            assert eventually(lambda: locked_permits(path, 3) == 3)
            assert eventually(lambda: members_of(env, "t") == {a.pid: 3, b.pid: 0})
            shares = info({**env, "CORRAL_SHARE": "t"})["shares"]
            assert shares[0]["size"] == 3 and shares[0]["path"] == str(path)
            text = run_python(["-m", "corral", "--share", "t", "info", "--no-numpy"], env=env).stdout
            assert f"pid {a.pid} holds" in text and "machine share 't': 3 permits" in text
        finally:
            b.kill()
            b.wait()
    finally:
        a.send_signal(signal.SIGTERM)  # a normal death: Python's exit path, atexit included
        a.wait()
    # SIGTERM kills without atexit; the file is then stale (no lock held) and info removes it.
    shares = info({**env, "CORRAL_SHARE": "t"})["shares"]
    assert shares[0].get("stale") or shares[0].get("missing")
    assert not path.exists()
    # A member that exits normally removes the file itself.
    out = run_python(["-m", "corral", "--share", "t", "-c", "print(1)"], env=env)
    assert out.returncode == 0 and out.stdout == "1\n"
    assert not path.exists()
    assert not (xdg / "corral").exists()  # nothing left behind, the per-user directory included


def test_api_share_is_inherited_by_children(runtime):
    xdg, env = runtime
    code = textwrap.dedent("""
        import os, subprocess, sys, corral
        corral.share("api", size=2)
        child = subprocess.run([sys.executable, "-c",
            "import corral._core as c; print(c.permit_source())"], capture_output=True, text=True)
        print(os.environ["CORRAL_SHARE"], os.environ["CORRAL_SHARE_SIZE"])
        print(child.stdout.strip())
    """)
    out = run_python(["-c", code], env=env)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "api 2"
    assert lines[1].startswith("machine share 'api' (2 permits")
    assert not (xdg / "corral" / "api.share").exists()


# -- crash safety ---------------------------------------------------------------------------------------

def test_sigkill_of_a_member_returns_its_permits_at_once(runtime):
    xdg, env = runtime
    path = xdg / "corral" / "k.share"
    a = popen(["-m", "corral", "--share", "k", "--share-size", "2", "-c", HOLDER, "2", "2"], {**env, "FOREVER": "1"})
    b = None
    try:
        wait_ready(a)
        b = popen(["-m", "corral", "--share", "k", "-c", HOLDER, "2", "2"], env)
        assert eventually(lambda: members_of(env, "k") == {a.pid: 2, b.pid: 0})  # B: its own permit only
        assert locked_permits(path, 2) == 2
        a.kill()  # SIGKILL: no exit path runs
        killed = time.monotonic()
        wait_ready(b, timeout=5)  # B has drawn both: full speed
        assert time.monotonic() - killed < 1.0
        assert eventually(lambda: members_of(env, "k") == {b.pid: 2})  # the dead member is gone
    finally:
        a.kill()
        a.wait()
        if b is not None:
            b.kill()
            b.wait()


CHURN = textwrap.dedent("""
    import os, random, sys, time, corral
    from concurrent.futures import ThreadPoolExecutor
    corral.share("churn", size=3)
    from corral import ThreadPoolExecutor
    rng = random.Random(int(sys.argv[1]))
    def task(_):
        end = time.monotonic() + rng.uniform(0.001, 0.02)
        while time.monotonic() < end:
            pass
    with ThreadPoolExecutor(rng.randint(1, 6)) as ex:
        list(ex.map(task, range(rng.randint(5, 40))))
    if rng.random() < 0.3:
        os._exit(0)  # no atexit: the kernel drops the locks
""")


def test_100_members_joining_and_leaving_never_exceed_the_size_nor_lose_a_permit(runtime):
    xdg, env = runtime
    path = xdg / "corral" / "churn.share"
    rng = random.Random(13)
    running, started, peak, samples = [], 0, 0, 0
    while started < 100 or running:
        running = [p for p in running if p.poll() is None]
        while started < 100 and len(running) < 8:
            running.append(popen(["-c", CHURN, str(started)], env))
            started += 1
        if running and rng.random() < 0.02:
            rng.choice(running).kill()  # some die by SIGKILL, holding permits
        held = locked_permits(path, 3)
        peak = max(peak, held)
        samples += 1
        time.sleep(0.005)
    assert peak <= 3
    assert samples > 50
    assert peak >= 2  # the test saw the share in use
    # Nothing lost: a newcomer draws all three at once.
    out = run_python(["-m", "corral", "--share", "churn", "-c", HOLDER, "4", "3"], env={**env, "RUNS": "5"},
                     timeout=30)
    assert out.returncode == 0 and "ready" in out.stdout, out.stderr
    assert not path.exists() or locked_permits(path, 3) == 0


# -- only its owner -------------------------------------------------------------------------------------

@pytest.fixture
def other_user():
    if os.geteuid() != 0:
        pytest.skip("needs root: makes a user with useradd and runs as it (CI runs as root)")
    for tool in ("useradd", "runuser"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is missing (Debian: passwd / util-linux)")
    try:
        pwd.getpwnam(OTHER_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", OTHER_USER],
                       check=True)
    return pwd.getpwnam(OTHER_USER)


def as_other(user, *command):
    return subprocess.run(["runuser", "-u", user.pw_name, "--", *command], capture_output=True, text=True)


def test_a_share_of_another_user_cannot_be_opened(other_user):
    common = tempfile.mkdtemp(prefix="corral-xdg-")
    try:
        os.chmod(common, 0o1777)  # a directory both users may write: the attacker's set-up
        env = {"XDG_RUNTIME_DIR": common}
        # The other user's share: their directory, their file (as open as they like).
        for cmd in (["mkdir", "-m", "0700", f"{common}/corral"], ["touch", f"{common}/corral/s.share"],
                    ["chmod", "0600", f"{common}/corral/s.share"]):
            assert as_other(other_user, *cmd).returncode == 0
        out = run_python(["-m", "corral", "--share", "s", "-c", "print('ran')"], env=env)
        assert out.returncode == 2 and "ran" not in out.stdout
        assert f"belongs to uid {other_user.pw_uid}" in out.stderr and "Traceback" not in out.stderr
        with pytest.raises(PermissionError, match="belongs to uid"):
            run_in_process_share(common)
        assert run_python(["-m", "corral", "info", "--no-numpy"], env=env).returncode == 2
        # Even opened to everyone (as TBB's --ipc semaphore is to the group), it is refused.
        assert as_other(other_user, "chmod", "0777", f"{common}/corral").returncode == 0
        assert as_other(other_user, "chmod", "0666", f"{common}/corral/s.share").returncode == 0
        out = run_python(["-m", "corral", "--share", "s", "-c", "print('ran')"], env=env)
        assert out.returncode == 2 and "ran" not in out.stdout
        # The other way round: our live share, which the other user can neither open nor list.
        mine = tempfile.mkdtemp(prefix="corral-xdg-")
        os.chmod(mine, 0o755)
        holder = popen(["-m", "corral", "--share", "s", "--share-size", "2", "-c", HOLDER, "2", "2"],
                       {"XDG_RUNTIME_DIR": mine, "CORRAL_CPUS": "2", "FOREVER": "1"})
        try:
            wait_ready(holder)
            share_file = f"{mine}/corral/s.share"
            assert stat.S_IMODE(os.stat(share_file).st_mode) == 0o600
            denied = as_other(other_user, "sh", "-c", f"exec 3<>{share_file}")
            assert denied.returncode != 0 and "Permission denied" in denied.stderr
            assert as_other(other_user, "ls", f"{mine}/corral").returncode != 0
            assert locked_permits(share_file, 2) == 2  # undisturbed
        finally:
            holder.kill()
            holder.wait()
            shutil.rmtree(mine, ignore_errors=True)
    finally:
        shutil.rmtree(common, ignore_errors=True)


def run_in_process_share(xdg):
    """corral.share() in a child with XDG_RUNTIME_DIR=xdg; re-raises its OSError here."""
    code = ("import corral\ntry:\n    corral.share('s')\nexcept PermissionError as e:\n    print('PE', e)\n")
    out = run_python(["-c", code], env={"XDG_RUNTIME_DIR": xdg})
    if out.stdout.startswith("PE"):
        raise PermissionError(out.stdout[3:].strip())
    raise AssertionError(out.stdout + out.stderr)


# -- make's jobserver -----------------------------------------------------------------------------------

JOBS_PROBE = textwrap.dedent("""
    import hashlib, time, corral, corral._core as core
    from concurrent.futures import ThreadPoolExecutor
    peak = 0
    data = bytes(256 * 1024)
    def task(_):
        # computes with the GIL released: its cores are busy (pure-Python tasks taking turns at the
        # GIL leave cores idle, and the idle-core rule lets others in: docs/permits.md)
        global peak
        peak = max(peak, core.permit_stats()["held"])
        end = time.monotonic() + 0.01
        while time.monotonic() < end:
            hashlib.sha256(data).digest()
    with ThreadPoolExecutor(6) as ex:
        list(ex.map(task, range(60)))
    print(core.permit_source(), "|", peak)
""")


def test_fifo_jobserver_tokens_are_taken_and_given_back(tmp_path):
    fifo = tmp_path / "jobs.fifo"
    os.mkfifo(fifo, 0o600)
    keep = os.open(fifo, os.O_RDWR | os.O_NONBLOCK)  # make's end: holds the tokens meanwhile
    try:
        os.write(keep, b"xyz")  # make -j4: three tokens beyond the implicit one
        env = {"MAKEFLAGS": f" -j4 --jobserver-auth=fifo:{fifo}", "CORRAL_CPUS": "8"}
        out = run_python(["-m", "corral", "-c", JOBS_PROBE], env=env, timeout=60)
        assert out.returncode == 0, out.stderr
        source, peak = out.stdout.rsplit("|", 1)
        assert source.strip() == f"make's jobserver (fifo {fifo}, make -j4)"
        assert 2 <= int(peak) <= 4  # the implicit permit and the three tokens, not the budget of 8
        assert sorted(os.read(keep, 16)) == sorted(b"xyz")  # every token back, as it was
    finally:
        os.close(keep)


@pytest.mark.skipif(shutil.which("make") is None, reason="GNU make is not installed")
def test_make_j4_pipe_jobserver(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text(JOBS_PROBE)
    py = sys.executable
    (tmp_path / "Makefile").write_text(textwrap.dedent(f"""\
        all: a b c d
        a b c d:
        \t+@CORRAL_CPUS=8 {py} -m corral {probe} > $@.out
        plain:
        \t@CORRAL_CPUS=8 {py} -m corral -v {probe} 2> plain.err > plain.out
    """))
    # make 4.4 (Debian 13) hands out a fifo by default: ask it for the pipe this test is about
    version = subprocess.run(["make", "--version"], capture_output=True, text=True).stdout.split()[2]
    pipe = ["--jobserver-style=pipe"] if tuple(int(x) for x in version.split(".")[:2]) >= (4, 4) else []
    out = subprocess.run(["make", "-j4", "-s", *pipe], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    for target in "abcd":
        source, peak = (tmp_path / f"{target}.out").read_text().rsplit("|", 1)
        assert source.strip().startswith("make's jobserver (fds ") and "make -j4" in source
        assert 1 <= int(peak) <= 4
    # A recipe without '+': make does not pass the descriptors, the program keeps its own budget (in the
    # share private to its tree, docs/share.md).
    out = subprocess.run(["make", "-j4", "-s", *pipe, "plain"], cwd=tmp_path, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert "prefix the command with '+'" in (tmp_path / "plain.err").read_text()
    source, _ = (tmp_path / "plain.out").read_text().rsplit("|", 1)
    assert source.strip().startswith("machine share 'tree-") and "(8 permits" in source, source


# -- inheritance and fork -------------------------------------------------------------------------------

def test_process_pool_workers_join_the_share(runtime, tmp_path):
    _, env = runtime
    code = textwrap.dedent("""
        import multiprocessing, os
        def where(_):
            import corral._core as core
            return os.environ.get("CORRAL_SHARE"), core.permit_source()
        if __name__ == "__main__":
            for method in ("fork", "spawn"):
                with multiprocessing.get_context(method).Pool(2) as pool:
                    print(method, *set(pool.map(where, range(4))))
    """)
    script = tmp_path / "pool_share.py"  # a file: spawn workers import the function from it
    script.write_text(code)
    out = run_python(["-m", "corral", "--share", "pw", "--share-size", "2", str(script)], env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    for method in ("fork", "spawn"):
        line = next(x for x in out.stdout.splitlines() if x.startswith(method))
        assert "('pw', \"machine share 'pw' (2 permits" in line, line


def test_a_forked_child_does_not_keep_a_killed_parents_permits(runtime):
    xdg, env = runtime
    path = xdg / "corral" / "fk.share"
    code = HOLDER.replace('print("ready", flush=True)',
                          'child = os.fork()\n        if child == 0:\n            time.sleep(600)\n'
                          '            os._exit(0)\n        print("ready", child, flush=True)')
    code = code.replace('if line.strip() == "ready"', 'if line.startswith("ready")')
    member = popen(["-m", "corral", "--share", "fk", "--share-size", "2", "-c", code, "2", "2"], env)
    child = None
    try:
        ready = select.select([member.stdout], [], [], 20)[0]
        assert ready, "member not ready"
        word, child = member.stdout.readline().split()
        child = int(child)
        assert word == "ready"
        assert eventually(lambda: locked_permits(path, 2) >= 1)
        member.kill()
        member.wait()
        assert eventually(lambda: locked_permits(path, 2) == 0, timeout=1.0)
        os.kill(child, 0)  # the child lives on, holding nothing of its parent's
    finally:
        member.kill()
        member.wait()
        if child:
            os.kill(child, signal.SIGKILL)
