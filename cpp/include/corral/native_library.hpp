// One native library with its own thread pool (a BLAS or an OpenMP runtime) that is loaded in this
// process: what it is, and the calls that read and set its thread count.
//
// Recognition follows threadpoolctl's rules so that both tools name the same libraries the same
// way: the file name (symlinks resolved, lower-cased) must start with a known prefix, and the
// library must export at least one of the symbols that kind of library always has.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace corral::native {

// threadpoolctl's internal_api names.
enum class library_kind { openblas, blis, mkl, openmp, flexiblas };
std::string_view to_string(library_kind kind) noexcept;

// Who sees a thread-count change.
//  calling_thread: the OpenMP ICV nthreads-var, mkl_set_num_threads_local.
//  process:        openblas_set_num_threads (pthreads build), bli_thread_set_num_threads,
//                  MKL_Set_Num_Threads, flexiblas_set_num_threads.
enum class limit_scope { calling_thread, process };
std::string_view to_string(limit_scope scope) noexcept;

// A plain description, safe to keep after the library is gone.
struct library_info {
  library_kind kind;
  std::string path;                    // canonical: symlinks resolved
  std::string prefix;                  // the filename prefix that matched, e.g. "libscipy_openblas"
  std::optional<std::string> version;  // none where the library cannot tell (OpenMP, old OpenBLAS)
  std::string threading_layer;  // "pthreads", "openmp", "disabled", "unknown", MKL's "gnu", ...
  int num_threads;              // the limit a call from the calling thread would use now
  bool has_thread_control;      // set_thread_setting works (per calling thread)
  bool has_process_control;     // set_process_setting works (whole process)
};

// The kinds whose filename prefixes `canonical_path` matches, in threadpoolctl's order (openblas,
// blis, mkl, openmp, flexiblas), each with the prefix that matched. Pure string logic: no file is
// touched. Usually one; a caller tries them in order and keeps the first whose symbols are there.
struct prefix_match {
  library_kind kind;
  std::string prefix;
};
std::vector<prefix_match> match_filename(std::string_view canonical_path);

// A recognised library, pinned in memory (it holds a dlopen reference) for as long as this object
// lives, so that the function pointers it keeps stay valid.
class native_library {
 public:
  // The library at `canonical_path` when it is already loaded (RTLD_NOLOAD: never loads anything),
  // its name matches a prefix and it exports the expected symbols; nullptr otherwise.
  static std::unique_ptr<native_library> open_loaded(const std::string& canonical_path);

  ~native_library();
  native_library(const native_library&) = delete;
  native_library& operator=(const native_library&) = delete;

  library_kind kind() const noexcept { return kind_; }
  const std::string& path() const noexcept { return path_; }
  const std::string& prefix() const noexcept { return prefix_; }
  const std::optional<std::string>& version() const noexcept { return version_; }
  const std::string& threading_layer() const noexcept { return threading_layer_; }

  // The limit a call from the calling thread would use now (threadpoolctl's num_threads).
  int num_threads() const;
  library_info info() const;

  bool has_thread_control() const noexcept { return thread_control_; }
  bool has_process_control() const noexcept { return process_control_; }

  // Raw settings, for snapshot and restore. For MKL the per-thread setting is the thread-local
  // value (0: follows the process-wide one), read without disturbing it. Calling one without its
  // control throws std::logic_error. Values must be >= 1 except MKL's per-thread 0 and BLIS's -1
  // ("unset").
  int thread_setting() const;
  void set_thread_setting(int value) const;
  int process_setting() const;
  void set_process_setting(int value) const;

 private:
  struct symbols;
  native_library(library_kind kind, std::string path, std::string prefix, void* handle);
  void load_symbols();

  library_kind kind_;
  std::string path_;
  std::string prefix_;
  void* handle_;
  std::unique_ptr<symbols> symbols_;
  std::optional<std::string> version_;
  std::string threading_layer_;
  bool thread_control_ = false;  // both set once by load_symbols
  bool process_control_ = false;
};

}  // namespace corral::native
