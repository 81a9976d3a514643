"""Auto thread count: physical cores of the affinity mask, capped by the cgroup quota."""

import pytest

from csm_cpu import topology
from csm_cpu.backend import default_threads, resolve_threads


def _fake_sysfs(tmp_path, cores):
    """cpu i on (package, core) cores[i]."""
    for i, (pkg, core) in enumerate(cores):
        top = tmp_path / f"cpu{i}" / "topology"
        top.mkdir(parents=True)
        (top / "physical_package_id").write_text(f"{pkg}\n")
        (top / "core_id").write_text(f"{core}\n")
    return tmp_path


def test_smt_siblings_count_once(tmp_path):
    # 2 packages x 2 cores x 2 SMT threads; core ids repeat across packages
    sysfs = _fake_sysfs(tmp_path, [(0, 0), (0, 1), (1, 0), (1, 1), (0, 0), (0, 1), (1, 0), (1, 1)])
    assert topology.physical_cores(list(range(8)), sysfs) == 4
    assert topology.physical_cores([0, 4], sysfs) == 1  # one core's two siblings
    assert topology.physical_cores([0, 2, 5], sysfs) == 3
    assert topology.physical_cores([0, 9], sysfs) == 2  # unreadable topology: count the CPUs


def test_cgroup_quota(tmp_path):
    assert topology.cgroup_cpu_limit(tmp_path) is None
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert topology.cgroup_cpu_limit(tmp_path) is None
    (tmp_path / "cpu.max").write_text("250000 100000\n")
    assert topology.cgroup_cpu_limit(tmp_path) == 2.5
    v1 = tmp_path / "v1"
    (v1 / "cpu").mkdir(parents=True)
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    (v1 / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert topology.cgroup_cpu_limit(v1) is None
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("300000\n")
    assert topology.cgroup_cpu_limit(v1) == 3.0


def test_auto_threads_caps(monkeypatch):
    monkeypatch.setattr(topology, "allowed_cpus", lambda: list(range(16)))
    monkeypatch.setattr(topology, "physical_cores", lambda cpus: len(cpus) // 2)
    monkeypatch.setattr(topology, "cgroup_cpu_limit", lambda: None)
    assert topology.auto_threads() == 8
    monkeypatch.setattr(topology, "cgroup_cpu_limit", lambda: 2.5)
    assert topology.auto_threads() == 3
    monkeypatch.setattr(topology, "cgroup_cpu_limit", lambda: 0.2)
    assert topology.auto_threads() == 1
    d = topology.describe()
    assert d["allowed_cpus"] == 16 and d["physical_cores"] == 8 and d["auto_threads"] == 1


def test_thread_arguments(monkeypatch):
    monkeypatch.delenv("CSM_NUM_THREADS", raising=False)
    assert default_threads() == topology.auto_threads() >= 1
    monkeypatch.setenv("CSM_NUM_THREADS", "auto")
    assert default_threads() == topology.auto_threads()
    assert resolve_threads("auto") == topology.auto_threads()
    assert resolve_threads(3) == resolve_threads("3") == 3
    for bad in (0, -1, 2.5, "two", True, "0"):
        with pytest.raises(ValueError, match="integer >= 1 or 'auto'"):
            resolve_threads(bad)
