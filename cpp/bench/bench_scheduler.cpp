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

#include <time.h>

#include <atomic>
#include <chrono>
#include <cstdio>
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

// CPU time of the whole process: on a machine shared with other work, wall time mostly measures the
// neighbours; CPU time per task is what our own code costs (spinning workers included).
double process_cpu_seconds() {
  timespec t{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
  return static_cast<double>(t.tv_sec) + static_cast<double>(t.tv_nsec) * 1e-9;
}

struct cpu_meter {
  double start = process_cpu_seconds();
  // ns per unit of work over the benchmark loop: `wall_counter` in real time (a rate the library
  // inverts), `cpu_counter` in process CPU time.
  void report(benchmark::State& state, const char* wall_counter, const char* cpu_counter,
              double units_per_iteration) const {
    double used = process_cpu_seconds() - start;
    state.counters[cpu_counter] =
        used * 1e9 / (units_per_iteration * static_cast<double>(state.iterations()));
    state.counters[wall_counter] = benchmark::Counter(
        units_per_iteration * 1e-9,
        benchmark::Counter::kIsIterationInvariantRate | benchmark::Counter::kInvert);
  }
};

// oneTBB held to `threads`: the global cap and an arena of that size (the cap outlives the arena).
struct tbb_threads {
  tbb::global_control limit;
  tbb::task_arena arena;
  explicit tbb_threads(int threads)
      : limit(tbb::global_control::max_allowed_parallelism, static_cast<std::size_t>(threads)),
        arena(threads) {}
};

long fib_tasks(int n) {
  return n < 2 ? 0 : 1 + fib_tasks(n - 1) + fib_tasks(n - 2);
}

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

void fib_corral(benchmark::State& state, int threads) {
  corral::scheduler s(slots(threads));
  cpu_meter cpu;
  for (auto _ : state) {
    long r = 0;
    corral::task_group g(s);
    g.run([&] { r = corral_fib(s, fib_n); });
    g.wait();
    benchmark::DoNotOptimize(r);
  }
  cpu.report(state, "ns_per_task", "cpu_ns_per_task", static_cast<double>(fib_tasks(fib_n)));
}

void fib_tbb(benchmark::State& state, int threads) {
  tbb_threads pool(threads);
  cpu_meter cpu;
  pool.arena.execute([&] {
    for (auto _ : state) benchmark::DoNotOptimize(tbb_fib(fib_n));
  });
  cpu.report(state, "ns_per_task", "cpu_ns_per_task", static_cast<double>(fib_tasks(fib_n)));
}

// ---- parallel_for_empty ----------------------------------------------------------------------

void parallel_for_corral(benchmark::State& state, int threads) {
  corral::scheduler s(slots(threads));
  auto n = static_cast<std::size_t>(state.range(0));
  cpu_meter cpu;
  for (auto _ : state)
    corral::parallel_for(0, n, [](std::size_t i) { benchmark::DoNotOptimize(i); }, s);
  cpu.report(state, "ns_per_index", "cpu_ns_per_index", static_cast<double>(n));
}

void parallel_for_tbb(benchmark::State& state, int threads) {
  tbb_threads pool(threads);
  auto n = static_cast<std::size_t>(state.range(0));
  cpu_meter cpu;
  pool.arena.execute([&] {
    for (auto _ : state)
      tbb::parallel_for(std::size_t{0}, n, [](std::size_t i) { benchmark::DoNotOptimize(i); });
  });
  cpu.report(state, "ns_per_index", "cpu_ns_per_index", static_cast<double>(n));
}

// ---- wake_latency ----------------------------------------------------------------------------

// long enough for every worker to fall asleep
constexpr auto settle = std::chrono::milliseconds(5);

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
    state.SetIterationTime(static_cast<double>(started.load() - t0.time_since_epoch().count()) *
                           1e-9);
  }
}

void wake_tbb(benchmark::State& state, int threads) {
  tbb_threads pool(threads);
  pool.arena.initialize();
  for (auto _ : state) {
    std::this_thread::sleep_for(settle);
    std::atomic<clock_type::rep> started{0};
    auto t0 = clock_type::now();
    pool.arena.enqueue([&] { started = clock_type::now().time_since_epoch().count(); });
    while (started.load() == 0) std::this_thread::yield();
    state.SetIterationTime(static_cast<double>(started.load() - t0.time_since_epoch().count()) *
                           1e-9);
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
  const int tasks = 128 * threads;  // enough that the last blocking tail (1 ms) matters little
  double wall = 0;
  for (auto _ : state) {
    auto t0 = clock_type::now();
    run_all(tasks);
    wall += std::chrono::duration<double>(clock_type::now() - t0).count();
  }
  double busy = static_cast<double>(state.iterations()) * tasks *
                std::chrono::duration<double>(compute_time).count();
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
  tbb_threads pool(threads);
  pool.arena.execute([&] {
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

// "<workload>/<impl>/<threads>" (snprintf: GCC 12 warns falsely on std::string concatenation here).
std::string name(const char* workload, const char* impl, int threads) {
  char buffer[96];
  std::snprintf(buffer, sizeof buffer, "%s/%s/%d", workload, impl, threads);
  return buffer;
}

void real_time_ms(benchmark::internal::Benchmark* b) {
  b->UseRealTime()->Unit(benchmark::kMillisecond);
}

void register_all() {
  using fn = void (*)(benchmark::State&, int);
  struct workload {
    const char* name;
    fn corral;
    fn tbb;
    void (*configure)(benchmark::internal::Benchmark*);
  };
  const workload workloads[] = {
      {"fib", fib_corral, fib_tbb, real_time_ms},
      {"parallel_for_empty", parallel_for_corral, parallel_for_tbb,
       [](benchmark::internal::Benchmark* b) {
         b->RangeMultiplier(10)
             ->Range(1000, 100'000'000)
             ->UseRealTime()
             ->Unit(benchmark::kMicrosecond);
       }},
      {"wake_latency", wake_corral, wake_tbb,
       [](benchmark::internal::Benchmark* b) {
         b->UseManualTime()->Iterations(100)->Unit(benchmark::kMicrosecond);
       }},
      {"blocking_mix", blocking_corral, blocking_tbb, real_time_ms}};
  for (int t : thread_counts()) {
    for (const workload& w : workloads) {
      for (bool ours : {true, false})
        w.configure(benchmark::RegisterBenchmark(name(w.name, ours ? "corral" : "tbb", t).c_str(),
                                                 ours ? w.corral : w.tbb, t));
    }
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
