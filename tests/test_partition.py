"""The partition of a budget into worker shares, from Python: the binding on fake topologies
(this machine has 2 CPUs), the shares a pool plans, and the thread-limit rules."""

import math

import pytest

from corral import _core, _joblib, _thread_limits, _worker_share
from corral._worker_share import BudgetView


def smt_machine(nodes, cores_per_node, smt=2):
    """Cores as sibling lists and nodes as CPU lists, numbered like Linux x86 (sibling k of core
    c is c + k * cores)."""
    total = nodes * cores_per_node
    cores = [[c + k * total for k in range(smt)] for c in range(total)]
    numa = [[cpu for c in range(n * cores_per_node, (n + 1) * cores_per_node) for cpu in cores[c]]
            for n in range(nodes)]
    return cores, numa


def test_binding_keeps_siblings_and_nodes_together():
    cores, numa = smt_machine(2, 4)
    parts = _core.partition_cpus(cores, numa, 4)
    assert parts == [[0, 1, 8, 9], [2, 3, 10, 11], [4, 5, 12, 13], [6, 7, 14, 15]]
    assert _core.partition_order(cores, numa)[:4] == [0, 8, 1, 9]
    assert _core.partition_cpus(cores, numa, 2) == [sorted(numa[0]), sorted(numa[1])]


def test_binding_spreads_and_widens():
    cores, numa = smt_machine(1, 2, smt=1)
    assert _core.partition_cpus(cores, numa, 5) == [[0], [1], [0], [1], [0]]
    assert _core.partition_cpus(cores, numa, 2, 2.0) == [[0, 1], [0, 1]]


@pytest.mark.parametrize("workers, factor, message", [
    (0, 1.0, "workers must be at least 1"),
    (-3, 1.0, "workers must be at least 1"),
    (2, 0.5, "factor"),
    (2, math.nan, "factor"),
])
def test_binding_rejects_bad_input(workers, factor, message):
    with pytest.raises(ValueError, match=message):
        _core.partition_cpus([[0], [1]], [[0, 1]], workers, factor)


def test_binding_rejects_inconsistent_topologies():
    with pytest.raises(ValueError, match="two cores"):
        _core.partition_cpus([[0, 1], [1]], [], 1)
    with pytest.raises(ValueError, match="no CPU"):
        _core.partition_cpus([], [], 1)
    with pytest.raises(ValueError, match="bad CPU id"):
        _core.partition_cpus([[-1]], [], 1)


def view(cpus, machine):
    cores, numa = machine
    return BudgetView(cpus, sorted(c for core in cores for c in core), cores, numa)


def test_plan_gives_each_worker_its_cpus_and_limits():
    shares = _worker_share.plan_shares(4, view=view(16, smt_machine(2, 4)), environ={})
    assert [s.index for s in shares] == [0, 1, 2, 3]
    assert all(len(s.cpus) == 4 and s.threads == 4 for s in shares)
    assert all(s.env["OMP_NUM_THREADS"] == "4" and s.env["CORRAL_CPUS"] == "4" for s in shares)
    assert all(s.native_threads == 4 for s in shares)


def test_plan_under_a_quota_uses_whole_cores_of_the_first_node():
    # A budget of 4 on 16 CPUs (cgroup quota): affinity says the same, two cores of node 0.
    shares = _worker_share.plan_shares(2, view=view(4, smt_machine(2, 4)), environ={})
    assert [s.cpus for s in shares] == [(0, 8), (1, 9)]
    assert [s.threads for s in shares] == [2, 2]


def test_plan_above_the_hardware_scales_the_limits():
    # CORRAL_CPUS=8 on 2 CPUs (emulating a bigger machine): each worker's one CPU counts as 4.
    shares = _worker_share.plan_shares(2, view=view(8, smt_machine(1, 2, smt=1)), environ={})
    assert [s.cpus for s in shares] == [(0,), (1,)]
    assert [s.env["OMP_NUM_THREADS"] for s in shares] == ["4", "4"]


def test_plan_factor_and_bad_arguments():
    machine = view(8, smt_machine(1, 8, smt=1))
    assert [len(s.cpus) for s in _worker_share.plan_shares(4, factor=1.5, view=machine, environ={})] == [3] * 4
    with pytest.raises(ValueError, match="factor"):
        _worker_share.plan_shares(2, factor=0.9, view=machine)
    with pytest.raises(TypeError, match="factor"):
        _worker_share.plan_shares(2, factor="wide", view=machine)
    with pytest.raises(ValueError, match="workers"):
        _worker_share.plan_shares(0, view=machine)


def test_a_user_set_variable_is_an_upper_bound_and_the_share_another():
    # The lower wins: a user's 7 on a 2-thread share is lowered, a user's 1 is kept; force sets the share.
    env = _thread_limits.environment_for(2, environ={"OMP_NUM_THREADS": "7", "MKL_NUM_THREADS": "1"})
    assert env["OMP_NUM_THREADS"] == "2" and "MKL_NUM_THREADS" not in env and env["BLIS_NUM_THREADS"] == "2"
    assert "MKL_NUM_THREADS" not in env[_thread_limits.MANAGED_VAR].split(",")
    assert _thread_limits.environment_for(2, environ={"MKL_NUM_THREADS": "1"}, force=True)["MKL_NUM_THREADS"] == "2"
    assert _thread_limits.native_limit(4, environ={"OPENBLAS_NUM_THREADS": "3"}) == 3
    assert _thread_limits.native_limit(4, environ={"OPENBLAS_NUM_THREADS": "3"}, force=True) == 4
    assert _thread_limits.native_limit(4, environ={"NUMEXPR_NUM_THREADS": "3"}) == 4


def test_values_corral_set_may_be_narrowed_by_a_nested_corral():
    outer = _thread_limits.environment_for(4, environ={})
    inner = _thread_limits.environment_for(2, environ=outer)  # a worker's environment
    assert inner["OMP_NUM_THREADS"] == "2" and inner["CORRAL_CPUS"] == "2"
    assert _thread_limits.native_limit(2, environ=outer) == 2


def test_corral_cpus_is_always_the_share():
    assert _thread_limits.environment_for(1, environ={"CORRAL_CPUS": "8"})["CORRAL_CPUS"] == "1"
    with pytest.raises(ValueError):
        _thread_limits.environment_for(0)


def test_apply_and_restore_round_trip():
    environ = {"OMP_NUM_THREADS": "9"}
    previous = _thread_limits.apply({"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}, environ)
    assert environ == {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    _thread_limits.restore(previous, environ)
    assert environ == {"OMP_NUM_THREADS": "9"}


def test_joblib_workers_get_the_budget_share(monkeypatch):
    joblib_backends = pytest.importorskip("joblib._parallel_backends")
    for var in (*_thread_limits.THREAD_LIMIT_VARS, "CORRAL_CPUS", _thread_limits.MANAGED_VAR):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("CORRAL_CPUS", "8")
    [(owner, name, replacement)] = _joblib.patch_targets()
    assert owner is joblib_backends.ParallelBackendBase and name == "_prepare_worker_env"
    monkeypatch.setattr(owner, name, replacement)
    env = joblib_backends.LokyBackend()._prepare_worker_env(n_jobs=2)
    assert env["OMP_NUM_THREADS"] == "4" and env["CORRAL_CPUS"] == "4" and env["PYTHON_CPU_COUNT"] == "4"
    monkeypatch.setenv("MKL_NUM_THREADS", "3")  # the user's choice survives, as in joblib
    assert joblib_backends.LokyBackend()._prepare_worker_env(n_jobs=2)["MKL_NUM_THREADS"] == "3"
    explicit = joblib_backends.LokyBackend(inner_max_num_threads=1)._prepare_worker_env(n_jobs=2)
    assert explicit["OMP_NUM_THREADS"] == "1" and explicit["CORRAL_CPUS"] == "4"
