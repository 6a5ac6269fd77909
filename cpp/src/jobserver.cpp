// GNU make's jobserver as a permit source (jobserver.hpp, docs/share.md).
//
// make's read end may be blocking (make 4.3 sets it non-blocking for itself, 4.4's fifo is opened
// by each client), and its flags belong to make's open file description, shared by every job: we
// never change them. Instead we read through a description of our own, opened non-blocking from
// /proc/self/fd/R (a pipe) or from the fifo's path, so that a take that finds no token returns at
// once instead of blocking with the caller's locks (and Python's GIL) held.
#include "corral/jobserver.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstdlib>
#include <new>

namespace corral {
namespace {

std::mutex connected_mutex;
jobserver* connected = nullptr;

void return_at_exit() {
  std::lock_guard<std::mutex> lock(connected_mutex);
  if (connected != nullptr) connected->return_all();
}

bool parse_int(std::string_view text, int& out) {
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), out);
  return ec == std::errc() && end == text.data() + text.size();
}

bool is_open_pipe(int fd) {
  struct stat st{};
  return fd >= 0 && ::fcntl(fd, F_GETFD) != -1 && ::fstat(fd, &st) == 0 && S_ISFIFO(st.st_mode);
}

}  // namespace

jobserver_auth parse_makeflags(std::string_view flags) {
  jobserver_auth auth;
  std::size_t pos = 0;
  while (pos < flags.size()) {
    while (pos < flags.size() && flags[pos] == ' ') ++pos;
    std::size_t end = flags.find(' ', pos);
    if (end == std::string_view::npos) end = flags.size();
    const std::string_view word = flags.substr(pos, end - pos);
    pos = end;
    if (word == "--") break;  // variable assignments follow
    std::string_view value;
    if (word.starts_with("--jobserver-auth="))
      value = word.substr(17);
    else if (word.starts_with("--jobserver-fds="))
      value = word.substr(16);
    else if (word.starts_with("-j") && !word.starts_with("--")) {
      int jobs = 0;
      if (parse_int(word.substr(2), jobs) && jobs > 0) auth.jobs = jobs;
      continue;
    } else {
      continue;
    }
    if (value.starts_with("fifo:")) {
      auth = jobserver_auth{jobserver_auth::kind::fifo, -1, -1, std::string(value.substr(5)),
                            auth.jobs};
      continue;
    }
    const std::size_t comma = value.find(',');
    int r = -1, w = -1;
    if (comma != std::string_view::npos && parse_int(value.substr(0, comma), r) &&
        parse_int(value.substr(comma + 1), w) && r >= 0 && w >= 0)
      auth = jobserver_auth{jobserver_auth::kind::pipe, r, w, {}, auth.jobs};
  }
  return auth;
}

std::unique_ptr<jobserver> jobserver::connect(const jobserver_auth& auth, std::string* why) {
  auto no = [&](std::string text) -> std::unique_ptr<jobserver> {
    if (why != nullptr) *why = std::move(text);
    return nullptr;
  };
  if (auth.how == jobserver_auth::kind::none) return no("MAKEFLAGS names no jobserver");
  int read_fd = -1, write_fd = -1;
  if (auth.how == jobserver_auth::kind::pipe) {
    const std::string fds = std::to_string(auth.read_fd) + "," + std::to_string(auth.write_fd);
    if (!is_open_pipe(auth.read_fd) || !is_open_pipe(auth.write_fd))
      return no("make's jobserver (fds " + fds +
                ") is not open in this process: make passes it only to recipes it treats as "
                "recursive (prefix the command with '+'); using this process's own budget");
    const std::string proc = "/proc/self/fd/" + std::to_string(auth.read_fd);
    read_fd = ::open(proc.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (read_fd < 0) return no("cannot open make's jobserver through " + proc);
    write_fd = ::fcntl(auth.write_fd, F_DUPFD_CLOEXEC, 3);
    if (write_fd < 0) {
      ::close(read_fd);
      return no("cannot duplicate make's jobserver write descriptor");
    }
  } else {
    read_fd = ::open(auth.fifo.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (read_fd < 0) return no("cannot open make's jobserver fifo " + auth.fifo);
    write_fd = ::open(auth.fifo.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC);  // we are a reader
    if (write_fd < 0) {
      ::close(read_fd);
      return no("cannot open make's jobserver fifo " + auth.fifo + " for writing");
    }
    struct stat st{};
    if (::fstat(read_fd, &st) != 0 || !S_ISFIFO(st.st_mode)) {
      ::close(read_fd);
      ::close(write_fd);
      return no("make's jobserver " + auth.fifo + " is not a fifo");
    }
  }
  std::unique_ptr<jobserver> js(new jobserver(auth, read_fd, write_fd, true));
  static const bool registered = (std::atexit(&return_at_exit), true);
  (void)registered;
  std::lock_guard<std::mutex> lock(connected_mutex);
  connected = js.get();
  return js;
}

jobserver::jobserver(jobserver_auth auth, int read_fd, int write_fd, bool own_write)
    : auth_(std::move(auth)), read_fd_(read_fd), write_fd_(write_fd), own_write_(own_write) {}

jobserver::~jobserver() {
  {
    std::lock_guard<std::mutex> lock(connected_mutex);
    if (connected == this) connected = nullptr;
  }
  return_all();
  ::close(read_fd_);
  if (own_write_) ::close(write_fd_);
}

bool jobserver::try_take() noexcept {
  std::lock_guard<std::mutex> lock(mutex_);
  char token = 0;
  for (;;) {
    const ssize_t n = ::read(read_fd_, &token, 1);
    if (n == 1) break;
    if (n < 0 && errno == EINTR) continue;
    return false;  // EAGAIN: none free now; 0: make has gone
  }
  try {
    tokens_.push_back(token);
  } catch (const std::bad_alloc&) {
    (void)!::write(write_fd_, &token, 1);  // cannot remember it: give it back at once
    return false;
  }
  return true;
}

namespace {
// One byte back to make; a full pipe (never, with make's few tokens) is waited out briefly.
void write_token(int fd, char token) noexcept {
  for (int tries = 0; tries < 1000; ++tries) {
    const ssize_t n = ::write(fd, &token, 1);
    if (n == 1) return;
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno != EAGAIN) return;
    struct pollfd p{fd, POLLOUT, 0};
    ::poll(&p, 1, 10);
  }
}
}  // namespace

void jobserver::give_back() noexcept {
  std::lock_guard<std::mutex> lock(mutex_);
  if (tokens_.empty()) return;
  const char token = tokens_.back();
  tokens_.pop_back();
  write_token(write_fd_, token);
}

void jobserver::return_all() noexcept {
  std::lock_guard<std::mutex> lock(mutex_);
  while (!tokens_.empty()) {
    write_token(write_fd_, tokens_.back());
    tokens_.pop_back();
  }
}

unsigned jobserver::held() const noexcept {
  std::lock_guard<std::mutex> lock(mutex_);
  return static_cast<unsigned>(tokens_.size());
}

void jobserver::after_fork_child() noexcept {
  new (&mutex_) std::mutex;  // a parent's thread may have held it: only this thread exists now
  tokens_.clear();           // the parent's to give back; the child takes its own
}

std::string jobserver::describe() const {
  std::string where =
      auth_.how == jobserver_auth::kind::fifo
          ? "fifo " + auth_.fifo
          : "fds " + std::to_string(auth_.read_fd) + "," + std::to_string(auth_.write_fd);
  std::string jobs = auth_.jobs > 0 ? ", make -j" + std::to_string(auth_.jobs) : "";
  return "make's jobserver (" + where + jobs + ")";
}

}  // namespace corral
