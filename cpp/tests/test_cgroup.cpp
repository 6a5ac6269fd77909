#include "corral/cgroup.hpp"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "fake_tree.hpp"

using namespace corral;
using corral::testing::fake_tree;
using corral::testing::mount_line;
using corral::testing::write_v2;

namespace {

const budget_source& find(const std::vector<budget_source>& sources, const std::string& name) {
  for (const budget_source& source : sources) {
    if (source.name == name) return source;
  }
  throw std::runtime_error("no source " + name);
}

}  // namespace

TEST(ProcCgroup, ParsesV1AndV2Lines) {
  const auto lines = parse_proc_cgroup(
      "9:name=systemd:/\n4:cpu,cpuacct:/docker/abc\n0::/system.slice/x.scope\nbad line\n");
  ASSERT_EQ(lines.size(), 3U);
  EXPECT_EQ(lines[1].hierarchy_id, 4);
  EXPECT_EQ(lines[1].controllers, (std::vector<std::string>{"cpu", "cpuacct"}));
  EXPECT_EQ(lines[1].path, "/docker/abc");
  EXPECT_EQ(lines[2].hierarchy_id, 0);
  EXPECT_TRUE(lines[2].controllers.empty());
  EXPECT_EQ(lines[2].path, "/system.slice/x.scope");
}

TEST(Mountinfo, FindsCgroupMountsOnly) {
  const std::string text =
      "22 27 0:21 / /proc rw,relatime - proc proc rw\n" +
      mount_line("/", "/sys/fs/cgroup/cpu,cpuacct", "cgroup", "rw,cpu,cpuacct") +
      mount_line("/docker/abc", "/sys/fs/cgroup/cpuset", "cgroup", "rw,cpuset") +
      "41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n" +
      mount_line("/", "/mnt/my\\040cgroup", "cgroup2", "rw") + "garbage\n- cgroup2\n";
  const auto mounts = parse_cgroup_mounts(text);
  ASSERT_EQ(mounts.size(), 4U);
  EXPECT_EQ(mounts[0].version, 1);
  EXPECT_EQ(mounts[0].mount_point, "/sys/fs/cgroup/cpu,cpuacct");
  EXPECT_EQ(mounts[0].controllers, (std::vector<std::string>{"rw", "cpu", "cpuacct"}));
  EXPECT_EQ(mounts[1].root, "/docker/abc");
  EXPECT_EQ(mounts[2].version, 2);
  EXPECT_EQ(mounts[2].mount_point, "/sys/fs/cgroup/unified");
  EXPECT_EQ(mounts[3].mount_point, "/mnt/my cgroup");  // \040 is a space
}

TEST(CpuQuota, RoundsUpAndNeverToZero) {
  EXPECT_EQ(parse_cpu_max("150000 100000\n").cpus(), 2);  // 1.5 CPUs
  EXPECT_EQ(parse_cpu_max("20000 100000").cpus(), 1);     // 0.2 CPUs
  EXPECT_EQ(parse_cpu_max("200000 100000").cpus(), 2);    // exactly 2
  EXPECT_EQ(parse_cpu_max("1000 100000").cpus(), 1);      // 0.01 CPUs
  EXPECT_EQ(parse_cfs_quota("250000\n", "100000\n").cpus(), 3);
  EXPECT_DOUBLE_EQ(parse_cpu_max("150000 100000").exact_cpus(), 1.5);
}

TEST(CpuQuota, MaxAndMinusOneMeanNoLimit) {
  EXPECT_EQ(parse_cpu_max("max 100000\n").state, cpu_quota::status::unlimited);
  EXPECT_EQ(parse_cpu_max("max").state, cpu_quota::status::unlimited);
  EXPECT_EQ(parse_cfs_quota("-1\n", "100000\n").state, cpu_quota::status::unlimited);
  EXPECT_EQ(parse_cfs_quota("-1", "").state, cpu_quota::status::unlimited);
}

TEST(CpuQuota, GarbageIsInvalidWithAReason) {
  for (const char* bad : {"", "abc", "150000", "150000 0", "0 100000", "-5 100000", "1.5 100000",
                          "max abc", "1 2 3"}) {
    const cpu_quota quota = parse_cpu_max(bad);
    EXPECT_EQ(quota.state, cpu_quota::status::invalid) << bad;
    EXPECT_FALSE(quota.error.empty()) << bad;
    EXPECT_EQ(quota.cpus(), 0) << bad;
  }
  EXPECT_EQ(parse_cfs_quota("0", "100000").state, cpu_quota::status::invalid);
  EXPECT_EQ(parse_cfs_quota("-2", "100000").state, cpu_quota::status::invalid);
  EXPECT_EQ(parse_cfs_quota("50000", "").state, cpu_quota::status::invalid);
  EXPECT_EQ(parse_cfs_quota("x", "100000").state, cpu_quota::status::invalid);
}

TEST(LocateCgroup, MapsTheCgroupPathUnderTheMountPoint) {
  fake_tree tree;
  tree.mkdir("sys/fs/cgroup/system.slice/docker-abc.scope");
  const auto where =
      locate_cgroup(parse_proc_cgroup("0::/system.slice/docker-abc.scope\n"),
                    parse_cgroup_mounts(mount_line("/", "/sys/fs/cgroup", "cgroup2", "rw")), "",
                    tree.proc(), tree.sys());
  ASSERT_TRUE(where);
  EXPECT_EQ(where->mount_dir, tree.sys() / "fs/cgroup");
  EXPECT_EQ(where->leaf_dir, tree.sys() / "fs/cgroup/system.slice/docker-abc.scope");
  EXPECT_TRUE(where->note.empty());
  const std::vector<std::filesystem::path> dirs = where->dirs_leaf_first();
  ASSERT_EQ(dirs.size(), 3U);
  EXPECT_EQ(dirs[1], tree.sys() / "fs/cgroup/system.slice");
  EXPECT_EQ(dirs[2], where->mount_dir);
}

TEST(LocateCgroup, V1ControllerFoundInCoMountedHierarchy) {
  fake_tree tree;
  tree.mkdir("sys/fs/cgroup/cpu,cpuacct/job");
  const auto memberships = parse_proc_cgroup("3:cpuset:/\n2:cpu,cpuacct:/job\n0::/\n");
  const auto mounts = parse_cgroup_mounts(
      mount_line("/", "/sys/fs/cgroup/cpu,cpuacct", "cgroup", "rw,cpu,cpuacct"));
  const auto cpu = locate_cgroup(memberships, mounts, "cpu", tree.proc(), tree.sys());
  ASSERT_TRUE(cpu);
  EXPECT_EQ(cpu->leaf_dir, tree.sys() / "fs/cgroup/cpu,cpuacct/job");
  // Neither a cpuset mount nor a cgroup2 mount: nothing to read.
  EXPECT_FALSE(locate_cgroup(memberships, mounts, "cpuset", tree.proc(), tree.sys()));
  EXPECT_FALSE(locate_cgroup(memberships, mounts, "", tree.proc(), tree.sys()));
}

TEST(LocateCgroup, ContainerMountRootIsStrippedFromThePath) {
  fake_tree tree;
  tree.mkdir("sys/fs/cgroup/cpu/sub");
  const auto mounts =
      parse_cgroup_mounts(mount_line("/docker/abc", "/sys/fs/cgroup/cpu", "cgroup", "rw,cpu"));
  const auto at_root = locate_cgroup(parse_proc_cgroup("2:cpu:/docker/abc\n"), mounts, "cpu",
                                     tree.proc(), tree.sys());
  ASSERT_TRUE(at_root);
  EXPECT_EQ(at_root->leaf_dir, tree.sys() / "fs/cgroup/cpu");
  EXPECT_EQ(at_root->dirs_leaf_first().size(), 1U);
  const auto below = locate_cgroup(parse_proc_cgroup("2:cpu:/docker/abc/sub\n"), mounts, "cpu",
                                   tree.proc(), tree.sys());
  ASSERT_TRUE(below);
  EXPECT_EQ(below->leaf_dir, tree.sys() / "fs/cgroup/cpu/sub");
}

TEST(LocateCgroup, PathOutsideTheMountRootFallsBackToTheMountRoot) {
  fake_tree tree;
  tree.mkdir("sys/fs/cgroup/cpu");
  const auto mounts =
      parse_cgroup_mounts(mount_line("/docker/abc", "/sys/fs/cgroup/cpu", "cgroup", "rw,cpu"));
  const auto where = locate_cgroup(parse_proc_cgroup("2:cpu:/kubepods/pod1/xyz\n"), mounts, "cpu",
                                   tree.proc(), tree.sys());
  ASSERT_TRUE(where);
  EXPECT_EQ(where->leaf_dir, where->mount_dir);
  EXPECT_NE(where->note.find("not under the mount's root"), std::string::npos) << where->note;
}

TEST(LocateCgroup, InvisiblePathFallsBackToTheMountRoot) {
  fake_tree tree;
  tree.mkdir("sys/fs/cgroup");
  const auto mounts = parse_cgroup_mounts(mount_line("/", "/sys/fs/cgroup", "cgroup2", "rw"));
  const auto missing =
      locate_cgroup(parse_proc_cgroup("0::/not/here\n"), mounts, "", tree.proc(), tree.sys());
  ASSERT_TRUE(missing);
  EXPECT_EQ(missing->leaf_dir, missing->mount_dir);
  EXPECT_NE(missing->note.find("not visible"), std::string::npos) << missing->note;
  const auto outside = locate_cgroup(parse_proc_cgroup("0::/../../elsewhere\n"), mounts, "",
                                     tree.proc(), tree.sys());
  ASSERT_TRUE(outside);
  EXPECT_EQ(outside->leaf_dir, outside->mount_dir);
  EXPECT_FALSE(outside->note.empty());
}

TEST(LocateCgroup, PrefersTheBindMountThatHoldsThePath) {
  fake_tree tree;
  tree.mkdir("sys/fs/cgroup/a/leaf");
  const auto mounts =
      parse_cgroup_mounts(mount_line("/other", "/sys/fs/cgroup/b", "cgroup2", "rw") +
                          mount_line("/job", "/sys/fs/cgroup/a", "cgroup2", "rw"));
  const auto where =
      locate_cgroup(parse_proc_cgroup("0::/job/leaf\n"), mounts, "", tree.proc(), tree.sys());
  ASSERT_TRUE(where);
  EXPECT_EQ(where->leaf_dir, tree.sys() / "fs/cgroup/a/leaf");
}

TEST(CgroupSources, AlwaysFourInAFixedOrder) {
  fake_tree tree;  // empty: /proc/self/cgroup cannot be read
  const auto sources = read_cgroup_sources(tree.proc(), tree.sys());
  ASSERT_EQ(sources.size(), 4U);
  EXPECT_EQ(sources[0].name, "cgroup v2 cpu.max");
  EXPECT_EQ(sources[1].name, "cgroup v2 cpuset.cpus.effective");
  EXPECT_EQ(sources[2].name, "cgroup v1 cpu.cfs_quota_us");
  EXPECT_EQ(sources[3].name, "cgroup v1 cpuset.cpus");
  for (const budget_source& source : sources) {
    EXPECT_TRUE(source.skipped);
    EXPECT_FALSE(source.cpus);
    EXPECT_NE(source.detail.find("cannot read"), std::string::npos) << source.detail;
  }
}

TEST(CgroupSources, NestedV2QuotasTightestWinsAndNamesItsFile) {
  fake_tree tree;
  write_v2(tree, "/outer/inner");
  tree.write("sys/fs/cgroup/outer/cpu.max", "300000 100000\n");
  tree.write("sys/fs/cgroup/outer/inner/cpu.max", "max 100000\n");
  tree.write("sys/fs/cgroup/outer/inner/cpuset.cpus.effective", "0-3\n");
  tree.write("sys/fs/cgroup/cpuset.cpus.effective", "0-7\n");
  const auto sources = read_cgroup_sources(tree.proc(), tree.sys());
  const budget_source& quota = find(sources, "cgroup v2 cpu.max");
  EXPECT_EQ(quota.cpus, 3);
  EXPECT_EQ(quota.path, (tree.sys() / "fs/cgroup/outer/cpu.max").string());
  EXPECT_NE(quota.detail.find("2 levels"), std::string::npos) << quota.detail;
  const budget_source& cpuset = find(sources, "cgroup v2 cpuset.cpus.effective");
  EXPECT_EQ(cpuset.cpus, 4);
  EXPECT_EQ(cpuset.cpu_ids, cpu_set::parse("0-3"));
  EXPECT_EQ(cpuset.path, (tree.sys() / "fs/cgroup/outer/inner/cpuset.cpus.effective").string());
  EXPECT_FALSE(find(sources, "cgroup v1 cpu.cfs_quota_us").cpus);
}

TEST(CgroupSources, GarbageLevelIsIgnoredWhenAnotherLevelIsUsable) {
  fake_tree tree;
  write_v2(tree, "/a");
  tree.write("sys/fs/cgroup/a/cpu.max", "lots please\n");
  tree.write("sys/fs/cgroup/cpu.max", "50000 100000\n");
  const budget_source quota =
      find(read_cgroup_sources(tree.proc(), tree.sys()), "cgroup v2 cpu.max");
  EXPECT_FALSE(quota.skipped);
  EXPECT_EQ(quota.cpus, 1);
  EXPECT_NE(quota.detail.find("ignored"), std::string::npos) << quota.detail;
  EXPECT_NE(quota.detail.find("lots please"), std::string::npos) << quota.detail;
}

TEST(CgroupSources, EmptyCpusetIsSkippedNotZero) {
  fake_tree tree;
  tree.write("proc/self/cgroup", "3:cpuset:/\n");
  tree.write("proc/self/mountinfo",
             mount_line("/", "/sys/fs/cgroup/cpuset", "cgroup", "rw,cpuset"));
  tree.write("sys/fs/cgroup/cpuset/cpuset.cpus", "\n");
  const budget_source cpuset =
      find(read_cgroup_sources(tree.proc(), tree.sys()), "cgroup v1 cpuset.cpus");
  EXPECT_TRUE(cpuset.skipped);
  EXPECT_FALSE(cpuset.cpus);
  EXPECT_NE(cpuset.detail.find("empty"), std::string::npos) << cpuset.detail;
}

TEST(CgroupSources, UnreadableQuotaFileIsSkippedWithTheError) {
  fake_tree tree;
  write_v2(tree, "/");
  tree.mkdir("sys/fs/cgroup/cpu.max");  // a directory: read() fails with EISDIR
  const budget_source quota =
      find(read_cgroup_sources(tree.proc(), tree.sys()), "cgroup v2 cpu.max");
  EXPECT_TRUE(quota.skipped);
  EXPECT_NE(quota.detail.find("cannot read"), std::string::npos) << quota.detail;
}
