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

}  // namespace corral::testing
