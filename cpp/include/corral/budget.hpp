// The CPU budget of a process (docs/architecture.md invariant 1): the CPUs it may use (affinity
// mask within its cpusets), capped by the CPU quota of its own cgroup and every ancestor (v2 and
// v1), replaced by CORRAL_CPUS when that is set. Every figure says where it came from.
#pragma once

#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "corral/budget_source.hpp"
#include "corral/cpu_set.hpp"
#include "corral/topology.hpp"

namespace corral {

inline constexpr const char* budget_env_var = "CORRAL_CPUS";

// The value of CORRAL_CPUS in this process's environment; nullopt when unset.
std::optional<std::string> environment_cpus();

// A whole number from 1 to cpu_set::max_cpu_id + 1 (surrounding blanks allowed). Anything
// else (0, -2, "abc", "2.5", "") throws std::invalid_argument naming the variable and value.
int parse_corral_cpus(std::string_view value);

// sched_getaffinity(0) with a mask that grows until it holds every possible CPU (more than
// 1024 included). Throws std::system_error when the kernel refuses.
cpu_set process_affinity();

struct budget_options {
  std::filesystem::path proc_root{"/proc"};
  std::filesystem::path sys_root{"/sys"};
  // CORRAL_CPUS: by default this process's value, read when the options are made.
  // Tests set a value, or std::nullopt for "not set".
  std::optional<std::string> env_cpus = environment_cpus();
  // Tests: this mask instead of sched_getaffinity(0).
  std::optional<cpu_set> affinity;
  // The topology costs a few sysfs reads per core; callers that only want the number skip it.
  bool with_topology = true;
  // Reuse what rarely changes from the previous call with the same roots: where the cgroup
  // file systems are mounted (mountinfo, while /proc/self/cgroup reads the same) and the
  // topology of the same CPUs. Quotas, cpusets, affinity and CORRAL_CPUS are read every time.
  // This takes a call from about 330 us to about 100 us on a VM with slow system calls.
  bool reuse_static_reads = true;
};

struct cpu_budget {
  int cpus = 1;            // the budget B: at least 1
  cpu_set cpu_ids;         // the CPUs this process may run on: affinity within the cgroup cpusets
  std::string decided_by;  // the name of the source that set `cpus`
  // CORRAL_CPUS is above cpu_ids.count(): emulating a bigger machine
  bool exceeds_hardware = false;
  // In this order: "affinity", "cgroup v2 cpu.max", "cgroup v2 cpuset.cpus.effective",
  // "cgroup v1 cpu.cfs_quota_us", "cgroup v1 cpuset.cpus", "CORRAL_CPUS". All always present.
  std::vector<budget_source> sources;
  cpu_topology topology;           // of cpu_ids (empty when options.with_topology is false)
  std::vector<std::string> notes;  // assumptions made (missing files, overrides)

  [[nodiscard]] const budget_source* source(std::string_view name) const;  // nullptr if none
};

// Reads everything afresh (cheap: a few small files). Throws std::invalid_argument for a
// malformed CORRAL_CPUS; unreadable or garbage /proc and /sys files never throw: the source
// is skipped and says why.
cpu_budget read_budget(const budget_options& options = {});

}  // namespace corral
