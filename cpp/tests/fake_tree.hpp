// Test helper: a temporary directory holding fake /proc and /sys files, removed at the end.
#pragma once

#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>

namespace corral::testing {

// A mountinfo line for a cgroup file system (the optional "shared:N" field included).
inline std::string mount_line(const std::string& root, const std::string& mount_point,
                              const std::string& fstype, const std::string& super_options) {
  return "40 31 0:37 " + root + " " + mount_point + " rw,nosuid,nodev,noexec,relatime shared:9 - " +
         fstype + " " + fstype + " " + super_options + "\n";
}

class fake_tree {
 public:
  fake_tree() {
    const char* tmp = std::getenv("TMPDIR");
    std::string pattern =
        std::string(tmp != nullptr && *tmp != '\0' ? tmp : "/tmp") + "/corral-test-XXXXXX";
    if (::mkdtemp(pattern.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
    root_ = pattern;
  }
  ~fake_tree() {
    std::error_code ignored;
    std::filesystem::remove_all(root_, ignored);
  }
  fake_tree(const fake_tree&) = delete;
  fake_tree& operator=(const fake_tree&) = delete;

  // Writes `content` at root/relative, creating the directories above it.
  void write(const std::string& relative, const std::string& content) const {
    const std::filesystem::path path = root_ / relative;
    std::filesystem::create_directories(path.parent_path());
    std::ofstream(path) << content;
  }
  void mkdir(const std::string& relative) const {
    std::filesystem::create_directories(root_ / relative);
  }

  [[nodiscard]] const std::filesystem::path& root() const { return root_; }
  [[nodiscard]] std::filesystem::path proc() const { return root_ / "proc"; }
  [[nodiscard]] std::filesystem::path sys() const { return root_ / "sys"; }

 private:
  std::filesystem::path root_;
};

// cgroup v2 only, the process in `path`.
inline void write_v2(const fake_tree& tree, const std::string& path) {
  tree.write("proc/self/cgroup", "0::" + path + "\n");
  tree.write("proc/self/mountinfo", "22 27 0:21 / /proc rw - proc proc rw\n" +
                                        mount_line("/", "/sys/fs/cgroup", "cgroup2", "rw"));
  tree.mkdir("sys/fs/cgroup" + path);
}

// cgroup v1 with cpu,cpuacct co-mounted and cpuset apart, plus an empty v2 hierarchy
// (hybrid, like systemd's default for years), the process in `path`.
inline void write_v1_hybrid(const fake_tree& tree, const std::string& path) {
  tree.write("proc/self/cgroup", "9:name=systemd:" + path + "\n4:cpu,cpuacct:" + path +
                                     "\n3:cpuset:" + path + "\n0::" + path + "\n");
  tree.write("proc/self/mountinfo",
             mount_line("/", "/sys/fs/cgroup/cpu,cpuacct", "cgroup", "rw,cpu,cpuacct") +
                 mount_line("/", "/sys/fs/cgroup/cpuset", "cgroup", "rw,cpuset") +
                 mount_line("/", "/sys/fs/cgroup/systemd", "cgroup", "rw,xattr,name=systemd") +
                 mount_line("/", "/sys/fs/cgroup/unified", "cgroup2", "rw"));
  for (const char* hierarchy : {"cpu,cpuacct", "cpuset", "unified"})
    tree.mkdir("sys/fs/cgroup/" + std::string(hierarchy) + path);
}

}  // namespace corral::testing
