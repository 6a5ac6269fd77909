"""`python -m corral info`: the command a user runs first."""

import json
import os
import shutil
import subprocess
import sys

import pytest

from _helpers import run_python


def run_info(*args, env_extra=None, prefix=()):
    return run_python(["-m", "corral", "info", *args], env=env_extra, prefix=prefix, timeout=120)


def info_json(**kwargs):
    proc = run_info("--json", **kwargs)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_json_has_the_documented_fields():
    report = info_json()
    assert isinstance(report["budget"], int)
    assert all(isinstance(c, int) for c in report["cpus"])
    assert isinstance(report["sources"], dict) and "affinity" in report["sources"]
    assert sorted(c for core in report["cores"] for c in core) == sorted(report["cpus"])
    assert sorted(c for node in report["numa_nodes"] for c in node) == sorted(report["cpus"])
    for pool in report["native_pools"]:
        assert set(pool) >= {"library", "path", "version", "threading_layer", "num_threads"}


def test_budget_is_nproc():
    nproc = int(subprocess.run(["nproc"], capture_output=True, text=True, check=True).stdout)
    report = info_json()
    assert report["budget"] == nproc == len(os.sched_getaffinity(0))
    assert report["decided_by"] == "affinity"


@pytest.mark.skipif(shutil.which("taskset") is None, reason="taskset (util-linux) not installed")
def test_taskset_one_cpu_gives_budget_one():
    first = min(os.sched_getaffinity(0))
    report = info_json(prefix=("taskset", "-c", str(first)))
    assert report["budget"] == 1
    assert report["cpus"] == [first]


def test_corral_cpus_overrides_and_says_so():
    report = info_json(env_extra={"CORRAL_CPUS": "1"})
    assert report["budget"] == 1
    assert report["decided_by"] == "CORRAL_CPUS"
    text = run_info(env_extra={"CORRAL_CPUS": "1"}).stdout
    assert "CORRAL_CPUS" in text


def test_corral_cpus_above_hardware_is_flagged():
    report = info_json(env_extra={"CORRAL_CPUS": "64"})
    assert report["budget"] == 64 and report["exceeds_hardware"] is True
    assert "above the hardware" in run_info(env_extra={"CORRAL_CPUS": "64"}).stdout


@pytest.mark.parametrize("bad", ["0", "-2", "abc", "2.5", ""])
def test_malformed_corral_cpus_is_a_clear_error(bad):
    proc = run_info("--json", env_extra={"CORRAL_CPUS": bad})
    assert proc.returncode == 2
    assert "CORRAL_CPUS" in proc.stderr and "Traceback" not in proc.stderr


def test_numpy_pools_are_shown_and_match_threadpoolctl():
    pytest.importorskip("numpy")
    pytest.importorskip("threadpoolctl")
    report = info_json()
    assert "numpy" in report["imported"]
    ours = sorted((p["library"], os.path.realpath(p["path"]), p["num_threads"]) for p in report["native_pools"])
    code = ("import json, os, numpy, threadpoolctl; print(json.dumps(sorted((i['internal_api'], "
            "os.path.realpath(i['filepath']), i['num_threads']) for i in threadpoolctl.threadpool_info())))")
    theirs = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                       check=True).stdout)
    assert ours == [tuple(t) for t in theirs]
    assert ours, "numpy should bring at least one BLAS library"


def test_import_option_loads_more_and_reports_missing_module():
    proc = run_info("--json", "--import", "json")
    assert proc.returncode == 0 and "json" in json.loads(proc.stdout)["imported"]
    proc = run_info("--import", "no_such_module_xyz")
    assert proc.returncode == 2 and "no_such_module_xyz" in proc.stderr and "Traceback" not in proc.stderr


def test_bad_option_exits_2_with_message():
    proc = run_info("--no-such-option")
    assert proc.returncode == 2 and "unrecognized arguments" in proc.stderr


def test_help_lists_every_option():
    out = run_info("--help").stdout
    for option in ("--json", "--import", "--no-numpy"):
        assert option in out
