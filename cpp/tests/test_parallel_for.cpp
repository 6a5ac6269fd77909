#include "corral/parallel_for.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <mutex>
#include <set>
#include <stdexcept>
#include <thread>
#include <vector>

#include "test_scale.hpp"

using corral::scheduler;

namespace {
scheduler::options with_slots(unsigned slots) {
  scheduler::options o;
  o.slots = slots;
  return o;
}
}  // namespace

TEST(ParallelFor, EveryIndexOnceForManySizes) {
  scheduler s(with_slots(2));
  for (std::size_t n : {std::size_t{0}, std::size_t{1}, std::size_t{2}, std::size_t{3}, std::size_t{63}, std::size_t{64},
                        std::size_t{65}, std::size_t{1000}, corral::testing::scaled(1'000'000, 10'000)}) {
    std::vector<std::atomic<std::uint8_t>> hits(n + 10);
    corral::parallel_for(5, 5 + n, [&](std::size_t i) { hits[i].fetch_add(1, std::memory_order_relaxed); }, s);
    std::size_t wrong = 0;
    for (std::size_t i = 0; i < hits.size(); ++i) wrong += hits[i].load() != ((i >= 5 && i < 5 + n) ? 1 : 0);
    EXPECT_EQ(wrong, 0u) << "n = " << n;
  }
}

TEST(ParallelFor, UsesSeveralWorkersOnSlowBodies) {
  scheduler s(with_slots(2));
  std::mutex m;
  std::set<std::thread::id> ids;
  corral::parallel_for(0, 200, [&](std::size_t) {
    std::this_thread::sleep_for(std::chrono::microseconds(200));
    std::lock_guard<std::mutex> lock(m);
    ids.insert(std::this_thread::get_id());
  }, s);
  EXPECT_GE(ids.size(), 2u);
}

TEST(ParallelFor, NestedRunsOnTheSameWorkers) {
  scheduler s(with_slots(2));
  std::atomic<long> sum{0};
  std::atomic<bool> off_worker{false};
  corral::parallel_for(0, 100, [&](std::size_t i) {
    corral::parallel_for(0, 100, [&](std::size_t j) {
      if (scheduler::current() != &s) off_worker = true;
      sum.fetch_add(static_cast<long>(i * 100 + j), std::memory_order_relaxed);
    }, s);
  }, s);
  EXPECT_EQ(sum.load(), 9999L * 10000 / 2);
  EXPECT_FALSE(off_worker.load());
  EXPECT_LE(s.stats().peak_threads, s.max_threads());
  EXPECT_LE(s.stats().threads, 2u + s.stats().spares);
}

TEST(ParallelFor, RethrowsAndStopsEarly) {
  scheduler s(with_slots(2));
  std::atomic<long> ran{0};
  const std::size_t n = 1'000'000;
  EXPECT_THROW(corral::parallel_for(0, n, [&](std::size_t i) {
    ran.fetch_add(1, std::memory_order_relaxed);
    if (i == 10) throw std::out_of_range("ten");
  }, s), std::out_of_range);
  EXPECT_LT(ran.load(), static_cast<long>(n));
}

TEST(ParallelFor, RethrowsFromInsideATask) {
  scheduler s(with_slots(2));
  corral::task_group g(s);
  std::atomic<bool> caught{false};
  g.run([&] {
    try {
      corral::parallel_for(0, 1000, [](std::size_t i) { if (i == 999) throw std::runtime_error("x"); }, s);
    } catch (const std::runtime_error&) {
      caught = true;
    }
  });
  g.wait();
  EXPECT_TRUE(caught.load());
}
