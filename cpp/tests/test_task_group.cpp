#include "corral/task_group.hpp"

#include <gtest/gtest.h>

#include <pthread.h>

#include <array>
#include <atomic>
#include <memory>
#include <random>
#include <stdexcept>
#include <thread>
#include <vector>

#include "scheduler_options.hpp"
#include "test_scale.hpp"
#include "test_util.hpp"

using namespace std::chrono_literals;
using corral::scheduler;
using corral::task_group;
using corral::testing::fib;
using corral::testing::with_slots;

namespace {

long fib_serial(int n) {
  return n < 2 ? n : fib_serial(n - 1) + fib_serial(n - 2);
}

}  // namespace

TEST(TaskGroup, TenMillionTinyTasksRunExactlyOnce) {
  // 10 million in optimised builds; counters per task in batches (a byte each would need 10 MB:
  // fine).
  const std::size_t n = corral::testing::scaled(10'000'000, 20'000);
  std::vector<std::atomic<std::uint8_t>> runs(n);
  scheduler s(with_slots(2));
  task_group outer(s);
  const std::size_t batch = 10'000;
  for (std::size_t begin = 0; begin < n; begin += batch) {
    std::size_t end = std::min(n, begin + batch);
    outer.run([&, begin, end] {  // each batch's tasks are spawned from inside a task: local deques
      task_group inner(s);
      for (std::size_t i = begin; i < end; ++i)
        inner.run([&runs, i] { runs[i].fetch_add(1, std::memory_order_relaxed); });
      inner.wait();
    });
  }
  outer.wait();
  std::size_t wrong = 0;
  for (auto& r : runs) wrong += r.load(std::memory_order_relaxed) != 1;
  EXPECT_EQ(wrong, 0u);
  EXPECT_GE(s.stats().tasks_run, n);
}

TEST(TaskGroup, FirstExceptionIsRethrownAtWaitAndCancelsTheRest) {
  scheduler s(with_slots(2));
  task_group g(s);
  std::atomic<int> ran{0};
  g.run([] { throw std::runtime_error("first"); });
  std::this_thread::sleep_for(5ms);  // let it throw before the others are queued
  for (int i = 0; i < 1000; ++i) g.run([&] { ran.fetch_add(1); });
  EXPECT_TRUE(g.is_canceling());
  try {
    g.wait();
    FAIL() << "wait() did not rethrow";
  } catch (const std::runtime_error& e) {
    EXPECT_STREQ(e.what(), "first");
  }
  EXPECT_EQ(ran.load(), 0);  // queued after the failure: skipped
  // The group is reusable afterwards.
  EXPECT_FALSE(g.is_canceling());
  g.run([&] { ran.fetch_add(1); });
  g.wait();
  EXPECT_EQ(ran.load(), 1);
}

TEST(TaskGroup, ManyExceptionsOneRethrown) {
  scheduler s(with_slots(2));
  task_group g(s);
  for (int i = 0; i < 100; ++i) g.run([i] { throw i; });
  EXPECT_THROW(g.wait(), int);
  g.wait();  // nothing left, nothing rethrown twice
}

TEST(TaskGroup, CancelSkipsTasksNotYetStarted) {
  scheduler s(with_slots(1));
  task_group g(s);
  std::atomic<bool> started{false}, go{false};
  std::atomic<int> ran{0};
  // Holds the only slot without blocking (a blocking wait would hand the slot to the others).
  g.run([&] {
    started = true;
    while (!go) std::this_thread::yield();
  });
  while (!started) std::this_thread::yield();
  for (int i = 0; i < 100; ++i) g.run([&] { ran.fetch_add(1); });
  g.cancel();
  go = true;
  g.wait();
  EXPECT_EQ(ran.load(), 0);
}

TEST(TaskGroup, RunningTasksCanPollCancellation) {
  scheduler s(with_slots(2));
  task_group g(s);
  std::atomic<bool> started{false};
  g.run([&] {
    started = true;
    while (!g.is_canceling()) std::this_thread::yield();
  });
  while (!started) std::this_thread::yield();
  g.cancel();
  g.wait();
  SUCCEED();
}

TEST(TaskGroup, FibByTaskPerCallStaysWithinTheThreadCap) {
  const int n = corral::testing::sanitized() ? 22 : 30;
  scheduler s(with_slots(2, 4));
  long result = 0;
  task_group g(s);
  g.run([&] { result = fib(s, n); });
  g.wait();
  EXPECT_EQ(result, fib_serial(n));
  EXPECT_LE(s.stats().peak_threads, 4u);
  std::printf("fib(%d): %llu tasks, %llu steals, peak threads %u\n", n,
              static_cast<unsigned long long>(s.stats().tasks_run),
              static_cast<unsigned long long>(s.stats().steals), s.stats().peak_threads);
}

TEST(TaskGroup, FibFromAnOutsideThreadUsesTheGlobalScheduler) {
  EXPECT_EQ(fib(scheduler::global(), 18), fib_serial(18));
}

namespace {
int descend(scheduler& s, int depth) {
  if (depth == 0) return 0;
  int below = 0;
  task_group g(s);
  g.run([&] { below = descend(s, depth - 1); });
  g.wait();
  return below + 1;
}
}  // namespace

TEST(TaskGroup, RecursionTenThousandDeep) {
#if defined(__SANITIZE_THREAD__)
  const int levels = 2'000;  // ThreadSanitizer cannot record stacks deeper than 65536 frames
#else
  const int levels = 10'000;
#endif
  scheduler s(with_slots(2, 8));
  int depth = 0;
  task_group g(s);
  g.run([&] { depth = descend(s, levels); });
  g.wait();
  EXPECT_EQ(depth, levels);
  EXPECT_LE(s.stats().peak_threads, 8u);
}

namespace {
// Runs f on a new thread with a stack of the given size (std::thread cannot choose one).
template <class F>
void run_on_thread_with_stack(std::size_t stack_size, F f) {
  pthread_attr_t attributes;
  pthread_attr_init(&attributes);
  ASSERT_EQ(pthread_attr_setstacksize(&attributes, stack_size), 0);
  pthread_t thread;
  auto entry = [](void* arg) -> void* {
    (*static_cast<F*>(arg))();
    return nullptr;
  };
  ASSERT_EQ(pthread_create(&thread, &attributes, entry, &f), 0);
  pthread_attr_destroy(&attributes);
  pthread_join(thread, nullptr);
}
}  // namespace

// An outside thread that helps with its wait runs tasks on its own (here small) stack; when that
// runs short it stops helping with a task left in its deque while every worker is blocked in a wait
// of its own. Its slot must then go to a spare, or nothing runs that task (a hang CI found under
// ASan).
TEST(TaskGroup, RecursionFromAnOutsideThreadWhoseStackRunsShort) {
  const int levels = static_cast<int>(corral::testing::scaled(10'000, 2'000));
  for (int round = 0; round < 20; ++round) {
    scheduler s(with_slots(2, 8));
    int depth = 0;
    run_on_thread_with_stack(std::size_t{2} << 20, [&] {
      task_group g(s);
      g.run([&] { depth = descend(s, levels); });
      g.wait();
    });
    ASSERT_EQ(depth, levels) << "round " << round;
    EXPECT_LE(s.stats().peak_threads, 8u);
  }
}

namespace {
// A random tree of groups: each task may spawn a random number of children in a new group and wait.
void random_tree(scheduler& s, std::uint64_t seed, int depth, std::atomic<long>& nodes) {
  nodes.fetch_add(1, std::memory_order_relaxed);
  std::mt19937_64 rng(seed);
  if (depth == 0) return;
  int children = static_cast<int>(rng() % 5);
  task_group g(s);
  for (int c = 0; c < children; ++c) {
    std::uint64_t child_seed = rng();
    g.run([&s, child_seed, depth, &nodes] { random_tree(s, child_seed, depth - 1, nodes); });
  }
  g.wait();
}

long count_tree(std::uint64_t seed, int depth) {
  std::mt19937_64 rng(seed);
  if (depth == 0) return 1;
  long total = 1;
  int children = static_cast<int>(rng() % 5);
  for (int c = 0; c < children; ++c) total += count_tree(rng(), depth - 1);
  return total;
}
}  // namespace

TEST(TaskGroup, RandomNesting) {
  scheduler s(with_slots(2));
  const int depth = corral::testing::sanitized() ? 6 : 9;
  for (std::uint64_t seed = 1; seed <= 5; ++seed) {
    std::atomic<long> nodes{0};
    random_tree(s, seed, depth, nodes);  // from outside: the root runs here, children on workers
    EXPECT_EQ(nodes.load(), count_tree(seed, depth)) << "seed " << seed;
  }
}

TEST(TaskGroup, RunFromManyOutsideThreadsIntoOneGroup) {
  scheduler s(with_slots(2));
  task_group g(s);
  std::atomic<int> ran{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&] {
      for (int i = 0; i < 1000; ++i) g.run([&] { ran.fetch_add(1); });
    });
  for (auto& t : threads) t.join();
  g.wait();
  EXPECT_EQ(ran.load(), 4000);
}

TEST(TaskGroup, DestructorWaits) {
  scheduler s(with_slots(2));
  std::atomic<int> ran{0};
  {
    task_group g(s);
    for (int i = 0; i < 100; ++i)
      g.run([&] {
        std::this_thread::sleep_for(100us);
        ran.fetch_add(1);
      });
  }
  EXPECT_EQ(ran.load(), 100);
}

// ---- The inline task (one task kept in the group itself, ended without an RMW on its maker's
// thread): every way it can end and be waited for.

TEST(TaskGroup, InlineTaskIsWaitedForWhenAnotherThreadRunsIt) {
  // The maker is an outside thread that cannot help (the only slot is taken): its inline task
  // runs on the worker while the maker sleeps, so the end must find the maker's count and wake it.
  scheduler s(with_slots(1));
  std::atomic<bool> hold{true};
  task_group blocker(s);
  blocker.run([&] {
    while (hold.load()) std::this_thread::sleep_for(1ms);
  });
  std::this_thread::sleep_for(5ms);  // the worker holds the slot
  for (int round = 0; round < 20; ++round) {
    task_group g(s);
    std::atomic<bool> finished{false};
    g.run([&] {
      std::this_thread::sleep_for(2ms);
      finished.store(true);
    });
    if (round == 0) hold.store(false);  // let the worker reach our task
    g.wait();
    EXPECT_TRUE(finished.load()) << "round " << round;
  }
  blocker.wait();
}

TEST(TaskGroup, AGroupWaitedForByAThreadThatDidNotMakeItWaitsForTheInlineTask) {
  // Only the maker counts the inline task in the group's word; another waiter polls for it.
  scheduler s(with_slots(2));
  for (int round = 0; round < 10; ++round) {
    std::atomic<bool> finished{false};
    auto g = std::make_unique<task_group>(s);  // made here, waited for by another thread
    g->run([&] {
      std::this_thread::sleep_for(3ms);
      finished.store(true);
    });
    bool seen = false;
    std::thread waiter([&] {
      g->wait();
      seen = finished.load();
    });
    waiter.join();
    EXPECT_TRUE(seen) << "round " << round;
    g.reset();
  }
}

TEST(TaskGroup, MakerAndAnotherThreadWaitTogether) {
  scheduler s(with_slots(2));
  for (int round = 0; round < 10; ++round) {
    task_group g(s);
    std::atomic<bool> finished{false};
    g.run([&] {
      std::this_thread::sleep_for(3ms);
      finished.store(true);
    });
    g.run([] { std::this_thread::sleep_for(1ms); });  // a heap task beside it
    std::atomic<bool> other_saw{false};
    std::thread other([&] {
      g.wait();
      other_saw.store(finished.load());
    });
    g.wait();
    EXPECT_TRUE(finished.load());
    other.join();
    EXPECT_TRUE(other_saw.load()) << "round " << round;
  }
}

TEST(TaskGroup, InlineTaskSpawnedByAHeapTaskIsWaitedFor) {
  // A task of the group running on the maker's thread claims the inline storage and ends at once:
  // the wait must not take "the count is zero" for done while the inline task runs (done() reads
  // the inline stage before and after the count).
  scheduler s(with_slots(2));
  const int rounds = static_cast<int>(corral::testing::scaled(2000, 100));
  for (int round = 0; round < rounds; ++round) {
    task_group g(s);
    std::atomic<int> inner_done{0};
    g.run([] {});  // the inline task, finished before the next one starts
    g.wait();
    g.run([&] {  // heap or inline: either way its child must be waited for
      g.run([&] { inner_done.fetch_add(1); });
    });
    g.run([&] { g.run([&] { inner_done.fetch_add(1); }); });
    g.wait();
    EXPECT_EQ(inner_done.load(), 2) << "round " << round;
  }
}

TEST(TaskGroup, InlineTaskExceptionsAndReuse) {
  scheduler s(with_slots(2));
  task_group g(s);
  for (int round = 0; round < 100; ++round) {
    g.run([] { throw std::runtime_error("inline"); });
    EXPECT_THROW(g.wait(), std::runtime_error);
    int value = 0;
    g.run([&] { value = round; });
    g.wait();
    EXPECT_EQ(value, round);
  }
}

TEST(TaskGroup, CallablesTooBigForTheGroupGoToTheHeap) {
  scheduler s(with_slots(2));
  task_group g(s);
  std::array<long, 32> big{};  // 256 bytes captured by value: more than the inline storage
  for (std::size_t i = 0; i < big.size(); ++i) big[i] = static_cast<long>(i);
  std::atomic<long> sum{0};
  for (int i = 0; i < 100; ++i)
    g.run([big, &sum] {
      long local = 0;
      for (long v : big) local += v;
      sum.fetch_add(local);
    });
  g.wait();
  EXPECT_EQ(sum.load(), 100 * (31 * 32 / 2));
}

TEST(TaskGroup, FibIsExactOnOneAndTwoSlots) {
  // The fork-join fast path (own deque, inline task) on one slot, and with a thief on two.
  for (unsigned slots : {1u, 2u}) {
    scheduler s(with_slots(slots));
    task_group g(s);
    long r = 0;
    g.run([&] { r = fib(s, 22); });
    g.wait();
    EXPECT_EQ(r, fib_serial(22)) << slots << " slots";
  }
}
