#include "corral/native.hpp"

#include <link.h>
#include <pthread.h>

#include <climits>
#include <cstdlib>
#include <stdexcept>
#include <unordered_set>

namespace corral::native {

namespace {

// dlpi_adds/dlpi_subs exist when the loader passes a struct large enough to hold them (glibc
// >= 2.4).
bool has_counters(std::size_t size) {
  return size >= offsetof(dl_phdr_info, dlpi_subs) + sizeof(dl_phdr_info::dlpi_subs);
}

int read_generation(dl_phdr_info* info, std::size_t size, void* data) noexcept {
  auto* generation = static_cast<loader_generation*>(data);
  if (has_counters(size)) *generation = {info->dlpi_adds, info->dlpi_subs};
  return 1;  // the counters are global: one object is enough
}

struct listing {
  loaded_objects objects;
  bool failed = false;
};

// Runs with the loader's lock held: copy, nothing else (no dlopen, no locks of ours, no callbacks).
int copy_name(dl_phdr_info* info, std::size_t size, void* data) noexcept {
  auto* out = static_cast<listing*>(data);
  if (out->objects.names.empty() && has_counters(size))
    out->objects.generation = {info->dlpi_adds, info->dlpi_subs};
  try {
    out->objects.names.emplace_back(info->dlpi_name ? info->dlpi_name : "");
  } catch (...) {
    out->failed = true;
    return 1;
  }
  return 0;
}

std::string canonical_path(const std::string& name) {
  if (name.empty()) return {};
  char* resolved = realpath(name.c_str(), nullptr);
  if (resolved == nullptr) return name;  // e.g. linux-vdso.so.1: not a file
  std::string result(resolved);
  std::free(resolved);
  return result;
}

int checked_limit(unsigned n) {
  if (n == 0) throw std::invalid_argument("corral::native: a thread limit must be at least 1");
  return n > INT_MAX ? INT_MAX : static_cast<int>(n);
}

bool has_control(const native_library& library, limit_scope scope) {
  return scope == limit_scope::calling_thread ? library.has_thread_control()
                                              : library.has_process_control();
}

int read_setting(const native_library& library, limit_scope scope) {
  return scope == limit_scope::calling_thread ? library.thread_setting()
                                              : library.process_setting();
}

void write_setting(const native_library& library, limit_scope scope, int value) {
  if (scope == limit_scope::calling_thread)
    library.set_thread_setting(value);
  else
    library.set_process_setting(value);
}

// single_loader_look's state on this thread: scopes open, and whether one of them has looked.
thread_local unsigned single_look_scopes = 0;
thread_local bool looked_in_scope = false;

}  // namespace

single_loader_look::single_loader_look() noexcept {
  if (single_look_scopes++ == 0) looked_in_scope = false;
}

single_loader_look::~single_loader_look() {
  --single_look_scopes;
}

void single_loader_look::look_again() noexcept {
  looked_in_scope = false;
}

loader_generation current_loader_generation() {
  loader_generation generation;
  dl_iterate_phdr(read_generation, &generation);
  return generation;
}

loaded_objects list_loaded_objects() {
  listing out;
  out.objects.names.reserve(256);  // most processes: no allocation under the loader's lock
  dl_iterate_phdr(copy_name, &out);
  if (out.failed) throw std::bad_alloc();
  return std::move(out.objects);
}

// A controller of its own: nothing cached, nothing kept.
std::vector<library_info> discover() {
  return controller{}.info();
}

controller& controller::process() {
  // Leaked on purpose: no destruction-order hazard at exit. Held across fork() so that a child
  // never inherits it locked by a thread that does not exist there.
  static controller* const instance = [] {
    auto* c = new controller();
    pthread_atfork([] { process().mutex_.lock(); }, [] { process().mutex_.unlock(); },
                   [] { process().mutex_.unlock(); });
    return c;
  }();
  return *instance;
}

std::shared_ptr<const library_list> controller::libraries() {
  loader_generation now = current_loader_generation();
  std::lock_guard lock(mutex_);
  if (cached_ && now == generation_) return cached_;

  loaded_objects objects = list_loaded_objects();
  auto libraries = std::make_shared<library_list>();
  std::unordered_set<std::string> seen;
  for (const std::string& name : objects.names) {
    if (name.empty()) continue;
    auto [path_entry, path_is_new] = canonical_paths_.try_emplace(name);
    if (path_is_new) path_entry->second = canonical_path(name);
    const std::string& path = path_entry->second;
    if (!seen.insert(path).second) continue;

    auto known = by_path_.find(path);
    if (known == by_path_.end()) {
      std::shared_ptr<const native_library> library = native_library::open_loaded(path);
      // A name that matches no prefix never will; one that matched but could not be opened
      // (unloaded meanwhile) is tried again at the next rescan.
      if (library || match_filename(path).empty())
        known = by_path_.emplace(path, std::move(library)).first;
    }
    if (known != by_path_.end() && known->second) libraries->push_back(known->second);
  }
  cached_ = std::move(libraries);
  generation_ = objects.generation;
  rescans_.fetch_add(1, std::memory_order_relaxed);
  return cached_;
}

const library_list& controller::libraries_here() {
  // Every task start asks; the shared list costs the mutex and two reference-count writes that
  // bounce between the cores of a pool's threads. Each thread keeps its own copy of the pointer,
  // good while the loader's counters stay where they were when it took it.
  struct cached_list {
    const controller* owner = nullptr;
    loader_generation generation;
    std::shared_ptr<const library_list> list;
  };
  thread_local cached_list here;
  if (looked_in_scope && single_look_scopes > 0 && here.owner == this && here.list)
    return *here.list;  // looked already in this single_loader_look
  const loader_generation now = current_loader_generation();
  if (here.owner != this || !(here.generation == now) || !here.list) {
    here.list = libraries();
    here.owner = this;
    std::lock_guard lock(mutex_);
    here.generation = generation_;
  }
  looked_in_scope = single_look_scopes > 0;
  return *here.list;
}

std::vector<library_info> controller::info() {
  std::vector<library_info> result;
  for (const auto& library : *libraries()) result.push_back(library->info());
  return result;
}

bool controller::has_libraries() {
  return !libraries_here().empty();
}

bool controller::has_thread_controls() {
  for (const auto& library : libraries_here())
    if (library->has_thread_control()) return true;
  return false;
}

snapshot controller::capture(limit_scope scope) {
  snapshot saved;
  for (const auto& library : libraries_here()) {
    if (has_control(*library, scope))
      saved.entries.push_back({library, scope, read_setting(*library, scope)});
  }
  return saved;
}

snapshot controller::set_limit(limit_scope scope, unsigned n) {
  int limit = checked_limit(n);
  snapshot saved = capture(scope);
  for (const snapshot::entry& entry : saved.entries) {
    if (entry.value == limit)
      continue;  // OpenBLAS takes a lock (and may start threads) on every set
    write_setting(*entry.library, scope, limit);
  }
  return saved;
}

snapshot controller::set_thread_limit(unsigned n) {
  return set_limit(limit_scope::calling_thread, n);
}

snapshot controller::set_process_limit(unsigned n) {
  return set_limit(limit_scope::process, n);
}

void controller::restore(const snapshot& saved) {
  for (const snapshot::entry& entry : saved.entries) {
    if (read_setting(*entry.library, entry.scope) != entry.value)
      write_setting(*entry.library, entry.scope, entry.value);
  }
}

}  // namespace corral::native
