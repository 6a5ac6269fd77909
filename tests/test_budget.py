"""corral.budget(): the CPU budget of this process and where each figure came from."""

from __future__ import annotations

import json
import os

import pytest

import corral

from _helpers import run_python

AFFINITY = sorted(os.sched_getaffinity(0))
SOURCE_NAMES = [
    "affinity",
    "cgroup v2 cpu.max",
    "cgroup v2 cpuset.cpus.effective",
    "cgroup v1 cpu.cfs_quota_us",
    "cgroup v1 cpuset.cpus",
    "CORRAL_CPUS",
]


def budget_in_subprocess(env_cpus: str | None = None, prefix: list[str] | None = None) -> dict:
    """corral.budget().to_dict() from a fresh interpreter (taskset and the environment apply at start)."""
    code = "import corral, json; print(json.dumps(corral.budget().to_dict()))"
    out = run_python(["-c", code], env={} if env_cpus is None else {"CORRAL_CPUS": env_cpus}, prefix=prefix or (),
                     check=True, timeout=60)
    return json.loads(out.stdout)


def test_no_quota_here_budget_is_the_affinity_mask():
    b = corral.budget(env={})
    # The budget is the affinity mask unless a cgroup quota on this machine is tighter.
    quotas = [s.value for s in b.sources if s.value is not None and s.name in
              ("cgroup v2 cpu.max", "cgroup v1 cpu.cfs_quota_us")]
    expected = min([len(b.cpu_ids)] + quotas)
    assert b.cpus == expected
    assert set(b.cpu_ids) <= set(AFFINITY)
    if not quotas and b.decided_by == "affinity":
        assert b.cpus == len(AFFINITY) == len(os.sched_getaffinity(0))
        assert b.cpu_ids == AFFINITY


def test_sources_are_all_listed_and_one_decides():
    b = corral.budget(env={})
    assert [s.name for s in b.sources] == SOURCE_NAMES
    assert b.decided_by in SOURCE_NAMES
    affinity = b.sources[0]
    assert affinity.value == len(AFFINITY) and affinity.cpu_ids == AFFINITY
    assert affinity.path == "sched_getaffinity(0)"
    env = b.sources[-1]
    assert env.value is None and env.detail == "not set"
    for s in b.sources:
        assert isinstance(s.detail, str) and s.detail, s
        assert s.skipped in (True, False)


def test_to_dict_has_exactly_the_documented_shape():
    d = corral.budget(env={}).to_dict()
    assert set(d) == {"budget", "cpus", "decided_by", "exceeds_hardware", "sources", "cores", "numa_nodes"}
    assert isinstance(d["budget"], int) and d["budget"] >= 1
    assert list(d["sources"]) == SOURCE_NAMES
    for entry in d["sources"].values():
        assert set(entry) == {"cpus", "path", "detail"}
        assert entry["cpus"] is None or isinstance(entry["cpus"], int)
    assert json.loads(json.dumps(d)) == d


def test_cores_and_nodes_partition_the_allowed_cpus():
    b = corral.budget(env={})
    for groups in (b.cores, b.numa_nodes):
        flat = [c for g in groups for c in g]
        assert sorted(flat) == b.cpu_ids and len(flat) == len(set(flat))
        assert all(g for g in groups)


def test_taskset_one_cpu_gives_one():
    first = AFFINITY[0]
    d = budget_in_subprocess(prefix=["taskset", "-c", str(first)])
    assert d["budget"] == 1
    assert d["cpus"] == [first]
    assert d["cores"] == [[first]]


def test_corral_cpus_one_overrides_and_says_so():
    d = budget_in_subprocess("1")
    assert d["budget"] == 1
    assert d["decided_by"] == "CORRAL_CPUS"
    assert d["sources"]["CORRAL_CPUS"]["cpus"] == 1
    assert d["exceeds_hardware"] is False
    assert d["cpus"] == AFFINITY  # the CPUs it may run on are unchanged


def test_corral_cpus_above_the_hardware_is_flagged():
    big = max(64, len(AFFINITY) + 1)
    d = budget_in_subprocess(str(big))
    assert d["budget"] == big
    assert d["exceeds_hardware"] is True
    b = corral.budget(env={"CORRAL_CPUS": str(big)})
    assert b.cpus == big and b.exceeds_hardware
    assert any("bigger machine" in note for note in b.notes)


def test_process_environment_is_read_by_default(monkeypatch):
    monkeypatch.setenv("CORRAL_CPUS", "3")
    assert corral.budget().cpus == 3
    assert corral.budget().decided_by == "CORRAL_CPUS"
    monkeypatch.delenv("CORRAL_CPUS")
    assert corral.budget().decided_by != "CORRAL_CPUS"


@pytest.mark.parametrize("bad", ["abc", "0", "-1", "2.5", "", "4cpus"])
def test_malformed_corral_cpus_raises_value_error(bad):
    with pytest.raises(ValueError) as info:
        corral.budget(env={"CORRAL_CPUS": bad})
    message = str(info.value)
    assert "CORRAL_CPUS" in message and f'"{bad}"' in message


def test_env_may_be_the_value_itself():
    assert corral.budget(env="3").cpus == 3
    with pytest.raises(ValueError, match="CORRAL_CPUS"):
        corral.budget(env="2.5")


def test_malformed_corral_cpus_in_the_environment(monkeypatch):
    monkeypatch.setenv("CORRAL_CPUS", "abc")
    with pytest.raises(ValueError, match='CORRAL_CPUS="abc" is not a valid CPU count'):
        corral.budget()


def write(root, relative: str, text: str) -> None:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


@pytest.fixture
def fake_v2(tmp_path):
    """A cgroup v2 tree with this process in /system.slice/app.scope."""
    write(tmp_path, "proc/self/cgroup", "0::/system.slice/app.scope\n")
    write(tmp_path, "proc/self/mountinfo",
          "30 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n")
    (tmp_path / "sys/fs/cgroup/system.slice/app.scope").mkdir(parents=True)
    return tmp_path


def test_fake_tree_quota_of_a_fifth_gives_one(fake_v2):
    write(fake_v2, "sys/fs/cgroup/system.slice/cpu.max", "20000 100000\n")
    b = corral.budget(env={}, proc_root=fake_v2 / "proc", sys_root=str(fake_v2 / "sys"))
    assert b.cpus == 1
    quota = b.sources[1]
    assert quota.name == "cgroup v2 cpu.max" and quota.value == 1
    assert quota.path == str(fake_v2 / "sys/fs/cgroup/system.slice/cpu.max")
    if len(AFFINITY) > 1:
        assert b.decided_by == "cgroup v2 cpu.max"
    # No topology files in the fake /sys: one core per CPU, one node, and notes that say so.
    assert b.cores == [[c] for c in b.cpu_ids]
    assert b.numa_nodes == [b.cpu_ids]
    assert any("own core" in n for n in b.notes) and any("node 0" in n for n in b.notes)


def test_fake_tree_garbage_is_skipped_with_a_reason(fake_v2):
    write(fake_v2, "sys/fs/cgroup/system.slice/app.scope/cpu.max", "lots\n")
    b = corral.budget(env={}, proc_root=fake_v2 / "proc", sys_root=fake_v2 / "sys")
    quota = b.sources[1]
    assert quota.skipped and quota.value is None
    assert "lots" in quota.detail and "cpu.max" in quota.detail
    assert b.cpus == len(AFFINITY) and b.decided_by == "affinity"


def test_repr_names_the_budget_and_its_source():
    text = repr(corral.budget(env={}))
    assert text.startswith("Budget(cpus=") and "decided_by=" in text
