// The CPU limits of this process's own cgroup, v2 and v1 (hybrid setups too), for its
// cgroup and every ancestor up to the mount root. Part of the budget (docs/architecture.md
// invariant 1).
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "corral/budget_source.hpp"

namespace corral {

// One line of /proc/<pid>/cgroup: "hierarchy-id:controller-list:path".
struct cgroup_membership {
  int hierarchy_id = 0;
  std::vector<std::string> controllers;  // v1: "cpu", "cpuacct", "name=systemd"...; v2: empty
  std::string path;                      // "/system.slice/docker-abc.scope"
};

// Malformed lines are left out (this is kernel output; garbage means a fake tree).
std::vector<cgroup_membership> parse_proc_cgroup(std::string_view text);

// A cgroup file system, from one line of /proc/<pid>/mountinfo.
struct cgroup_mount {
  int version = 0;                       // 1 or 2
  std::vector<std::string> controllers;  // v1: from the super options, e.g. {"cpu", "cpuacct"}
  std::string root;         // the cgroup shown at the mount point ("/" unless bind-mounted)
  std::string mount_point;  // octal escapes (\040) decoded
};

std::vector<cgroup_mount> parse_cgroup_mounts(std::string_view mountinfo);

// Where the process's cgroup of one hierarchy is on disk.
struct cgroup_location {
  std::filesystem::path mount_dir;  // the top: ancestors above it are not visible
  std::filesystem::path leaf_dir;   // the process's own cgroup: mount_dir or below it
  std::string note;                 // why the path was mapped or fell back to the mount root
  // leaf_dir, its parent, ... mount_dir.
  [[nodiscard]] std::vector<std::filesystem::path> dirs_leaf_first() const;
};

// controller: "cpu" or "cpuset" for v1; "" for the v2 (unified) hierarchy. The mount
// point is read under sys_root / proc_root when it lies under /sys or /proc, so that
// fake trees work. nullopt when the process has no such hierarchy mounted.
std::optional<cgroup_location> locate_cgroup(const std::vector<cgroup_membership>& memberships,
                                             const std::vector<cgroup_mount>& mounts,
                                             std::string_view controller,
                                             const std::filesystem::path& proc_root,
                                             const std::filesystem::path& sys_root);

// A CPU bandwidth limit: v2 cpu.max, or v1 cpu.cfs_quota_us with cpu.cfs_period_us.
struct cpu_quota {
  enum class status { unlimited, limited, invalid };
  status state = status::invalid;
  std::int64_t quota_us = 0;
  std::int64_t period_us = 0;
  std::string error;  // invalid: what is wrong

  // ceil(quota / period), never below 1: 1.5 CPUs allow 2 threads, 0.2 CPUs allow 1.
  [[nodiscard]] int cpus() const;
  [[nodiscard]] double exact_cpus() const;
  [[nodiscard]] std::string describe() const;  // "150000/100000 us = 1.5 CPUs -> 2"
};

cpu_quota parse_cpu_max(std::string_view text);  // "max 100000" or "150000 100000"
cpu_quota parse_cfs_quota(std::string_view quota_text,
                          std::string_view period_text);  // -1 means none

// The four cgroup sources, in this order: "cgroup v2 cpu.max", "cgroup v2 cpuset.cpus.effective",
// "cgroup v1 cpu.cfs_quota_us", "cgroup v1 cpuset.cpus". Each is present even when its
// hierarchy is not (then it allows no limit and says why). Quotas: the tightest level wins.
// Cpusets: the intersection of the levels. Never throws for unreadable or garbage files:
// that level is left out and the source's detail says so (skipped when no level was usable).
// reuse_mounts: where the hierarchies are mounted is taken from the last call with the same
// roots and the same /proc/self/cgroup text, instead of parsing /proc/self/mountinfo again
// (the costliest read: about 100 us on a VM). A cgroup file system mounted afresh since
// then goes unseen; moving the process to another cgroup does not.
std::vector<budget_source> read_cgroup_sources(const std::filesystem::path& proc_root,
                                               const std::filesystem::path& sys_root,
                                               bool reuse_mounts = false);

}  // namespace corral
