#include "corral/partition.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <utility>

namespace corral {

namespace {

// The CPUs in partition order, with where each core and each node starts in it.
struct ordered_cpus {
  std::vector<int> order;
  std::vector<std::size_t>
      core_begin;  // position in `order` of each core's first CPU; back() == order.size()
  std::vector<std::size_t>
      node_first_core;  // index of each node's first core; back() == number of cores

  [[nodiscard]] std::size_t cpus() const { return order.size(); }
  [[nodiscard]] std::size_t cores() const { return core_begin.size() - 1; }
  [[nodiscard]] std::size_t nodes() const { return node_first_core.size() - 1; }
  [[nodiscard]] std::size_t node_cores(std::size_t node) const {
    return node_first_core[node + 1] - node_first_core[node];
  }
  [[nodiscard]] std::size_t node_begin(std::size_t node) const {
    return core_begin[node_first_core[node]];
  }
  [[nodiscard]] std::size_t node_end(std::size_t node) const {
    return core_begin[node_first_core[node + 1]];
  }
};

// A run [begin, end) of positions in the partition order.
using run = std::pair<std::size_t, std::size_t>;

// Throws when a CPU is listed in two of `groups` (cores or nodes: `what`) or, given `empty_error`,
// when a group is empty; group by group, so the first fault met is the one reported.
template <class Group>
void check_disjoint(const std::vector<Group>& groups, const std::string& what,
                    const char* empty_error = nullptr) {
  cpu_set seen;
  for (const Group& group : groups) {
    if (empty_error != nullptr && group.cpus.empty()) throw std::invalid_argument(empty_error);
    for (const int cpu : group.cpus.ids()) {
      if (seen.contains(cpu)) {
        throw std::invalid_argument("partition: CPU " + std::to_string(cpu) + " is listed in two " +
                                    what);
      }
      seen.add(cpu);
    }
  }
}

ordered_cpus order_topology(const cpu_topology& topology) {
  if (topology.cores.empty()) throw std::invalid_argument("partition: the topology has no CPU");
  check_disjoint(topology.cores, "cores", "partition: the topology has an empty core");
  check_disjoint(topology.numa_nodes, "NUMA nodes");

  // Cores by node (in the nodes' given order), then by their first CPU; the extra last node
  // holds cores whose first CPU no node lists.
  std::vector<std::vector<const physical_core*>> by_node(topology.numa_nodes.size() + 1);
  for (const physical_core& core : topology.cores) {
    const int first = core.cpus.first();
    std::size_t node = topology.numa_nodes.size();
    for (std::size_t n = 0; n < topology.numa_nodes.size(); ++n) {
      if (topology.numa_nodes[n].cpus.contains(first)) {
        node = n;
        break;
      }
    }
    by_node[node].push_back(&core);
  }

  ordered_cpus result;
  for (auto& cores : by_node) {
    if (cores.empty()) continue;
    std::sort(cores.begin(), cores.end(), [](const physical_core* a, const physical_core* b) {
      return a->cpus.first() < b->cpus.first();
    });
    result.node_first_core.push_back(result.core_begin.size());
    for (const physical_core* core : cores) {
      result.core_begin.push_back(result.order.size());
      for (const int cpu : core->cpus.ids()) result.order.push_back(cpu);
    }
  }
  result.node_first_core.push_back(result.core_begin.size());
  result.core_begin.push_back(result.order.size());
  return result;
}

// Splits `units` things into `parts` contiguous groups whose sizes differ by at most one
// (the larger ones first); returns the size of each group.
std::vector<std::size_t> balanced_sizes(std::size_t units, std::size_t parts) {
  std::vector<std::size_t> sizes(parts, units / parts);
  for (std::size_t i = 0; i < units % parts; ++i) ++sizes[i];
  return sizes;
}

// Workers per node, in proportion to each node's capacity (cores or CPUs), at least one and
// at most the capacity each (largest remainder). Needs nodes <= workers <= sum(capacity).
std::vector<std::size_t> apportion(std::size_t workers, const std::vector<std::size_t>& capacity) {
  std::size_t total = 0;
  for (const std::size_t c : capacity) total += c;
  std::vector<std::size_t> share(capacity.size());
  std::size_t given = 0;
  for (std::size_t n = 0; n < capacity.size(); ++n) {
    share[n] = std::clamp<std::size_t>(workers * capacity[n] / total, 1, capacity[n]);
    given += share[n];
  }
  // How far below its exact quota a node is, scaled by `total` to stay in integers.
  const auto deficit = [&](std::size_t n) {
    return static_cast<std::int64_t>(workers * capacity[n]) -
           static_cast<std::int64_t>(share[n] * total);
  };
  while (given < workers) {
    std::size_t best = capacity.size();
    for (std::size_t n = 0; n < capacity.size(); ++n) {
      if (share[n] < capacity[n] && (best == capacity.size() || deficit(n) > deficit(best)))
        best = n;
    }
    ++share[best];
    ++given;
  }
  while (given > workers) {
    std::size_t best = capacity.size();
    for (std::size_t n = 0; n < capacity.size(); ++n) {
      if (share[n] > 1 && (best == capacity.size() || deficit(n) < deficit(best))) best = n;
    }
    --share[best];
    --given;
  }
  return share;
}

// Fewer workers than nodes: every worker gets whole nodes, the cut between workers k-1 and k
// at the node boundary nearest to k/W of all cores.
std::vector<run> runs_of_whole_nodes(const ordered_cpus& cpus, std::size_t workers) {
  const std::size_t nodes = cpus.nodes();
  std::vector<run> runs;
  std::size_t previous = 0;  // the node where the current worker starts
  for (std::size_t k = 1; k <= workers; ++k) {
    std::size_t cut = nodes;
    if (k < workers) {
      const double target = static_cast<double>(k * cpus.cores()) / static_cast<double>(workers);
      double best_distance = -1;
      for (std::size_t b = previous + 1; b <= nodes - (workers - k); ++b) {
        const double distance = std::fabs(static_cast<double>(cpus.node_first_core[b]) - target);
        if (best_distance < 0 || distance < best_distance) {
          best_distance = distance;
          cut = b;
        }
      }
    }
    runs.emplace_back(cpus.node_begin(previous), cpus.node_begin(cut));
    previous = cut;
  }
  return runs;
}

// At least as many workers as nodes and at most as many as CPUs: no run crosses a node, and
// within a node whole cores go to a worker while the node has no more workers than cores.
std::vector<run> runs_within_nodes(const ordered_cpus& cpus, std::size_t workers) {
  const bool whole_cores = workers <= cpus.cores();
  std::vector<std::size_t> capacity(cpus.nodes());
  for (std::size_t n = 0; n < cpus.nodes(); ++n) {
    capacity[n] = whole_cores ? cpus.node_cores(n) : cpus.node_end(n) - cpus.node_begin(n);
  }
  const std::vector<std::size_t> share = apportion(workers, capacity);
  std::vector<run> runs;
  for (std::size_t n = 0; n < cpus.nodes(); ++n) {
    if (share[n] <= cpus.node_cores(n)) {
      std::size_t core = cpus.node_first_core[n];
      for (const std::size_t size : balanced_sizes(cpus.node_cores(n), share[n])) {
        runs.emplace_back(cpus.core_begin[core], cpus.core_begin[core + size]);
        core += size;
      }
    } else {
      std::size_t begin = cpus.node_begin(n);
      for (const std::size_t size : balanced_sizes(cpus.node_end(n) - begin, share[n])) {
        runs.emplace_back(begin, begin + size);
        begin += size;
      }
    }
  }
  return runs;
}

}  // namespace

std::vector<int> partition_order(const cpu_topology& topology) {
  return order_topology(topology).order;
}

std::vector<std::vector<int>> partition_cpus(const cpu_topology& topology, std::size_t workers,
                                             double factor) {
  if (workers == 0) throw std::invalid_argument("partition: workers must be at least 1 (got 0)");
  if (!std::isfinite(factor) || factor < 1.0) {
    throw std::invalid_argument(
        "partition: the oversubscription factor must be a finite number >= 1 (got " +
        std::to_string(factor) + ")");
  }
  const ordered_cpus cpus = order_topology(topology);
  const std::size_t total = cpus.cpus();

  std::vector<run> runs;
  if (workers > total) {
    for (std::size_t w = 0; w < workers; ++w) runs.emplace_back(w % total, w % total + 1);
  } else if (workers < cpus.nodes()) {
    runs = runs_of_whole_nodes(cpus, workers);
  } else {
    runs = runs_within_nodes(cpus, workers);
  }

  std::vector<std::vector<int>> sets;
  sets.reserve(runs.size());
  for (const auto& [begin, end] : runs) {
    const std::size_t size = end - begin;
    // The epsilon keeps 10 * 1.1 at 11 CPUs, not 12.
    const double widened = std::ceil(static_cast<double>(size) * factor - 1e-9);
    const std::size_t wanted =
        widened >= static_cast<double>(total) ? total : static_cast<std::size_t>(widened);
    const std::size_t count = std::max(size, wanted);
    std::vector<int> set;
    set.reserve(count);
    for (std::size_t i = 0; i < count; ++i) set.push_back(cpus.order[(begin + i) % total]);
    std::sort(set.begin(), set.end());
    sets.push_back(std::move(set));
  }
  return sets;
}

cpu_topology flat_topology(const cpu_set& cpus) {
  cpu_topology topology;
  for (const int cpu : cpus.ids()) topology.cores.push_back({cpu_set::of({cpu}), -1});
  if (!cpus.empty()) topology.numa_nodes.push_back({0, cpus});
  return topology;
}

}  // namespace corral
