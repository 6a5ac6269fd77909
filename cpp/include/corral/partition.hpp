// Static partitions of a CPU budget for the workers of a process pool (SMP's idea;
// docs/architecture.md invariant 5): one CPU set per worker, each applied as that worker's affinity
// and thread limits.
//
// The CPUs are first put in partition order: NUMA node by node, core by core, SMT siblings
// side by side. Every worker then gets a contiguous run of that order, so that
//  - workers <= CPUs: the sets are disjoint and cover every CPU; whole NUMA nodes go to one
//    worker when workers < nodes, otherwise every node gets a number of workers in proportion
//    to its size and no set crosses a node; whole cores go to a worker when workers <= cores;
//  - workers > CPUs: every worker gets one CPU, round robin, so every CPU serves
//    floor(W/N) or ceil(W/N) workers;
//  - an oversubscription factor f > 1 widens every set to min(N, ceil(size * f)) CPUs by
//    taking the CPUs that follow it in partition order (wrapping around).
#pragma once

#include <cstddef>
#include <vector>

#include "corral/cpu_set.hpp"
#include "corral/topology.hpp"

namespace corral {

// The CPUs of `topology` in partition order. A core belongs to the node that holds its first
// CPU; cores whose first CPU no node lists form one extra node at the end.
// Throws std::invalid_argument when there is no CPU, a core is empty, or a CPU is listed in
// two cores or two nodes.
std::vector<int> partition_order(const cpu_topology& topology);

// One CPU set per worker (ids ascending), as described above. Throws std::invalid_argument
// for workers == 0, a factor that is below 1 or not finite, and the topologies that
// partition_order refuses.
std::vector<std::vector<int>> partition_cpus(const cpu_topology& topology, std::size_t workers,
                                             double factor = 1.0);

// A topology without structure: every CPU its own core, all in NUMA node 0. For callers
// that know only a CPU list (and for tests).
cpu_topology flat_topology(const cpu_set& cpus);

}  // namespace corral
