"""Child Python processes of a program under `python -m corral` join the budget (docs/children.md):
every start method and subprocess, observed from inside the child, and seen by the program exactly as
under plain python."""

import json
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import textwrap
import time

import pytest

from _helpers import enter_group, quota_group, run_python

# Each child reports what corral gave it on stderr (one JSON line, "child:" first) and what any program
# sees on stdout: the two runs' stdout must be equal.
PROGRAM = textwrap.dedent("""\
    import json, multiprocessing as mp, os, signal, subprocess, sys

    def report(tag):
        import corral._patch, corral._pool_settings
        seen = {"tag": tag, "patched": corral._patch.is_patched(), "cpus": os.environ.get("CORRAL_CPUS"),
                "openblas": os.environ.get("OPENBLAS_NUM_THREADS"), "settings": corral._pool_settings.get(),
                "children": os.environ.get("CORRAL_CHILDREN")}
        print("child:" + json.dumps(seen), file=sys.stderr, flush=True)

    def child(tag, status):
        report(tag)
        print(tag, __name__, sys.argv, flush=True)
        if status == "TERM":
            os.kill(os.getpid(), signal.SIGTERM)
        sys.exit(status)

    if __name__ == "__main__":
        for method, status in (("fork", 0), ("spawn", 3), ("forkserver", "TERM")):
            p = mp.get_context(method).Process(target=child, args=(method, status))
            p.start()
            p.join()
            print(method, "exit", p.exitcode, flush=True)
        code = "import sys; sys.path.insert(0, '.'); import prog; prog.child('subprocess', 5)"
        r = subprocess.run([sys.executable, "-c", code, "arg"], capture_output=True, text=True)
        sys.stderr.write(r.stderr)
        print(r.stdout, end="")
        print("subprocess exit", r.returncode)
        r = subprocess.run(["sh", "-c", "echo sh $0", "ran"], capture_output=True, text=True)
        print(r.stdout, end="")
""")


def _children(stderr: str) -> dict:
    return {d["tag"]: d for d in (json.loads(line[6:]) for line in stderr.splitlines() if line.startswith("child:"))}


@pytest.fixture
def prog(tmp_path):
    (tmp_path / "prog.py").write_text(PROGRAM)
    return tmp_path


def test_the_startup_hook_is_installed_in_site_packages():
    # The .pth file `make setup` (CMakeLists.txt) installs: one line, gated by the variable.
    path = os.path.join(sysconfig.get_paths()["purelib"], "corral-children.pth")
    with open(path) as f:
        lines = f.read().splitlines()
    assert len(lines) == 1 and lines[0].startswith('import os; os.environ.get("CORRAL_CHILDREN") and '), lines


@pytest.mark.parametrize("delay", [0.0, 0.05, 0.15, 0.5])
def test_sigint_while_a_child_starts_ends_it_by_sigint_as_under_python(delay):
    # The set-up runs inside site.py, where a KeyboardInterrupt would be a fatal error (exit 1).
    for env in ({}, {"CORRAL_CHILDREN": "1"}):
        p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(10)"], env={**os.environ, **env},
                             stderr=subprocess.PIPE, text=True)
        time.sleep(delay)
        p.send_signal(signal.SIGINT)
        _, err = p.communicate(timeout=30)
        assert p.returncode == -signal.SIGINT, (env, err)
        assert "Fatal Python error" not in err


def test_every_start_method_and_subprocess_joins_and_the_program_sees_what_python_shows(prog):
    plain = run_python(["prog.py"], cwd=prog, timeout=120)
    under = run_python(["-m", "corral", "-p", "1", "prog.py"], cwd=prog, timeout=120)
    assert plain.returncode == under.returncode == 0, under.stderr
    assert under.stdout == plain.stdout  # __main__/__mp_main__, argv, exit codes, signals, output
    assert "spawn exit 3" in under.stdout and "forkserver exit -15" in under.stdout
    assert "subprocess exit 5" in under.stdout and "sh ran" in under.stdout
    seen = _children(under.stderr)
    assert set(seen) == {"fork", "spawn", "forkserver", "subprocess"}
    for tag, child in seen.items():
        assert child["patched"], tag
        assert child["cpus"] == "1", tag  # the parent's budget
        assert child["openblas"] == "1", tag  # the budget, below the CPUs the libraries see
    assert not any(child["patched"] for child in _children(plain.stderr).values())


def test_children_get_the_runners_options(prog):
    under = run_python(["-m", "corral", "--mode", "static", "-f", "2", "--force", "prog.py"], cwd=prog,
                       timeout=120)
    assert under.returncode == 0, under.stderr
    for tag, child in _children(under.stderr).items():
        assert child["settings"] == {"native": True, "mode": "static", "factor": 2.0, "force": True}, tag


def test_no_children_leaves_child_pythons_alone(prog):
    under = run_python(["-m", "corral", "-p", "1", "--no-children", "prog.py"], cwd=prog, timeout=120)
    assert under.returncode == 0, under.stderr
    seen = _children(under.stderr)
    assert not seen["spawn"]["patched"] and not seen["forkserver"]["patched"] and not seen["subprocess"]["patched"]
    assert seen["fork"]["patched"]  # a fork is a copy of the program, patch included (as for pool workers)
    assert all(child["children"] is None for child in seen.values())
    assert "--no-children" in run_python(["-m", "corral", "--help"]).stdout


def test_no_children_also_stops_what_a_corral_above_started():
    code = ("import subprocess, sys; subprocess.run([sys.executable, '-m', 'corral', '--no-children', '-c', "
            "'import corral._patch as p, os; print(p.is_patched(), os.environ.get(\"CORRAL_CHILDREN\"))'])")
    under = run_python(["-m", "corral", "-c", code])
    assert under.returncode == 0, under.stderr
    assert under.stdout.split() == ["True", "None"]  # the runner's own patch; its children's variable gone


def test_a_runner_started_by_a_child_applies_its_own_options():
    inner = "import corral._pool_settings as s; print(s.get()['mode'], s.get()['factor'])"
    code = ("import subprocess, sys; "
            f"subprocess.run([sys.executable, '-m', 'corral', '--mode', 'static', '-c', {inner!r}])")
    under = run_python(["-m", "corral", "-f", "3", "-c", code])
    assert under.returncode == 0, under.stderr
    assert under.stdout.split() == ["static", "1.0"]  # not the -f 3 of the corral above


def test_a_pool_inside_a_child_gives_its_workers_disjoint_shares(tmp_path):
    script = textwrap.dedent("""\
        import multiprocessing as mp, os

        def budget(_):
            return os.environ.get("CORRAL_CPUS")

        def child():
            with mp.get_context("spawn").Pool(2) as pool:
                budgets = pool.map(budget, range(2))
                cpus = sorted(sorted(os.sched_getaffinity(p.pid)) for p in pool._pool)  # each worker's, seen here
                print(hasattr(pool, "shares"), cpus, budgets, flush=True)

        if __name__ == "__main__":
            p = mp.get_context("spawn").Process(target=child)
            p.start()
            p.join()
    """)
    (tmp_path / "nested.py").write_text(script)
    under = run_python(["-m", "corral", "-p", "2", "nested.py"], cwd=tmp_path, timeout=120,
                       prefix=["taskset", "-c", "0,1"] if shutil.which("taskset") else [])
    assert under.returncode == 0, under.stderr
    assert under.stdout.startswith("True ")  # corral's Pool (it has shares), in the child
    assert "[[0], [1]] ['1', '1']" in under.stdout


@pytest.mark.parametrize("value", ["mode=fast", "budget=2", "budget=0@1f", "budget=x@1f", "budget=2@",
                                   "budget=65537@1f", "budget=" + "9" * 5000 + "@1f"])
def test_a_bad_corral_children_value_is_one_line_and_exit_2(value):
    r = run_python(["-c", "print('ran')"], env={"CORRAL_CHILDREN": value})
    assert r.returncode == 2
    assert r.stdout == ""
    assert r.stderr.startswith("corral: CORRAL_CHILDREN: ") and r.stderr.count("\n") == 1, r.stderr


# -- the budget a child takes from its parent (docs/children.md, "What a child costs") --------------------

# A child reports what it got at its start: whether the C extension was loaded for it, the variables it was
# given, and the budget recorded for its own children; then, with --grandchild, starts one and reports it.
BUDGET_CHILD = textwrap.dedent("""\
    import json, os, subprocess, sys
    loaded = "corral._core" in sys.modules  # before anything of the child's own could import it
    seen = {"core": loaded, "cpus": os.environ.get("CORRAL_CPUS"), "openblas": os.environ.get("OPENBLAS_NUM_THREADS"),
            "loky": os.environ.get("LOKY_MAX_CPU_COUNT"), "children": os.environ.get("CORRAL_CHILDREN"),
            "affinity": len(os.sched_getaffinity(0))}
    import corral
    seen["budget"] = corral.budget().cpus
    print(json.dumps(seen), flush=True)
    if "--grandchild" in sys.argv:
        subprocess.run([sys.executable, __file__], check=True)
""")

needs_two_cpus = pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs 2 CPUs in the affinity mask")


def _budget_reports(tmp_path, program: str, *runner_args, env=None, prefix=()) -> list[dict]:
    (tmp_path / "budget_child.py").write_text(BUDGET_CHILD)
    (tmp_path / "prog.py").write_text(textwrap.dedent(program))
    r = run_python(["-m", "corral", *runner_args, "prog.py"], cwd=tmp_path, timeout=120, env=env, prefix=prefix)
    assert r.returncode == 0, r.stderr
    return [json.loads(line) for line in r.stdout.splitlines()]


@needs_two_cpus
def test_a_child_takes_the_runners_budget_without_loading_the_extension(tmp_path):
    child, grandchild = _budget_reports(tmp_path, """\
        import subprocess, sys
        subprocess.run([sys.executable, "budget_child.py", "--grandchild"], check=True)
    """, "-p", "1")
    for seen in (child, grandchild):
        assert not seen["core"], seen  # the parent's budget, as recorded: no C extension at the start
        assert (seen["cpus"], seen["openblas"], seen["loky"], seen["budget"]) == ("1", "1", "1", 1), seen


@needs_two_cpus
def test_a_child_with_another_affinity_reads_its_own_budget_and_records_it(tmp_path):
    # The runner's budget is 2 (both CPUs); a child started on one CPU must not take it, and its own
    # children take the child's, not the runner's.
    child, grandchild = _budget_reports(tmp_path, """\
        import os, subprocess, sys
        subprocess.run([sys.executable, "budget_child.py", "--grandchild"], check=True,
                       preexec_fn=lambda: os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}))
    """)
    assert child["core"] and child["affinity"] == 1, child  # read again: its inputs differ from the runner's
    assert child["budget"] == 1 and child["loky"] == "1" and child["cpus"] is None, child
    assert "budget=1@" in child["children"], child
    assert not grandchild["core"] and grandchild["children"] == child["children"], grandchild
    assert grandchild["loky"] == "1" and grandchild["budget"] == 1, grandchild


@needs_two_cpus
@pytest.mark.parametrize("runner_cpus, child_cpus", [(None, "1"), ("9       \t", "1       \n")],
                         ids=["runner-unset", "near-collision"])
def test_a_child_given_another_corral_cpus_reads_its_own_budget(tmp_path, runner_cpus, child_cpus):
    # The second pair once had the same digest (a sum of shifted bytes): the child took the runner's 9.
    child, = _budget_reports(tmp_path, f"""\
        import os, subprocess, sys
        env = {{**os.environ, "CORRAL_CPUS": {child_cpus!r}}}
        subprocess.run([sys.executable, "budget_child.py"], check=True, env=env)
    """, env={"CORRAL_CPUS": runner_cpus} if runner_cpus else None)
    assert child["core"], child
    assert (child["cpus"], child["openblas"], child["loky"], child["budget"]) == (child_cpus, "1", "1", 1), child


def test_the_recorded_settings_keep_every_digit_of_the_factor():
    from corral import _children

    settings = _children.Settings(mode="static", factor=1.0000001, force=True, native=False)
    assert _children.decode(_children.encode(settings)) == settings  # `-f 1.0000001` once reached children as 1


def test_the_names_a_childs_start_spells_itself_are_the_owners():
    # _children imports no other module of corral's at a child's start (its module docstring): what it needs
    # of them it spells itself, and must spell as they do.
    from corral import _children, _deferred_patch, _pool_settings, _thread_limits

    assert (_children.CHILDREN_VAR, _children.BUDGET_VAR, _children.MAX_BUDGET) == \
        (_thread_limits.CHILDREN_VAR, _thread_limits.BUDGET_VAR, _thread_limits.MAX_BUDGET)
    assert _children.MODES == _pool_settings.MODES
    assert _children.TRIGGER_MODULES == _deferred_patch.TRIGGER_MODULES
    assert _children.LIBRARY_MODULES == _deferred_patch.LIBRARY_MODULES
    assert _children.PACKAGE_PREFIX == _deferred_patch.PACKAGE + "."


@pytest.mark.parametrize("text", ["1", "1.0", "2.5", "1e0", " 3 ", "0.99", "0", "-2", "inf", "nan", "x", "", "1,5"])
def test_a_childs_factor_rule_is_the_pools(text):
    from corral import _children, _pool_settings

    try:
        expected = _pool_settings.validate_factor(float(text))  # the runner's -f: the text's number
    except (TypeError, ValueError):
        expected = None
    try:
        got = _children._factor(text)
    except ValueError:
        got = None
    assert got == expected, text


def test_the_digest_tells_texts_apart_that_differ_in_a_byte_or_in_length():
    from corral import _children

    base = b"0::/user.slice/user-0.slice/session-1.scope\n"
    digests = {_children._digest(base), _children._digest(base + b"\0"), _children._digest(base[:-1])}
    digests |= {_children._digest(base[:i] + bytes([base[i] ^ bit]) + base[i + 1:])
                for i in range(len(base)) for bit in (1, 0x80)}  # 0x80: the top bit of a word, for every 8th byte
    assert len(digests) == 3 + 2 * len(base)


def test_a_child_whose_budget_is_its_parents_imports_one_module_of_corrals_until_its_first_pool(tmp_path):
    # docs/children.md, "What a child costs": each module of corral's is some 1% of a child's start. The patch
    # itself starts at the child's first pool import; that child's pools are corral's (test_deferred_patch.py).
    code = ("import sys; print(sorted(m for m in sys.modules if m.startswith('corral'))); "
            "import concurrent.futures, corral._patch; print(corral._patch.is_patched())")
    r = run_python(["-m", "corral", "-c", f"import subprocess, sys; subprocess.run([sys.executable, '-c', {code!r}])"])
    assert r.returncode == 0, r.stderr
    assert r.stdout.split("\n")[:2] == ["['corral', 'corral._children']", "True"], r.stdout


def test_a_pool_module_imported_before_the_childs_start_enters_the_patch_at_once():
    # A .pth file read before corral's may import one: the patch is entered at the child's start, as the
    # runner enters it where one is imported already.
    code = textwrap.dedent("""\
        import concurrent.futures, os
        from corral import _children
        env = {k: v for k, v in os.environ.items() if k != "CORRAL_CHILDREN"}
        recorded = _children.Settings(budget=len(os.sched_getaffinity(0)), inputs=_children.budget_inputs(env))
        env["CORRAL_CHILDREN"] = _children.encode(recorded)
        _children.start_in_child(env)  # the budget recorded: the fast path
        import corral
        print(isinstance(concurrent.futures.ThreadPoolExecutor(1), corral.ThreadPoolExecutor))
    """)
    r = run_python(["-c", code])
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "True"


def test_a_child_in_a_cgroup_namespace_of_its_own_reads_its_own_budget(tmp_path):
    # In a namespace of its own a child may read its parent's /proc/self/cgroup text from another cgroup.
    # The runner in a namespace of its own too, so that both read every cgroup as "/".
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare (a cgroup namespace)")
    child, = _budget_reports(tmp_path, """\
        import subprocess, sys
        subprocess.run(["unshare", "-C", sys.executable, "budget_child.py"], check=True)
    """, prefix=("unshare", "-C"))
    assert child["core"], child


@needs_two_cpus
def test_a_quota_raised_after_the_runner_started_is_not_pinned_in_a_child(tmp_path):
    # The runner starts under a quota of 1 CPU; the program lifts it, then starts a child: the child's budget
    # is what corral.budget() reads now (2), and no CORRAL_CPUS keeps the runner's 1.
    with quota_group(1) as group:
        child, = _budget_reports(tmp_path, f"""\
            import subprocess, sys
            with open({os.path.join(group, "cpu.cfs_quota_us")!r}, "w") as f:
                f.write("-1")
            subprocess.run([sys.executable, "budget_child.py"], check=True)
        """, prefix=enter_group(group))
    assert child["cpus"] is None and child["budget"] == 2, child


def test_a_python_without_corral_ignores_the_variable(tmp_path):
    # The hook lives in this environment's site-packages: another environment (a fresh venv, without
    # corral) has no .pth and runs as usual.
    import venv

    venv.create(tmp_path / "other", with_pip=False)
    other = tmp_path / "other" / "bin" / "python"
    r = subprocess.run([str(other), "-c", "import sys; print('ran', 'corral' in sys.modules)"], capture_output=True,
                       text=True, env={**os.environ, "CORRAL_CHILDREN": "1"}, timeout=60)
    assert r.returncode == 0 and r.stdout == "ran False\n", r.stderr


def test_a_child_with_the_variable_and_no_runner_joins_on_its_own():
    # What a `dask worker` or any python started with CORRAL_CHILDREN=1 gets: the patch, no runner needed.
    r = run_python(["-c", "import corral._patch as p, sys; print(p.is_patched(), sys.argv)", "x"],
                   env={"CORRAL_CHILDREN": "1"})
    assert r.returncode == 0, r.stderr
    assert r.stdout == "True ['-c', 'x']\n"


# -- one budget for the program's tree (docs/share.md, "The program's tree") -----------------------------

TREE_CHILD = textwrap.dedent("""\
    import hashlib, json, os, sys, time
    from concurrent.futures import ThreadPoolExecutor
    import corral._core as core

    data = os.urandom(1 << 20)

    def task(_):
        t0 = time.monotonic()
        for _ in range(6):
            hashlib.sha256(data).digest()  # the GIL released: each task is one CPU busy
        return t0, time.monotonic()

    time.sleep(max(0.0, float(sys.argv[1]) - time.monotonic()))  # the children start together
    with ThreadPoolExecutor(4) as ex:
        spans = list(ex.map(task, range(16)))
    print(json.dumps({"share": os.environ.get("CORRAL_SHARE"), "source": core.permit_source(), "spans": spans}))
""")

TREE_PARENT = textwrap.dedent("""\
    import json, os, subprocess, sys, time
    start = time.monotonic() + 2.0
    procs = [subprocess.Popen([sys.executable, "tree_child.py", str(start)], stdout=subprocess.PIPE, text=True)
             for _ in range(4)]
    seen = [json.loads(p.communicate()[0]) for p in procs]
    spans = [s for child in seen for s in child["spans"]]
    edges = sorted([(a, 1) for a, _ in spans] + [(b, -1) for _, b in spans], key=lambda e: (e[0], e[1]))
    running = peak = 0
    for _, step in edges:
        running += step
        peak = max(peak, running)
    print(json.dumps({"mine": os.environ.get("CORRAL_SHARE"), "children": [c["share"] for c in seen],
                      "sources": [c["source"] for c in seen], "peak": peak}))
""")


def test_the_program_and_its_children_run_on_one_budget(tmp_path):
    # Four children, each a pool of 4 compute tasks, under a budget of 2. Each child alone would have
    # the whole budget (8 tasks at once, 16 under plain python); in the program's tree share each runs
    # one task on a permit of its own and the share's 2 permits go to some: at most 2 + 3 at once.
    (tmp_path / "tree_child.py").write_text(TREE_CHILD)
    (tmp_path / "tree_parent.py").write_text(TREE_PARENT)
    xdg = tmp_path / "xdg"
    xdg.mkdir(mode=0o700)
    env = {"XDG_RUNTIME_DIR": str(xdg), "MAKEFLAGS": ""}
    under = run_python(["-m", "corral", "-p", "2", "tree_parent.py"], cwd=tmp_path, env=env, timeout=180)
    assert under.returncode == 0, under.stderr
    seen = json.loads(under.stdout)
    assert seen["mine"].startswith("tree-") and seen["children"] == [seen["mine"]] * 4, seen
    assert all(s.startswith(f"machine share '{seen['mine']}' (2 permits") for s in seen["sources"]), seen
    assert 2 <= seen["peak"] <= 5, seen
    assert not list(xdg.glob("corral/*.share"))  # the tree's file goes with its last member

    alone = run_python(["-m", "corral", "-p", "2", "--no-children", "tree_parent.py"], cwd=tmp_path, env=env,
                       timeout=180)
    assert alone.returncode == 0, alone.stderr
    seen = json.loads(alone.stdout)
    assert seen["mine"] is None and seen["sources"] == [None] * 4  # children left alone: no share at all
    assert seen["peak"] > 5, seen  # what the tree share prevents: plain python's children, 4 tasks each


def test_an_explicit_share_is_the_trees_and_v_says_which(tmp_path):
    xdg = tmp_path / "xdg"
    xdg.mkdir(mode=0o700)
    code = ("import os, subprocess, sys; "
            "subprocess.run([sys.executable, '-c', 'import os; print(os.environ.get(\"CORRAL_SHARE\"))'])")
    env = {"XDG_RUNTIME_DIR": str(xdg), "MAKEFLAGS": ""}
    tree = run_python(["-m", "corral", "-v", "-c", code], env=env)
    assert tree.returncode == 0, tree.stderr
    assert tree.stdout.startswith("tree-"), tree.stdout
    assert "private to this program and the processes it starts" in tree.stderr
    named = run_python(["-m", "corral", "--share", "jobs", "-c", code], env=env)
    assert named.returncode == 0 and named.stdout == "jobs\n", named.stderr
    # A share directory corral may not use: the program still runs, without a tree share, and -v says so.
    (xdg / "corral").mkdir(mode=0o755, exist_ok=True)
    (xdg / "corral").chmod(0o755)
    refused = run_python(["-m", "corral", "-v", "-c", code], env=env)
    assert refused.returncode == 0 and refused.stdout == "None\n", refused.stderr
    assert "no share for the program's children" in refused.stderr


@pytest.mark.parametrize("ending, status", [
    ("pass", 0), ("raise SystemExit(3)", 3), ("raise KeyboardInterrupt", -signal.SIGINT),
    ("import os, signal; os.kill(os.getpid(), signal.SIGTERM)", -signal.SIGTERM),
    ("import os; os._exit(4)", 4)])
def test_the_tree_share_leaves_nothing_behind(tmp_path, ending, status):
    # Python's own exits (SIGINT re-raised included) leave the share through the runner's atexit handler;
    # a death without an exit path leaves a file no member holds, which the next run removes.
    xdg = tmp_path / "xdg"
    xdg.mkdir(mode=0o700)
    env = {"XDG_RUNTIME_DIR": str(xdg), "MAKEFLAGS": ""}
    code = f"import os; print(os.environ['CORRAL_SHARE'], flush=True); {ending}"
    p = subprocess.run([sys.executable, "-m", "corral", "-c", code], env={**os.environ, **env}, capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == status, p.stderr
    assert p.stdout.startswith("tree-"), p.stdout
    left = [f.name for f in xdg.glob("corral/*.share")]
    assert left == ([] if ending in ("pass", "raise SystemExit(3)", "raise KeyboardInterrupt")
                    else [p.stdout.strip() + ".share"]), left
    after = run_python(["-m", "corral", "-c", "import os; print(os.environ['CORRAL_SHARE'])"], env=env)
    assert after.returncode == 0, after.stderr
    assert not list(xdg.glob("corral/*.share")), "the next run removes a stale tree"
