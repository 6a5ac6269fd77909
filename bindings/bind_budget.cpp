// corral._core.budget() and corral._core.Budget: the process's CPU budget, every figure with
// its source (see cpp/include/corral/budget.hpp). Conversion only; the reading is C++.
#include <nanobind/stl/filesystem.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "bindings.hpp"
#include "corral/budget.hpp"

namespace corral::bindings {

namespace {

std::vector<std::vector<int>> core_lists(const cpu_budget& b) {
  std::vector<std::vector<int>> out;
  out.reserve(b.topology.cores.size());
  for (const physical_core& core : b.topology.cores) out.push_back(core.cpus.ids());
  return out;
}

std::vector<std::vector<int>> node_lists(const cpu_budget& b) {
  std::vector<std::vector<int>> out;
  out.reserve(b.topology.numa_nodes.size());
  for (const numa_node& node : b.topology.numa_nodes) out.push_back(node.cpus.ids());
  return out;
}

nb::dict to_dict(const cpu_budget& b) {
  nb::dict sources;
  for (const budget_source& s : b.sources) {
    nb::dict entry;
    entry["cpus"] = s.cpus ? nb::cast(*s.cpus) : nb::none();
    entry["path"] = s.path;
    entry["detail"] = s.detail;
    sources[nb::cast(s.name)] = entry;
  }
  nb::dict d;
  d["budget"] = b.cpus;
  d["cpus"] = nb::cast(b.cpu_ids.ids());
  d["decided_by"] = b.decided_by;
  d["exceeds_hardware"] = b.exceeds_hardware;
  d["sources"] = sources;
  d["cores"] = nb::cast(core_lists(b));
  d["numa_nodes"] = nb::cast(node_lists(b));
  return d;
}

}  // namespace

void bind_budget(nb::module_& m) {
  nb::class_<budget_source>(m, "BudgetSource", "One input to the CPU budget and what it said.")
      .def_ro("name", &budget_source::name, "'affinity', 'cgroup v2 cpu.max', ..., 'CORRAL_CPUS'")
      .def_prop_ro(
          "value", [](const budget_source& s) { return s.cpus; },
          "CPUs this source allows; None: no limit or skipped")
      .def_ro("path", &budget_source::path, "the file it read (or what was called)")
      .def_ro("detail", &budget_source::detail, "what it read, or why it was skipped")
      .def_ro("skipped", &budget_source::skipped, "True when the source was unreadable or garbage")
      .def_prop_ro(
          "cpu_ids",
          [](const budget_source& s) {
            return s.cpu_ids ? std::optional(s.cpu_ids->ids()) : std::nullopt;
          },
          "for affinity and cpusets: which CPUs; else None")
      .def("__repr__", [](const budget_source& s) {
        return "BudgetSource(" + s.name + ": " +
               (s.cpus ? std::to_string(*s.cpus) : std::string("None")) + ", " + s.detail + ")";
      });

  nb::class_<cpu_budget>(m, "Budget",
                         "The CPU budget of this process and where each figure came from.")
      .def_ro("cpus", &cpu_budget::cpus, "the budget: how many CPUs this process may keep busy")
      .def_prop_ro(
          "cpu_ids", [](const cpu_budget& b) { return b.cpu_ids.ids(); },
          "the CPUs it may run on: the affinity mask within the cgroup cpusets")
      .def_ro("decided_by", &cpu_budget::decided_by, "the name of the source that set cpus")
      .def_ro("exceeds_hardware", &cpu_budget::exceeds_hardware,
              "CORRAL_CPUS is above the CPUs this process may run on (emulating a bigger machine)")
      .def_ro("sources", &cpu_budget::sources,
              "every source, in a fixed order, each with what it said")
      .def_prop_ro("cores", &core_lists, "SMT sibling groups (physical cores) among cpu_ids")
      .def_prop_ro("numa_nodes", &node_lists, "the CPUs of cpu_ids, NUMA node by node")
      .def_ro("notes", &cpu_budget::notes, "assumptions made: missing files, overrides")
      .def("to_dict", &to_dict,
           "{budget, cpus, decided_by, exceeds_hardware, sources, cores, numa_nodes}")
      .def("__repr__", [](const cpu_budget& b) {
        return "Budget(cpus=" + std::to_string(b.cpus) + ", cpu_ids='" + b.cpu_ids.to_string() +
               "', decided_by='" + b.decided_by + "'" +
               (b.exceeds_hardware ? ", exceeds_hardware=True" : "") + ")";
      });

  m.def(
      "budget",
      [](nb::object env, std::optional<std::filesystem::path> proc_root,
         std::optional<std::filesystem::path> sys_root) {
        budget_options options;  // CORRAL_CPUS from the process environment unless env is given
        if (nb::isinstance<nb::str>(env)) {
          options.env_cpus = nb::cast<std::string>(env);
        } else if (!env.is_none()) {
          nb::object value = env.attr("get")(budget_env_var);
          options.env_cpus =
              value.is_none() ? std::nullopt : std::optional(nb::cast<std::string>(value));
        }
        if (proc_root) options.proc_root = std::move(*proc_root);
        if (sys_root) options.sys_root = std::move(*sys_root);
        return without_gil([&] { return read_budget(options); });
      },
      nb::arg("env") = nb::none(), nb::kw_only(), nb::arg("proc_root") = nb::none(),
      nb::arg("sys_root") = nb::none(),
      "The CPU budget of this process, read on each call: the affinity mask, capped by the\n"
      "cgroup (v2 and v1) CPU quota and cpusets of its cgroup and every ancestor, replaced by\n"
      "CORRAL_CPUS when set (see docs/budget.md). env: a mapping to read CORRAL_CPUS from instead "
      "of the process environment,\n"
      "or the value of CORRAL_CPUS itself.\n"
      "proc_root, sys_root: fake /proc and /sys trees (tests). Raises ValueError for a\n"
      "malformed CORRAL_CPUS.");
}

}  // namespace corral::bindings
