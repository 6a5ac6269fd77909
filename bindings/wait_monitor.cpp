#include "wait_monitor.hpp"

#include <fcntl.h>
#include <pthread.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <mutex>
#include <thread>
#include <utility>
#include <unordered_map>
#include <vector>

#include "corral/scheduler.hpp"

namespace corral::bindings::wait_monitor {
namespace {

constexpr std::chrono::milliseconds sample_interval{1};
// Samples asleep before a slot is lent: ~1-2 ms in I/O or a sleep; ~20 ms in futex (a lock, a
// condition variable: longer than a GIL hand-over takes, so that waiting for the GIL is not counted,
// yet a task blocked on a lock whose owner waits for a slot gets one: no deadlock).
constexpr int stalled_samples_needed = 2;
constexpr int futex_samples_needed = 20;

pid_t this_thread_id() noexcept {
  thread_local const pid_t id = static_cast<pid_t>(::syscall(SYS_gettid));
  return id;
}

// Reads a small /proc file into buf (NUL-terminated); false when it cannot be read.
bool read_small_file(const char* path, char* buf, std::size_t size) noexcept {
  const int fd = ::open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  const ssize_t n = ::read(fd, buf, size - 1);
  ::close(fd);
  if (n <= 0) return false;
  buf[n] = '\0';
  return true;
}

bool is_futex_call(long number) noexcept {
  if (number == SYS_futex) return true;
#ifdef SYS_futex_waitv
  if (number == SYS_futex_waitv) return true;
#endif
  return false;
}

enum class sleep_kind { none, futex, other };

// Whether thread `tid` of this process sleeps in a system call now, and in which (path, buf: scratch).
sleep_kind sleeping_in(pid_t tid, char* path, std::size_t path_size, char* buf, std::size_t buf_size) noexcept {
  std::snprintf(path, path_size, "/proc/self/task/%d/stat", static_cast<int>(tid));
  if (!read_small_file(path, buf, buf_size)) return sleep_kind::none;
  const char* end_of_name = std::strrchr(buf, ')');  // the name may hold spaces and parentheses
  if (end_of_name == nullptr || end_of_name[1] == '\0') return sleep_kind::none;
  const char state = end_of_name[2];
  if (state != 'S' && state != 'D') return sleep_kind::none;
  std::snprintf(path, path_size, "/proc/self/task/%d/syscall", static_cast<int>(tid));
  if (!read_small_file(path, buf, buf_size)) return sleep_kind::none;  // unreadable: never guess
  if (std::strncmp(buf, "running", 7) == 0) return sleep_kind::none;
  char* after = nullptr;
  const long number = std::strtol(buf, &after, 10);
  if (after == buf || number < 0) return sleep_kind::none;
  return is_futex_call(number) ? sleep_kind::futex : sleep_kind::other;
}

struct thread_sample {
  sleep_kind kind = sleep_kind::none;
  unsigned long long cpu_ns = 0;  // CPU time so far: unchanged between samples = did not run at all
};

// Whether thread `tid` of this process sleeps in a system call now, in which kind, and its CPU time.
thread_sample sample_thread(pid_t tid) noexcept {
  thread_sample out;
  char path[64];
  char buf[512];
  std::snprintf(path, sizeof path, "/proc/self/task/%d/schedstat", static_cast<int>(tid));
  if (!read_small_file(path, buf, sizeof buf)) return out;
  out.cpu_ns = std::strtoull(buf, nullptr, 10);
  out.kind = sleeping_in(tid, path, sizeof path, buf, sizeof buf);
  return out;
}

struct thread_entry {
  int tasks = 0;                // Python tasks the thread is inside (nested ones run inside waits)
  int announced = 0;            // announced waits in the innermost task
  std::vector<int> outer;       // `announced` of the enclosing tasks
  int stalled_samples = 0;      // consecutive samples found asleep outside futex
  int futex_samples = 0;        // consecutive samples found asleep in futex
  unsigned long long cpu_ns = 0;  // CPU time at the last sample
};

class monitor {
 public:
  void task_started() {
    std::lock_guard<std::mutex> lock(mutex_);
    thread_entry& e = threads_[this_thread_id()];
    ++e.tasks;
    e.outer.push_back(e.announced);
    e.announced = 0;
    e.stalled_samples = 0;
    e.futex_samples = 0;
    if (!thread_started_) {
      std::thread([this] { loop(); }).detach();  // lives as long as the process
      thread_started_ = true;
    }
    wake_.notify_one();
  }

  void task_finished() {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = threads_.find(this_thread_id());
    if (it == threads_.end()) return;
    thread_entry& e = it->second;
    if (--e.tasks <= 0) {
      threads_.erase(it);
      return;
    }
    e.announced = e.outer.back();
    e.outer.pop_back();
    e.stalled_samples = 0;
    e.futex_samples = 0;
  }

  void announced(int delta) {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = threads_.find(this_thread_id());
    if (it == threads_.end()) return;
    it->second.announced += delta;
    it->second.stalled_samples = 0;
    it->second.futex_samples = 0;
  }

  void set_base(unsigned slots) {
    std::lock_guard<std::mutex> lock(mutex_);
    base_ = slots;
    last_set_ = 0;
    apply_locked();
  }

  unsigned lent() {
    std::lock_guard<std::mutex> lock(mutex_);
    return lent_;
  }

 private:
  void loop() noexcept {
    std::unique_lock<std::mutex> lock(mutex_);
    std::vector<pid_t> candidates;
    std::vector<std::pair<pid_t, thread_sample>> samples;
    for (;;) {
      wake_.wait(lock, [&] { return !threads_.empty() || lent_ > 0; });
      candidates.clear();
      for (const auto& [tid, e] : threads_)
        if (e.announced == 0) candidates.push_back(tid);
      lock.unlock();
      samples.clear();
      for (pid_t tid : candidates) samples.emplace_back(tid, sample_thread(tid));
      lock.lock();
      unsigned stalled = 0;
      for (auto& [tid, e] : threads_) {
        // In futex, only a thread that has not run at all since the last sample counts: one long
        // wait, not a thread that keeps waking up (a GIL waiter wakes every 5 ms to ask for the GIL).
        sleep_kind kind = sleep_kind::none;
        if (e.announced == 0) {
          for (const auto& [sampled_tid, sample] : samples) {
            if (sampled_tid != tid) continue;
            kind = sample.kind;
            if (kind == sleep_kind::futex && sample.cpu_ns != e.cpu_ns) kind = sleep_kind::none;
            e.cpu_ns = sample.cpu_ns;
          }
        }
        e.stalled_samples = kind == sleep_kind::other ? e.stalled_samples + 1 : 0;
        e.futex_samples = kind == sleep_kind::futex ? e.futex_samples + 1 : 0;
        if (e.stalled_samples >= stalled_samples_needed || e.futex_samples >= futex_samples_needed) ++stalled;
      }
      wanted_ = stalled;
      apply_locked();
      lock.unlock();
      std::this_thread::sleep_for(sample_interval);
      lock.lock();
    }
  }

  // Slots = base + lent. Someone else's set_slots since our last one becomes the new base.
  void apply_locked() noexcept {
    try {
      scheduler& s = scheduler::global();
      const unsigned now = s.slots();
      if (base_ == 0 || (last_set_ != 0 && now != last_set_)) base_ = now;
      const unsigned target = std::min(base_ + wanted_, std::max(base_, s.max_threads()));
      if (target != now) s.set_slots(target);
      last_set_ = target;
      lent_ = target - base_;
    } catch (const std::exception&) {
      // set_slots refused (cannot happen with the cap above): leave the slots as they are.
    }
  }

  std::mutex mutex_;
  std::condition_variable wake_;
  std::unordered_map<pid_t, thread_entry> threads_;
  bool thread_started_ = false;
  unsigned base_ = 0;      // slots wanted with nothing stalled (0: not read yet)
  unsigned last_set_ = 0;  // what we last set (0: nothing)
  unsigned wanted_ = 0;    // stalled threads now
  unsigned lent_ = 0;      // slots added for them
};

// Never destroyed: worker threads may report to it while the process exits. A child after fork()
// gets a fresh one (the parent's monitor thread does not exist there and its mutex may be held).
std::atomic<monitor*> current{nullptr};
std::once_flag fork_handler_once;

monitor& instance() {
  std::call_once(fork_handler_once, [] {
    ::pthread_atfork(nullptr, nullptr, [] { current.store(nullptr, std::memory_order_relaxed); });
  });
  monitor* m = current.load(std::memory_order_acquire);
  if (m != nullptr) return *m;
  auto* fresh = new monitor;
  if (current.compare_exchange_strong(m, fresh, std::memory_order_acq_rel)) return *fresh;
  delete fresh;
  return *m;
}

}  // namespace

void task_started() noexcept {
  try {
    instance().task_started();
  } catch (...) {  // out of memory or no thread: the task runs unmonitored
  }
}

void task_finished() noexcept {
  try {
    instance().task_finished();
  } catch (...) {
  }
}

void announced_wait_started() noexcept {
  try {
    instance().announced(+1);
  } catch (...) {
  }
}

void announced_wait_finished() noexcept {
  try {
    instance().announced(-1);
  } catch (...) {
  }
}

void set_base_slots(unsigned slots) { instance().set_base(slots); }

unsigned lent_slots() noexcept {
  try {
    return instance().lent();
  } catch (...) {
    return 0;
  }
}

}  // namespace corral::bindings::wait_monitor
