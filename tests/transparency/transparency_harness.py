"""Runs one program of programs/ (or promises/, probe/) under plain python, `python -m corral` or
corral.patch() (launch_patch.py) and records what a user sees: stdout, stderr, exit status (negative:
death by that signal), the files it wrote in its working directory, its run time, and whether it hung.

Every mode runs in its own empty working directory at the same depth, with the program given by the same
relative path, so that sys.argv[0], relative file names and written files are comparable.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROGRAMS = HERE / "programs"
PROMISES = HERE / "promises"
LAUNCHER = HERE / "launch_patch.py"
MODES = ("plain", "runner", "patch")
TIMEOUT = 30.0  # seconds any one program may take before it counts as hung (plain python needs < 5)


def command(mode: str, program: str, args=()) -> list[str]:
    if mode == "plain":
        return [sys.executable, program, *args]
    if mode == "runner":
        return [sys.executable, "-m", "corral", program, *args]
    if mode == "patch":
        return [sys.executable, str(LAUNCHER), program, *args]
    raise ValueError(mode)


def options(path: Path) -> dict[str, str]:
    """`# transparency: key=value key=value` lines at the top of a program."""
    found: dict[str, str] = {}
    for line in path.read_text().splitlines():
        m = re.match(r"#\s*transparency:\s*(.*)", line)
        if m:
            for item in m.group(1).split():
                key, _, value = item.partition("=")
                found[key] = value
    return found


@dataclass
class Run:
    mode: str
    program: str
    returncode: int | None
    stdout: str
    stderr: str
    seconds: float
    files: dict[str, bytes] = field(default_factory=dict)
    hung: bool = False
    sigint_to_exit: float | None = None  # seconds from the SIGINT the harness sent to the process's end
    note: str = ""

    def stderr_tail(self) -> str:
        lines = [line for line in self.stderr.splitlines() if line.strip()]
        return lines[-1] if lines else ""

    def describe(self) -> str:
        status = "HUNG" if self.hung else f"rc={self.returncode}"
        return (f"{self.program} under {self.mode}: {status} after {self.seconds:.1f} s {self.note}\n"
                f"--- stdout ---\n{self.stdout}--- stderr (last 6000 chars) ---\n{self.stderr[-6000:]}")


def _reader(stream, sink: bytearray, ready: threading.Event | None, marker: bytes):
    for chunk in iter(lambda: stream.read1(65536), b""):
        sink.extend(chunk)
        if ready is not None and marker in sink:
            ready.set()
    stream.close()


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def run(path: Path, mode: str, workdir: Path, args=(), timeout: float = TIMEOUT,
        sigint_after_ready: float | None = None, env: dict | None = None) -> Run:
    """Runs `path` under `mode` in `workdir` (created, must be new). With sigint_after_ready, the harness
    waits for a line READY on stdout, waits that many seconds more and sends SIGINT to the process."""
    workdir.mkdir(parents=True)
    program = os.path.relpath(path, workdir)
    full_env = {k: v for k, v in os.environ.items() if k not in ("CORRAL_CPUS", "PYTHONUNBUFFERED")}
    full_env.update(env or {})
    t0 = time.monotonic()
    proc = subprocess.Popen(command(mode, program, args), cwd=workdir, env=full_env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    out, err = bytearray(), bytearray()
    ready = threading.Event() if sigint_after_ready is not None else None
    readers = [threading.Thread(target=_reader, args=(proc.stdout, out, ready, b"READY\n"), daemon=True),
               threading.Thread(target=_reader, args=(proc.stderr, err, None, b""), daemon=True)]
    for t in readers:
        t.start()
    deadline = t0 + timeout
    hung, note, sigint_to_exit = False, "", None
    try:
        if ready is not None:
            if ready.wait(timeout):
                time.sleep(sigint_after_ready)
                if proc.poll() is None:
                    t_sig = time.monotonic()
                    proc.send_signal(signal.SIGINT)
                    try:
                        proc.wait(max(1.0, deadline - time.monotonic()))
                        sigint_to_exit = time.monotonic() - t_sig
                    except subprocess.TimeoutExpired:
                        pass
                else:
                    note = "(ended before the harness sent SIGINT)"
            else:
                note = "(never printed READY)"
        proc.wait(max(0.1, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        hung = True
        note += f" (still running after {timeout:.0f} s: killed)"
    seconds = time.monotonic() - t0
    _kill_group(proc.pid)  # leftovers (a child the program left behind) must not outlive the test
    if hung:
        proc.wait()
    for t in readers:
        t.join(5)
    files = {}
    for p in sorted(workdir.rglob("*")):
        if p.is_file():
            files[str(p.relative_to(workdir))] = p.read_bytes()
    return Run(mode, path.name, None if hung else proc.returncode, out.decode(errors="replace"),
               err.decode(errors="replace"), seconds, files, hung, sigint_to_exit, note)
