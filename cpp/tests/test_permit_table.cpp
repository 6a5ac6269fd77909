#include "corral/permit_table.hpp"

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
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

TEST(PermitTable, TheMonitorLeavesSpinningHoldersAlone) {
  permit_table table(2);
  table.set_wait_monitor(true);
  EXPECT_EQ(peak_running(table, 4, 20, 2ms), 2);
  EXPECT_EQ(table.stats().lends, 0u);
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
