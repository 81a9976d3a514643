"""How many kernel threads to run: one per physical core this process may use.

The decode is memory-bound and every phase ends at a barrier, so a second thread on a core's
SMT sibling adds a straggler rather than bandwidth, and a thread beyond the CPU quota of a
container is preempted mid-phase (the whole team then waits for it). Hence: the CPUs of the
affinity mask (os.sched_getaffinity: taskset, cpusets), counted once per physical core (Linux
sysfs topology: package + core id), capped by the cgroup CPU quota (cgroup v2 cpu.max, v1
cfs_quota/period), at least 1. Elsewhere (macOS, Windows): os.cpu_count().
"""

from __future__ import annotations

import math
import os
from pathlib import Path

__all__ = ["allowed_cpus", "physical_cores", "cgroup_cpu_limit", "auto_threads", "describe"]

_SYS = Path("/sys/devices/system/cpu")


def allowed_cpus() -> list[int]:
    """CPU ids this process may run on."""
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return list(range(os.cpu_count() or 1))


def physical_cores(cpus: list[int], sysfs: Path = _SYS) -> int:
    """Distinct physical cores among cpus (SMT siblings count once); len(cpus) where the
    topology is not readable."""
    cores = set()
    for c in cpus:
        top = sysfs / f"cpu{c}" / "topology"
        try:
            cores.add((top.joinpath("physical_package_id").read_text().strip(),
                       top.joinpath("core_id").read_text().strip()))
        except OSError:
            return len(cpus)
    return len(cores) or len(cpus)


def cgroup_cpu_limit(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """CPUs the cgroup quota allows (e.g. 2.5), None when unlimited or unknown."""
    try:
        quota, period = root.joinpath("cpu.max").read_text().split()[:2]  # cgroup v2: "max 100000"
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota = int(root.joinpath("cpu", "cpu.cfs_quota_us").read_text())  # cgroup v1
        period = int(root.joinpath("cpu", "cpu.cfs_period_us").read_text())
        return None if quota <= 0 or period <= 0 else quota / period
    except (OSError, ValueError):
        return None


def auto_threads() -> int:
    """One thread per physical core of the affinity mask, capped by the cgroup quota (rounded up)."""
    cpus = allowed_cpus()
    n = physical_cores(cpus)
    limit = cgroup_cpu_limit()
    if limit is not None:
        n = min(n, max(1, math.ceil(limit)))
    return max(1, n)


def describe() -> dict:
    """What auto_threads saw (for `csm info`, benchmarks and bug reports)."""
    cpus = allowed_cpus()
    return {"allowed_cpus": len(cpus), "physical_cores": physical_cores(cpus),
            "cgroup_cpu_limit": cgroup_cpu_limit(), "auto_threads": auto_threads()}
