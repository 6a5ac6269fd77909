// The per-task native-limit policy (native_policy.hpp) with real libraries: gcc's libgomp
// (per-thread ICV) and, where installed, Debian's OpenBLAS with pthreads (process-wide control).
#include "corral/native_policy.hpp"

#include <dlfcn.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "corral/event.hpp"
#include "corral/task_group.hpp"

using namespace std::chrono_literals;
using corral::scheduler;
using corral::task_group;

namespace {

using get_fn = int (*)();
using set_fn = void (*)(int);

struct openmp {
  get_fn get = nullptr;
  set_fn set = nullptr;
};

// libgomp from the loader's search path (gcc's runtime, present wherever g++ is).
openmp load_libgomp() {
  void* handle = dlopen("libgomp.so.1", RTLD_NOW | RTLD_LOCAL | RTLD_NODELETE);
  if (handle == nullptr) return {};
  return {reinterpret_cast<get_fn>(dlsym(handle, "omp_get_max_threads")),
          reinterpret_cast<set_fn>(dlsym(handle, "omp_set_num_threads"))};
}

// Debian's OpenBLAS with pthreads (process-wide control); `missing` says why not where it is not.
struct openblas {
  get_fn get = nullptr;
  set_fn set = nullptr;
  std::string missing;
};

openblas load_openblas() {
  void* handle = dlopen("libopenblas.so.0", RTLD_NOW | RTLD_LOCAL | RTLD_NODELETE);
  if (handle == nullptr)
    return {nullptr, nullptr,
            std::string("Debian's libopenblas0-pthread is not installed: ") + dlerror()};
  auto get = reinterpret_cast<get_fn>(dlsym(handle, "openblas_get_num_threads"));
  auto set = reinterpret_cast<set_fn>(dlsym(handle, "openblas_set_num_threads"));
  if (get == nullptr || set == nullptr)
    return {nullptr, nullptr, "libopenblas.so.0 without its setters"};
  return {get, set, {}};
}

scheduler::options slots(unsigned n) {
  scheduler::options o;
  o.slots = n;
  return o;
}

// Waits until every worker sleeps, so that the next task starts alone.
void wait_until_idle(scheduler& s) {
  auto end = std::chrono::steady_clock::now() + 5s;
  while (std::chrono::steady_clock::now() < end) {
    auto st = s.stats();
    if (st.running == 0 && st.parked == st.threads) return;
    std::this_thread::sleep_for(1ms);
  }
}

}  // namespace

TEST(NativePolicy, DynamicRule) {
  EXPECT_EQ(corral::dynamic_inner_threads(4, 0), 4u);
  EXPECT_EQ(corral::dynamic_inner_threads(4, 1), 4u);
  EXPECT_EQ(corral::dynamic_inner_threads(4, 2), 2u);
  EXPECT_EQ(corral::dynamic_inner_threads(4, 3), 1u);
  EXPECT_EQ(corral::dynamic_inner_threads(4, 8), 1u);
  EXPECT_EQ(corral::dynamic_inner_threads(1, 1), 1u);
  EXPECT_EQ(corral::dynamic_inner_threads(16, 5), 3u);
}

TEST(NativePolicy, OpenMpInTasksFollowsSlotsOverRunning) {
  openmp omp = load_libgomp();
  if (omp.get == nullptr) GTEST_SKIP() << "libgomp.so.1 not found";
  corral::native_limit_observer observer;  // dynamic
  scheduler::options o = slots(2);
  o.observer = &observer;
  scheduler s(o);

  // Alone: the task is the only one running, so it gets both slots.
  wait_until_idle(s);
  std::atomic<int> alone{0};
  corral::event done;
  s.submit([&] {
    alone = omp.get();
    done.set();
  });
  done.wait();
  EXPECT_EQ(alone.load(), 2);

  // Two at once (they meet before reading): the second to start sees 2 running and gets 1.
  std::atomic<int> arrived{0};
  std::mutex m;
  std::vector<int> seen;
  task_group g(s);
  for (int i = 0; i < 2; ++i)
    g.run([&] {
      int mine = omp.get();
      arrived.fetch_add(1);
      while (arrived.load() < 2) std::this_thread::yield();
      std::lock_guard<std::mutex> lock(m);
      seen.push_back(mine);
    });
  g.wait();
  ASSERT_EQ(seen.size(), 2u);
  EXPECT_EQ(*std::min_element(seen.begin(), seen.end()), 1);
  for (int v : seen) EXPECT_TRUE(v == 1 || v == 2) << v;
}

TEST(NativePolicy, FixedLimitAndTheThreadsOwnSettingComesBack) {
  openmp omp = load_libgomp();
  if (omp.get == nullptr) GTEST_SKIP() << "libgomp.so.1 not found";
  corral::native_limit_observer observer(3);
  EXPECT_EQ(observer.inner_threads(), 3);
  scheduler s(slots(1));
  // The worker's own setting, before any limit.
  int before = 0;
  {
    corral::event done;
    s.submit([&] {
      omp.set(5);
      before = omp.get();
      done.set();
    });
    done.wait();
  }
  ASSERT_EQ(before, 5);
  s.set_observer(&observer);
  std::vector<int> inside;
  task_group g(s);
  for (int i = 0; i < 4; ++i) g.run([&] { inside.push_back(omp.get()); });
  g.wait();
  // Nested: a task waiting for a task it spawned; each sees its own limit, the outer one's comes
  // back.
  int outer_after = 0;
  g.run([&] {
    task_group inner(s);
    inner.run([&] { omp.set(7); });
    inner.wait();
    outer_after = omp.get();
  });
  g.wait();
  s.set_observer(nullptr);
  int after = 0;
  {
    corral::event done;
    s.submit([&] {
      after = omp.get();
      done.set();
    });
    done.wait();
  }
  EXPECT_EQ(inside, std::vector<int>(4, 3));
  EXPECT_EQ(outer_after, 3);
  EXPECT_EQ(after, 5);
}

TEST(NativePolicy, ZeroTouchesNothing) {
  openmp omp = load_libgomp();
  if (omp.get == nullptr) GTEST_SKIP() << "libgomp.so.1 not found";
  scheduler s(slots(1));
  omp.set(6);
  corral::task_native_limits limits(s, 0);
  EXPECT_EQ(limits.threads(), 0u);
  EXPECT_EQ(omp.get(), 6);
  {
    corral::task_native_limits fixed(s, 2);
    EXPECT_EQ(fixed.threads(), 2u);
    EXPECT_EQ(omp.get(), 2);
  }
  EXPECT_EQ(omp.get(), 6);
}

TEST(NativePolicy, ProcessWideSettingFollowsTasksAndIsRestoredWhenIdle) {
  void* blas = dlopen("libopenblas.so.0", RTLD_NOW | RTLD_LOCAL | RTLD_NODELETE);
  if (blas == nullptr)
    GTEST_SKIP() << "Debian's libopenblas0-pthread is not installed: " << dlerror();
  auto get = reinterpret_cast<get_fn>(dlsym(blas, "openblas_get_num_threads"));
  auto set = reinterpret_cast<set_fn>(dlsym(blas, "openblas_set_num_threads"));
  auto parallel = reinterpret_cast<get_fn>(dlsym(blas, "openblas_get_parallel"));
  ASSERT_NE(get, nullptr);
  ASSERT_NE(set, nullptr);
  if (parallel != nullptr && parallel() != 1)
    GTEST_SKIP() << "this libopenblas is not the pthreads build";
  set(3);
  ASSERT_EQ(get(), 3);
  corral::native_limit_observer observer;  // dynamic
  scheduler::options o = slots(2);
  o.observer = &observer;
  scheduler s(o);
  std::atomic<int> arrived{0};
  std::atomic<int> recorded{0};
  std::atomic<bool> first_done{false};
  std::mutex m;
  std::vector<int> seen;
  int alone = 0;
  task_group g(s);
  for (int i = 0; i < 2; ++i)
    g.run([&, i] {
      arrived.fetch_add(1);
      while (arrived.load() < 2) std::this_thread::yield();
      {  // Both running now: the demand is 2, so max(1, 2 / 2) = 1 for the whole process.
        std::lock_guard<std::mutex> lock(m);
        seen.push_back(get());
      }
      recorded.fetch_add(1);
      while (recorded.load() < 2) std::this_thread::yield();
      if (i == 0) {
        first_done.store(true);
        return;
      }
      // The other task has ended (its end is counted after it returns): the demand is 1, and once
      // it has stayed 1 for a moment the process-wide setting follows it up to max(1, 2 / 1) = 2
      // while this task still runs.
      auto until = std::chrono::steady_clock::now() + 5s;
      while ((!first_done.load() || get() != 2) && std::chrono::steady_clock::now() < until)
        std::this_thread::sleep_for(100us);
      alone = get();
    });
  g.wait();
  EXPECT_EQ(seen, std::vector<int>(2, 1));
  EXPECT_EQ(alone, 2);
  // Every task has ended: the setting from before is back, and nothing is counted.
  auto end = std::chrono::steady_clock::now() + 5s;
  while (corral::process_native_limit().tasks != 0 && std::chrono::steady_clock::now() < end)
    std::this_thread::sleep_for(1ms);
  EXPECT_EQ(corral::process_native_limit().tasks, 0);
  EXPECT_EQ(corral::process_native_limit().threads, 0u);
  EXPECT_EQ(get(), 3);
}

TEST(NativePolicy, ATaskRightAfterTasksSharedStartsWithOneThreadUnlessTheirPoolShutDown) {
  int pool = 0;  // an identity, as a Python pool passes its work queue
  int other_pool = 0;
  // Two tasks of the pool start (the second sees a demand of 2) and end: the cores were shared a
  // moment ago.
  const auto share_then_end = [&pool] {
    corral::task_native_limits first(2, 1, corral::dynamic_inner, false, &pool);
    corral::task_native_limits second(2, 2, corral::dynamic_inner, false, &pool);
    EXPECT_EQ(second.threads(), 1u);
  };
  // A task right after them (a scheduler that submits one as another ends) starts with one thread
  // in per-thread and process-wide controls: more are likely on their way. A machine stall past
  // the 2 ms delay between the two lines gives it 2, so this tries a few times.
  const auto next_task = [&](bool alone, int* its_pool, bool shut_down, int* shut_pool) {
    unsigned got = 0;
    unsigned process_wide = 0;
    for (int attempt = 0; attempt < 5 && process_wide != 1; ++attempt) {
      share_then_end();
      if (shut_down) corral::pool_shut_down(shut_pool);
      corral::task_native_limits next(2, 1, corral::dynamic_inner, alone, its_pool);
      got = next.threads();
      process_wide = corral::process_native_limit().threads;
    }
    return std::pair<unsigned, unsigned>(got, process_wide);
  };
  // Not alone (another permit held or kept): one thread everywhere.
  EXPECT_EQ(next_task(false, &pool, false, nullptr), std::make_pair(1u, 1u));
  // Alone: an OpenMP team keeps its count for the whole task, so it gets its share there; the
  // process-wide count starts at one and is raised if the demand stays low.
  const auto alone = next_task(true, &pool, false, nullptr);
  EXPECT_EQ(alone.first, 2u);
  EXPECT_EQ(alone.second, 1u);
  // Another pool's shutdown says nothing of this one's next task.
  EXPECT_EQ(next_task(false, &pool, true, &other_pool), std::make_pair(1u, 1u));
  // Once the pool whose tasks shared the cores has shut down, a task gets the whole budget at once.
  share_then_end();
  corral::pool_shut_down(&pool);
  corral::task_native_limits after_shutdown(2, 1, corral::dynamic_inner, false, &other_pool);
  EXPECT_EQ(after_shutdown.threads(), 2u);
}

TEST(NativePolicy, SlotsThatChangeWhileTasksRunMoveTheProcessWideCountAtOnce) {
  // A Dask worker that borrows an idle worker's CPUs (or gives them back) while its tasks run.
  const openblas blas = load_openblas();
  if (blas.get == nullptr) GTEST_SKIP() << blas.missing;
  const auto get = blas.get;
  const auto set = blas.set;
  set(5);
  {
    corral::task_native_limits lone(1, 1, corral::dynamic_inner);  // its own share: one CPU
    EXPECT_EQ(get(), 1);
    corral::native_slots_changed(3);  // borrowed two: max(1, 3 / 1), no raise delay
    EXPECT_EQ(get(), 3);
    EXPECT_EQ(corral::process_native_limit().threads, 3u);
    {
      corral::task_native_limits second(3, 2, corral::dynamic_inner);
      EXPECT_EQ(get(), 1);  // max(1, 3 / 2)
      corral::native_slots_changed(4);
      EXPECT_EQ(get(), 2);  // max(1, 4 / 2)
    }
    corral::native_slots_changed(1);  // given back: lowered at once
    EXPECT_EQ(get(), 1);
  }
  EXPECT_EQ(get(), 5);              // every task ended: the library's own setting
  corral::native_slots_changed(4);  // no task runs: nothing is set
  EXPECT_EQ(get(), 5);
  EXPECT_EQ(corral::process_native_limit().threads, 0u);
}

TEST(NativePolicy, AShareThatChangesWhileTasksRunIsWhatTheirEndLeavesAndLaterChangesStillApply) {
  // A Dask worker narrowed from the whole machine to its share while a task runs (another worker
  // joined), which then borrows an idle worker's CPUs.
  const openblas blas = load_openblas();
  if (blas.get == nullptr) GTEST_SKIP() << blas.missing;
  const auto get = blas.get;
  const auto set = blas.set;
  corral::native_share_changed(2, 2);  // no task: the libraries get the share's count at once
  EXPECT_EQ(get(), 2);
  std::this_thread::sleep_for(5ms);  // past the raise delay of the tasks of the tests before
  {
    corral::task_native_limits lone(2, 1, corral::dynamic_inner);
    EXPECT_EQ(get(), 2);
    corral::native_share_changed(1, 1);  // narrowed while it runs
    EXPECT_EQ(get(), 1);
    corral::native_slots_changed(2);  // a borrow: applied, not taken for the setting of before
    EXPECT_EQ(get(), 2);
    corral::native_slots_changed(1);
    EXPECT_EQ(get(), 1);
  }
  EXPECT_EQ(get(), 1);  // the share's count, not the whole machine's from before the task
  set(3);
}
