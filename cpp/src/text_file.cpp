#include "text_file.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>

namespace corral::detail {

namespace {
// /proc/self/mountinfo on a busy container host can hold thousands of lines; nothing
// we read is legitimately larger than this, and a bound keeps garbage from costing memory.
constexpr std::size_t max_file_size = std::size_t{16} << 20;
}  // namespace

text_file read_text_file(const std::filesystem::path& path) {
  text_file result;
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    result.missing = errno == ENOENT || errno == ENOTDIR;
    result.error = std::strerror(errno);
    return result;
  }
  char buffer[4096];
  for (;;) {
    const ssize_t n = ::read(fd, buffer, sizeof buffer);
    if (n < 0) {
      if (errno == EINTR) continue;
      result.error = std::strerror(errno);
      break;
    }
    if (n == 0) break;
    result.text.append(buffer, static_cast<std::size_t>(n));
    if (result.text.size() > max_file_size) {
      result.error = "file larger than 16 MiB";
      break;
    }
  }
  ::close(fd);
  if (!result.ok()) result.text.clear();
  return result;
}

std::optional<cpu_set> read_cpu_list(const std::filesystem::path& path) {
  const text_file file = read_text_file(path);
  if (!file.ok()) return std::nullopt;
  try {
    return cpu_set::parse(file.text);
  } catch (const std::invalid_argument&) {
    return std::nullopt;
  }
}

}  // namespace corral::detail
