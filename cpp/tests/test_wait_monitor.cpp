// The wait monitor (scheduler::options::monitor_waits): a task that sleeps without a blocking_scope
// gets its slot lent; CPU-bound tasks never do; the sleeper takes a slot back when it runs again.
#include <gtest/gtest.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#include "corral/scheduler.hpp"
#include "corral/task_group.hpp"
#include "test_scale.hpp"
#include "test_util.hpp"

using namespace std::chrono_literals;
using corral::scheduler;
using corral::task_group;
using corral::testing::eventually;
using corral::testing::spin_for;
using clock_type = std::chrono::steady_clock;

namespace {

scheduler::options monitored(unsigned slots, bool monitor = true) {
  scheduler::options o;
  o.slots = slots;
  o.monitor_waits = monitor;
  o.spare_idle = std::chrono::milliseconds(50);
  return o;
}

void raw_sleep(std::chrono::milliseconds d) {  // nanosleep, no blocking_scope
  timespec t{static_cast<time_t>(d.count() / 1000), static_cast<long>(d.count() % 1000) * 1000000L};
  while (nanosleep(&t, &t) != 0) {
  }
}

}  // namespace

TEST(WaitMonitor, OffByDefault) {
  scheduler s(monitored(1, false));
  EXPECT_FALSE(s.wait_monitor_on());
  EXPECT_FALSE(scheduler(scheduler::options{}).wait_monitor_on());
  // A sleeper holds the only slot: the other task waits for it.
  std::atomic<bool> sleeper_done{false};
  std::atomic<bool> other_ran_early{false};
  task_group g(s);
  g.run([&] {
    raw_sleep(100ms);
    sleeper_done = true;
  });
  std::this_thread::sleep_for(10ms);
  g.run([&] { other_ran_early = !sleeper_done.load(); });
  g.wait();
  EXPECT_FALSE(other_ran_early.load());
  EXPECT_EQ(s.stats().lends, 0u);
}

TEST(WaitMonitor, ANanosleepingTaskLendsItsSlot) {
  scheduler s(monitored(1));
  ASSERT_TRUE(s.wait_monitor_on());
  std::atomic<bool> sleeper_done{false};
  std::atomic<int> others_done{0};
  std::atomic<unsigned> lent_seen{0};
  task_group g(s);
  g.run([&] {
    raw_sleep(1500ms);
    sleeper_done = true;
  });
  std::this_thread::sleep_for(10ms);
  for (int i = 0; i < 20; ++i)
    g.run([&] {
      spin_for(200us);
      lent_seen = std::max(lent_seen.load(), s.stats().lent);
      others_done.fetch_add(1);
    });
  // All 20 finish while the sleeper still sleeps: its slot was lent to another thread.
  EXPECT_TRUE(eventually([&] { return others_done.load() == 20; }, 1400ms)) << others_done.load();
  EXPECT_FALSE(sleeper_done.load());
  EXPECT_EQ(lent_seen.load(), 1u);
  g.wait();
  auto st = s.stats();
  EXPECT_GE(st.lends, 1u);
  EXPECT_TRUE(eventually([&] { return s.stats().lent == 0 && s.stats().running <= 1; }));
}

TEST(WaitMonitor, ATaskReadingAnEmptyPipeLendsItsSlot) {
  scheduler s(monitored(1));
  int fds[2];
  ASSERT_EQ(pipe(fds), 0);
  std::atomic<int> others_done{0};
  char got = 0;
  task_group g(s);
  g.run([&] { ASSERT_EQ(read(fds[0], &got, 1), 1); });
  std::this_thread::sleep_for(10ms);
  for (int i = 0; i < 10; ++i) g.run([&] { others_done.fetch_add(1); });
  EXPECT_TRUE(eventually([&] { return others_done.load() == 10; }, 5s));
  EXPECT_GE(s.stats().lends, 1u);
  ASSERT_EQ(write(fds[1], "x", 1), 1);
  g.wait();
  EXPECT_EQ(got, 'x');
  close(fds[0]);
  close(fds[1]);
  EXPECT_TRUE(eventually([&] { return s.stats().lent == 0; }));
}

TEST(WaitMonitor, CpuBoundTasksAreNeverLent) {
  scheduler s(monitored(2));
  task_group g(s);
  const int tasks = 8;
  for (int i = 0; i < tasks; ++i) g.run([] { spin_for(std::chrono::microseconds(50'000)); });
  g.wait();
  EXPECT_EQ(s.stats().lends, 0u);
  EXPECT_EQ(s.stats().lent, 0u);
}

TEST(WaitMonitor, ShortFutexWaitsAreNotLentLongOnesAre) {
  scheduler s(monitored(1));
  // A condition variable wait of 2 ms at a time, woken in between: never 8 ms without running.
  {
    std::mutex m;
    std::condition_variable cv;
    std::atomic<bool> stop{false};
    std::thread ticker([&] {
      while (!stop) {
        std::this_thread::sleep_for(2ms);
        cv.notify_all();
      }
    });
    task_group g(s);
    g.run([&] {
      std::unique_lock<std::mutex> lock(m);
      auto end = clock_type::now() + 200ms;
      while (clock_type::now() < end) cv.wait_for(lock, 50ms);
    });
    g.wait();
    stop = true;
    ticker.join();
    EXPECT_EQ(s.stats().lends, 0u);
  }
  // One long futex wait (a condition variable nobody signals for 300 ms): lent after ~8 ms.
  {
    std::mutex m;
    std::condition_variable cv;
    bool ready = false;
    std::atomic<int> others_done{0};
    task_group g(s);
    g.run([&] {
      std::unique_lock<std::mutex> lock(m);
      cv.wait(lock, [&] { return ready; });
    });
    std::this_thread::sleep_for(10ms);
    for (int i = 0; i < 5; ++i) g.run([&] { others_done.fetch_add(1); });
    EXPECT_TRUE(eventually([&] { return others_done.load() == 5; }, 5s));
    EXPECT_GE(s.stats().lends, 1u);
    {
      std::lock_guard<std::mutex> lock(m);
      ready = true;
    }
    cv.notify_all();
    g.wait();
  }
}

TEST(WaitMonitor, TheSleeperTakesASlotBackWhenItRunsAgain) {
  // One slot. The sleeper's slot is lent to a stream of short tasks; once it wakes and computes,
  // the stream must stop running beside it within about one task boundary (plus a sample).
  scheduler s(monitored(1));
  std::atomic<int> in_flight{0};
  std::atomic<bool> sleeper_computing{false};
  std::atomic<int> overlap_after_grace{0};
  std::atomic<bool> stop{false};
  task_group g(s);
  g.run([&] {
    in_flight.fetch_add(1);
    raw_sleep(60ms);
    auto start = clock_type::now();
    sleeper_computing = true;
    while (clock_type::now() - start < 150ms) {
      // After a grace of 30 ms (a sample, and the other thread's current task), we run alone.
      if (clock_type::now() - start > 30ms && in_flight.load() > 1)
        overlap_after_grace.fetch_add(1);
    }
    in_flight.fetch_sub(1);
    stop = true;
  });
  std::this_thread::sleep_for(5ms);
  std::function<void()> stream = [&] {
    in_flight.fetch_add(1);
    spin_for(500us);
    in_flight.fetch_sub(1);
    if (!stop) g.run(stream);
  };
  g.run(stream);
  g.wait();
  EXPECT_GE(s.stats().lends, 1u);
  EXPECT_EQ(overlap_after_grace.load(), 0);
  EXPECT_TRUE(eventually([&] { return s.stats().lent == 0 && s.stats().running <= 1; }));
}

TEST(WaitMonitor, SleepingWhileHoldingALockDoesNotDeadlock) {
  // The sleeper's slot goes to a task that then blocks on the sleeper's lock (futex): lent too
  // after ~8 ms, so the sleeper always gets a slot back.
  scheduler s(monitored(1));
  std::mutex m;
  std::vector<int> order;
  task_group g(s);
  const int tasks = static_cast<int>(corral::testing::scaled(40, 10));
  for (int i = 0; i < tasks; ++i)
    g.run([&, i] {
      std::lock_guard<std::mutex> lock(m);
      raw_sleep(3ms);
      order.push_back(i);
    });
  g.wait();
  EXPECT_EQ(static_cast<int>(order.size()), tasks);
  EXPECT_TRUE(eventually([&] { return s.stats().lent == 0; }));
}

TEST(WaitMonitor, CanBeStartedAndStoppedWhileTasksSleep) {
  scheduler s(monitored(1, false));
  task_group g(s);
  for (int i = 0; i < 4; ++i) g.run([] { raw_sleep(20ms); });
  s.set_wait_monitor(true);
  EXPECT_TRUE(s.wait_monitor_on());
  std::this_thread::sleep_for(15ms);
  s.set_wait_monitor(false);  // lends in place settle at their threads' next boundary
  EXPECT_FALSE(s.wait_monitor_on());
  g.wait();
  EXPECT_TRUE(eventually([&] { return s.stats().lent == 0 && s.stats().blocked == 0; }));
  s.set_wait_monitor(true);
  g.run([] { raw_sleep(30ms); });
  g.wait();
}

TEST(WaitMonitor, StatsStayConsistentUnderRandomSleeps) {
  // Many short unannounced sleeps and computations: every task runs once, and at the end nothing is
  // lent, blocked or returning.
  scheduler s(monitored(2));
  const int tasks = static_cast<int>(corral::testing::scaled(2000, 100));
  std::atomic<int> ran{0};
  task_group g(s);
  for (int i = 0; i < tasks; ++i)
    g.run([&, i] {
      if (i % 3 == 0)
        raw_sleep(std::chrono::milliseconds(1 + i % 4));
      else
        spin_for(std::chrono::microseconds(100));
      ran.fetch_add(1);
    });
  g.wait();
  EXPECT_EQ(ran.load(), tasks);
  EXPECT_TRUE(eventually([&] {
    auto st = s.stats();
    return st.lent == 0 && st.blocked == 0 && st.returning == 0 && st.running <= st.slots;
  }));
}
