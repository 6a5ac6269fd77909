#include "bindings.hpp"

#include "corral/version.hpp"

NB_MODULE(_core, m) {
  m.doc() = "corral's C++ core (thin bindings; see src/corral for the Python API)";
  m.attr("__version__") = corral::version();
  // A forked child exits with objects that its parent's other threads held (a pool task's frame):
  // nanobind would report them as leaks on stderr, which the program never printed under plain
  // python.
  nanobind::set_leak_warnings(false);
  corral::bindings::bind_announced_wait(m);
  corral::bindings::bind_budget(m);
  corral::bindings::bind_native(m);
  corral::bindings::bind_partition(m);
  corral::bindings::bind_permits(m);
  corral::bindings::bind_share(m);
  corral::bindings::bind_report(m);
  corral::bindings::bind_work_queue(m);
}
