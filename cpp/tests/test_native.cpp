// Discovery of loaded BLAS/OpenMP libraries and their thread controls.
// Libraries are loaded here with dlopen: libgomp (part of gcc, path from the build), and Debian's
// OpenBLAS (pthreads) and BLIS where installed (scripts/ensure-system-deps.sh installs them).
#include "corral/native.hpp"

#include <dlfcn.h>
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#ifndef CORRAL_TEST_LIBGOMP
#error "CORRAL_TEST_LIBGOMP (the path of gcc's libgomp.so.1) must be defined by the build"
#endif
#ifndef CORRAL_TEST_LOADER_PROBE
#error \
    "CORRAL_TEST_LOADER_PROBE (the path of tests/fixtures/loader_probe.c's library) must be defined by the build"
#endif

namespace native = corral::native;

namespace {

std::string resolved(const std::string& path) {
  char* r = realpath(path.c_str(), nullptr);
  if (!r) return path;
  std::string s(r);
  std::free(r);
  return s;
}

// An independent view of what is loaded: the file mappings in /proc/self/maps (threadpoolctl's
// way).
std::set<std::string> mapped_candidates() {
  std::ifstream maps("/proc/self/maps");
  std::set<std::string> paths;
  for (std::string line; std::getline(maps, line);) {
    std::size_t slash = line.find('/');
    if (slash == std::string::npos) continue;
    std::string path = line.substr(slash);
    if (path.find(".so") == std::string::npos) continue;
    if (!native::match_filename(path).empty()) paths.insert(path);
  }
  return paths;
}

std::set<std::string> discovered_paths(const std::vector<native::library_info>& infos) {
  std::set<std::string> paths;
  for (const auto& info : infos) paths.insert(info.path);
  return paths;
}

const native::library_info* find_path(const std::vector<native::library_info>& infos,
                                      const std::string& path) {
  auto it = std::find_if(infos.begin(), infos.end(), [&](const auto& i) { return i.path == path; });
  return it == infos.end() ? nullptr : &*it;
}

template <class F>
F symbol(void* handle, const char* name) {
  return reinterpret_cast<F>(dlsym(handle, name));
}

void* load_libgomp() {
  void* handle = dlopen(CORRAL_TEST_LIBGOMP, RTLD_NOW | RTLD_LOCAL | RTLD_NODELETE);
  EXPECT_NE(handle, nullptr) << dlerror();
  return handle;
}

// Runs `f` on a fresh thread and returns its result: how another thread sees a setting.
template <class F>
auto on_other_thread(F f) {
  decltype(f()) result{};
  std::thread([&] { result = f(); }).join();
  return result;
}

}  // namespace

TEST(NativeMatch, FollowsThreadpoolctlPrefixRules) {
  auto first = [](std::string_view path) {
    auto m = native::match_filename(path);
    return m.empty() ? std::string("-")
                     : std::string(native::to_string(m[0].kind)) + ":" + m[0].prefix;
  };
  EXPECT_EQ(first("/x/numpy.libs/libscipy_openblas64_-32a4b2a6.so"), "openblas:libscipy_openblas");
  EXPECT_EQ(first("/usr/lib/openblas-pthread/libopenblasp-r0.3.21.so"), "openblas:libopenblas");
  EXPECT_EQ(first("/usr/lib/openblas-pthread/libblas.so.3"),
            "-");  // the name, not the folder, counts
  EXPECT_EQ(first("/usr/lib/libgomp.so.1.0.0"), "openmp:libgomp");
  EXPECT_EQ(first("/usr/lib/llvm-14/lib/libomp-14.so.5"), "openmp:libomp");
  EXPECT_EQ(first("/opt/intel/libiomp5.so"), "openmp:libiomp");
  EXPECT_EQ(first("/opt/intel/libmkl_rt.so.2"), "mkl:libmkl_rt");
  EXPECT_EQ(first("/usr/lib/libblis.so.4"), "blis:libblis");
  EXPECT_EQ(first("/usr/lib/libflexiblas.so.3"), "flexiblas:libflexiblas");
  EXPECT_EQ(first("/usr/lib/LIBGOMP.SO.1"),
            "openmp:libgomp");  // case-insensitive, as threadpoolctl
  EXPECT_EQ(first("/usr/lib/libm.so.6"), "-");
  EXPECT_EQ(first(""), "-");
}

// Runs first (the first test to load anything): this binary links no BLAS or OpenMP.
TEST(NativeDiscovery, AgreesWithProcMapsAndPicksUpALibraryLoadedLater) {
  std::string gomp_path = resolved(CORRAL_TEST_LIBGOMP);
  native::controller ctl;
  auto before = ctl.libraries();
  EXPECT_EQ(discovered_paths(native::discover()), mapped_candidates());
  bool gomp_was_loaded = mapped_candidates().count(gomp_path) > 0;
  const bool thread_controls_before = std::any_of(
      before->begin(), before->end(), [](const auto& l) { return l->has_thread_control(); });
  EXPECT_EQ(ctl.has_thread_controls(), thread_controls_before);

  void* gomp = load_libgomp();
  auto after = native::discover();
  EXPECT_EQ(discovered_paths(after), mapped_candidates());
  EXPECT_NE(find_path(after, gomp_path), nullptr);

  // The cached controller sees it at its next call.
  auto has_gomp = [&](const native::library_list& list) {
    return std::any_of(list.begin(), list.end(),
                       [&](const auto& l) { return l->path() == gomp_path; });
  };
  EXPECT_EQ(has_gomp(*before), gomp_was_loaded);
  EXPECT_TRUE(has_gomp(*ctl.libraries()));
  EXPECT_TRUE(ctl.has_thread_controls());  // an OpenMP runtime: a per-thread count
  dlclose(gomp);
}

TEST(NativeDiscovery, ReportsLibgompWithItsThreadCount) {
  void* gomp = load_libgomp();
  auto omp_get_max_threads = symbol<int (*)()>(gomp, "omp_get_max_threads");
  auto omp_set_num_threads = symbol<void (*)(int)>(gomp, "omp_set_num_threads");
  ASSERT_TRUE(omp_get_max_threads && omp_set_num_threads);

  native::controller ctl;
  auto infos = ctl.info();
  const auto* gomp_info = find_path(infos, resolved(CORRAL_TEST_LIBGOMP));
  ASSERT_NE(gomp_info, nullptr);
  EXPECT_EQ(gomp_info->kind, native::library_kind::openmp);
  EXPECT_EQ(gomp_info->prefix, "libgomp");
  EXPECT_FALSE(gomp_info->version.has_value());
  EXPECT_EQ(gomp_info->threading_layer, "openmp");
  EXPECT_EQ(gomp_info->num_threads, omp_get_max_threads());
  EXPECT_TRUE(gomp_info->has_thread_control);
  EXPECT_FALSE(gomp_info->has_process_control);

  int before = omp_get_max_threads();
  omp_set_num_threads(before + 2);  // read fresh on every call, not cached
  EXPECT_EQ(find_path(ctl.info(), resolved(CORRAL_TEST_LIBGOMP))->num_threads, before + 2);
  omp_set_num_threads(before);
  dlclose(gomp);
}

TEST(NativeController, RescansOnlyWhenTheLoaderChanges) {
  native::controller ctl;
  auto first = ctl.libraries();
  auto second = ctl.libraries();
  EXPECT_EQ(ctl.rescans(), 1u);
  EXPECT_EQ(first, second);  // the same cached list

  void* already = dlopen(
      "libm.so.6", RTLD_NOW | RTLD_LOCAL | RTLD_NODELETE);  // loaded already: counters unchanged
  ASSERT_NE(already, nullptr);
  ctl.libraries();
  EXPECT_EQ(ctl.rescans(), 1u);
  dlclose(already);

  // Load something new: a library of the test's own (no installed package can have loaded it).
  void* handle = dlopen(CORRAL_TEST_LOADER_PROBE, RTLD_NOW | RTLD_LOCAL);
  ASSERT_NE(handle, nullptr) << dlerror();
  auto third = ctl.libraries();
  EXPECT_EQ(ctl.rescans(), 2u);
  EXPECT_NE(third,
            second);  // a new list: the cache was rebuilt (with the same BLAS/OpenMP libraries)
  EXPECT_EQ(discovered_paths(ctl.info()), mapped_candidates());
  ctl.libraries();
  EXPECT_EQ(ctl.rescans(), 2u);
  dlclose(handle);
}

TEST(NativeController, ThreadLimitIsForTheCallingThreadOnly) {
  void* gomp = load_libgomp();
  auto omp_get_max_threads = symbol<int (*)()>(gomp, "omp_get_max_threads");
  native::controller ctl;
  int mine = omp_get_max_threads();
  int others = on_other_thread([&] { return omp_get_max_threads(); });
  int limit = std::max(mine, others) + 1;  // differs from both, whatever the machine's defaults

  native::snapshot saved = ctl.set_thread_limit(static_cast<unsigned>(limit));
  EXPECT_EQ(omp_get_max_threads(), limit);
  EXPECT_EQ(on_other_thread([&] { return omp_get_max_threads(); }), others);
  ASSERT_FALSE(saved.entries.empty());
  native::controller::restore(saved);
  EXPECT_EQ(omp_get_max_threads(), mine);

  {
    native::scoped_thread_limit one(ctl, 1);
    EXPECT_EQ(omp_get_max_threads(), 1);
  }
  EXPECT_EQ(omp_get_max_threads(), mine);
  dlclose(gomp);
}

TEST(NativeController, ProcessLimitSetsOpenBLASForEveryThread) {
  void* blas = dlopen("libopenblas.so.0", RTLD_NOW | RTLD_LOCAL | RTLD_NODELETE);
  if (blas == nullptr)
    GTEST_SKIP() << "Debian's libopenblas0-pthread is not installed: " << dlerror();
  auto get = symbol<int (*)()>(blas, "openblas_get_num_threads");
  auto get_parallel = symbol<int (*)()>(blas, "openblas_get_parallel");
  auto get_config = symbol<const char* (*)()>(blas, "openblas_get_config");
  ASSERT_TRUE(get && get_parallel && get_config);

  native::controller ctl;
  auto infos = ctl.info();
  const native::library_info* info = nullptr;
  for (const auto& i : infos)
    if (i.kind == native::library_kind::openblas && i.prefix == "libopenblas") info = &i;
  ASSERT_NE(info, nullptr);
  ASSERT_TRUE(info->version.has_value());
  EXPECT_NE(std::string(get_config()).find("OpenBLAS " + *info->version + " "), std::string::npos);
  EXPECT_EQ(info->threading_layer, get_parallel() == 1   ? "pthreads"
                                   : get_parallel() == 2 ? "openmp"
                                                         : "disabled");
  EXPECT_EQ(info->num_threads, get());
  if (info->threading_layer != "pthreads") GTEST_SKIP() << "OpenBLAS is not the pthreads build";
  EXPECT_TRUE(info->has_process_control);
  EXPECT_FALSE(info->has_thread_control);

  int original = get();
  native::snapshot saved = ctl.set_process_limit(1);
  EXPECT_EQ(on_other_thread([&] { return get(); }), 1);
  EXPECT_EQ(get(), 1);
  native::controller::restore(saved);
  EXPECT_EQ(get(), original);
  // A per-thread limit leaves a process-wide-only library alone.
  native::snapshot thread_saved = ctl.set_thread_limit(1);
  EXPECT_EQ(get(), original);
  native::controller::restore(thread_saved);
  dlclose(blas);
}

TEST(NativeController, BLISIsProcessWide) {
  void* blis = dlopen("libblis.so.4", RTLD_NOW | RTLD_LOCAL | RTLD_NODELETE);
  if (blis == nullptr) GTEST_SKIP() << "Debian's libblis4 is not installed: " << dlerror();
  auto get = symbol<std::int64_t (*)()>(blis, "bli_thread_get_num_threads");
  auto version = symbol<const char* (*)()>(blis, "bli_info_get_version_str");
  ASSERT_TRUE(get && version);

  native::controller ctl;
  const native::library_info* info = nullptr;
  auto infos = ctl.info();
  for (const auto& i : infos)
    if (i.kind == native::library_kind::blis) info = &i;
  ASSERT_NE(info, nullptr);
  EXPECT_EQ(info->version, std::string(version()));
  EXPECT_EQ(info->num_threads, get() < 1 ? 1 : static_cast<int>(get()));
  EXPECT_TRUE(info->has_process_control);

  std::int64_t original = get();
  native::snapshot saved = ctl.set_process_limit(3);
  EXPECT_EQ(on_other_thread([&] { return get(); }), 3);
  native::controller::restore(saved);
  EXPECT_EQ(get(), original);  // the raw value, "unset" (-1) included
  dlclose(blis);
}

TEST(NativeController, RejectsBadInput) {
  native::controller ctl;
  EXPECT_THROW(ctl.set_thread_limit(0), std::invalid_argument);
  EXPECT_THROW(ctl.set_process_limit(0), std::invalid_argument);
  EXPECT_EQ(native::native_library::open_loaded("/nonexistent/libgomp.so.1"), nullptr);
  EXPECT_EQ(native::native_library::open_loaded(""), nullptr);
  // Matching name, but not loaded: RTLD_NOLOAD never loads it.
  EXPECT_EQ(native::native_library::open_loaded("/usr/lib/libopenblas-not-there.so"), nullptr);

  void* gomp = load_libgomp();
  auto library = native::native_library::open_loaded(resolved(CORRAL_TEST_LIBGOMP));
  ASSERT_NE(library, nullptr);
  EXPECT_THROW(library->set_thread_setting(0), std::invalid_argument);
  EXPECT_THROW(library->process_setting(), std::logic_error);  // OpenMP has no process-wide control
  dlclose(gomp);
}

// Under TSan: concurrent readers, per-thread setters and a loader must not race in the controller.
TEST(NativeController, ConcurrentUseIsSafe) {
  void* gomp = load_libgomp();
  auto omp_get_max_threads = symbol<int (*)()>(gomp, "omp_get_max_threads");
  native::controller ctl;
  std::atomic<bool> ok{true};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 200; ++i) {
        int limit = 1 + (t + i) % 3;
        native::scoped_thread_limit scope(ctl, static_cast<unsigned>(limit));
        if (omp_get_max_threads() != limit) ok = false;
        if (ctl.libraries()->empty()) ok = false;
      }
    });
  }
  threads.emplace_back([] {
    for (int i = 0; i < 50; ++i) {
      void* h = dlopen("libm.so.6", RTLD_NOW);
      if (h) dlclose(h);
      // refcount only: counters may or may not move
      void* d = dlopen(CORRAL_TEST_LIBGOMP, RTLD_NOW);
      if (d) dlclose(d);
    }
  });
  for (auto& t : threads) t.join();
  EXPECT_TRUE(ok.load());
  dlclose(gomp);
}

// A forked child (multiprocessing's fork start method) can use the shared controller straight away.
TEST(NativeController, SharedInstanceWorksInAForkedChild) {
  void* gomp = load_libgomp();
  std::size_t in_parent = native::controller::process().libraries()->size();
  ASSERT_GE(in_parent, 1u);
  pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    bool ok = native::controller::process().libraries()->size() == in_parent &&
              native::controller::process().set_thread_limit(1).entries.size() >= 1;
    _exit(ok ? 0 : 1);
  }
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "status " << status;
  dlclose(gomp);
}
