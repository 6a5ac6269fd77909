// A machine share (machine_share.hpp, docs/share.md): permits as byte locks on a private file.
//
// The file's bytes, as lock ranges (advisory, open-file-description locks; the data only in the
// header and the member records):
//   byte 0               the guard: held (exclusive) for the moment of a join, a leave or an
//   inspect byte 1               membership: every member holds it shared; whoever can lock it
//   exclusively
//                        is alone (the last member, or nobody: a stale file)
//   [0, 64)              the header's data: magic, size, the highest member record used
//   permit_base + i      permit i (i < size): held exclusively by the member that holds it
//   record_base + 16k    member record k: its first byte held exclusively by the member for life;
//                        data: pid and the permits it holds, for `info`
// The kernel drops an open file description's locks when its last descriptor closes, so a member
// that dies, by any signal, gives everything back at once. The descriptor is close-on-exec, and a
// forked child closes its copy at once (after_fork_child): no other process ever keeps a member's
// locks alive.
#include "corral/machine_share.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <new>
#include <stdexcept>
#include <system_error>
#include <thread>

#include "corral/budget.hpp"

namespace corral {
namespace {

constexpr off_t guard_byte = 0;
constexpr off_t member_byte = 1;
constexpr off_t permit_base = 4096;
constexpr off_t record_base = permit_base + machine_share::max_size;
constexpr off_t record_bytes = 16;
constexpr std::uint32_t max_records = 1u << 16;
constexpr char magic[16] = "corral share 1\n";
constexpr const char* suffix = ".share";
// A guard held longer than this belongs to a stopped process: give up rather than hang.
constexpr auto guard_patience = std::chrono::seconds(10);

struct header {
  char magic[16];
  std::uint32_t size;
  std::uint32_t records;  // member records ever used: inspect() reads [0, records)
};

struct record {
  std::int32_t pid;
  std::uint32_t permits;
  std::uint64_t unused;
};
static_assert(sizeof(record) == record_bytes);

[[noreturn]] void fail(int error, const std::string& what) {
  throw std::system_error(error, std::generic_category(), what);
}

// 0 or the errno of F_OFD_SETLK(W).
int set_lock(int fd, short type, off_t start, off_t len = 1) noexcept {
  struct flock fl{};
  fl.l_type = type;
  fl.l_whence = SEEK_SET;
  fl.l_start = start;
  fl.l_len = len;
  while (::fcntl(fd, F_OFD_SETLK, &fl) != 0) {
    if (errno != EINTR) return errno;
  }
  return 0;
}

// Whether an open file description other than fd's holds a lock on `start` that excludes a writer.
bool locked_elsewhere(int fd, off_t start) noexcept {
  struct flock fl{};
  fl.l_type = F_WRLCK;
  fl.l_whence = SEEK_SET;
  fl.l_start = start;
  fl.l_len = 1;
  if (::fcntl(fd, F_OFD_GETLK, &fl) != 0) return false;
  return fl.l_type != F_UNLCK;
}

// The guard, polled: a join or leave holds it for microseconds.
bool take_guard(int fd) noexcept {
  const auto until = std::chrono::steady_clock::now() + guard_patience;
  auto pause = std::chrono::microseconds(50);
  for (;;) {
    const int rc = set_lock(fd, F_WRLCK, guard_byte);
    if (rc == 0) return true;
    if (rc != EAGAIN && rc != EACCES) return false;
    if (std::chrono::steady_clock::now() >= until) return false;
    std::this_thread::sleep_for(pause);
    pause = std::min<std::chrono::microseconds>(pause * 2, std::chrono::milliseconds(10));
  }
}

void check_private(const struct stat& st, const std::string& path, bool directory) {
  const char* what = directory ? "share directory" : "share file";
  if (directory ? !S_ISDIR(st.st_mode) : !S_ISREG(st.st_mode))
    fail(EPERM, std::string("corral: the ") + what + " " + path + " is not a " +
                    (directory ? "directory" : "regular file") + " (a link?); refusing it");
  if (st.st_uid != ::geteuid())
    fail(EPERM, std::string("corral: the ") + what + " " + path + " belongs to uid " +
                    std::to_string(st.st_uid) + ", not to you (uid " + std::to_string(::geteuid()) +
                    "); refusing it");
  if ((st.st_mode & 077) != 0) {
    char mode[8];
    std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(st.st_mode & 07777));
    fail(EPERM, std::string("corral: the ") + what + " " + path + " has mode " + mode +
                    ", open to others; it must be private (" + (directory ? "0700" : "0600") +
                    "); refusing it");
  }
}

bool read_header(int fd, header& h) noexcept {
  if (::pread(fd, &h, sizeof h, 0) != static_cast<ssize_t>(sizeof h)) return false;
  return std::memcmp(h.magic, magic, sizeof magic) == 0 && h.size >= 1 &&
         h.size <= machine_share::max_size && h.records <= max_records;
}

bool same_file(const std::string& path, const struct stat& opened) noexcept {
  struct stat now{};
  return ::stat(path.c_str(), &now) == 0 && now.st_dev == opened.st_dev &&
         now.st_ino == opened.st_ino;
}

// `fd` moved to a number near the top of the first 1024 (close-on-exec), so that the program's own
// files get the numbers they get under plain python (its first open() is 3), and a program that
// closed every descriptor (a daemon's closerange) and opens its own again does not get this number.
int out_of_the_way(int fd) noexcept {
  struct rlimit limit{};
  if (::getrlimit(RLIMIT_NOFILE, &limit) != 0 || limit.rlim_cur < 16) return fd;
  const rlim_t top = std::min<rlim_t>(limit.rlim_cur, 1024);  // 960 at the usual 1024, 60 at 64
  const int floor = static_cast<int>(top - std::max<rlim_t>(1, top / 16));
  const int moved = ::fcntl(fd, F_DUPFD_CLOEXEC, floor);
  if (moved < 0) return fd;  // none free up there: keep the low one
  ::close(fd);  // no lock taken yet: the description (and later its locks) is `moved`'s
  return moved;
}

// The share file, opened (not created unless `create`) and checked private; -1 when absent.
int open_share_file(const std::string& path, bool create, struct stat& st) {
  const int flags = O_RDWR | O_CLOEXEC | O_NOFOLLOW | (create ? O_CREAT : 0);
  const int fd = ::open(path.c_str(), flags, 0600);
  if (fd < 0) {
    if (!create && errno == ENOENT) return -1;
    if (errno == ELOOP) fail(EPERM, "corral: the share file " + path + " is a link; refusing it");
    fail(errno, "corral: cannot open the share file " + path);
  }
  if (::fstat(fd, &st) != 0) {
    const int error = errno;
    ::close(fd);
    fail(error, "corral: cannot stat the share file " + path);
  }
  try {
    check_private(st, path, false);
  } catch (...) {
    ::close(fd);
    throw;
  }
  return out_of_the_way(fd);
}

// The share this process joined last, left at exit (so nothing is left behind).
std::mutex joined_mutex;
machine_share* joined = nullptr;

void leave_at_exit() {
  std::lock_guard<std::mutex> lock(joined_mutex);
  if (joined != nullptr) joined->leave();
}

}  // namespace

void machine_share::leave_joined() noexcept {
  leave_at_exit();
}

void machine_share::check_name(std::string_view name) {
  const bool plain = !name.empty() && name.size() <= 64 && name.front() != '.' &&
                     std::all_of(name.begin(), name.end(), [](char c) {
                       return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                              (c >= '0' && c <= '9') || c == '_' || c == '.' || c == '-';
                     });
  if (!plain)
    throw std::invalid_argument(
        "corral: a share name is 1 to 64 of the characters A-Z a-z 0-9 _ . - and does not start "
        "with a dot, got '" +
        std::string(name.substr(0, 80)) + "'");
}

std::string machine_share::directory(bool create) {
  std::string dir;
  const char* runtime = std::getenv("XDG_RUNTIME_DIR");
  if (runtime != nullptr && runtime[0] == '/')
    dir = std::string(runtime) + "/corral";
  else
    dir = "/tmp/corral-" + std::to_string(::geteuid());
  if (create && ::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST)
    fail(errno, "corral: cannot make the share directory " + dir);
  struct stat st{};
  if (::lstat(dir.c_str(), &st) != 0) {
    if (!create && errno == ENOENT) return dir;  // no share at all
    fail(errno, "corral: cannot stat the share directory " + dir);
  }
  check_private(st, dir, true);
  return dir;
}

std::vector<std::string> machine_share::list() {
  std::vector<std::string> names;
  const std::string dir = directory(false);
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return names;
  const std::string_view tail(suffix);
  while (const dirent* e = ::readdir(d)) {
    std::string_view n(e->d_name);
    if (n.size() > tail.size() && n.substr(n.size() - tail.size()) == tail)
      names.emplace_back(n.substr(0, n.size() - tail.size()));
  }
  ::closedir(d);
  std::sort(names.begin(), names.end());
  return names;
}

std::unique_ptr<machine_share> machine_share::join(const std::string& name, unsigned size) {
  check_name(name);
  if (size > max_size)
    throw std::invalid_argument("corral: a share's size is 1 to " + std::to_string(max_size) +
                                " permits, got " + std::to_string(size));
  if (size == 0) {
    budget_options options;
    options.with_topology = false;
    size = static_cast<unsigned>(std::clamp(read_budget(options).cpus, 1, int{max_size}));
  }
  std::unique_ptr<machine_share> share(
      new machine_share(name, directory() + "/" + name + suffix, size));
  {
    std::lock_guard<std::mutex> lock(share->mutex_);
    share->open_locked();
  }
  static const bool registered = (std::atexit(&leave_at_exit), true);
  (void)registered;
  std::lock_guard<std::mutex> lock(joined_mutex);
  joined = share.get();
  return share;
}

machine_share::machine_share(std::string name, std::string path, unsigned requested_size)
    : name_(std::move(name)), path_(std::move(path)), requested_size_(requested_size) {}

machine_share::~machine_share() {
  {
    std::lock_guard<std::mutex> lock(joined_mutex);
    if (joined == this) joined = nullptr;
  }
  leave();
}

void machine_share::open_locked() {
  for (int attempt = 0; attempt < 100; ++attempt) {
    struct stat st{};
    int fd = -1;
    try {
      fd = open_share_file(path_, true, st);
    } catch (const std::system_error& e) {
      if (e.code().value() != ENOENT) throw;
      directory();  // its last member removed the directory meanwhile: make it again
      continue;
    }
    if (!take_guard(fd)) {
      ::close(fd);
      fail(EAGAIN, "corral: the share " + path_ + " is held by a stopped process; try again");
    }
    if (!same_file(path_, st)) {  // its last member removed it meanwhile: open the new one
      ::close(fd);
      continue;
    }
    header h{};
    const bool live = locked_elsewhere(fd, member_byte);
    if (!live || !read_header(fd, h)) {  // new, or stale: its last member was killed
      std::memset(&h, 0, sizeof h);
      std::memcpy(h.magic, magic, sizeof magic);
      h.size = requested_size_;
      h.records = 0;
    }
    std::uint32_t k = 0;
    while (k < max_records && set_lock(fd, F_WRLCK, record_base + k * record_bytes) != 0) ++k;
    if (k == max_records || set_lock(fd, F_RDLCK, member_byte) != 0) {
      ::close(fd);
      fail(EUSERS, "corral: the share " + path_ + " has too many members");
    }
    h.records = std::max(h.records, k + 1);
    if (::pwrite(fd, &h, sizeof h, 0) != static_cast<ssize_t>(sizeof h)) {
      const int error = errno;
      ::close(fd);
      fail(error, "corral: cannot write the share file " + path_);
    }
    fd_ = fd;
    file_ = {st.st_dev, st.st_ino};
    opened_by_ = ::getpid();
    record_ = k;
    size_ = h.size;
    next_ = static_cast<unsigned>(opened_by_) % size_;  // members start their search apart
    mine_.clear();
    held_by_me_.assign(size_, false);
    write_record_locked();
    set_lock(fd, F_UNLCK, guard_byte);
    return;
  }
  fail(EAGAIN, "corral: the share file " + path_ + " keeps being replaced");
}

void machine_share::write_record_locked() noexcept {
  const record r{static_cast<std::int32_t>(opened_by_), static_cast<std::uint32_t>(mine_.size()),
                 0};
  if (::pwrite(fd_, &r, sizeof r, record_base + record_ * record_bytes) != sizeof r) {
    // `info` shows a stale count; the permits themselves are the locks
  }
}

bool machine_share::try_take() noexcept {
  std::lock_guard<std::mutex> lock(mutex_);
  // The program closed our descriptor (fd_still_ours_locked): no share to ask, its own budget.
  if (lost_) return true;
  if (left_) return false;
  if (fd_ >= 0 && opened_by_ == ::getpid() && !fd_still_ours_locked()) return true;
  if (fd_ < 0 || opened_by_ != ::getpid()) {  // a forked child: a member of its own
    try {
      open_locked();
    } catch (...) {
      left_ = true;  // its own first permit only, as a process outside any share
      return false;
    }
  }
  for (unsigned n = 0; n < size_; ++n) {
    const unsigned i = (next_ + n) % size_;
    if (held_by_me_[i]) continue;  // ours already: a lock on it would just succeed again
    if (set_lock(fd_, F_WRLCK, permit_base + i) == 0) {
      held_by_me_[i] = true;
      mine_.push_back(i);
      next_ = (i + 1) % size_;
      write_record_locked();
      return true;
    }
  }
  return false;
}

void machine_share::give_back() noexcept {
  std::lock_guard<std::mutex> lock(mutex_);
  if (mine_.empty() || fd_ < 0 || !fd_still_ours_locked()) return;
  const unsigned i = mine_.back();
  mine_.pop_back();
  held_by_me_[i] = false;
  set_lock(fd_, F_UNLCK, permit_base + i);
  write_record_locked();
}

unsigned machine_share::held() const noexcept {
  std::lock_guard<std::mutex> lock(mutex_);
  return static_cast<unsigned>(mine_.size());
}

void machine_share::after_fork_child() noexcept {
  new (&mutex_) std::mutex;  // a parent's thread may have held it: only this thread exists now
  close_locked();            // the parent's description and locks stay the parent's
  opened_by_ = 0;
  record_ = -1;
  mine_.clear();
  std::fill(held_by_me_.begin(), held_by_me_.end(), false);
}

void machine_share::close_locked() noexcept {
  if (fd_still_ours_locked()) ::close(fd_);  // never a number the program has made its own
  fd_ = -1;
  mine_.clear();
}

bool machine_share::fd_still_ours_locked() noexcept {
  if (fd_ < 0) return false;
  struct stat st{};
  if (::fstat(fd_, &st) == 0 && st.st_dev == file_.first && st.st_ino == file_.second) return true;
  // Closed by the program (its locks went with it), perhaps reopened as a file of its own: forget
  // the number, and run on this process's own budget from now on, as outside any share.
  fd_ = -1;
  lost_ = true;
  mine_.clear();
  std::fill(held_by_me_.begin(), held_by_me_.end(), false);
  return false;
}

void machine_share::leave() noexcept {
  std::lock_guard<std::mutex> lock(mutex_);
  if (left_) return;
  left_ = true;
  if (fd_ < 0 || opened_by_ != ::getpid() || !fd_still_ours_locked()) return;
  if (take_guard(fd_)) {
    set_lock(fd_, F_UNLCK, permit_base, max_size);
    set_lock(fd_, F_UNLCK, record_base + record_ * record_bytes);
    // Membership shared -> exclusive succeeds only when no other member holds it: we are the last.
    struct stat st{};
    if (set_lock(fd_, F_WRLCK, member_byte) == 0 && ::fstat(fd_, &st) == 0 &&
        same_file(path_, st)) {
      ::unlink(path_.c_str());
      ::rmdir(path_.substr(0, path_.rfind('/')).c_str());  // fails while other shares are in it
    }
  }
  close_locked();  // drops every lock left, the guard included
}

std::string machine_share::describe() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return "machine share '" + name_ + "' (" + std::to_string(size_) + " permits, " + path_ + ")";
}

std::optional<share_status> machine_share::inspect(const std::string& name) {
  check_name(name);
  share_status out;
  out.name = name;
  out.path = directory(false) + "/" + name + suffix;
  struct stat st{};
  const int fd = open_share_file(out.path, false, st);
  if (fd < 0) return std::nullopt;
  struct closer {
    int fd;
    ~closer() { ::close(fd); }
  } close_at_end{fd};
  if (!take_guard(fd))
    fail(EAGAIN, "corral: the share " + out.path + " is held by a stopped process; try again");
  header h{};
  const bool valid = read_header(fd, h);
  if (!locked_elsewhere(fd, member_byte)) {  // no member: left by a killed last member
    out.stale = true;
    out.size = valid ? h.size : 0;
    if (same_file(out.path, st)) {
      ::unlink(out.path.c_str());
      ::rmdir(
          out.path.substr(0, out.path.rfind('/')).c_str());  // fails while other shares are in it
    }
    return out;
  }
  out.size = valid ? h.size : 0;
  for (unsigned i = 0; i < out.size; ++i)
    if (locked_elsewhere(fd, permit_base + i)) ++out.held;
  for (std::uint32_t k = 0; valid && k < h.records; ++k) {
    if (!locked_elsewhere(fd, record_base + k * record_bytes))
      continue;  // free, or a dead member's
    record r{};
    if (::pread(fd, &r, sizeof r, record_base + k * record_bytes) != sizeof r) continue;
    out.members.push_back({static_cast<pid_t>(r.pid), r.permits});
  }
  return out;
}

}  // namespace corral
