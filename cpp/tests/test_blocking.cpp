#include "corral/blocking.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <functional>
#include <random>
#include <thread>
#include <vector>

#include "corral/event.hpp"
#include "corral/scheduler.hpp"
#include "corral/task_group.hpp"
#include "scheduler_options.hpp"
#include "test_scale.hpp"
#include "test_util.hpp"

using namespace std::chrono_literals;
using corral::blocking_scope;
using corral::scheduler;
using corral::task_group;
using corral::testing::record_max;
using corral::testing::spin_for;

namespace {

// Spares retire after 20 ms idle here, so the tests see them come and go quickly.
scheduler::options with_slots(unsigned slots, unsigned max_threads = 0) {
  scheduler::options o = corral::testing::with_slots(slots, max_threads);
  o.spare_idle = std::chrono::milliseconds(20);
  return o;
}

}  // namespace

TEST(Blocking, OffAWorkerItDoesNothing) {
  blocking_scope scope;
  corral::event e;
  EXPECT_FALSE(e.wait_for(1ms));
}

TEST(Blocking, ABlockedTaskHandsItsSlotToTheTaskItWaitsFor) {
  // One slot: without the hand-over the second task could never run and the first would wait
  // forever.
  scheduler s(with_slots(1));
  corral::event go;
  std::atomic<bool> done{false};
  task_group g(s);
  g.run([&] {
    blocking_scope scope;
    while (!go.wait_for(1s)) {
    }
    done = true;
  });
  std::this_thread::sleep_for(10ms);
  g.run([&] { go.set(); });
  g.wait();
  EXPECT_TRUE(done.load());
  EXPECT_GE(s.stats().spares_started + s.stats().parks, 1u);
}

TEST(Blocking, RunningTasksStayWithinTheSlotsWhileTasksBlockAtRandom) {
  const unsigned slots = 2;
  scheduler s(with_slots(slots, 64));
  std::atomic<int> in_task{0}, max_in_task{0}, max_blocked{0}, blocked{0};
  const int tasks = static_cast<int>(corral::testing::scaled(4000, 400));
  task_group g(s);
  for (int i = 0; i < tasks; ++i) {
    g.run([&, i] {
      record_max(max_in_task, in_task.fetch_add(1) + 1);
      std::mt19937 rng(static_cast<unsigned>(i));
      for (int step = 0; step < 3; ++step) {
        if (rng() % 3 == 0) {
          in_task.fetch_sub(1);  // not running while blocked
          {
            blocking_scope scope;
            record_max(max_blocked, blocked.fetch_add(1) + 1);
            std::this_thread::sleep_for(std::chrono::microseconds(rng() % 300));
            blocked.fetch_sub(1);
          }
          record_max(max_in_task, in_task.fetch_add(1) + 1);
        } else {
          spin_for(std::chrono::microseconds(rng() % 50));
        }
      }
      in_task.fetch_sub(1);
    });
  }
  g.wait();
  // Exactly: a returning thread waits for a free slot, so the count never goes above the slots.
  EXPECT_LE(max_in_task.load(), static_cast<int>(slots));
  EXPECT_GE(max_blocked.load(), 2);  // blocking did overlap with running
  EXPECT_LE(s.stats().peak_threads, 64u);
  EXPECT_GT(s.stats().spares_started, 0u);
}

TEST(Blocking, RandomNestingAndBlocking) {
  scheduler s(with_slots(2, 32));
  std::atomic<long> leaves{0};
  std::function<void(int, unsigned)> node = [&](int depth, unsigned seed) {
    std::mt19937 rng(seed);
    if (depth == 0) {
      leaves.fetch_add(1);
      return;
    }
    task_group g(s);
    for (int c = 0; c < 3; ++c) {
      unsigned child = static_cast<unsigned>(rng());
      g.run([&, depth, child] { node(depth - 1, child); });
    }
    if (rng() % 4 == 0) {
      blocking_scope scope;
      std::this_thread::sleep_for(std::chrono::microseconds(rng() % 200));
    }
    if (rng() % 4 == 0) {  // wait on our own event, set by a sibling task
      corral::event e;
      g.run([&e] { e.set(); });
      e.wait();
    }
    g.wait();
  };
  const int depth = corral::testing::sanitized() ? 5 : 7;
  task_group root(s);
  root.run([&] { node(depth, 42); });
  root.wait();
  long expected = 1;
  for (int i = 0; i < depth; ++i) expected *= 3;
  EXPECT_EQ(leaves.load(), expected);
  EXPECT_LE(s.stats().peak_threads, 32u);
}

TEST(Blocking, EventWaitOnAWorkerRunsOtherTasks) {
  scheduler s(with_slots(1));
  corral::event e;
  std::atomic<std::thread::id> waiter_thread{}, setter_thread{};
  task_group g(s);
  g.run([&] {
    waiter_thread = std::this_thread::get_id();
    // The setter is queued behind us on the only slot: wait() must run it (or hand the slot over).
    scheduler::current()->submit([&] {
      setter_thread = std::this_thread::get_id();
      e.set();
    });
    e.wait();
  });
  g.wait();
  EXPECT_TRUE(e.is_set());
  EXPECT_EQ(waiter_thread.load(), setter_thread.load())
      << "the waiting worker should have run the setter itself";
}

TEST(Blocking, EventWaitForTimesOutOnAndOffWorkers) {
  scheduler s(with_slots(2));
  corral::event never;
  auto t0 = std::chrono::steady_clock::now();
  EXPECT_FALSE(never.wait_for(20ms));
  EXPECT_GE(std::chrono::steady_clock::now() - t0, 20ms);
  std::atomic<bool> result{true};
  task_group g(s);
  g.run([&] { result = never.wait_for(20ms); });
  g.wait();
  EXPECT_FALSE(result.load());
  corral::event soon;
  std::thread setter([&] {
    std::this_thread::sleep_for(5ms);
    soon.set();
  });
  EXPECT_TRUE(soon.wait_for(10s));
  setter.join();
}

TEST(Blocking, SparesRetireWhenIdle) {
  scheduler s(with_slots(2, 16));
  task_group g(s);
  for (int i = 0; i < 8; ++i)
    g.run([] {
      blocking_scope scope;
      std::this_thread::sleep_for(20ms);
    });
  g.wait();
  EXPECT_GT(s.stats().peak_threads, 2u);
  std::this_thread::sleep_for(200ms);
  corral::testing::eventually([&] { return s.stats().threads <= 2; }, 5s);
  EXPECT_EQ(s.stats().threads, 2u);
}

TEST(Blocking, NestedScopesReleaseOnce) {
  scheduler s(with_slots(2));
  task_group g(s);
  std::atomic<unsigned> blocked_inside{0};
  g.run([&] {
    blocking_scope outer;
    {
      blocking_scope inner;
      blocked_inside = s.stats().blocked;
    }
  });
  g.wait();
  EXPECT_EQ(blocked_inside.load(), 1u);
  EXPECT_EQ(s.stats().blocked, 0u);
}
