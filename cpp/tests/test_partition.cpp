// Static partitions on fake topologies: the machine running the tests has too few CPUs to
// show anything, so every shape (SMT, NUMA, interleaved sibling numbering) is built here.
#include "corral/partition.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <set>
#include <stdexcept>
#include <vector>

namespace {

using corral::cpu_set;
using corral::cpu_topology;
using sets = std::vector<std::vector<int>>;

cpu_set to_set(const std::vector<int>& ids) {
  cpu_set s;
  for (const int id : ids) s.add(id);
  return s;
}

cpu_topology make_topology(const sets& cores, const sets& nodes) {
  cpu_topology t;
  for (const auto& core : cores) t.cores.push_back({to_set(core), 0});
  int id = 0;
  for (const auto& node : nodes) t.numa_nodes.push_back({id++, to_set(node)});
  return t;
}

// `nodes` NUMA nodes of `cores_per_node` cores with `smt` siblings each, numbered like most
// Linux x86 machines: sibling k of core c is CPU c + k * (total cores).
cpu_topology interleaved(int nodes, int cores_per_node, int smt) {
  const int total_cores = nodes * cores_per_node;
  sets cores, node_cpus(nodes);
  for (int c = 0; c < total_cores; ++c) {
    std::vector<int> core;
    for (int k = 0; k < smt; ++k) core.push_back(c + k * total_cores);
    for (const int cpu : core) node_cpus[c / cores_per_node].push_back(cpu);
    cores.push_back(core);
  }
  return make_topology(cores, node_cpus);
}

std::vector<int> all_cpus(const cpu_topology& t) {
  std::vector<int> ids;
  for (const auto& core : t.cores) {
    for (const int id : core.cpus.ids()) ids.push_back(id);
  }
  std::sort(ids.begin(), ids.end());
  return ids;
}

void expect_disjoint_cover(const sets& parts, const cpu_topology& t) {
  std::vector<int> seen;
  for (const auto& part : parts) {
    EXPECT_FALSE(part.empty());
    seen.insert(seen.end(), part.begin(), part.end());
  }
  std::sort(seen.begin(), seen.end());
  EXPECT_TRUE(std::adjacent_find(seen.begin(), seen.end()) == seen.end()) << "a CPU is in two sets";
  EXPECT_EQ(seen, all_cpus(t)) << "the sets do not cover the budget";
}

// The index of the set that holds `cpu`; -1 when none.
int owner(const sets& parts, int cpu) {
  for (std::size_t i = 0; i < parts.size(); ++i) {
    if (std::find(parts[i].begin(), parts[i].end(), cpu) != parts[i].end())
      return static_cast<int>(i);
  }
  return -1;
}

TEST(Partition, DisjointAndCoveringForEveryWorkerCountUpToTheCpus) {
  const cpu_topology t = interleaved(2, 4, 2);  // 16 CPUs
  for (std::size_t w = 1; w <= 16; ++w) {
    SCOPED_TRACE(w);
    const sets parts = corral::partition_cpus(t, w);
    ASSERT_EQ(parts.size(), w);
    expect_disjoint_cover(parts, t);
  }
}

TEST(Partition, SiblingsStayTogetherWhileWorkersFitTheCores) {
  const cpu_topology t = interleaved(2, 4, 2);  // 8 cores
  for (std::size_t w = 1; w <= 8; ++w) {
    SCOPED_TRACE(w);
    const sets parts = corral::partition_cpus(t, w);
    for (const auto& core : t.cores) {
      const std::vector<int> ids = core.cpus.ids();
      for (const int cpu : ids) EXPECT_EQ(owner(parts, cpu), owner(parts, ids.front()));
    }
  }
  // One worker per core: each worker gets exactly one core (both siblings).
  const sets parts = corral::partition_cpus(t, 8);
  for (const auto& part : parts) {
    ASSERT_EQ(part.size(), 2u);
    EXPECT_EQ(part[1] - part[0], 8) << "not siblings";
  }
}

TEST(Partition, WholeCoresAreSharedOutEvenly) {
  const cpu_topology t = interleaved(1, 6, 2);  // 6 cores, 12 CPUs
  const sets parts = corral::partition_cpus(t, 4);
  std::multiset<std::size_t> sizes;
  for (const auto& part : parts) sizes.insert(part.size());
  EXPECT_EQ(sizes, (std::multiset<std::size_t>{2, 2, 4, 4}));  // 2+2+1+1 cores
}

TEST(Partition, MoreWorkersThanCoresSplitsCoresButStaysInTheirNode) {
  const cpu_topology t = interleaved(2, 2, 2);  // 4 cores, 8 CPUs, nodes {0,1,4,5} {2,3,6,7}
  for (std::size_t w = 5; w <= 8; ++w) {
    SCOPED_TRACE(w);
    const sets parts = corral::partition_cpus(t, w);
    expect_disjoint_cover(parts, t);
    for (const auto& part : parts) {
      const bool node0 = to_set(part).is_subset_of(t.numa_nodes[0].cpus);
      const bool node1 = to_set(part).is_subset_of(t.numa_nodes[1].cpus);
      EXPECT_TRUE(node0 || node1) << "a set crosses NUMA nodes";
    }
  }
}

TEST(Partition, NumaNodesStayTogether) {
  const cpu_topology t = interleaved(4, 2, 2);  // 4 nodes of 2 cores
  // Fewer workers than nodes: every node belongs to one worker.
  for (std::size_t w = 1; w < 4; ++w) {
    SCOPED_TRACE(w);
    const sets parts = corral::partition_cpus(t, w);
    expect_disjoint_cover(parts, t);
    for (const auto& node : t.numa_nodes) {
      const int first_owner = owner(parts, node.cpus.first());
      for (const int cpu : node.cpus.ids()) EXPECT_EQ(owner(parts, cpu), first_owner);
    }
  }
  EXPECT_EQ(corral::partition_cpus(t, 2),
            (sets{{0, 1, 2, 3, 8, 9, 10, 11}, {4, 5, 6, 7, 12, 13, 14, 15}}));
  // At least as many workers as nodes: no set crosses a node.
  for (std::size_t w = 4; w <= 16; ++w) {
    SCOPED_TRACE(w);
    for (const auto& part : corral::partition_cpus(t, w)) {
      const int node = std::find_if(t.numa_nodes.begin(), t.numa_nodes.end(), [&](const auto& n) {
                         return n.cpus.contains(part.front());
                       })->id;
      EXPECT_TRUE(to_set(part).is_subset_of(t.numa_nodes[static_cast<std::size_t>(node)].cpus));
    }
  }
}

TEST(Partition, WorkersGoToNodesInProportionToTheirSize) {
  // Node 0: 6 cores (0-5), node 1: 2 cores (6-7). Four workers: three in node 0, one in node 1.
  sets cores;
  for (int c = 0; c < 8; ++c) cores.push_back({c});
  const cpu_topology t = make_topology(cores, {{0, 1, 2, 3, 4, 5}, {6, 7}});
  const sets parts = corral::partition_cpus(t, 4);
  EXPECT_EQ(parts, (sets{{0, 1}, {2, 3}, {4, 5}, {6, 7}}));
  // Three nodes of sizes 5, 1, 1 and four workers: each node keeps at least one.
  const cpu_topology skewed = make_topology(cores, {{0, 1, 2, 3, 4}, {5}, {6, 7}});
  const sets skewed_parts = corral::partition_cpus(skewed, 4);
  expect_disjoint_cover(skewed_parts, skewed);
  EXPECT_EQ(skewed_parts, (sets{{0, 1, 2}, {3, 4}, {5}, {6, 7}}));
}

TEST(Partition, OrderIsNodeThenCoreThenSibling) {
  const cpu_topology t = interleaved(2, 2, 2);
  EXPECT_EQ(corral::partition_order(t), (std::vector<int>{0, 4, 1, 5, 2, 6, 3, 7}));
}

TEST(Partition, CpusInNoNodeFormAnExtraLastNode) {
  const cpu_topology t = make_topology({{0}, {1}, {2}, {3}}, {{2, 3}});
  EXPECT_EQ(corral::partition_order(t), (std::vector<int>{2, 3, 0, 1}));
  EXPECT_EQ(corral::partition_cpus(t, 2), (sets{{2, 3}, {0, 1}}));
}

TEST(Partition, MoreWorkersThanCpusSpreadsRoundRobin) {
  const cpu_topology t = interleaved(1, 3, 1);  // 3 CPUs
  for (std::size_t w = 4; w <= 11; ++w) {
    SCOPED_TRACE(w);
    const sets parts = corral::partition_cpus(t, w);
    ASSERT_EQ(parts.size(), w);
    std::map<int, std::size_t> load;
    for (const auto& part : parts) {
      ASSERT_EQ(part.size(), 1u);
      ++load[part[0]];
    }
    ASSERT_EQ(load.size(), 3u);
    for (const auto& [cpu, n] : load) {
      EXPECT_TRUE(n == w / 3 || n == (w + 2) / 3) << "CPU " << cpu << " serves " << n;
    }
  }
}

TEST(Partition, FactorWidensEachSetWithItsNeighbours) {
  const cpu_topology t = corral::flat_topology(cpu_set::range(0, 7));
  const sets plain = corral::partition_cpus(t, 4);
  const sets wide = corral::partition_cpus(t, 4, 1.5);  // 2 CPUs each -> 3
  ASSERT_EQ(wide.size(), 4u);
  for (std::size_t i = 0; i < 4; ++i) {
    EXPECT_EQ(wide[i].size(), 3u);
    EXPECT_TRUE(to_set(plain[i]).is_subset_of(to_set(wide[i])));
  }
  EXPECT_EQ(wide[0], (std::vector<int>{0, 1, 2}));
  EXPECT_EQ(wide[3], (std::vector<int>{0, 6, 7}));  // wraps around
  // Capped at every CPU, and no floating point surprise (10 * 1.1 is 11, not 12).
  for (const auto& part : corral::partition_cpus(t, 2, 100.0)) EXPECT_EQ(part.size(), 8u);
  const cpu_topology twenty = corral::flat_topology(cpu_set::range(0, 19));
  for (const auto& part : corral::partition_cpus(twenty, 2, 1.1)) EXPECT_EQ(part.size(), 11u);
  // Factor with more workers than CPUs: each set grows from one CPU to ceil(f).
  for (const auto& part : corral::partition_cpus(t, 20, 2.0)) EXPECT_EQ(part.size(), 2u);
}

TEST(Partition, FactorTakesSiblingsFirst) {
  const cpu_topology t = interleaved(1, 4, 2);  // order 0,4,1,5,2,6,3,7
  // 8 workers, one CPU each; doubling adds the next CPU in order: the sibling for even workers.
  const sets wide = corral::partition_cpus(t, 8, 2.0);
  EXPECT_EQ(wide[0], (std::vector<int>{0, 4}));
  EXPECT_EQ(wide[2], (std::vector<int>{1, 5}));
}

TEST(Partition, OneCpu) {
  const cpu_topology t = corral::flat_topology(cpu_set::of({5}));
  EXPECT_EQ(corral::partition_cpus(t, 1), (sets{{5}}));
  EXPECT_EQ(corral::partition_cpus(t, 3), (sets{{5}, {5}, {5}}));
  EXPECT_EQ(corral::partition_cpus(t, 2, 4.0), (sets{{5}, {5}}));
}

TEST(Partition, BadInputIsAClearError) {
  const cpu_topology t = corral::flat_topology(cpu_set::range(0, 3));
  const auto message_of = [](auto&& call) -> std::string {
    try {
      call();
    } catch (const std::invalid_argument& e) {
      return e.what();
    }
    return "no exception";
  };
  EXPECT_NE(
      message_of([&] { (void)corral::partition_cpus(t, 0); }).find("workers must be at least 1"),
      std::string::npos);
  EXPECT_NE(message_of([&] { (void)corral::partition_cpus(t, 2, 0.5); }).find("factor"),
            std::string::npos);
  EXPECT_THROW((void)corral::partition_cpus(t, 2, std::nan("")), std::invalid_argument);
  EXPECT_THROW((void)corral::partition_cpus(t, 2, std::numeric_limits<double>::infinity()),
               std::invalid_argument);
  EXPECT_NE(message_of([] { (void)corral::partition_cpus(cpu_topology{}, 1); }).find("no CPU"),
            std::string::npos);
  EXPECT_NE(message_of([] {
              (void)corral::partition_cpus(make_topology({{0, 1}, {1}}, {}), 1);
            }).find("CPU 1 is listed in two cores"),
            std::string::npos);
  EXPECT_THROW((void)corral::partition_cpus(make_topology({{0}, {1}}, {{0, 1}, {1}}), 1),
               std::invalid_argument);
  cpu_topology empty_core;
  empty_core.cores.push_back({});
  EXPECT_THROW((void)corral::partition_cpus(empty_core, 1), std::invalid_argument);
}

TEST(Partition, FlatTopologyIsOneNodeOfSingleCpuCores) {
  const cpu_topology t = corral::flat_topology(cpu_set::of({1, 3, 4}));
  ASSERT_EQ(t.cores.size(), 3u);
  ASSERT_EQ(t.numa_nodes.size(), 1u);
  EXPECT_EQ(t.numa_nodes[0].cpus, cpu_set::of({1, 3, 4}));
  EXPECT_EQ(corral::partition_cpus(t, 3), (sets{{1}, {3}, {4}}));
  EXPECT_TRUE(corral::flat_topology(cpu_set{}).numa_nodes.empty());
}

}  // namespace
