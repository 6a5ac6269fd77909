// The native thread pools loaded in this process (OpenBLAS, MKL, BLIS, FlexiBLAS, OpenMP runtimes)
// and the controls that set their thread counts.
//
// Discovery lists the loaded objects with dl_iterate_phdr, whose callback only copies names
// (calling anything else there risks deadlock: the loader's lock is held), then takes a reference
// to each recognised library with dlopen(RTLD_NOLOAD) and reads it through dlsym. The controller
// caches the result and rescans only when the loader's add/remove counters have moved, which costs
// one dl_iterate_phdr step: cheap enough for every task start.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "corral/native_library.hpp"

namespace corral::native {

// dl_iterate_phdr's dlpi_adds and dlpi_subs: they change whenever an object is loaded or unloaded.
struct loader_generation {
  unsigned long long adds = 0;
  unsigned long long subs = 0;
  friend bool operator==(const loader_generation&, const loader_generation&) = default;
};

// The counters now; stops after the first object.
loader_generation current_loader_generation();

// The names the loader gives every loaded object (dlpi_name: as it was opened, symlinks unresolved;
// the main program's is empty), with the counters read in the same pass.
struct loaded_objects {
  loader_generation generation;
  std::vector<std::string> names;
};
loaded_objects list_loaded_objects();

// One-off discovery, no cache: every recognised library loaded now, in load order, one entry per
// file.
std::vector<library_info> discover();

// What a set of settings was, to put back later. Holding it keeps the libraries it names loaded.
struct snapshot {
  struct entry {
    std::shared_ptr<const native_library> library;
    limit_scope scope;
    int value;  // the raw setting (see native_library::thread_setting / process_setting)
  };
  std::vector<entry> entries;
};

using library_list = std::vector<std::shared_ptr<const native_library>>;

// Finds the libraries, keeps them (cached), and sets their thread counts. Thread-safe.
class controller {
 public:
  controller() = default;
  controller(const controller&) = delete;
  controller& operator=(const controller&) = delete;

  // The instance the whole process shares (never destroyed, so usable while the process exits).
  static controller& process();

  // The recognised libraries now, in load order. Rescans only when the loader's counters moved.
  std::shared_ptr<const library_list> libraries();
  std::vector<library_info> info();

  // Whether any recognised library is loaded now: a task that finds none has no limit to set.
  bool has_libraries();

  // Whether a library loaded now has a per-thread control (an OpenMP runtime, OpenBLAS built with
  // OpenMP, MKL): a count such a library's team takes from the thread's setting when a task starts,
  // and keeps for the whole task.
  bool has_thread_controls();

  // The current settings of every library with a control of that scope (calling_thread: as the
  // calling thread sees them).
  snapshot capture(limit_scope scope);

  // Sets `n` threads (n >= 1, else std::invalid_argument) through every per-thread control, for the
  // calling thread only: OpenMP runtimes, OpenBLAS built with OpenMP, MKL's local setting.
  // Returns what it replaced, for restore().
  snapshot set_thread_limit(unsigned n);

  // Sets `n` threads through every process-wide control: OpenBLAS (pthreads), BLIS, MKL's global
  // setting, FlexiBLAS. Affects every thread. Returns what it replaced, for restore().
  snapshot set_process_limit(unsigned n);

  // Puts back what `saved` recorded (per-thread entries: for the calling thread). Skips writes that
  // would change nothing, so a restore on an unchanged library costs one read.
  static void restore(const snapshot& saved);

  // How many full rescans this controller has done (the cache's misses). Without the lock: a task
  // start compares it with the count its limits were applied at (native_policy.cpp); a thread that
  // took the new list from libraries() took the mutex after the count moved, so it reads the new
  // count, and a count read stale only costs one more write of the same limit.
  std::uint64_t rescans() const noexcept { return rescans_.load(std::memory_order_relaxed); }

 private:
  snapshot set_limit(limit_scope scope, unsigned n);
  // libraries() through a per-thread copy of the pointer (valid until this thread's next call).
  const library_list& libraries_here();

  mutable std::mutex mutex_;
  std::shared_ptr<const library_list> cached_;
  loader_generation generation_;
  std::atomic<std::uint64_t> rescans_{0};                         // written under mutex_
  std::unordered_map<std::string, std::string> canonical_paths_;  // dlpi_name -> realpath
  std::unordered_map<std::string, std::shared_ptr<const native_library>>
      by_path_;  // null: not ours
};

// While one lives on a thread, that thread looks at the loader's counters once: a task start asks
// for the library list up to three times (whether there is any, its thread's limit, the
// process-wide one), and each look is a dl_iterate_phdr (the loader's lock and a walk of the loaded
// objects, some 200 instructions: a tenth of corral's cost per task of a map of tiny items). A
// library loaded meanwhile is found at the thread's next look.
class single_loader_look {
 public:
  single_loader_look() noexcept;
  ~single_loader_look();
  // The next libraries_here() looks again (after a wait inside the scope).
  void look_again() noexcept;
  single_loader_look(const single_loader_look&) = delete;
  single_loader_look& operator=(const single_loader_look&) = delete;
};

// Sets a per-thread limit for a scope and restores the calling thread's previous settings on exit.
class scoped_thread_limit {
 public:
  scoped_thread_limit(controller& ctl, unsigned n) : saved_(ctl.set_thread_limit(n)) {}
  ~scoped_thread_limit() { controller::restore(saved_); }
  scoped_thread_limit(const scoped_thread_limit&) = delete;
  scoped_thread_limit& operator=(const scoped_thread_limit&) = delete;

 private:
  snapshot saved_;
};

}  // namespace corral::native
