#include "corral/permit_table.hpp"

#include <gtest/gtest.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <mutex>
#include <random>
#include <stdexcept>
#include <thread>
#include <vector>

#include "test_scale.hpp"
#include "test_util.hpp"

using namespace std::chrono_literals;
using corral::permit;
using corral::permit_pause;
using corral::permit_table;
using corral::short_waits;
using corral::testing::eventually;
using corral::testing::eventually_running;
using corral::testing::record_max;
using corral::testing::spin_for;

namespace {

// `threads` threads each run `rounds` tasks under a permit of `table`, counting how many run at
// once. The work spins, or sleeps (`sleep`) so that other threads surely run and find no permit
// free.
int peak_running(permit_table& table, int threads, int rounds, std::chrono::microseconds work,
                 bool sleep = false) {
  std::atomic<int> running{0}, peak{0}, ready{0};
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t)
    pool.emplace_back([&] {
      ++ready;
      while (ready.load() < threads) std::this_thread::yield();  // all start together
      for (int r = 0; r < rounds; ++r) {
        permit p(table);
        record_max(peak, ++running);
        if (sleep)
          std::this_thread::sleep_for(work);
        else
          spin_for(work);
        --running;
      }
    });
  for (auto& t : pool) t.join();
  return peak.load();
}

// A task that pauses (giving its permit to the main thread), says so with stage 1, and comes back
// from its pause once the main thread sets stage 2.
void pause_until_stage_2(std::atomic<int>& stage) {
  permit_pause pause;
  stage = 1;
  while (stage.load() != 2) std::this_thread::sleep_for(1ms);
}

// One CPU of this process's affinity mask, as a mask.
cpu_set_t one_of_our_cpus() {
  cpu_set_t mask;
  CPU_ZERO(&mask);
  if (sched_getaffinity(0, sizeof mask, &mask) != 0) CPU_SET(0, &mask);
  int cpu = 0;
  while (cpu < CPU_SETSIZE - 1 && !CPU_ISSET(cpu, &mask)) ++cpu;
  CPU_ZERO(&mask);
  CPU_SET(cpu, &mask);
  return mask;
}

// Another program keeping a CPU busy: a /bin/sh loop on the CPUs of `mask`, killed at the end of
// its scope (also when an assertion ends the test early).
class busy_loop {
 public:
  explicit busy_loop(const cpu_set_t& mask) {
    char sh[] = "/bin/sh", dash_c[] = "-c", loop[] = "while :; do :; done";
    char* argv[] = {sh, dash_c, loop, nullptr};
    if (posix_spawn(&pid_, sh, nullptr, nullptr, argv, environ) != 0)
      pid_ = 0;
    else if (sched_setaffinity(pid_, sizeof mask, &mask) != 0)
      stop();
  }
  ~busy_loop() { stop(); }
  busy_loop(const busy_loop&) = delete;
  busy_loop& operator=(const busy_loop&) = delete;
  bool running() const { return pid_ > 0; }
  void stop() {
    if (pid_ <= 0) return;
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
    pid_ = 0;
  }

 private:
  pid_t pid_ = 0;
};

// Two holders of `table` passing one mutex back and forth, computing 5 ms while they have it
// (Python threads at the GIL) and polling for their turn every `poll`, on the CPUs of `mask` if
// one is given, until stop().
class turn_takers {
 public:
  turn_takers(permit_table& table, std::chrono::milliseconds poll, const cpu_set_t* mask = nullptr)
      : pinned_(mask != nullptr) {
    if (pinned_) mask_ = *mask;
    for (int i = 0; i < 2; ++i)
      threads_.emplace_back([this, &table, poll, i] {
        if (pinned_ && sched_setaffinity(0, sizeof mask_, &mask_) == 0) ++pinned_ok_;
        permit p(table);
        ++holding_;
        while (!stop_) {
          std::unique_lock<std::mutex> lock(m_);
          if (!cv_.wait_for(lock, poll, [&] { return turn_ == i || stop_.load(); })) continue;
          spin_for(5ms);
          turn_ = 1 - i;
          cv_.notify_all();
        }
        cv_.notify_all();
      });
  }
  ~turn_takers() { stop(); }
  turn_takers(const turn_takers&) = delete;
  turn_takers& operator=(const turn_takers&) = delete;
  // Both hold their permits (and run where they were pinned).
  bool holding() {
    return eventually([&] { return holding_.load() == 2; }) && (!pinned_ || pinned_ok_ == 2);
  }
  void stop() {
    stop_ = true;
    cv_.notify_all();
    for (auto& t : threads_)
      if (t.joinable()) t.join();
  }

 private:
  bool pinned_;
  cpu_set_t mask_{};
  std::atomic<int> pinned_ok_{0};
  std::mutex m_;
  std::condition_variable cv_;
  int turn_ = 0;  // guarded by m_
  std::atomic<bool> stop_{false};
  std::atomic<int> holding_{0};
  std::vector<std::thread> threads_;
};

}  // namespace

TEST(PermitTable, HoldersNeverExceedThePermits) {
  permit_table table(2);
  EXPECT_EQ(peak_running(table, 8, static_cast<int>(corral::testing::scaled(200, 50)), 50us, true),
            2);
  const corral::permit_stats s = table.stats();
  EXPECT_EQ(s.held, 0u);
  EXPECT_EQ(s.waiting, 0u);
  EXPECT_EQ(s.holders, 0u);
  EXPECT_EQ(s.overdrafts, 0u);
  EXPECT_EQ(s.acquires, 8u * corral::testing::scaled(200, 50));
  EXPECT_GT(s.waits, 0u);
}

TEST(PermitTable, AcquireNestsOnOneThread) {
  permit_table table(1);
  table.acquire();
  table.acquire();  // the same thread: depth 2, one permit
  EXPECT_EQ(table.stats().held, 1u);
  table.release();
  EXPECT_TRUE(table.held_by_this_thread());
  table.release();
  EXPECT_FALSE(table.held_by_this_thread());
  EXPECT_EQ(table.stats().held, 0u);
}

TEST(PermitTable, AThreadHoldsOneTablesPermitsAtATime) {
  permit_table a(1), b(1);
  permit p(a);
  EXPECT_THROW(b.acquire(), std::logic_error);
  EXPECT_EQ(b.stats().held, 0u);
}

TEST(PermitTable, TryAcquireNeverWaits) {
  permit_table table(1);
  std::atomic<bool> held{false}, done{false};
  std::thread holder([&] {
    permit p(table);
    held = true;
    while (!done) std::this_thread::sleep_for(1ms);
  });
  ASSERT_TRUE(eventually([&] { return held.load(); }));
  EXPECT_FALSE(table.try_acquire());
  done = true;
  holder.join();
  EXPECT_TRUE(table.try_acquire());
  table.release();
}

TEST(PermitTable, WaitersAreServedInOrder) {
  permit_table table(1);
  table.acquire();
  std::vector<int> order;
  std::mutex order_mutex;
  std::vector<std::thread> waiters;
  for (int i = 0; i < 4; ++i) {
    waiters.emplace_back([&, i] {
      permit p(table);
      std::lock_guard<std::mutex> lock(order_mutex);
      order.push_back(i);
    });
    ASSERT_TRUE(eventually([&] { return table.stats().waiting == static_cast<unsigned>(i + 1); }));
  }
  table.release();
  for (auto& t : waiters) t.join();
  EXPECT_EQ(order, (std::vector<int>{0, 1, 2, 3}));
}

TEST(PermitTable, APauseGivesThePermitToAWaiterAndTakesOneBackFirst) {
  permit_table table(1);
  std::atomic<int> stage{0};
  std::thread other;
  {
    permit p(table);
    other = std::thread([&] {
      permit q(table);  // waits: the main thread holds the only permit
      stage = 1;
      while (stage != 2) std::this_thread::sleep_for(1ms);
    });
    ASSERT_TRUE(eventually([&] { return table.stats().waiting == 1; }));
    {
      permit_pause waiting;  // the main thread waits: its permit goes to `other`
      ASSERT_TRUE(eventually([&] { return stage.load() == 1; }));
      EXPECT_EQ(table.stats().paused, 1u);
      EXPECT_EQ(table.stats().held, 1u);
      stage = 2;
    }  // takes a permit back once `other` is done
    EXPECT_EQ(table.stats().held, 1u);
    EXPECT_EQ(table.stats().paused, 0u);
  }
  other.join();
  EXPECT_EQ(table.stats().held, 0u);
}

TEST(PermitTable, APauseOffAHolderDoesNothing) {
  EXPECT_FALSE(permit_pause::in_task());
  permit_pause nothing_held;
  EXPECT_FALSE(permit_pause::in_task());
}

TEST(PermitTable, MorePermitsWakeWaitersAtOnce) {
  permit_table table(1);
  table.acquire();
  std::atomic<int> in{0};
  std::vector<std::thread> waiters;
  for (int i = 0; i < 3; ++i)
    waiters.emplace_back([&] {
      permit p(table);
      ++in;
    });
  ASSERT_TRUE(eventually([&] { return table.stats().waiting == 3; }));
  table.set_permits(4);
  for (auto& t : waiters) t.join();
  EXPECT_EQ(in.load(), 3);
  table.release();
  EXPECT_THROW(table.set_permits(0), std::invalid_argument);
}

TEST(PermitTable, AWaiterOverdrawsWhenNothingMovesForTheStarvationLimit) {
  // The holder spins until the waiter has run: a dependency no sampler can see.
  permit_table table(1);
  std::atomic<bool> waiter_ran{false}, held{false};
  std::thread holder([&] {
    permit p(table);
    held = true;
    while (!waiter_ran) std::this_thread::yield();
  });
  ASSERT_TRUE(eventually([&] { return held.load(); }));
  const auto start = std::chrono::steady_clock::now();
  {
    permit p(table);
    waiter_ran = true;
  }
  const auto waited = std::chrono::steady_clock::now() - start;
  holder.join();
  EXPECT_GE(waited, permit_table::starvation_limit - 5ms);
  EXPECT_EQ(table.stats().overdrafts, 1u);
  EXPECT_EQ(table.stats().held, 0u);
}

TEST(PermitTable, TheMonitorLendsTheHolderAsleepInASystemCall) {
  permit_table table(1);
  table.set_wait_monitor(true);
  std::atomic<bool> second_ran{false};
  std::thread sleeper([&] {
    permit p(table);
    ::usleep(300'000);  // a raw system call: no pause announced
  });
  // holders, not held: the monitor may lend the sleeper's permit before this thread looks
  ASSERT_TRUE(eventually([&] { return table.stats().holders == 1; }));
  const auto start = std::chrono::steady_clock::now();
  {
    permit p(table);  // gets the sleeper's permit, lent, long before the sleep ends
    second_ran = true;
  }
  EXPECT_LT(std::chrono::steady_clock::now() - start, 250ms);
  sleeper.join();
  EXPECT_GE(table.stats().lends, 1u);
  EXPECT_TRUE(eventually([&] { return table.stats().held == 0 && table.stats().lent == 0; }));
  table.set_wait_monitor(false);
}

TEST(PermitTable, TheMonitorTellsANewHolderFromAnEndedThreadsAtTheSameAddress) {
  // A thread's holder lives in its thread-local storage, which the next thread started after it
  // ends usually gets again (glibc reuses the stack and TLS block; a Python extension's TLS is
  // malloc'ed and reused alike): same address, same generation (each thread's first task). The
  // monitor must watch the new thread, not the ended one's tid: it lends the new holder's permit
  // when it sleeps in a system call. Taken for the ended thread, it read that thread's /proc files
  // (gone: "not asleep") and never lent it; the waiter waited the starvation limit (1 s).
  permit_table table(1);
  table.set_wait_monitor(true);
  for (int round = 0; round < 3; ++round) {
    std::thread first([&] {
      permit p(table);
      spin_for(30ms);  // watched on a few passes, then ends and exits at once
    });
    first.join();
    std::thread second([&] {
      permit p(table);
      ::usleep(1'000'000);  // a raw system call: no pause announced
    });
    ASSERT_TRUE(eventually([&] { return table.stats().holders == 1; }));
    const auto start = std::chrono::steady_clock::now();
    {
      permit p(table);
    }  // the sleeper's permit, lent long before its sleep ends
    EXPECT_LT(std::chrono::steady_clock::now() - start, 500ms) << "round " << round;
    EXPECT_EQ(table.stats().lends, static_cast<std::uint64_t>(round + 1)) << "round " << round;
    second.join();
  }
  table.set_wait_monitor(false);
}

TEST(PermitTable, TheMonitorLeavesSpinningHoldersAlone) {
  permit_table table(2);
  table.set_wait_monitor(true);
  EXPECT_EQ(peak_running(table, 4, 20, 2ms), 2);
  EXPECT_EQ(table.stats().lends, 0u);
  EXPECT_EQ(table.stats().idle_admissions, 0u);
  table.set_wait_monitor(false);
}

TEST(PermitTable, ABudgetAboveTheMachinesCPUsLeavesNoCoreIdleWhileItsHoldersCompute) {
  // CORRAL_CPUS=8 on 2 CPUs: the process never uses its whole budget, and that is not idleness.
  const unsigned cpus = std::max(1u, std::thread::hardware_concurrency());
  permit_table table(cpus + 2);
  table.set_wait_monitor(true);
  EXPECT_EQ(peak_running(table, static_cast<int>(cpus) + 4, 20, 2ms), static_cast<int>(cpus) + 2);
  EXPECT_EQ(table.stats().idle_admissions, 0u);
  table.set_wait_monitor(false);
}

TEST(PermitTable, AWaiterIsLetInWhileTheHolderPollsWithShortTimeouts) {
  // The holder waits for the waiter through a condition polled every 300 us (a Python task polling
  // a lock with a short timeout): it runs too often for the futex rule to lend it, and uses almost
  // no CPU. The idle-core rule lets the waiter in within a few ms, not the starvation limit.
  permit_table table(1);
  table.set_wait_monitor(true);
  std::mutex m;
  std::condition_variable cv;
  bool waiter_ran = false;
  std::atomic<bool> held{false};
  std::thread holder([&] {
    permit p(table);
    held = true;
    std::unique_lock<std::mutex> lock(m);
    while (!waiter_ran) cv.wait_for(lock, 300us);
  });
  ASSERT_TRUE(eventually([&] { return held.load(); }));
  const auto start = std::chrono::steady_clock::now();
  {
    permit p(table);
    std::lock_guard<std::mutex> lock(m);
    waiter_ran = true;
  }
  const auto waited = std::chrono::steady_clock::now() - start;
  holder.join();
  EXPECT_LT(waited, permit_table::starvation_limit / 2);
  EXPECT_GE(table.stats().idle_admissions, 1u);
  EXPECT_GE(table.stats().overdrafts, table.stats().idle_admissions);
  EXPECT_TRUE(eventually([&] { return table.stats().held == 0u; }));
  table.set_wait_monitor(false);
}

TEST(PermitTable, HoldersTakingTurnsAtOneLockLeaveACoreIdleAndAWaiterIsLetIn) {
  // Two holders of two permits pass one mutex back and forth, computing only while they have it
  // (Python threads at the GIL, 5 ms each): one core idles, so a third thread with work is let in.
  // Each runs 5 ms in 10 (the GIL's switch interval), too short a sleep for the monitor to lend.
  permit_table table(2);
  table.set_wait_monitor(true);
  turn_takers holders(table, 20ms);
  ASSERT_TRUE(holders.holding());
  const auto start = std::chrono::steady_clock::now();
  {
    permit p(table);
  }
  const auto waited = std::chrono::steady_clock::now() - start;
  holders.stop();
  EXPECT_LT(waited, permit_table::starvation_limit / 2);
  // The idle-core rule let it in; or, on a loaded machine where one turn-taker was preempted
  // mid-turn and the other slept for 8 looks, the monitor lent the sleeper's permit first (a fresh
  // clone's make test saw it once). Either way it ran long before the starvation limit.
  EXPECT_GE(table.stats().idle_admissions + table.stats().lends, 1u);
  table.set_wait_monitor(false);
}

TEST(PermitTable, HoldersTakingTurnsLetNobodyInWhileOtherProgramsTakeTheCores) {
  // The turn-takers of HoldersTakingTurnsAtOneLock... on one CPU that two busy loops of another
  // program take too: a holder whose turn it is waits on the runqueue two thirds of the time, no
  // core is idle for a waiter, and the idle-core rule must let none in (without its guard on the
  // holders' run delay it lets in one every window or two).
  const cpu_set_t cpu = one_of_our_cpus();
  busy_loop first(cpu), second(cpu);
  ASSERT_TRUE(first.running() && second.running());
  permit_table table(2);
  table.set_wait_monitor(true);
  // A 2 ms poll: a turn-taker that slept 8 ms unwoken would be lent (a turnover, a new window).
  turn_takers holders(table, 2ms, &cpu);
  ASSERT_TRUE(holders.holding());
  std::vector<std::thread> waiters;  // each let in over the budget lets the next wait on
  for (int i = 0; i < 6; ++i) waiters.emplace_back([&] { permit p(table); });
  std::this_thread::sleep_for(900ms);  // alone, a waiter is let in every ~0.1 s
  const auto admitted = table.stats().idle_admissions;
  first.stop();
  second.stop();
  holders.stop();
  for (auto& t : waiters) t.join();
  EXPECT_EQ(admitted, 0u);
  table.set_wait_monitor(false);
}

TEST(PermitTable, TheIdleCoreRuleLetsNobodyInWhileTheHolderComputes) {
  permit_table table(1);
  table.set_wait_monitor(true);
  std::atomic<bool> held{false}, released{false}, waiter_early{false};
  std::thread holder([&] {
    permit p(table);
    held = true;
    spin_for(300ms);
    released = true;
  });
  ASSERT_TRUE(eventually([&] { return held.load(); }));
  {
    permit p(table);
    waiter_early = !released.load();
  }
  holder.join();
  EXPECT_FALSE(waiter_early);
  EXPECT_EQ(table.stats().idle_admissions, 0u);
  table.set_wait_monitor(false);
}

TEST(PermitTable, NoStallIsCalledWhileAnotherThreadOfTheProcessWaitsForACore) {
  // The holder polls with 1 ms timeouts (a Python thread waiting for the GIL, held by a thread
  // outside the table: the main thread collecting results) while that other thread is runnable but
  // waits for its core, which another program takes. The process hardly runs and its holder sleeps,
  // yet no core is idle: the stall rule must not let the waiter in (it did within 2-4 ms before it
  // looked at the process's other threads; the idle-core part cannot before 2 + 50 + 50 ms).
  const cpu_set_t mask = one_of_our_cpus();
  busy_loop other(mask);  // the other program
  ASSERT_TRUE(other.running());

  permit_table table(1);
  table.set_wait_monitor(true);
  std::mutex m;
  std::condition_variable cv;
  bool done = false;
  std::atomic<bool> crowded{false}, stop{false}, held{false};
  std::thread outside([&] {
    sched_param lowest{};
    const bool ok = sched_setaffinity(0, sizeof mask, &mask) == 0 &&
                    pthread_setschedparam(pthread_self(), SCHED_IDLE, &lowest) == 0;
    crowded = true;
    if (ok)  // runs only when the other program leaves the CPU idle: hardly ever
      while (!stop.load()) {
      }
  });
  ASSERT_TRUE(eventually([&] { return crowded.load(); }));
  std::thread holder([&] {
    permit p(table);
    held = true;
    std::unique_lock<std::mutex> lock(m);
    while (!done) cv.wait_for(lock, 1ms);
  });
  ASSERT_TRUE(eventually([&] { return held.load(); }));
  std::thread waiter([&] { permit p(table); });
  std::this_thread::sleep_for(40ms);
  const auto admitted = table.stats().idle_admissions;
  other.stop();
  stop = true;
  outside.join();
  {
    std::lock_guard<std::mutex> lock(m);
    done = true;
  }
  holder.join();
  waiter.join();
  EXPECT_EQ(admitted, 0u);
  table.set_wait_monitor(false);
}

TEST(PermitTable, StressRandomPausesAndTasks) {
  // Many threads, random work, random pauses (some long enough for the monitor to see raw sleeps):
  // the count of running holders never exceeds the permits plus the lent holders woken, and every
  // permit comes back.
  permit_table table(3);
  table.set_wait_monitor(true);
  std::atomic<int> running{0}, peak{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 12; ++t)
    threads.emplace_back([&, t] {
      std::mt19937 rng(static_cast<unsigned>(t));
      for (std::size_t r = 0; r < corral::testing::scaled(150); ++r) {
        permit p(table);
        record_max(peak, ++running);
        spin_for(std::chrono::microseconds(rng() % 200));
        --running;
        if (rng() % 4 == 0) {
          permit_pause waiting;
          std::this_thread::sleep_for(std::chrono::microseconds(rng() % 500));
        } else if (rng() % 16 == 0) {
          ::usleep(3000);  // unannounced: may be lent, then counted again over the budget
        }
      }
    });
  for (auto& t : threads) t.join();
  table.set_wait_monitor(false);
  const corral::permit_stats s = table.stats();
  EXPECT_EQ(s.held, 0u);
  EXPECT_EQ(s.waiting, 0u);
  EXPECT_EQ(s.paused, 0u);
  EXPECT_EQ(s.lent, 0u);
  EXPECT_EQ(s.holders, 0u);
  EXPECT_LE(peak.load(), 3 + static_cast<int>(s.overdrafts));
}

TEST(PermitTable, AChildAfterForkHoldsOnlyTheForkingThreadsPermit) {
  permit_table& table = permit_table::process();
  const unsigned permits = table.permits();
  std::atomic<bool> stop{false};
  std::vector<std::thread> busy;
  for (unsigned i = 0; i < permits + 2; ++i)
    busy.emplace_back([&] {
      while (!stop) {
        permit p(table);
        spin_for(100us);
      }
    });
  table.acquire();  // the forking thread holds one (a pool task that forks)
  const pid_t pid = ::fork();
  if (pid == 0) {
    const corral::permit_stats s = table.stats();
    bool ok = s.held == 1 && s.waiting == 0 && s.holders == 1 && table.held_by_this_thread();
    table.release();
    ok = ok && table.stats().held == 0;
    {
      permit p(table);  // the child's table works
      ok = ok && table.stats().held == 1;
    }
    ::_exit(ok ? 0 : 1);
  }
  table.release();
  stop = true;
  for (auto& t : busy) t.join();
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  EXPECT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
}

namespace {

// Threads of this process now (/proc/self/task entries).
int thread_count() {
  int n = 0;
  std::error_code ec;
  for (auto it = std::filesystem::directory_iterator("/proc/self/task", ec);
       !ec && it != std::filesystem::directory_iterator(); it.increment(ec))
    ++n;
  return n;
}

}  // namespace

TEST(PermitTable, TheMonitorEndsWhenNobodyHoldsAPermitAndComesBackWithTheNextHolder) {
  permit_table table(1);
  const int before = thread_count();
  table.set_wait_monitor(true);
  {
    permit p(table);
  }
  // Idle: the monitor thread ends by itself (a later fork sees no thread of ours).
  EXPECT_TRUE(eventually([&] { return thread_count() == before; }, 5s));
  EXPECT_TRUE(table.wait_monitor_on());
  // The next holder starts it again, and it still lends.
  std::thread sleeper([&] {
    permit p(table);
    ::usleep(300'000);
  });
  ASSERT_TRUE(eventually([&] { return table.stats().holders == 1; }));
  const auto start = std::chrono::steady_clock::now();
  {
    permit p(table);
  }
  EXPECT_LT(std::chrono::steady_clock::now() - start, 250ms);
  sleeper.join();
  table.set_wait_monitor(false);
}

// -- kept permits (docs/permits.md, "Kept permits")

TEST(PermitTable, AThreadKeepsItsPermitForItsNextTaskWhileTheMonitorRuns) {
  permit_table table(1);
  table.set_wait_monitor(true);
  std::thread worker([&] {
    table.acquire();
    table.release();
    EXPECT_FALSE(table.held_by_this_thread());  // between tasks: not in a task
    EXPECT_FALSE(permit_pause::in_task());
    const corral::permit_stats kept = table.stats();
    EXPECT_EQ(kept.held, 1u);
    EXPECT_EQ(kept.kept, 1u);
    EXPECT_EQ(kept.holders, 0u);
    EXPECT_EQ(table.running(), 1u);  // a kept permit runs nothing: the rule counts at least 1
    table.acquire();                 // taken back: no hand-over, no wait
    EXPECT_TRUE(table.held_by_this_thread());
    EXPECT_EQ(table.stats().kept, 0u);
    table.release();
  });
  worker.join();
  // The thread ended: its kept permit came back with it, at once.
  const corral::permit_stats s = table.stats();
  EXPECT_EQ(s.held, 0u);
  EXPECT_EQ(s.kept, 0u);
  EXPECT_EQ(s.waits, 0u);
  EXPECT_EQ(s.acquires, 1u);  // the second task ran on the first permit
  table.set_wait_monitor(false);
}

TEST(PermitTable, WithoutTheMonitorNoPermitIsKept) {
  permit_table table(1);
  table.acquire();
  table.release();
  EXPECT_EQ(table.stats().held, 0u);
  EXPECT_EQ(table.stats().kept, 0u);
}

TEST(PermitTable, ANewcomerTakesOverAKeptPermitInsteadOfWaiting) {
  permit_table table(1);
  table.set_wait_monitor(true);
  std::atomic<int> stage{0};
  std::thread keeper([&] {
    table.acquire();
    table.release();  // kept
    stage = 1;
    while (stage.load() != 2) std::this_thread::sleep_for(1ms);
    table.acquire();  // its permit was taken over: an ordinary take
    table.release();
  });
  ASSERT_TRUE(eventually([&] { return stage.load() == 1; }));
  EXPECT_TRUE(table.try_acquire());  // no wait: the kept permit changes hands
  EXPECT_EQ(table.stats().held, 1u);
  EXPECT_EQ(table.stats().kept, 0u);
  table.release();
  stage = 2;
  keeper.join();
  EXPECT_EQ(table.stats().overdrafts, 0u);
  table.set_wait_monitor(false);
}

TEST(PermitTable, TheMonitorTakesBackAPermitKeptIdle) {
  permit_table table(1);
  table.set_wait_monitor(true);
  std::atomic<bool> done{false};
  std::thread idle([&] {
    table.acquire();
    table.release();                                        // kept: nobody waits
    while (!done.load()) std::this_thread::sleep_for(1ms);  // and never comes back for it
  });
  // The monitor gives it back after keep_idle_limit (not at the thread's end: it is still alive).
  EXPECT_TRUE(eventually([&] { return table.stats().kept == 0u && table.stats().held == 0u; }));
  done = true;
  idle.join();
  EXPECT_EQ(table.stats().overdrafts, 0u);
  table.set_wait_monitor(false);
}

TEST(PermitTable, AThreadBackFromAPauseIsNeverKeptWaiting) {
  permit_table table(1);
  table.set_wait_monitor(true);
  std::atomic<int> stage{0};
  std::thread returner([&] {
    permit p(table);
    pause_until_stage_2(stage);  // then queues at the front for a permit
    stage = 3;
    // Holds it until the main thread has looked (its own end would keep it, rightly).
    while (stage.load() != 4) std::this_thread::yield();  // running: the monitor leaves it be
  });
  ASSERT_TRUE(eventually([&] { return stage.load() == 1; }));
  table.acquire();
  stage = 2;
  ASSERT_TRUE(eventually_running([&] { return table.stats().waiting == 1u; }));
  table.release();  // a returner waits: handed over, not kept
  EXPECT_EQ(table.stats().kept, 0u);
  EXPECT_TRUE(eventually([&] { return stage.load() == 3; }));
  EXPECT_EQ(table.stats().held, 1u);
  EXPECT_EQ(table.stats().kept, 0u);
  stage = 4;
  returner.join();
  table.set_wait_monitor(false);
}

TEST(PermitTable, AReturningWaiterIsCountedAsReturningAndAsAHolder) {
  // What a task in flight is, from stats(): holders + waiting - returning (the report's figure).
  permit_table table(1);
  std::atomic<int> stage{0};
  std::thread returner([&] {
    permit p(table);
    pause_until_stage_2(stage);  // then queues at the front for a permit, still a holder
  });
  ASSERT_TRUE(eventually([&] { return stage.load() == 1; }));
  table.acquire();
  std::thread newcomer([&] { permit p(table); });  // a new task: waiting, not a holder
  stage = 2;
  ASSERT_TRUE(eventually_running([&] { return table.stats().waiting == 2u; }));
  const auto s = table.stats();
  EXPECT_EQ(s.returning, 1u);
  EXPECT_EQ(s.holders, 2u);                            // the main thread and the returner
  EXPECT_EQ(s.holders + s.waiting - s.returning, 3u);  // three tasks in flight, each counted once
  table.release();
  returner.join();
  newcomer.join();
  EXPECT_EQ(table.stats().returning, 0u);
}

TEST(PermitTable, AShortWaitKeepsThePermitAndNests) {
  permit_table table(1);
  table.acquire();
  EXPECT_TRUE(permit_pause::in_task());
  {
    short_waits outer;
    {
      short_waits inner;
      EXPECT_FALSE(permit_pause::in_task());  // the wait hooks ask this first
      permit_pause pause;                     // nothing given back
      EXPECT_EQ(table.stats().held, 1u);
      EXPECT_EQ(table.stats().paused, 0u);
    }
    EXPECT_FALSE(permit_pause::in_task());  // still inside the outer scope
    permit_pause pause;
    EXPECT_EQ(table.stats().paused, 0u);
  }
  EXPECT_TRUE(permit_pause::in_task());
  {
    permit_pause pause;  // outside: an ordinary pause again
    EXPECT_EQ(table.stats().held, 0u);
    EXPECT_EQ(table.stats().paused, 1u);
  }
  EXPECT_EQ(table.stats().held, 1u);
  const auto acquires = table.stats().acquires;
  table.release();
  EXPECT_EQ(acquires, 2u);  // the first acquire and the ordinary pause's resume only
}

TEST(PermitTable, AThreadWhoseSliceIsOverHandsOverAtItsTasksEnd) {
  permit_table table(1, 0ms);  // every slice is over at once
  table.set_wait_monitor(true);
  std::atomic<bool> got{false};
  table.acquire();
  std::thread waiter([&] {
    permit p(table);  // this thread holds a task already: it must not wait for a keeper's next one
    got = true;
  });
  ASSERT_TRUE(eventually_running([&] { return table.stats().waiting == 1u; }));
  table.release();
  EXPECT_EQ(table.stats().kept, 0u);
  EXPECT_TRUE(eventually([&] { return got.load(); }, 1s));  // well before the monitor's idle limit
  waiter.join();
  table.set_wait_monitor(false);
}

TEST(PermitTable, WithinItsSliceAThreadKeepsItsPermitForItsNextTaskThenHandsItOver) {
  permit_table table(1, 1h);  // a slice that never ends in this test
  table.set_wait_monitor(true);
  std::atomic<bool> got{false};
  table.acquire();
  std::thread waiter([&] {
    permit p(table);
    got = true;
  });
  ASSERT_TRUE(eventually_running([&] { return table.stats().waiting == 1u; }));
  for (int task = 0; task < 3; ++task) {  // task after task on the kept permit, the waiter waiting
    table.release();
    EXPECT_EQ(table.stats().kept, 1u);
    table.acquire();
    EXPECT_FALSE(got.load());
  }
  table.release();
  table.give_back_kept();  // no next task (its queue is empty): the waiter gets the permit
  EXPECT_TRUE(eventually([&] { return got.load(); }, 1s));
  waiter.join();
  EXPECT_EQ(table.stats().overdrafts, 0u);
  table.set_wait_monitor(false);
}

TEST(PermitTable, APauseBetweenTasksGivesTheKeptPermitBack) {
  permit_table table(1);
  table.set_wait_monitor(true);
  table.acquire();
  table.release();
  EXPECT_EQ(table.stats().kept, 1u);
  {
    permit_pause pause;  // this thread is about to wait: its kept permit goes
    EXPECT_EQ(table.stats().held, 0u);
    EXPECT_EQ(table.stats().kept, 0u);
  }
  EXPECT_EQ(table.stats().held, 0u);  // and is not taken back (no task)
  table.set_wait_monitor(false);
}

TEST(PermitTable, StressKeptPermitsNeverExceedTheBudget) {
  permit_table table(2);
  table.set_wait_monitor(true);
  EXPECT_EQ(peak_running(table, 8, static_cast<int>(corral::testing::scaled(2000, 200)), 20us), 2);
  EXPECT_TRUE(eventually([&] { return table.stats().held == 0u; }));  // threads ended: all back
  EXPECT_EQ(table.stats().overdrafts, 0u);
  table.set_wait_monitor(false);
}

TEST(PermitTable, StressSlicesEndingMidRunNeverExceedTheBudgetAndServeEveryWaiter) {
  // Slices shorter than a few tasks: keepers keep and hand over, over and over, while 8 threads
  // each hold a task and wait; a task back from a pause (every third) goes first.
  permit_table table(2, 50us);
  table.set_wait_monitor(true);
  const int rounds = static_cast<int>(corral::testing::scaled(1000, 100));
  std::atomic<int> running{0}, peak{0}, done{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t)
    threads.emplace_back([&] {
      for (int r = 0; r < rounds; ++r) {
        permit p(table);
        record_max(peak, ++running);
        spin_for(20us);
        --running;
        if (r % 3 == 0) {
          permit_pause pause;
          std::this_thread::sleep_for(20us);
        }
        ++done;
      }
      table.give_back_kept();  // its pool ran dry
    });
  for (auto& t : threads) t.join();
  EXPECT_EQ(done.load(), 8 * rounds);
  EXPECT_LE(peak.load(), 2 + static_cast<int>(table.stats().overdrafts));
  EXPECT_TRUE(eventually([&] { return table.stats().held == 0u; }));
  table.set_wait_monitor(false);
}

TEST(PermitTable, GiveBackKeptReturnsTheCallersKeptPermitOnly) {
  permit_table table(1);
  table.set_wait_monitor(true);
  table.give_back_kept();  // keeps nothing: nothing happens
  table.acquire();
  table.give_back_kept();  // in a task: not a kept permit, nothing happens
  EXPECT_TRUE(table.held_by_this_thread());
  table.release();
  EXPECT_EQ(table.stats().kept, 1u);
  table.give_back_kept();
  EXPECT_EQ(table.stats().kept, 0u);
  EXPECT_EQ(table.stats().held, 0u);
  table.set_wait_monitor(false);
}
