// proc_thread_files.hpp says why the files are kept open and how a number the program took over is
// recognised. This file also keeps the process-wide table of open files that a forked child closes.
#include "proc_thread_files.hpp"

#include <fcntl.h>
#include <pthread.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>

#include "wait_monitor.hpp"

namespace corral::detail {
namespace {

// One open file of a monitor's. fd: -1 free, -2 claimed (being opened or closed), else the
// descriptor. dev and ino are written before fd is published (release) and read after it is loaded
// (acquire), by the owner and by a forked child's handler; only the owner changes a claimed slot.
struct table_slot {
  std::atomic<int> fd{-1};
  dev_t dev = 0;
  ino_t ino = 0;
};

constexpr int free_slot = -1;
constexpr int claimed_slot = -2;

// One to three files per thread (stat; syscall once seen asleep; schedstat where its run delay is
// read) and the task directory: room for 256 to 767 threads at once across all monitors. When it is
// full a thread is not sampled (it reads as "not asleep": it keeps its permit, as before the
// monitor existed), and its run delay is unknown.
std::array<table_slot, 768> the_table;
// Bumped in a forked child, after it closed the table's files: objects made before then drop their
// entries without closing them (a new owner may hold their slots and numbers by now).
std::atomic<unsigned> the_epoch{0};
std::once_flag fork_handler_installed;

bool is_same_file(int fd, dev_t dev, ino_t ino) noexcept {
  struct stat st{};
  return ::fstat(fd, &st) == 0 && st.st_dev == dev && st.st_ino == ino;
}

// In a forked child (one thread): the monitors' threads are not here, and their files must not
// stay open in the child (plain python's child has none of them).
void close_all_in_child() noexcept {
  for (table_slot& s : the_table) {
    const int fd = s.fd.load(std::memory_order_acquire);
    if (fd >= 0 && is_same_file(fd, s.dev, s.ino)) ::close(fd);
    s.fd.store(free_slot, std::memory_order_relaxed);
  }
  the_epoch.fetch_add(1, std::memory_order_relaxed);
}

// Opens path and lists it in the table; the slot's index, or -1. A fork between the open and the
// listing leaves that one file open in the child (its number is not known to the table yet).
int open_in_table(const char* path) noexcept {
  std::call_once(fork_handler_installed,
                 [] { pthread_atfork(nullptr, nullptr, &close_all_in_child); });
  for (std::size_t i = 0; i < the_table.size(); ++i) {
    int expected = free_slot;
    if (!the_table[i].fd.compare_exchange_strong(expected, claimed_slot, std::memory_order_acquire,
                                                 std::memory_order_relaxed))
      continue;
    const int fd = ::open(path, O_RDONLY | O_CLOEXEC);
    struct stat st{};
    if (fd < 0 || ::fstat(fd, &st) != 0) {
      if (fd >= 0) ::close(fd);
      the_table[i].fd.store(free_slot, std::memory_order_release);
      return -1;
    }
    the_table[i].dev = st.st_dev;
    the_table[i].ino = st.st_ino;
    the_table[i].fd.store(fd, std::memory_order_release);
    return static_cast<int>(i);
  }
  return -1;
}

int fd_in(int slot) noexcept {
  return the_table[static_cast<std::size_t>(slot)].fd.load(std::memory_order_relaxed);
}

bool still_ours(int slot) noexcept {
  const table_slot& s = the_table[static_cast<std::size_t>(slot)];
  const int fd = s.fd.load(std::memory_order_acquire);
  return fd >= 0 && is_same_file(fd, s.dev, s.ino);
}

// Closes the slot's file if the number is still ours (else it is the program's now), and frees it.
void close_in_table(int slot) noexcept {
  table_slot& s = the_table[static_cast<std::size_t>(slot)];
  const int fd = s.fd.load(std::memory_order_relaxed);
  // Closed before the slot is freed: a fork in between finds it listed, and its handler closes it
  // only if fstat still says it is ours.
  if (fd >= 0 && is_same_file(fd, s.dev, s.ino)) ::close(fd);
  s.fd.store(free_slot, std::memory_order_release);
}

// pread of a whole small file from offset 0, NUL-terminated; false when nothing was read.
bool read_from_start(int fd, char* buf, std::size_t size) noexcept {
  const ssize_t n = ::pread(fd, buf, size - 1, 0);
  if (n <= 0) return false;
  buf[n] = '\0';
  return true;
}

// Whether a stat file's text is thread tid's: "<tid> (name) ...".
bool is_stat_of(const char* text, pid_t tid) noexcept {
  char* after = nullptr;
  const long read_tid = std::strtol(text, &after, 10);
  return after != text && read_tid == tid && after[0] == ' ' && after[1] == '(';
}

}  // namespace

proc_thread_files::proc_thread_files() noexcept
    : epoch_(the_epoch.load(std::memory_order_relaxed)) {}

proc_thread_files::~proc_thread_files() {
  close_all();
}

void proc_thread_files::close_all() noexcept {
  forget_if_forked();  // in a forked child the files are closed already
  for (entry& e : entries_) close_entry(e);
  entries_.clear();
  if (task_dir_slot_ >= 0) close_in_table(task_dir_slot_);
  task_dir_slot_ = -1;
}

void proc_thread_files::forget_if_forked() noexcept {
  const unsigned now = the_epoch.load(std::memory_order_relaxed);
  if (epoch_ == now) return;
  entries_.clear();  // the child's handler closed them; their slots may be someone else's now
  task_dir_slot_ = -1;
  epoch_ = now;
}

void proc_thread_files::close_entry(entry& e) noexcept {
  if (e.stat_slot >= 0) close_in_table(e.stat_slot);
  if (e.syscall_slot >= 0) close_in_table(e.syscall_slot);
  if (e.schedstat_slot >= 0) close_in_table(e.schedstat_slot);
  e.stat_slot = e.syscall_slot = e.schedstat_slot = -1;
}

void proc_thread_files::drop(entry* e) noexcept {
  close_entry(*e);
  entries_.erase(entries_.begin() + (e - entries_.data()));
}

proc_thread_files::entry* proc_thread_files::open_entry(pid_t tid) noexcept {
  for (entry& e : entries_)
    if (e.tid == tid) return &e;
  char path[64];
  entry e;
  e.tid = tid;
  std::snprintf(path, sizeof path, "/proc/self/task/%d/stat", static_cast<int>(tid));
  e.stat_slot = open_in_table(path);
  if (e.stat_slot < 0) return nullptr;
  try {
    entries_.push_back(e);
  } catch (...) {
    close_entry(e);
    return nullptr;
  }
  return &entries_.back();
}

thread_sample proc_thread_files::sample(pid_t tid) noexcept {
  thread_sample out;
  if (tid <= 0) return out;
  forget_if_forked();
  char buf[512];
  // A second try after dropping the files: the thread's files went stale (the thread exited and
  // its id was reused), or the program closed our number and opened its own under it.
  for (int attempt = 0; attempt < 2; ++attempt) {
    entry* e = open_entry(tid);
    if (e == nullptr) return out;  // gone, or no room
    e->idle_passes = 0;
    if (!read_from_start(fd_in(e->stat_slot), buf, sizeof buf) || !is_stat_of(buf, tid)) {
      drop(e);
      continue;
    }
    out.readable = true;
    const char state = thread_state_of(buf);
    if (state != 'S' && state != 'D') return out;
    if (!thread_cpu_ns(tid, out.cpu_ns)) return out;
    // The system call it sleeps in (its file opened at the first sample that finds it asleep); a
    // file that cannot be opened or is not ours any more: never guess.
    if (e->syscall_slot < 0) {
      char path[64];
      std::snprintf(path, sizeof path, "/proc/self/task/%d/syscall", static_cast<int>(tid));
      e->syscall_slot = open_in_table(path);
      if (e->syscall_slot < 0) return out;
    }
    if (!still_ours(e->syscall_slot) || !read_from_start(fd_in(e->syscall_slot), buf, sizeof buf)) {
      drop(e);
      return out;
    }
    out.asleep = sleeping_call_of(buf, out.kind);  // kind stays none when it is not asleep
    return out;
  }
  return out;
}

bool proc_thread_files::run_delay_ns(pid_t tid, unsigned long long& delay_ns) noexcept {
  if (tid <= 0) return false;
  forget_if_forked();
  entry* e = open_entry(tid);
  if (e == nullptr) return false;
  e->idle_passes = 0;
  if (e->schedstat_slot < 0) {
    char path[64];
    std::snprintf(path, sizeof path, "/proc/self/task/%d/schedstat", static_cast<int>(tid));
    e->schedstat_slot = open_in_table(path);
    if (e->schedstat_slot < 0) return false;
  }
  char buf[128];
  // Read from a thread that exited, the file fails (ESRCH): dropped, opened afresh next time.
  if (!still_ours(e->schedstat_slot) ||
      !read_from_start(fd_in(e->schedstat_slot), buf, sizeof buf)) {
    drop(e);
    return false;
  }
  char* after = nullptr;
  std::strtoull(buf, &after, 10);  // time on a CPU
  if (after == buf) return false;
  char* end = nullptr;
  delay_ns = std::strtoull(after, &end, 10);  // time waiting on a runqueue
  return end != after;
}

int proc_thread_files::runnable_threads_besides(pid_t except_tid) noexcept {
  forget_if_forked();
  if (task_dir_slot_ < 0) task_dir_slot_ = open_in_table("/proc/self/task");
  // The offset is moved (lseek, getdents64) only while fstat says the number is still ours.
  if (task_dir_slot_ < 0 || !still_ours(task_dir_slot_)) {
    if (task_dir_slot_ >= 0) close_in_table(task_dir_slot_);
    task_dir_slot_ = -1;
    return -1;
  }
  const int dir = fd_in(task_dir_slot_);
  if (::lseek(dir, 0, SEEK_SET) != 0) return -1;
  int runnable = 0;
  alignas(8) char names[4096];
  char buf[512];
  for (;;) {
    const long n = ::syscall(SYS_getdents64, dir, names, sizeof names);
    if (n < 0) return -1;
    if (n == 0) return runnable;
    for (long at = 0; at < n;) {
      // struct linux_dirent64: d_ino (8), d_off (8), d_reclen (2), d_type (1), d_name.
      std::uint16_t reclen = 0;
      std::memcpy(&reclen, names + at + 16, sizeof reclen);
      const char* name = names + at + 19;
      at += reclen;
      char* after = nullptr;
      const long tid = std::strtol(name, &after, 10);
      if (after == name || *after != '\0' || tid == except_tid) continue;  // ".", ".."
      entry* e = open_entry(static_cast<pid_t>(tid));
      if (e == nullptr) return -1;  // no room, or it exited since the listing: cannot tell
      e->idle_passes = 0;
      if (!read_from_start(fd_in(e->stat_slot), buf, sizeof buf) ||
          !is_stat_of(buf, static_cast<pid_t>(tid))) {
        drop(e);  // exited since the listing, or the number is not ours: not runnable
        continue;
      }
      if (thread_state_of(buf) == 'R') ++runnable;
    }
  }
}

void proc_thread_files::end_pass() noexcept {
  forget_if_forked();
  for (std::size_t i = 0; i < entries_.size();) {
    if (++entries_[i].idle_passes <= idle_passes_to_close) {
      ++i;
      continue;
    }
    close_entry(entries_[i]);
    entries_[i] = entries_.back();
    entries_.pop_back();
  }
}

std::vector<int> proc_thread_files::open_descriptors() const {
  std::vector<int> fds;
  if (epoch_ != the_epoch.load(std::memory_order_relaxed)) return fds;
  for (const entry& e : entries_)
    for (int slot : {e.stat_slot, e.syscall_slot, e.schedstat_slot})
      if (slot >= 0) fds.push_back(fd_in(slot));
  if (task_dir_slot_ >= 0) fds.push_back(fd_in(task_dir_slot_));
  return fds;
}

}  // namespace corral::detail
