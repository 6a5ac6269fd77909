// Topology of the CPUs a process may use: physical cores with their SMT siblings, and
// NUMA nodes, read from sysfs. Static partitions keep siblings and nodes together.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include "corral/cpu_set.hpp"

namespace corral {

struct physical_core {
  cpu_set cpus;         // the SMT siblings among the allowed CPUs (one CPU without SMT)
  int package_id = -1;  // physical_package_id (socket); -1 when unknown
};

struct numa_node {
  int id = 0;    // nodeN; -1 for allowed CPUs that no node lists
  cpu_set cpus;  // the allowed CPUs of this node (never empty)
};

struct cpu_topology {
  std::vector<physical_core> cores;   // ordered by first CPU
  std::vector<numa_node> numa_nodes;  // ordered by id; nodes without allowed CPUs are left out
  std::vector<std::string> notes;     // what was missing and what was assumed instead
};

// Reads sys_root/devices/system/cpu/cpuN/topology/{core_cpus_list|thread_siblings_list,
// physical_package_id} and sys_root/devices/system/node/nodeN/cpulist. Missing or garbage
// files never throw: each CPU then is its own core, all CPUs are in node 0, and a note says so.
cpu_topology read_topology(const cpu_set& allowed, const std::filesystem::path& sys_root = "/sys");

}  // namespace corral
