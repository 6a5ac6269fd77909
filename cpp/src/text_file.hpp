// Reading the small text files of /proc and /sys (private to the library).
#pragma once

#include <filesystem>
#include <string>

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

}  // namespace corral::detail
