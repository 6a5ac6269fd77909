// The permit monitor's thread (permit_monitor.hpp says what it does). It reads the holders under
// the table's mutex, samples /proc without it, and changes a holder's stage only under the mutex
// and only if the holder's generation is the one it sampled: a holder that released, paused or took
// a new permit meanwhile is left alone, so each lend is given back once (by the monitor) and taken
// back once (by the monitor on waking, or by the thread's release).
#include "permit_monitor.hpp"

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
  // The holders as they are now; samples kept for those still in the same generation and stage.
  std::vector<watched> now;
  {
    std::lock_guard<std::mutex> lock(s_.mutex);
    try {
      now.reserve(s_.holders.size());
    } catch (...) {
      return false;
    }
    for (holder* h : s_.holders) {
      if (h->stage == holder_stage::paused) continue;
      watched w{h,     h->generation.load(std::memory_order_relaxed),  h->tid, h->stage, {},
                false, h->keep.load(std::memory_order_relaxed) == kept};
      for (const watched& old : watched_)
        if (old.who == h && old.generation == w.generation && old.stage == w.stage &&
            old.kept == w.kept) {
          w = old;
          w.seen_before = true;
        }
      now.push_back(w);
    }
  }
  watched_.swap(now);

  std::vector<watched*> lend, reclaim, unkeep;
  bool all_computing = true;
  for (watched& w : watched_) {
    if (w.kept) {  // kept for a next task that has not come for a whole pass: give it back
      all_computing = false;
      if (w.seen_before) unkeep.push_back(&w);
      continue;
    }
    if (w.stage == holder_stage::holding) {
      // A holder first seen in this generation has taken its permit within the last interval: it
      // is making progress. Sampling starts on the next pass (this look only reads its CPU clock),
      // so that pools of tiny tasks cost no /proc reads at all; nor does one that computes.
      if (w.streak.ran_since_last_look(w.tid) || !w.seen_before) continue;
    }
    all_computing = false;
    const thread_sample sample = files_.sample(w.tid);
    if (w.stage == holder_stage::lent) {
      if (!sample.asleep || sample.cpu_ns != w.streak.cpu_ns)
        reclaim.push_back(&w);  // it ran again
      continue;
    }
    if (w.streak.waits_unannounced(sample)) lend.push_back(&w);
  }
  if (lend.empty() && reclaim.empty() && unkeep.empty()) return all_computing;

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
      if (!registered(h) || h->generation != w->generation) continue;
      if (at - h->kept_since < permit_table::keep_idle_limit) continue;
      if (n_wake == 64) break;
      if (s_.take_kept_locked(h)) to_wake[n_wake++] = s_.give_back_locked();
    }
    for (watched* w : lend) {
      holder* h = w->who;
      if (!registered(h) || h->generation != w->generation || h->stage != holder_stage::holding)
        continue;
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
      if (!registered(h) || h->generation != w->generation || h->stage != holder_stage::lent)
        continue;
      h->stage = holder_stage::holding;
      CORRAL_ASSERT(s_.lent > 0);
      --s_.lent;
      ++s_.held;  // over the budget if need be: see permit_monitor.hpp
      ++s_.acquires;
      if (s_.held > s_.permits) ++s_.overdrafts;
      w->stage = holder_stage::holding;
      w->streak.cpu_known = false;
    }
  }
  for (int i = 0; i < n_wake; ++i)
    if (to_wake[i] != nullptr) futex_wake(&to_wake[i]->granted, 1);
  return false;
}

}  // namespace corral::detail
