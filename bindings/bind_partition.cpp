// corral._core.partition_cpus / partition_order: the static partition of a CPU budget for the
// workers of a process pool (see cpp/include/corral/partition.hpp).
#include <nanobind/stl/vector.h>

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "bindings.hpp"
#include "corral/partition.hpp"

namespace corral::bindings {

namespace {

cpu_set to_cpu_set(const std::vector<int>& ids) {
  cpu_set set;
  for (const int id : ids) {
    if (id < 0 || id > cpu_set::max_cpu_id)
      throw std::invalid_argument("partition: bad CPU id " + std::to_string(id));
    set.add(id);
  }
  return set;
}

// Python describes a topology as lists (what corral.budget() gives): cores as sibling lists,
// NUMA nodes as CPU lists.
cpu_topology to_topology(const std::vector<std::vector<int>>& cores,
                         const std::vector<std::vector<int>>& numa_nodes) {
  cpu_topology topology;
  for (const auto& core : cores) topology.cores.push_back({to_cpu_set(core), -1});
  int id = 0;
  for (const auto& node : numa_nodes) topology.numa_nodes.push_back({id++, to_cpu_set(node)});
  return topology;
}

}  // namespace

void bind_partition(nb::module_& m) {
  m.def(
      "partition_cpus",
      [](const std::vector<std::vector<int>>& cores,
         const std::vector<std::vector<int>>& numa_nodes, std::int64_t workers, double factor) {
        if (workers < 1) {
          throw std::invalid_argument("partition: workers must be at least 1 (got " +
                                      std::to_string(workers) + ")");
        }
        return partition_cpus(to_topology(cores, numa_nodes), static_cast<std::size_t>(workers),
                              factor);
      },
      nb::arg("cores"), nb::arg("numa_nodes"), nb::arg("workers"), nb::arg("factor") = 1.0,
      "One CPU list per worker: disjoint while workers <= CPUs, SMT siblings and NUMA nodes kept\n"
      "together, round robin when workers > CPUs, each widened to ceil(size * factor) CPUs.\n"
      "Raises ValueError for workers < 1, factor < 1 and inconsistent topologies.");
  m.def(
      "partition_order",
      [](const std::vector<std::vector<int>>& cores,
         const std::vector<std::vector<int>>& numa_nodes) {
        return partition_order(to_topology(cores, numa_nodes));
      },
      nb::arg("cores"), nb::arg("numa_nodes"),
      "The CPUs in partition order: node by node, core by core, siblings together.");
}

}  // namespace corral::bindings
