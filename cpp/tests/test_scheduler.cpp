#include "corral/scheduler.hpp"

#include <gtest/gtest.h>
#include <time.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <memory>
#include <stdexcept>
#include <thread>
#include <vector>

#include "corral/event.hpp"
#include "corral/task_group.hpp"
#include "scheduler_options.hpp"
#include "test_scale.hpp"
#include "test_util.hpp"

using namespace std::chrono_literals;
using corral::scheduler;
using corral::testing::eventually;
using corral::testing::with_slots;

namespace {

double process_cpu_seconds() {
  timespec t{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
  return static_cast<double>(t.tv_sec) + static_cast<double>(t.tv_nsec) * 1e-9;
}

}  // namespace

TEST(Scheduler, SlotsDefaultToTheBudgetAndOptionsAreChecked) {
  scheduler s;
  EXPECT_EQ(s.slots(), scheduler::default_slots());
  EXPECT_GE(s.max_threads(), s.slots());
  scheduler::options bad;
  bad.slots = 4;
  bad.max_threads = 2;
  EXPECT_THROW(scheduler{bad}, std::invalid_argument);
  EXPECT_THROW(s.set_slots(0), std::invalid_argument);
  EXPECT_THROW(s.set_slots(s.max_threads() + 1), std::invalid_argument);
}

TEST(Scheduler, EverySubmittedTaskRunsExactlyOnce) {
  const std::size_t n = corral::testing::scaled(1'000'000, 1000);
  std::vector<std::atomic<std::uint8_t>> runs(n);
  {
    scheduler s(with_slots(2));
    // Submitted from two outside threads at once, and from inside tasks.
    auto submit_range = [&](std::size_t begin, std::size_t end) {
      for (std::size_t i = begin; i < end; ++i)
        s.submit([&runs, i] { runs[i].fetch_add(1, std::memory_order_relaxed); });
    };
    std::thread a(submit_range, 0, n / 4);
    std::thread b(submit_range, n / 4, n / 2);
    s.submit([&] { submit_range(n / 2, n); });
    a.join();
    b.join();
  }  // the destructor drains
  std::size_t wrong = 0;
  for (auto& r : runs) wrong += r.load() != 1;
  EXPECT_EQ(wrong, 0u);
}

TEST(Scheduler, CurrentIsTheWorkersScheduler) {
  scheduler s(with_slots(2));
  EXPECT_EQ(scheduler::current(), nullptr);
  std::atomic<scheduler*> seen{nullptr};
  corral::event done;
  s.submit([&] {
    seen = scheduler::current();
    done.set();
  });
  done.wait();
  EXPECT_EQ(seen.load(), &s);
}

TEST(Scheduler, IdleWorkersUseNoCpu) {
  scheduler s(with_slots(2));
  {  // wake everyone up, then let them fall asleep
    corral::task_group g(s);
    for (int i = 0; i < 1000; ++i) g.run([] {});
    g.wait();
  }
  ASSERT_TRUE(eventually([&] { return s.stats().parked == s.stats().threads; }, 5s));
  double before = process_cpu_seconds();
  std::this_thread::sleep_for(1s);
  double used = process_cpu_seconds() - before;
  // The test's own thread sleeps; parked workers should not run at all.
  EXPECT_LT(used, 0.02) << "an idle pool used " << used << " s of CPU in 1 s";
}

TEST(Scheduler, WakesAnIdlePoolQuickly) {
  scheduler s(with_slots(2));
  ASSERT_TRUE(eventually([&] { return s.stats().parked == s.stats().threads; }, 5s));
  std::vector<double> latencies;
  for (int i = 0; i < 20; ++i) {
    std::this_thread::sleep_for(5ms);  // workers fall asleep
    std::atomic<std::int64_t> started{0};
    corral::event done;
    auto t0 = std::chrono::steady_clock::now();
    s.submit([&] {
      started = (std::chrono::steady_clock::now() - t0).count();
      done.set();
    });
    done.wait();
    latencies.push_back(static_cast<double>(started.load()) * 1e-3);
  }
  std::sort(latencies.begin(), latencies.end());
  double median_us = latencies[latencies.size() / 2];
  // Tens of microseconds normally; generous for a loaded, shared, sanitized machine.
  EXPECT_LT(median_us, corral::testing::sanitized() ? 5000.0 : 1000.0)
      << "median wake latency " << median_us << " us";
  std::printf("median wake latency %.1f us\n", median_us);
}

TEST(Scheduler, DestructorDrainsNestedWork) {
  std::atomic<int> count{0};
  {
    scheduler s(with_slots(2));
    for (int i = 0; i < 100; ++i)
      s.submit([&] {
        std::this_thread::sleep_for(100us);
        for (int j = 0; j < 10; ++j) scheduler::current()->submit([&] { count.fetch_add(1); });
      });
  }
  EXPECT_EQ(count.load(), 1000);
}

TEST(Scheduler, UnhandledExceptionGoesToTheHandler) {
  std::atomic<int> caught{0};
  scheduler::options o = with_slots(2);
  o.on_unhandled_exception = [&](std::exception_ptr e) {
    try {
      std::rethrow_exception(e);
    } catch (const std::runtime_error&) {
      caught.fetch_add(1);
    }
  };
  {
    scheduler s(o);
    for (int i = 0; i < 10; ++i) s.submit([] { throw std::runtime_error("boom"); });
  }
  EXPECT_EQ(caught.load(), 10);
}

TEST(SchedulerDeathTest, UnhandledExceptionTerminatesByDefault) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH(
      {
        scheduler s(with_slots(1));
        s.submit([] { throw std::runtime_error("boom"); });
      },
      "threw an exception");
}

namespace {
struct counting_observer : corral::task_observer {
  std::atomic<long> starts{0}, ends{0};
  std::atomic<bool> on_worker{true};
  void on_task_start(scheduler&) noexcept override {
    starts.fetch_add(1);
    if (scheduler::current() == nullptr) on_worker = false;
  }
  void on_task_end(scheduler&) noexcept override { ends.fetch_add(1); }
};
}  // namespace

TEST(Scheduler, ObserverSeesEveryTaskStartOnAWorker) {
  counting_observer watcher;
  scheduler::options o = with_slots(2);
  o.observer = &watcher;
  {
    scheduler s(o);
    corral::task_group g(s);
    for (int i = 0; i < 500; ++i) g.run([] {});
    g.wait();
    // The count is bumped just after each task returns: let the last one land.
    EXPECT_TRUE(eventually([&] { return s.stats().tasks_run == 500u; }, 5s));
  }
  EXPECT_EQ(watcher.starts.load(), 500);
  EXPECT_EQ(watcher.ends.load(), 500);
  EXPECT_TRUE(watcher.on_worker.load());
}

TEST(Scheduler, SetSlotsUnderLoad) {
  scheduler s(with_slots(2));
  std::atomic<int> running{0}, max_running{0};
  std::atomic<bool> stop{false};
  std::atomic<unsigned> limit{2};
  std::atomic<int> violations{0};
  corral::task_group g(s);
  const int tasks = static_cast<int>(corral::testing::scaled(20000, 2000));
  std::thread changer([&] {
    for (unsigned round = 0; !stop.load(); ++round) {
      unsigned n = 1 + round % 4;
      s.set_slots(n);
      std::this_thread::sleep_for(2ms);
      limit = n;
    }
  });
  for (int i = 0; i < tasks; ++i)
    g.run([&] {
      int now = running.fetch_add(1) + 1;
      // After a change settles, running tasks stay within the slots (+1 for a change in flight).
      if (now > static_cast<int>(limit.load()) + 2 && now > 4) violations.fetch_add(1);
      corral::testing::record_max(max_running, now);
      volatile int spin = 0;
      for (int k = 0; k < 2000; ++k) spin = spin + k;
      running.fetch_sub(1);
    });
  g.wait();
  stop = true;
  changer.join();
  EXPECT_EQ(violations.load(), 0);
  EXPECT_LE(max_running.load(), 4);  // never above the largest slot count used
  EXPECT_TRUE(
      eventually([&] { return s.stats().tasks_run == static_cast<std::uint64_t>(tasks); }, 5s));
  s.set_slots(3);
  EXPECT_EQ(s.slots(), 3u);
  EXPECT_TRUE(eventually([&] { return s.stats().threads >= 3; }, 5s));
}

TEST(Scheduler, GlobalIsOneSchedulerWithBudgetSlots) {
  scheduler& g = scheduler::global();
  EXPECT_EQ(&g, &scheduler::global());
  EXPECT_EQ(g.slots(), scheduler::default_slots());
}
