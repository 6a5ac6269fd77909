#include "corral/native_library.hpp"

#include <dlfcn.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <utility>

namespace corral::native {

std::string_view to_string(library_kind kind) noexcept {
  switch (kind) {
    case library_kind::openblas:
      return "openblas";
    case library_kind::blis:
      return "blis";
    case library_kind::mkl:
      return "mkl";
    case library_kind::openmp:
      return "openmp";
    case library_kind::flexiblas:
      return "flexiblas";
  }
  return "unknown";
}

std::string_view to_string(limit_scope scope) noexcept {
  return scope == limit_scope::calling_thread ? "calling_thread" : "process";
}

namespace {

struct kind_rule {
  library_kind kind;
  std::array<std::string_view, 4> prefixes;  // empty entries unused
};

// threadpoolctl's controllers in its order. "libblas" (a Windows conda-forge shim for all three
// BLAS kinds) is left out: threadpoolctl skips it everywhere but on Windows.
constexpr std::array<kind_rule, 5> kind_rules{{
    {library_kind::openblas, {"libopenblas", "libscipy_openblas", "openblas", ""}},
    {library_kind::blis, {"libblis", "", "", ""}},
    {library_kind::mkl, {"libmkl_rt", "mkl_rt", "", ""}},
    {library_kind::openmp, {"libiomp", "libgomp", "libomp", "vcomp"}},
    {library_kind::flexiblas, {"libflexiblas", "", "", ""}},
}};

// OpenBLAS builds rename their API: numpy's bundled copy exports scipy_openblas_get_num_threads64_.
constexpr std::array<std::string_view, 2> openblas_symbol_prefixes{"", "scipy_"};
constexpr std::array<std::string_view, 3> openblas_symbol_suffixes{"", "64_", "_64"};

using int_getter = int (*)();
using int_setter = void (*)(int);
using int_exchanger = int (*)(int);
using string_getter = const char* (*)();
using dim_getter = std::int64_t (*)();  // BLIS dim_t is a 64-bit gint_t
using dim_setter = void (*)(std::int64_t);
// BLIS returns bool (or gint_t in old releases): read the low byte
using flag_getter = unsigned char (*)();
using mkl_version_getter = void (*)(char*, int);
using flexiblas_version_getter = int (*)(int*, int*, int*);

template <class F>
F find_symbol(void* handle, const std::string& name) {
  return reinterpret_cast<F>(dlsym(handle, name.c_str()));
}

// The prefix and suffix of this OpenBLAS build's API: the first pair (in the orders above) under
// which it exports openblas_get_num_threads.
std::optional<std::pair<std::string, std::string>> openblas_affixes(void* handle) {
  for (std::string_view p : openblas_symbol_prefixes)
    for (std::string_view x : openblas_symbol_suffixes)
      if (dlsym(handle, (std::string(p) + "openblas_get_num_threads" + std::string(x)).c_str()))
        return std::pair{std::string(p), std::string(x)};
  return std::nullopt;
}

}  // namespace

std::vector<prefix_match> match_filename(std::string_view canonical_path) {
  std::string filename(canonical_path.substr(canonical_path.rfind('/') + 1));
  std::transform(filename.begin(), filename.end(), filename.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  std::vector<prefix_match> matches;
  for (const kind_rule& rule : kind_rules) {
    for (std::string_view prefix : rule.prefixes) {
      if (!prefix.empty() && filename.starts_with(prefix)) {
        matches.push_back({rule.kind, std::string(prefix)});
        break;
      }
    }
  }
  return matches;
}

// Every entry point any kind may use; a kind fills in its own. Null where the library lacks one.
struct native_library::symbols {
  // OpenBLAS (affixed names) and OpenMP.
  int_getter openblas_get_num_threads = nullptr;
  int_setter openblas_set_num_threads = nullptr;
  string_getter openblas_get_config = nullptr;
  int_getter openblas_get_parallel = nullptr;
  int_getter omp_get_max_threads = nullptr;
  int_setter omp_set_num_threads = nullptr;
  // BLIS.
  dim_getter bli_thread_get_num_threads = nullptr;
  dim_setter bli_thread_set_num_threads = nullptr;
  string_getter bli_info_get_version_str = nullptr;
  flag_getter bli_info_get_enable_openmp = nullptr;
  flag_getter bli_info_get_enable_pthreads = nullptr;
  // MKL.
  int_getter mkl_get_max_threads = nullptr;
  int_setter mkl_set_num_threads = nullptr;
  int_exchanger mkl_set_num_threads_local = nullptr;
  mkl_version_getter mkl_get_version_string = nullptr;
  int_exchanger mkl_set_threading_layer = nullptr;
  // FlexiBLAS.
  int_getter flexiblas_get_num_threads = nullptr;
  int_setter flexiblas_set_num_threads = nullptr;
  flexiblas_version_getter flexiblas_get_version = nullptr;
};

namespace {

// threadpoolctl's check_symbols: a library with none of them is something else with a similar name.
bool has_identifying_symbol(library_kind kind, void* handle) {
  auto any_of = [handle](std::initializer_list<const char*> names) {
    return std::any_of(names.begin(), names.end(),
                       [handle](const char* n) { return dlsym(handle, n) != nullptr; });
  };
  switch (kind) {
    case library_kind::openblas:
      return openblas_affixes(handle).has_value();
    case library_kind::blis:
      return any_of({"bli_thread_get_num_threads", "bli_thread_set_num_threads",
                     "bli_info_get_version_str", "bli_info_get_enable_openmp",
                     "bli_info_get_enable_pthreads", "bli_arch_query_id", "bli_arch_string"});
    case library_kind::mkl:
      return any_of({"MKL_Get_Max_Threads", "MKL_Set_Num_Threads_Local", "MKL_Get_Version_String",
                     "MKL_Set_Threading_Layer"});
    case library_kind::openmp:
      return any_of({"omp_get_max_threads", "omp_get_num_threads"});
    case library_kind::flexiblas:
      return any_of({"flexiblas_get_num_threads", "flexiblas_set_num_threads",
                     "flexiblas_get_version", "flexiblas_list", "flexiblas_list_loaded",
                     "flexiblas_current_backend"});
  }
  return false;
}

}  // namespace

std::unique_ptr<native_library> native_library::open_loaded(const std::string& canonical_path) {
  std::vector<prefix_match> candidates = match_filename(canonical_path);
  if (candidates.empty()) return nullptr;
  // RTLD_NOLOAD: a reference to what is already mapped, never a new load (and no constructors run).
  void* handle = dlopen(canonical_path.c_str(), RTLD_NOW | RTLD_NOLOAD);
  if (handle == nullptr) return nullptr;
  for (prefix_match& candidate : candidates) {
    if (has_identifying_symbol(candidate.kind, handle)) {
      std::unique_ptr<native_library> library(
          new native_library(candidate.kind, canonical_path, std::move(candidate.prefix), handle));
      library->load_symbols();
      return library;
    }
  }
  dlclose(handle);
  return nullptr;
}

native_library::native_library(library_kind kind, std::string path, std::string prefix,
                               void* handle)
    : kind_(kind),
      path_(std::move(path)),
      prefix_(std::move(prefix)),
      handle_(handle),
      symbols_(std::make_unique<symbols>()) {}

native_library::~native_library() {
  dlclose(handle_);
}

void native_library::load_symbols() {
  symbols& s = *symbols_;
  switch (kind_) {
    case library_kind::openblas: {
      const auto affixes =
          openblas_affixes(handle_).value_or(std::pair<std::string, std::string>{});
      auto affixed = [&](const char* name) { return affixes.first + name + affixes.second; };
      s.openblas_get_num_threads =
          find_symbol<int_getter>(handle_, affixed("openblas_get_num_threads"));
      s.openblas_set_num_threads =
          find_symbol<int_setter>(handle_, affixed("openblas_set_num_threads"));
      s.openblas_get_config = find_symbol<string_getter>(handle_, affixed("openblas_get_config"));
      s.openblas_get_parallel = find_symbol<int_getter>(handle_, affixed("openblas_get_parallel"));
      // An OpenMP build follows its runtime's per-thread ICV. dlsym on the handle also searches the
      // library's dependencies, which is where the runtime's plain names live (threadpoolctl tries
      // only the affixed name and reports no count for renamed OpenMP builds).
      s.omp_get_max_threads = find_symbol<int_getter>(handle_, affixed("omp_get_max_threads"));
      if (!s.omp_get_max_threads)
        s.omp_get_max_threads = find_symbol<int_getter>(handle_, "omp_get_max_threads");
      s.omp_set_num_threads = find_symbol<int_setter>(handle_, affixed("omp_set_num_threads"));
      if (!s.omp_set_num_threads)
        s.omp_set_num_threads = find_symbol<int_setter>(handle_, "omp_set_num_threads");

      if (s.openblas_get_config) {
        // "OpenBLAS 0.3.31.188.0 DYNAMIC_ARCH NO_AFFINITY Haswell MAX_THREADS=64": the second word.
        const char* raw_config = s.openblas_get_config();
        std::string_view config = raw_config ? raw_config : "";
        if (config.starts_with("OpenBLAS ")) {
          std::string_view rest = config.substr(9);
          rest.remove_prefix(std::min(rest.find_first_not_of(' '), rest.size()));
          std::string_view word = rest.substr(0, rest.find_first_of(" \t\n"));
          if (!word.empty()) version_ = std::string(word);
        }
      }
      if (s.openblas_get_parallel) {
        int parallel = s.openblas_get_parallel();
        threading_layer_ = parallel == 2 ? "openmp" : parallel == 1 ? "pthreads" : "disabled";
      } else {
        threading_layer_ = "unknown";
      }
      break;
    }
    case library_kind::blis:
      s.bli_thread_get_num_threads = find_symbol<dim_getter>(handle_, "bli_thread_get_num_threads");
      s.bli_thread_set_num_threads = find_symbol<dim_setter>(handle_, "bli_thread_set_num_threads");
      s.bli_info_get_version_str = find_symbol<string_getter>(handle_, "bli_info_get_version_str");
      s.bli_info_get_enable_openmp =
          find_symbol<flag_getter>(handle_, "bli_info_get_enable_openmp");
      s.bli_info_get_enable_pthreads =
          find_symbol<flag_getter>(handle_, "bli_info_get_enable_pthreads");
      if (const char* v = s.bli_info_get_version_str ? s.bli_info_get_version_str() : nullptr)
        version_ = v;
      if (s.bli_info_get_enable_openmp && s.bli_info_get_enable_openmp())
        threading_layer_ = "openmp";
      else if (s.bli_info_get_enable_pthreads && s.bli_info_get_enable_pthreads())
        threading_layer_ = "pthreads";
      else
        threading_layer_ = "disabled";
      break;
    case library_kind::mkl: {
      s.mkl_get_max_threads = find_symbol<int_getter>(handle_, "MKL_Get_Max_Threads");
      s.mkl_set_num_threads = find_symbol<int_setter>(handle_, "MKL_Set_Num_Threads");
      s.mkl_set_num_threads_local =
          find_symbol<int_exchanger>(handle_, "MKL_Set_Num_Threads_Local");
      s.mkl_get_version_string = find_symbol<mkl_version_getter>(handle_, "MKL_Get_Version_String");
      s.mkl_set_threading_layer = find_symbol<int_exchanger>(handle_, "MKL_Set_Threading_Layer");
      if (s.mkl_get_version_string) {
        std::array<char, 200> buffer{};
        s.mkl_get_version_string(buffer.data(), static_cast<int>(buffer.size()));
        buffer.back() = '\0';
        // "Intel(R) oneAPI Math Kernel Library Version 2024.2-Product Build 20240605 for ...": the
        // word after "Version ", or the whole string when there is none (as threadpoolctl does).
        std::string text(buffer.data());
        std::size_t at = text.find("Version ");
        if (at != std::string::npos) {
          std::size_t start = at + 8;
          std::size_t end = text.find(' ', start);
          if (end != std::string::npos && end > start) text = text.substr(start, end - start);
        }
        std::size_t first = text.find_first_not_of(" \t\n");
        std::size_t last = text.find_last_not_of(" \t\n");
        version_ =
            first == std::string::npos ? std::string() : text.substr(first, last - first + 1);
      }
      // Setting an invalid layer (-1) changes nothing and returns the current one.
      int layer = s.mkl_set_threading_layer ? s.mkl_set_threading_layer(-1) : -1;
      constexpr std::array<std::string_view, 5> layers{"intel", "sequential", "pgi", "gnu", "tbb"};
      threading_layer_ = layer >= 0 && layer < 5
                             ? std::string(layers[static_cast<std::size_t>(layer)])
                         : layer == -1 ? "not specified"
                                       : "unknown";
      break;
    }
    case library_kind::openmp:
      s.omp_get_max_threads = find_symbol<int_getter>(handle_, "omp_get_max_threads");
      s.omp_set_num_threads = find_symbol<int_setter>(handle_, "omp_set_num_threads");
      threading_layer_ = "openmp";  // OpenMP has no version call
      break;
    case library_kind::flexiblas:
      s.flexiblas_get_num_threads = find_symbol<int_getter>(handle_, "flexiblas_get_num_threads");
      s.flexiblas_set_num_threads = find_symbol<int_setter>(handle_, "flexiblas_set_num_threads");
      s.flexiblas_get_version =
          find_symbol<flexiblas_version_getter>(handle_, "flexiblas_get_version");
      if (s.flexiblas_get_version) {
        int major = 0, minor = 0, patch = 0;
        s.flexiblas_get_version(&major, &minor, &patch);
        version_ =
            std::to_string(major) + "." + std::to_string(minor) + "." + std::to_string(patch);
      }
      threading_layer_ = "unknown";  // that of whichever backend is current
      break;
  }

  // Fixed from here on: kept, so that a capture (one per task) tests two flags.
  switch (kind_) {
    case library_kind::openblas:
      thread_control_ =
          threading_layer_ == "openmp" && s.omp_get_max_threads && s.omp_set_num_threads;
      // The OpenMP build's pool follows each caller's ICV; its own setter would fight that.
      process_control_ =
          threading_layer_ != "openmp" && s.openblas_get_num_threads && s.openblas_set_num_threads;
      break;
    case library_kind::blis:
      process_control_ = s.bli_thread_get_num_threads && s.bli_thread_set_num_threads;
      break;
    case library_kind::mkl:
      thread_control_ = s.mkl_set_num_threads_local != nullptr && s.mkl_get_max_threads != nullptr;
      process_control_ = s.mkl_set_num_threads && s.mkl_get_max_threads;
      break;
    case library_kind::openmp:
      thread_control_ = s.omp_get_max_threads && s.omp_set_num_threads;
      break;
    case library_kind::flexiblas:
      process_control_ = s.flexiblas_get_num_threads && s.flexiblas_set_num_threads;
      break;
  }
}

int native_library::num_threads() const {
  const symbols& s = *symbols_;
  switch (kind_) {
    case library_kind::openblas:
      if (threading_layer_ == "openmp" && s.omp_get_max_threads) return s.omp_get_max_threads();
      return s.openblas_get_num_threads ? s.openblas_get_num_threads() : 0;
    case library_kind::blis: {
      // Unset (-1) means single-threaded; threadpoolctl reports 1 too.
      std::int64_t n = s.bli_thread_get_num_threads ? s.bli_thread_get_num_threads() : -1;
      return n < 1 ? 1 : static_cast<int>(std::min<std::int64_t>(n, INT32_MAX));
    }
    case library_kind::mkl:
      return s.mkl_get_max_threads ? s.mkl_get_max_threads() : 0;
    case library_kind::openmp:
      return s.omp_get_max_threads ? s.omp_get_max_threads() : 0;
    case library_kind::flexiblas: {
      int n = s.flexiblas_get_num_threads ? s.flexiblas_get_num_threads() : -1;
      return n < 1 ? 1 : n;
    }
  }
  return 0;
}

library_info native_library::info() const {
  return {kind_,
          path_,
          prefix_,
          version_,
          threading_layer_,
          num_threads(),
          has_thread_control(),
          has_process_control()};
}

namespace {
[[noreturn]] void no_control(const native_library& library, const char* which) {
  throw std::logic_error(std::string("corral::native: ") + std::string(to_string(library.kind())) +
                         " at " + library.path() + " has no " + which + " thread control");
}
void check_positive(int value, int allowed_unset) {
  if (value < 1 && value != allowed_unset)
    throw std::invalid_argument("corral::native: a thread setting must be at least 1, got " +
                                std::to_string(value));
}
}  // namespace

int native_library::thread_setting() const {
  if (!has_thread_control()) no_control(*this, "per-thread");
  const symbols& s = *symbols_;
  if (kind_ == library_kind::mkl) {
    // The thread-local value is only readable by exchanging it; put it straight back.
    int local = s.mkl_set_num_threads_local(0);
    if (local != 0) s.mkl_set_num_threads_local(local);
    return local;
  }
  return s.omp_get_max_threads();
}

void native_library::set_thread_setting(int value) const {
  if (!has_thread_control()) no_control(*this, "per-thread");
  const symbols& s = *symbols_;
  if (kind_ == library_kind::mkl) {
    check_positive(value, 0);
    s.mkl_set_num_threads_local(value);
    return;
  }
  check_positive(value, 1);
  s.omp_set_num_threads(value);
}

int native_library::process_setting() const {
  if (!has_process_control()) no_control(*this, "process-wide");
  const symbols& s = *symbols_;
  switch (kind_) {
    case library_kind::openblas:
      return s.openblas_get_num_threads();
    case library_kind::blis: {
      std::int64_t n = s.bli_thread_get_num_threads();
      return n < 1 ? -1 : static_cast<int>(std::min<std::int64_t>(n, INT32_MAX));
    }
    case library_kind::mkl: {
      // MKL_Get_Max_Threads answers the thread-local value when one is set: step out of it to read.
      int local = s.mkl_set_num_threads_local(0);
      int global = s.mkl_get_max_threads();
      if (local != 0) s.mkl_set_num_threads_local(local);
      return global;
    }
    case library_kind::flexiblas:
      return s.flexiblas_get_num_threads();
    case library_kind::openmp:
      break;
  }
  no_control(*this, "process-wide");
}

void native_library::set_process_setting(int value) const {
  if (!has_process_control()) no_control(*this, "process-wide");
  const symbols& s = *symbols_;
  switch (kind_) {
    case library_kind::openblas:
      check_positive(value, 1);
      s.openblas_set_num_threads(value);
      return;
    case library_kind::blis:
      check_positive(value, -1);
      s.bli_thread_set_num_threads(value);
      return;
    case library_kind::mkl:
      check_positive(value, 1);
      s.mkl_set_num_threads(value);
      return;
    case library_kind::flexiblas:
      check_positive(value, -1);
      s.flexiblas_set_num_threads(value);
      return;
    case library_kind::openmp:
      break;
  }
  no_control(*this, "process-wide");
}

}  // namespace corral::native
