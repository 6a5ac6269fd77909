// corral._core: the native thread pools loaded in this process, and their thread controls.
// Discovery takes the dynamic loader's lock (dl_iterate_phdr, dlopen): the GIL is released around
// it so that a thread holding the loader's lock while it waits for the GIL (an import) cannot
// deadlock with us.
#include <nanobind/nanobind.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include "bindings.hpp"
#include "corral/native.hpp"

namespace corral::bindings {

namespace {

nb::dict to_dict(const native::library_info& info) {
  nb::dict d;
  d["library"] = std::string(native::to_string(info.kind));
  d["path"] = info.path;
  d["version"] = info.version ? nb::object(nb::str(info.version->c_str())) : nb::none();
  d["threading_layer"] = info.threading_layer;
  d["num_threads"] = info.num_threads;
  d["prefix"] = info.prefix;
  d["scope"] =
      std::string(info.has_thread_control ? native::to_string(native::limit_scope::calling_thread)
                  : info.has_process_control ? native::to_string(native::limit_scope::process)
                                             : "none");
  return d;
}

unsigned checked_limit(long n) {
  if (n < 1) throw nb::value_error("thread limit must be at least 1");
  return n > 1'000'000 ? 1'000'000u : static_cast<unsigned>(n);
}

}  // namespace

void bind_native(nb::module_& m) {
  // Opaque: holds references that keep the libraries it names loaded.
  nb::class_<native::snapshot>(
      m, "NativeSnapshot",
      "Thread settings of native libraries as they were, for restore_native_limits().")
      .def("__len__", [](const native::snapshot& s) { return s.entries.size(); })
      .def("__repr__", [](const native::snapshot& s) {
        return "<NativeSnapshot of " + std::to_string(s.entries.size()) + " setting(s)>";
      });

  m.def(
      "native_pools",
      [] {
        std::vector<native::library_info> infos;
        infos = without_gil([] { return native::controller::process().info(); });
        nb::list result;
        for (const auto& info : infos) result.append(to_dict(info));
        return result;
      },
      "The BLAS and OpenMP libraries loaded in this process, as a list of dicts: library "
      "(threadpoolctl's\n"
      "internal_api: openblas, mkl, blis, flexiblas, openmp), path, version (or None), "
      "threading_layer,\n"
      "num_threads (as the calling thread sees it), prefix (the filename prefix matched) and "
      "scope\n"
      "(calling_thread or process: what set_native_thread_limit / set_native_process_limit can "
      "change).");

  m.def(
      "set_native_thread_limit",
      [](long n) {
        unsigned limit = checked_limit(n);
        return without_gil([&] { return native::controller::process().set_thread_limit(limit); });
      },
      nb::arg("n"),
      "Limits every per-thread control (OpenMP runtimes, OpenBLAS built with OpenMP, MKL's local "
      "setting)\n"
      "to n threads for the calling thread only. Returns a NativeSnapshot of what it replaced.");

  m.def(
      "set_native_process_limit",
      [](long n) {
        unsigned limit = checked_limit(n);
        return without_gil([&] { return native::controller::process().set_process_limit(limit); });
      },
      nb::arg("n"),
      "Limits every process-wide control (OpenBLAS pthreads, BLIS, MKL's global setting, "
      "FlexiBLAS) to n\n"
      "threads, for every thread. Returns a NativeSnapshot of what it replaced.");

  m.def(
      "capture_native_limits",
      [](const std::string& scope) {
        for (native::limit_scope s :
             {native::limit_scope::calling_thread, native::limit_scope::process}) {
          if (scope != native::to_string(s)) continue;
          return without_gil([&] { return native::controller::process().capture(s); });
        }
        throw nb::value_error("scope must be 'calling_thread' or 'process'");
      },
      nb::arg("scope"), "The current settings of one scope, as a NativeSnapshot.");

  m.def(
      "restore_native_limits",
      [](const native::snapshot& saved) {
        without_gil([&] { native::controller::restore(saved); });
      },
      nb::arg("snapshot"),
      "Puts back what a NativeSnapshot recorded (per-thread settings: for the calling thread).");
}

}  // namespace corral::bindings
