#include "corral/budget.hpp"

#include <gtest/gtest.h>
#include <sched.h>

#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include "fake_tree.hpp"

using namespace corral;
using corral::testing::fake_tree;
using corral::testing::mount_line;
using corral::testing::write_v1_hybrid;
using corral::testing::write_v2;

namespace {

// A fake machine with eight CPUs in the affinity mask and no CORRAL_CPUS.
budget_options options_for(const fake_tree& tree, const char* affinity = "0-7") {
  budget_options options;
  options.proc_root = tree.proc();
  options.sys_root = tree.sys();
  options.env_cpus = std::nullopt;
  options.affinity = cpu_set::parse(affinity);
  return options;
}

std::vector<std::string> source_names(const cpu_budget& budget) {
  std::vector<std::string> names;
  for (const budget_source& source : budget.sources) names.push_back(source.name);
  return names;
}

}  // namespace

TEST(Budget, NoCgroupLimitsMeansTheAffinityMask) {
  fake_tree tree;
  write_v2(tree, "/");
  const cpu_budget budget = read_budget(options_for(tree, "0-5"));
  EXPECT_EQ(budget.cpus, 6);
  EXPECT_EQ(budget.cpu_ids, cpu_set::parse("0-5"));
  EXPECT_EQ(budget.decided_by, "affinity");
  EXPECT_FALSE(budget.exceeds_hardware);
  EXPECT_EQ(source_names(budget),
            (std::vector<std::string>{
                "affinity", "cgroup v2 cpu.max", "cgroup v2 cpuset.cpus.effective",
                "cgroup v1 cpu.cfs_quota_us", "cgroup v1 cpuset.cpus", "CORRAL_CPUS"}));
  EXPECT_EQ(budget.source("affinity")->cpus, 6);
  EXPECT_EQ(budget.source("affinity")->detail, "CPUs 0-5");
  EXPECT_FALSE(budget.source("CORRAL_CPUS")->cpus);
}

TEST(Budget, QuotaOfOneAndAHalfCpusGivesTwo) {
  fake_tree tree;
  write_v2(tree, "/job");
  tree.write("sys/fs/cgroup/job/cpu.max", "150000 100000\n");
  const cpu_budget budget = read_budget(options_for(tree));
  EXPECT_EQ(budget.cpus, 2);
  EXPECT_EQ(budget.decided_by, "cgroup v2 cpu.max");
  EXPECT_EQ(budget.source("cgroup v2 cpu.max")->path,
            (tree.sys() / "fs/cgroup/job/cpu.max").string());
  EXPECT_EQ(budget.cpu_ids.count(), 8U);  // a quota limits time, not which CPUs
}

TEST(Budget, QuotaOfAFifthOfACpuGivesOneNotZero) {
  fake_tree tree;
  write_v2(tree, "/job");
  tree.write("sys/fs/cgroup/job/cpu.max", "20000 100000\n");
  const cpu_budget budget = read_budget(options_for(tree));
  EXPECT_EQ(budget.cpus, 1);
  EXPECT_EQ(budget.decided_by, "cgroup v2 cpu.max");
}

TEST(Budget, AncestorQuotaTighterThanLeaf) {
  fake_tree tree;
  write_v2(tree, "/parent/leaf");
  tree.write("sys/fs/cgroup/parent/cpu.max", "200000 100000\n");
  tree.write("sys/fs/cgroup/parent/leaf/cpu.max", "600000 100000\n");
  const cpu_budget budget = read_budget(options_for(tree));
  EXPECT_EQ(budget.cpus, 2);
  EXPECT_EQ(budget.source("cgroup v2 cpu.max")->path,
            (tree.sys() / "fs/cgroup/parent/cpu.max").string());
}

TEST(Budget, LeafQuotaTighterThanAncestor) {
  fake_tree tree;
  write_v2(tree, "/parent/leaf");
  tree.write("sys/fs/cgroup/parent/cpu.max", "600000 100000\n");
  tree.write("sys/fs/cgroup/parent/leaf/cpu.max", "300000 100000\n");
  const cpu_budget budget = read_budget(options_for(tree));
  EXPECT_EQ(budget.cpus, 3);
  EXPECT_EQ(budget.source("cgroup v2 cpu.max")->path,
            (tree.sys() / "fs/cgroup/parent/leaf/cpu.max").string());
}

TEST(Budget, SystemdSliceScopePath) {
  fake_tree tree;
  write_v2(tree, "/system.slice/docker-abc.scope");
  tree.write("sys/fs/cgroup/system.slice/cpu.max", "max 100000\n");
  tree.write("sys/fs/cgroup/system.slice/docker-abc.scope/cpu.max", "400000 100000\n");
  tree.write("sys/fs/cgroup/system.slice/docker-abc.scope/cpuset.cpus.effective", "0-5\n");
  const cpu_budget budget = read_budget(options_for(tree));
  EXPECT_EQ(budget.cpus, 4);
  EXPECT_EQ(budget.decided_by, "cgroup v2 cpu.max");
  EXPECT_EQ(budget.cpu_ids, cpu_set::parse("0-5"));
}

TEST(Budget, MaxEverywhereMeansNoLimit) {
  fake_tree tree;
  write_v2(tree, "/a/b");
  tree.write("sys/fs/cgroup/a/cpu.max", "max 100000\n");
  tree.write("sys/fs/cgroup/a/b/cpu.max", "max 100000\n");
  const cpu_budget budget = read_budget(options_for(tree));
  EXPECT_EQ(budget.cpus, 8);
  EXPECT_EQ(budget.decided_by, "affinity");
  const budget_source* quota = budget.source("cgroup v2 cpu.max");
  EXPECT_FALSE(quota->cpus);
  EXPECT_FALSE(quota->skipped);
  EXPECT_NE(quota->detail.find("no limit"), std::string::npos) << quota->detail;
}

TEST(Budget, MissingFilesMeanNoLimit) {
  fake_tree tree;
  write_v2(tree, "/a");  // no cpu.max nor cpuset file anywhere
  const cpu_budget budget = read_budget(options_for(tree));
  EXPECT_EQ(budget.cpus, 8);
  EXPECT_EQ(budget.decided_by, "affinity");
  EXPECT_FALSE(budget.source("cgroup v2 cpu.max")->skipped);
  EXPECT_NE(budget.source("cgroup v2 cpu.max")->detail.find("not enabled"), std::string::npos);
  EXPECT_NE(budget.source("cgroup v1 cpuset.cpus")->detail.find("no cgroup v1 cpuset"),
            std::string::npos);
}

TEST(Budget, NoProcFilesAtAllStillGivesTheAffinity) {
  fake_tree tree;
  const cpu_budget budget = read_budget(options_for(tree, "0-2"));
  EXPECT_EQ(budget.cpus, 3);
  EXPECT_EQ(budget.decided_by, "affinity");
  EXPECT_TRUE(budget.source("cgroup v2 cpu.max")->skipped);
}

TEST(Budget, GarbageIsSkippedWithAReason) {
  fake_tree tree;
  write_v2(tree, "/job");
  tree.write("sys/fs/cgroup/job/cpu.max", "\x01\x02 lots\n");
  tree.write("sys/fs/cgroup/job/cpuset.cpus.effective", "zero to three\n");
  const cpu_budget budget = read_budget(options_for(tree));
  EXPECT_EQ(budget.cpus, 8);
  EXPECT_EQ(budget.decided_by, "affinity");
  for (const char* name : {"cgroup v2 cpu.max", "cgroup v2 cpuset.cpus.effective"}) {
    const budget_source* source = budget.source(name);
    EXPECT_TRUE(source->skipped) << name;
    EXPECT_FALSE(source->cpus) << name;
    EXPECT_NE(source->detail.find("job"), std::string::npos) << source->detail;  // names the file
  }
}

TEST(Budget, CpusetNarrowerThanAffinity) {
  fake_tree tree;
  write_v2(tree, "/job");
  tree.write("sys/fs/cgroup/job/cpuset.cpus.effective", "2-4\n");
  const cpu_budget budget = read_budget(options_for(tree));
  EXPECT_EQ(budget.cpus, 3);
  EXPECT_EQ(budget.cpu_ids, cpu_set::parse("2-4"));
  EXPECT_EQ(budget.decided_by, "cgroup v2 cpuset.cpus.effective");
}

TEST(Budget, AffinityNarrowerThanCpusetDecides) {
  fake_tree tree;
  write_v2(tree, "/job");
  tree.write("sys/fs/cgroup/job/cpuset.cpus.effective", "0-7\n");
  const cpu_budget budget = read_budget(options_for(tree, "1,3"));
  EXPECT_EQ(budget.cpus, 2);
  EXPECT_EQ(budget.cpu_ids, cpu_set::of({1, 3}));
  EXPECT_EQ(budget.decided_by, "affinity");
  EXPECT_EQ(budget.source("cgroup v2 cpuset.cpus.effective")->cpus, 8);
}

TEST(Budget, CpusetDisjointFromAffinityIsIgnored) {
  fake_tree tree;
  write_v2(tree, "/job");
  tree.write("sys/fs/cgroup/job/cpuset.cpus.effective", "16-23\n");
  const cpu_budget budget = read_budget(options_for(tree, "0-3"));
  EXPECT_EQ(budget.cpus, 4);
  EXPECT_EQ(budget.decided_by, "affinity");
  ASSERT_FALSE(budget.notes.empty());
}

TEST(Budget, QuotaBelowCpusetCount) {
  fake_tree tree;
  write_v2(tree, "/job");
  tree.write("sys/fs/cgroup/job/cpuset.cpus.effective", "0-3\n");
  tree.write("sys/fs/cgroup/job/cpu.max", "250000 100000\n");
  const cpu_budget budget = read_budget(options_for(tree));
  EXPECT_EQ(budget.cpus, 3);
  EXPECT_EQ(budget.cpu_ids.count(), 4U);
  EXPECT_EQ(budget.decided_by, "cgroup v2 cpu.max");
}

TEST(Budget, QuotaEqualToCpusetLeavesTheCpusetDeciding) {
  fake_tree tree;
  write_v2(tree, "/job");
  tree.write("sys/fs/cgroup/job/cpuset.cpus.effective", "0-1\n");
  tree.write("sys/fs/cgroup/job/cpu.max", "200000 100000\n");
  const cpu_budget budget = read_budget(options_for(tree));
  EXPECT_EQ(budget.cpus, 2);
  EXPECT_EQ(budget.decided_by, "cgroup v2 cpuset.cpus.effective");
}

TEST(Budget, V1HybridQuotaAndCpuset) {
  fake_tree tree;
  write_v1_hybrid(tree, "/docker/abc");
  tree.write("sys/fs/cgroup/cpu,cpuacct/docker/abc/cpu.cfs_quota_us", "250000\n");
  tree.write("sys/fs/cgroup/cpu,cpuacct/docker/abc/cpu.cfs_period_us", "100000\n");
  tree.write("sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us", "-1\n");
  tree.write("sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us", "100000\n");
  tree.write("sys/fs/cgroup/cpuset/docker/abc/cpuset.cpus", "0-5\n");
  tree.write("sys/fs/cgroup/cpuset/cpuset.cpus", "0-7\n");
  const cpu_budget budget = read_budget(options_for(tree));
  EXPECT_EQ(budget.cpus, 3);
  EXPECT_EQ(budget.decided_by, "cgroup v1 cpu.cfs_quota_us");
  EXPECT_EQ(budget.source("cgroup v1 cpu.cfs_quota_us")->path,
            (tree.sys() / "fs/cgroup/cpu,cpuacct/docker/abc/cpu.cfs_quota_us").string());
  EXPECT_EQ(budget.cpu_ids, cpu_set::parse("0-5"));
  EXPECT_EQ(budget.source("cgroup v1 cpuset.cpus")->cpus, 6);
  // The unified hierarchy has no controllers in a hybrid setup: no v2 limit, not an error.
  EXPECT_FALSE(budget.source("cgroup v2 cpu.max")->cpus);
  EXPECT_FALSE(budget.source("cgroup v2 cpu.max")->skipped);
}

TEST(Budget, V1NestedAncestorTighter) {
  fake_tree tree;
  write_v1_hybrid(tree, "/batch/job");
  tree.write("sys/fs/cgroup/cpu,cpuacct/batch/cpu.cfs_quota_us", "100000\n");
  tree.write("sys/fs/cgroup/cpu,cpuacct/batch/cpu.cfs_period_us", "100000\n");
  tree.write("sys/fs/cgroup/cpu,cpuacct/batch/job/cpu.cfs_quota_us", "-1\n");
  tree.write("sys/fs/cgroup/cpu,cpuacct/batch/job/cpu.cfs_period_us", "100000\n");
  const cpu_budget budget = read_budget(options_for(tree));
  EXPECT_EQ(budget.cpus, 1);
  EXPECT_EQ(budget.decided_by, "cgroup v1 cpu.cfs_quota_us");
}

TEST(Budget, V1ContainerWhosePathIsNotVisibleReadsTheMountRoot) {
  fake_tree tree;
  // The host's path in /proc/self/cgroup; only the container's own cgroup mounted.
  tree.write("proc/self/cgroup", "4:cpu,cpuacct:/kubepods/burstable/pod1/abc\n0::/\n");
  tree.write("proc/self/mountinfo",
             mount_line("/docker/abc", "/sys/fs/cgroup/cpu,cpuacct", "cgroup", "rw,cpu,cpuacct"));
  tree.write("sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us", "50000\n");
  tree.write("sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us", "100000\n");
  const cpu_budget budget = read_budget(options_for(tree));
  EXPECT_EQ(budget.cpus, 1);
  EXPECT_EQ(budget.decided_by, "cgroup v1 cpu.cfs_quota_us");
  EXPECT_NE(budget.source("cgroup v1 cpu.cfs_quota_us")->detail.find("mount root"),
            std::string::npos);
}

TEST(Budget, V1AndV2QuotasTightestWins) {
  fake_tree tree;
  write_v1_hybrid(tree, "/");
  tree.write("sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us", "500000\n");
  tree.write("sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us", "100000\n");
  tree.write("sys/fs/cgroup/unified/cpu.max", "350000 100000\n");
  const cpu_budget budget = read_budget(options_for(tree));
  EXPECT_EQ(budget.cpus, 4);
  EXPECT_EQ(budget.decided_by, "cgroup v2 cpu.max");
  EXPECT_EQ(budget.source("cgroup v1 cpu.cfs_quota_us")->cpus, 5);
}

TEST(Budget, CorralCpusOverridesEverything) {
  fake_tree tree;
  write_v2(tree, "/job");
  tree.write("sys/fs/cgroup/job/cpu.max", "200000 100000\n");
  budget_options options = options_for(tree);
  options.env_cpus = "5";
  const cpu_budget budget = read_budget(options);
  EXPECT_EQ(budget.cpus, 5);
  EXPECT_EQ(budget.decided_by, "CORRAL_CPUS");
  EXPECT_FALSE(budget.exceeds_hardware);  // 5 of the 8 CPUs it may run on
  EXPECT_EQ(budget.source("CORRAL_CPUS")->cpus, 5);
  EXPECT_EQ(budget.source("cgroup v2 cpu.max")->cpus, 2);  // still reported
}

TEST(Budget, CorralCpusAboveTheHardwareSaysSo) {
  fake_tree tree;
  write_v2(tree, "/");
  budget_options options = options_for(tree, "0-1");
  options.env_cpus = "64";
  const cpu_budget budget = read_budget(options);
  EXPECT_EQ(budget.cpus, 64);
  EXPECT_TRUE(budget.exceeds_hardware);
  EXPECT_EQ(budget.cpu_ids, cpu_set::parse("0-1"));  // the CPUs are still the real ones
  ASSERT_FALSE(budget.notes.empty());
  EXPECT_NE(budget.notes[0].find("bigger machine"), std::string::npos) << budget.notes[0];
}

TEST(Budget, MalformedCorralCpusIsAClearError) {
  fake_tree tree;
  for (const char* bad :
       {"0", "-2", "abc", "2.5", "", " ", "+3", "4 cpus", "99999999999999999999", "70000"}) {
    budget_options options = options_for(tree);
    options.env_cpus = bad;
    try {
      (void)read_budget(options);
      ADD_FAILURE() << "accepted \"" << bad << "\"";
    } catch (const std::invalid_argument& error) {
      const std::string message = error.what();
      EXPECT_NE(message.find("CORRAL_CPUS"), std::string::npos) << message;
      EXPECT_NE(message.find(std::string("\"") + bad + "\""), std::string::npos) << message;
    }
  }
  EXPECT_EQ(parse_corral_cpus(" 12\n"), 12);
  EXPECT_EQ(parse_corral_cpus("1"), 1);
}

TEST(Budget, AMalformedCorralCpusIsQuotedAsText) {
  // Bytes that are not printable ASCII (not UTF-8 at all here) are shown as \xNN: the bindings
  // decode the message as UTF-8.
  fake_tree tree;
  budget_options options = options_for(tree);
  options.env_cpus = std::string("2\xff\t\\");
  try {
    (void)read_budget(options);
    ADD_FAILURE() << "accepted a value with a 0xff byte";
  } catch (const std::invalid_argument& error) {
    EXPECT_NE(std::string(error.what()).find("CORRAL_CPUS=\"2\\xff\\x09\\x5c\""), std::string::npos)
        << error.what();
  }
}

TEST(Budget, TopologyOfTheAllowedCpus) {
  fake_tree tree;
  write_v2(tree, "/job");
  tree.write("sys/fs/cgroup/job/cpuset.cpus.effective", "0-2\n");
  for (int cpu = 0; cpu < 4; ++cpu) {
    tree.write(
        "sys/devices/system/cpu/cpu" + std::to_string(cpu) + "/topology/thread_siblings_list",
        cpu % 2 == 0 ? "0,2\n" : "1,3\n");
  }
  tree.write("sys/devices/system/node/node0/cpulist", "0-3\n");
  const cpu_budget budget = read_budget(options_for(tree, "0-3"));
  ASSERT_EQ(budget.topology.cores.size(), 2U);
  EXPECT_EQ(budget.topology.cores[0].cpus, cpu_set::of({0, 2}));
  EXPECT_EQ(budget.topology.cores[1].cpus, cpu_set::of({1}));
  ASSERT_EQ(budget.topology.numa_nodes.size(), 1U);
  EXPECT_EQ(budget.topology.numa_nodes[0].cpus, cpu_set::parse("0-2"));
  EXPECT_TRUE(budget.notes.empty());
}

TEST(Budget, ThisProcessMatchesTheKernelsAffinity) {
  cpu_set_t mask;
  CPU_ZERO(&mask);
  ASSERT_EQ(sched_getaffinity(0, sizeof mask, &mask), 0);
  const cpu_set affinity = process_affinity();
  EXPECT_EQ(static_cast<int>(affinity.count()), CPU_COUNT(&mask));
  for (const int cpu : affinity.ids()) EXPECT_TRUE(CPU_ISSET(cpu, &mask)) << cpu;

  budget_options options;
  options.env_cpus = std::nullopt;
  const cpu_budget budget = read_budget(options);
  EXPECT_GE(budget.cpus, 1);
  EXPECT_LE(budget.cpus, static_cast<int>(affinity.count()));  // no override: never above the mask
  EXPECT_TRUE(budget.cpu_ids.is_subset_of(affinity));
  EXPECT_NE(budget.source(budget.decided_by), nullptr);
  std::size_t in_cores = 0;
  for (const physical_core& core : budget.topology.cores) in_cores += core.cpus.count();
  EXPECT_EQ(in_cores, budget.cpu_ids.count());
}

TEST(Budget, ReusesMountsAndTopologyButRereadsLimits) {
  fake_tree tree;
  write_v2(tree, "/job");
  tree.write("sys/fs/cgroup/job/cpu.max", "300000 100000\n");
  budget_options options = options_for(tree);
  EXPECT_EQ(read_budget(options).cpus, 3);
  // Limits change at run time (a resized container): read every call.
  tree.write("sys/fs/cgroup/job/cpu.max", "200000 100000\n");
  EXPECT_EQ(read_budget(options).cpus, 2);
  // The cgroup file system moves (a remount): unseen while reused, seen when not.
  tree.write("proc/self/mountinfo", mount_line("/", "/sys/fs/cgroup2", "cgroup2", "rw"));
  tree.write("sys/fs/cgroup2/job/cpu.max", "100000 100000\n");
  EXPECT_EQ(read_budget(options).cpus, 2);
  // The process moves to another cgroup: /proc/self/cgroup differs, so mounts are read again.
  tree.write("proc/self/cgroup", "0::/job2\n");
  tree.write("sys/fs/cgroup2/job2/cpu.max", "400000 100000\n");
  EXPECT_EQ(read_budget(options).cpus, 4);
  tree.write("proc/self/cgroup", "0::/job\n");
  options.reuse_static_reads = false;
  EXPECT_EQ(read_budget(options).cpus, 1);
  // Topology: same CPUs, cached; with reuse off, read afresh.
  tree.write("sys/devices/system/cpu/cpu0/topology/core_cpus_list", "0-1\n");
  tree.write("sys/devices/system/cpu/cpu1/topology/core_cpus_list", "0-1\n");
  EXPECT_EQ(read_budget(options).topology.cores.size(), 7U);  // {0,1} and six single CPUs
  options.reuse_static_reads = true;
  tree.write("sys/devices/system/cpu/cpu2/topology/core_cpus_list", "2-3\n");
  tree.write("sys/devices/system/cpu/cpu3/topology/core_cpus_list", "2-3\n");
  EXPECT_EQ(read_budget(options).topology.cores.size(), 7U);  // reused
  options.reuse_static_reads = false;
  EXPECT_EQ(read_budget(options).topology.cores.size(), 6U);  // read afresh
}

TEST(Budget, ConcurrentCallsAgree) {
  // The reuse caches are shared by all threads (run under TSan too).
  fake_tree tree;
  write_v2(tree, "/job");
  tree.write("sys/fs/cgroup/job/cpu.max", "300000 100000\n");
  const budget_options options = options_for(tree);
  std::atomic<int> wrong{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&options, &wrong, t] {
      budget_options mine = options;
      if (t % 2 == 1)
        mine.proc_root = "/proc", mine.sys_root = "/sys",
        mine.affinity = std::nullopt;  // alternate roots
      for (int i = 0; i < 50; ++i) {
        const cpu_budget budget = read_budget(mine);
        if (t % 2 == 0 && (budget.cpus != 3 || budget.topology.cores.size() != 8)) ++wrong;
        if (t % 2 == 1 && budget.cpu_ids.empty()) ++wrong;
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_EQ(wrong.load(), 0);
}
