// Reading the small text files of /proc and /sys (private to the library).
#pragma once

#include <filesystem>
#include <optional>
#include <string>
#include <string_view>

#include "corral/cpu_set.hpp"

namespace corral::detail {

struct text_file {
  std::string text;
  std::string error;     // empty when the read succeeded: strerror text otherwise
  bool missing = false;  // the file (or a directory above it) does not exist
  [[nodiscard]] bool ok() const { return error.empty(); }
};

// Whole file, read with plain POSIX calls (cheap: the budget is read often).
// Never throws for I/O problems: they are reported in `error`.
text_file read_text_file(const std::filesystem::path& path);

// A CPU list file (e.g. "0-3,8"); nothing when it cannot be read or parsed.
std::optional<cpu_set> read_cpu_list(const std::filesystem::path& path);

// Without leading and trailing spaces, tabs, newlines and carriage returns.
inline std::string_view trim(std::string_view s) {
  const auto is_space = [](char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; };
  while (!s.empty() && is_space(s.front())) s.remove_prefix(1);
  while (!s.empty() && is_space(s.back())) s.remove_suffix(1);
  return s;
}

}  // namespace corral::detail
