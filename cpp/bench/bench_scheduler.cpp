// corral's scheduler against oneTBB, workload by workload, in the same run.
// Names: <workload>/<corral|tbb>/<threads>[/<size>]. Threads come from CORRAL_BENCH_THREADS
// ("1,2" by default; e.g. "1,2,4,8,16" on a bigger machine).
//   fib                 fib(30) with a task per call; counter ns_per_task (per spawned task)
//   parallel_for_empty  an empty body over 1e3..1e8 indices; counter ns_per_index
//   wake_latency        from a pool whose workers sleep to the first task running (manual time)
//   blocking_mix        tasks of 500 us CPU, half of them also blocking 1 ms; counter busy =
//                       fraction of slot time spent computing (corral: blocking_scope; TBB: none)
#include <benchmark/benchmark.h>
#include <tbb/global_control.h>
#include <tbb/parallel_for.h>
#include <tbb/task_arena.h>
#include <tbb/task_group.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "corral/blocking.hpp"
#include "corral/event.hpp"
#include "corral/parallel_for.hpp"
#include "corral/scheduler.hpp"
#include "corral/task_group.hpp"

namespace {

using clock_type = std::chrono::steady_clock;
constexpr int fib_n = 30;

std::vector<int> thread_counts() {
  std::vector<int> out;
  const char* text = std::getenv("CORRAL_BENCH_THREADS");
  std::stringstream in(text != nullptr ? text : "1,2");
  std::string item;
  while (std::getline(in, item, ','))
    if (int n = std::atoi(item.c_str()); n > 0) out.push_back(n);
  return out;
}

corral::scheduler::options slots(int n) {
  corral::scheduler::options o;
  o.slots = static_cast<unsigned>(n);
  return o;
}

long fib_tasks(int n) { return n < 2 ? 0 : 1 + fib_tasks(n - 1) + fib_tasks(n - 2); }

// ---- fib -------------------------------------------------------------------------------------

long corral_fib(corral::scheduler& s, int n) {
  if (n < 2) return n;
  long a = 0;
  corral::task_group g(s);
  g.run([&] { a = corral_fib(s, n - 1); });
  long b = corral_fib(s, n - 2);
  g.wait();
  return a + b;
}

long tbb_fib(int n) {
  if (n < 2) return n;
  long a = 0;
  tbb::task_group g;
  g.run([&] { a = tbb_fib(n - 1); });
  long b = tbb_fib(n - 2);
  g.wait();
  return a + b;
}

void set_task_counter(benchmark::State& state, double tasks_per_iteration) {
  state.counters["ns_per_task"] = benchmark::Counter(tasks_per_iteration * 1e-9,
                                                     benchmark::Counter::kIsIterationInvariantRate |
                                                         benchmark::Counter::kInvert);
}

void fib_corral(benchmark::State& state, int threads) {
  corral::scheduler s(slots(threads));
  for (auto _ : state) {
    long r = 0;
    corral::task_group g(s);
    g.run([&] { r = corral_fib(s, fib_n); });
    g.wait();
    benchmark::DoNotOptimize(r);
  }
  set_task_counter(state, static_cast<double>(fib_tasks(fib_n)));
}

void fib_tbb(benchmark::State& state, int threads) {
  tbb::global_control limit(tbb::global_control::max_allowed_parallelism, static_cast<std::size_t>(threads));
  tbb::task_arena arena(threads);
  arena.execute([&] {
    for (auto _ : state) benchmark::DoNotOptimize(tbb_fib(fib_n));
  });
  set_task_counter(state, static_cast<double>(fib_tasks(fib_n)));
}

// ---- parallel_for_empty ----------------------------------------------------------------------

void set_index_counter(benchmark::State& state) {
  state.counters["ns_per_index"] = benchmark::Counter(static_cast<double>(state.range(0)) * 1e-9,
                                                      benchmark::Counter::kIsIterationInvariantRate |
                                                          benchmark::Counter::kInvert);
}

void parallel_for_corral(benchmark::State& state, int threads) {
  corral::scheduler s(slots(threads));
  auto n = static_cast<std::size_t>(state.range(0));
  for (auto _ : state) corral::parallel_for(0, n, [](std::size_t i) { benchmark::DoNotOptimize(i); }, s);
  set_index_counter(state);
}

void parallel_for_tbb(benchmark::State& state, int threads) {
  tbb::global_control limit(tbb::global_control::max_allowed_parallelism, static_cast<std::size_t>(threads));
  tbb::task_arena arena(threads);
  auto n = static_cast<std::size_t>(state.range(0));
  arena.execute([&] {
    for (auto _ : state) tbb::parallel_for(std::size_t{0}, n, [](std::size_t i) { benchmark::DoNotOptimize(i); });
  });
  set_index_counter(state);
}

// ---- wake_latency ----------------------------------------------------------------------------

constexpr auto settle = std::chrono::milliseconds(5);  // long enough for every worker to fall asleep

void wake_corral(benchmark::State& state, int threads) {
  corral::scheduler s(slots(threads));
  for (auto _ : state) {
    std::this_thread::sleep_for(settle);
    std::atomic<clock_type::rep> started{0};
    corral::event done;
    auto t0 = clock_type::now();
    s.submit([&] {
      started = clock_type::now().time_since_epoch().count();
      done.set();
    });
    done.wait();
    state.SetIterationTime(static_cast<double>(started.load() - t0.time_since_epoch().count()) * 1e-9);
  }
}

void wake_tbb(benchmark::State& state, int threads) {
  tbb::global_control limit(tbb::global_control::max_allowed_parallelism, static_cast<std::size_t>(threads));
  tbb::task_arena arena(threads);
  arena.initialize();
  for (auto _ : state) {
    std::this_thread::sleep_for(settle);
    std::atomic<clock_type::rep> started{0};
    auto t0 = clock_type::now();
    arena.enqueue([&] { started = clock_type::now().time_since_epoch().count(); });
    while (started.load() == 0) std::this_thread::yield();
    state.SetIterationTime(static_cast<double>(started.load() - t0.time_since_epoch().count()) * 1e-9);
  }
}

// ---- blocking_mix ----------------------------------------------------------------------------

constexpr auto compute_time = std::chrono::microseconds(500);
constexpr auto block_time = std::chrono::milliseconds(1);

void compute_for(std::chrono::microseconds d) {
  auto end = clock_type::now() + d;
  while (clock_type::now() < end) {
  }
}

template <class RunAll>
void blocking_mix(benchmark::State& state, int threads, RunAll run_all) {
  const int tasks = 32 * threads;
  double busy = 0, wall = 0;
  for (auto _ : state) {
    auto t0 = clock_type::now();
    run_all(tasks);
    wall += std::chrono::duration<double>(clock_type::now() - t0).count();
    busy += tasks * std::chrono::duration<double>(compute_time).count();
  }
  state.counters["busy"] = busy / (wall * threads);
}

void blocking_corral(benchmark::State& state, int threads) {
  corral::scheduler s(slots(threads));
  blocking_mix(state, threads, [&](int tasks) {
    corral::task_group g(s);
    for (int i = 0; i < tasks; ++i)
      g.run([i] {
        compute_for(compute_time);
        if (i % 2 == 0) {
          corral::blocking_scope blocked;
          std::this_thread::sleep_for(block_time);
        }
      });
    g.wait();
  });
}

void blocking_tbb(benchmark::State& state, int threads) {
  tbb::global_control limit(tbb::global_control::max_allowed_parallelism, static_cast<std::size_t>(threads));
  tbb::task_arena arena(threads);
  arena.execute([&] {
    blocking_mix(state, threads, [&](int tasks) {
      tbb::task_group g;
      for (int i = 0; i < tasks; ++i)
        g.run([i] {
          compute_for(compute_time);
          if (i % 2 == 0) std::this_thread::sleep_for(block_time);
        });
      g.wait();
    });
  });
}

void register_all() {
  using fn = void (*)(benchmark::State&, int);
  struct pair {
    const char* workload;
    fn corral;
    fn tbb;
  };
  for (int t : thread_counts()) {
    std::string suffix = "/" + std::to_string(t);
    benchmark::RegisterBenchmark(("fib/corral" + suffix).c_str(), fib_corral, t)->Unit(benchmark::kMillisecond)->UseRealTime();
    benchmark::RegisterBenchmark(("fib/tbb" + suffix).c_str(), fib_tbb, t)->Unit(benchmark::kMillisecond)->UseRealTime();
    for (const auto& [name, corral_fn, tbb_fn] :
         {pair{"parallel_for_empty", parallel_for_corral, parallel_for_tbb}}) {
      for (fn f : {corral_fn, tbb_fn}) {
        auto* b = benchmark::RegisterBenchmark((std::string(name) + (f == corral_fn ? "/corral" : "/tbb") + suffix).c_str(), f, t);
        b->RangeMultiplier(10)->Range(1000, 100'000'000)->UseRealTime()->Unit(benchmark::kMicrosecond);
      }
    }
    for (auto [label, f] : {std::pair{"/corral", wake_corral}, std::pair{"/tbb", wake_tbb}})
      benchmark::RegisterBenchmark(("wake_latency" + std::string(label) + suffix).c_str(), f, t)
          ->UseManualTime()->Iterations(100)->Unit(benchmark::kMicrosecond);
    for (auto [label, f] : {std::pair{"/corral", blocking_corral}, std::pair{"/tbb", blocking_tbb}})
      benchmark::RegisterBenchmark(("blocking_mix" + std::string(label) + suffix).c_str(), f, t)
          ->UseRealTime()->Unit(benchmark::kMillisecond);
  }
}

}  // namespace

int main(int argc, char** argv) {
  register_all();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
