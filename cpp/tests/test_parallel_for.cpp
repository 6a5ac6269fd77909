#include "corral/parallel_for.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <map>
#include <mutex>
#include <set>
#include <stdexcept>
#include <thread>
#include <vector>

#include "corral/event.hpp"
#include "corral/task_group.hpp"
#include "scheduler_options.hpp"
#include "test_scale.hpp"
#include "test_util.hpp"

using corral::scheduler;
using corral::testing::eventually;
using corral::testing::with_slots;

TEST(ParallelFor, EveryIndexOnceForManySizes) {
  scheduler s(with_slots(2));
  for (std::size_t n : {std::size_t{0}, std::size_t{1}, std::size_t{2}, std::size_t{3},
                        std::size_t{63}, std::size_t{64}, std::size_t{65}, std::size_t{1000},
                        corral::testing::scaled(1'000'000, 10'000)}) {
    std::vector<std::atomic<std::uint8_t>> hits(n + 10);
    corral::parallel_for(
        5, 5 + n, [&](std::size_t i) { hits[i].fetch_add(1, std::memory_order_relaxed); }, s);
    std::size_t wrong = 0;
    for (std::size_t i = 0; i < hits.size(); ++i)
      wrong += hits[i].load() != ((i >= 5 && i < 5 + n) ? 1 : 0);
    EXPECT_EQ(wrong, 0u) << "n = " << n;
  }
}

TEST(ParallelFor, UsesSeveralWorkersOnSlowBodies) {
  scheduler s(with_slots(2));
  std::mutex m;
  std::set<std::thread::id> ids;
  corral::parallel_for(
      0, 200,
      [&](std::size_t) {
        std::this_thread::sleep_for(std::chrono::microseconds(200));
        std::lock_guard<std::mutex> lock(m);
        ids.insert(std::this_thread::get_id());
      },
      s);
  EXPECT_GE(ids.size(), 2u);
}

// Slow indices bunched at one end: a worker that finishes its cheap half must be able to take over
// part of the slow half, and so on down to every slot (the slow bodies sleep, so four slots need
// no four cores). Ideal: 16 slow indices a thread.
TEST(ParallelFor, BunchedSlowIndicesSpreadOverEverySlot) {
  scheduler s(with_slots(4));
  std::mutex m;
  std::map<std::thread::id, int> slow_per_thread;
  corral::parallel_for(
      0, 256,
      [&](std::size_t i) {
        if (i >= 64) return;
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
        std::lock_guard<std::mutex> lock(m);
        ++slow_per_thread[std::this_thread::get_id()];
      },
      s);
  // At least one thread per slot; more is possible (4 workers plus the calling thread, slots
  // changing hands as threads park and wake), never fewer if every slot took part.
  EXPECT_GE(slow_per_thread.size(), 4u);
  for (const auto& [id, count] : slow_per_thread)
    EXPECT_LE(count, 32) << "one thread ran most of the slow indices";
}

// A range its offerer took back (nobody was free to steal it) is not split while every slot is
// busy, but must be as soon as a worker frees up. Here the other slot's worker is held by a task
// until the caller, having run [0, 32) alone, starts on the half it took back; it must then share
// [32, 64).
TEST(ParallelFor, ARangeTakenBackSplitsWhenAWorkerFreesUp) {
  scheduler s(with_slots(2));
  std::atomic<bool> holding{false}, release{false};
  s.submit([&] {
    holding = true;
    while (!release) std::this_thread::sleep_for(std::chrono::microseconds(100));  // keeps its slot
  });
  while (!holding) std::this_thread::yield();
  std::mutex m;
  std::set<std::thread::id> upper_half_threads;
  corral::parallel_for(
      0, 64,
      [&](std::size_t i) {
        if (i == 32) release = true;
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
        if (i < 32) return;
        std::lock_guard<std::mutex> lock(m);
        upper_half_threads.insert(std::this_thread::get_id());
      },
      s);
  // Shared: two threads at least (the caller and a worker; another worker may take over a slot).
  EXPECT_GE(upper_half_threads.size(), 2u);
}

TEST(ParallelFor, NestedRunsOnTheSameWorkers) {
  scheduler s(with_slots(2));
  std::atomic<long> sum{0};
  std::atomic<bool> off_worker{false};
  corral::parallel_for(
      0, 100,
      [&](std::size_t i) {
        corral::parallel_for(
            0, 100,
            [&](std::size_t j) {
              if (scheduler::current() != &s) off_worker = true;
              sum.fetch_add(static_cast<long>(i * 100 + j), std::memory_order_relaxed);
            },
            s);
      },
      s);
  EXPECT_EQ(sum.load(), 9999L * 10000 / 2);
  EXPECT_FALSE(off_worker.load());
  EXPECT_LE(s.stats().peak_threads, s.max_threads());
  EXPECT_LE(s.stats().threads, 2u + s.stats().spares);
}

TEST(ParallelFor, RethrowsAndStopsEarly) {
  scheduler s(with_slots(2));
  std::atomic<long> ran{0};
  const std::size_t n = 1'000'000;
  EXPECT_THROW(corral::parallel_for(
                   0, n,
                   [&](std::size_t i) {
                     ran.fetch_add(1, std::memory_order_relaxed);
                     if (i == 10) throw std::out_of_range("ten");
                   },
                   s),
               std::out_of_range);
  EXPECT_LT(ran.load(), static_cast<long>(n));
}

TEST(ParallelFor, RethrowsFromInsideATask) {
  scheduler s(with_slots(2));
  corral::task_group g(s);
  std::atomic<bool> caught{false};
  g.run([&] {
    try {
      corral::parallel_for(
          0, 1000,
          [](std::size_t i) {
            if (i == 999) throw std::runtime_error("x");
          },
          s);
    } catch (const std::runtime_error&) {
      caught = true;
    }
  });
  g.wait();
  EXPECT_TRUE(caught.load());
}

// An outside thread that waits takes a free slot and runs the work itself (as oneTBB's caller
// does), but never beyond the slots.
TEST(ParallelFor, AnOutsideCallerRunsTheWorkItselfWhenASlotIsFree) {
  scheduler s(with_slots(1));
  // Let the worker fall asleep so that the slot is free.
  eventually([&] { return s.stats().parked == s.stats().threads; }, std::chrono::milliseconds(500));
  std::mutex m;
  std::set<std::thread::id> ids;
  corral::parallel_for(
      0, 100,
      [&](std::size_t) {
        std::lock_guard<std::mutex> lock(m);
        ids.insert(std::this_thread::get_id());
      },
      s);
  EXPECT_TRUE(ids.count(std::this_thread::get_id()) == 1);
  EXPECT_GE(s.stats().outside_helps, 1u);
  EXPECT_EQ(scheduler::current(), nullptr);  // an outside thread again afterwards
}

TEST(ParallelFor, AnOutsideCallerDoesNotExceedTheSlots) {
  scheduler s(with_slots(1));
  std::atomic<bool> started{false};
  std::atomic<bool> release{false};
  corral::event occupied_done;
  s.submit([&] {  // holds the only slot for a while
    started = true;
    while (!release.load()) std::this_thread::yield();
    occupied_done.set();
  });
  while (!started.load()) std::this_thread::yield();
  std::thread releaser([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(30));
    release = true;
  });
  std::mutex m;
  std::set<std::thread::id> ids;
  corral::parallel_for(
      0, 50,
      [&](std::size_t) {
        EXPECT_TRUE(release.load());  // nothing ran beside the slot holder
        std::lock_guard<std::mutex> lock(m);
        ids.insert(std::this_thread::get_id());
      },
      s);
  releaser.join();
  occupied_done.wait();
  EXPECT_EQ(ids.count(std::this_thread::get_id()), 0u);
}

TEST(ParallelFor, ManyOutsideCallersStayWithinTheSlots) {
  scheduler s(with_slots(2));
  std::atomic<int> running{0};
  std::atomic<int> max_running{0};
  std::vector<std::thread> callers;
  const std::size_t n = corral::testing::scaled(20'000, 500);
  for (int c = 0; c < 4; ++c)
    callers.emplace_back([&] {
      for (int round = 0; round < 20; ++round)
        corral::parallel_for(
            0, n,
            [&](std::size_t) {
              int now = running.fetch_add(1) + 1;
              corral::testing::record_max(max_running, now);
              running.fetch_sub(1);
            },
            s);
    });
  for (auto& t : callers) t.join();
  EXPECT_LE(max_running.load(), 2);
  EXPECT_GE(s.stats().outside_helps, 1u);
  auto st = s.stats();
  EXPECT_LE(st.running, st.slots);
}

TEST(ParallelFor, TaskGroupWaitFromOutsideRunsTasksAndLeavesNothingBehind) {
  scheduler s(with_slots(1));
  eventually([&] { return s.stats().parked == s.stats().threads; }, std::chrono::milliseconds(500));
  corral::task_group g(s);
  std::atomic<int> detached{0};
  std::atomic<int> ran{0};
  for (int i = 0; i < 100; ++i)
    g.run([&] {
      ran.fetch_add(1);
      // Work for nobody's group: must not be lost when the outside helper leaves.
      s.submit([&] { detached.fetch_add(1); });
    });
  g.wait();
  EXPECT_EQ(ran.load(), 100);
  eventually([&] { return detached.load() == 100; }, std::chrono::seconds(5));
  EXPECT_EQ(detached.load(), 100);
}
