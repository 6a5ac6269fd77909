// The machine share and make's jobserver (machine_share.hpp, jobserver.hpp) for corral._share.
// std::system_error becomes OSError (PermissionError for a directory or file not private to the
// user), std::invalid_argument ValueError; joining may wait for another member's join, so it runs
// with the GIL released.
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include <memory>
#include <optional>
#include <string>
#include <system_error>
#include <vector>

#include "bindings.hpp"
#include "corral/jobserver.hpp"
#include "corral/machine_share.hpp"
#include "corral/permit_table.hpp"

namespace corral::bindings {
namespace {

template <class F>
auto os_errors(F&& f) -> decltype(f()) {
  try {
    return f();
  } catch (const std::system_error& e) {
    nb::object error =
        nb::steal(PyObject_CallFunction(PyExc_OSError, "is", e.code().value(), e.what()));
    if (!error.is_valid()) throw nb::python_error();
    PyErr_SetObject(reinterpret_cast<PyObject*>(Py_TYPE(error.ptr())), error.ptr());
    throw nb::python_error();
  }
}

// Joins `name` (size 0: the creator's budget) as the process table's source; a no-op when it is
// the share joined already.
std::string join_share(const std::string& name, unsigned size) {
  return os_errors([&] {
    nb::gil_scoped_release unlocked;
    permit_table& table = permit_table::process();  // may join CORRAL_SHARE first
    auto current = std::dynamic_pointer_cast<machine_share>(table.source());
    if (current == nullptr || current->name() != name)
      table.set_source(std::shared_ptr<permit_source>(machine_share::join(name, size)));
    return table.source()->describe();
  });
}

// The process's source, as one line; None when it has its budget alone.
std::optional<std::string> source_description() {
  return os_errors([]() -> std::optional<std::string> {
    nb::gil_scoped_release unlocked;
    auto source = permit_table::process().source();
    if (source == nullptr) return std::nullopt;
    return source->describe();
  });
}

std::optional<nb::dict> status_of(const std::string& name) {
  std::optional<corral::share_status> s = os_errors([&] {
    nb::gil_scoped_release unlocked;
    return machine_share::inspect(name);
  });
  if (!s) return std::nullopt;
  nb::dict d;
  d["name"] = s->name;
  d["path"] = s->path;
  d["size"] = s->size;
  d["held"] = s->held;
  d["stale"] = s->stale;
  nb::list members;
  for (const share_member& m : s->members) {
    nb::dict entry;
    entry["pid"] = m.pid;
    entry["permits"] = m.permits;
    members.append(entry);
  }
  d["members"] = members;
  return d;
}

nb::dict makeflags_jobserver(const std::string& makeflags) {
  const jobserver_auth auth = parse_makeflags(makeflags);
  nb::dict d;
  d["kind"] = auth.how == jobserver_auth::kind::pipe   ? "pipe"
              : auth.how == jobserver_auth::kind::fifo ? "fifo"
                                                       : "none";
  d["read_fd"] = auth.read_fd;
  d["write_fd"] = auth.write_fd;
  d["fifo"] = auth.fifo;
  d["jobs"] = auth.jobs;
  return d;
}

}  // namespace

void bind_share(nb::module_& m) {
  m.def("join_share", &join_share, nb::arg("name"), nb::arg("size") = 0,
        "Joins the machine share `name` (size 0: the creator's budget); returns its description.");
  m.def(
      "permit_source", &source_description,
      "The process's machine-wide permit source (share or make's jobserver) as one line, or None. "
      "Joins what CORRAL_SHARE or MAKEFLAGS names on first use.");
  m.def(
      "permit_source_note", [] { return permit_table::process().source_note(); },
      "Why a jobserver named in MAKEFLAGS was not used, or ''.");
  m.def(
      "check_share_name", [](const std::string& name) { machine_share::check_name(name); },
      nb::arg("name"), "ValueError unless `name` is a plain share name.");
  m.def(
      "share_directory", [] { return os_errors([] { return machine_share::directory(false); }); },
      "The per-user directory shares live in (checked when it exists; not made).");
  m.def(
      "share_names", [] { return os_errors([] { return machine_share::list(); }); },
      "The names of this user's shares.");
  m.def("share_status", &status_of, nb::arg("name"),
        "The share `name` as a dict (name, path, size, held, stale, members [{pid, permits}]), or "
        "None when there is none; a stale file is removed.");
  m.def(
      "leave_share",
      [] {
        nb::gil_scoped_release unlocked;
        machine_share::leave_joined();
      },
      "Leaves the machine share this process joined (its file goes with its last member); later "
      "permits run on the process's own budget.");
  m.def("parse_makeflags", &makeflags_jobserver, nb::arg("makeflags"),
        "The jobserver MAKEFLAGS names: kind (none, pipe, fifo), read_fd, write_fd, fifo, jobs.");
  m.attr("SHARE_MAX_SIZE") = machine_share::max_size;
  m.attr("SHARE_DEFAULT_NAME") = std::string(machine_share::default_name);
}

}  // namespace corral::bindings
