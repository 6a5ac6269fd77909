#include "corral/budget.hpp"

#include <sched.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstdlib>
#include <mutex>
#include <stdexcept>
#include <system_error>
#include <thread>

#include "corral/cgroup.hpp"
#include "text_file.hpp"

namespace corral {

namespace {

constexpr std::string_view affinity_name = "affinity";
constexpr int max_budget = cpu_set::max_cpu_id + 1;

// The value as the message shows it: printable ASCII as it is, any other byte as \xNN, so that the
// message is text whatever the environment holds (the bindings decode it as UTF-8: a raw 0xff byte
// once surfaced as Python's UnicodeDecodeError instead of this message).
std::string quoted(std::string_view value) {
  static constexpr char hex[] = "0123456789abcdef";
  std::string out;
  for (const char c : value.substr(0, 100)) {
    const auto byte = static_cast<unsigned char>(c);
    if (byte >= 0x20 && byte < 0x7f && byte != '\\') {
      out += c;
    } else {
      out += "\\x";
      out += hex[byte >> 4];
      out += hex[byte & 0xf];
    }
  }
  return out;
}

[[noreturn]] void bad_env(std::string_view value, std::string_view why) {
  std::string message = budget_env_var;
  message += "=\"";
  message += quoted(value);
  message += "\" is not a valid CPU count: ";
  message += why;
  throw std::invalid_argument(message);
}

// Affinity, or when the kernel refuses it (never seen, but no crash): the online CPUs.
budget_source read_affinity(const budget_options& options, std::vector<std::string>& notes) {
  budget_source source;
  source.name = affinity_name;
  if (options.affinity) {
    source.cpu_ids = *options.affinity;
    source.path = "affinity given in budget_options";
  } else {
    source.path = "sched_getaffinity(0)";
    try {
      source.cpu_ids = process_affinity();
    } catch (const std::exception& error) {
      const std::filesystem::path online = options.sys_root / "devices/system/cpu/online";
      cpu_set cpus = detail::read_cpu_list(online).value_or(cpu_set{});
      if (cpus.empty())
        cpus = cpu_set::range(
            0, static_cast<int>(std::max(1U, std::thread::hardware_concurrency())) - 1);
      notes.push_back(std::string("sched_getaffinity failed (") + error.what() +
                      "): used the online CPUs instead");
      source.cpu_ids = cpus;
      source.path = online.string();
    }
  }
  if (source.cpu_ids->empty()) {  // only a test can give this: treat as one CPU rather than zero
    source.cpu_ids = cpu_set::of({0});
    notes.push_back("empty affinity mask: assumed CPU 0");
  }
  source.cpus = static_cast<int>(source.cpu_ids->count());
  source.detail = "CPUs " + source.cpu_ids->to_string();
  return source;
}

// The topology of the last CPU set asked for (sysfs topology changes only with hotplug).
// try_lock only: never waits, so a child forked while another thread held it cannot hang.
struct topology_cache_entry {
  std::string sys_root;
  cpu_set cpus;
  cpu_topology topology;
};
std::mutex topology_cache_mutex;
std::optional<topology_cache_entry> topology_cache;

cpu_topology topology_of(const cpu_set& cpus, const budget_options& options) {
  if (options.reuse_static_reads) {
    std::unique_lock lock(topology_cache_mutex, std::try_to_lock);
    if (lock && topology_cache && topology_cache->cpus == cpus &&
        topology_cache->sys_root == options.sys_root.native()) {
      return topology_cache->topology;
    }
  }
  cpu_topology topology = read_topology(cpus, options.sys_root);
  std::unique_lock lock(topology_cache_mutex, std::try_to_lock);
  if (lock) topology_cache = topology_cache_entry{options.sys_root.native(), cpus, topology};
  return topology;
}

}  // namespace

std::optional<std::string> environment_cpus() {
  const char* value = std::getenv(budget_env_var);
  if (value == nullptr) return std::nullopt;
  return std::string(value);
}

int parse_corral_cpus(std::string_view value) {
  std::string_view text = value;
  while (!text.empty() && (text.front() == ' ' || text.front() == '\t')) text.remove_prefix(1);
  while (!text.empty() && (text.back() == ' ' || text.back() == '\t' || text.back() == '\n'))
    text.remove_suffix(1);
  const std::string range = "expected a whole number from 1 to " + std::to_string(max_budget);
  if (text.empty()) bad_env(value, "it is empty; " + range);
  if (!std::all_of(text.begin(), text.end(), [](char c) { return c >= '0' && c <= '9'; }))
    bad_env(value, range);
  int cpus = 0;
  const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), cpus);
  if (error != std::errc{} || end != text.data() + text.size() || cpus < 1 || cpus > max_budget)
    bad_env(value, range);
  return cpus;
}

cpu_set process_affinity() {
  for (int size = 1024;; size *= 2) {
    cpu_set_t* mask = CPU_ALLOC(size);
    if (mask == nullptr) throw std::bad_alloc();
    const std::size_t bytes = CPU_ALLOC_SIZE(size);
    CPU_ZERO_S(bytes, mask);
    if (sched_getaffinity(0, bytes, mask) == 0) {
      cpu_set cpus;
      const int highest = std::min(size, max_budget);
      for (int cpu = 0; cpu < highest; ++cpu) {
        if (CPU_ISSET_S(static_cast<std::size_t>(cpu), bytes, mask)) cpus.add(cpu);
      }
      CPU_FREE(mask);
      return cpus;
    }
    const int error = errno;
    CPU_FREE(mask);
    // EINVAL: the kernel's mask is larger than ours; grow it (up to the ids cpu_set holds).
    if (error != EINVAL || size >= max_budget)
      throw std::system_error(error, std::generic_category(), "sched_getaffinity");
  }
}

const budget_source* cpu_budget::source(std::string_view name) const {
  for (const budget_source& s : sources) {
    if (s.name == name) return &s;
  }
  return nullptr;
}

cpu_budget read_budget(const budget_options& options) {
  // A malformed override is an error, found before any file is read.
  // 0: not set (an int, not an optional: g++ 12 warns falsely about optional<int> here).
  const int override_cpus = options.env_cpus ? parse_corral_cpus(*options.env_cpus) : 0;

  cpu_budget budget;
  budget.sources.push_back(read_affinity(options, budget.notes));
  for (budget_source& source :
       read_cgroup_sources(options.proc_root, options.sys_root, options.reuse_static_reads)) {
    budget.sources.push_back(std::move(source));
  }
  const cpu_set& affinity = *budget.sources.front().cpu_ids;

  // Where the process may run: affinity within every cpuset. The kernel keeps the affinity
  // inside the cpuset, so an empty intersection means a stale or foreign file: ignored.
  budget.cpu_ids = affinity;
  const budget_source* narrowest_cpuset = nullptr;
  std::size_t narrowest_count = affinity.count();
  const budget_source* tightest_quota = nullptr;
  for (const budget_source& source : budget.sources) {
    if (source.skipped || !source.cpus) continue;
    if (source.cpu_ids && source.name != affinity_name) {
      const cpu_set within = affinity & *source.cpu_ids;
      if (within.empty()) {
        budget.notes.push_back(source.name + " (CPUs " + source.cpu_ids->to_string() +
                               ") shares no CPU with the affinity mask: ignored");
        continue;
      }
      if (within.count() < narrowest_count) {
        narrowest_cpuset = &source;
        narrowest_count = within.count();
      }
      budget.cpu_ids = budget.cpu_ids & within;
    } else if (!source.cpu_ids &&
               (tightest_quota == nullptr || *source.cpus < *tightest_quota->cpus)) {
      tightest_quota = &source;
    }
  }
  if (budget.cpu_ids.empty()) {  // the cpusets disagree with each other: trust the kernel's mask
    budget.notes.emplace_back(
        "the cpusets leave no CPU of the affinity mask: used the affinity mask");
    budget.cpu_ids = affinity;
    narrowest_cpuset = nullptr;
  }

  const int allowed = static_cast<int>(budget.cpu_ids.count());
  budget.cpus = allowed;
  budget.decided_by =
      narrowest_cpuset != nullptr ? narrowest_cpuset->name : std::string(affinity_name);
  if (tightest_quota != nullptr && *tightest_quota->cpus < allowed) {
    budget.cpus = *tightest_quota->cpus;
    budget.decided_by = tightest_quota->name;
  }

  budget_source env;
  env.name = budget_env_var;
  env.path = "environment";
  if (override_cpus > 0) {
    env.cpus = override_cpus;
    env.detail = "set to \"" + *options.env_cpus + "\": overrides every other source";
    if (override_cpus > allowed) {
      budget.exceeds_hardware = true;
      budget.notes.push_back(std::string(budget_env_var) + "=" + std::to_string(override_cpus) +
                             " is above the " + std::to_string(allowed) +
                             " CPUs this process may run on: emulating a bigger machine");
    } else if (override_cpus > budget.cpus) {
      budget.notes.push_back(std::string(budget_env_var) + "=" + std::to_string(override_cpus) +
                             " is above the " + std::to_string(budget.cpus) + " CPUs allowed by " +
                             budget.decided_by);
    }
    budget.cpus = override_cpus;
    budget.decided_by = budget_env_var;
  } else {
    env.detail = "not set";
  }
  budget.sources.push_back(std::move(env));

  if (options.with_topology) {
    budget.topology = topology_of(budget.cpu_ids, options);
    budget.notes.insert(budget.notes.end(), budget.topology.notes.begin(),
                        budget.topology.notes.end());
  }
  return budget;
}

}  // namespace corral
