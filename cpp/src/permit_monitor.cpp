// The permit monitor's thread (permit_monitor.hpp says what it does). It reads the holders under
// the table's mutex, samples /proc without it, and changes a holder's stage only under the mutex
// and only if the holder's thread and generation are the ones it sampled: a holder that released,
// paused or took a new permit meanwhile is left alone, so each lend is given back once (by the
// monitor) and taken back once (by the monitor on waking, or by the thread's release).
#include "permit_monitor.hpp"

#include <sched.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <climits>
#include <system_error>

#include "assert.hpp"
#include "futex.hpp"
#include "wait_monitor.hpp"

namespace corral::detail {
namespace {

constexpr auto sample_interval = std::chrono::milliseconds(1);
// Every holder found computing on the last pass: look less often (each look preempts a worker on a
// machine whose every core runs one; W3 lost about 4% of each task's speed to 1 ms looks).
constexpr auto busy_interval = std::chrono::milliseconds(4);
constexpr auto idle_interval = std::chrono::milliseconds(20);  // nobody to watch: look less often

// The CPU time of every thread of the process so far (BLAS and OpenMP threads, the main thread,
// threads outside the pools: whatever runs on the budget's cores), in ns; 0 when it cannot be read.
std::int64_t process_cpu_ns() noexcept {
  timespec ts{};
  if (clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts) != 0) return 0;
  return static_cast<std::int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

}  // namespace

permit_monitor::permit_monitor(permit_table::state& s) : s_(s) {
  const int rc = create_thread_without_async_signals(&thread_, nullptr, &entry, this);
  if (rc != 0)
    throw std::system_error(rc, std::generic_category(), "corral: cannot start the permit monitor");
}

permit_monitor::~permit_monitor() {
  stop_.store(1, std::memory_order_release);
  futex_wake(&stop_, INT_MAX);
  pthread_join(thread_, nullptr);
}

void* permit_monitor::entry(void* self) noexcept {
  pthread_setname_np(pthread_self(), "corral-permits");
  static_cast<permit_monitor*>(self)->run();
  return nullptr;
}

void permit_monitor::run() noexcept {
  tid_ = static_cast<pid_t>(::syscall(SYS_gettid));
  int idle_passes = 0;
  while (stop_.load(std::memory_order_acquire) == 0) {
    const bool all_computing = pass();
    files_.end_pass();
    idle_passes = watched_.empty() ? idle_passes + 1 : 0;
    if (idle_passes >= idle_passes_to_exit) {
      std::lock_guard<std::mutex> lock(s_.mutex);
      if (s_.holders.empty()) {  // under the mutex: a holder registering now sees exited_
        files_.close_all();      // nothing left to watch: no file of ours stays open
        exited_ = true;
        return;
      }
      idle_passes = 0;
    }
    futex_wait_for(
        stop_, 0,
        watched_.empty() ? idle_interval : (all_computing ? busy_interval : sample_interval));
  }
}

bool permit_monitor::pass() noexcept {
  // The holders as they are now; samples kept for those still the same thread, in the same
  // generation and stage.
  std::vector<watched> now;
  standstill seen;  // what the idle-core rule compares with its window (below)
  {
    std::lock_guard<std::mutex> lock(s_.mutex);
    seen.anyone_waits = s_.head != nullptr;
    seen.turnover = s_.last_turnover;
    seen.starts = s_.task_starts.load(std::memory_order_relaxed);
    seen.cores = s_.permits;
    if (s_.source != nullptr)  // a member of a machine-wide share runs on what it drew
      seen.cores = std::min(seen.cores, std::max(1u, s_.drawn.load(std::memory_order_relaxed)));
    try {
      now.reserve(s_.holders.size());
    } catch (...) {
      return false;
    }
    unsigned in_tasks = 0;
    for (holder* h : s_.holders) {
      if (h->stage == holder_stage::holding && h->keep.load(std::memory_order_relaxed) != kept)
        ++in_tasks;
      if (h->stage == holder_stage::paused) continue;
      watched w{h,     h->generation.load(std::memory_order_relaxed),  h->tid, h->stage, {},
                false, h->keep.load(std::memory_order_relaxed) == kept};
      // The same holder only with the same tid too: a thread's holder is thread-local, and the
      // next thread started after one ends usually gets its storage again (same address, same
      // generation: each one's first task); taken for the ended thread, it would be sampled
      // through that thread's files (gone: never asleep, never lent) for as long as its task lasts.
      for (const watched& old : watched_)
        if (old.who == h && old.tid == w.tid && old.generation == w.generation &&
            old.stage == w.stage && old.kept == w.kept) {
          w = old;
          w.seen_before = true;
        }
      now.push_back(w);
    }
    // Permits handed to a waiter that has not run since (a wake-up on a loaded machine): awake.
    const unsigned held = s_.held.load(std::memory_order_relaxed);
    const unsigned kept_n = s_.kept_n.load(std::memory_order_relaxed);
    seen.handed_over = held > kept_n + in_tasks ? held - kept_n - in_tasks : 0;
  }
  watched_.swap(now);

  std::vector<watched*> lend, reclaim, unkeep;
  bool all_computing = true;
  unsigned awake = 0;      // holders in a task that compute, are runnable, or only just slept
  bool preempted = false;  // a holder runnable but hardly running: no core is idle
  for (watched& w : watched_) {
    if (w.kept) {  // kept for a next task that has not come for a whole pass: give it back
      all_computing = false;
      if (w.seen_before) unkeep.push_back(&w);
      continue;
    }
    // The share of the time since the last look that the holder ran (1: unknown).
    double ran_share = 1.0;
    if (w.stage == holder_stage::holding) {
      const auto prev_cpu = w.streak.looked_cpu_ns;
      const auto prev_at = w.streak.looked_at;
      // A holder first seen in this generation has taken its permit within the last interval: it
      // is making progress. Sampling starts on the next pass (this look only reads its CPU clock),
      // so that pools of tiny tasks cost no /proc reads at all; nor does one that computes.
      if (w.streak.ran_since_last_look(w.tid) || !w.seen_before) {
        ++awake;
        w.idle_looks = 0;
        continue;
      }
      const auto wall =
          std::chrono::duration_cast<std::chrono::nanoseconds>(w.streak.looked_at - prev_at)
              .count();
      if (prev_at != std::chrono::steady_clock::time_point{} && wall > 0)
        ran_share =
            static_cast<double>(w.streak.looked_cpu_ns - prev_cpu) / static_cast<double>(wall);
    }
    all_computing = false;
    const thread_sample sample = files_.sample(w.tid);
    if (w.stage == holder_stage::lent) {
      if (!sample.asleep || sample.cpu_ns != w.streak.cpu_ns)
        reclaim.push_back(&w);  // it ran again
      continue;
    }
    if (!sample.asleep) {  // runnable, or unreadable: never guess idle
      ++awake;
      w.idle_looks = 0;
      // Runnable yet hardly run since the last look: preempted, the machine's cores are taken
      // (and a holder asleep now may only wait for a lock this one holds).
      if (sample.readable && ran_share < 0.25) preempted = true;
    } else {
      // Idle for the idle-core rule: asleep on two looks in a row, having run under a tenth of the
      // time between them (a poller that wakes every millisecond; a thread waiting for the GIL). A
      // thread that computes and waits a moment for a lock or the GIL is still awake.
      w.idle_looks = ran_share < 0.1 ? w.idle_looks + 1 : 0;
      if (w.idle_looks < 2) ++awake;
    }
    if (w.streak.waits_unannounced(sample)) lend.push_back(&w);
  }
  const bool admit = idle_cores_wait(seen, awake, preempted);
  if (lend.empty() && reclaim.empty() && unkeep.empty() && !admit) return all_computing;

  waiter* to_wake[64];
  int n_wake = 0;
  {
    std::lock_guard<std::mutex> lock(s_.mutex);
    const auto at = permit_table::state::clock::now();
    // A holder that released may have exited since: touch only those still registered.
    auto registered = [this](holder* h) {
      return std::find(s_.holders.begin(), s_.holders.end(), h) != s_.holders.end();
    };
    for (watched* w : unkeep) {
      holder* h = w->who;
      if (!registered(h) || !w->same_turn(*h)) continue;
      if (at - h->kept_since < permit_table::keep_idle_limit) continue;
      if (n_wake == 64) break;
      if (s_.take_kept_locked(h)) to_wake[n_wake++] = s_.give_back_locked();
    }
    for (watched* w : lend) {
      holder* h = w->who;
      if (!registered(h) || !w->same_turn(*h) || h->stage != holder_stage::holding) continue;
      if (n_wake == 64) break;
      to_wake[n_wake++] = s_.give_back_locked();
      h->stage = holder_stage::lent;
      ++s_.lent;
      ++s_.lends;
      w->stage = holder_stage::lent;  // keep its cpu_ns: the reclaim test compares with it
      w->streak.reset();
    }
    for (watched* w : reclaim) {
      holder* h = w->who;
      if (!registered(h) || !w->same_turn(*h) || h->stage != holder_stage::lent) continue;
      h->stage = holder_stage::holding;
      CORRAL_ASSERT(s_.lent > 0);
      --s_.lent;
      ++s_.held;  // over the budget if need be: see permit_monitor.hpp
      ++s_.acquires;
      if (s_.held > s_.permits) ++s_.overdrafts;
      w->stage = holder_stage::holding;
      w->streak.cpu_known = false;
    }
    // Under the mutex again: still nobody handed a permit over or started a task since the look.
    // Not drawn from a machine-wide source, as the starvation limit's overdrafts: the process uses
    // less than it drew (seen.cores), and the admitted thread runs on that (docs/share.md).
    if (admit && s_.head != nullptr && s_.last_turnover == seen.turnover &&
        s_.task_starts.load(std::memory_order_relaxed) == seen.starts && n_wake < 64) {
      waiter* w = s_.head;
      s_.unlink_locked(w);
      ++s_.held;  // over the budget: an overdraft, as the starvation limit's
      ++s_.acquires;
      ++s_.overdrafts;
      ++s_.idle_admissions;
      s_.last_turnover = at;                           // the next one needs a window of its own
      w->granted.store(1, std::memory_order_relaxed);  // under the mutex: see permit_state.hpp
      to_wake[n_wake++] = w;
    }
  }
  for (int i = 0; i < n_wake; ++i)
    if (to_wake[i] != nullptr) futex_wake(&to_wake[i]->granted, 1);
  return false;
}

bool permit_monitor::idle_cores_wait(const standstill& seen, unsigned awake,
                                     bool preempted) noexcept {
  if (!seen.anyone_waits) {  // nothing to let in (and no clock to read)
    window_.open = false;
    return false;
  }
  using std::chrono::nanoseconds;
  const auto now = std::chrono::steady_clock::now();
  const std::int64_t cpu_ns = process_cpu_ns();
  // A new window whenever a permit changed hands or a task started: the rule is for a standstill
  // only (a pool whose permits turn over is served by its own hand-overs).
  if (!window_.open || seen.turnover != window_.turnover || seen.starts != window_.starts) {
    window_ = {true, now, cpu_ns, seen.turnover, seen.starts, false, {}, 0, 0};
    return false;
  }
  const auto elapsed = std::chrono::duration_cast<nanoseconds>(now - window_.since).count();
  if (elapsed < nanoseconds(permit_table::stall_window).count() || cpu_ns <= 0) return false;
  // The cores the process can run on: a budget above the machine's CPUs (CORRAL_CPUS=8 on 2) is
  // never used whole, which does not make its CPUs idle.
  cpu_set_t mask;
  CPU_ZERO(&mask);
  const int online = sched_getaffinity(0, sizeof mask, &mask) == 0 ? CPU_COUNT(&mask) : 0;
  const std::int64_t cores =
      online > 0 ? std::min<std::int64_t>(seen.cores, online) : std::int64_t{seen.cores};

  // 1. A stall: the process ran at most half a core over the window, and fewer holders are awake
  // than the cores now (a holder preempted by another process is runnable, not idle, and so is a
  // waiter handed a permit that has not run yet). The holders wait on something: a waiter, a lock
  // polled with a short timeout. And no other thread of the process is runnable now: holders
  // asleep on the GIL while the thread that holds it (the main thread collecting results, any
  // thread outside the pools) waits on a runqueue are not a stall but a machine whose cores are
  // taken (-1, cannot tell: as before the check).
  if (2 * (cpu_ns - window_.cpu_ns) <= elapsed) {
    if (!preempted && awake + seen.handed_over < cores &&
        files_.runnable_threads_besides(tid_) <= 0)
      return true;
  } else {  // busy: look again over the next stall window
    window_.since = now;
    window_.cpu_ns = cpu_ns;
  }

  // 2. An idle core: over a whole idle_core_window of the standstill the process used at most
  // cores - 1/2 CPUs and its holders hardly waited for a CPU (nobody else wanted the cores). The
  // holders take turns at something one core serves (the GIL): a waiter gets the idle core, one per
  // window, as plain python's threads would take turns.
  const auto elapsed_armed =
      std::chrono::duration_cast<nanoseconds>(now - window_.armed_at).count();
  if (window_.armed && elapsed_armed < nanoseconds(permit_table::idle_core_window).count())
    return false;
  long switches = 0;
  {
    rusage usage{};
    if (getrusage(RUSAGE_SELF, &usage) == 0) switches = usage.ru_nivcsw;
  }
  std::uint64_t holders = 0;
  unsigned counted = 0;
  const std::int64_t delay_ns = holders_run_delay_ns(holders, counted);
  const bool was_armed = window_.armed;
  const idle_window armed = window_;
  window_.armed = true;  // the next look measures a window of its own
  window_.armed_at = now;
  window_.armed_cpu_ns = cpu_ns;
  window_.armed_switches = switches;
  window_.armed_delay_ns = delay_ns;
  window_.armed_holders = holders;
  if (!was_armed) return false;
  // The involuntary context switches count this monitor's own looks, which preempt a holder on a
  // machine that places it beside one (16-22 a window measured there, 0.2-0.5 elsewhere): the run
  // delay, where readable, tells a look of microseconds from a program that takes the core.
  // Per holder on average: each wake-up of a thread taking its turn at the GIL costs it a moment
  // on a runqueue (up to 1/10 of a window each on a VM measured alone, 1/4 summed over 4 holders),
  // while a busy loop beside a holder makes it wait a third of the time or more.
  const bool crowded =
      delay_ns >= 0 && armed.armed_delay_ns >= 0 && holders == armed.armed_holders && counted > 0
          ? max_delay_share * (delay_ns - armed.armed_delay_ns) >
                static_cast<std::int64_t>(counted) * elapsed_armed
          : switches - armed.armed_switches > max_preemptions;
  return 2 * (cpu_ns - armed.armed_cpu_ns) <= (2 * cores - 1) * elapsed_armed && !crowded;
}

std::int64_t permit_monitor::holders_run_delay_ns(std::uint64_t& holders,
                                                  unsigned& counted) noexcept {
  std::int64_t total = 0;
  holders = 0;
  counted = 0;
  for (const watched& w : watched_) {
    if (w.kept) continue;
    unsigned long long delay = 0;
    if (!files_.run_delay_ns(w.tid, delay)) return -1;
    total += static_cast<std::int64_t>(delay);
    holders += (static_cast<std::uint64_t>(w.tid) << 8) + 1;
    ++counted;
  }
  return total;
}

}  // namespace corral::detail
