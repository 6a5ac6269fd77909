#include "corral/cgroup.hpp"

#include <algorithm>
#include <charconv>
#include <climits>
#include <cstdio>
#include <mutex>
#include <stdexcept>
#include <system_error>

#include "text_file.hpp"

namespace corral {

namespace fs = std::filesystem;

namespace {

constexpr std::int64_t default_period_us = 100000;

using detail::trim;

std::vector<std::string_view> split(std::string_view text, char separator) {
  std::vector<std::string_view> parts;
  std::size_t start = 0;
  for (;;) {
    const std::size_t end = text.find(separator, start);
    parts.push_back(
        text.substr(start, end == std::string_view::npos ? std::string_view::npos : end - start));
    if (end == std::string_view::npos) return parts;
    start = end + 1;
  }
}

std::vector<std::string_view> split_whitespace(std::string_view text) {
  std::vector<std::string_view> words;
  for (std::string_view word : split(text, ' ')) {
    for (std::string_view piece : split(word, '\t')) {
      piece = trim(piece);
      if (!piece.empty()) words.push_back(piece);
    }
  }
  return words;
}

std::optional<std::int64_t> parse_int64(std::string_view text) {
  text = trim(text);
  std::int64_t value = 0;
  const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (text.empty() || error != std::errc{} || end != text.data() + text.size()) return std::nullopt;
  return value;
}

std::string quoted(std::string_view text) {
  text = trim(text);
  std::string out = "\"";
  out.append(text.substr(0, 60));
  if (text.size() > 60) out += "...";
  return out + "\"";
}

// mountinfo escapes space, tab, newline and backslash as \ooo.
std::string decode_octal_escapes(std::string_view text) {
  std::string out;
  for (std::size_t i = 0; i < text.size(); ++i) {
    const auto is_octal = [&](std::size_t at) { return text[at] >= '0' && text[at] <= '7'; };
    if (text[i] == '\\' && i + 3 < text.size() && is_octal(i + 1) && is_octal(i + 2) &&
        is_octal(i + 3)) {
      out += static_cast<char>((text[i + 1] - '0') * 64 + (text[i + 2] - '0') * 8 +
                               (text[i + 3] - '0'));
      i += 3;
    } else {
      out += text[i];
    }
  }
  return out;
}

bool starts_with_dir(std::string_view path, std::string_view dir) {
  return path == dir ||
         (path.size() > dir.size() && path.starts_with(dir) && path[dir.size()] == '/');
}

// Mount points are absolute in the real file system; under /sys or /proc they are read
// beneath the configured roots so that tests can build fake trees.
fs::path rebase(std::string_view mount_point, const fs::path& proc_root, const fs::path& sys_root) {
  for (const auto& [prefix, root] : {std::pair{std::string_view{"/sys"}, &sys_root},
                                     std::pair{std::string_view{"/proc"}, &proc_root}}) {
    if (starts_with_dir(mount_point, prefix)) {
      std::string_view rest = mount_point.substr(prefix.size());
      while (rest.starts_with('/')) rest.remove_prefix(1);
      return rest.empty() ? *root : *root / rest;
    }
  }
  return fs::path(mount_point);
}

bool has_dot_dot(std::string_view path) {
  for (std::string_view part : split(path, '/')) {
    if (part == "..") return true;
  }
  return false;
}

// ---- reading one level of a hierarchy -------------------------------------------------

// One level's file: nothing when it is missing (the controller is not enabled there) or cannot
// be read (the error joins `problems`).
std::optional<std::string> read_level(const fs::path& path, std::vector<std::string>& problems) {
  detail::text_file file = detail::read_text_file(path);
  if (file.missing) return std::nullopt;
  if (!file.ok()) {
    problems.push_back("cannot read " + path.string() + ": " + file.error);
    return std::nullopt;
  }
  return std::move(file.text);
}

struct quota_level {
  fs::path file;
  cpu_quota quota;  // never invalid
};

// A level's quota: nothing when its file is missing or unusable (why joins `problems`).
std::optional<quota_level> read_v2_quota(const fs::path& dir, std::vector<std::string>& problems) {
  fs::path file = dir / "cpu.max";
  const std::optional<std::string> text = read_level(file, problems);
  if (!text) return std::nullopt;
  cpu_quota quota = parse_cpu_max(*text);
  if (quota.state == cpu_quota::status::invalid) {
    problems.push_back(file.string() + ": " + quota.error);
    return std::nullopt;
  }
  return quota_level{std::move(file), std::move(quota)};
}

std::optional<quota_level> read_v1_quota(const fs::path& dir, std::vector<std::string>& problems) {
  fs::path file = dir / "cpu.cfs_quota_us";
  const std::optional<std::string> text = read_level(file, problems);
  if (!text) return std::nullopt;
  const fs::path period_file = dir / "cpu.cfs_period_us";
  const detail::text_file period = detail::read_text_file(period_file);
  cpu_quota quota =
      parse_cfs_quota(*text, period.ok() ? std::string_view{period.text} : std::string_view{});
  if (quota.state == cpu_quota::status::invalid) {
    std::string problem = file.string() + ": " + quota.error;
    if (!period.ok())
      problem += " (cannot read " + period_file.string() + ": " + period.error + ")";
    problems.push_back(std::move(problem));
    return std::nullopt;
  }
  return quota_level{std::move(file), std::move(quota)};
}

std::string join(const std::vector<std::string>& parts, std::string_view separator) {
  std::string out;
  for (const std::string& part : parts) {
    if (!out.empty()) out += separator;
    out += part;
  }
  return out;
}

budget_source absent_source(std::string name, std::string why) {
  budget_source source;
  source.name = std::move(name);
  source.detail = std::move(why);
  return source;
}

// The end of every cgroup source's description: why nothing was found, what was ignored, notes.
budget_source finish_source(budget_source source, std::vector<std::string> parts,
                            const std::vector<std::string>& problems, const cgroup_location& where,
                            std::string_view file_name) {
  if (parts.empty() && problems.empty()) {
    parts.push_back("no " + std::string(file_name) + " from " + where.leaf_dir.string() +
                    " up to " + where.mount_dir.string() +
                    " (controller not enabled there): no limit");
  } else if (parts.empty()) {
    source.skipped = true;
    parts.emplace_back("skipped");
  }
  if (!problems.empty()) parts.push_back("ignored " + join(problems, "; "));
  if (!where.note.empty()) parts.push_back(where.note);
  source.detail = join(parts, "; ");
  return source;
}

template <class ReadQuota>
budget_source quota_source(std::string name, const cgroup_location& where,
                           std::string_view file_name, ReadQuota read_quota) {
  budget_source source;
  source.name = std::move(name);
  source.path = (where.leaf_dir / file_name).string();
  std::vector<std::string> problems;
  std::optional<quota_level> tightest;
  int levels_read = 0;
  for (const fs::path& dir : where.dirs_leaf_first()) {
    std::optional<quota_level> level = read_quota(dir, problems);
    if (!level) continue;
    ++levels_read;
    if (level->quota.state == cpu_quota::status::limited &&
        (!tightest || level->quota.exact_cpus() < tightest->quota.exact_cpus())) {
      tightest = std::move(level);
    }
  }
  std::vector<std::string> parts;
  if (tightest) {
    source.cpus = tightest->quota.cpus();
    source.path = tightest->file.string();
    parts.push_back(tightest->quota.describe());
    if (levels_read > 1)
      parts.push_back("the tightest of " + std::to_string(levels_read) + " levels read");
  } else if (levels_read > 0) {
    parts.emplace_back("max: no limit");
  }
  return finish_source(std::move(source), std::move(parts), problems, where, file_name);
}

budget_source cpuset_source(std::string name, const cgroup_location& where,
                            std::string_view file_name) {
  budget_source source;
  source.name = std::move(name);
  source.path = (where.leaf_dir / file_name).string();
  std::vector<std::string> problems;
  std::optional<cpu_set> allowed;
  std::string narrowest_file;
  int levels_read = 0;
  for (const fs::path& dir : where.dirs_leaf_first()) {
    const fs::path path = dir / file_name;
    const std::optional<std::string> text = read_level(path, problems);
    if (!text) continue;
    if (trim(*text).empty()) {
      problems.push_back(path.string() + ": empty");
      continue;
    }
    cpu_set level;
    try {
      level = cpu_set::parse(*text);
    } catch (const std::exception& error) {
      problems.push_back(path.string() + ": " + error.what());
      continue;
    }
    ++levels_read;
    if (!allowed) {
      allowed = level;
      narrowest_file = path.string();
    } else {
      const cpu_set both = *allowed & level;
      if (both.count() < allowed->count()) narrowest_file = path.string();
      allowed = both;
    }
  }
  std::vector<std::string> parts;
  if (allowed && allowed->empty()) {
    source.skipped = true;
    parts.emplace_back("skipped: the levels' cpusets have no CPU in common");
  } else if (allowed) {
    source.cpus = static_cast<int>(allowed->count());
    source.cpu_ids = allowed;
    source.path = narrowest_file;
    parts.push_back("CPUs " + allowed->to_string());
    if (levels_read > 1)
      parts.push_back("the intersection of " + std::to_string(levels_read) + " levels read");
  }
  return finish_source(std::move(source), std::move(parts), problems, where, file_name);
}

}  // namespace

// ---- /proc/self/cgroup and mountinfo --------------------------------------------------

std::vector<cgroup_membership> parse_proc_cgroup(std::string_view text) {
  std::vector<cgroup_membership> result;
  for (std::string_view line : split(text, '\n')) {
    const std::size_t first = line.find(':');
    const std::size_t second = first == std::string_view::npos ? first : line.find(':', first + 1);
    if (second == std::string_view::npos) continue;
    const std::optional<std::int64_t> id = parse_int64(line.substr(0, first));
    if (!id || *id < 0 || *id > INT_MAX) continue;
    cgroup_membership membership;
    membership.hierarchy_id = static_cast<int>(*id);
    const std::string_view controllers = line.substr(first + 1, second - first - 1);
    if (!controllers.empty()) {
      for (std::string_view name : split(controllers, ','))
        membership.controllers.emplace_back(name);
    }
    membership.path = std::string(trim(line.substr(second + 1)));
    if (membership.path.empty()) continue;
    result.push_back(std::move(membership));
  }
  return result;
}

std::vector<cgroup_mount> parse_cgroup_mounts(std::string_view mountinfo) {
  std::vector<cgroup_mount> result;
  for (std::string_view line : split(mountinfo, '\n')) {
    const std::vector<std::string_view> fields = split_whitespace(line);
    // id parent major:minor root mount-point options [optional fields...] - fstype source
    // super-options
    const auto dash = std::find(fields.begin(), fields.end(), std::string_view{"-"});
    if (fields.size() < 6 || dash == fields.end() || dash - fields.begin() < 6 ||
        dash + 1 == fields.end())
      continue;
    const std::string_view fstype = *(dash + 1);
    cgroup_mount mount;
    if (fstype == "cgroup2") {
      mount.version = 2;
    } else if (fstype == "cgroup") {
      mount.version = 1;
      if (dash + 3 < fields.end()) {
        for (std::string_view option : split(*(dash + 3), ','))
          mount.controllers.emplace_back(option);
      }
    } else {
      continue;
    }
    mount.root = decode_octal_escapes(fields[3]);
    mount.mount_point = decode_octal_escapes(fields[4]);
    result.push_back(std::move(mount));
  }
  return result;
}

std::vector<fs::path> cgroup_location::dirs_leaf_first() const {
  std::vector<fs::path> dirs{leaf_dir};
  int depth = 0;
  for (const fs::path& part : leaf_dir.lexically_relative(mount_dir)) {
    if (!part.empty() && part != ".") ++depth;
  }
  fs::path dir = leaf_dir;
  for (int i = 0; i < depth; ++i) {
    dir = dir.parent_path();
    dirs.push_back(dir);
  }
  return dirs;
}

std::optional<cgroup_location> locate_cgroup(const std::vector<cgroup_membership>& memberships,
                                             const std::vector<cgroup_mount>& mounts,
                                             std::string_view controller, const fs::path& proc_root,
                                             const fs::path& sys_root) {
  const auto has = [&](const std::vector<std::string>& list) {
    return std::find(list.begin(), list.end(), controller) != list.end();
  };
  const cgroup_membership* member = nullptr;
  for (const cgroup_membership& m : memberships) {
    const bool matches =
        controller.empty() ? (m.hierarchy_id == 0 && m.controllers.empty()) : has(m.controllers);
    if (matches) {
      member = &m;
      break;
    }
  }
  if (member == nullptr) return std::nullopt;

  const std::string& path = member->path;
  const auto holds_path = [&](const cgroup_mount& mount) {
    return mount.root == "/" || starts_with_dir(path, mount.root);
  };
  // Several mounts of one hierarchy (bind mounts): prefer the one whose root holds our path.
  const cgroup_mount* chosen = nullptr;
  for (const cgroup_mount& mount : mounts) {
    const bool matches =
        controller.empty() ? mount.version == 2 : (mount.version == 1 && has(mount.controllers));
    if (!matches) continue;
    const bool holds = holds_path(mount);
    const bool chosen_holds = chosen != nullptr && holds_path(*chosen);
    if (chosen == nullptr || (holds && (!chosen_holds || mount.root.size() > chosen->root.size())))
      chosen = &mount;
  }
  if (chosen == nullptr) return std::nullopt;

  cgroup_location where;
  where.mount_dir = rebase(chosen->mount_point, proc_root, sys_root);
  std::string_view relative;
  if (!path.starts_with('/') || has_dot_dot(path)) {
    where.note = "cgroup path " + path + " lies outside this namespace's view: read the mount root";
  } else if (holds_path(*chosen)) {
    relative = std::string_view(path).substr(chosen->root.size());  // a root of "/" takes the '/'
  } else {
    // A container's mount shows only its own cgroup, while /proc/self/cgroup shows the host's path.
    where.note = "cgroup path " + path + " is not under the mount's root " + chosen->root +
                 ": read the mount root";
  }
  while (relative.starts_with('/')) relative.remove_prefix(1);
  where.leaf_dir = relative.empty() ? where.mount_dir : where.mount_dir / relative;
  std::error_code error;
  if (!relative.empty() && !fs::is_directory(where.leaf_dir, error)) {
    where.note = "cgroup path " + path + " is not visible at " + where.leaf_dir.string() +
                 ": read the mount root";
    where.leaf_dir = where.mount_dir;
  }
  return where;
}

// ---- quotas ---------------------------------------------------------------------------

int cpu_quota::cpus() const {
  if (state != status::limited || quota_us <= 0 || period_us <= 0) return 0;
  const std::int64_t whole = quota_us / period_us + (quota_us % period_us != 0 ? 1 : 0);
  return static_cast<int>(std::clamp<std::int64_t>(whole, 1, INT_MAX));
}

double cpu_quota::exact_cpus() const {
  if (state != status::limited || period_us <= 0) return 0.0;
  return static_cast<double>(quota_us) / static_cast<double>(period_us);
}

std::string cpu_quota::describe() const {
  switch (state) {
    case status::unlimited:
      return "max: no limit";
    case status::invalid:
      return error;
    case status::limited:
      break;
  }
  char text[160];
  std::snprintf(text, sizeof text, "quota %lld us per %lld us = %.4g CPUs, rounded up to %d",
                static_cast<long long>(quota_us), static_cast<long long>(period_us), exact_cpus(),
                cpus());
  return text;
}

cpu_quota parse_cpu_max(std::string_view text) {
  cpu_quota result;
  const std::vector<std::string_view> words = split_whitespace(trim(text));
  if (words.empty() || words.size() > 2) {
    result.error = "expected \"<quota|max> <period>\", found " + quoted(text);
    return result;
  }
  result.period_us = default_period_us;
  if (words.size() == 2) {
    const std::optional<std::int64_t> period = parse_int64(words[1]);
    if (!period || *period <= 0) {
      result.error = "bad period in " + quoted(text);
      return result;
    }
    result.period_us = *period;
  }
  if (words[0] == "max") {
    result.state = cpu_quota::status::unlimited;
    return result;
  }
  const std::optional<std::int64_t> quota = parse_int64(words[0]);
  if (!quota || *quota <= 0) {
    result.error = "bad quota in " + quoted(text);
    return result;
  }
  if (words.size() == 1) {
    result.error = "expected \"<quota|max> <period>\", found " + quoted(text);
    return result;
  }
  result.quota_us = *quota;
  result.state = cpu_quota::status::limited;
  return result;
}

cpu_quota parse_cfs_quota(std::string_view quota_text, std::string_view period_text) {
  cpu_quota result;
  const std::optional<std::int64_t> quota = parse_int64(quota_text);
  if (!quota || *quota == 0 || *quota < -1) {
    result.error = "bad quota " + quoted(quota_text);
    return result;
  }
  if (*quota == -1) {
    result.state = cpu_quota::status::unlimited;
    return result;
  }
  const std::optional<std::int64_t> period = parse_int64(period_text);
  if (!period || *period <= 0) {
    result.error = "bad period " + quoted(period_text);
    return result;
  }
  result.quota_us = *quota;
  result.period_us = *period;
  result.state = cpu_quota::status::limited;
  return result;
}

// ---- the four sources -----------------------------------------------------------------

namespace {

// The process's three hierarchies, as found from /proc/self/cgroup and mountinfo.
struct located_hierarchies {
  std::optional<cgroup_location> v2, v1_cpu, v1_cpuset;
};

struct location_cache_entry {
  std::string proc_root, sys_root, cgroup_text;
  located_hierarchies where;
};

// One entry: the process's own roots are what matters in production. try_lock only: a
// thread that finds it busy reads afresh, and a child forked while it was held never waits.
std::mutex location_cache_mutex;
std::optional<location_cache_entry> location_cache;

std::optional<located_hierarchies> cached_locations(const fs::path& proc_root,
                                                    const fs::path& sys_root,
                                                    const std::string& cgroup_text) {
  std::unique_lock lock(location_cache_mutex, std::try_to_lock);
  if (!lock || !location_cache || location_cache->cgroup_text != cgroup_text ||
      location_cache->proc_root != proc_root.native() ||
      location_cache->sys_root != sys_root.native()) {
    return std::nullopt;
  }
  return location_cache->where;
}

void remember_locations(const fs::path& proc_root, const fs::path& sys_root,
                        const std::string& cgroup_text, const located_hierarchies& where) {
  std::unique_lock lock(location_cache_mutex, std::try_to_lock);
  if (lock)
    location_cache =
        location_cache_entry{proc_root.native(), sys_root.native(), cgroup_text, where};
}

}  // namespace

std::vector<budget_source> read_cgroup_sources(const fs::path& proc_root, const fs::path& sys_root,
                                               bool reuse_mounts) {
  static constexpr const char* v2_quota = "cgroup v2 cpu.max";
  static constexpr const char* v2_cpuset = "cgroup v2 cpuset.cpus.effective";
  static constexpr const char* v1_quota = "cgroup v1 cpu.cfs_quota_us";
  static constexpr const char* v1_cpuset = "cgroup v1 cpuset.cpus";

  const fs::path cgroup_file = proc_root / "self" / "cgroup";
  const detail::text_file cgroup_text = detail::read_text_file(cgroup_file);
  std::optional<located_hierarchies> where;
  if (cgroup_text.ok() && reuse_mounts)
    where = cached_locations(proc_root, sys_root, cgroup_text.text);
  if (!where) {
    const fs::path mountinfo_file = proc_root / "self" / "mountinfo";
    const detail::text_file mountinfo_text =
        cgroup_text.ok() ? detail::read_text_file(mountinfo_file) : detail::text_file{};
    if (!cgroup_text.ok() || !mountinfo_text.ok()) {
      const std::string why =
          !cgroup_text.ok()
              ? "cannot read " + cgroup_file.string() + ": " + cgroup_text.error
              : "cannot read " + mountinfo_file.string() + ": " + mountinfo_text.error;
      std::vector<budget_source> sources;
      for (const char* name : {v2_quota, v2_cpuset, v1_quota, v1_cpuset}) {
        budget_source source = absent_source(name, "skipped: " + why);
        source.skipped = true;
        sources.push_back(std::move(source));
      }
      return sources;
    }
    const std::vector<cgroup_membership> memberships = parse_proc_cgroup(cgroup_text.text);
    const std::vector<cgroup_mount> mounts = parse_cgroup_mounts(mountinfo_text.text);
    where = located_hierarchies{locate_cgroup(memberships, mounts, "", proc_root, sys_root),
                                locate_cgroup(memberships, mounts, "cpu", proc_root, sys_root),
                                locate_cgroup(memberships, mounts, "cpuset", proc_root, sys_root)};
    remember_locations(proc_root, sys_root, cgroup_text.text, *where);
  }

  std::vector<budget_source> sources;
  if (where->v2) {
    sources.push_back(quota_source(v2_quota, *where->v2, "cpu.max", read_v2_quota));
    sources.push_back(cpuset_source(v2_cpuset, *where->v2, "cpuset.cpus.effective"));
  } else {
    sources.push_back(
        absent_source(v2_quota, "no cgroup v2 hierarchy mounted for this process: no limit"));
    sources.push_back(
        absent_source(v2_cpuset, "no cgroup v2 hierarchy mounted for this process: no limit"));
  }
  if (where->v1_cpu) {
    sources.push_back(quota_source(v1_quota, *where->v1_cpu, "cpu.cfs_quota_us", read_v1_quota));
  } else {
    sources.push_back(
        absent_source(v1_quota, "no cgroup v1 cpu controller mounted for this process: no limit"));
  }
  if (where->v1_cpuset) {
    sources.push_back(cpuset_source(v1_cpuset, *where->v1_cpuset, "cpuset.cpus"));
  } else {
    sources.push_back(absent_source(
        v1_cpuset, "no cgroup v1 cpuset controller mounted for this process: no limit"));
  }
  return sources;
}

}  // namespace corral
