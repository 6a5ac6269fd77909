#include "corral/topology.hpp"

#include <algorithm>
#include <charconv>
#include <optional>
#include <system_error>

#include "text_file.hpp"

namespace corral {

namespace fs = std::filesystem;

namespace {

std::optional<int> parse_whole(std::string_view text) {
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.remove_suffix(1);
  int value = 0;
  const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (text.empty() || error != std::errc{} || end != text.data() + text.size()) return std::nullopt;
  return value;
}

std::vector<physical_core> read_cores(const cpu_set& allowed, const fs::path& cpu_dir,
                                      cpu_set& unknown) {
  std::vector<physical_core> cores;
  cpu_set placed;
  for (const int cpu : allowed.ids()) {
    if (placed.contains(cpu)) continue;
    const fs::path topology_dir = cpu_dir / ("cpu" + std::to_string(cpu)) / "topology";
    // core_cpus_list is the current name; thread_siblings_list the older one (same content).
    std::optional<cpu_set> siblings = detail::read_cpu_list(topology_dir / "core_cpus_list");
    if (!siblings || siblings->empty())
      siblings = detail::read_cpu_list(topology_dir / "thread_siblings_list");
    physical_core core;
    if (siblings && siblings->contains(cpu)) {
      core.cpus = *siblings & allowed;
      for (const int other : placed.ids())
        core.cpus.remove(other);  // inconsistent files: first one wins
    } else {
      unknown.add(cpu);
      core.cpus.add(cpu);
    }
    const detail::text_file package = detail::read_text_file(topology_dir / "physical_package_id");
    if (package.ok()) core.package_id = parse_whole(package.text).value_or(-1);
    placed = placed | core.cpus;
    cores.push_back(std::move(core));
  }
  return cores;
}

std::vector<numa_node> read_numa_nodes(const cpu_set& allowed, const fs::path& node_dir,
                                       std::vector<std::string>& notes) {
  std::vector<numa_node> nodes;
  std::error_code error;
  cpu_set listed;
  bool any_node = false;
  for (fs::directory_iterator it(node_dir, error), end; !error && it != end; it.increment(error)) {
    const std::string name = it->path().filename().string();
    if (!name.starts_with("node")) continue;
    const std::optional<int> id = parse_whole(std::string_view(name).substr(4));
    if (!id || *id < 0) continue;
    const std::optional<cpu_set> cpus = detail::read_cpu_list(it->path() / "cpulist");
    if (!cpus) continue;
    any_node = true;
    const cpu_set mine = *cpus & allowed;
    listed = listed | mine;
    if (!mine.empty()) nodes.push_back({*id, mine});
  }
  if (!any_node) {
    notes.push_back("no NUMA information under " + node_dir.string() +
                    ": all CPUs counted in node 0");
    return {{0, allowed}};
  }
  std::sort(nodes.begin(), nodes.end(),
            [](const numa_node& a, const numa_node& b) { return a.id < b.id; });
  cpu_set orphans = allowed;
  for (const int cpu : listed.ids()) orphans.remove(cpu);
  if (!orphans.empty()) {
    notes.push_back("CPUs " + orphans.to_string() +
                    " are in no NUMA node's cpulist: grouped as node -1");
    nodes.push_back({-1, orphans});
  }
  return nodes;
}

}  // namespace

cpu_topology read_topology(const cpu_set& allowed, const fs::path& sys_root) {
  cpu_topology topology;
  const fs::path cpu_dir = sys_root / "devices" / "system" / "cpu";
  cpu_set unknown;
  topology.cores = read_cores(allowed, cpu_dir, unknown);
  if (!unknown.empty()) {
    topology.notes.push_back("no SMT sibling information for CPUs " + unknown.to_string() +
                             " under " + cpu_dir.string() + ": each counted as its own core");
  }
  if (!allowed.empty())
    topology.numa_nodes =
        read_numa_nodes(allowed, sys_root / "devices" / "system" / "node", topology.notes);
  return topology;
}

}  // namespace corral
