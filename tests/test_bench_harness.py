"""The Python benchmark harness (benchmarks/run.py): it must produce a table, a plot and raw JSON in which
every configuration is either timed or says why not, and fail clearly on bad input."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "benchmarks"
sys.path.insert(0, str(BENCH))

import answers  # noqa: E402
import configs  # noqa: E402
import report  # noqa: E402
import run as harness  # noqa: E402
import stats  # noqa: E402
import targets  # noqa: E402
import workload_specs  # noqa: E402


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    proc = subprocess.run([sys.executable, str(BENCH / "run.py"), "--quick", "--workloads", "W1,W5", "--out", str(out)],
                          capture_output=True, text=True, timeout=600, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, proc


def test_quick_run_writes_table_plot_json_and_pointer(quick_run):
    out, proc = quick_run
    jsons = list(out.glob("*cpu-*-quick.json"))
    assert len(jsons) == 1, list(out.iterdir())
    stem = jsons[0].stem
    for suffix in (".md", ".png"):
        path = out / f"{stem}{suffix}"
        assert path.is_file() and path.stat().st_size > 0, path
    assert (out / f"{stem}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    latest = (out / "latest-quick.md").read_text()
    assert f"({stem}.md)" in latest
    assert not (out / "latest.md").exists(), "a quick run must not replace the full run's pointer"
    assert "| W1 balanced |" in proc.stdout  # the table is printed too


def test_every_configuration_is_timed_or_says_why(quick_run):
    out, _ = quick_run
    results = json.loads(next(out.glob("*-quick.json")).read_text())
    assert set(results["workloads"]) == {"W1", "W5"}
    assert results["settings"]["configs"] == configs.CONFIG_NAMES
    markdown = next(out.glob("*cpu-*-quick.md")).read_text()
    for workload in results["workloads"].values():
        assert set(workload["configs"]) == set(configs.CONFIG_NAMES)
        for name, row in workload["configs"].items():
            if row["status"] == "ok":
                assert row["samples"] and all(v > 0 for v in row["samples"]), (workload["id"], name)
                assert row["summary"]["min"] <= row["summary"]["median"] <= row["summary"]["max"]
                assert row["vs_plain"] > 0
            else:
                assert row["status"] in ("n/a", "failed")
                assert row["reason"].strip(), (workload["id"], name)
                assert row["reason"] in markdown  # the table says why
        assert workload["configs"]["plain"]["status"] == "ok"
        assert workload["configs"]["plain"]["vs_plain"] == pytest.approx(1.0)
        assert workload["tuning"]["winner"], "the hand-tuning grid picked no winner"
    # W5 is I/O-bound: loky is declared not applicable, with its reason.
    assert results["workloads"]["W5"]["configs"]["joblib-loky"]["status"] == "n/a"


def test_results_name_the_machine(quick_run):
    out, _ = quick_run
    results = json.loads(next(out.glob("*-quick.json")).read_text())
    machine = results["machine"]
    assert machine["budget"] >= 1 and machine["logical_cpus"] >= machine["budget"]
    assert machine["numpy"] and machine["blas"], machine
    markdown = next(out.glob("*cpu-*-quick.md")).read_text()
    assert machine["cpu_model"] in markdown
    assert f"numpy {machine['numpy']}" in markdown
    assert f"budget {machine['budget']}" in markdown


@pytest.mark.parametrize("argv, message", [
    (["--workloads", "W1,W99"], "unknown workload"),
    (["--configs", "plain,nonsense"], "unknown configuration"),
    (["--reps", "0"], "at least 1"),
])
def test_bad_arguments_fail_clearly(argv, message, tmp_path):
    proc = subprocess.run([sys.executable, str(BENCH / "run.py"), "--out", str(tmp_path), *argv],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not any(tmp_path.iterdir())


def test_workload_selection_by_family_and_case():
    assert [w.id for w in workload_specs.select("w4")] == ["W4-fork", "W4-spawn", "W4-claimed"]
    assert [w.id for w in workload_specs.select("W4-claimed")] == ["W4-claimed"]
    assert [w.id for w in workload_specs.select(" W5 , w1")] == ["W1", "W5"]  # suite order
    assert len(workload_specs.select(None)) == len(workload_specs.WORKLOADS)


def test_w9_runs_four_programs_under_each_configuration():
    reasons = {"corral": None}
    w9, w9_make = workload_specs.select("W9")
    for workload, wanted in ((w9, {"plain", "corral", "corral-share"}), (w9_make, {"plain", "corral"})):
        planned = {name: configs.plan(name, workload, sys.executable, workload.args(2, True), 2, reasons)
                   for name in configs.CONFIG_NAMES}
        assert {n for n, p in planned.items() if isinstance(p, configs.Launch)} == wanted
        assert workload.args(2, False)["--copies"] == 4
    assert "--make" in planned["corral"].argv and "--share" not in planned["corral"].argv
    assert isinstance(configs.plan("corral-share", workload_specs.select("W1")[0], sys.executable, {}, 2,
                                   reasons), str)


def test_sizes_follow_the_budget():
    for workload in workload_specs.WORKLOADS:
        small, big = workload.args(2, False), workload.args(16, False)
        assert small.keys() == big.keys()
        # A driver (W9) runs whole programs under each configuration: no hand-tuning grid of its own.
        assert workload.grid(16) or "hand-tuned" in workload.not_applicable or workload.driver_args, workload.id
    w1 = workload_specs.select("W1")[0]
    assert w1.args(2, False)["--arrays"] == 64  # the seed's 64 arrays on 2 CPUs
    assert w1.args(16, False)["--arrays"] == 512
    assert workload_specs.emulated_cpus(2) == 16 and workload_specs.emulated_cpus(64) > 64


def test_emulated_big_machine_never_sets_corral_cpus(monkeypatch):
    monkeypatch.setenv("CORRAL_CPUS", "1")
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "3")
    w3 = workload_specs.select("W3")[0]
    launch = configs.plan("corral", w3, "python", w3.args(2, False), 2, {"corral": None})
    assert launch.argv[1:3] == ["-m", "corral"]
    assert "CORRAL_CPUS" not in launch.env
    assert launch.env["OPENBLAS_NUM_THREADS"] == "16"
    plain = configs.plan("plain", workload_specs.select("W1")[0], "python", {}, 2, {})
    assert "OPENBLAS_NUM_THREADS" not in plain.env  # plain means library defaults


def test_w4_claimed_tells_the_libraries_16_cpus_and_forces_corrals_shares():
    w4 = workload_specs.select("W4-claimed")[0]
    launch = configs.plan("corral", w4, "python", w4.args(2, False), 2, {"corral": None})
    assert launch.argv[1:4] == ["-m", "corral", "--force"]
    assert launch.env["OPENBLAS_NUM_THREADS"] == "16" and "CORRAL_CPUS" not in launch.env
    plain = configs.plan("plain", w4, "python", w4.args(2, False), 2, {})
    assert "--force" not in plain.argv and plain.env["OPENBLAS_NUM_THREADS"] == "16"


def test_unavailable_or_inapplicable_configurations_give_reasons():
    w1, w8 = workload_specs.select("W1")[0], workload_specs.select("W8")[0]
    reasons = {"corral": "corral runner not available in this build (x)",
               "corral.ThreadPool": "corral.ThreadPool not available in this build"}
    assert configs.plan("corral", w1, "python", {}, 2, reasons) == reasons["corral"]
    assert configs.plan("corral-api", w1, "python", {}, 2, reasons) == reasons["corral.ThreadPool"]
    assert "concurrent.futures" in configs.plan("tbb4py", w8, "python", {}, 2, {"tbb4py": None})
    assert configs.plan("hand-tuned", w1, "python", {}, 2, {}, tuned=None) == "no grid point ran successfully"
    with pytest.raises(ValueError, match="unknown configuration"):
        configs.plan("nonsense", w1, "python", {}, 2, {})


def test_hand_tuned_launch_sets_pool_and_blas_threads():
    w1 = workload_specs.select("W1")[0]
    setting = workload_specs.Setting((("--pool", 3),), 1)
    launch = configs.plan("hand-tuned", w1, "python", {"--arrays": 8, "--pool": 99}, 2, {}, tuned=setting)
    assert launch.argv[launch.argv.index("--pool") + 1] == "3"
    assert launch.argv.count("--pool") == 1
    assert all(launch.env[name] == "1" for name in workload_specs.BLAS_THREAD_VARS)


def test_execute_reports_failures_and_timeouts():
    noisy = "print('noise'); print('BENCH_RESULT {\"value\": 2.5}')"
    ok = harness.execute(configs.Launch([sys.executable, "-c", noisy],
                                        configs.base_environment()), 30)
    assert ok["ok"] and ok["value"] == 2.5
    crashed = harness.execute(configs.Launch([sys.executable, "-c", "raise SystemExit('workload check failed: x')"],
                                             configs.base_environment()), 30)
    assert not crashed["ok"] and "workload check failed: x" in crashed["error"]
    silent = harness.execute(configs.Launch([sys.executable, "-c", "pass"], configs.base_environment()), 30)
    assert not silent["ok"]
    slow = harness.execute(configs.Launch([sys.executable, "-c", "import time; time.sleep(30)"],
                                          configs.base_environment()), 0.5)
    assert not slow["ok"] and slow["timed_out"]


def test_round_robin_rotates_the_order():
    orders = [harness.rotated(["a", "b", "c"], rep) for rep in range(3)]
    assert [order[0] for order in orders] == ["a", "b", "c"]
    assert all(sorted(order) == ["a", "b", "c"] for order in orders)


def test_stats_and_speedup_direction():
    s = stats.summarize([5.0, 1.0, 3.0, 2.0, 4.0])
    assert (s["min"], s["median"], s["max"], s["q1"], s["q3"]) == (1.0, 3.0, 5.0, 2.0, 4.0)
    assert stats.speedup(1.0, 2.0, higher_is_better=False) == 2.0  # half the seconds: twice as fast
    assert stats.speedup(200.0, 100.0, higher_is_better=True) == 2.0  # twice the tasks/s
    assert stats.best_index([3.0, 1.0, 2.0], higher_is_better=False) == 1
    assert stats.best_index([3.0, 1.0, 2.0], higher_is_better=True) == 0
    with pytest.raises(ValueError):
        stats.summarize([])
    with pytest.raises(ValueError):
        stats.speedup(0.0, 1.0, False)


def test_markdown_lists_every_configuration_with_footnoted_reasons():
    results = {
        "machine": {"hostname": "box", "cpu_model": "Test CPU", "logical_cpus": 4, "budget": 2,
                    "budget_source": "cgroup quota 2 CPUs", "python": "3.11", "numpy": "2.0", "blas": []},
        "settings": {"quick": False, "reps": 3, "tune_reps": 1, "configs": ["plain", "corral", "tbb4py"],
                     "started": "now"},
        "configs": {n: {"label": n, "description": n} for n in ("plain", "corral", "tbb4py")},
        "workloads": {"W1": {
            "id": "W1", "title": "balanced", "measures": "m", "unit": "s", "higher_is_better": False,
            "configs": {
                "plain": {"status": "ok", "command": "python w1.py", "samples": [2.0],
                          "summary": stats.summarize([2.0]), "vs_plain": 1.0},
                "corral": {"status": "n/a", "reason": "corral runner not available in this build", "samples": []},
                "tbb4py": {"status": "failed", "reason": "exit 1: boom", "samples": []},
            }}},
    }
    text = report.markdown(results)
    assert "4cpu-box" in text and "Test CPU" in text
    assert "| W1 balanced | 2 s (1.00×) | n/a [1] | failed [2] |" in text
    assert "1. corral runner not available in this build" in text
    assert "2. exit 1: boom" in text


def _without_corral(tmp_path) -> dict:
    """An environment where `import corral` finds an empty package: as before corral's pools existed."""
    import os

    fake = tmp_path / "fake" / "corral"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    return {**os.environ, "PYTHONPATH": str(fake.parent)}


def test_missing_corral_columns_say_why(tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, str(BENCH / "run.py"), "--quick", "--workloads", "W8",
                           "--configs", "corral,corral-static,corral-api", "--out", str(out)],
                          capture_output=True, text=True, timeout=300, env=_without_corral(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads(next(out.glob("*-quick.json")).read_text())["workloads"]["W8"]["configs"]
    assert rows["plain"]["status"] == "ok"
    for name in ("corral", "corral-static", "corral-api"):
        assert rows[name]["status"] == "n/a", rows[name]
        assert "not available in this build" in rows[name]["reason"]
    assert rows["corral-api"]["reason"] == "corral.ThreadPoolExecutor not available in this build"


@pytest.mark.parametrize("corral_present", [True, False])
def test_demo_runs_plain_and_corral_or_says_why(corral_present, tmp_path):
    import os

    env = dict(os.environ) if corral_present else _without_corral(tmp_path)
    if corral_present and configs.runner_error(sys.executable, ["-m", "corral"]) is not None:
        pytest.fail("the corral runner does not work in this build")
    proc = subprocess.run([sys.executable, str(BENCH / "demo.py"), "--quick"], capture_output=True, text=True,
                          timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("  python   ") == 2  # both scenarios ran plain
    assert "$ python -m corral info" in proc.stdout
    if corral_present:
        assert proc.stdout.count("python -m corral   ") == 2
        assert proc.stdout.count("than plain") == 2
    else:
        assert "The corral column is not available yet" in proc.stdout
        assert "than plain" not in proc.stdout


def test_timeout_ends_the_workers_of_a_run_too(tmp_path):
    pid_file = tmp_path / "grandchild.pid"
    code = ("import subprocess, sys, time; "
            "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
            f"open({str(pid_file)!r}, 'w').write(str(p.pid)); time.sleep(60)")
    outcome = harness.execute(configs.Launch([sys.executable, "-c", code], configs.base_environment()), 2.0)
    assert outcome["timed_out"]
    import os
    import time

    grandchild = int(pid_file.read_text())
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            os.kill(grandchild, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    pytest.fail(f"the run's own child {grandchild} outlived the timeout")


def test_time_budget_cuts_repetitions_but_keeps_a_spread():
    assert harness.affordable_reps(5, None, spent_s=100, rep_cost_s=100) == 5  # no budget
    assert harness.affordable_reps(5, 100, spent_s=20, rep_cost_s=10) == 5  # fits
    assert harness.affordable_reps(5, 100, spent_s=50, rep_cost_s=20) == 3  # 1 done + 2 more fit... floor 3
    assert harness.affordable_reps(9, 100, spent_s=40, rep_cost_s=10) == 7
    assert harness.affordable_reps(5, 10, spent_s=500, rep_cost_s=100) == harness.MIN_REPS
    assert harness.affordable_reps(2, 10, spent_s=500, rep_cost_s=100) == 2  # never more than asked


def test_answers_match_within_the_stated_tolerance():
    reference = {"best_params": [["max_depth", "None"]], "mean_test_score": [0.9, 0.925]}
    assert answers.difference({"best_params": [["max_depth", "None"]], "mean_test_score": [0.9, 0.925 + 1e-12]},
                              reference, 1e-9) is None
    assert "mean_test_score: [1]" in answers.difference(
        {"best_params": [["max_depth", "None"]], "mean_test_score": [0.9, 0.93]}, reference, 1e-9)
    assert "best_params" in answers.difference({"best_params": [["max_depth", "3"]], "mean_test_score": [0.9, 0.925]},
                                               reference, 1e-9)
    assert answers.difference([1.0, 2.0], [1.0, 2.0, 3.0], 0.1) is not None  # a lost result
    assert answers.difference(100.0001, 100.0, 1e-6) is None and answers.difference(100.01, 100.0, 1e-6)


def test_a_run_whose_answer_differs_from_plain_fails():
    def run(value, answer):
        return {"ok": True, "value": value, "wall_s": value, "result": {"value": value, "answer": answer}}

    rows = {"plain": {"status": "ok", "samples": [1.0, 1.1], "runs": [run(1.0, [0.5]), run(1.1, [0.5])]},
            "corral": {"status": "ok", "samples": [0.5, 0.6], "runs": [run(0.5, [0.5]), run(0.6, [0.7])]}}
    harness._check_answers(rows, 1e-9)
    assert rows["corral"]["samples"] == [0.5]
    assert not rows["corral"]["runs"][1]["ok"]
    assert "differs from plain python's" in rows["corral"]["runs"][1]["error"]
    assert rows["plain"]["samples"] == [1.0, 1.1]


def _workload_result(medians: dict, higher_is_better=False, ideal=None, spec=(targets.LEVEL,)):
    entry = {"id": "R9", "title": "t", "measures": "m", "unit": "tasks/s" if higher_is_better else "s",
             "higher_is_better": higher_is_better, "targets": [dataclasses.asdict(t) for t in spec],
             "configs": {name: {"status": "ok", "command": name, "samples": [v], "summary": stats.summarize([v]),
                                "vs_plain": 1.0} for name, v in medians.items()}}
    if ideal:
        entry["ideal"] = ideal
    return entry


def test_corral_is_measured_against_the_best_simple_fix():
    seconds = _workload_result({"plain": 3.0, "hand-tuned": 1.2, "threadpoolctl": 1.0, "corral": 1.04,
                                "corral-static": 0.5})
    assert targets.best_simple_fix(seconds["configs"], False) == ("threadpoolctl", 1.0)
    assert targets.figure(seconds, targets.LEVEL) == pytest.approx(1.0 / 1.04)
    assert targets.LEVEL.met(targets.figure(seconds, targets.LEVEL))  # within 5%
    assert not targets.AHEAD.met(1.0) and targets.AHEAD.met(1.01)  # ahead means strictly ahead
    rate = _workload_result({"plain": 100.0, "hand-tuned": 150.0, "corral": 140.0}, higher_is_better=True,
                            ideal=160.0)
    assert targets.figure(rate, targets.STDLIB_1_5) == pytest.approx(1.4)
    assert not targets.STDLIB_1_5.met(1.4)
    assert targets.figure(rate, targets.IDEAL_90) == pytest.approx(140.0 / 160.0)
    assert targets.figure(_workload_result({"plain": 1.0}), targets.LEVEL) is None  # corral did not run


def test_markdown_marks_each_target_met_or_not():
    results = {
        "machine": {"hostname": "box", "cpu_model": "Test CPU", "logical_cpus": 2, "budget": 2,
                    "budget_source": "affinity", "python": "3.11", "numpy": "2.0", "blas": []},
        "settings": {"quick": False, "reps": 3, "tune_reps": 1, "configs": ["plain", "threadpoolctl", "corral"],
                     "started": "now"},
        "configs": {n: {"label": n, "description": n} for n in ("plain", "threadpoolctl", "corral")},
        "workloads": {
            "R9": _workload_result({"plain": 3.0, "threadpoolctl": 1.0, "corral": 1.5}),
            "N9": {**_workload_result({"plain": 1.0, "corral": 1.01}, spec=(targets.NO_SLOWER,)), "id": "N9"}},
    }
    results["workloads"]["N9"]["configs"]["threadpoolctl"] = {"status": "n/a", "reason": "no pools", "samples": []}
    text = report.markdown(results)
    assert "Targets met: 1 of 2." in text
    assert ("| R9 t | 1 s (threadpoolctl) | 1.5 s | 0.67× | within 5% of the best simple fix (≥ 0.95×) | **no** |"
            in text)
    assert "| N9 t | 1 s (plain) | 1.01 s | 0.99× plain | within 3% of plain python (≥ 0.97×) | yes |" in text


def test_real_library_workloads_run_fewer_repetitions_and_quick_mode_skips_duplicates():
    r3 = workload_specs.select("R3")[0]
    assert harness.planned_reps(r3, 5) == workload_specs.REAL_REPS == 3
    assert harness.planned_reps(workload_specs.select("W1")[0], 5) == 5
    quick = [w.id for w in workload_specs.select(None, quick=True)]
    assert "R1-threading-2" in quick and "R1-threading-all" not in quick and "N1" in quick
    assert [w.id for w in workload_specs.select("R1", quick=True)] == [
        "R1-threading-2", "R1-threading-all", "R1-loky-2", "R1-loky-all"]  # named: all of them
    n1 = workload_specs.select("N1")[0]
    assert set(n1.not_applicable) == set(configs.CONFIG_NAMES) - {"plain", "corral"}
    for workload in workload_specs.REAL_WORKLOADS:
        assert workload.answer_rtol is not None, workload.id  # each is checked against plain python's


def test_w9_runs_its_oversubscribed_plain_column_once(monkeypatch):
    # Four oversubscribed programs take 90-100 s a run on 2 CPUs: plain runs once, the others --reps times.
    w9 = workload_specs.select("W9")[0]
    assert w9.config_max_reps == {"plain": 1}
    launched = []

    def fake_execute(launch, timeout_s):
        launched.append(launch.argv)
        return {"ok": True, "value": 1.0}

    monkeypatch.setattr(harness, "execute", fake_execute)
    opts = harness.parse_args(["--reps", "3", "--configs", "plain,corral,corral-share"])
    entry = harness.run_workload(w9, sys.executable, 2, {"corral": None}, opts, calibration=None)
    runs = {name: len(row["runs"]) for name, row in entry["configs"].items() if row["status"] == "ok"}
    assert runs == {"plain": 1, "corral": 3, "corral-share": 3}
    assert len(launched) == 7
