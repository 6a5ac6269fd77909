#include "corral/topology.hpp"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "fake_tree.hpp"

using namespace corral;
using corral::testing::fake_tree;

namespace {

// Four CPUs on two cores with SMT (siblings 0+2 and 1+3, as Intel numbers them), one package,
// two NUMA nodes.
void write_smt_machine(const fake_tree& tree, const char* siblings_file = "core_cpus_list") {
  const char* siblings[] = {"0,2", "1,3", "0,2", "1,3"};
  for (int cpu = 0; cpu < 4; ++cpu) {
    const std::string dir = "sys/devices/system/cpu/cpu" + std::to_string(cpu) + "/topology/";
    tree.write(dir + siblings_file, std::string(siblings[cpu]) + "\n");
    tree.write(dir + "physical_package_id", "0\n");
  }
  tree.write("sys/devices/system/node/node0/cpulist", "0-1\n");
  tree.write("sys/devices/system/node/node1/cpulist", "2-3\n");
  tree.write("sys/devices/system/node/online", "0-1\n");  // not a node directory: ignored
}

std::vector<std::vector<int>> core_ids(const cpu_topology& topology) {
  std::vector<std::vector<int>> out;
  for (const physical_core& core : topology.cores) out.push_back(core.cpus.ids());
  return out;
}

std::vector<std::vector<int>> node_ids(const cpu_topology& topology) {
  std::vector<std::vector<int>> out;
  for (const numa_node& node : topology.numa_nodes) out.push_back(node.cpus.ids());
  return out;
}

}  // namespace

TEST(Topology, GroupsSmtSiblingsIntoCores) {
  fake_tree tree;
  write_smt_machine(tree);
  const cpu_topology topology = read_topology(cpu_set::parse("0-3"), tree.sys());
  EXPECT_EQ(core_ids(topology), (std::vector<std::vector<int>>{{0, 2}, {1, 3}}));
  EXPECT_EQ(topology.cores[0].package_id, 0);
  EXPECT_EQ(node_ids(topology), (std::vector<std::vector<int>>{{0, 1}, {2, 3}}));
  EXPECT_EQ(topology.numa_nodes[1].id, 1);
  EXPECT_TRUE(topology.notes.empty());
}

TEST(Topology, OlderKernelsThreadSiblingsListIsRead) {
  fake_tree tree;
  write_smt_machine(tree, "thread_siblings_list");
  EXPECT_EQ(core_ids(read_topology(cpu_set::parse("0-3"), tree.sys())),
            (std::vector<std::vector<int>>{{0, 2}, {1, 3}}));
}

TEST(Topology, OnlyAllowedCpusAppear) {
  fake_tree tree;
  write_smt_machine(tree);
  const cpu_topology topology = read_topology(cpu_set::parse("0-2"), tree.sys());
  EXPECT_EQ(core_ids(topology), (std::vector<std::vector<int>>{{0, 2}, {1}}));
  EXPECT_EQ(node_ids(topology), (std::vector<std::vector<int>>{{0, 1}, {2}}));
  // A node none of whose CPUs is allowed is left out.
  EXPECT_EQ(node_ids(read_topology(cpu_set::parse("2-3"), tree.sys())),
            (std::vector<std::vector<int>>{{2, 3}}));
}

TEST(Topology, MissingFilesMeanOneCorePerCpuAndOneNode) {
  fake_tree tree;
  const cpu_topology topology = read_topology(cpu_set::parse("0-2,5"), tree.sys());
  EXPECT_EQ(core_ids(topology), (std::vector<std::vector<int>>{{0}, {1}, {2}, {5}}));
  EXPECT_EQ(topology.cores[0].package_id, -1);
  EXPECT_EQ(node_ids(topology), (std::vector<std::vector<int>>{{0, 1, 2, 5}}));
  EXPECT_EQ(topology.numa_nodes[0].id, 0);
  ASSERT_EQ(topology.notes.size(), 2U);
  EXPECT_NE(topology.notes[0].find("own core"), std::string::npos) << topology.notes[0];
  EXPECT_NE(topology.notes[1].find("node 0"), std::string::npos) << topology.notes[1];
}

TEST(Topology, GarbageFilesDoNotCrash) {
  fake_tree tree;
  write_smt_machine(tree);
  tree.write("sys/devices/system/cpu/cpu1/topology/core_cpus_list", "one and three\n");
  tree.write("sys/devices/system/cpu/cpu1/topology/physical_package_id", "socket\n");
  tree.write("sys/devices/system/node/node1/cpulist", "2-\n");
  const cpu_topology topology = read_topology(cpu_set::parse("0-3"), tree.sys());
  // cpu1's file is garbage: it stands alone; cpu3 still names 1 and 3, but 1 is taken.
  EXPECT_EQ(core_ids(topology), (std::vector<std::vector<int>>{{0, 2}, {1}, {3}}));
  EXPECT_EQ(topology.cores[1].package_id, -1);
  // node1 is unreadable: CPUs 2-3 are in no node and are grouped apart, with a note.
  EXPECT_EQ(node_ids(topology), (std::vector<std::vector<int>>{{0, 1}, {2, 3}}));
  EXPECT_EQ(topology.numa_nodes[1].id, -1);
  EXPECT_FALSE(topology.notes.empty());
}

TEST(Topology, EveryAllowedCpuIsInExactlyOneCoreAndOneNode) {
  // The real machine: whatever it looks like, cores and nodes partition the CPUs.
  const cpu_set allowed = cpu_set::parse("0");
  const cpu_topology topology = read_topology(allowed);
  ASSERT_EQ(topology.cores.size(), 1U);
  EXPECT_EQ(topology.cores[0].cpus, allowed);
  ASSERT_EQ(topology.numa_nodes.size(), 1U);
  EXPECT_EQ(topology.numa_nodes[0].cpus, allowed);
}
