// The wait monitor's thread (wait_monitor.hpp says what it does; scheduler_waiting.cpp has the
// worker's side of lending: arm, disarm, settle). It changes the slot table's counters only through
// its functions (count_blocked_and_give_back_slot, count_returner, try_acquire_slot,
// count_returned: scheduler_slots.cpp).
//
// Every change of a record's lend stage by the monitor is: CAS from a stable stage to `busy`
// (acquire: we see the worker's arming and what preceded it), the counter updates, then a release
// store of the new stable stage (the worker's acquiring CAS out of it sees those updates). The
// worker never touches its slot while the stage is lent or reclaiming without first taking the
// stage back with its own CAS, so each lent slot is released once (by us) and taken back once (by
// us or it).
#include "wait_monitor.hpp"

#include <signal.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <chrono>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <system_error>

#include "assert.hpp"
#include "futex.hpp"

namespace corral::detail {
namespace {

constexpr auto sample_interval = std::chrono::milliseconds(1);

bool is_futex_call(long number) noexcept {
  if (number == SYS_futex) return true;
#ifdef SYS_futex_waitv
  if (number == SYS_futex_waitv) return true;
#endif
  return false;
}

}  // namespace

char thread_state_of(const char* stat_text) noexcept {
  const char* end_of_name =
      std::strrchr(stat_text, ')');  // the name may hold spaces and parentheses
  if (end_of_name == nullptr || end_of_name[1] == '\0' || end_of_name[2] == '\0') return '\0';
  return end_of_name[2];
}

bool sleeping_call_of(const char* syscall_text, sleep_kind& kind) noexcept {
  if (std::strncmp(syscall_text, "running", 7) == 0) return false;  // it has just woken
  char* after = nullptr;
  const long number = std::strtol(syscall_text, &after, 10);
  if (after == syscall_text || number < 0) return false;
  kind = is_futex_call(number) ? sleep_kind::futex : sleep_kind::other;
  return true;
}

bool thread_cpu_ns(pid_t tid, unsigned long long& out) noexcept {
  // The kernel's clock id for one thread's CPU time, as glibc's pthread_getcpuclockid makes it from
  // the thread's id (a pthread_t of another thread may be gone; a tid read as gone is harmless):
  // (~tid << 3) | CPUCLOCK_PERTHREAD_MASK (4) | CPUCLOCK_SCHED (2) (linux/posix-timers.h).
  const clockid_t clock = static_cast<clockid_t>((~static_cast<unsigned>(tid) << 3) | 4u | 2u);
  timespec ts{};
  if (::clock_gettime(clock, &ts) != 0) return false;
  out = static_cast<unsigned long long>(ts.tv_sec) * 1'000'000'000ull +
        static_cast<unsigned long long>(ts.tv_nsec);
  return true;
}

bool sleep_streak::ran_since_last_look(pid_t tid) noexcept {
  unsigned long long now_cpu = 0;
  const auto now = std::chrono::steady_clock::now();
  if (tid <= 0 || !thread_cpu_ns(tid, now_cpu)) return false;
  const bool had_look = looked_at != std::chrono::steady_clock::time_point{};
  const auto wall_ns =
      std::chrono::duration_cast<std::chrono::nanoseconds>(now - looked_at).count();
  const unsigned long long ran_ns = now_cpu - looked_cpu_ns;
  looked_cpu_ns = now_cpu;
  looked_at = now;
  if (!had_look || other_samples != 0 || futex_samples != 0 || wall_ns <= 0) return false;
  if (4 * ran_ns < 3 * static_cast<unsigned long long>(wall_ns)) return false;
  reset();
  cpu_known = false;  // the futex rule compares CPU times of consecutive samples asleep
  return true;
}

bool sleep_streak::waits_unannounced(const thread_sample& sample) noexcept {
  if (sample.asleep && sample.kind == sleep_kind::other) {
    ++other_samples;
    futex_samples = 0;
  } else if (sample.asleep && sample.kind == sleep_kind::futex && cpu_known &&
             sample.cpu_ns == cpu_ns) {
    ++futex_samples;  // in futex and has not run at all since the last sample
    other_samples = 0;
  } else {
    reset();
  }
  cpu_ns = sample.cpu_ns;
  cpu_known = sample.asleep;
  if (other_samples < other_samples_needed && futex_samples < futex_samples_needed) return false;
  reset();
  return true;
}

wait_monitor::wait_monitor(scheduler::state& s) : s_(s), history_(s.record_capacity) {
  const int rc = detail::create_thread_without_async_signals(&thread_, nullptr, &entry, this);
  if (rc != 0)
    throw std::system_error(rc, std::generic_category(), "corral: cannot start the wait monitor");
}

wait_monitor::~wait_monitor() {
  stop_.store(1, std::memory_order_seq_cst);
  futex_wake(&stop_, INT_MAX);
  s_.monitor_ec.notify_all();
  s_.slot_ec.notify_all();
  pthread_join(thread_, nullptr);
}

void* wait_monitor::entry(void* self) noexcept {
  pthread_setname_np(pthread_self(), "corral-monitor");
  static_cast<wait_monitor*>(self)->run();
  return nullptr;
}

void wait_monitor::run() noexcept {
  while (stop_.load(std::memory_order_acquire) == 0) {
    bool watching = false;
    bool any_reclaiming = false;
    pass(watching, any_reclaiming);
    files_.end_pass();
    if (!watching && s_.lent_now.load(std::memory_order_relaxed) == 0 && s_.self.running() == 0) {
      files_.close_all();  // asleep until a slot is taken: no file of ours stays open meanwhile
      idle_wait();
    } else
      tick(any_reclaiming);
  }
}

// Nothing to watch and no slot held: sleep until a thread takes a slot (try_acquire_slot wakes us).
void wait_monitor::idle_wait() noexcept {
  std::uint32_t key = s_.monitor_ec.prepare_wait();
  // After prepare_wait's fence: a slot taken before it is visible here; one taken after it sees our
  // waiter count in its notify (event_count.hpp).
  if (stop_.load(std::memory_order_acquire) != 0 || s_.self.running() != 0 ||
      s_.lent_now.load(std::memory_order_relaxed) != 0) {
    s_.monitor_ec.cancel_wait();
    return;
  }
  s_.monitor_ec.commit_wait(key);
}

void wait_monitor::tick(bool any_reclaiming) noexcept {
  if (any_reclaiming) {
    // A thread we registered as a returner waits for a slot: wake as soon as one is released.
    std::uint32_t key = s_.slot_ec.prepare_wait();
    if (stop_.load(std::memory_order_acquire) != 0 ||
        s_.free_slots.load(std::memory_order_relaxed) > 0) {
      s_.slot_ec.cancel_wait();
      return;
    }
    s_.slot_ec.commit_wait_for(key, sample_interval);
    return;
  }
  futex_wait_for(stop_, 0, sample_interval);
}

void wait_monitor::pass(bool& watching, bool& any_reclaiming) noexcept {
  const unsigned n = s_.high_water.load(std::memory_order_acquire);
  for (unsigned i = 0; i < n; ++i) {
    worker* w = s_.workers[i].load(std::memory_order_acquire);
    if (w == nullptr) continue;
    history& h = history_[i];
    const std::uint32_t stage = w->lend_state.load(std::memory_order_acquire);
    if (stage == armed) {
      watching = true;
      const std::uint32_t count = w->arm_count.load(std::memory_order_relaxed);
      const pid_t tid = w->tid.load(std::memory_order_relaxed);
      if (h.arm_count != count || h.tid != tid) h = {count, tid, {}};
      if (h.streak.ran_since_last_look(tid)) continue;
      if (h.streak.waits_unannounced(files_.sample(tid))) lend(*w, count);
    } else if (stage == lent) {
      watching = true;
      const thread_sample sample = files_.sample(w->tid.load(std::memory_order_relaxed));
      // Running again (or gone from /proc: it will settle the lend itself at its task boundary).
      if (!sample.asleep || sample.cpu_ns != h.streak.cpu_ns) reclaim(*w, lent);
      h.streak.cpu_ns = sample.cpu_ns;
    } else if (stage == detail::reclaiming) {
      watching = true;
      any_reclaiming = true;
      reclaim(*w, detail::reclaiming);
    } else {
      h.streak.reset();
    }
  }
}

void wait_monitor::lend(worker& w, std::uint32_t sampled_arm_count) noexcept {
  std::uint32_t expected = armed;
  if (!w.lend_state.compare_exchange_strong(expected, busy, std::memory_order_acquire,
                                            std::memory_order_relaxed))
    return;  // the task ended (or the thread announced a wait) meanwhile
  if (w.arm_count.load(std::memory_order_relaxed) != sampled_arm_count) {
    w.lend_state.store(armed,
                       std::memory_order_release);  // another task than the one we saw asleep
    return;
  }
  // What a blocking_scope does, for the sleeping thread: a parked worker or a spare takes the slot
  // when work waits.
  s_.lent_now.fetch_add(1, std::memory_order_relaxed);
  s_.lends.fetch_add(1, std::memory_order_relaxed);
  s_.count_blocked_and_give_back_slot();
  w.lend_state.store(lent, std::memory_order_release);
}

// From lent (the thread ran again): register it as a returner, as leaving a blocking scope does, so
// that slot holders yield at their next task boundary. From reclaiming: try again for a slot.
void wait_monitor::reclaim(worker& w, std::uint32_t from) noexcept {
  std::uint32_t expected = from;
  if (!w.lend_state.compare_exchange_strong(expected, busy, std::memory_order_acquire,
                                            std::memory_order_relaxed))
    return;                               // the thread settled it itself
  if (from == lent) s_.count_returner();  // as leaving a blocking scope
  if (s_.try_acquire_slot(true)) {
    [[maybe_unused]] unsigned lent_before = s_.lent_now.fetch_sub(1, std::memory_order_relaxed);
    CORRAL_ASSERT(lent_before > 0);
    s_.count_returned();
    w.lend_state.store(armed, std::memory_order_release);
    return;
  }
  w.lend_state.store(reclaiming, std::memory_order_release);
}

}  // namespace corral::detail
