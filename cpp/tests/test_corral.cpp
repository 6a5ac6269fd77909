// The umbrella header: corral/corral.hpp alone is enough to use the library. This file includes no
// other corral header, so it fails to compile if the umbrella misses one these tests use.
#include "corral/corral.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <cstddef>
#include <string>
#include <vector>

namespace {

TEST(Corral, PermitTableRoundTrip) {
  corral::permit_table table(2);
  EXPECT_EQ(table.permits(), 2u);
  {
    corral::permit held(table);
    EXPECT_TRUE(table.held_by_this_thread());
    EXPECT_EQ(table.stats().held, 1u);
    EXPECT_TRUE(table.try_acquire());  // nested: the same permit
    table.release();
    EXPECT_EQ(table.stats().held, 1u);
  }
  EXPECT_FALSE(table.held_by_this_thread());
  const corral::permit_stats stats = table.stats();
  EXPECT_EQ(stats.held, 0u);
  EXPECT_EQ(stats.waiting, 0u);
  EXPECT_EQ(stats.acquires, 1u);
}

TEST(Corral, TaskGroupAndParallelForRoundTrip) {
  corral::scheduler::options options;
  options.slots = 2;
  corral::scheduler s(options);

  std::atomic<int> sum{0};
  corral::task_group group(s);
  for (int i = 1; i <= 100; ++i)
    group.run([&sum, i] { sum.fetch_add(i, std::memory_order_relaxed); });
  group.wait();
  EXPECT_EQ(sum.load(), 5050);

  std::vector<int> squares(1000);
  corral::parallel_for(
      0, squares.size(), [&](std::size_t i) { squares[i] = static_cast<int>(i * i); }, s);
  for (std::size_t i = 0; i < squares.size(); ++i) ASSERT_EQ(squares[i], static_cast<int>(i * i));

  corral::event done;
  s.submit([&done] {
    corral::blocking_scope waiting;
    done.set();
  });
  done.wait();
  EXPECT_TRUE(done.is_set());
}

TEST(Corral, CpuSetsAndVersion) {
  const corral::cpu_set cpus = corral::cpu_set::parse("0-3,8");
  EXPECT_EQ(cpus.count(), 5u);
  EXPECT_EQ(cpus.to_string(), "0-3,8");
  const auto parts = corral::partition_cpus(corral::flat_topology(cpus), 5);
  ASSERT_EQ(parts.size(), 5u);
  for (const auto& part : parts) EXPECT_EQ(part.size(), 1u);
  EXPECT_FALSE(std::string(corral::version()).empty());
}

}  // namespace
