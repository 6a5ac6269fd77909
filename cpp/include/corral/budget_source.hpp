// One input to the CPU budget and what it said: every figure says where it came from.
#pragma once

#include <optional>
#include <string>

#include "corral/cpu_set.hpp"

namespace corral {

struct budget_source {
  // "affinity", "cgroup v2 cpu.max", "cgroup v2 cpuset.cpus.effective",
  // "cgroup v1 cpu.cfs_quota_us", "cgroup v1 cpuset.cpus" or "CORRAL_CPUS".
  std::string name;
  // The number of CPUs this source allows; nullopt when it sets no limit, is absent,
  // or was skipped.
  std::optional<int> cpus;
  // For the CPU-set sources (affinity, cpusets): which CPUs.
  std::optional<cpu_set> cpu_ids;
  // The file it read (for nested cgroups: the one that set the limit), or what was called.
  std::string path;
  // What it read, or, when skipped, why (unreadable file, garbage content).
  std::string detail;
  bool skipped = false;
};

}  // namespace corral
